package main

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/syvault/syvault/http/client"
)

// BenchmarkLease measures the whole path a user waits on: HTTP, the event appended, a
// worker creating (or dropping) the user, the answer. b.N leases are created with the
// given concurrency, then revoked with it.
func BenchmarkLease(b *testing.B) {
	for name, mk := range map[string]func(testing.TB) engine{"postgresql": postgresEngine, "mysql": mysqlEngine} {
		b.Run(name, func(b *testing.B) {
			eng := mk(b)
			srv := mustServer(b, "", nil)
			admin := srv.admin(b)
			target, err := admin.CreateTarget(context.Background(), eng.target(b))
			if err != nil {
				b.Fatal(err)
			}
			for _, c := range []int{1, 8} {
				b.Run(map[int]string{1: "c1", 8: "c8"}[c], func(b *testing.B) {
					benchLeases(b, admin, target.RecordUID, c)
				})
			}
		})
	}
}

func benchLeases(b *testing.B, admin *client.Client, uid string, concurrency int) {
	ctx := context.Background()
	ids := make([]string, b.N)
	b.ResetTimer()
	createTook, createLat := phase(b, concurrency, b.N, func(i int) error {
		l, err := admin.CreateLease(ctx, uid, 3600)
		if err == nil {
			ids[i] = l.LeaseID
		}
		return err
	})
	renewTook, renewLat := phase(b, concurrency, b.N, func(i int) error {
		_, err := admin.RenewLease(ctx, ids[i], 1800)
		return err
	})
	revokeTook, revokeLat := phase(b, concurrency, b.N, func(i int) error { return admin.RevokeLease(ctx, ids[i]) })
	b.StopTimer()
	b.ReportMetric(float64(b.N)/createTook.Seconds(), "creates/s")
	b.ReportMetric(float64(b.N)/renewTook.Seconds(), "renews/s")
	b.ReportMetric(float64(b.N)/revokeTook.Seconds(), "revokes/s")
	b.ReportMetric(pct(createLat, 50), "create-p50-ms")
	b.ReportMetric(pct(createLat, 99), "create-p99-ms")
	b.ReportMetric(pct(renewLat, 50), "renew-p50-ms")
	b.ReportMetric(pct(renewLat, 99), "renew-p99-ms")
	b.ReportMetric(pct(revokeLat, 50), "revoke-p50-ms")
	b.ReportMetric(pct(revokeLat, 99), "revoke-p99-ms")
	b.ReportMetric(0, "ns/op")
}

// phase runs fn for 0..n-1 on `workers` goroutines and returns the wall time and each
// call's latency.
func phase(b *testing.B, workers, n int, fn func(i int) error) (time.Duration, []time.Duration) {
	lat := make([]time.Duration, n)
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t0 := time.Now()
				if err := fn(i); err != nil {
					b.Error(err)
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return time.Since(start), lat
}

func pct(d []time.Duration, p int) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return float64(s[i].Microseconds()) / 1000
}
