package main

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/syvault/syvault/http/client"
)

// TestIsolation_ASlowTargetDelaysNoOther: one target's database stalls (each statement
// held for 15 s, as a paused server would hold it) while more creates are in flight on it
// than a process has workers; the other target's creates and revokes keep going
// meanwhile, because each target gets a bounded share of the workers, and the stalled
// creates end in a 504 that says what did not finish. Once the stall ends, nothing of
// them is left in the database.
func TestIsolation_ASlowTargetDelaysNoOther(t *testing.T) {
	eng := postgresEngine(t)
	srv := mustServer(t, "", func(c *Config) { c.RequestTimeout = 5 * time.Second })
	admin := srv.admin(t)
	ctx := context.Background()
	slow, px := proxiedTarget(t, admin, eng)
	fast := mustTarget(t, admin, eng)
	members := groupMembers(t, slow.RecordUID)
	warm := mustLease(t, admin, slow.RecordUID, 600) // the pools are warm before the stall
	px.SetDelay(15 * time.Second)

	const stalled = 80 // more than a process's workers (64)
	var wg sync.WaitGroup
	errs := make(chan error, stalled)
	for range stalled {
		wg.Go(func() {
			_, err := admin.CreateLease(ctx, slow.RecordUID, 600)
			errs <- err
		})
	}
	// While those hang, the other target works as usual.
	for range 5 {
		l := mustLease(t, admin, fast.RecordUID, 600)
		if err := admin.RevokeLease(ctx, l.LeaseID); err != nil {
			t.Fatalf("a revoke on the healthy target while the other stalls: %v", err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err == nil {
			continue // created before the stall took hold
		}
		ce, ok := err.(*client.Error)
		if !ok || ce.Status != 504 {
			t.Fatalf("a create on the stalled target: %v, want 504", err)
		}
		mustMention(t, err, "did not finish creating the user")
	}
	px.SetDelay(0)
	eventually(t, 60*time.Second, "the stalled target answers again", func() (bool, error) {
		err := admin.RevokeLease(ctx, warm.LeaseID)
		if ce, ok := err.(*client.Error); ok && ce.Status == 404 {
			return true, nil // revoked by an earlier attempt's background retry
		}
		return err == nil, err
	})
	eventually(t, 60*time.Second, "the stalled creates leave no user behind", func() (bool, error) {
		m, err := members()
		return len(m) == 0, err
	})
}
