package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/syvault/syvault/cmd/sy/cli"
	"github.com/syvault/syvault/http/client"
)

// sy runs one sy command in-process with the given environment.
type syRunner struct {
	t   *testing.T
	env map[string]string
}

func (r syRunner) run(args ...string) (code int, stdout, stderr string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code = cli.Main(ctx, args, func(k string) string { return r.env[k] }, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func (r syRunner) ok(args ...string) string {
	r.t.Helper()
	code, out, errs := r.run(args...)
	if code != 0 {
		r.t.Fatalf("sy %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

// TestCLI_AgainstRealServer runs every sy command against a real server and database.
func TestCLI_AgainstRealServer(t *testing.T) {
	eng := postgresEngine(t)
	srv := mustServer(t, "", nil)
	dir := t.TempDir()
	admin := syRunner{t, map[string]string{cli.EnvCredentialsFile: filepath.Join(srv.Dir, AdminClientFile)}}

	if tok := strings.TrimSpace(admin.ok("auth", "token")); strings.Count(tok, ".") != 2 {
		t.Fatalf("auth token printed %q", tok)
	}
	// Targets.
	targetFile := filepath.Join(dir, "target.json")
	tg := eng.target(t)
	data, _ := json.Marshal(tg)
	_ = os.WriteFile(targetFile, data, 0o600)
	var target client.Target
	out := admin.ok("dynamic", "target", "create", "-f", targetFile)
	if err := json.Unmarshal([]byte(out), &target); err != nil || target.RecordUID == "" || strings.Contains(out, tg.AdminPassword) {
		t.Fatalf("target create printed %q (%v)", out, err)
	}
	admin.ok("dynamic", "target", "update", target.RecordUID, "-f", targetFile)
	if out := admin.ok("dynamic", "target", "list"); !strings.Contains(out, target.RecordUID) {
		t.Fatalf("target list: %s", out)
	}
	if out := admin.ok("dynamic", "target", "get", target.RecordUID); !strings.Contains(out, target.RecordUID) {
		t.Fatalf("target get: %s", out)
	}

	// An app client made with keygen and client create.
	keyFile := filepath.Join(dir, "app.pem")
	admin.ok("keygen", "--out", keyFile)
	var ac client.AppClient
	out = admin.ok("client", "create", "--name", "billing", "--public-key-file", filepath.Join(dir, "app.pub.pem"),
		"--role", "app", "--allow", target.RecordUID, "--max-ttl", "1h")
	if err := json.Unmarshal([]byte(out), &ac); err != nil || ac.ClientID == "" {
		t.Fatalf("client create printed %q (%v)", out, err)
	}
	if out := admin.ok("client", "list"); !strings.Contains(out, ac.ClientID) {
		t.Fatalf("client list: %s", out)
	}
	app := syRunner{t, map[string]string{cli.EnvServer: srv.HTTP.URL(), cli.EnvClientID: ac.ClientID, cli.EnvPrivateKeyFile: keyFile}}

	// Leases, as the app.
	credsFile := filepath.Join(dir, "creds.json")
	app.ok("dynamic", "lease", "create", "--record-uid", target.RecordUID, "--ttl", "600", "--output", credsFile)
	var lease client.Lease
	data, _ = os.ReadFile(credsFile)
	if err := json.Unmarshal(data, &lease); err != nil || lease.Password == "" {
		t.Fatalf("--output wrote %q (%v)", data, err)
	}
	sess, err := eng.login(context.Background(), lease.ConnectionString)
	if err != nil {
		t.Fatalf("--output credentials do not log in: %v", err)
	}
	sess.Close()
	envOut := app.ok("dynamic", "lease", "create", "--record-uid", target.RecordUID, "--ttl", "600", "--format", "env")
	sh := exec.Command("sh", "-c", `eval "$(cat)"; psql "$SY_DB_CONNECTION_STRING" -Atc 'SELECT session_user'; printf '%s' "$SY_LEASE_ID"`)
	sh.Stdin = strings.NewReader(envOut)
	shOut, err := sh.CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^vf_tmp_[a-z0-9]{8}$`).Match(shOut) {
		t.Fatalf("--format env did not give a working login: %v\n%s", err, shOut)
	}
	envLease := string(shOut[strings.LastIndex(string(shOut), "\n")+1:])
	if out := app.ok("dynamic", "lease", "list"); !strings.Contains(out, lease.LeaseID) || !strings.Contains(out, "LEASE_ID") {
		t.Fatalf("lease list: %s", out)
	}
	if out := app.ok("dynamic", "lease", "list", "--format", "json", "--all"); !strings.Contains(out, envLease) {
		t.Fatalf("lease list json: %s", out)
	}
	if out := app.ok("dynamic", "lease", "get", lease.LeaseID); !strings.Contains(out, `"active"`) {
		t.Fatalf("lease get: %s", out)
	}
	if out := app.ok("dynamic", "lease", "renew", lease.LeaseID, "--ttl", "1200"); !strings.Contains(out, lease.LeaseID) {
		t.Fatalf("lease renew: %s", out)
	}
	for _, id := range []string{lease.LeaseID, envLease} {
		app.ok("dynamic", "lease", "revoke", id)
	}
	mustBeGone(t, eng, lease.Username, 0)
	// A forced revocation: the app's is refused (it could leave a user behind); an
	// admin's whose drop finishes says the lease is revoked.
	forced := app.ok("dynamic", "lease", "create", "--record-uid", target.RecordUID, "--ttl", "600", "--format", "json")
	var fl client.Lease
	if err := json.Unmarshal([]byte(forced), &fl); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := app.run("dynamic", "lease", "revoke", fl.LeaseID, "--force"); code == 0 || !strings.Contains(errs, "forbidden") {
		t.Fatalf("an app's forced revocation: exit %d, %q", code, errs)
	}
	if _, _, errs := admin.run("dynamic", "lease", "revoke", fl.LeaseID, "--force"); errs != "lease "+fl.LeaseID+" revoked\n" {
		t.Fatalf("an admin's forced revocation said %q", errs)
	}
	if code, _, errs := admin.run("dynamic", "target", "delete", target.RecordUID, "--force"); code == 0 || !strings.Contains(errs, "--revoke-leases") {
		t.Fatalf("--force without --revoke-leases: exit %d, %q", code, errs)
	}

	// The audit shows the app's work, and the app may not read it.
	if out := admin.ok("audit", "--since", "1h", "--format", "json"); !strings.Contains(out, `"lease.dropped"`) || !strings.Contains(out, ac.ClientID) {
		t.Fatalf("audit: %s", out)
	}
	code, _, errs := app.run("audit")
	if code == 0 || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.Contains(errs, "forbidden") {
		t.Fatalf("app audit: exit %d, %q", code, errs)
	}

	// Errors: one line, non-zero.
	for name, args := range map[string][]string{
		"bad flag":        {"dynamic", "lease", "create", "--bogus"},
		"unknown lease":   {"dynamic", "lease", "get", "00000000-0000-0000-0000-000000000000"},
		"not allowed ttl": {"dynamic", "lease", "create", "--record-uid", target.RecordUID, "--ttl", "7200"},
	} {
		code, stdout, errs := app.run(args...)
		if code == 0 || stdout != "" || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.HasPrefix(errs, "sy: ") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", name, code, stdout, errs)
		}
	}
	down := syRunner{t, map[string]string{cli.EnvServer: "http://127.0.0.1:1", cli.EnvClientID: ac.ClientID, cli.EnvPrivateKeyFile: keyFile}}
	if code, _, errs := down.run("dynamic", "lease", "list"); code == 0 || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Errorf("unreachable server: exit %d, %q", code, errs)
	}

	// Removing the client and the target.
	admin.ok("client", "delete", ac.ClientID)
	if code, _, _ := app.run("dynamic", "lease", "list"); code == 0 {
		t.Error("a deleted client's command still works")
	}
	admin.ok("dynamic", "target", "delete", target.RecordUID, "--revoke-leases")
	if code, _, _ := admin.run("dynamic", "target", "get", target.RecordUID); code == 0 {
		t.Error("deleted target still there")
	}
	if out := admin.ok("version"); strings.TrimSpace(out) == "" {
		t.Error("version printed nothing")
	}
	if out := admin.ok("completion", "bash"); !strings.Contains(out, "bash completion") {
		t.Error("no bash completion script")
	}
}
