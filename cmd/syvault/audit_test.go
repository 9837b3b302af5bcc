package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	syhttp "github.com/syvault/syvault/http"
	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/internal/seal"
)

// TestAudit_ScriptedSession: two clients lease, renew, revoke, let expire and get refused;
// the audit replays exactly those events, in order, with the right actors, and no secret.
func TestAudit_ScriptedSession(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	r1 := mustTarget(t, admin, eng)
	r2 := mustTarget(t, admin, eng)
	start := time.Now().Add(-time.Second)
	appA, idA := newAppClient(t, srv, admin, "app", []string{r1.RecordUID})
	appB, idB := newAppClient(t, srv, admin, "app", []string{r1.RecordUID})

	l1 := mustLease(t, appA, r1.RecordUID, 3600)
	l2 := mustLease(t, appB, r1.RecordUID, 2)
	if _, err := appA.RenewLease(ctx, l1.LeaseID, 7200); err != nil {
		t.Fatal(err)
	}
	mustCode(t, appA.RevokeLease(ctx, l2.LeaseID), 404, "not_found") // refused: B's lease
	_, err := appA.CreateLease(ctx, r2.RecordUID, 60)                // refused: not allowed
	mustCode(t, err, 403, "forbidden")
	if err := appA.RevokeLease(ctx, l1.LeaseID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "B's lease expired", func() (bool, error) {
		l, err := appB.GetLease(ctx, l2.LeaseID)
		return err == nil && l.Status == "expired", err
	})

	var all []client.AuditEvent
	cursor := ""
	for {
		page, err := admin.Audit(ctx, client.AuditOptions{Since: start, Limit: 4, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page.Data...)
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatalf("audit not in stream order at %d", i)
		}
	}
	type ev struct{ typ, client, lease string }
	var got []ev
	for _, e := range all {
		switch e.Type {
		case "client.registered", "target.registered":
			continue
		}
		got = append(got, ev{e.Type, e.ClientID, e.LeaseID})
	}
	// Per lease the order is fixed; the expiry's place among the rest is timing's.
	perLease := func(id string) []ev {
		var out []ev
		for _, e := range got {
			if e.lease == id && e.typ != "access.denied" {
				out = append(out, e)
			}
		}
		return out
	}
	want1 := []ev{{"lease.requested", idA, l1.LeaseID}, {"lease.activated", idA, l1.LeaseID}, {"lease.renewed", idA, l1.LeaseID},
		{"lease.revoked", idA, l1.LeaseID}, {"lease.dropped", idA, l1.LeaseID}}
	want2 := []ev{{"lease.requested", idB, l2.LeaseID}, {"lease.activated", idB, l2.LeaseID}, {"lease.expired", idB, l2.LeaseID},
		{"lease.dropped", idB, l2.LeaseID}}
	if g := perLease(l1.LeaseID); !equalEvs(g, want1) {
		t.Errorf("lease 1 audit:\n got %v\nwant %v", g, want1)
	}
	if g := perLease(l2.LeaseID); !equalEvs(g, want2) {
		t.Errorf("lease 2 audit:\n got %v\nwant %v", g, want2)
	}
	var denied []string
	for _, e := range all {
		if e.Type == "access.denied" {
			denied = append(denied, e.ClientID+" "+e.Action+" "+e.Outcome)
		}
	}
	wantDenied := []string{idA + " lease.revoke not_found", idA + " lease.create forbidden"}
	if strings.Join(denied, "|") != strings.Join(wantDenied, "|") {
		t.Errorf("refusals audited: %v, want %v", denied, wantDenied)
	}
	if n := len(got); n != len(want1)+len(want2)+len(wantDenied) {
		t.Errorf("%d lease and refusal events, want %d: %v", n, len(want1)+len(want2)+len(wantDenied), got)
	}
	for _, e := range all {
		if e.Type == "lease.requested" && (e.TTLSeconds == 0 || e.RecordUID != r1.RecordUID || e.Username == "") {
			t.Errorf("lease.requested without ttl, record or username: %+v", e)
		}
	}

	t.Run("filters", func(t *testing.T) {
		page, err := admin.Audit(ctx, client.AuditOptions{LeaseID: l2.LeaseID})
		if err != nil || len(page.Data) != len(want2) {
			t.Fatalf("lease filter: %d events, %v", len(page.Data), err)
		}
		page, err = admin.Audit(ctx, client.AuditOptions{ClientID: idB, Since: start})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Data {
			if e.ClientID != idB && e.SubjectClientID != idB {
				t.Fatalf("client filter let through %+v", e)
			}
		}
		page, err = admin.Audit(ctx, client.AuditOptions{Since: time.Now().Add(time.Hour)})
		if err != nil || len(page.Data) != 0 {
			t.Fatalf("since in the future: %d events, %v", len(page.Data), err)
		}
		status, body := raw(t, srv, "GET", syhttp.BasePath+"/audit?since=yesterday", mustToken(t, admin), "", nil)
		if status != 400 || body["error"] != "invalid_request" {
			t.Fatalf("bad since: %d %v", status, body)
		}
	})
	t.Run("no secret in the audit output", func(t *testing.T) {
		tok := mustToken(t, admin)
		_, body := raw(t, srv, "GET", syhttp.BasePath+"/audit?limit=1000", tok, "", nil)
		out, _ := json.Marshal(body)
		for _, s := range []string{l1.Password, l2.Password, tok, url.QueryEscape(l1.Password)} {
			if strings.Contains(string(out), s) {
				t.Fatal("a secret appears in the audit output")
			}
		}
		if strings.Contains(string(out), "sealed") || strings.Contains(string(out), "PRIVATE KEY") {
			t.Fatal("sealed material or a private key appears in the audit output")
		}
	})
}

func equalEvs[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestTokens_AcrossProcesses: two API processes behind one address accept each other's
// tokens, and an assertion used at one is refused at the other.
func TestTokens_AcrossProcesses(t *testing.T) {
	const lb = "https://vault.example.com"
	natsAddr := freeAddr(t)
	p1 := mustServer(t, "", func(c *Config) { c.NATSListen = natsAddr; c.PublicURLs = []string{lb} })
	p2 := mustServer(t, "", func(c *Config) {
		c.Dev = false
		c.NATSURL = "nats://" + natsAddr
		c.NATSCreds = filepath.Join(p1.Dir, NATSClientSeedFile)
		c.MasterKeyFile = filepath.Join(p1.Dir, "master.key")
		c.PublicURLs = []string{lb}
	})
	var ac AdminClient
	data, _ := os.ReadFile(filepath.Join(p1.Dir, AdminClientFile))
	if err := json.Unmarshal(data, &ac); err != nil {
		t.Fatal(err)
	}
	key, err := client.ParsePrivateKey(ac.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	assertion, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.RegisteredClaims{Issuer: ac.ClientID, Subject: ac.ClientID,
		Audience: jwt.ClaimStrings{lb}, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute)), ID: uuid.NewString()}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	form := []byte(url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion": {assertion}}.Encode())
	path := syhttp.BasePath + "/auth/token"
	status, body := raw(t, p1, "POST", path, "", "application/x-www-form-urlencoded", form)
	if status != 200 {
		t.Fatalf("token at process 1: %d %v", status, body)
	}
	token := body["access_token"].(string)
	if status, body := raw(t, p2, "POST", path, "", "application/x-www-form-urlencoded", form); status != 401 || !strings.Contains(body["message"].(string), "already used") {
		t.Fatalf("assertion replayed at process 2: %d %v", status, body)
	}
	if status, body := raw(t, p2, "GET", syhttp.BasePath+"/dynamic/leases", token, "", nil); status != 200 {
		t.Fatalf("process 2 refused process 1's token: %d %v", status, body)
	}
}

// TestTarget_RotateAdminPassword: after the admin password changes in the database and
// the target is updated, leases issued before are still revoked.
func TestTarget_RotateAdminPassword(t *testing.T) {
	eng := mysqlEngine(t)
	ctx := context.Background()
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	tg := eng.target(t)
	target := mustRegister(t, admin, tg)
	lease := mustLease(t, admin, target.RecordUID, 3600)
	newPassword := "rotated-" + randomSecret()
	if err := eng.admin(ctx, "ALTER USER '"+tg.AdminUsername+"'@'%' IDENTIFIED BY '"+newPassword+"'"); err != nil {
		t.Fatal(err)
	}
	// (Pooled admin connections stay logged in; the update opens new ones.)
	wrong := tg
	wrong.AdminPassword = "still-wrong"
	_, err := admin.UpdateTarget(ctx, target.RecordUID, wrong)
	mustCode(t, err, 422, "target_unverified")
	mustMention(t, err, "admin_password")
	tg.AdminPassword = newPassword
	if _, err := admin.UpdateTarget(ctx, target.RecordUID, tg); err != nil {
		t.Fatal(err)
	}
	if err := admin.RevokeLease(ctx, lease.LeaseID); err != nil {
		t.Fatalf("revoking a lease issued before the rotation: %v", err)
	}
	mustBeGone(t, eng, lease.Username, 0)
	if strings.Contains(srv.Log.String(), newPassword) || strings.Contains(srv.Log.String(), "still-wrong") {
		t.Fatal("an admin password reached the log")
	}
}

// TestServe_TLS: with --tls-cert/--tls-key the API speaks HTTPS only.
func TestServe_TLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(priv)
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	srv := mustServer(t, "", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = certFile, keyFile })
	if !strings.HasPrefix(srv.HTTP.URL(), "https://") {
		t.Fatalf("URL %s", srv.HTTP.URL())
	}
	admin := srv.admin(t)
	pool := x509.NewCertPool()
	cert, _ := x509.ParseCertificate(der)
	pool.AddCert(cert)
	admin.SetHTTPClient(&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second})
	if _, err := admin.ListLeases(context.Background(), client.ListLeasesOptions{}); err != nil {
		t.Fatalf("over HTTPS: %v", err)
	}
	resp, err := http.Get("http://" + strings.TrimPrefix(srv.HTTP.URL(), "https://") + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP answered on the TLS port")
		}
	}
}

// TestAudit_UntilIsInclusive: until is compared with the events' own, precise times, so
// every event stamped at or before it is listed, however late it was stored; a lease's
// created_at is its request's time cut to the second.
func TestAudit_UntilIsInclusive(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	target := mustTarget(t, admin, eng)
	created := map[string]time.Time{}
	for range 3 {
		l := mustLease(t, admin, target.RecordUID, 60)
		created[l.LeaseID] = l.CreatedAt
	}
	all, err := admin.Audit(ctx, client.AuditOptions{RecordUID: target.RecordUID})
	if err != nil {
		t.Fatal(err)
	}
	var until time.Time
	for _, e := range all.Data {
		if e.Type != "lease.requested" {
			continue
		}
		if c := created[e.LeaseID]; e.Time.Before(c) || !e.Time.Before(c.Add(time.Second)) {
			t.Errorf("lease %s: requested at %v, but created_at is %v", e.LeaseID, e.Time, c)
		}
		until = e.Time
	}
	page, err := admin.Audit(ctx, client.AuditOptions{RecordUID: target.RecordUID, Until: until})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range page.Data {
		if e.Type == "lease.requested" {
			n++
		}
		if e.Time.After(until) {
			t.Errorf("event at %v listed past until %v", e.Time, until)
		}
	}
	if n != 3 {
		t.Fatalf("%d of 3 lease.requested events stamped at or before until were listed", n)
	}
}

// TestRotateTokenKey: `syvault rotate-token-key` against a running deployment of two
// processes. Tokens issued before a rotation keep working everywhere and new ones are
// signed with the new key; --drop-previous refuses every earlier token in every process,
// and a Go client holding one recovers by itself. A wrong master key is refused.
func TestRotateTokenKey(t *testing.T) {
	ctx := context.Background()
	natsAddr := freeAddr(t)
	p1 := mustServer(t, "", func(c *Config) { c.NATSListen = natsAddr })
	keyFile := filepath.Join(p1.Dir, "master.key")
	p2 := mustServer(t, "", func(c *Config) {
		c.Dev = false
		c.NATSURL = "nats://" + natsAddr
		c.NATSCreds = filepath.Join(p1.Dir, NATSClientSeedFile)
		c.MasterKeyFile = keyFile
	})
	admin := p1.admin(t)
	rotate := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		args = append([]string{"rotate-token-key", "--nats-url", "nats://" + natsAddr, "--nats-creds", filepath.Join(p1.Dir, NATSClientSeedFile),
			"--master-key-file", keyFile, "--data-dir", t.TempDir()}, args...)
		if err := run(ctx, args, &stdout, &stderr); err != nil {
			t.Fatalf("rotate-token-key: %v\n%s", err, stderr.String())
		}
		return stdout.String()
	}
	status := func(p *testServer, tok string) int {
		s, _ := raw(t, p, "GET", syhttp.BasePath+"/dynamic/leases", tok, "", nil)
		return s
	}
	kidOf := func(tok string) string {
		parsed, _, err := jwt.NewParser().ParseUnverified(tok, &jwt.RegisteredClaims{})
		if err != nil {
			t.Fatal(err)
		}
		kid, _ := parsed.Header["kid"].(string)
		return kid
	}
	before := mustToken(t, admin)

	out := rotate()
	kid1, ok := strings.CutPrefix(strings.SplitN(out, "\n", 2)[0], "new access-token signing key ")
	if !ok || kid1 == kidOf(before) || !strings.Contains(out, "retired key(s) "+kidOf(before)) {
		t.Fatalf("rotation output %q; key before %s", out, kidOf(before))
	}
	for _, p := range []*testServer{p1, p2} {
		deadline := time.Now().Add(5 * time.Second)
		for k, _ := p.tokens.Signing(); k != kid1; k, _ = p.tokens.Signing() {
			if time.Now().After(deadline) {
				t.Fatal("a process still signs with the old key 5s after the rotation")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, p := range []*testServer{p1, p2} {
		if s := status(p, before); s != 200 {
			t.Fatalf("a token issued before the rotation got %d", s)
		}
	}
	// New tokens carry the new key and every process accepts them.
	ac := p1.adminClient(t)
	fresh, err := client.New(p2.HTTP.URL(), ac.ClientID, ac.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	after := mustToken(t, fresh)
	if kidOf(after) != kid1 {
		t.Fatalf("a token issued after the rotation names key %q, want %q", kidOf(after), kid1)
	}
	if s := status(p1, after); s != 200 {
		t.Fatalf("process 1 refused process 2's new token: %d", s)
	}

	out = rotate("--drop-previous")
	if !strings.Contains(out, "dropped") {
		t.Fatalf("rotation output %q", out)
	}
	for _, p := range []*testServer{p1, p2} {
		for _, tok := range []string{before, after} {
			deadline := time.Now().Add(5 * time.Second)
			for status(p, tok) != 401 {
				if time.Now().After(deadline) {
					t.Fatal("a token of a dropped key still works 5s after the rotation")
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	// admin still holds `before`; its next call gets a new token instead of failing.
	if _, err := admin.ListLeases(ctx, client.ListLeasesOptions{}); err != nil {
		t.Fatalf("the Go client did not recover from its token's key being dropped: %v", err)
	}

	// Both rotations are in the audit, naming key ids and nothing else of the keys.
	page, err := admin.Audit(ctx, client.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var rotations []string
	for _, e := range page.Data {
		if e.Type == "token_key.rotated" {
			rotations = append(rotations, e.Reason)
		}
	}
	if len(rotations) != 2 || !strings.HasPrefix(rotations[0], "new signing key "+kid1+"; still verifying "+kidOf(before)) ||
		!strings.Contains(rotations[1], "dropped ") {
		t.Fatalf("rotations in the audit: %q", rotations)
	}

	var stderr bytes.Buffer
	other := filepath.Join(t.TempDir(), "other.key")
	if err := os.WriteFile(other, []byte(seal.EncodeKey(seal.NewKey())), 0o600); err != nil {
		t.Fatal(err)
	}
	err = run(ctx, []string{"rotate-token-key", "--nats-url", "nats://" + natsAddr, "--nats-creds", filepath.Join(p1.Dir, NATSClientSeedFile),
		"--master-key-file", other}, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "another master key") {
		t.Fatalf("rotation with another master key: %v", err)
	}
	for _, secret := range []string{before, after} {
		if strings.Contains(p1.Log.String()+p2.Log.String(), secret) {
			t.Fatal("a token reached the log")
		}
	}
}

// TestRotateTokenKey_Embedded: with the embedded NATS, the rotation runs on the data
// directory while the server is stopped, and the restarted server signs with the new key
// and still accepts tokens of the old one.
func TestRotateTokenKey_Embedded(t *testing.T) {
	dir := t.TempDir()
	srv := mustServer(t, dir, nil)
	before := mustToken(t, srv.admin(t))
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"rotate-token-key", "--data-dir", dir, "--master-key-file", filepath.Join(dir, "master.key")}, &stdout, &stderr); err != nil {
		t.Fatalf("rotate-token-key: %v\n%s", err, stderr.String())
	}
	srv = mustServer(t, dir, nil)
	if kid, _ := srv.tokens.Signing(); !strings.Contains(stdout.String(), "signing key "+kid+"\n") {
		t.Fatalf("the restarted server signs with %s; the rotation said %q", kid, stdout.String())
	}
	if status, body := raw(t, srv, "GET", syhttp.BasePath+"/dynamic/leases", before, "", nil); status != 200 {
		t.Fatalf("a token of the retired key got %d %v", status, body)
	}
}
