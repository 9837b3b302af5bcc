package projections_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/events/jsstore/jstest"
	"github.com/syvault/syvault/projections"
)

// TestWatch_AReadAfterUntilSeesTheRecord: once Until has seen a record it waited for,
// a read of the lease (another request of the same client, right after the answer)
// shows it. The bucket's subject carries every write published to it, before JetStream
// stores it and even when JetStream refuses it; a watch of that subject answered
// creates whose next read, made at once, still found the pending record in 192 of
// these 300 on one server and 220 on a cluster (the API, the projector and the appends
// on three different servers). The bucket here is one an earlier version made, which
// Open brings to the configuration the watches need.
func TestWatch_AReadAfterUntilSeesTheRecord(t *testing.T) {
	t.Run("one server", func(t *testing.T) {
		srv := jstest.MustServer(t, "")
		readsAfterWatch(t, 1, func(int) *nats.Conn { return srv.MustConnect(t) })
	})
	t.Run("cluster", func(t *testing.T) {
		servers, _ := jstest.MustCluster(t)
		readsAfterWatch(t, 3, func(i int) *nats.Conn { return connectTo(t, servers[i]) })
	})
}

// connectTo connects to ns for the test's length.
func connectTo(t *testing.T, ns *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// storeOn opens the store over nc, its streams with replicas copies.
func storeOn(t *testing.T, nc *nats.Conn, replicas int) *jsstore.Store {
	t.Helper()
	s, err := jsstore.Open(context.Background(), nc, jsstore.Config{Replicas: replicas})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestWatch_UntilOutlivesTheBucketsElection: a create waits for its lease's record while
// the lease bucket has no leader (two of its three servers lost, as for the seconds of
// an election after a crash). The leader reads Until makes every second then go
// unanswered (on a cluster up for more than ten seconds, they are answered
// "unavailable"); Until took that for the outcome, and the create failed, or waited out
// its deadline, though the worker finished it. It waits on now, and returns the record
// the projector writes once the bucket has a leader again.
func TestWatch_UntilOutlivesTheBucketsElection(t *testing.T) {
	servers, opts := jstest.MustClusterOpts(t)
	ctx := context.Background()
	store := storeOn(t, connectTo(t, servers[0]), 3)
	p := projectionsOn(t, store)
	id := uuid.Must(uuid.NewV7()).String()
	w, err := p.WatchNewLease(id, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	evs := []events.Event{requested(id, "R1"), {Type: events.LeaseActivated, LeaseID: id}}
	seqs := appendAll(t, store, evs...)
	if err := p.Apply(ctx, evs[0], seqs[0]); err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		l   events.Lease
		err error
	}
	waited := make(chan outcome, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 40*time.Second)
		defer cancel()
		l, err := w.Until(wctx, func(l events.Lease) bool { return l.Status == events.StatusActive }, nil)
		waited <- outcome{l, err}
	}()

	servers[1].Shutdown()
	servers[2].Shutdown()
	// The outage lasts until the bucket has failed reads for longer than Until's
	// one-second period between reads.
	var failingSince time.Time
	for deadline := time.Now().Add(30 * time.Second); ; {
		rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, err := p.Lease(rctx, id)
		cancel()
		switch {
		case err == nil || events.ErrorCode(err) == events.ENotFound:
			failingSince = time.Time{}
		case failingSince.IsZero():
			failingSince = time.Now()
		}
		if !failingSince.IsZero() && time.Since(failingSince) > 2500*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the bucket kept answering with two of its three servers down")
		}
		select {
		case got := <-waited:
			t.Fatalf("Until ended while the bucket had no leader: %s, %v", got.l.Status, got.err)
		default:
		}
	}
	jstest.Restart(t, opts[1])
	jstest.Restart(t, opts[2])
	for deadline := time.Now().Add(30 * time.Second); ; {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := p.Apply(actx, evs[1], seqs[1])
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the projector could not write the activation once the servers were back: %v", err)
		}
	}
	got := <-waited
	if got.err != nil || got.l.Status != events.StatusActive {
		t.Fatalf("Until through the bucket's election: %s, %v; want the active lease", got.l.Status, got.err)
	}
}

// readsAfterWatch checks 300 creates' reads; connect(i) connects to the i-th server.
func readsAfterWatch(t *testing.T, replicas int, connect func(i int) *nats.Conn) {
	ctx := context.Background()
	js, err := jetstream.New(connect(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: projections.LeasesBucket, Storage: jetstream.FileStorage, History: 1, Replicas: replicas}); err != nil {
		t.Fatal(err)
	}
	on := func(i int) *jsstore.Store { return storeOn(t, connect(i), replicas) }
	api, projector, store := projectionsOn(t, on(0)), projectionsOn(t, on(replicas-1)), on(replicas/2)
	st, err := js.Stream(ctx, "KV_"+projections.LeasesBucket)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; !cfg.AllowMsgTTL || cfg.RePublish == nil {
		t.Fatalf("the earlier version's bucket was not brought up to date: TTLs %v, republish %+v", cfg.AllowMsgTTL, cfg.RePublish)
	}
	for i := range 300 {
		id := uuid.Must(uuid.NewV7()).String()
		w, err := api.WatchNewLease(id, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		evs := []events.Event{requested(id, "R1"), {Type: events.LeaseActivated, LeaseID: id}}
		seqs := appendAll(t, store, evs...)
		applied := make(chan error, 1)
		go func() {
			err := projector.Apply(ctx, evs[0], seqs[0])
			if err == nil {
				err = projector.Apply(ctx, evs[1], seqs[1])
			}
			applied <- err
		}()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = w.Until(wctx, func(l events.Lease) bool { return l.Status == events.StatusActive }, nil)
		cancel()
		w.Stop()
		if err != nil {
			t.Fatal(err)
		}
		l, err := api.Lease(ctx, id)
		if err != nil || l.Status != events.StatusActive {
			t.Fatalf("lease %d: read right after the watch saw it active: %s, %v", i, l.Status, err)
		}
		if err := <-applied; err != nil {
			t.Fatal(err)
		}
	}
}
