package main

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	syhttp "github.com/syvault/syvault/http"
	"github.com/syvault/syvault/http/client"
)

// TestClients_RateLimit: with --client-rate-limit, an app client asking for tokens, lease
// creates and renewals faster than the rate is refused with 429 rate_limited and a Retry-After,
// before its lease or target is read and with nothing recorded (no renewal, no
// access.denied, even for a record it may not lease); its refused admin requests past
// the rate answer 403 as ever but are not recorded either, so they cannot grow the audit
// log. Another app client has its own allowance, and admins are not limited.
func TestClients_RateLimit(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	srv := mustServer(t, "", func(c *Config) { c.ClientRateLimit = 0.001 }) // one request, then none for the test's length
	admin := srv.admin(t)
	target, other := mustTarget(t, admin, eng), mustTarget(t, admin, eng)

	newApp := func(name string) (*client.Client, string, string) {
		t.Helper()
		pub, priv := mustKeyPair(t)
		ac, err := admin.CreateClient(ctx, client.AppClient{Name: name, Role: "app", AllowedRecords: []string{target.RecordUID}, PublicKey: pub})
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.New(srv.HTTP.URL(), ac.ClientID, priv)
		if err != nil {
			t.Fatal(err)
		}
		return c, ac.ClientID, priv
	}
	app, appID, appKey := newApp("hasty")
	lease := mustLease(t, app, target.RecordUID, 600) // its one request
	_, err := app.RenewLease(ctx, lease.LeaseID, 600)
	mustCode(t, err, http.StatusTooManyRequests, "rate_limited")
	mustMention(t, err, "retry after")
	_, err = app.CreateLease(ctx, other.RecordUID, 600) // not allowed, but refused before that is looked at
	mustCode(t, err, http.StatusTooManyRequests, "rate_limited")
	// A new token is refused too, before its assertion's id is stored.
	again, err := client.New(srv.HTTP.URL(), appID, appKey)
	if err != nil {
		t.Fatal(err)
	}
	_, err = again.Token(ctx)
	mustCode(t, err, http.StatusTooManyRequests, "rate_limited")
	for range 3 { // refused as ever, but past its rate no longer recorded
		mustCode(t, app.DeleteTarget(ctx, target.RecordUID, false), http.StatusForbidden, "forbidden")
	}

	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.HTTP.URL()+"/api/sm/v1/dynamic/leases/"+lease.LeaseID+"/renew",
		bytes.NewReader([]byte(`{"ttl_seconds": 600}`)))
	req.Header.Set("Authorization", "Bearer "+mustToken(t, app))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); resp.StatusCode != 429 || err != nil || secs < 1 || secs > 1000 {
		t.Fatalf("refused renewal: %d with Retry-After %q, want 429 and 1-1000 s", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	// Admins are not limited; another app client has its own allowance, and a create it
	// may not make, refused within that allowance, is recorded (once charged, not twice).
	for range 3 {
		if _, err := admin.RenewLease(ctx, lease.LeaseID, 600); err != nil {
			t.Fatalf("an admin's renewal: %v", err)
		}
	}
	calm, calmID, _ := newApp("calm")
	_, err = calm.CreateLease(ctx, other.RecordUID, 600)
	mustCode(t, err, http.StatusForbidden, "forbidden")
	audit := func(id string) []client.AuditEvent {
		t.Helper()
		page, err := admin.Audit(ctx, client.AuditOptions{ClientID: id, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return page.Data
	}
	eventually(t, 10*time.Second, "the calm client's refusal in the audit trail", func() (bool, error) {
		return slices.ContainsFunc(audit(calmID), func(e client.AuditEvent) bool { return e.Type == "access.denied" }), nil
	})
	// Recorded later than the hasty client's refusals would have been: none of those is.
	for _, e := range audit(appID) {
		if e.Type == "lease.renewed" || e.Type == "access.denied" {
			t.Fatalf("a refused request was recorded: %+v", e)
		}
	}
}

// Without --client-rate-limit (the default) every refused mutation of an app client was
// recorded: a client looping on one grew the audit log, which nothing may trim, until
// its disk was full and no revocation could be recorded. Past ten, and one every ten
// seconds, its refusals are now refused as ever and counted, not recorded.
func TestClients_RefusalsRecordedWithinABound(t *testing.T) {
	ctx := context.Background()
	o := appOnTarget(t)
	admin, target, app, appID := o.admin, o.target, o.app, o.appID
	mustToken(t, app)
	start := time.Now()
	const tries = 40
	for range tries {
		mustCode(t, app.DeleteTarget(ctx, target.RecordUID, false), http.StatusForbidden, "forbidden")
	}
	// Ten at once, and one for each ten seconds begun since.
	bound := 10 + int(time.Since(start)/(10*time.Second)) + 1
	var recorded int
	eventually(t, 10*time.Second, "the first refusals in the audit trail", func() (bool, error) {
		page, err := admin.Audit(ctx, client.AuditOptions{ClientID: appID, Limit: 1000})
		recorded = 0
		for _, e := range page.Data {
			if e.Type == "access.denied" {
				recorded++
			}
		}
		return recorded >= 10, err
	})
	if recorded > bound || recorded >= tries {
		t.Fatalf("%d of %d refusals recorded; want at most %d", recorded, tries, bound)
	}
}

// A captured assertion replayed was refused, but only after it had spent its client's
// allowance: whoever held one could keep the client from getting tokens for the
// assertion's life. A replay is now refused before the charge.
func TestClients_AReplayedAssertionSpendsNothing(t *testing.T) {
	ctx := context.Background()
	srv := mustServer(t, "", func(c *Config) { c.ClientRateLimit = 0.001 }) // two requests, then none for the test's length
	admin := srv.admin(t)
	pub, priv := mustKeyPair(t)
	ac, err := admin.CreateClient(ctx, client.AppClient{Name: "replayed", Role: "app", PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	app := AdminClient{ClientID: ac.ClientID, PrivateKey: priv}
	path := syhttp.BasePath + "/auth/token"
	token := func(assertion string) int {
		t.Helper()
		status, _ := raw(t, srv, "POST", path, "", "application/x-www-form-urlencoded", []byte(tokenForm(assertion).Encode()))
		return status
	}
	now := time.Now()
	captured := signedAssertion(t, app, srv.HTTP.URL(), now, now.Add(time.Minute))
	if got := token(captured); got != http.StatusOK {
		t.Fatalf("the assertion's first use: %d", got)
	}
	for range 3 {
		if got := token(captured); got != http.StatusUnauthorized {
			t.Fatalf("the assertion replayed: %d; want 401", got)
		}
	}
	if got := token(signedAssertion(t, app, srv.HTTP.URL(), now, now.Add(time.Minute))); got != http.StatusOK {
		t.Fatalf("the client's next token after the replays: %d; want 200, its allowance unspent by them", got)
	}
}

// TestClientRateLimit_Flag: --client-rate-limit (or SYVAULT_CLIENT_RATE_LIMIT) takes a
// rate per second, fractions included; a negative or absurd one is refused at start,
// naming the flag.
func TestClientRateLimit_Flag(t *testing.T) {
	for _, bad := range []string{"-1", "NaN", "1e9", "0.0000001", "fast"} {
		if _, err := parseFlags("serve", []string{"--client-rate-limit", bad}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "client-rate-limit") {
			t.Errorf("--client-rate-limit %s: %v", bad, err)
		}
	}
	t.Setenv("SYVAULT_CLIENT_RATE_LIMIT", "0.5")
	if cfg, err := parseFlags("serve", nil, &bytes.Buffer{}); err != nil || cfg.ClientRateLimit != 0.5 {
		t.Errorf("SYVAULT_CLIENT_RATE_LIMIT=0.5: %v, %v", cfg.ClientRateLimit, err)
	}
}
