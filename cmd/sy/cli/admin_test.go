package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/internal/logbuf"
)

// The admin API's fixed data.
const (
	adminID = "c9a1b2d3-4e5f-6789-abcd-ef0123456789"
	appID   = "5b2e8f41-0c7d-4a93-b6e2-222222222222"
	leaseID = "0193f5c2-7d2a-7c3e-9a8b-111111111111"
)

var fakeClients = []client.AppClient{
	{ClientID: adminID, Name: "admin", PublicKey: "PEM-A", Role: "admin", CreatedAt: created},
	{ClientID: appID, Name: "billing", PublicKey: "PEM-B", Role: "app", AllowedRecords: []string{"7Kj9mNpQ2xRs", "Other0000000"},
		MaxTTLSeconds: 3600, MaxLeases: 50, CreatedAt: created},
}

// adminFake is what the admin routes added to a fakeServer received.
type adminFake struct {
	*fakeServer

	mu            sync.Mutex
	clientBody    map[string]any // the last POST /clients body
	clientPut     map[string]any // the last PUT /clients/{id} body
	deletedClient []string
	updateMethod  string
	updateUID     string
	updateBody    map[string]any
	events        []client.AuditEvent // the audit trail, seq 1, 2, ...
	auditQueries  []url.Values
}

// mustAdminFake starts a fakeServer that also speaks the clients, target update and
// audit API. The audit answers pages of 2 events unless asked for another limit.
func mustAdminFake(t *testing.T) *adminFake {
	t.Helper()
	f := &adminFake{fakeServer: MustFakeServer(t)}
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	authed := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer t" {
				reply(w, http.StatusUnauthorized, map[string]string{"error": "unauthenticated", "message": "Send a bearer token."})
				return
			}
			h(w, r)
		}
	}
	// echoClient keeps the body it gets in *into and answers it as the client id names.
	echoClient := func(into *map[string]any, status int) http.HandlerFunc {
		return authed(func(w http.ResponseWriter, r *http.Request) {
			data, _ := readAll(r)
			var body map[string]any
			var c client.AppClient
			json.Unmarshal(data, &body)
			json.Unmarshal(data, &c)
			f.mu.Lock()
			*into = body
			f.mu.Unlock()
			c.ClientID, c.CreatedAt = appID, created
			if id := r.PathValue("id"); id != "" {
				c.ClientID = id
			}
			reply(w, status, c)
		})
	}
	f.mux.HandleFunc("POST /api/sm/v1/clients", echoClient(&f.clientBody, http.StatusCreated))
	f.mux.HandleFunc("GET /api/sm/v1/clients/{id}", authed(func(w http.ResponseWriter, r *http.Request) {
		for _, c := range fakeClients {
			if c.ClientID == r.PathValue("id") {
				reply(w, http.StatusOK, c)
				return
			}
		}
		reply(w, http.StatusNotFound, map[string]string{"error": "not_found", "message": "No client with id \"" + r.PathValue("id") + "\"."})
	}))
	f.mux.HandleFunc("PUT /api/sm/v1/clients/{id}", echoClient(&f.clientPut, http.StatusOK))
	f.mux.HandleFunc("GET /api/sm/v1/clients", authed(func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string]any{"data": fakeClients})
	}))
	f.mux.HandleFunc("DELETE /api/sm/v1/clients/{id}", authed(func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != appID {
			reply(w, http.StatusNotFound, map[string]string{"error": "not_found", "message": "No client with id \"" + r.PathValue("id") + "\"."})
			return
		}
		f.mu.Lock()
		f.deletedClient = append(f.deletedClient, r.PathValue("id"))
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	f.mux.HandleFunc("PUT /api/sm/v1/dynamic/targets/{uid}", authed(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		f.updateMethod, f.updateUID, f.updateBody = r.Method, r.PathValue("uid"), body
		f.mu.Unlock()
		reply(w, http.StatusOK, fakeTarget)
	}))
	f.mux.HandleFunc("GET /api/sm/v1/audit", authed(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit := 2
		if v := q.Get("limit"); v != "" {
			limit, _ = strconv.Atoi(v)
		}
		after, _ := strconv.ParseUint(q.Get("cursor"), 10, 64)
		f.mu.Lock()
		f.auditQueries = append(f.auditQueries, q)
		var match []client.AuditEvent
		for _, e := range f.events {
			if e.Seq > after && (q.Get("client_id") == "" || e.ClientID == q.Get("client_id")) {
				match = append(match, e)
			}
		}
		f.mu.Unlock()
		page := client.AuditPage{Data: match}
		if len(match) > limit {
			page.Data = match[:limit]
			page.NextCursor = strconv.FormatUint(match[limit-1].Seq, 10)
		}
		if page.Data == nil {
			page.Data = []client.AuditEvent{}
		}
		reply(w, http.StatusOK, page)
	}))
	return f
}

func readAll(r *http.Request) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(r.Body)
	return b.Bytes(), err
}

// addEvents appends events to the trail, numbering them.
func (f *adminFake) addEvents(evs ...client.AuditEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range evs {
		e.Seq = uint64(len(f.events) + 1)
		f.events = append(f.events, e)
	}
}

// cursors returns the cursor of every audit request so far ("" for none).
func (f *adminFake) cursors() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, q := range f.auditQueries {
		out = append(out, q.Get("cursor"))
	}
	return out
}

var auditFixture = []client.AuditEvent{
	{Time: created, Type: "target.registered", ClientID: adminID, RecordUID: "7Kj9mNpQ2xRs", Outcome: "ok"},
	{Time: created.Add(time.Minute), Type: "lease.requested", ClientID: appID, RecordUID: "7Kj9mNpQ2xRs", LeaseID: leaseID, TTLSeconds: 3600, Outcome: "ok"},
	{Time: created.Add(2 * time.Minute), Type: "lease.failed", ClientID: appID, RecordUID: "7Kj9mNpQ2xRs", LeaseID: leaseID, TTLSeconds: 3600, Outcome: "failed", Reason: "target_unavailable"},
}

// mustPublicKey writes a fresh key pair as sy keygen does and returns the paths and the
// public key's PEM.
func mustPublicKey(t *testing.T) (privPath, pubPath, pubPEM string) {
	t.Helper()
	priv, pub, err := newKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	privPath, pubPath = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.pub.pem")
	if err := os.WriteFile(privPath, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubPath, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return privPath, pubPath, string(pub)
}

func TestAdminCommands(t *testing.T) {
	f := mustAdminFake(t)
	f.addEvents(auditFixture...)
	env := f.env(t)
	privPath, pubPath, pubPEM := mustPublicKey(t)
	indented := func(v any) string {
		b, _ := json.MarshalIndent(v, "", "  ")
		return string(b) + "\n"
	}
	lines := func(l ...string) string { return strings.Join(l, "\n") + "\n" }
	createdApp := client.AppClient{ClientID: appID, Name: "billing", PublicKey: pubPEM, Role: "app",
		AllowedRecords: []string{"7Kj9mNpQ2xRs", "Other0000000", "Third0000000"}, MaxTTLSeconds: 5400, MaxLeases: 20, CreatedAt: created}
	targetFile := filepath.Join(t.TempDir(), "target.json")
	// As "target get" prints it, plus the rotated password.
	os.WriteFile(targetFile, []byte(`{"record_uid": "7Kj9mNpQ2xRs", "name": "orders-pg", "engine": "postgresql",
		"host": "127.0.0.1", "port": 5432, "database": "orders", "admin_username": "syvault_admin",
		"admin_password": "s3cret-admin", "tls_mode": "disable", "created_at": "2026-04-06T12:00:00Z",
		"grants": [{"database": "orders", "schema": "public", "privileges": ["SELECT"]}]}`), 0o600)
	const auditHeader = "SEQ     TIME                  TYPE               CLIENT_ID                             RECORD_UID    LEASE_ID                              TTL    OUTCOME             REASON"
	auditRows := []string{
		"1       2026-04-06T12:00:00Z  target.registered  c9a1b2d3-4e5f-6789-abcd-ef0123456789  7Kj9mNpQ2xRs  -                                     -      ok                  -",
		"2       2026-04-06T12:01:00Z  lease.requested    5b2e8f41-0c7d-4a93-b6e2-222222222222  7Kj9mNpQ2xRs  0193f5c2-7d2a-7c3e-9a8b-111111111111  3600   ok                  -",
		"3       2026-04-06T12:02:00Z  lease.failed       5b2e8f41-0c7d-4a93-b6e2-222222222222  7Kj9mNpQ2xRs  0193f5c2-7d2a-7c3e-9a8b-111111111111  3600   failed              target_unavailable",
	}
	var jsonLines []string
	for i, e := range auditFixture {
		e.Seq = uint64(i + 1)
		b, _ := json.Marshal(e)
		jsonLines = append(jsonLines, string(b))
	}

	tests := []struct {
		name       string
		args       []string
		wantStdout string
		wantStderr string
		check      func(t *testing.T)
	}{
		{name: "client create", args: []string{"client", "create", "--name", "billing", "--public-key-file", pubPath,
			"--allow", "7Kj9mNpQ2xRs", "--allow", "Other0000000, Third0000000,7Kj9mNpQ2xRs", "--max-ttl", "1h30m", "--max-leases", "20"},
			wantStdout: indented(createdApp),
			check: func(t *testing.T) {
				f.mu.Lock()
				defer f.mu.Unlock()
				want := map[string]any{"name": "billing", "public_key": pubPEM, "role": "app",
					"allowed_records": []any{"7Kj9mNpQ2xRs", "Other0000000", "Third0000000"}, "max_ttl_seconds": float64(5400), "max_leases": float64(20)}
				if got, _ := json.Marshal(f.clientBody); string(got) != mustJSON(want) {
					t.Errorf("client create sent %s, want %s", got, mustJSON(want))
				}
			}},
		{name: "client create admin table", args: []string{"client", "create", "--name", "ops", "--public-key-file", pubPath,
			"--role", "admin", "--max-ttl", "600", "--format", "table"},
			wantStdout: lines("CLIENT_ID                             NAME  ROLE   ALLOWED  MAX_TTL  MAX_LEASES  CREATED_AT",
				"5b2e8f41-0c7d-4a93-b6e2-222222222222  ops   admin  -        600      -           2026-04-06T12:00:00Z"),
			check: func(t *testing.T) {
				f.mu.Lock()
				defer f.mu.Unlock()
				if f.clientBody["role"] != "admin" || f.clientBody["max_ttl_seconds"] != float64(600) || f.clientBody["allowed_records"] != nil ||
					f.clientBody["max_leases"] != nil {
					t.Errorf("client create sent %v", f.clientBody)
				}
			}},
		{name: "client update changes only what its flags say", args: []string{"client", "update", appID, "--allow", "Third0000000",
			"--max-leases", "0", "--public-key-file", pubPath, "--format", "table"},
			wantStdout: lines("CLIENT_ID                             NAME     ROLE  ALLOWED       MAX_TTL  MAX_LEASES  CREATED_AT",
				"5b2e8f41-0c7d-4a93-b6e2-222222222222  billing  app   Third0000000  3600     -           2026-04-06T12:00:00Z"),
			check: func(t *testing.T) {
				f.mu.Lock()
				defer f.mu.Unlock()
				want := map[string]any{"name": "billing", "public_key": pubPEM, "role": "app", "allowed_records": []any{"Third0000000"},
					"max_ttl_seconds": float64(3600)}
				if got, _ := json.Marshal(f.clientPut); string(got) != mustJSON(want) {
					t.Errorf("client update sent %s, want %s", got, mustJSON(want))
				}
			}},
		{name: "client list", args: []string{"client", "list"},
			wantStdout: lines("CLIENT_ID                             NAME     ROLE   ALLOWED                    MAX_TTL  MAX_LEASES  CREATED_AT",
				"c9a1b2d3-4e5f-6789-abcd-ef0123456789  admin    admin  -                          -        -           2026-04-06T12:00:00Z",
				"5b2e8f41-0c7d-4a93-b6e2-222222222222  billing  app    7Kj9mNpQ2xRs,Other0000000  3600     50          2026-04-06T12:00:00Z")},
		{name: "client list json", args: []string{"client", "list", "--format", "json"},
			wantStdout: indented(map[string]any{"data": fakeClients})},
		{name: "client delete", args: []string{"client", "delete", appID}, wantStderr: "client " + appID + " deleted\n",
			check: func(t *testing.T) {
				f.mu.Lock()
				defer f.mu.Unlock()
				if len(f.deletedClient) != 1 || f.deletedClient[0] != appID {
					t.Errorf("deleted %v", f.deletedClient)
				}
			}},
		{name: "target update", args: []string{"dynamic", "target", "update", "7Kj9mNpQ2xRs", "-f", targetFile},
			wantStdout: indented(fakeTarget),
			check: func(t *testing.T) {
				f.mu.Lock()
				defer f.mu.Unlock()
				if f.updateMethod != http.MethodPut || f.updateUID != "7Kj9mNpQ2xRs" {
					t.Errorf("update sent as %s of %q", f.updateMethod, f.updateUID)
				}
				want := map[string]any{"name": "orders-pg", "engine": "postgresql", "host": "127.0.0.1", "port": float64(5432),
					"database": "orders", "admin_username": "syvault_admin", "admin_password": "s3cret-admin", "tls_mode": "disable",
					"grants": []any{map[string]any{"database": "orders", "schema": "public", "privileges": []any{"SELECT"}}}}
				if got, _ := json.Marshal(f.updateBody); string(got) != mustJSON(want) {
					t.Errorf("update sent %s, want %s (no record_uid or created_at)", got, mustJSON(want))
				}
			}},
		{name: "audit table", args: []string{"audit"}, wantStdout: lines(append([]string{auditHeader}, auditRows...)...),
			check: func(t *testing.T) {
				// Pages of 2: the second asks for the events after the first page's last.
				if got := f.cursors(); strings.Join(got, ",") != ",2" {
					t.Errorf("audit cursors %q, want [\"\" \"2\"]", got)
				}
			}},
		{name: "audit json lines, one event per page", args: []string{"audit", "--format", "json", "--limit", "1"},
			wantStdout: lines(jsonLines...),
			check: func(t *testing.T) {
				if got := f.cursors(); strings.Join(got, ",") != ",1,2" {
					t.Errorf("audit cursors %q, want [\"\" \"1\" \"2\"]", got)
				}
				f.mu.Lock()
				defer f.mu.Unlock()
				for _, q := range f.auditQueries {
					if q.Get("limit") != "1" {
						t.Errorf("audit query %v without limit=1", q)
					}
				}
			}},
		{name: "audit without matching events", args: []string{"audit", "--client-id", "nobody"}, wantStdout: lines(auditHeader)},
		{name: "audit filtered by client id", args: []string{"audit", "--client-id", adminID, "--record-uid", "7Kj9mNpQ2xRs", "--lease-id", "L"},
			wantStdout: lines(auditHeader, auditRows[0]),
			check: func(t *testing.T) {
				f.mu.Lock()
				defer f.mu.Unlock()
				q := f.auditQueries[0]
				if q.Get("client_id") != adminID || q.Get("record_uid") != "7Kj9mNpQ2xRs" || q.Get("lease_id") != "L" {
					t.Errorf("audit query %v", q)
				}
				// --client-id filters; the credentials still come from SY_CLIENT_ID.
				f.fakeServer.mu.Lock()
				defer f.fakeServer.mu.Unlock()
				if iss := f.clientIDs[len(f.clientIDs)-1]; iss != env[EnvClientID] {
					t.Errorf("token asked for as %q, want %q", iss, env[EnvClientID])
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.mu.Lock()
			f.auditQueries = nil
			f.mu.Unlock()
			r := run(t, env, "", tt.args...)
			expectOutput(t, r, tt.wantStdout, tt.wantStderr, tt.check)
		})
	}
	if _, err := os.Stat(privPath); err != nil {
		t.Fatal(err)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestAudit_sinceDuration(t *testing.T) {
	f := mustAdminFake(t)
	env := f.env(t)
	for _, tt := range []struct {
		since string
		ago   time.Duration
	}{{"1h", time.Hour}, {"90m", 90 * time.Minute}, {"2d", 48 * time.Hour}} {
		t.Run(tt.since, func(t *testing.T) {
			f.mu.Lock()
			f.auditQueries = nil
			f.mu.Unlock()
			before := time.Now()
			r := run(t, env, "", "audit", "--since", tt.since, "--until", "2099-01-02T03:04:05Z")
			after := time.Now()
			if r.code != 0 {
				t.Fatalf("exit status %d, stderr %q", r.code, r.stderr)
			}
			f.mu.Lock()
			q := f.auditQueries[0]
			f.mu.Unlock()
			since, err := time.Parse(time.RFC3339, q.Get("since"))
			if err != nil || !strings.HasSuffix(q.Get("since"), "Z") {
				t.Fatalf("since = %q, want an RFC 3339 UTC time", q.Get("since"))
			}
			if lo, hi := before.Add(-tt.ago), after.Add(-tt.ago); since.Before(lo) || since.After(hi) {
				t.Errorf("since = %s, want between %s and %s", since, lo, hi)
			}
			if q.Get("until") != "2099-01-02T03:04:05Z" {
				t.Errorf("until = %q", q.Get("until"))
			}
		})
	}
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestAudit_follow(t *testing.T) {
	f := mustAdminFake(t)
	f.addEvents(auditFixture...)
	env := f.env(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr logbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"audit", "--follow", "--poll-interval", "5ms", "--format", "json"},
			func(k string) string { return env[k] }, strings.NewReader(""), &stdout, &stderr)
	}()
	sawCursor := func(c string) func() bool {
		return func() bool {
			for _, got := range f.cursors() {
				if got == c {
					return true
				}
			}
			return false
		}
	}
	// The two pages there are, then polls after the last event seen.
	waitFor(t, "the existing events", func() bool { return strings.Count(stdout.String(), "\n") == 3 })
	waitFor(t, "a poll after seq 3", sawCursor("3"))
	f.addEvents(client.AuditEvent{Time: created.Add(3 * time.Minute), Type: "lease.revoked", ClientID: adminID,
		RecordUID: "7Kj9mNpQ2xRs", LeaseID: leaseID, Outcome: "ok"})
	waitFor(t, "the new event", func() bool { return strings.Contains(stdout.String(), `"seq":4`) })
	waitFor(t, "a poll after seq 4", sawCursor("4"))
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit status %d after cancel, want 0 (stderr %q)", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sy audit --follow did not end when its context was cancelled")
	}
	if stderr.String() != "" {
		t.Errorf("stderr = %q", stderr.String())
	}
	var seqs []uint64
	for _, line := range strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n") {
		var e client.AuditEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("not a JSON line: %q", line)
		}
		seqs = append(seqs, e.Seq)
	}
	if mustJSON(seqs) != "[1,2,3,4]" {
		t.Errorf("printed seqs %v, want each of 1..4 once, in order", seqs)
	}
	for _, c := range f.cursors() {
		if c != "" && c != "2" && c != "3" && c != "4" {
			t.Errorf("asked with cursor %q", c)
		}
	}
}

func TestAdminErrors(t *testing.T) {
	f := mustAdminFake(t)
	env := f.env(t)
	privPath, pubPath, _ := mustPublicKey(t)
	privPEM, _ := os.ReadFile(privPath)
	notPEM := filepath.Join(t.TempDir(), "key.txt")
	os.WriteFile(notPEM, []byte("not a key"), 0o600)
	usage := []struct {
		name string
		args []string
	}{
		{"client create without --public-key-file", []string{"client", "create", "--name", "b", "--allow", "x"}},
		{"client create without --name", []string{"client", "create", "--public-key-file", pubPath, "--allow", "x"}},
		{"app client without --allow", []string{"client", "create", "--name", "b", "--public-key-file", pubPath}},
		{"bad role", []string{"client", "create", "--name", "b", "--public-key-file", pubPath, "--role", "root"}},
		{"bad max-ttl", []string{"client", "create", "--name", "b", "--public-key-file", pubPath, "--allow", "x", "--max-ttl", "1.5s"}},
		{"negative max-leases", []string{"client", "create", "--name", "b", "--public-key-file", pubPath, "--allow", "x", "--max-leases", "-1"}},
		{"zero max-leases", []string{"client", "create", "--name", "b", "--public-key-file", pubPath, "--allow", "x", "--max-leases", "0"}},
		{"max-leases over the bound", []string{"client", "create", "--name", "b", "--public-key-file", pubPath, "--allow", "x", "--max-leases", "10001"}},
		{"max-leases not a number", []string{"client", "create", "--name", "b", "--public-key-file", pubPath, "--allow", "x", "--max-leases", "ten"}},
		{"client update without id", []string{"client", "update", "--max-leases", "5"}},
		{"client update negative max-leases", []string{"client", "update", appID, "--max-leases", "-5"}},
		{"client delete without id", []string{"client", "delete"}},
		{"target update without uid", []string{"dynamic", "target", "update", "-f", "t.json"}},
		{"target update without -f", []string{"dynamic", "target", "update", "uid"}},
		{"audit bad since", []string{"audit", "--since", "yesterday"}},
		{"audit negative since", []string{"audit", "--since", "-1h"}},
		{"audit until before since", []string{"audit", "--since", "2026-04-06T12:00:00Z", "--until", "2026-04-06T11:00:00Z"}},
		{"audit follow with until", []string{"audit", "--follow", "--until", "1h"}},
		{"audit bad format", []string{"audit", "--format", "yaml"}},
	}
	for _, tt := range usage {
		t.Run(tt.name, func(t *testing.T) {
			wantOneErrorLine(t, run(t, env, "", tt.args...), 2)
		})
	}
	runtime := []struct {
		name       string
		args       []string
		wantStderr string // a substring
	}{
		{"unreadable key file", []string{"client", "create", "--name", "b", "--allow", "x", "--public-key-file", filepath.Join(t.TempDir(), "nope.pem")},
			"reading the public key"},
		{"private key as public key", []string{"client", "create", "--name", "b", "--allow", "x", "--public-key-file", privPath},
			"holds a private key"},
		{"not a PEM file", []string{"client", "create", "--name", "b", "--allow", "x", "--public-key-file", notPEM},
			"is not a PEM public key"},
		{"unknown client", []string{"client", "delete", "nobody"}, `sy: not_found: No client with id "nobody".`},
		{"target file for another uid", []string{"dynamic", "target", "update", "Other0000000", "-f", "-"},
			"is for record_uid 7Kj9mNpQ2xRs, not Other0000000"},
	}
	for _, tt := range runtime {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, env, `{"record_uid": "7Kj9mNpQ2xRs", "name": "x"}`, tt.args...)
			wantOneErrorLine(t, r, 1)
			if !strings.Contains(r.stderr, tt.wantStderr) {
				t.Errorf("stderr = %q, want it to say %q", r.stderr, tt.wantStderr)
			}
			if strings.Contains(r.stderr, strings.Split(string(privPEM), "\n")[1]) {
				t.Error("the private key was printed")
			}
		})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.clientBody != nil || f.updateBody != nil {
		t.Errorf("a refused command still sent a request: client %v, target %v", f.clientBody, f.updateBody)
	}
}

// TestAudit_tableShowsNoTerminalControls: an app client chooses the record uid of its
// refused requests, and the audit table shows it to an admin's terminal: escape
// sequences in it could erase the rows above, write the clipboard, or reorder the text.
func TestAudit_tableShowsNoTerminalControls(t *testing.T) {
	var out bytes.Buffer
	p := newAuditPrinter(&out, false)
	hostile := "x\x1b[2K\x1b[1A\r\t\u202eevil"
	if err := p.print(client.AuditEvent{Seq: 7, Type: "access.denied", RecordUID: hostile, Reason: "nope\x1b]52;c;AAAA\x07"}); err != nil {
		t.Fatal(err)
	}
	var tw bytes.Buffer
	if err := writeClientTable(&tw, []client.AppClient{{ClientID: "c", Name: hostile}}); err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]string{"audit": out.String(), "clients": tw.String()} {
		if strings.ContainsAny(got, "\x1b\r\x07\u202e") || strings.Count(got, "\n") != 2 {
			t.Errorf("%s table passes terminal controls through: %q", name, got)
		}
		if !strings.Contains(got, `x\x1b[2K`) {
			t.Errorf("%s table does not show the escaped record uid: %q", name, got)
		}
	}
}
