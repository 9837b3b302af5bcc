package main

import (
	"context"
	"testing"
)

// TestCreate_RoundTrips counts what one lease create costs the API process in NATS round
// trips, on its request connection (which carries nothing else): the client lookup, the
// target lookup, the username reservation, one flush for the outcome watch, the append,
// one read of the projected record (plus the one-message answer to the worker's "still
// waiting?"). The budget is 8.
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
		// Each request is one message out; the watch adds one flush (PING/PONG).
		best = min(best, int64(after.OutMsgs-before.OutMsgs)+1)
	}
	t.Logf("a create took %d NATS round trips on the request path", best)
	if best > 8 {
		t.Fatalf("a create took %d NATS round trips on the request path, more than 8", best)
	}
}
