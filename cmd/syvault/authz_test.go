package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	syhttp "github.com/syvault/syvault/http"
	"github.com/syvault/syvault/http/client"
)

// newAppClient registers a client through the clients API and returns a Go client for it.
func newAppClient(t *testing.T, srv *testServer, admin *client.Client, role string, allowed []string) (*client.Client, string) {
	t.Helper()
	pubDERPEM, privDERPEM := mustKeyPair(t)
	ac, err := admin.CreateClient(context.Background(), client.AppClient{Name: "app-" + role + "-" + randomSecret()[:8], Role: role, AllowedRecords: allowed,
		PublicKey: pubDERPEM})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(srv.HTTP.URL(), ac.ClientID, privDERPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c, ac.ClientID
}

// onTarget is a server, its admin, a PostgreSQL target and an app client allowed it.
type onTarget struct {
	eng    engine
	admin  *client.Client
	target *client.Target
	app    *client.Client
	appID  string
}

// appOnTarget gives a test an onTarget.
func appOnTarget(t *testing.T) onTarget {
	t.Helper()
	o := onTarget{eng: postgresEngine(t)}
	srv := mustServer(t, "", nil)
	o.admin = srv.admin(t)
	o.target = mustTarget(t, o.admin, o.eng)
	o.app, o.appID = newAppClient(t, srv, o.admin, "app", []string{o.target.RecordUID})
	return o
}

func mustToken(t *testing.T, c *client.Client) string {
	t.Helper()
	tok, err := c.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestAuthorization_Matrix: every endpoint × {no token, expired token, token of a deleted
// client, app client on its own resource, app client on another's, admin}.
func TestAuthorization_Matrix(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	tg1, tg2 := eng.target(t), eng.target(t)
	r1 := mustRegister(t, admin, tg1)
	r2 := mustRegister(t, admin, tg2)
	appA, idA := newAppClient(t, srv, admin, "app", []string{r1.RecordUID})
	appB, _ := newAppClient(t, srv, admin, "app", []string{r2.RecordUID})
	gone, goneID := newAppClient(t, srv, admin, "app", []string{r1.RecordUID})
	goneToken := mustToken(t, gone)
	if err := admin.DeleteClient(ctx, goneID); err != nil {
		t.Fatal(err)
	}
	expired := srv.forgeToken(t, jwt.RegisteredClaims{Issuer: "syvault", Subject: idA, Audience: jwt.ClaimStrings{"syvault"},
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Hour))})

	leaseOf := func(c *client.Client, uid string) string {
		l := mustLease(t, c, uid, 3600)
		return l.LeaseID
	}
	leaseA := leaseOf(appA, r1.RecordUID)
	leaseB := leaseOf(appB, r2.RecordUID)
	tokens := map[string]string{"none": "", "expired": expired, "deleted client": goneToken,
		"app own": mustToken(t, appA), "app other's": mustToken(t, appA), "admin": mustToken(t, admin)}
	targetBody := func() string {
		b, _ := json.Marshal(eng.target(t))
		return string(b)
	}
	pubPEM := func() string {
		derPEM, _ := mustKeyPair(t)
		b, _ := json.Marshal(map[string]any{"name": "x", "role": "app", "public_key": derPEM})
		return string(b)
	}
	freshTarget := func() string {
		tg := mustTarget(t, admin, eng)
		return tg.RecordUID
	}
	freshClient := func() string {
		_, id := newAppClient(t, srv, admin, "app", nil)
		return id
	}
	b := syhttp.BasePath
	type row struct {
		method string
		// path and body per principal: own/other resources differ for app clients.
		path func(who string) string
		body func(who string) string
		// want per principal; principals absent get 401 (none, expired, deleted client).
		want map[string]int
	}
	same := func(p string) func(string) string { return func(string) string { return p } }
	noBody := func(string) string { return "" }
	adminOnly := func(ok int) map[string]int {
		return map[string]int{"app own": 403, "app other's": 403, "admin": ok}
	}
	leaseFor := func(who string) string {
		switch who {
		case "app other's":
			return leaseB
		case "app own":
			return leaseOf(appA, r1.RecordUID)
		}
		return leaseOf(admin, r1.RecordUID)
	}
	rows := []row{
		{"POST", same(b + "/dynamic/lease"), func(who string) string {
			uid := r1.RecordUID
			if who == "app other's" {
				uid = r2.RecordUID
			}
			return fmt.Sprintf(`{"record_uid": %q, "ttl_seconds": 60}`, uid)
		}, map[string]int{"app own": 201, "app other's": 403, "admin": 201}},
		{"GET", same(b + "/dynamic/leases"), noBody, map[string]int{"app own": 200, "app other's": 200, "admin": 200}},
		{"GET", func(who string) string {
			if who == "app other's" {
				return b + "/dynamic/leases/" + leaseB
			}
			return b + "/dynamic/leases/" + leaseA
		}, noBody, map[string]int{"app own": 200, "app other's": 404, "admin": 200}},
		{"POST", func(who string) string {
			if who == "app other's" {
				return b + "/dynamic/leases/" + leaseB + "/renew"
			}
			return b + "/dynamic/leases/" + leaseA + "/renew"
		}, same(`{"ttl_seconds": 600}`), map[string]int{"app own": 200, "app other's": 404, "admin": 200}},
		{"DELETE", func(who string) string { return b + "/dynamic/leases/" + leaseFor(who) }, noBody,
			map[string]int{"app own": 204, "app other's": 404, "admin": 204}},
		{"POST", same(b + "/dynamic/targets"), func(string) string { return targetBody() }, adminOnly(201)},
		{"GET", same(b + "/dynamic/targets"), noBody, adminOnly(200)},
		{"GET", same(b + "/dynamic/targets/" + r1.RecordUID), noBody, adminOnly(200)},
		{"PUT", same(b + "/dynamic/targets/" + r1.RecordUID), func(string) string { j, _ := json.Marshal(tg1); return string(j) }, adminOnly(200)},
		{"DELETE", func(who string) string {
			if who == "admin" {
				return b + "/dynamic/targets/" + freshTarget()
			}
			return b + "/dynamic/targets/" + r1.RecordUID
		}, noBody, adminOnly(204)},
		{"POST", same(b + "/clients"), func(string) string { return pubPEM() }, adminOnly(201)},
		{"GET", same(b + "/clients"), noBody, adminOnly(200)},
		{"GET", same(b + "/clients/" + idA), noBody, adminOnly(200)},
		{"PUT", func(who string) string {
			if who == "admin" {
				return b + "/clients/" + freshClient()
			}
			return b + "/clients/" + idA
		}, func(string) string {
			derPEM, _ := mustKeyPair(t)
			b, _ := json.Marshal(map[string]any{"name": "renamed-" + randomSecret()[:8], "role": "app", "public_key": derPEM})
			return string(b)
		}, adminOnly(200)},
		{"DELETE", func(who string) string {
			if who == "admin" {
				return b + "/clients/" + freshClient()
			}
			return b + "/clients/" + idA
		}, noBody, adminOnly(204)},
		{"GET", same(b + "/audit"), noBody, adminOnly(200)},
	}
	cells := 0
	for _, r := range rows {
		for _, who := range []string{"none", "expired", "deleted client", "app own", "app other's", "admin"} {
			want, ok := r.want[who]
			if !ok {
				want = 401
			}
			path := r.path(who)
			name := fmt.Sprintf("%s %s as %s", r.method, strings.Replace(path, b, "", 1), who)
			status, body := raw(t, srv, r.method, path, tokens[who], "application/json", []byte(r.body(who)))
			cells++
			if status != want {
				t.Errorf("%s: %d %v, want %d", name, status, body, want)
			}
			if status >= 400 && (body["error"] == nil || body["message"] == nil) {
				t.Errorf("%s: error answer without code and message: %v", name, body)
			}
		}
	}
	t.Logf("authorization matrix: %d endpoints × 6 principals = %d cells", len(rows), cells)

	t.Run("an app client lists only its own leases", func(t *testing.T) {
		page, err := appA.ListLeases(ctx, client.ListLeasesOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range page.Data {
			if l.LeaseID == leaseB || l.ClientID != idA {
				t.Fatalf("app A sees lease %s of client %s", l.LeaseID, l.ClientID)
			}
		}
	})
	t.Run("an app client's TTL is capped by its max_ttl_seconds", func(t *testing.T) {
		derPEM, pdPEM := mustKeyPair(t)
		ac, err := admin.CreateClient(ctx, client.AppClient{Name: "capped", Role: "app", AllowedRecords: []string{r1.RecordUID}, MaxTTLSeconds: 60,
			PublicKey: derPEM})
		if err != nil {
			t.Fatal(err)
		}
		capped, _ := client.New(srv.HTTP.URL(), ac.ClientID, pdPEM)
		_, err = capped.CreateLease(ctx, r1.RecordUID, 61)
		mustCode(t, err, 400, "invalid_ttl")
		l := mustLease(t, capped, r1.RecordUID, 60)
		got, err := capped.RenewLease(ctx, l.LeaseID, 3600)
		if err != nil || got.ExpiresAt.After(l.CreatedAt.Add(60*time.Second)) {
			t.Fatalf("renew past the client's cap: %+v %v", got, err)
		}
		// An admin's renewal was capped by the admin's own maximum (none), not the
		// lease's client's: the app's credentials outlived its cap.
		got, err = admin.RenewLease(ctx, l.LeaseID, 3600)
		if err != nil || got.ExpiresAt.After(l.CreatedAt.Add(60*time.Second)) {
			t.Fatalf("an admin's renewal past the lease's client's cap: %+v %v", got, err)
		}
		if err := capped.RevokeLease(ctx, l.LeaseID); err != nil {
			t.Fatal(err)
		}
	})
	// End what the matrix created.
	page, _ := admin.ListLeases(ctx, client.ListLeasesOptions{Limit: 1000})
	for _, l := range page.Data {
		_ = admin.RevokeLease(ctx, l.LeaseID)
	}
}

// TestClients_DeleteKeepsLeaseExpiry: deleting a client stops its tokens at once, while
// its active leases stay listed and still expire on time.
func TestClients_DeleteKeepsLeaseExpiry(t *testing.T) {
	ctx := context.Background()
	o := appOnTarget(t)
	admin, app, id, eng := o.admin, o.app, o.appID, o.eng
	l := mustLease(t, app, o.target.RecordUID, 3)
	if err := admin.DeleteClient(ctx, id); err != nil {
		t.Fatal(err)
	}
	_, err := app.ListLeases(ctx, client.ListLeasesOptions{})
	mustCode(t, err, 401, "unauthenticated")
	got, err := admin.GetLease(ctx, l.LeaseID)
	if err != nil || got.Status != "active" || got.ClientID != id {
		t.Fatalf("the deleted client's lease = %+v, %v", got, err)
	}
	mustBeGone(t, eng, l.Username, 10*time.Second)
	if time.Now().Before(l.ExpiresAt) {
		t.Fatal("the lease ended before its expiry")
	}
}
