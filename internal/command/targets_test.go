package command

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore/jstest"
)

// recorder accepts every target, calling hold (when set) at the start of each Prepare,
// and records what each Prepare and Reprepare gave the target's database and what it is
// asked to undo.
type recorder struct {
	nopPreparer
	hold      func(events.Target)
	mu        sync.Mutex
	applied   [][]events.Grant
	isNew     []bool // of each Prepare
	undone    []events.Target
	passwords []string // of each Unprepare
}

func (p *recorder) Prepare(_ context.Context, t events.Target, _ string, isNew bool) error {
	if p.hold != nil {
		p.hold(t)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isNew = append(p.isNew, isNew)
	p.applied = append(p.applied, t.Grants)
	return nil
}

func (p *recorder) Reprepare(_ context.Context, t events.Target) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.applied = append(p.applied, t.Grants)
	return nil
}

func (p *recorder) Unprepare(_ context.Context, t events.Target, adminPassword string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.undone = append(p.undone, t)
	p.passwords = append(p.passwords, adminPassword)
	return nil
}

func (p *recorder) last() []events.Grant {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applied[len(p.applied)-1]
}

// TestRegisterTarget_NotRecordedIsUndone: a registration whose append fails after the
// target was prepared (the store went away) left the group role Prepare made, and the
// admin's membership in it, on the target: one per attempt of an operator retrying
// through the outage. What Prepare made is now removed, with the password it was made with.
func TestRegisterTarget_NotRecordedIsUndone(t *testing.T) {
	srv := jstest.MustServer(t, "")
	p := &recorder{hold: func(events.Target) { srv.Shutdown() }}
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

// TestUpdateTarget_ALosingUpdateLeavesTheRecordedGrants: an update's verification gives
// the target's group its new grants before the update is recorded. Of two updates of one
// target at the same moment, the one refused (another was recorded first) could be
// verified last: its grants stayed on the database while the recorded target named the
// other's, so leases held what no setting said. The refused update now sets the database
// back to the target as recorded.
func TestUpdateTarget_ALosingUpdateLeavesTheRecordedGrants(t *testing.T) {
	p := &recorder{}
	s := newService(t, jstest.MustStore(t), p)
	ctx := t.Context()
	grants := func(table string) []events.Grant {
		return []events.Grant{{Database: "orders", Schema: "public", Tables: []string{table}, Privileges: []string{"SELECT"}}}
	}
	reg, err := s.RegisterTarget(ctx, events.Target{Name: "orders", Engine: events.PostgreSQL, Host: "db.internal", Port: 5432,
		Database: "orders", AdminUsername: "syvault_admin", TLSMode: events.TLSVerifyFull, Grants: grants("before")}, "pw", "")
	if err != nil {
		t.Fatal(err)
	}
	version, err := s.cfg.Store.LastSeq(ctx, events.TargetSubject(reg.RecordUID))
	if err != nil {
		t.Fatal(err)
	}
	// The loser is verified after the winner, and appends after it.
	loser, winner := reg, reg
	loser.Grants, winner.Grants = grants("loser"), grants("winner")
	verifying, release := make(chan struct{}), make(chan struct{})
	p.hold = func(t events.Target) {
		if t.Grants[0].Tables[0] == "loser" {
			close(verifying)
			<-release
		}
	}
	lost := make(chan error, 1)
	go func() {
		_, _, err := s.UpdateTarget(ctx, reg.RecordUID, loser, "pw", "", []uint64{version})
		lost <- err
	}()
	<-verifying
	if _, _, err := s.UpdateTarget(ctx, reg.RecordUID, winner, "pw", "", nil); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-lost; events.ErrorCode(err) != events.EPreconditionFailed {
		t.Fatalf("the losing update: %v, want it refused as changed meanwhile", err)
	}
	if got := p.last(); got[0].Tables[0] != "winner" {
		t.Fatalf("the database was left with the %q update's grants; the recorded target has the winner's", got[0].Tables[0])
	}
	// Only the registration's Prepare may undo what it made: an update's target has
	// leases that may use it.
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.isNew) != 3 || !p.isNew[0] || p.isNew[1] || p.isNew[2] {
		t.Fatalf("Prepare was told the target is new: %v; want the registration's only", p.isNew)
	}
}
