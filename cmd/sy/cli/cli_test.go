package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syvault/syvault/http/client"
)

// result is what one run of Main left behind.
type result struct {
	code           int
	stdout, stderr string
}

// run runs Main in-process with env as the whole environment.
func run(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code := Main(context.Background(), args, getenv, strings.NewReader(stdin), &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// wantOneErrorLine fails unless r exited with code and wrote exactly one "sy: " line to
// stderr and nothing to stdout.
func wantOneErrorLine(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit status %d, want %d (stderr %q)", r.code, code, r.stderr)
	}
	if !strings.HasPrefix(r.stderr, "sy: ") || !strings.HasSuffix(r.stderr, "\n") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("stderr = %q, want exactly one line starting with \"sy: \"", r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("stdout = %q, want nothing", r.stdout)
	}
}

// MustKey writes a fresh private key to a temporary file and returns its path and PEM.
func MustKey(tb testing.TB) (path, pemText string) {
	tb.Helper()
	priv, _, err := newKeyPair()
	if err != nil {
		tb.Fatal(err)
	}
	path = filepath.Join(tb.TempDir(), "client.pem")
	if err := os.WriteFile(path, priv, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path, string(priv)
}

// The fake server's fixed answers.
var (
	created    = time.Date(2026, 4, 6, 12, 0, 0, 0, time.UTC)
	expires    = time.Date(2026, 4, 6, 13, 0, 0, 0, time.UTC)
	symbolPass = `xK9#mP2$qR7'wL4"nB\` + "`$(rm -rf /)`;&|<>*?!~ %{}[]"
	fakeLease  = client.Lease{
		LeaseID: "0193f5c2-7d2a-7c3e-9a8b-111111111111", Username: "vf_tmp_a8f3k2m9", Password: symbolPass,
		ConnectionString: "postgresql://vf_tmp_a8f3k2m9:xK9%23mP2@db.example.com:5432/myapp",
		ExpiresAt:        expires, RecordUID: "7Kj9mNpQ2xRs", CreatedAt: created, Engine: "postgresql",
		Host: "db.example.com", Port: 5432, Database: "myapp",
	}
	fakeInfos = []client.LeaseInfo{
		{LeaseID: "lease-1", RecordUID: "7Kj9mNpQ2xRs", Username: "vf_tmp_aaaaaaaa", CreatedAt: created, ExpiresAt: expires, Status: "active", TTLSeconds: 3600},
		{LeaseID: "lease-2", RecordUID: "7Kj9mNpQ2xRs", Username: "vf_tmp_bbbbbbbb", CreatedAt: created, ExpiresAt: expires, Status: "active", TTLSeconds: 3600},
		{LeaseID: "lease-3", RecordUID: "Other0000000", Username: "vf_tmp_cccccccc", CreatedAt: created, ExpiresAt: expires, Status: "active", TTLSeconds: 3600},
	}
	fakeTarget = client.Target{
		RecordUID: "7Kj9mNpQ2xRs", Name: "orders-pg", Engine: "postgresql", Host: "127.0.0.1", Port: 5432,
		Database: "orders", AdminUsername: "syvault_admin", TLSMode: "disable", MaxTTLSeconds: 86400, CreatedAt: created,
		Grants: []client.Grant{{Database: "orders", Schema: "public", Privileges: []string{"SELECT", "INSERT"}}},
	}
)

// fakeServer speaks the API's HTTP contract with fixed answers and records what it got.
type fakeServer struct {
	*httptest.Server
	mux *http.ServeMux // more routes may be added to it while it serves

	mu            sync.Mutex
	clientIDs     []string // iss of each client assertion
	leaseRequests []map[string]any
	renewTTL      int
	revoked       []string
	targetBody    map[string]any
	deleteQuery   string
	onLease       func() // called before a lease is answered, if set
	rateLimited   int    // lease requests to refuse with 429 rate_limited first
}

func (f *fakeServer) record(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

// MustFakeServer starts a fakeServer, closed when the test ends.
func MustFakeServer(tb testing.TB) *fakeServer {
	tb.Helper()
	f := &fakeServer{}
	mux := http.NewServeMux()
	writeJSON := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	notFound := func(w http.ResponseWriter, what, id string) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found", "message": "No " + what + ` with id "` + id + `".`})
	}
	authed := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer t" {
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthenticated", "message": "Send a bearer token."})
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("POST /api/sm/v1/auth/token", func(w http.ResponseWriter, r *http.Request) {
		var claims struct {
			Iss string `json:"iss"`
		}
		parts := strings.Split(r.PostFormValue("client_assertion"), ".")
		if r.PostFormValue("grant_type") != "client_credentials" || len(parts) != 3 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "message": "Send a client assertion."})
			return
		}
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		json.Unmarshal(payload, &claims)
		f.record(func() { f.clientIDs = append(f.clientIDs, claims.Iss) })
		writeJSON(w, http.StatusOK, map[string]any{"access_token": "t", "token_type": "Bearer", "expires_in": 900})
	})
	mux.HandleFunc("POST /api/sm/v1/dynamic/lease", authed(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		var hook func()
		limited := false
		f.record(func() {
			f.leaseRequests = append(f.leaseRequests, body)
			hook = f.onLease
			if limited = f.rateLimited > 0; limited {
				f.rateLimited--
			}
		})
		if limited {
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "rate_limited", "message": "Too fast; retry after 1 s."})
			return
		}
		if hook != nil {
			hook()
		}
		writeJSON(w, http.StatusCreated, fakeLease)
	}))
	mux.HandleFunc("GET /api/sm/v1/dynamic/leases", authed(func(w http.ResponseWriter, r *http.Request) {
		// Two pages: the first two leases, then the rest.
		if r.URL.Query().Get("cursor") == "page2" {
			writeJSON(w, http.StatusOK, client.LeasePage{Data: fakeInfos[2:]})
			return
		}
		writeJSON(w, http.StatusOK, client.LeasePage{Data: fakeInfos[:2], NextCursor: "page2"})
	}))
	mux.HandleFunc("GET /api/sm/v1/dynamic/leases/{id}", authed(func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "lease-1" {
			notFound(w, "lease", r.PathValue("id"))
			return
		}
		writeJSON(w, http.StatusOK, fakeInfos[0])
	}))
	mux.HandleFunc("POST /api/sm/v1/dynamic/leases/{id}/renew", authed(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			TTLSeconds int `json:"ttl_seconds"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		f.record(func() { f.renewTTL = body.TTLSeconds })
		l := fakeInfos[0]
		l.ExpiresAt = created.Add(time.Duration(body.TTLSeconds) * time.Second)
		writeJSON(w, http.StatusOK, l)
	}))
	mux.HandleFunc("DELETE /api/sm/v1/dynamic/leases/{id}", authed(func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "x" {
			notFound(w, "lease", "x")
			return
		}
		f.record(func() { f.revoked = append(f.revoked, r.PathValue("id")) })
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /api/sm/v1/dynamic/targets", authed(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		f.record(func() { f.targetBody = body })
		writeJSON(w, http.StatusCreated, fakeTarget)
	}))
	mux.HandleFunc("GET /api/sm/v1/dynamic/targets", authed(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"data": []client.Target{fakeTarget}})
	}))
	mux.HandleFunc("GET /api/sm/v1/dynamic/targets/{uid}", authed(func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("uid") != fakeTarget.RecordUID {
			notFound(w, "target", r.PathValue("uid"))
			return
		}
		writeJSON(w, http.StatusOK, fakeTarget)
	}))
	mux.HandleFunc("DELETE /api/sm/v1/dynamic/targets/{uid}", authed(func(w http.ResponseWriter, r *http.Request) {
		f.record(func() { f.deleteQuery = r.URL.RawQuery })
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("/broken/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>oops\n</html>", http.StatusBadGateway)
	})
	f.mux = mux
	f.Server = httptest.NewServer(mux)
	tb.Cleanup(f.Close)
	return f
}

// env returns an environment pointing at the fake server with a fresh key.
func (f *fakeServer) env(tb testing.TB) map[string]string {
	tb.Helper()
	_, key := MustKey(tb)
	return map[string]string{EnvServer: f.URL, EnvClientID: "c9a1b2d3-4e5f-6789-abcd-ef0123456789", EnvPrivateKey: key}
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "client.pem")
	r := run(t, nil, "", "keygen", "--out", out)
	if r.code != 0 || r.stdout != "" {
		t.Fatalf("keygen: %+v", r)
	}
	privPEM, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := client.ParsePrivateKey(string(privPEM))
	if err != nil {
		t.Fatalf("client.ParsePrivateKey refuses the written key: %v", err)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", fi.Mode().Perm())
	}
	pubPEM, err := os.ReadFile(filepath.Join(dir, "client.pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pubPEM)
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("public key file is not a PEM PUBLIC KEY: %q", pubPEM)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !priv.Public().(ed25519.PublicKey).Equal(pub) {
		t.Error("the public key does not belong to the private key")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("directory holds %d files, want the 2 keys", len(entries))
	}

	t.Run("refuses to overwrite", func(t *testing.T) {
		r := run(t, nil, "", "keygen", "--out", out)
		wantOneErrorLine(t, r, 1)
		if again, _ := os.ReadFile(out); !bytes.Equal(again, privPEM) {
			t.Error("the existing key was overwritten")
		}
	})
	t.Run("force overwrites", func(t *testing.T) {
		if r := run(t, nil, "", "keygen", "--out", out, "--force"); r.code != 0 {
			t.Fatalf("keygen --force: %+v", r)
		}
		if again, _ := os.ReadFile(out); bytes.Equal(again, privPEM) {
			t.Error("the key was not replaced")
		}
	})
	t.Run("missing --out", func(t *testing.T) {
		wantOneErrorLine(t, run(t, nil, "", "keygen"), 2)
	})
	// In a directory another user may write to, the public key's path may name their
	// symlink by the time its mode is set: keygen made the file it pointed at (a private
	// file of the user's) readable to all when it set the mode by path.
	t.Run("never sets a mode through a symlink", func(t *testing.T) {
		shared, private := t.TempDir(), t.TempDir()
		secret := filepath.Join(private, "secret")
		if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(shared, "k.pem")
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			link := filepath.Join(shared, "link")
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = os.Symlink(secret, link)
				_ = os.Rename(link, publicKeyPath(out))
			}
		}()
		for range 200 {
			run(t, nil, "", "keygen", "--out", out, "--force")
		}
		close(stop)
		<-done
		if fi, err := os.Stat(secret); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("the file a planted symlink named is now %v (%v), want 0600", fi.Mode().Perm(), err)
		}
	})
}

func TestResolveCredentials(t *testing.T) {
	keyPath, key := MustKey(t)
	otherPath, otherKey := MustKey(t)
	dir := t.TempDir()
	credFile := filepath.Join(dir, "admin-client.json")
	data, _ := json.Marshal(credentialsFile{Server: "http://file:8200", ClientID: "file-id", PrivateKey: otherKey})
	if err := os.WriteFile(credFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	badJSON := filepath.Join(dir, "bad.json")
	os.WriteFile(badJSON, []byte("{"), 0o600)
	escaped := strings.ReplaceAll(strings.TrimSpace(key), "\n", `\n`)

	tests := []struct {
		name    string
		flags   credentialFlags
		env     map[string]string
		want    credentials // Server, ClientID, PrivateKey compared
		wantErr string      // substring of the error; "" for success
	}{
		{name: "environment",
			env:  map[string]string{EnvServer: "http://env:8200", EnvClientID: "env-id", EnvPrivateKey: key},
			want: credentials{Server: "http://env:8200", ClientID: "env-id", PrivateKey: key}},
		{name: "key file from environment",
			env:  map[string]string{EnvServer: "http://env:8200", EnvClientID: "env-id", EnvPrivateKeyFile: keyPath},
			want: credentials{Server: "http://env:8200", ClientID: "env-id", PrivateKey: key}},
		{name: "flags override environment",
			flags: credentialFlags{server: "https://flag", clientID: "flag-id", privateKeyFile: otherPath},
			env:   map[string]string{EnvServer: "http://env:8200", EnvClientID: "env-id", EnvPrivateKey: key},
			want:  credentials{Server: "https://flag", ClientID: "flag-id", PrivateKey: otherKey}},
		{name: "SY_PRIVATE_KEY wins over SY_PRIVATE_KEY_FILE",
			env:  map[string]string{EnvServer: "http://env", EnvClientID: "env-id", EnvPrivateKey: key, EnvPrivateKeyFile: otherPath},
			want: credentials{Server: "http://env", ClientID: "env-id", PrivateKey: key}},
		{name: "credentials file flag",
			flags: credentialFlags{credentialsFile: credFile},
			want:  credentials{Server: "http://file:8200", ClientID: "file-id", PrivateKey: otherKey}},
		{name: "credentials file from environment",
			env:  map[string]string{EnvCredentialsFile: credFile},
			want: credentials{Server: "http://file:8200", ClientID: "file-id", PrivateKey: otherKey}},
		{name: "environment overrides credentials file field by field",
			env:  map[string]string{EnvCredentialsFile: credFile, EnvClientID: "env-id", EnvPrivateKeyFile: keyPath},
			want: credentials{Server: "http://file:8200", ClientID: "env-id", PrivateKey: key}},
		{name: "flags override credentials file",
			flags: credentialFlags{credentialsFile: credFile, server: "https://flag"},
			want:  credentials{Server: "https://flag", ClientID: "file-id", PrivateKey: otherKey}},
		{name: "PEM with escaped newlines",
			env:  map[string]string{EnvServer: "http://env", EnvClientID: "env-id", EnvPrivateKey: escaped},
			want: credentials{Server: "http://env", ClientID: "env-id", PrivateKey: strings.ReplaceAll(escaped, `\n`, "\n")}},
		{name: "nothing set", wantErr: "missing credentials: set SY_SERVER (or --server), SY_CLIENT_ID (or --client-id) and SY_PRIVATE_KEY or SY_PRIVATE_KEY_FILE (or --private-key-file)"},
		{name: "key missing",
			env:     map[string]string{EnvServer: "http://env", EnvClientID: "env-id"},
			wantErr: "missing credentials: set SY_PRIVATE_KEY or SY_PRIVATE_KEY_FILE (or --private-key-file), or point SY_CREDENTIALS_FILE"},
		{name: "unreadable key file",
			env:     map[string]string{EnvServer: "http://env", EnvClientID: "env-id", EnvPrivateKeyFile: filepath.Join(dir, "nope.pem")},
			wantErr: "reading the private key"},
		{name: "not a key",
			env:     map[string]string{EnvServer: "http://env", EnvClientID: "env-id", EnvPrivateKey: "hello"},
			wantErr: "the private key from SY_PRIVATE_KEY is not usable"},
		{name: "not a URL",
			env:     map[string]string{EnvServer: "vault.example.com", EnvClientID: "env-id", EnvPrivateKey: key},
			wantErr: `the server URL from SY_SERVER must look like https://vault.example.com, got "vault.example.com"`},
		{name: "missing credentials file",
			flags:   credentialFlags{credentialsFile: filepath.Join(dir, "nope.json")},
			wantErr: "(--credentials-file): no such file or directory"},
		{name: "credentials file not JSON",
			env:     map[string]string{EnvCredentialsFile: badJSON},
			wantErr: "is not JSON with server, client_id and private_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveCredentials(tt.flags, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Server != tt.want.Server || got.ClientID != tt.want.ClientID || got.PrivateKey != tt.want.PrivateKey {
				t.Errorf("got server %q client %q key match %v, want server %q client %q",
					got.Server, got.ClientID, got.PrivateKey == tt.want.PrivateKey, tt.want.Server, tt.want.ClientID)
			}
		})
	}
}

func TestMain_credentialPrecedence(t *testing.T) {
	f := MustFakeServer(t)
	keyPath, key := MustKey(t)
	credFile := filepath.Join(t.TempDir(), "admin-client.json")
	data, _ := json.Marshal(credentialsFile{Server: f.URL, ClientID: "file-id", PrivateKey: key})
	os.WriteFile(credFile, data, 0o600)

	tests := []struct {
		name   string
		env    map[string]string
		args   []string
		wantID string
	}{
		{name: "credentials file", env: map[string]string{EnvCredentialsFile: credFile}, wantID: "file-id"},
		{name: "env over file", env: map[string]string{EnvCredentialsFile: credFile, EnvClientID: "env-id"}, wantID: "env-id"},
		{name: "flag over env", env: map[string]string{EnvCredentialsFile: credFile, EnvClientID: "env-id"},
			args: []string{"--client-id", "flag-id", "--private-key-file", keyPath}, wantID: "flag-id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, tt.env, "", append([]string{"auth", "token"}, tt.args...)...)
			if r.code != 0 || r.stdout != "t\n" || r.stderr != "" {
				t.Fatalf("auth token: %+v", r)
			}
			f.mu.Lock()
			got := f.clientIDs[len(f.clientIDs)-1]
			f.mu.Unlock()
			if got != tt.wantID {
				t.Errorf("assertion issued by %q, want %q", got, tt.wantID)
			}
		})
	}
}

func TestShellQuote_roundTrip(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	eval := func(t *testing.T, script, variable string) string {
		t.Helper()
		cmd := exec.Command(sh, "-c", `eval "$(cat)"; printf %s "$`+variable+`"`)
		cmd.Stdin = strings.NewReader(script)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sh: %v: %s", err, out)
		}
		return string(out)
	}
	for _, s := range []string{"", "plain", "'", "''", `a'b"c\d`, "$HOME `id` $(id) ;&|<>*?[]{}!~#% \t\n end", symbolPass} {
		if got := eval(t, "export V="+shellQuote(s)+"\n", "V"); got != s {
			t.Errorf("shellQuote(%q) evaluates to %q", s, got)
		}
	}

	t.Run("lease create --format env", func(t *testing.T) {
		f := MustFakeServer(t)
		r := run(t, f.env(t), "", "dynamic", "lease", "create", "--record-uid", "7Kj9mNpQ2xRs", "--ttl", "3600", "--format", "env")
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("create: %+v", r)
		}
		want := map[string]string{
			"SY_LEASE_ID": fakeLease.LeaseID, "SY_DB_USERNAME": fakeLease.Username, "SY_DB_PASSWORD": symbolPass,
			"SY_DB_CONNECTION_STRING": fakeLease.ConnectionString, "SY_LEASE_EXPIRES_AT": "2026-04-06T13:00:00Z",
		}
		for name, value := range want {
			if got := eval(t, r.stdout, name); got != value {
				t.Errorf("$%s = %q, want %q", name, got, value)
			}
		}
		if n := strings.Count(r.stdout, "\nexport ") + 1; n != len(want) || !strings.HasPrefix(r.stdout, "export SY_LEASE_ID=") {
			t.Errorf("output is not %d export lines:\n%s", len(want), r.stdout)
		}
	})
}

func TestLeaseCreate_output(t *testing.T) {
	f := MustFakeServer(t)
	env := f.env(t)

	t.Run("writes 0600 atomically", func(t *testing.T) {
		dir := t.TempDir()
		out := filepath.Join(dir, "db-creds.json")
		// An older, world-readable file is replaced, not rewritten in place.
		os.WriteFile(out, []byte("old"), 0o644)
		r := run(t, env, "", "dynamic", "lease", "create", "--record-uid", "7Kj9mNpQ2xRs", "--ttl", "3600", "--output", out)
		if r.code != 0 {
			t.Fatalf("create: %+v", r)
		}
		if r.stdout != "" {
			t.Errorf("stdout = %q, want nothing", r.stdout)
		}
		wantNote := "lease " + fakeLease.LeaseID + " written to " + out + ", expires 2026-04-06T13:00:00Z\n"
		if r.stderr != wantNote {
			t.Errorf("stderr = %q, want %q", r.stderr, wantNote)
		}
		fi, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600", fi.Mode().Perm())
		}
		data, _ := os.ReadFile(out)
		var got client.Lease
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatalf("file is not JSON: %v\n%s", err, data)
		}
		if got != fakeLease {
			t.Errorf("file holds %+v, want %+v", got, fakeLease)
		}
		for _, field := range []string{"lease_id", "username", "password", "connection_string", "expires_at", "record_uid", "created_at", "engine", "host", "port", "database"} {
			if !bytes.Contains(data, []byte(`"`+field+`":`)) {
				t.Errorf("file lacks %q", field)
			}
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Errorf("directory holds %v, want only db-creds.json", names)
		}
	})

	t.Run("env format", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "db-creds.env")
		r := run(t, env, "", "dynamic", "lease", "create", "--record-uid", "7Kj9mNpQ2xRs", "--ttl", "3600", "--output", out, "--format", "env")
		if r.code != 0 || r.stdout != "" {
			t.Fatalf("create: %+v", r)
		}
		if data, _ := os.ReadFile(out); !bytes.HasPrefix(data, []byte("export SY_LEASE_ID='"+fakeLease.LeaseID+"'\n")) {
			t.Errorf("file holds %q", data)
		}
	})

	t.Run("lease revoked when the file cannot be written", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "vanishing")
		os.Mkdir(dir, 0o700)
		f.record(func() { f.onLease = func() { os.RemoveAll(dir) } })
		defer f.record(func() { f.onLease = nil })
		r := run(t, env, "", "dynamic", "lease", "create", "--record-uid", "7Kj9mNpQ2xRs", "--ttl", "3600", "--output", filepath.Join(dir, "creds.json"))
		wantOneErrorLine(t, r, 1)
		if !strings.Contains(r.stderr, "lease "+fakeLease.LeaseID+" was revoked again") || strings.Contains(r.stderr, symbolPass) {
			t.Errorf("stderr = %q", r.stderr)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.revoked) == 0 || f.revoked[len(f.revoked)-1] != fakeLease.LeaseID {
			t.Errorf("revoked %v, want the new lease", f.revoked)
		}
	})

	t.Run("unwritable path fails before leasing", func(t *testing.T) {
		f.mu.Lock()
		before := len(f.leaseRequests)
		f.mu.Unlock()
		out := filepath.Join(t.TempDir(), "no", "such", "dir", "creds.json")
		r := run(t, env, "", "dynamic", "lease", "create", "--record-uid", "7Kj9mNpQ2xRs", "--ttl", "1h", "--output", out)
		wantOneErrorLine(t, r, 1)
		if !strings.Contains(r.stderr, out) {
			t.Errorf("stderr %q does not name %s", r.stderr, out)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.leaseRequests) != before {
			t.Error("a lease was requested although the output file cannot be written")
		}
	})
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"unknown flag", []string{"dynamic", "lease", "create", "--record-uid", "x", "--ttl", "1", "--bogus"}},
		{"unknown command", []string{"frobnicate"}},
		{"unknown subcommand", []string{"dynamic", "lease", "frobnicate"}},
		{"missing required flag", []string{"dynamic", "lease", "create", "--record-uid", "x"}},
		{"missing argument", []string{"dynamic", "lease", "get"}},
		{"extra argument", []string{"dynamic", "lease", "revoke", "a", "b"}},
		{"bad format", []string{"dynamic", "lease", "list", "--format", "xml"}},
		{"bad ttl", []string{"dynamic", "lease", "renew", "id", "--ttl", "soon"}},
		{"bad int", []string{"dynamic", "lease", "list", "--limit", "many"}},
		{"renew without ttl", []string{"dynamic", "lease", "renew", "id"}},
		{"target create without -f", []string{"dynamic", "target", "create"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Usage errors come before credentials are looked at: none are set here.
			wantOneErrorLine(t, run(t, nil, "", tt.args...), 2)
		})
	}
}

func TestRuntimeErrors(t *testing.T) {
	f := MustFakeServer(t)
	_, key := MustKey(t)
	tests := []struct {
		name       string
		env        map[string]string
		args       []string
		wantStderr string // exact; "" to check only the shape
	}{
		{name: "missing credentials", args: []string{"dynamic", "lease", "list"},
			wantStderr: "sy: missing credentials: set SY_SERVER (or --server), SY_CLIENT_ID (or --client-id) and SY_PRIVATE_KEY or SY_PRIVATE_KEY_FILE (or --private-key-file), or point SY_CREDENTIALS_FILE (or --credentials-file) at a JSON credentials file\n"},
		{name: "unreachable server", env: map[string]string{EnvClientID: "id", EnvPrivateKey: key},
			args:       []string{"--server", "http://127.0.0.1:1", "dynamic", "lease", "create", "--record-uid", "x", "--ttl", "60"},
			wantStderr: "sy: cannot reach http://127.0.0.1:1: dial tcp 127.0.0.1:1: connect: connection refused; is the server running there, and is that its URL (from --server)?\n"},
		{name: "not found", env: f.env(t), args: []string{"dynamic", "lease", "get", "x"},
			wantStderr: "sy: not_found: No lease with id \"x\".\n"},
		{name: "not found on revoke", env: f.env(t), args: []string{"dynamic", "lease", "revoke", "x"},
			wantStderr: "sy: not_found: No lease with id \"x\".\n"},
		{name: "non-JSON error page", env: map[string]string{EnvServer: f.URL + "/broken", EnvClientID: "id", EnvPrivateKey: key},
			args: []string{"auth", "token"}},
		{name: "target file missing", env: f.env(t), args: []string{"dynamic", "target", "create", "-f", filepath.Join(t.TempDir(), "nope.json")}},
		{name: "target with unknown field", env: f.env(t), args: []string{"dynamic", "target", "create", "-f", "-"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, tt.env, `{"name": "x", "admin_pasword": "typo"}`, tt.args...)
			t.Logf("stderr: %s", r.stderr)
			wantOneErrorLine(t, r, 1)
			if tt.wantStderr != "" && r.stderr != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", r.stderr, tt.wantStderr)
			}
		})
	}
}

func TestCommands(t *testing.T) {
	f := MustFakeServer(t)
	env := f.env(t)
	leaseJSON := func(v any) string {
		b, _ := json.MarshalIndent(v, "", "  ")
		return string(b) + "\n"
	}
	table := func(lines ...string) string { return strings.Join(lines, "\n") + "\n" }
	const header = "LEASE_ID  RECORD_UID    USERNAME         STATUS  CREATED_AT            EXPIRES_AT"
	row := func(id, uid, user string) string {
		return id + "   " + uid + "  " + user + "  active  2026-04-06T12:00:00Z  2026-04-06T13:00:00Z"
	}
	renewed := fakeInfos[0]
	renewed.ExpiresAt = created.Add(2 * time.Hour)
	targetFile := filepath.Join(t.TempDir(), "target.json")
	os.WriteFile(targetFile, []byte(`{"name": "orders-pg", "engine": "postgresql", "host": "127.0.0.1", "port": 5432,
		"database": "orders", "admin_username": "syvault_admin", "admin_password": "s3cret-admin",
		"tls_mode": "disable", "grants": [{"database": "orders", "schema": "public", "privileges": ["SELECT", "INSERT"]}]}`), 0o600)

	tests := []struct {
		name       string
		args       []string
		stdin      string
		wantStdout string
		wantStderr string
		check      func(t *testing.T)
	}{
		{name: "auth token", args: []string{"auth", "token"}, wantStdout: "t\n"},
		{name: "lease create json", args: []string{"dynamic", "lease", "create", "--record-uid", "7Kj9mNpQ2xRs", "--ttl", "3600"},
			wantStdout: leaseJSON(fakeLease),
			check: func(t *testing.T) {
				f.mu.Lock()
				defer f.mu.Unlock()
				got := f.leaseRequests[len(f.leaseRequests)-1]
				if got["record_uid"] != "7Kj9mNpQ2xRs" || got["ttl_seconds"] != float64(3600) {
					t.Errorf("lease request %v", got)
				}
			}},
		{name: "lease list table", args: []string{"dynamic", "lease", "list"},
			wantStdout: table(header, row("lease-1", "7Kj9mNpQ2xRs", "vf_tmp_aaaaaaaa"), row("lease-2", "7Kj9mNpQ2xRs", "vf_tmp_bbbbbbbb")),
			wantStderr: "more leases follow: use --all, or --cursor page2\n"},
		{name: "lease list all", args: []string{"dynamic", "lease", "list", "--all", "--limit", "2"},
			wantStdout: table(header, row("lease-1", "7Kj9mNpQ2xRs", "vf_tmp_aaaaaaaa"), row("lease-2", "7Kj9mNpQ2xRs", "vf_tmp_bbbbbbbb"), row("lease-3", "Other0000000", "vf_tmp_cccccccc"))},
		{name: "lease list json", args: []string{"dynamic", "lease", "list", "--format", "json"},
			wantStdout: leaseJSON(client.LeasePage{Data: fakeInfos[:2], NextCursor: "page2"})},
		{name: "lease list json all", args: []string{"dynamic", "lease", "list", "--format", "json", "--all"},
			wantStdout: leaseJSON(client.LeasePage{Data: fakeInfos})},
		{name: "lease get", args: []string{"dynamic", "lease", "get", "lease-1"}, wantStdout: leaseJSON(fakeInfos[0])},
		{name: "lease renew", args: []string{"dynamic", "lease", "renew", "lease-1", "--ttl", "2h"}, wantStdout: leaseJSON(renewed),
			check: func(t *testing.T) {
				f.mu.Lock()
				defer f.mu.Unlock()
				if f.renewTTL != 7200 {
					t.Errorf("renew sent ttl_seconds %d, want 7200", f.renewTTL)
				}
			}},
		{name: "lease revoke", args: []string{"dynamic", "lease", "revoke", "lease-1"}, wantStderr: "lease lease-1 revoked\n",
			check: func(t *testing.T) {
				f.mu.Lock()
				defer f.mu.Unlock()
				if len(f.revoked) != 1 || f.revoked[0] != "lease-1" {
					t.Errorf("revoked %v", f.revoked)
				}
			}},
		{name: "target create", args: []string{"dynamic", "target", "create", "-f", targetFile}, wantStdout: leaseJSON(fakeTarget),
			check: func(t *testing.T) {
				f.mu.Lock()
				defer f.mu.Unlock()
				if f.targetBody["admin_password"] != "s3cret-admin" || f.targetBody["name"] != "orders-pg" {
					t.Errorf("target sent as %v", f.targetBody)
				}
			}},
		{name: "target create from stdin", args: []string{"dynamic", "target", "create", "-f", "-"},
			stdin: `{"name": "from-stdin", "admin_password": "pw"}`, wantStdout: leaseJSON(fakeTarget),
			check: func(t *testing.T) {
				f.mu.Lock()
				defer f.mu.Unlock()
				if f.targetBody["name"] != "from-stdin" {
					t.Errorf("target sent as %v", f.targetBody)
				}
			}},
		{name: "target list", args: []string{"dynamic", "target", "list"},
			wantStdout: table("RECORD_UID    NAME       ENGINE      HOST       PORT  DATABASE  MAX_TTL  CREATED_AT",
				"7Kj9mNpQ2xRs  orders-pg  postgresql  127.0.0.1  5432  orders    86400    2026-04-06T12:00:00Z")},
		{name: "target list json", args: []string{"dynamic", "target", "list", "--format", "json"},
			wantStdout: leaseJSON(map[string]any{"data": []client.Target{fakeTarget}})},
		{name: "target get", args: []string{"dynamic", "target", "get", "7Kj9mNpQ2xRs"}, wantStdout: leaseJSON(fakeTarget)},
		{name: "target delete", args: []string{"dynamic", "target", "delete", "7Kj9mNpQ2xRs", "--revoke-leases"},
			wantStderr: "target 7Kj9mNpQ2xRs deleted\n",
			check: func(t *testing.T) {
				f.mu.Lock()
				defer f.mu.Unlock()
				if f.deleteQuery != "revoke_leases=true" {
					t.Errorf("delete query %q", f.deleteQuery)
				}
			}},
		{name: "version", args: []string{"version"}, wantStdout: versionString() + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, env, tt.stdin, tt.args...)
			expectOutput(t, r, tt.wantStdout, tt.wantStderr, tt.check)
		})
	}
}

// expectOutput checks a successful command's exact output, that the fake target's admin
// password was never printed, and then the case's own check, if any.
func expectOutput(t *testing.T, r result, wantStdout, wantStderr string, check func(*testing.T)) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit status %d, stderr %q", r.code, r.stderr)
	}
	if r.stdout != wantStdout {
		t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, wantStdout)
	}
	if r.stderr != wantStderr {
		t.Errorf("stderr = %q, want %q", r.stderr, wantStderr)
	}
	if strings.Contains(r.stdout+r.stderr, "s3cret-admin") {
		t.Error("the admin password was printed")
	}
	if check != nil {
		check(t)
	}
}
