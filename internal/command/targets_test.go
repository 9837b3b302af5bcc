package command

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore/jstest"
)

// undoRecorder accepts every target, calling onPrepare first, and records what it is asked
// to undo.
type undoRecorder struct {
	nopPreparer
	onPrepare func()
	mu        sync.Mutex
	undone    []events.Target
	passwords []string
}

func (p *undoRecorder) Prepare(context.Context, events.Target, string) error {
	p.onPrepare()
	return nil
}

func (p *undoRecorder) Unprepare(_ context.Context, t events.Target, adminPassword string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.undone = append(p.undone, t)
	p.passwords = append(p.passwords, adminPassword)
	return nil
}

// TestRegisterTarget_NotRecordedIsUndone: a registration whose append fails after the
// target was prepared (the store went away) left the group role Prepare made, and the
// admin's membership in it, on the target: one per attempt of an operator retrying
// through the outage. What Prepare made is now removed, with the password it was made with.
func TestRegisterTarget_NotRecordedIsUndone(t *testing.T) {
	srv := jstest.MustServer(t, "")
	p := &undoRecorder{onPrepare: srv.Shutdown}
	s := newService(t, srv.MustStore(t), p)
	// The append waits out its context with the store gone.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	target := events.Target{Name: "orders", Engine: events.PostgreSQL, Host: "db.internal", Port: 5432,
		Database: "orders", AdminUsername: "syvault_admin", TLSMode: events.TLSVerifyFull}
	got, err := s.RegisterTarget(ctx, target, "admin-password", "")
	if err == nil {
		t.Fatal("registered a target with the store down")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.undone) != 1 || p.undone[0].RecordUID != got.RecordUID || p.passwords[0] != "admin-password" {
		t.Fatalf("undone %d targets (%+v); want the one not recorded, %s, with its admin password", len(p.undone), p.undone, got.RecordUID)
	}
}
