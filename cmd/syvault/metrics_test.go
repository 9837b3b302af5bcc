package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/syvault/syvault/http/client"
)

func scrape(t *testing.T, srv *testServer) string {
	t.Helper()
	resp, err := http.Get(srv.HTTP.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return string(b)
}

// metricValue is the value of the sample named series (name and labels) in text.
func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("metrics lack %s", series)
	return 0
}

func mustContain(t *testing.T, text string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(text, l) {
			t.Errorf("metrics lack %q", l)
		}
	}
}

// TestMetrics: creates and revokes by outcome, leases active by target, latency and expiry
// histograms, revocations pending retry, the collector's CPU; and a workers-only process is
// probed and scraped.
func TestMetrics(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	target, px := proxiedTarget(t, admin, eng)
	l1 := mustLease(t, admin, target.RecordUID, 600)
	l2 := mustLease(t, admin, target.RecordUID, 600)
	if err := admin.RevokeLease(ctx, l1.LeaseID); err != nil {
		t.Fatal(err)
	}
	px.Down()
	_, err := admin.CreateLease(ctx, target.RecordUID, 600)
	mustCode(t, err, 502, "target_unavailable")
	mustCode(t, admin.RevokeLease(ctx, l2.LeaseID), 502, "target_unavailable")
	m := scrape(t, srv)
	mustContain(t, m,
		`syvault_lease_creates_total{outcome="ok"} 2`,
		`syvault_lease_creates_total{outcome="target_unavailable"} 1`,
		`syvault_lease_revokes_total{outcome="ok"} 1`,
		`syvault_lease_revokes_total{outcome="target_unavailable"} 1`,
		`syvault_leases_active{record_uid="`+target.RecordUID+`"} 1`,
		"syvault_lease_create_seconds_count 3",
		"syvault_revocations_pending_retry 1",
		"syvault_expiry_lag_seconds_count 0",
		// Sizing needs the collector's share of the CPU, not only its pauses.
		"go_cpu_classes_gc_total_cpu_seconds_total ", "process_cpu_seconds_total ",
		// And the soft limit it works to (--memory-limit), for sizing the container.
		"go_gc_gomemlimit_bytes ",
		`syvault_store_bytes{stream="KV_SYVAULT_LEASES"} `,
	)
	// The Prometheus rules shipped in deploy/prometheus name only series the server exports.
	rules, err := os.ReadFile("../../deploy/prometheus/syvault-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range regexp.MustCompile(`\bsyvault_[a-z_]+`).FindAllString(string(rules), -1) {
		name = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count"), "_sum")
		if !strings.Contains(m, "# TYPE "+name+" ") {
			t.Errorf("deploy/prometheus/syvault-rules.yaml names %s, which the server does not export", name)
		}
	}
	// The audit log keeps a subject for each lease made (three here, one of them failed):
	// what an operator watches grow with churn.
	if n := metricValue(t, m, `syvault_store_subjects{stream="SYVAULT_EVENTS"}`); n < 3 {
		t.Errorf("events stream subjects = %v, want at least the 3 leases made", n)
	}
	px.up()
	eventually(t, 30*time.Second, "revocation retried", func() (bool, error) {
		got, err := admin.GetLease(ctx, l2.LeaseID)
		return err == nil && got.Status == "revoked", err
	})
	mustContain(t, scrape(t, srv), "syvault_revocations_pending_retry 0")
	if page, _ := admin.ListLeases(ctx, client.ListLeasesOptions{}); len(page.Data) != 0 {
		t.Fatalf("%d leases left", len(page.Data))
	}

	t.Run("a workers-only process serves health, readiness and metrics", func(t *testing.T) {
		api, natsURL := apiOnly(t, 0)
		w := workerProcess(t, api, natsURL)
		for _, p := range []string{"/healthz", "/readyz"} {
			resp, err := http.Get(w.HTTP.URL() + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("%s on the workers process: %d", p, resp.StatusCode)
			}
		}
		mustContain(t, scrape(t, w), "syvault_revocations_pending_retry")
		resp, err := http.Get(w.HTTP.URL() + "/api/sm/v1/dynamic/leases")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Fatalf("the workers process serves the API: %d", resp.StatusCode)
		}
	})
}

// TestEndedLeaseRetention: --ended-lease-retention is how long the lease bucket keeps an
// ended lease's record (the lease bucket's messages in /metrics fall back once it has
// passed), and a GET of the lease still answers, from its events; a retention outside
// 1m..720h is refused at start.
func TestEndedLeaseRetention(t *testing.T) {
	for _, bad := range []string{"30s", "721h"} {
		if _, err := parseFlags("serve", []string{"--ended-lease-retention", bad}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--ended-lease-retention") {
			t.Errorf("--ended-lease-retention %s: %v", bad, err)
		}
	}
	t.Setenv("SYVAULT_ENDED_LEASE_RETENTION", "2h")
	if cfg, err := parseFlags("rebuild-projections", nil, &bytes.Buffer{}); err != nil || cfg.EndedLeaseRetention != 2*time.Hour {
		t.Errorf("SYVAULT_ENDED_LEASE_RETENTION=2h: %v, %v", cfg.EndedLeaseRetention, err)
	}

	eng := mysqlEngine(t)
	ctx := context.Background()
	// Below the flag's floor, so the test need not wait a minute: the setting is the
	// same path.
	srv := mustServer(t, "", func(c *Config) { c.EndedLeaseRetention = 2 * time.Second })
	admin := srv.admin(t)
	target := mustTarget(t, admin, eng)
	l := mustLease(t, admin, target.RecordUID, 600)
	if err := admin.RevokeLease(ctx, l.LeaseID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the ended record left the lease bucket", func() (bool, error) {
		return metricValue(t, scrape(t, srv), `syvault_store_messages{stream="KV_SYVAULT_LEASES"}`) == 0, nil
	})
	got, err := admin.GetLease(ctx, l.LeaseID)
	if err != nil || got.Status != "revoked" {
		t.Fatalf("GET after the record left: %+v, %v; want revoked", got, err)
	}
}

// TestDrop_ForgetsTheUsername: once a lease's user is dropped, revoked or expired, its
// username is no longer reserved and NATS keeps nothing for it (the usernames bucket's
// subjects in /metrics fall to zero), so reservations follow the leases alive rather than
// every lease of the last 25 hours.
func TestDrop_ForgetsTheUsername(t *testing.T) {
	eng := mysqlEngine(t)
	ctx := context.Background()
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	target := mustTarget(t, admin, eng)
	revoked := mustLease(t, admin, target.RecordUID, 600)
	expiring := mustLease(t, admin, target.RecordUID, 2) // 1 s may expire before its user exists
	const names = `syvault_store_subjects{stream="KV_SYVAULT_USERNAMES"}`
	if n := metricValue(t, scrape(t, srv), names); n < 1 {
		t.Fatalf("%s = %v with a live lease", names, n)
	}
	if err := admin.RevokeLease(ctx, revoked.LeaseID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "both usernames forgotten", func() (bool, error) {
		return metricValue(t, scrape(t, srv), names) == 0, nil
	})
	mustBeGone(t, eng, revoked.Username, 0)
	mustBeGone(t, eng, expiring.Username, 0)
}

// TestActiveCollector_ScrapesShareACount: /metrics answers whoever reaches it, and each
// count of the active leases asks NATS for every (target, client) pair with active
// leases: scrapes in quick succession must not each pay for one.
func TestActiveCollector_ScrapesShareACount(t *testing.T) {
	var calls atomic.Int32
	c := &activeCollector{
		active: func(context.Context) (map[string]int, error) {
			calls.Add(1)
			return map[string]int{"7Kj9mNpQ2xRs": 3}, nil
		},
		connected: func() bool { return true },
		desc:      prometheus.NewDesc("syvault_leases_active", "test", []string{"record_uid"}, nil),
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	for range 20 {
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("20 scrapes in a row counted the active leases %d times, want 1", n)
	}
}
