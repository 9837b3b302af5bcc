package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	syhttp "github.com/syvault/syvault/http"
	"github.com/syvault/syvault/http/client"
)

// What a hostile network peer tries against the HTTP server.

// TestAudience_NeverFromTheHostHeader: an assertion made for another server is refused
// even when sent with that server's name in the Host header; the one made for this
// server's configured URL is accepted.
func TestAudience_NeverFromTheHostHeader(t *testing.T) {
	srv := mustServer(t, "", nil)
	ac := srv.adminClient(t)
	token := func(aud, host string) int {
		t.Helper()
		now := time.Now()
		form := tokenForm(signedAssertion(t, ac, aud, now, now.Add(time.Minute)))
		req, _ := http.NewRequest("POST", srv.HTTP.URL()+syhttp.BasePath+"/auth/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := token("http://evil.example:8200", "evil.example:8200"); got != http.StatusUnauthorized {
		t.Fatalf("an assertion for another server, sent with its Host header: %d, want 401", got)
	}
	if got := token(srv.HTTP.URL(), "evil.example:8200"); got != http.StatusOK {
		t.Fatalf("an assertion for this server: %d, want 200", got)
	}
}

// An id longer than NATS takes in a request's subject (its control line, 4 KiB), read
// from the event store as sent, made NATS close the API's connection for good: one
// unauthenticated token request, its assertion's iss 5,000 letters, and every later
// request answered 503. Such ids (an assertion's issuer, a client's allowed record) are
// refused before any read, and the server answers as before.
func TestIDs_NoneTooLongForNATS(t *testing.T) {
	srv := mustServer(t, "", nil)
	ac := srv.adminClient(t)
	admin := srv.admin(t)
	long := strings.Repeat("A", 5000)
	key, err := client.ParsePrivateKey(ac.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	forged, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.RegisteredClaims{Issuer: long, Subject: long,
		Audience: jwt.ClaimStrings{srv.HTTP.URL()}, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute)),
		ID: uuid.NewString()}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	path := syhttp.BasePath + "/auth/token"
	if status, body := raw(t, srv, "POST", path, "", "application/x-www-form-urlencoded", []byte(tokenForm(forged).Encode())); status != http.StatusUnauthorized {
		t.Errorf("a token request whose issuer is 5,000 letters: %d %v; want 401", status, body)
	}
	pub, _ := mustKeyPair(t)
	reg, _ := json.Marshal(map[string]any{"name": "long", "role": "app", "public_key": pub, "allowed_records": []string{long}})
	tok, err := admin.Token(context.Background())
	if err != nil {
		t.Fatalf("a token after the long issuer: %v", err)
	}
	if status, body := raw(t, srv, "POST", syhttp.BasePath+"/clients", tok, "application/json", reg); status != http.StatusBadRequest || body["error"] != "invalid_request" {
		t.Errorf("a client allowed a record uid of 5,000 letters: %d %v; want 400 invalid_request", status, body)
	}
	if _, err := admin.ListTargets(context.Background()); err != nil {
		t.Fatalf("the server after the long ids: %v; want it answering", err)
	}
}

// A lease's answer holds its password, yet only the token's answer told a cache on the
// way not to keep it. Every API answer, an error too, now says no-store.
func TestAPI_AnswersAreNeverStored(t *testing.T) {
	eng := postgresEngine(t)
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	target := mustTarget(t, admin, eng)
	tok := mustToken(t, admin)
	body := []byte(fmt.Sprintf(`{"record_uid": %q, "ttl_seconds": 60}`, target.RecordUID))
	for _, req := range []struct{ method, path string }{{"POST", "/dynamic/lease"}, {"GET", "/dynamic/leases/NoSuchLease"}, {"GET", "/dynamic/targets"},
		{"PATCH", "/dynamic/targets"}, {"GET", "/openapi.json"}} {
		var b []byte
		if req.method == "POST" {
			b = body
		}
		resp, out := send(t, srv, req.method, syhttp.BasePath+req.path, tok, "application/json", b)
		if id, ok := out["lease_id"].(string); ok {
			t.Cleanup(func() { _ = admin.RevokeLease(context.Background(), id) })
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("%s %s (%d): Cache-Control %q; want no-store", req.method, req.path, resp.StatusCode, got)
		}
	}
}

// TestServe_RefusesWildcardWithoutPublicURL: outside --dev, a server bound to every
// interface has no URL of its own to accept in assertions, so it refuses to start.
func TestServe_RefusesWildcardWithoutPublicURL(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dev: true, DataDir: dir, Listen: "127.0.0.1:0", Replicas: 1, Components: []string{"all"}}
	m := NewMain(cfg, discardLogger())
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = m.Close()
	cfg.Dev, cfg.Listen, cfg.MasterKeyFile = false, "0.0.0.0:0", dir+"/master.key"
	m = NewMain(cfg, discardLogger())
	err := m.Open(context.Background())
	_ = m.Close()
	if err == nil || !strings.Contains(err.Error(), "--public-url") {
		t.Fatalf("Open on 0.0.0.0 without --public-url: %v; want a refusal naming --public-url", err)
	}
	cfg.PublicURLs = []string{"https://vault.example.com"}
	m = NewMain(cfg, discardLogger())
	if err := m.Open(context.Background()); err != nil {
		t.Fatalf("Open with --public-url: %v", err)
	}
	_ = m.Close()
}

// TestHTTP_SlowClientCutOff: a client trickling its body a byte at a time is cut off by
// the read timeout instead of holding the connection for as long as it likes.
func TestHTTP_SlowClientCutOff(t *testing.T) {
	srv := mustServer(t, "", func(c *Config) { c.httpReadTimeout = time.Second })
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.HTTP.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const bodyLen = 100
	fmt.Fprintf(conn, "POST %s/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n",
		syhttp.BasePath, bodyLen)
	closed := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, conn) // returns when the server closes the connection
		closed <- err
	}()
	tick := time.NewTicker(200 * time.Millisecond) // the attacker's pace, not synchronisation
	defer tick.Stop()
	for sent := 0; sent < bodyLen; sent++ {
		select {
		case <-closed:
			return // cut off while still sending: what we want
		case <-tick.C:
		}
		if _, err := conn.Write([]byte("a")); err != nil {
			return // the server closed the connection
		}
	}
	t.Fatalf("the server read a %d-byte body sent over %v with a 1 s read timeout", bodyLen, bodyLen*200*time.Millisecond)
}

// TestHTTP_HeaderSizeCap: an oversized header block is refused before any handler runs.
func TestHTTP_HeaderSizeCap(t *testing.T) {
	srv := mustServer(t, "", nil)
	req, _ := http.NewRequest("GET", srv.HTTP.URL()+"/healthz", nil)
	req.Header.Set("X-Padding", strings.Repeat("a", 2*syhttp.MaxHeaderBytes))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, io.EOF) {
			return // closed: refused
		}
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("a %d-byte header: %d, want 431", 2*syhttp.MaxHeaderBytes, resp.StatusCode)
	}
}

// TestAuth_BearerSchemeIsCaseInsensitive: RFC 7235 makes the scheme name case-insensitive.
func TestAuth_BearerSchemeIsCaseInsensitive(t *testing.T) {
	srv := mustServer(t, "", nil)
	tok, err := srv.admin(t).Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, scheme := range []string{"bearer", "BEARER", "Bearer"} {
		req, _ := http.NewRequest("GET", srv.HTTP.URL()+syhttp.BasePath+"/dynamic/leases", nil)
		req.Header.Set("Authorization", scheme+" "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s scheme: %d", scheme, resp.StatusCode)
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestIDs_NeverWildcards: ids reach NATS subjects and KV keys, so * and > (NATS
// wildcards) and dots are refused with a 400 in queries and a 404 in paths, and no other
// client's lease shows through them.
func TestIDs_NeverWildcards(t *testing.T) {
	eng := postgresEngine(t)
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	target := mustTarget(t, admin, eng)
	mustLease(t, admin, target.RecordUID, 600)
	tok, err := admin.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"*", ">", "a.b", "a.>", "%2A", "x y"} {
		q := url.QueryEscape(bad)
		for _, path := range []string{"/dynamic/leases?record_uid=" + q, "/audit?record_uid=" + q, "/audit?lease_id=" + q, "/audit?client_id=" + q} {
			status, body := raw(t, srv, "GET", syhttp.BasePath+path, tok, "", nil)
			if status != http.StatusBadRequest || body["error"] != "invalid_request" {
				t.Errorf("GET %s: %d %v, want 400 invalid_request", path, status, body)
			}
		}
		p := url.PathEscape(bad)
		for _, path := range []string{"/dynamic/leases/" + p, "/dynamic/targets/" + p, "/clients/" + p} {
			status, body := raw(t, srv, "GET", syhttp.BasePath+path, tok, "", nil)
			if status != http.StatusNotFound || body["error"] != "not_found" {
				t.Errorf("GET %s: %d %v, want 404 not_found", path, status, body)
			}
		}
		status, _ := raw(t, srv, "DELETE", syhttp.BasePath+"/dynamic/leases/"+p, tok, "", nil)
		if status != http.StatusNotFound {
			t.Errorf("DELETE /dynamic/leases/%s: %d, want 404", p, status)
		}
	}
	if strings.Contains(srv.Log.String(), "level=ERROR") {
		t.Fatalf("a wildcard id logged an error:\n%s", srv.Log.String())
	}
}

// TestTarget_SystemDatabasesRefused: a target granting anything on a system database or
// schema (a MariaDB lease with INSERT on mysql could make itself a second account that
// outlives its revocation) is refused with a 400 naming the field, and nothing is
// registered.
func TestTarget_SystemDatabasesRefused(t *testing.T) {
	pg, my := postgresEngine(t), mysqlEngine(t)
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	ctx := context.Background()
	for _, tc := range []struct {
		eng           engine
		database, sch string
		privileges    []string
	}{
		{my, "mysql", "", []string{"INSERT"}},
		{my, "performance_schema", "", []string{"SELECT"}},
		{my, "my_ql", "", []string{"SELECT"}},
		{pg, "", "pg_catalog", []string{"SELECT"}},
		{pg, "", "information_schema", []string{"SELECT"}},
	} {
		tg := tc.eng.target(t)
		db := tc.database
		if db == "" {
			db = tg.Database
		}
		tg.Grants = []client.Grant{{Database: db, Schema: tc.sch, Privileges: tc.privileges}}
		_, err := admin.CreateTarget(ctx, tg)
		mustCode(t, err, 400, "invalid_request")
		mustMention(t, err, "grants[0].")
	}
	if ts, err := admin.ListTargets(ctx); err != nil || len(ts) != 0 {
		t.Fatalf("targets after the refusals: %v %v", ts, err)
	}
}
