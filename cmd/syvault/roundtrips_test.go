package main

import (
	"context"
	"testing"
)

// TestCreate_RoundTrips counts what one lease create costs the API process in NATS
// messages, on its request connection (which carries nothing else): the client lookup,
// the target lookup, the username reservation, the append, and the one-message answer to
// the worker's "still waiting?". The outcome watch is subscribed without a round trip of
// its own, and the projected record arrives on it rather than being read. The budget is 5.
func TestCreate_RoundTrips(t *testing.T) {
	eng := postgresEngine(t)
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	target := mustTarget(t, admin, eng)
	ctx := context.Background()
	mustLease(t, admin, target.RecordUID, 600) // warm: token, pools, buckets
	best := int64(1 << 62)
	for range 3 {
		before := srv.reqNC.Stats()
		if _, err := admin.CreateLease(ctx, target.RecordUID, 600); err != nil {
			t.Fatal(err)
		}
		after := srv.reqNC.Stats()
		best = min(best, int64(after.OutMsgs-before.OutMsgs))
	}
	t.Logf("a create sent %d NATS messages on the request path", best)
	if best > 5 {
		t.Fatalf("a create sent %d NATS messages on the request path, more than 5", best)
	}
}
