package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/syvault/syvault/http/client"
)

// TestUpdates_IfMatch: a client's and a target's GET and PUT answer their version as an
// ETag, and a PUT that names a version in If-Match is made only while the thing is still
// at it. Two admins editing one client from the same read: the second is refused (412)
// instead of undoing the first's change, and the refusal changes nothing. A PUT without
// If-Match, or with *, replaces as before.
func TestUpdates_IfMatch(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	r1, r2 := mustTarget(t, admin, eng), mustTarget(t, admin, eng)

	pub, _ := mustKeyPair(t)
	made, err := admin.CreateClient(ctx, client.AppClient{Name: "billing", Role: "app", AllowedRecords: []string{r1.RecordUID}, PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	id := made.ClientID
	read, err := admin.GetClient(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if read.Version == "" || read.Version[0] != '"' {
		t.Fatalf("GET answered ETag %q, want a strong ETag", read.Version)
	}

	// Two admins change the client from the same read: one a cap, the other its records.
	first := *read
	first.MaxLeases = 5
	got, err := admin.UpdateClient(ctx, id, first)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version == "" || got.Version == read.Version {
		t.Fatalf("the update answered ETag %q after %q", got.Version, read.Version)
	}
	second := *read
	second.AllowedRecords = []string{r2.RecordUID}
	_, err = admin.UpdateClient(ctx, id, second)
	mustCode(t, err, http.StatusPreconditionFailed, "precondition_failed")
	mustMention(t, err, "read it again")
	now, err := admin.GetClient(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if now.MaxLeases != 5 || len(now.AllowedRecords) != 1 || now.AllowedRecords[0] != r1.RecordUID || now.Version != got.Version {
		t.Fatalf("after the refused update the client is %+v, want the first update's (max_leases 5, %s) at %s", now, r1.RecordUID, got.Version)
	}
	// Made again from what the client holds now, the second change keeps the first.
	second = *now
	second.AllowedRecords = []string{r2.RecordUID}
	if _, err := admin.UpdateClient(ctx, id, second); err != nil {
		t.Fatal(err)
	}
	if now, err = admin.GetClient(ctx, id); err != nil || now.MaxLeases != 5 || now.AllowedRecords[0] != r2.RecordUID {
		t.Fatalf("the client is %+v (%v), want both changes", now, err)
	}

	// The header as a user may send it.
	body, _ := json.Marshal(client.AppClient{Name: "billing", Role: "app", AllowedRecords: []string{r2.RecordUID}, PublicKey: pub, MaxLeases: 7})
	put := func(ifMatch string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, srv.HTTP.URL()+"/api/sm/v1/clients/"+id, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+mustToken(t, admin))
		req.Header.Set("Content-Type", "application/json")
		if ifMatch != "" {
			req.Header.Set("If-Match", ifMatch)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct{ Error string }
		data, _ := io.ReadAll(resp.Body)
		json.Unmarshal(data, &e)
		return resp.StatusCode, e.Error, resp.Header.Get("ETag")
	}
	for _, c := range []struct {
		ifMatch string
		status  int
		code    string
	}{
		{`W/` + now.Version, 412, "precondition_failed"}, // If-Match compares strongly
		{`"no-such-version"`, 412, "precondition_failed"},
		{`"1"`, 412, "precondition_failed"},
		{`"0` + now.Version[1:], 412, "precondition_failed"}, // "0123" is not "123"
		{`42`, 400, "invalid_request"},
		{`"1", *`, 400, "invalid_request"},
	} {
		if status, code, _ := put(c.ifMatch); status != c.status || code != c.code {
			t.Errorf("If-Match %s: %d %s, want %d %s", c.ifMatch, status, code, c.status, c.code)
		}
	}
	if got, err := admin.GetClient(ctx, id); err != nil || got.MaxLeases != 5 || got.Version != now.Version {
		t.Fatalf("refused updates changed the client: %+v (%v)", got, err)
	}
	status, _, etag := put(`"1", ` + now.Version)
	if status != 200 || etag == "" || etag == now.Version {
		t.Fatalf("If-Match listing the current version: %d, ETag %q", status, etag)
	}
	if status, _, etag2 := put("*"); status != 200 || etag2 == etag {
		t.Fatalf("If-Match *: %d, ETag %q", status, etag2)
	}
	if status, _, _ := put(""); status != 200 {
		t.Fatalf("without If-Match: %d", status)
	}

	// The Go client refuses to send one client's settings as another's.
	if _, err := admin.UpdateClient(ctx, made.ClientID, client.AppClient{ClientID: "another-id", Name: "x", Role: "app", PublicKey: pub}); err == nil {
		t.Fatal("the Go client sent a client read from another id")
	}

	// A target: the same, and a stale version is refused before its database is asked
	// (a wrong admin password would be 422).
	tg := eng.target(t)
	target := mustRegister(t, admin, tg)
	tread, err := admin.GetTarget(ctx, target.RecordUID)
	if err != nil || tread.Version == "" {
		t.Fatalf("target GET: ETag %q (%v)", tread.Version, err)
	}
	tg.MaxTTLSeconds, tg.Version = 600, tread.Version
	tgot, err := admin.UpdateTarget(ctx, target.RecordUID, tg)
	if err != nil {
		t.Fatal(err)
	}
	if tgot.Version == "" || tgot.Version == tread.Version {
		t.Fatalf("the target update answered ETag %q after %q", tgot.Version, tread.Version)
	}
	stale := tg
	stale.MaxTTLSeconds, stale.AdminPassword = 60, "wrong"
	_, err = admin.UpdateTarget(ctx, target.RecordUID, stale)
	mustCode(t, err, http.StatusPreconditionFailed, "precondition_failed")
	if tnow, err := admin.GetTarget(ctx, target.RecordUID); err != nil || tnow.MaxTTLSeconds != 600 || tnow.Version != tgot.Version {
		t.Fatalf("after the refused update the target is %+v (%v)", tnow, err)
	}
}
