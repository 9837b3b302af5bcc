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
	"testing"
	"time"

	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/internal/logbuf"
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
	log, out *logbuf.Buffer // its stderr (the log) and stdout (the application's output)
	done     chan struct{}
	err      error // how it exited, once done is closed
}

func startAgent(t *testing.T, bin string, env []string, args ...string) *agentRun {
	t.Helper()
	a := &agentRun{log: &logbuf.Buffer{}, out: &logbuf.Buffer{}, done: make(chan struct{})}
	a.cmd = exec.Command(bin, append([]string{"agent"}, args...)...)
	a.cmd.Env = env
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.log
	// Killed by the cleanup, the agent leaves its --exec application holding the output
	// pipes: Wait must not wait for them for ever.
	a.cmd.WaitDelay = 5 * time.Second
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
