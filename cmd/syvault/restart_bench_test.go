package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers"
)

// BenchmarkRestart measures a restart, from Open to serving, of a server holding N active
// leases, each with a pending expiry schedule: start-up must not grow with N.
func BenchmarkRestart(b *testing.B) {
	for _, n := range []int{0, 20000} {
		b.Run(fmt.Sprintf("leases=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			// Seed with no workers running (they would handle the synthetic requests), then
			// start the workers' consumer past them, as a deployment that has handled its
			// leases already is.
			srv := mustServer(b, dir, func(c *Config) { c.Components = []string{"api"} })
			seedLeases(b, srv, n)
			if _, err := eventsStream(b, srv.Main).CreateConsumer(context.Background(), jetstream.ConsumerConfig{Durable: workers.LeaseConsumer,
				FilterSubjects: []string{events.LeaseSubjects}, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverNewPolicy,
				MaxDeliver: -1, AckWait: 2 * time.Minute, MaxAckPending: 100000}); err != nil {
				b.Fatal(err)
			}
			if err := srv.Close(); err != nil {
				b.Fatal(err)
			}
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			b.ResetTimer()
			for range b.N {
				m := NewMain(Config{Dev: true, DataDir: dir, Listen: "127.0.0.1:0", Replicas: 1, Components: []string{"all"}}, logger)
				if err := m.Open(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := m.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/start")
		})
	}
}

// seedLeases appends n active leases (request, activation and a pending expiry an hour
// away) straight to the store and waits for the projection to hold them.
func seedLeases(b *testing.B, srv *testServer, n int) {
	ctx := context.Background()
	target := events.Target{RecordUID: "BenchTarget1", Engine: events.PostgreSQL}
	var wg sync.WaitGroup
	start := time.Now()
	sem := make(chan struct{}, 64)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			id := uuid.Must(uuid.NewV7()).String()
			now := time.Now().UTC()
			req := events.Event{Type: events.LeaseRequested, ID: id + ".requested", Time: now, LeaseID: id, RecordUID: target.RecordUID,
				TTLSeconds: 3600, ExpiresAt: now.Add(time.Hour), Lease: &events.LeaseSpec{Username: fmt.Sprintf("vf_tmp_%08d", i), Target: target}}
			seq, err := srv.store.Append(ctx, events.LeaseSubject(id), req, 0)
			if err != nil {
				b.Error(err)
				return
			}
			if err := srv.store.ScheduleExpiry(ctx, id, req.ExpiresAt); err != nil {
				b.Error(err)
				return
			}
			act := events.Event{Type: events.LeaseActivated, ID: id + ".activated", Time: now, LeaseID: id, RecordUID: target.RecordUID}
			if _, err := srv.store.Append(ctx, events.LeaseSubject(id), act, seq); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	b.Logf("appended %d leases in %v", n, time.Since(start))
	eventually(b, 10*time.Minute, "projection holds every lease", func() (bool, error) {
		counts, err := srv.proj.ActiveByTarget(ctx)
		return err == nil && counts[target.RecordUID] == n, err
	})
	b.Logf("projected %d leases %v after the start", n, time.Since(start))
}
