package projections_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/google/uuid"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore/jstest"
	"github.com/syvault/syvault/projections"
)

// A lease's events, applied as they come, cost one write each (and the index entry when
// the lease becomes listed): the request's record is created without looking for one,
// and the next events are applied to the record as this process wrote it. When another
// process wrote it meanwhile, the record is read again and every event still lands.
func TestProjections_ApplyWritesWithoutReading(t *testing.T) {
	ctx := context.Background()
	store, nc := jstest.MustServer(t, "").MustStoreConn(t)
	open := func() *projections.Projections {
		p, err := projections.Open(ctx, store, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := open(), open() // two processes
	id := uuid.Must(uuid.NewV7()).String()
	evs := []events.Event{requested(id, "W1"), {Type: events.LeaseActivated, LeaseID: id},
		{Type: events.LeaseRenewed, LeaseID: id, ExpiresAt: requested(id, "W1").ExpiresAt}, {Type: events.LeaseRevoked, LeaseID: id}}
	seqs := appendAll(t, store, evs...)
	for i := 1; i < len(evs); i++ {
		evs[i].Prev = seqs[i-1] // as the store appended them
	}
	msgs := func(p *projections.Projections, i int) uint64 {
		t.Helper()
		before := nc.Stats().OutMsgs
		if err := p.Apply(ctx, evs[i], seqs[i]); err != nil {
			t.Fatal(err)
		}
		return nc.Stats().OutMsgs - before
	}
	if n := msgs(a, 0); n != 1 {
		t.Errorf("the request took %d requests to NATS, want 1 (the create)", n)
	}
	if n := msgs(a, 1); n != 2 {
		t.Errorf("the activation took %d requests to NATS, want 2 (the index entry, the update)", n)
	}
	// Another process applies the renewal; this one then applies the revocation.
	msgs(b, 2)
	msgs(a, 3)
	l, err := a.Lease(ctx, id)
	if err != nil || l.Status != events.StatusRevoking || l.Seq != seqs[3] {
		t.Fatalf("lease = %+v, %v; want revoking at %d", l, err, seqs[3])
	}
	// A redelivered request changes nothing.
	if err := b.Apply(ctx, evs[0], seqs[0]); err != nil {
		t.Fatal(err)
	}
	if l, err := b.Lease(ctx, id); err != nil || l.Status != events.StatusRevoking {
		t.Fatalf("after a redelivered request: %+v, %v", l, err)
	}
}
