package main

import (
	"context"
	"testing"

	"github.com/syvault/syvault/http/client"
)

// TestClients_Update: an admin replaces a client's settings in place, keeping its
// client_id. Once the PUT answers, a record taken away can be neither leased nor renewed
// (the lease there runs on to its expiry, and its owner may revoke it), a new cap
// applies, and a new public key ends the tokens had with the old one. Refused updates
// change nothing.
func TestClients_Update(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	r1, r2 := mustTarget(t, admin, eng), mustTarget(t, admin, eng)

	pub1, priv1 := mustKeyPair(t)
	made, err := admin.CreateClient(ctx, client.AppClient{Name: "billing", Role: "app", AllowedRecords: []string{r1.RecordUID}, PublicKey: pub1})
	if err != nil {
		t.Fatal(err)
	}
	id := made.ClientID
	old, err := client.New(srv.HTTP.URL(), id, priv1)
	if err != nil {
		t.Fatal(err)
	}
	l1 := mustLease(t, old, r1.RecordUID, 600)
	oldToken := mustToken(t, old)

	// Refusals change nothing.
	refusals := []struct {
		name   string
		id     string
		as     *client.Client
		change func(*client.AppClient)
		status int
		code   string
	}{
		{"a negative max_leases", id, admin, func(c *client.AppClient) { c.MaxLeases = -1 }, 400, "invalid_request"},
		{"a private key for a public one", id, admin, func(c *client.AppClient) { c.PublicKey = priv1 }, 400, "invalid_request"},
		{"an unknown record", id, admin, func(c *client.AppClient) { c.AllowedRecords = []string{"NoSuchRecord"} }, 404, "not_found"},
		{"another client's name", id, admin, func(c *client.AppClient) { c.Name = "admin" }, 409, "conflict"},
		{"an unknown client", "no-such-client", admin, func(*client.AppClient) {}, 404, "not_found"},
		{"an app client on the admin API", id, old, func(c *client.AppClient) { c.Role = "admin" }, 403, "forbidden"},
	}
	for _, r := range refusals {
		body := client.AppClient{Name: made.Name, Role: made.Role, AllowedRecords: made.AllowedRecords, PublicKey: made.PublicKey}
		r.change(&body)
		_, err := r.as.UpdateClient(ctx, r.id, body)
		if err == nil {
			t.Fatalf("%s: updated", r.name)
		}
		mustCode(t, err, r.status, r.code)
		if got, err := admin.GetClient(ctx, id); err != nil || got.Name != "billing" || got.MaxLeases != 0 || len(got.AllowedRecords) != 1 ||
			got.Role != "app" || got.PublicKey != pub1 {
			t.Fatalf("%s: the client is now %+v (%v)", r.name, got, err)
		}
	}
	self, err := admin.GetClient(ctx, srv.adminClient(t).ClientID)
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.UpdateClient(ctx, self.ClientID, client.AppClient{Name: self.Name, Role: "app", PublicKey: self.PublicKey})
	mustCode(t, err, 409, "conflict")
	mustMention(t, err, "own role")

	// The update: another record, a cap, a new key.
	pub2, priv2 := mustKeyPair(t)
	got, err := admin.UpdateClient(ctx, id, client.AppClient{Name: "billing-v2", Role: "app", AllowedRecords: []string{r2.RecordUID},
		MaxLeases: 2, PublicKey: pub2})
	if err != nil {
		t.Fatal(err)
	}
	if got.ClientID != id || !got.CreatedAt.Equal(made.CreatedAt) || got.Name != "billing-v2" || got.MaxLeases != 2 ||
		len(got.AllowedRecords) != 1 || got.AllowedRecords[0] != r2.RecordUID {
		t.Fatalf("updated client %+v, made as %+v", got, made)
	}
	if status, body := raw(t, srv, "GET", "/api/sm/v1/dynamic/leases", oldToken, "", nil); status != 401 {
		t.Fatalf("a token had with the old key: %d %v", status, body)
	}
	_, err = old.ListLeases(ctx, client.ListLeasesOptions{})
	mustCode(t, err, 401, "unauthenticated")

	app, err := client.New(srv.HTTP.URL(), id, priv2)
	if err != nil {
		t.Fatal(err)
	}
	_, err = app.CreateLease(ctx, r1.RecordUID, 600)
	mustCode(t, err, 403, "forbidden")
	_, err = app.RenewLease(ctx, l1.LeaseID, 600)
	mustCode(t, err, 403, "forbidden")
	if l, err := app.GetLease(ctx, l1.LeaseID); err != nil || l.Status != "active" || !l.ExpiresAt.Equal(l1.ExpiresAt) {
		t.Fatalf("the lease on the record taken away: %+v (%v)", l, err)
	}
	l2 := mustLease(t, app, r2.RecordUID, 600) // with l1, the client holds its max_leases
	_, err = app.CreateLease(ctx, r2.RecordUID, 600)
	mustCode(t, err, 429, "too_many_leases")
	if err := app.RevokeLease(ctx, l1.LeaseID); err != nil {
		t.Fatal(err)
	}
	mustBeGone(t, eng, l1.Username, 0)

	// The old name is free again; an update that keeps the key keeps the tokens.
	if _, err := admin.CreateClient(ctx, client.AppClient{Name: "billing", Role: "app", AllowedRecords: []string{r1.RecordUID}, PublicKey: pub1}); err != nil {
		t.Fatalf("the client's old name after its rename: %v", err)
	}
	token := mustToken(t, app)
	if _, err := admin.UpdateClient(ctx, id, client.AppClient{Name: "billing-v2", Role: "app", AllowedRecords: []string{r2.RecordUID},
		MaxLeases: 3, PublicKey: pub2}); err != nil {
		t.Fatal(err)
	}
	if status, body := raw(t, srv, "GET", "/api/sm/v1/dynamic/leases", token, "", nil); status != 200 {
		t.Fatalf("a token had with the unchanged key: %d %v", status, body)
	}

	page, err := admin.Audit(ctx, client.AuditOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	updates := 0
	for _, e := range page.Data {
		if e.Type == "client.updated" {
			updates++
			if e.SubjectClientID != id || e.ClientID != self.ClientID {
				t.Errorf("audited update %+v", e)
			}
		}
	}
	if updates != 2 {
		t.Errorf("%d client.updated events audited, want the 2 updates", updates)
	}
	if err := app.RevokeLease(ctx, l2.LeaseID); err != nil {
		t.Fatal(err)
	}
}
