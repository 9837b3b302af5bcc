package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/projections"
	"github.com/syvault/syvault/workers"
)

// snapshot reads every key and value of the projection buckets.
func snapshot(t *testing.T, js jetstream.JetStream) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	for _, b := range projections.Buckets {
		kv, err := js.KeyValue(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		lister, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for k := range lister.Keys() {
			e, err := kv.Get(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			// Where a lease stands in the index is a position, not state: leave it out.
			var v map[string]any
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				t.Fatal(err)
			}
			delete(v, "index")
			data, _ := json.Marshal(v)
			out[b+"/"+k] = string(data)
		}
	}
	return out
}

// TestRebuildProjections: replaying the stream into fresh buckets gives exactly the live
// projection, and the server carries on from there.
func TestRebuildProjections(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	dir := t.TempDir()
	srv := mustServer(t, dir, nil)
	admin := srv.admin(t)
	target := mustTarget(t, admin, eng)
	var leases []*client.Lease
	for range 5 {
		l := mustLease(t, admin, target.RecordUID, 3600)
		leases = append(leases, l)
	}
	if err := admin.RevokeLease(ctx, leases[0].LeaseID); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RenewLease(ctx, leases[1].LeaseID, 7200); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}

	// One process at a time on the data directory: the snapshot's, then the rebuild's.
	m0 := NewMain(Config{DataDir: dir, Replicas: 1}, srv.Logger)
	if err := m0.connect(ctx); err != nil {
		t.Fatal(err)
	}
	live := snapshot(t, jetStream(t, m0))
	_ = m0.Close()
	m := NewMain(Config{DataDir: dir, Replicas: 1}, srv.Logger)
	var out bytes.Buffer
	if err := m.RebuildProjections(ctx, &out); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	m2 := NewMain(Config{DataDir: dir, Replicas: 1}, srv.Logger)
	if err := m2.connect(ctx); err != nil {
		t.Fatal(err)
	}
	rebuilt := snapshot(t, jetStream(t, m2))
	// A removal the workers followed through while the index was being refilled is
	// followed through again: the removals' consumer starts over, on target events only.
	removals, err := eventsStream(t, m2).Consumer(ctx, workers.RemovalConsumer)
	if err != nil {
		t.Fatal(err)
	}
	if info := removals.CachedInfo(); info.Config.OptStartSeq != 1 || !slices.Equal(info.Config.FilterSubjects, []string{events.TargetSubjects}) ||
		info.NumPending == 0 {
		t.Fatalf("the removals' consumer after a rebuild: from %d, on %v, %d pending; want every target event again",
			info.Config.OptStartSeq, info.Config.FilterSubjects, info.NumPending)
	}
	_ = m2.Close()
	if len(live) == 0 || len(live) != len(rebuilt) {
		t.Fatalf("live has %d keys, rebuilt %d", len(live), len(rebuilt))
	}
	for k, v := range live {
		if rebuilt[k] != v {
			t.Errorf("%s differs:\nlive    %s\nrebuilt %s", k, v, rebuilt[k])
		}
	}

	srv = mustServer(t, dir, nil)
	admin = srv.admin(t)
	page, err := admin.ListLeases(ctx, client.ListLeasesOptions{})
	if err != nil || len(page.Data) != 4 {
		t.Fatalf("after rebuild list = %d leases, %v", len(page.Data), err)
	}
	for _, l := range leases[1:] {
		if err := admin.RevokeLease(ctx, l.LeaseID); err != nil {
			t.Fatal(err)
		}
	}
	got, err := admin.GetLease(ctx, leases[4].LeaseID)
	if err != nil || got.Status != "revoked" {
		t.Fatalf("after rebuild, revoke = %+v, %v", got, err)
	}
}
