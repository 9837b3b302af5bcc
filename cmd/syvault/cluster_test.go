package main

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/workers"
)

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// apiOnly starts an API process that owns the NATS server (exposed on TCP so other
// processes can join) and runs no workers.
func apiOnly(t *testing.T, timeout time.Duration) (*testServer, string) {
	t.Helper()
	natsAddr := freeAddr(t)
	srv := mustServer(t, "", func(c *Config) {
		c.Components = []string{"api"}
		c.NATSListen = natsAddr
		c.RequestTimeout = timeout
	})
	return srv, "nats://" + natsAddr
}

// workerProcess starts a workers-only process on an existing NATS, sharing the master key.
func workerProcess(t *testing.T, api *testServer, natsURL string) *testServer {
	t.Helper()
	return mustServer(t, api.Dir+"-w"+strings.ReplaceAll(t.Name(), "/", "_")+time.Now().Format("150405.000000"), func(c *Config) {
		c.Dev = false
		c.NATSURL = natsURL
		c.NATSCreds = filepath.Join(api.Dir, NATSClientSeedFile)
		c.Components = []string{"workers"}
		c.MasterKeyFile = api.Dir + "/master.key"
	})
}

func countLines(s, substr string) int { return strings.Count(s, substr) }

// TestScale_WorkersInOtherProcesses: the API and the workers run in separate processes;
// two worker processes share one durable consumer and no lease is handled twice.
func TestScale_WorkersInOtherProcesses(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	api, natsURL := apiOnly(t, 15*time.Second)
	w1 := workerProcess(t, api, natsURL)
	w2 := workerProcess(t, api, natsURL)
	admin := api.admin(t)
	target := mustTarget(t, admin, eng)
	eventually(t, 5*time.Second, "API ready with remote workers", func() (bool, error) {
		status, _ := raw(t, api, "GET", "/readyz", "", "", nil)
		return status == 200, nil
	})

	const n = 24
	var wg sync.WaitGroup
	leases := make([]*client.Lease, n)
	for i := range leases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := admin.CreateLease(ctx, target.RecordUID, 600)
			if err != nil {
				t.Error(err)
				return
			}
			leases[i] = l
		}()
	}
	wg.Wait()
	if t.Failed() {
		for _, name := range []string{"projector", "workers"} {
			c, _ := eventsStream(t, api.Main).Consumer(ctx, name)
			info, _ := c.Info(ctx)
			t.Logf("%s: pending=%d ackpending=%d waiting=%d delivered=%+v ackfloor=%+v redelivered=%d", name, info.NumPending, info.NumAckPending, info.NumWaiting, info.Delivered, info.AckFloor, info.NumRedelivered)
		}
		t.FailNow()
	}
	c1, c2 := countLines(w1.Log.String(), `msg="user created"`), countLines(w2.Log.String(), `msg="user created"`)
	t.Logf("worker process 1 created %d users, process 2 created %d", c1, c2)
	if c1+c2 != n {
		t.Fatalf("%d creates for %d leases: some lease was handled twice or not at all", c1+c2, n)
	}
	for _, l := range leases {
		if err := admin.RevokeLease(ctx, l.LeaseID); err != nil {
			t.Fatal(err)
		}
		mustBeGone(t, eng, l.Username, 0)
	}
}

// TestTimeout_NoWorkers: with no worker anywhere, a lease request answers 504 after the
// deadline and is recorded as failed; a worker that starts later creates nothing.
func TestTimeout_NoWorkers(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	api, natsURL := apiOnly(t, time.Second)
	admin := api.admin(t)
	target := mustTarget(t, admin, eng)
	if status, _ := raw(t, api, "GET", "/readyz", "", "", nil); status != 503 {
		t.Fatalf("readyz without any worker = %d, want 503", status)
	}
	_, err := admin.CreateLease(ctx, target.RecordUID, 600)
	mustCode(t, err, 504, "timeout")

	// Find the lease the request recorded.
	cons, err := eventsStream(t, api.Main).OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.LeaseSubjects}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	id := events.IDFromSubject(msg.Subject())
	got, err := admin.GetLease(ctx, id)
	if err != nil || got.Status != "failed" {
		t.Fatalf("timed-out lease = %+v, %v; want failed", got, err)
	}

	workerProcess(t, api, natsURL)
	eventually(t, 10*time.Second, "late worker drained the request", func() (bool, error) {
		c, err := eventsStream(t, api.Main).Consumer(ctx, workers.LeaseConsumer)
		if err != nil {
			return false, err
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0, err
	})
	mustBeGone(t, eng, got.Username, 0)
	got, err = admin.GetLease(ctx, id)
	if err != nil || got.Status != "failed" {
		t.Fatalf("after the late worker lease = %+v, %v", got, err)
	}
}
