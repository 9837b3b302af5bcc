package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/syvault/syvault/http/client"
)

// buildSy builds the sy command from this tree and returns the binary's path.
func buildSy(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sy")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/syvault/syvault/cmd/sy").CombinedOutput(); err != nil {
		t.Fatalf("build sy: %v\n%s", err, out)
	}
	return bin
}

// appEnv registers an app client allowed to lease recordUID and returns the environment
// the product document's CronJob gives sy (SY_SERVER, SY_CLIENT_ID, SY_PRIVATE_KEY),
// with bin's directory first on the PATH, and the client's private key.
func appEnv(t *testing.T, admin *client.Client, server, bin, recordUID string) (env []string, privateKey string) {
	t.Helper()
	pubPEM, privPEM := mustKeyPair(t)
	app, err := admin.CreateClient(context.Background(), client.AppClient{Name: "myapp", Role: "app",
		AllowedRecords: []string{recordUID}, PublicKey: pubPEM})
	if err != nil {
		t.Fatal(err)
	}
	return []string{
		"PATH=" + filepath.Dir(bin) + ":/usr/bin:/bin",
		"SY_SERVER=" + server,
		"SY_CLIENT_ID=" + app.ClientID,
		"SY_PRIVATE_KEY=" + privPEM,
	}, privPEM
}

// agentSetup is what an agent test starts from: a target, and an app client allowed to
// lease it with the environment the product document's CronJob gives sy.
type agentSetup struct {
	admin  *client.Client
	target *client.Target
	env    []string
	key    string // the app client's private key
}

// setupAgent registers on srv a target of eng whose leases may live maxTTL seconds (0: no
// limit of the target's own), and an app client allowed to lease it, for sy at bin.
func setupAgent(t *testing.T, srv *testServer, eng engine, bin string, maxTTL int) agentSetup {
	t.Helper()
	admin := srv.admin(t)
	tg := eng.target(t)
	tg.MaxTTLSeconds = maxTTL
	target := mustRegister(t, admin, tg)
	env, key := appEnv(t, admin, srv.HTTP.URL(), bin, target.RecordUID)
	return agentSetup{admin: admin, target: target, env: env, key: key}
}

// agentRun is a running sy agent process.
type agentRun struct {
	cmd      *exec.Cmd
	log, out *syncBuffer // its stderr (the log) and stdout (the application's output)
	done     chan struct{}
	err      error // how it exited, once done is closed
}

func startAgent(t *testing.T, bin string, env []string, args ...string) *agentRun {
	t.Helper()
	a := &agentRun{log: &syncBuffer{}, out: &syncBuffer{}, done: make(chan struct{})}
	a.cmd = exec.Command(bin, append([]string{"agent"}, args...)...)
	a.cmd.Env = env
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.err = a.cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		_ = a.cmd.Process.Kill()
		<-a.done
		if t.Failed() {
			t.Logf("sy agent log:\n%s\napplication output:\n%s", a.log, a.out)
		}
	})
	return a
}

// exit waits for the agent to exit and returns its exit status.
func (a *agentRun) exit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-a.done:
	case <-time.After(within):
		t.Fatalf("sy agent still running after %v", within)
	}
	var ee *exec.ExitError
	if errors.As(a.err, &ee) {
		return ee.ExitCode()
	}
	if a.err != nil {
		t.Fatal(a.err)
	}
	return 0
}

// stop sends sig and returns the exit status.
func (a *agentRun) stop(t *testing.T, sig os.Signal) int {
	t.Helper()
	if err := a.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	return a.exit(t, time.Minute)
}

// logEvent is one line of the agent's log, key by key.
type logEvent map[string]string

var logPair = regexp.MustCompile(`([a-z_]+)=("(?:[^"\\]|\\.)*"|\S*)`)

// events parses the agent's log so far.
func (a *agentRun) events(t *testing.T) []logEvent {
	t.Helper()
	var evs []logEvent
	for _, line := range strings.Split(strings.TrimSpace(a.log.String()), "\n") {
		if !strings.HasPrefix(line, "time=") {
			continue // the final "sy: ..." line
		}
		ev := logEvent{}
		for _, m := range logPair.FindAllStringSubmatch(line, -1) {
			v := m[2]
			if strings.HasPrefix(v, `"`) {
				if u, err := strconv.Unquote(v); err == nil {
					v = u
				}
			}
			ev[m[1]] = v
		}
		evs = append(evs, ev)
	}
	return evs
}

// await waits for a log event with message msg whose other keys have the given values.
func (a *agentRun) await(t *testing.T, within time.Duration, msg string, keys ...string) logEvent {
	t.Helper()
	var found logEvent
	eventually(t, within, fmt.Sprintf("sy agent logs %q %v", msg, keys), func() (bool, error) {
	next:
		for _, ev := range a.events(t) {
			if ev["msg"] != msg {
				continue
			}
			for i := 0; i+1 < len(keys); i += 2 {
				if ev[keys[i]] != keys[i+1] {
					continue next
				}
			}
			found = ev
			return true, nil
		}
		select {
		case <-a.done:
			return false, fmt.Errorf("sy agent exited: %v", a.err)
		default:
			return false, nil
		}
	})
	return found
}

func (ev logEvent) time(t *testing.T) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, ev["time"])
	if err != nil {
		t.Fatalf("log time %q: %v", ev["time"], err)
	}
	return at
}

// mustLogNoSecret fails if the agent's log holds a password or connection string of any
// lease it had, the private key, or an access token (a JWT).
func (a *agentRun) mustLogNoSecret(t *testing.T, privateKey string, leases map[string]client.Lease) {
	t.Helper()
	log := a.log.String()
	for id, l := range leases {
		for _, secret := range []string{l.Password, l.ConnectionString} {
			if strings.Contains(log, secret) {
				t.Errorf("the log holds a secret of lease %s", id)
			}
		}
	}
	for _, line := range strings.Split(privateKey, "\n") {
		if len(line) > 16 && !strings.HasPrefix(line, "-----") && strings.Contains(log, line) {
			t.Error("the log holds the private key")
		}
	}
	if strings.Contains(log, "eyJ") {
		t.Error("the log holds what looks like a token")
	}
}

// fileWatch reads a credentials file over and over while the agent replaces it, as an
// application polling it would.
type fileWatch struct {
	stop, done chan struct{}
	reads      int
	torn       []string                // what a read found that was not a whole lease
	leases     map[string]client.Lease // every lease seen, by id
}

func watchFile(path string) *fileWatch {
	w := &fileWatch{stop: make(chan struct{}), done: make(chan struct{}), leases: map[string]client.Lease{}}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			data, err := os.ReadFile(path)
			if errors.Is(err, os.ErrNotExist) {
				continue // not written yet
			}
			w.reads++
			var l client.Lease
			if err != nil || json.Unmarshal(data, &l) != nil || l.LeaseID == "" || l.Password == "" {
				w.torn = append(w.torn, fmt.Sprintf("%d bytes, %v", len(data), err))
				continue
			}
			if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() != 0o600 {
				w.torn = append(w.torn, "mode "+fi.Mode().Perm().String())
			}
			w.leases[l.LeaseID] = l
		}
	}()
	return w
}

// finish stops the reader; its fields may be read afterwards.
func (w *fileWatch) finish() *fileWatch {
	close(w.stop)
	<-w.done
	return w
}

// readLease reads a lease file.
func readLease(t *testing.T, path string) client.Lease {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var l client.Lease
	if err := json.Unmarshal(data, &l); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return l
}

func mustStatus(t *testing.T, admin *client.Client, leaseID, want string) {
	t.Helper()
	eventually(t, 10*time.Second, "lease "+leaseID+" "+want, func() (bool, error) {
		l, err := admin.GetLease(context.Background(), leaseID)
		return err == nil && l.Status == want, err
	})
}

// signalApp is an --exec application that notes each HUP and TERM it gets in $SIGNALS
// and exits on TERM; the agent's signals reach it at once (wait, not sleep, is interrupted).
const signalApp = `trap 'echo HUP >> "$SIGNALS"' HUP
trap 'echo TERM >> "$SIGNALS"; exit 0' TERM
while :; do sleep 1 & wait $!; done`

// TestAgent_RenewsAndRotates runs sy agent on a target whose leases may live 6 s, asking
// for 4 s: it renews once, then a renewal comes back short (the cap) and it rotates. The
// file changes atomically, the application gets SIGHUP, the old lease is revoked after
// the grace period and its user dropped; SIGTERM reaches the application, revokes the
// lease and exits 0. The log never holds a secret.
func TestAgent_RenewsAndRotates(t *testing.T) {
	bin := buildSy(t)
	for name, mk := range engines(t) {
		t.Run(name, func(t *testing.T) {
			eng := mk(t)
			ctx := context.Background()
			s := setupAgent(t, mustServer(t, "", nil), eng, bin, 6)
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
	a := &agentRun{log: &syncBuffer{}}
	a.log.Write([]byte(log))
	a.mustLogNoSecret(t, s.key, map[string]client.Lease{lease.LeaseID: lease})
}
