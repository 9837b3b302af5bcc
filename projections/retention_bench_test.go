package projections_test

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore/jstest"
	"github.com/syvault/syvault/projections"
)

// BenchmarkEndedLeaseRetention: b.N leases requested, activated, revoked and dropped
// through an embedded NATS in this process, their ended records kept (the retention not
// yet passed) or gone (a retention of a second, passed). It reports the heap the ended
// leases hold once the collector ran, per lease, and the keys left in the lease bucket:
// what a day's retention costs against keeping every ended lease for good.
func BenchmarkEndedLeaseRetention(b *testing.B) {
	for _, c := range []struct {
		name      string
		retention time.Duration
	}{{"kept", 24 * time.Hour}, {"left", time.Second}} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			srv := jstest.MustServer(b, "")
			store := srv.MustStore(b)
			p, err := projections.Open(ctx, store, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			bucket := srv.MustStream(b, "KV_"+projections.LeasesBucket)
			p.SetEndedRetention(c.retention)
			before := heapInUse()
			ids := make(chan struct{})
			var wg sync.WaitGroup
			for range 16 {
				wg.Go(func() {
					for range ids {
						id := uuid.Must(uuid.NewV7()).String()
						now := time.Now().UTC()
						evs := []events.Event{requested(id, "R1"), {Type: events.LeaseActivated, LeaseID: id, Time: now},
							{Type: events.LeaseRevoked, LeaseID: id, Time: now}, {Type: events.LeaseDropped, LeaseID: id, Time: now}}
						for i, seq := range appendAll(b, store, evs...) {
							if err := p.Apply(ctx, evs[i], seq); err != nil {
								b.Error(err)
								return
							}
						}
					}
				})
			}
			for range b.N {
				ids <- struct{}{}
			}
			close(ids)
			wg.Wait()
			keys := func() uint64 {
				info, err := bucket.Info(ctx)
				if err != nil {
					b.Fatal(err)
				}
				return info.State.NumSubjects
			}
			// Both runs settle alike, past NATS's expiry of its block caches and of the
			// dedupe ids (15 s); the short retention's records are gone by then or
			// waited for.
			time.Sleep(20 * time.Second)
			if c.retention < time.Minute {
				deadline := time.Now().Add(time.Minute)
				for keys() > 0 && time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(keys()), "bucket-keys")
			b.ReportMetric(float64(heapInUse()-before)/float64(b.N), "heap-B/lease")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func heapInUse() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}
