package main

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/syvault/syvault/events/jsstore/jstest"
	syhttp "github.com/syvault/syvault/http"
)

// natsOn starts a JetStream server on port with its store in dir; a second call with the
// same port and dir is the same server restarted.
func natsOn(t *testing.T, port int, dir string) *server.Server {
	t.Helper()
	return jstest.Start(t, &server.Options{ServerName: "outage", Host: "127.0.0.1", Port: port, JetStream: true,
		StoreDir: dir, NoLog: true, NoSigs: true})
}

// TestOutage_NATSDown: with NATS gone every API endpoint answers 503 with Retry-After
// within a second, /readyz is 503, /healthz stays 200; when NATS comes back on the same
// address and store, the process recovers by itself: ready again, and leases work.
func TestOutage_NATSDown(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	store := t.TempDir()
	ns := natsOn(t, port, store)
	srv := mustServer(t, "", func(c *Config) { c.NATSURL = "nats://127.0.0.1:" + strconv.Itoa(port) })
	admin := srv.admin(t)
	target := mustTarget(t, admin, eng)
	lease := mustLease(t, admin, target.RecordUID, 600)
	token, err := admin.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	down := time.Now()
	eventually(t, 5*time.Second, "readyz unready", func() (bool, error) {
		resp, _ := rawResponse(t, srv, "GET", "/readyz", "")
		return resp.StatusCode == 503 && resp.Header.Get("Retry-After") != "", nil
	})
	t.Logf("readyz unready %v after NATS stopped", time.Since(down).Round(time.Millisecond))
	lid, uid := lease.LeaseID, target.RecordUID
	var slowest time.Duration
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/auth/token", ""},
		{"POST", "/dynamic/lease", `{"record_uid":"` + uid + `","ttl_seconds":60}`},
		{"GET", "/dynamic/leases", ""},
		{"GET", "/dynamic/leases/" + lid, ""},
		{"POST", "/dynamic/leases/" + lid + "/renew", `{"ttl_seconds":60}`},
		{"DELETE", "/dynamic/leases/" + lid, ""},
		{"GET", "/dynamic/targets", ""},
		{"GET", "/dynamic/targets/" + uid, ""},
		{"POST", "/dynamic/targets", `{}`},
		{"GET", "/clients", ""},
		{"POST", "/clients", `{}`},
		{"GET", "/audit", ""},
		{"POST", "/ui/login-links", ""},
	} {
		start := time.Now()
		resp, body := send(t, srv, r.method, syhttp.BasePath+r.path, token, "application/json", []byte(r.body))
		took := time.Since(start)
		slowest = max(slowest, took)
		if resp.StatusCode != 503 || body["error"] != "unavailable" || resp.Header.Get("Retry-After") == "" || took > time.Second {
			t.Errorf("%s %s with NATS down: %d %v Retry-After %q after %v; want 503 unavailable with Retry-After within 1s",
				r.method, r.path, resp.StatusCode, body, resp.Header.Get("Retry-After"), took)
		}
	}
	start := time.Now()
	if resp, _ := rawResponse(t, srv, "GET", "/readyz", ""); resp.StatusCode != 503 || time.Since(start) > time.Second {
		t.Errorf("readyz with NATS down: %d after %v; want 503 within 1s", resp.StatusCode, time.Since(start))
	}
	t.Logf("slowest 503 with NATS down: %v", slowest.Round(time.Microsecond))
	if resp, _ := rawResponse(t, srv, "GET", "/healthz", ""); resp.StatusCode != 200 {
		t.Errorf("healthz with NATS down: %d", resp.StatusCode)
	}
	// The process's own metrics are what an operator reads during the outage: the store's
	// are left out, at once, instead of failing the scrape.
	start = time.Now()
	m := scrape(t, srv)
	if took := time.Since(start); took > time.Second {
		t.Errorf("/metrics with NATS down took %v", took)
	}
	mustContain(t, m, "process_cpu_seconds_total ", "syvault_lease_creates_total")
	if strings.Contains(m, "syvault_store_subjects") || strings.Contains(m, "syvault_leases_active{") {
		t.Error("/metrics with NATS down reports the store's sizes")
	}

	back := time.Now()
	natsOn(t, port, store)
	eventually(t, 30*time.Second, "ready again", func() (bool, error) {
		resp, _ := rawResponse(t, srv, "GET", "/readyz", "")
		return resp.StatusCode == 200, nil
	})
	t.Logf("ready %v after NATS came back", time.Since(back).Round(time.Millisecond))
	again := mustLease(t, admin, target.RecordUID, 60)
	t.Logf("a lease created %v after NATS came back", time.Since(back).Round(time.Millisecond))
	for _, id := range []string{lease.LeaseID, again.LeaseID} {
		if err := admin.RevokeLease(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	mustBeGone(t, eng, again.Username, 0)
}
