package drivertest

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
)

// Ops are the two operations Bench times, so that a driver and the raw statements it
// stands for can be measured the same way.
type Ops struct {
	Create func(ctx context.Context, user, password string) error
	Drop   func(ctx context.Context, user string) error
}

// DriverOps returns Ops that call d for target uid with admin and grants, each user
// expiring in an hour.
func DriverOps(d driver.Driver, admin driver.Conn, uid string, grants []events.Grant) Ops {
	return Ops{
		Create: func(ctx context.Context, user, password string) error {
			return d.CreateUser(ctx, driver.CreateUserRequest{
				Conn: admin, RecordUID: uid, Username: user, Password: password,
				ExpiresAt: time.Now().Add(time.Hour), Grants: grants,
			})
		},
		Drop: func(ctx context.Context, user string) error {
			return d.DropUser(ctx, driver.DropUserRequest{Conn: admin, Username: user, Grants: grants})
		},
	}
}

// Bench creates b.N users on concurrency workers, then drops them on as many, and reports
// the throughput of each phase (creates/s, drops/s) and its median latency
// (create-p50-ms, drop-p50-ms). ns/op covers one create plus one drop.
func Bench(b *testing.B, concurrency int, ops Ops) {
	ctx := b.Context()
	users, passwords := make([]string, b.N), make([]string, b.N)
	for i := range users {
		users[i], passwords[i] = NewUsername(), NewPassword()
	}
	b.ResetTimer()
	createWall, createLat := phase(b, concurrency, b.N, func(i int) error {
		return ops.Create(ctx, users[i], passwords[i])
	})
	dropWall, dropLat := phase(b, concurrency, b.N, func(i int) error {
		return ops.Drop(ctx, users[i])
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/createWall.Seconds(), "creates/s")
	b.ReportMetric(float64(b.N)/dropWall.Seconds(), "drops/s")
	b.ReportMetric(median(createLat), "create-p50-ms")
	b.ReportMetric(median(dropLat), "drop-p50-ms")
}

// phase runs fn(0..n-1) on workers goroutines and returns the wall time and each call's
// latency. Failures are reported with b.Error, at most 5 of them.
func phase(b *testing.B, workers, n int, fn func(i int) error) (time.Duration, []time.Duration) {
	lat := make([]time.Duration, n)
	var next, failures atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				err := fn(i)
				lat[i] = time.Since(t0)
				if err != nil && failures.Add(1) <= 5 {
					b.Error(err)
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), lat
}

func median(d []time.Duration) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}
