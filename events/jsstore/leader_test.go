package jsstore_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/events/jsstore/jstest"
)

// TestStore_DecisionsReadTheLeader: on a NATS cluster, the reads a decision is made on
// (a lease's history, a subject's last sequence, the re-read after an append conflict)
// go to the stream's leader through STREAM.MSG.GET, never to a direct get, which a
// lagging R3 follower may answer with a history missing the latest events. (A chaos run
// lost revocations that way: a revoke decided on a follower's stale history.) On a
// standalone server, whose streams have their one copy, they are direct gets.
func TestStore_DecisionsReadTheLeader(t *testing.T) {
	t.Run("cluster", func(t *testing.T) {
		servers, urls := jstest.MustCluster(t)
		direct, leader := countReads(t, servers[0], urls)
		if direct != 0 || leader == 0 {
			t.Fatalf("%d direct gets and %d leader gets; want every read from the leader", direct, leader)
		}
	})
	t.Run("standalone", func(t *testing.T) {
		srv := jstest.MustServer(t, "")
		direct, leader := countReads(t, srv.NS, "")
		if direct == 0 || leader != 0 {
			t.Fatalf("%d direct gets and %d leader gets; want every read direct", direct, leader)
		}
	})
}

// countReads makes the reads a decision is made on, checking their answers, and counts
// the direct and the leader gets they sent.
func countReads(t *testing.T, ns *server.Server, urls string) (direct, leader int64) {
	ctx := context.Background()
	connect := connector(t, ns, urls)
	s, err := jsstore.Open(ctx, connect(), jsstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// Any subscriber of the account sees the requests sent to the API subjects.
	watch := connect()
	var nDirect, nLeader atomic.Int64
	for subj, n := range map[string]*atomic.Int64{"$JS.API.DIRECT.GET.>": &nDirect, "$JS.API.STREAM.MSG.GET.>": &nLeader} {
		if _, err := watch.Subscribe(subj, func(*nats.Msg) { n.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	subj := events.LeaseSubject("L")
	seq1, err := s.Append(ctx, subj, ev(events.LeaseRequested, "requested"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, subj, ev(events.LeaseActivated, "activated"), seq1); err != nil {
		t.Fatal(err)
	}

	if evs, _, err := s.History(ctx, subj); err != nil || len(evs) != 2 {
		t.Fatalf("History = %d events, %v; want 2", len(evs), err)
	}
	if l, err := s.LoadLease(ctx, "L"); err != nil || l.Seq != seq1+1 {
		t.Fatalf("LoadLease = seq %d, %v; want %d", l.Seq, err, seq1+1)
	}
	if last, err := s.LastSeq(ctx, subj); err != nil || last != seq1+1 {
		t.Fatalf("LastSeq = %d, %v; want %d", last, err, seq1+1)
	}
	if last, err := s.LastSeq(ctx, events.LeaseSubject("none")); err != nil || last != 0 {
		t.Fatalf("LastSeq of an empty subject = %d, %v", last, err)
	}
	if _, err := s.Append(ctx, subj, ev(events.LeaseRevoked, "revoked"), seq1); !errors.Is(err, jsstore.ErrConflict) {
		t.Fatalf("stale append: %v, want ErrConflict", err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	return nDirect.Load(), nLeader.Load()
}

// TestNames_HolderReadsTheLeader: reconciliation drops a user whose name no lease holds,
// so the reservation is read from the bucket's leader, never through a direct get, which
// a copy catching up after a restart may answer without a reservation made moments
// before. Deleted and expired reservations are not held.
func TestNames_HolderReadsTheLeader(t *testing.T) {
	ctx := context.Background()
	s, connect := clusterStore(t)
	names, err := s.OpenNames(ctx, "HOLDERS", "test", time.Hour, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := names.Reserve(ctx, "vf_tmp_held", []byte("lease-1"), 0); err != nil || !ok {
		t.Fatalf("Reserve = %v, %v", ok, err)
	}
	if ok, err := names.Reserve(ctx, "vf_tmp_brief", []byte("lease-2"), time.Second); err != nil || !ok {
		t.Fatalf("Reserve with a TTL = %v, %v", ok, err)
	}
	directGets := countDirectGets(t, connect())
	if h, held, err := names.Holder(ctx, "vf_tmp_held"); err != nil || !held || string(h.Value) != "lease-1" || h.Revision == 0 || h.Since.IsZero() {
		t.Fatalf("Holder = %+v, %v, %v; want held by lease-1", h, held, err)
	}
	if _, held, err := names.Holder(ctx, "vf_tmp_never"); err != nil || held {
		t.Fatalf("Holder of a name never reserved = %v, %v", held, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, held, err := names.Holder(ctx, "vf_tmp_brief")
		if err != nil {
			t.Fatal(err)
		}
		if !held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a reservation whose TTL ran out is still held")
		}
		time.Sleep(100 * time.Millisecond) // polling for JetStream's expiry of the key
	}
	if n := directGets(); n != 0 {
		t.Fatalf("%d direct gets; want every reservation read from the leader", n)
	}
}

// connector returns a function that opens a connection, closed when the test ends: to
// the cluster at urls, or in-process to ns when urls is empty.
func connector(t *testing.T, ns *server.Server, urls string) func() *nats.Conn {
	return func() *nats.Conn {
		opts := []nats.Option{nats.InProcessServer(ns)}
		if urls != "" {
			opts = nil
		}
		nc, err := nats.Connect(urls, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
}

// TestCurrentRecord_ReadsTheLeaderOnACluster: a read that must see every acknowledged
// write goes to the bucket's leader, never through a direct get; a deleted key has no
// record, and a key with a wildcard is refused rather than matching another key's.
func TestCurrentRecord_ReadsTheLeaderOnACluster(t *testing.T) {
	ctx := context.Background()
	s, connect := clusterStore(t)
	kv, err := s.Bucket(ctx, jetstream.KeyValueConfig{Bucket: "CURRENT", Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"lease.one": "v1", "gone": "v2"} {
		if _, err := kv.Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	directGets := countDirectGets(t, connect())
	if v, err := s.CurrentRecord(ctx, kv, "lease.one"); err != nil || string(v) != "v1" {
		t.Fatalf("CurrentRecord = %q, %v; want v1", v, err)
	}
	for _, k := range []string{"gone", "never"} {
		if _, err := s.CurrentRecord(ctx, kv, k); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("CurrentRecord(%q) = %v; want %v", k, err, jetstream.ErrKeyNotFound)
		}
	}
	for _, k := range []string{"*", "lease.*", "lease.>", ">", ".lease", ""} {
		if _, err := s.CurrentRecord(ctx, kv, k); !errors.Is(err, jetstream.ErrInvalidKey) {
			t.Fatalf("CurrentRecord(%q) = %v; want %v", k, err, jetstream.ErrInvalidKey)
		}
	}
	if n := directGets(); n != 0 {
		t.Fatalf("%d direct gets; want every read from the leader", n)
	}
}

// countDirectGets counts the direct gets any connection sends from now on; the function
// returned gives their number so far.
func countDirectGets(t *testing.T, watch *nats.Conn) func() int64 {
	var n atomic.Int64
	if _, err := watch.Subscribe("$JS.API.DIRECT.GET.>", func(*nats.Msg) { n.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() int64 {
		if err := watch.Flush(); err != nil {
			t.Fatal(err)
		}
		return n.Load()
	}
}

// clusterStore opens a store of R3 streams on a fresh three-node cluster; connect opens
// more connections to it.
func clusterStore(t *testing.T) (s *jsstore.Store, connect func() *nats.Conn) {
	_, urls := jstest.MustCluster(t)
	connect = connector(t, nil, urls)
	s, err := jsstore.Open(context.Background(), connect(), jsstore.Config{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	return s, connect
}
