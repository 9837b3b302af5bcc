package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/internal/logbuf"
)

// signalApp is an --exec application that notes each HUP and TERM it gets in $SIGNALS
// and exits on TERM; the agent's signals reach it at once (wait, not sleep, is interrupted).
const signalApp = `trap 'echo HUP >> "$SIGNALS"' HUP
trap 'echo TERM >> "$SIGNALS"; exit 0' TERM
while :; do sleep 1 & wait $!; done`

// TestAgent_RenewsAndRotates runs sy agent on a target whose leases may live 8 s, asking
// for 4 s: it renews once, then a renewal comes back short (the cap) and it rotates with
// about 3 s of the old lease left, room for a create under load and the grace period
// (with 6 s, 1 s was left, and a create slowed by a busy machine let the old lease expire
// before its revocation: "already ended", not "revoked"). The
// file changes atomically, the application gets SIGHUP, the old lease is revoked after
// the grace period and its user dropped; SIGTERM reaches the application, revokes the
// lease and exits 0. The log never holds a secret.
func TestAgent_RenewsAndRotates(t *testing.T) {
	bin := buildSy(t)
	for name, mk := range engines(t) {
		t.Run(name, func(t *testing.T) {
			eng := mk(t)
			ctx := context.Background()
			s := setupAgent(t, mustServer(t, "", nil), eng, bin, 8)
			dir := t.TempDir()
			creds, signals := filepath.Join(dir, "db-creds.json"), filepath.Join(dir, "signals")
			watch := watchFile(creds)
			const grace = 500 * time.Millisecond

			a := startAgent(t, bin, append(s.env, "SIGNALS="+signals), "--record-uid", s.target.RecordUID, "--ttl", "4",
				"--grace", grace.String(), "--output", creds, "--exec", "--signal", "SIGHUP", "--", "sh", "-c", signalApp)
			first := a.await(t, 15*time.Second, "lease obtained")["lease_id"]
			a.await(t, 10*time.Second, "application started")
			a.await(t, 10*time.Second, "lease renewed", "lease_id", first, "at_cap", "false")
			rotated := a.await(t, 15*time.Second, "lease rotated", "old_lease_id", first)
			second := rotated["lease_id"]
			a.await(t, 5*time.Second, "application signalled", "signal", "SIGHUP")
			eventually(t, 5*time.Second, "the application got SIGHUP", func() (bool, error) {
				data, err := os.ReadFile(signals)
				return strings.Contains(string(data), "HUP"), err
			})
			revoked := a.await(t, 10*time.Second, "lease revoked", "lease_id", first)
			if d := revoked.time(t).Sub(rotated.time(t)); d < grace {
				t.Errorf("the old lease was revoked %v after the rotation, before the %v grace period", d, grace)
			}
			mustStatus(t, s.admin, first, "revoked")
			if l := readLease(t, creds); l.LeaseID != second {
				t.Fatalf("the file holds lease %s, want the new %s", l.LeaseID, second)
			}
			sess, err := eng.login(ctx, readLease(t, creds).ConnectionString)
			if err != nil {
				t.Fatalf("the new credentials do not log in: %v", err)
			}
			if err := sess.Exec(ctx, "INSERT INTO granted VALUES (1, 'agent')"); err != nil {
				t.Errorf("granted INSERT refused with the new credentials: %v", err)
			}
			sess.Close()

			if code := a.stop(t, syscall.SIGTERM); code != 0 {
				t.Fatalf("exit status %d after SIGTERM, want 0", code)
			}
			if data, _ := os.ReadFile(signals); !strings.HasSuffix(string(data), "TERM\n") {
				t.Errorf("the application's signals: %q, want TERM last", data)
			}
			a.await(t, 0, "application exited")
			current := readLease(t, creds)
			mustStatus(t, s.admin, current.LeaseID, "revoked")
			w := watch.finish()
			for id, l := range w.leases {
				mustBeGone(t, eng, l.Username, 10*time.Second)
				if id != first && id != current.LeaseID {
					mustStatus(t, s.admin, id, "revoked") // a further rotation on a slow machine
				}
			}
			if len(w.torn) > 0 || w.reads < 100 || len(w.leases) < 2 {
				t.Errorf("a reader polling the file: %d reads, %d leases seen, torn or wrong: %q", w.reads, len(w.leases), w.torn)
			}
			a.mustLogNoSecret(t, s.key, w.leases)
			t.Logf("sy agent log:\n%s", a.log)
		})
	}
}

// TestAgent_ExecRestartsTheApplication: without --signal, a rotation restarts the --exec
// application with the new credentials in its environment; SIGINT ends both.
func TestAgent_ExecRestartsTheApplication(t *testing.T) {
	bin := buildSy(t)
	eng := postgresEngine(t)
	s := setupAgent(t, mustServer(t, "", nil), eng, bin, 6)
	users := filepath.Join(t.TempDir(), "users")
	// Logs in with what its environment holds, notes as whom, and runs until TERM.
	app := `psql "$SY_DB_CONNECTION_STRING?sslmode=disable" -XAtc 'SELECT session_user' >> "$USERS" || exit 3
trap 'exit 0' TERM
while :; do sleep 1 & wait $!; done`

	a := startAgent(t, bin, append(s.env, "USERS="+users), "--record-uid", s.target.RecordUID, "--ttl", "4", "--exec", "--", "sh", "-c", app)
	firstUser := a.await(t, 15*time.Second, "lease obtained")["username"]
	rotated := a.await(t, 15*time.Second, "lease rotated")
	secondUser := a.await(t, 5*time.Second, "lease obtained", "lease_id", rotated["lease_id"])["username"]
	a.await(t, 5*time.Second, "application restarted")
	eventually(t, 10*time.Second, "the restarted application logged in as the new user", func() (bool, error) {
		data, err := os.ReadFile(users)
		return strings.HasPrefix(string(data), firstUser+"\n"+secondUser+"\n"), err
	})
	if code := a.stop(t, syscall.SIGINT); code != 0 {
		t.Fatalf("exit status %d after SIGINT, want 0", code)
	}
	mustBeGone(t, eng, secondUser, 10*time.Second)
	mustBeGone(t, eng, firstUser, 10*time.Second)
}

// TestAgent_SignalsAProcessByItsPIDFile: with --pid-file and --signal, a rotation signals
// a process the agent did not start, which it leaves running when it stops.
func TestAgent_SignalsAProcessByItsPIDFile(t *testing.T) {
	bin := buildSy(t)
	s := setupAgent(t, mustServer(t, "", nil), postgresEngine(t), bin, 6)
	dir := t.TempDir()
	signals, pidFile, creds := filepath.Join(dir, "signals"), filepath.Join(dir, "app.pid"), filepath.Join(dir, "db-creds.json")
	app := exec.Command("sh", "-c", signalApp)
	app.Env = append(os.Environ(), "SIGNALS="+signals)
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = app.Wait(); close(exited) }()
	t.Cleanup(func() { _ = app.Process.Kill(); <-exited })
	pid := strconv.Itoa(app.Process.Pid)
	if err := os.WriteFile(pidFile, []byte(pid+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	a := startAgent(t, bin, s.env, "--record-uid", s.target.RecordUID, "--ttl", "4", "--output", creds,
		"--pid-file", pidFile, "--signal", "HUP")
	a.await(t, 15*time.Second, "lease rotated")
	a.await(t, 5*time.Second, "application signalled", "signal", "SIGHUP", "pid", pid)
	eventually(t, 5*time.Second, "the process got SIGHUP", func() (bool, error) {
		data, err := os.ReadFile(signals)
		return strings.Contains(string(data), "HUP"), err
	})
	if code := a.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
	select {
	case <-exited:
		t.Error("the agent stopped a process it does not own")
	default:
	}
}

// TestAgent_SurvivesServerRestart: SyVault goes away while the agent holds a lease; the
// agent retries, says the credentials are still valid, and renews the same lease once
// SyVault is back.
func TestAgent_SurvivesServerRestart(t *testing.T) {
	bin := buildSy(t)
	eng := postgresEngine(t)
	dir, addr := t.TempDir(), freeAddr(t)
	listen := func(c *Config) { c.Listen = addr }
	srv := mustServer(t, dir, listen)
	s := setupAgent(t, srv, eng, bin, 0)
	creds := filepath.Join(t.TempDir(), "db-creds.json")

	a := startAgent(t, bin, s.env, "--record-uid", s.target.RecordUID, "--ttl", "15", "--output", creds)
	obtained := a.await(t, 15*time.Second, "lease obtained")
	lease := obtained["lease_id"]
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	retrying := a.await(t, 15*time.Second, "retrying", "op", "renew", "lease_id", lease)
	if retrying["credentials_valid_until"] != obtained["expires_at"] || retrying["error"] == "" {
		t.Errorf("the retry does not say why and until when the credentials hold: %v", retrying)
	}
	srv = mustServer(t, dir, listen)
	a.await(t, 15*time.Second, "lease renewed", "lease_id", lease)
	sess, err := eng.login(context.Background(), readLease(t, creds).ConnectionString)
	if err != nil {
		t.Fatalf("the credentials do not log in after the restart: %v", err)
	}
	sess.Close()
	if code := a.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
	mustStatus(t, srv.admin(t), lease, "revoked")
	mustBeGone(t, eng, obtained["username"], 10*time.Second)
	t.Logf("sy agent log:\n%s", a.log)
}

// TestAgent_FailsOnceTheCredentialsExpire: with SyVault gone for good, the agent keeps
// the lease while it is valid, then stops the application and exits 1 with one line
// saying why. The lease's user is dropped when SyVault is back.
func TestAgent_FailsOnceTheCredentialsExpire(t *testing.T) {
	bin := buildSy(t)
	eng := postgresEngine(t)
	dir := t.TempDir()
	srv := mustServer(t, dir, nil)
	s := setupAgent(t, srv, eng, bin, 0)
	signals := filepath.Join(t.TempDir(), "signals")

	a := startAgent(t, bin, append(s.env, "SIGNALS="+signals), "--record-uid", s.target.RecordUID, "--ttl", "3",
		"--output", filepath.Join(t.TempDir(), "db-creds.json"), "--exec", "--", "sh", "-c", signalApp)
	obtained := a.await(t, 15*time.Second, "lease obtained")
	a.await(t, 5*time.Second, "application started")
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if code := a.exit(t, 30*time.Second); code != 1 {
		t.Fatalf("exit status %d, want 1", code)
	}
	log := strings.TrimSpace(a.log.String())
	last := log[strings.LastIndex(log, "\n")+1:]
	if want := "sy: lease " + obtained["lease_id"] + " expired at " + obtained["expires_at"] + " and no new lease could be had: cannot reach"; !strings.HasPrefix(last, want) {
		t.Errorf("last line %q, want it to start with %q", last, want)
	}
	if n := strings.Count(log, `msg=retrying`); n < 2 {
		t.Errorf("%d retries logged before giving up, want several", n)
	}
	if data, _ := os.ReadFile(signals); string(data) != "TERM\n" {
		t.Errorf("the application's signals: %q, want TERM", data)
	}
	mustServer(t, dir, nil)
	mustBeGone(t, eng, obtained["username"], 15*time.Second)
	t.Logf("sy agent log:\n%s", a.log)
}

// TestAgent_OnceIsTheCronJobFetch runs the product document's init-container command
// with sy agent --once in place of sy dynamic lease create, plus a template: the same
// file, mode and single entry as the CronJob, the lease left active, and a DSN that psql
// accepts.
func TestAgent_OnceIsTheCronJobFetch(t *testing.T) {
	bin := buildSy(t)
	eng := postgresEngine(t)
	ctx := context.Background()
	s := setupAgent(t, mustServer(t, "", nil), eng, bin, 0)
	tmplDir, shared, seedShared := t.TempDir(), t.TempDir(), t.TempDir()
	tmpl := filepath.Join(tmplDir, "dsn.tmpl")
	if err := os.WriteFile(tmpl, []byte("{{.ConnectionString}}?sslmode=disable\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runSh := func(script string) string {
		t.Helper()
		cmd := exec.Command("sh", "-c", script)
		cmd.Env = s.env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
		return string(out)
	}
	forTarget := strings.NewReplacer("7Kj9mNpQ2xRs", s.target.RecordUID)
	runSh(forTarget.Replace(strings.ReplaceAll(seedInitContainer, "/shared/", seedShared+"/")))
	once := strings.Replace(seedInitContainer, "sy dynamic lease create", "sy agent --once", 1)
	once = forTarget.Replace(strings.ReplaceAll(once, "/shared/", shared+"/")) + " \\\n--template " + tmpl + ":" + shared + "/dsn"
	log := runSh(once)

	var seedFields, agentFields map[string]any
	for p, fields := range map[string]*map[string]any{filepath.Join(seedShared, "db-creds.json"): &seedFields, filepath.Join(shared, "db-creds.json"): &agentFields} {
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v", p, err, st.Mode().Perm())
		}
		data, _ := os.ReadFile(p)
		if err := json.Unmarshal(data, fields); err != nil {
			t.Fatal(err)
		}
	}
	if len(agentFields) != len(seedFields) {
		t.Errorf("--once wrote fields %v, the CronJob's command %v", agentFields, seedFields)
	}
	for k := range seedFields {
		if _, ok := agentFields[k]; !ok {
			t.Errorf("--once wrote no %q", k)
		}
	}
	if entries, _ := os.ReadDir(shared); len(entries) != 2 {
		t.Errorf("the shared volume holds %d files, want db-creds.json and dsn", len(entries))
	}
	lease := readLease(t, filepath.Join(shared, "db-creds.json"))
	mustStatus(t, s.admin, lease.LeaseID, "active")
	psql := exec.Command("sh", "-c", `psql "$(cat "$1")" -XAtc 'SELECT session_user'`, "sh", filepath.Join(shared, "dsn"))
	out, err := psql.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != lease.Username {
		t.Fatalf("psql with the rendered DSN: %v\n%s", err, out)
	}
	sess, err := eng.login(ctx, lease.ConnectionString)
	if err != nil {
		t.Fatalf("the written credentials do not log in: %v", err)
	}
	sess.Close()
	a := &agentRun{log: &logbuf.Buffer{}}
	a.log.Write([]byte(log))
	a.mustLogNoSecret(t, s.key, map[string]client.Lease{lease.LeaseID: lease})
}
