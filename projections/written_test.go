package projections_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/events/jsstore/jstest"
	"github.com/syvault/syvault/projections"
)

// projectionsOn opens the projections on store, as one more process would.
func projectionsOn(t *testing.T, store *jsstore.Store) *projections.Projections {
	t.Helper()
	p, err := projections.Open(context.Background(), store, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A lease's events, applied as they come, cost one write each (and the index entry when
// the lease becomes listed): the request's record is created without looking for one,
// and the next events are applied to the record as this process wrote it. When another
// process wrote it meanwhile, the record is read again and every event still lands.
func TestProjections_ApplyWritesWithoutReading(t *testing.T) {
	ctx := context.Background()
	store, nc := jstest.MustServer(t, "").MustStoreConn(t)
	a, b := projectionsOn(t, store), projectionsOn(t, store) // two processes
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
	// The first use reads the bucket's creation time (see the next test).
	if err := a.Apply(ctx, requested(uuid.Must(uuid.NewV7()).String(), "W1"), 1); err != nil {
		t.Fatal(err)
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

// A rebuild in another process makes the lease bucket anew, and its revisions start over:
// a record remembered from the old bucket is not written on the strength of its revision,
// but read again from the new one.
func TestProjections_ARebuildElsewhereIsReadAgain(t *testing.T) {
	ctx := context.Background()
	projections.CheckBucketEveryTime(t)
	store, nc := jstest.MustServer(t, "").MustStoreConn(t)
	a, b := projectionsOn(t, store), projectionsOn(t, store)
	id := uuid.Must(uuid.NewV7()).String()
	evs := []events.Event{requested(id, "W2"), {Type: events.LeaseActivated, LeaseID: id}}
	seqs := appendAll(t, store, evs...)
	evs[1].Prev = seqs[0]
	for i := range 2 {
		if err := a.Apply(ctx, evs[i], seqs[i]); err != nil {
			t.Fatal(err)
		}
	}
	// The replay writes what a wrote, in the same order: the same revisions.
	if _, err := projections.Rebuild(ctx, store, b); err != nil {
		t.Fatal(err)
	}
	revoked := events.Event{Type: events.LeaseRevoked, ID: id + ".revoked", LeaseID: id}
	seq, err := store.Append(ctx, events.LeaseSubject(id), revoked, seqs[1])
	if err != nil {
		t.Fatal(err)
	}
	revoked.Prev = seqs[1]
	before := nc.Stats().OutMsgs
	if err := a.Apply(ctx, revoked, seq); err != nil {
		t.Fatal(err)
	}
	// The bucket's status, the record read again, the write.
	if n := nc.Stats().OutMsgs - before; n != 3 {
		t.Errorf("the revocation after a rebuild took %d requests to NATS, want 3", n)
	}
	if l, err := a.Lease(ctx, id); err != nil || l.Status != events.StatusRevoking {
		t.Fatalf("lease = %+v, %v; want revoking", l, err)
	}
	page, _, err := a.ActiveLeases(ctx, events.LeaseQuery{Limit: 10})
	if err != nil || len(page) != 1 || page[0].ID != id {
		t.Fatalf("listed %+v, %v; want the one lease", page, err)
	}
}

// On a cluster, a write refused because the record moved on is decided again on the
// record as the bucket's leader has it. A direct get, which any copy answers, may come
// from a follower still behind the write that refused this one, and the next write,
// decided on the same old revision, be refused again, as often as it is read there.
func TestProjections_ARefusedWriteRereadsTheLeader(t *testing.T) {
	ctx := context.Background()
	servers, _ := jstest.MustCluster(t)
	nc := connectTo(t, servers[0])
	store := storeOn(t, nc, 3)
	a, b := projectionsOn(t, store), projectionsOn(t, store) // two processes
	id := uuid.Must(uuid.NewV7()).String()
	evs := []events.Event{requested(id, "W2"), {Type: events.LeaseActivated, LeaseID: id}}
	seqs := appendAll(t, store, evs...)
	evs[1].Prev = seqs[0]
	if err := a.Apply(ctx, evs[0], seqs[0]); err != nil {
		t.Fatal(err)
	}
	// Another process applies the activation: the record a remembers writing is behind.
	if err := b.Apply(ctx, evs[1], seqs[1]); err != nil {
		t.Fatal(err)
	}
	// Synchronous subscriptions: once a flush is answered, every request the server
	// routed before it is counted as pending.
	watch := connectTo(t, servers[0])
	var direct, leader *nats.Subscription
	for subj, sub := range map[string]**nats.Subscription{"$JS.API.DIRECT.GET.>": &direct, "$JS.API.STREAM.MSG.GET.>": &leader} {
		var err error
		if *sub, err = watch.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	// The activation, delivered to a again: its write on the remembered record is refused.
	if err := a.Apply(ctx, evs[1], seqs[1]); err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	d, _, _ := direct.Pending()
	l, _, _ := leader.Pending()
	if d != 0 || l == 0 {
		t.Errorf("after the refused write: %d direct gets, %d reads from the leader; want the record read from the leader alone", d, l)
	}
	if l, err := a.Lease(ctx, id); err != nil || l.Status != events.StatusActive || l.Seq != seqs[1] {
		t.Fatalf("lease = %+v, %v; want active at %d", l, err, seqs[1])
	}
}
