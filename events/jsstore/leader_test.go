package jsstore_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

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
	connect := func() *nats.Conn {
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
