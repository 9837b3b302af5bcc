package cli

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/syvault/syvault/http/client"
)

// TestAgent_refusedBeforeLeasing: a wrong command line (exit 2) or a template that
// cannot be read or cannot render a lease (exit 1) stops sy agent with one error line,
// before it asks for a lease.
func TestAgent_refusedBeforeLeasing(t *testing.T) {
	f := MustFakeServer(t)
	env := f.env(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "creds.json")
	misspelt := filepath.Join(dir, "misspelt.tmpl")
	os.WriteFile(misspelt, []byte("password={{.Pasword}}\n"), 0o600)
	unparsable := filepath.Join(dir, "unparsable.tmpl")
	os.WriteFile(unparsable, []byte("{{.Password"), 0o600)
	base := []string{"agent", "--record-uid", "7Kj9mNpQ2xRs", "--ttl", "60"}
	rendering := func(in string) []string {
		return append(base, "--once", "--template", in+":"+filepath.Join(dir, "out"))
	}
	tests := []struct {
		name string
		args []string
		code int
		want string // in the error line
	}{
		{"no record uid", []string{"agent", "--ttl", "60", "--output", out}, ExitUsage, "record-uid"},
		{"no ttl", []string{"agent", "--record-uid", "x", "--output", out}, ExitUsage, "ttl"},
		{"zero ttl", []string{"agent", "--record-uid", "x", "--ttl", "0", "--output", out}, ExitUsage, "--ttl must be at least 1 second"},
		{"bad ttl", []string{"agent", "--record-uid", "x", "--ttl", "soon", "--output", out}, ExitUsage, "whole seconds"},
		{"nowhere to go", base, ExitUsage, "give --output, --template or --exec"},
		{"once nowhere to go", append(base, "--once"), ExitUsage, "--once needs --output or --template"},
		{"exec without application", append(base, "--exec"), ExitUsage, "--exec needs the application after --"},
		{"exec with an argument before --", append(base, "extra", "--exec", "--", "sleep", "1"), ExitUsage, "--exec needs the application after --"},
		{"application without --exec", append(base, "--output", out, "--", "sleep", "1"), ExitUsage, "unexpected argument \"sleep\""},
		{"pid file without signal", append(base, "--output", out, "--pid-file", "app.pid"), ExitUsage, "--pid-file needs --signal"},
		{"signal alone", append(base, "--output", out, "--signal", "HUP"), ExitUsage, "--signal goes with --exec or --pid-file"},
		{"unknown signal", append(base, "--exec", "--signal", "SIGFOO", "--", "sleep", "1"), ExitUsage, "SIGHUP"},
		{"exec and pid file", append(base, "--exec", "--pid-file", "p", "--signal", "HUP", "--", "sleep", "1"), ExitUsage, "exec"},
		{"once and exec", append(base, "--once", "--exec", "--", "sleep", "1"), ExitUsage, "once"},
		{"once and keep", append(base, "--once", "--output", out, "--keep-on-exit"), ExitUsage, "once"},
		{"template without OUT", append(base, "--template", "dsn.tmpl"), ExitUsage, "must be IN:OUT"},
		{"template without IN", append(base, "--template", ":dsn"), ExitUsage, "must be IN:OUT"},
		{"negative grace", append(base, "--output", out, "--grace", "-1s"), ExitUsage, "--grace must not be negative"},
		{"grace too long", append(base, "--output", out, "--grace", "20s"), ExitUsage, "shorter than a third of --ttl (20s)"},
		{"bad grace", append(base, "--output", out, "--grace", "soon"), ExitUsage, "grace"},
		{"template file missing", rendering(filepath.Join(dir, "nope.tmpl")), ExitError, "reading the template"},
		{"template field unknown", rendering(misspelt), ExitError, "Pasword"},
		{"template syntax", rendering(unparsable), ExitError, "unparsable.tmpl does not render a lease"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, env, "", tt.args...)
			wantOneErrorLine(t, r, tt.code)
			if !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr %q does not mention %q", r.stderr, tt.want)
			}
		})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.leaseRequests) != 0 {
		t.Errorf("%d leases requested by refused command lines", len(f.leaseRequests))
	}
}

// logLine is one line of sy agent's log: key=value pairs, the message quoted when it
// has spaces.
var logLine = regexp.MustCompile(`^time=\S+ level=(INFO|WARN|ERROR) msg=("[^"]+"|\S+)( [a-z_]+=("[^"]*"|\S*))*$`)

// TestAgent_once: --once writes what sy dynamic lease create --output writes, renders
// the templates, logs without a secret and leaves the lease alone.
func TestAgent_once(t *testing.T) {
	f := MustFakeServer(t)
	env := f.env(t)
	dir := t.TempDir()
	created := filepath.Join(dir, "created.json")
	if r := run(t, env, "", "dynamic", "lease", "create", "--record-uid", "7Kj9mNpQ2xRs", "--ttl", "3600", "--output", created); r.code != 0 {
		t.Fatalf("lease create: %+v", r)
	}
	tmpl := filepath.Join(dir, "pgpass.tmpl")
	os.WriteFile(tmpl, []byte("{{pgpass .Host}}:{{.Port}}:{{pgpass .Database}}:{{pgpass .Username}}:{{pgpass .Password}}\n"+
		"export PGPASSWORD={{shellquote .Password}}\n"), 0o600)
	out, rendered := filepath.Join(dir, "db-creds.json"), filepath.Join(dir, "pgpass")

	r := run(t, env, "", "agent", "--record-uid", "7Kj9mNpQ2xRs", "--ttl", "3600", "--once", "--output", out, "--template", tmpl+":"+rendered)
	if r.code != 0 || r.stdout != "" {
		t.Fatalf("agent --once: %+v", r)
	}
	want, _ := os.ReadFile(created)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Errorf("--output holds\n%s\nwant what lease create --output writes:\n%s", got, want)
	}
	wantRendered := "db.example.com:5432:myapp:vf_tmp_a8f3k2m9:" + pgpassEscape(symbolPass) + "\nexport PGPASSWORD=" + shellQuote(symbolPass) + "\n"
	if got, _ := os.ReadFile(rendered); string(got) != wantRendered {
		t.Errorf("template rendered %q, want %q", got, wantRendered)
	}
	for _, p := range []string{out, rendered} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v, want 0600", p, err, fi.Mode().Perm())
		}
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	for _, line := range lines {
		if !logLine.MatchString(line) {
			t.Errorf("log line %q is not key=value", line)
		}
	}
	if len(lines) != 2 || !strings.Contains(lines[0], `msg="lease obtained" lease_id=`+fakeLease.LeaseID) || !strings.Contains(lines[1], `msg="credentials written"`) {
		t.Errorf("log:\n%s", r.stderr)
	}
	mustHoldNoSecret(t, r.stderr, fakeLease)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.revoked) != 0 {
		t.Errorf("--once revoked %v; the lease is for the application", f.revoked)
	}
}

// mustHoldNoSecret fails if text holds l's password or connection string, in any
// encoding they could take.
func mustHoldNoSecret(t *testing.T, text string, l client.Lease) {
	t.Helper()
	for _, secret := range []string{l.Password, l.ConnectionString, pgpassEscape(l.Password), shellQuote(l.Password)} {
		if secret != "" && strings.Contains(text, secret) {
			t.Errorf("a secret of lease %s is in the output", l.LeaseID)
		}
	}
}

// TestAgent_waitsOutARateLimit: a first lease refused by the server's client rate limit
// (a fleet starting at once) is asked for again after the Retry-After, not given up on:
// given up, a sidecar would be restarted with ever longer delays.
func TestAgent_waitsOutARateLimit(t *testing.T) {
	f := MustFakeServer(t)
	f.record(func() { f.rateLimited = 2 })
	out := filepath.Join(t.TempDir(), "creds.json")
	r := run(t, f.env(t), "", "agent", "--record-uid", "7Kj9mNpQ2xRs", "--ttl", "60", "--once", "--output", out)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if n := strings.Count(r.stderr, `msg="rate limited; asking again"`); n != 2 {
		t.Errorf("%d waits logged, want 2:\n%s", n, r.stderr)
	}
	if _, err := os.Stat(out); err != nil {
		t.Errorf("no credentials written: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.leaseRequests) != 3 {
		t.Errorf("%d lease requests, want 3 (two refused)", len(f.leaseRequests))
	}
}

func TestAgent_onceRevokesWhatItCannotWrite(t *testing.T) {
	f := MustFakeServer(t)
	dir := filepath.Join(t.TempDir(), "vanishing")
	os.Mkdir(dir, 0o700)
	f.record(func() { f.onLease = func() { os.RemoveAll(dir) } })
	r := run(t, f.env(t), "", "agent", "--record-uid", "7Kj9mNpQ2xRs", "--ttl", "60", "--once", "--output", filepath.Join(dir, "creds.json"))
	if r.code != ExitError || !strings.Contains(r.stderr, "\nsy: ") || !strings.Contains(r.stderr, "lease "+fakeLease.LeaseID+" was revoked again") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	mustHoldNoSecret(t, r.stderr, fakeLease)
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Equal(f.revoked, []string{fakeLease.LeaseID}) {
		t.Errorf("revoked %v, want the new lease", f.revoked)
	}
}

func TestChildEnv(t *testing.T) {
	env := childEnv([]string{"PATH=/bin", "SY_PRIVATE_KEY=-----BEGIN PRIVATE KEY-----", "SY_SERVER=https://v", "SY_DB_USERNAME=stale",
		"SY_PRIVATE_KEY_FILE=/etc/sy/key.pem", "SY_CREDENTIALS_FILE=/etc/sy/creds.json"}, &fakeLease)
	want := []string{"PATH=/bin", "SY_SERVER=https://v", "SY_DB_USERNAME=stale",
		"SY_LEASE_ID=" + fakeLease.LeaseID, "SY_DB_USERNAME=" + fakeLease.Username, "SY_DB_PASSWORD=" + symbolPass,
		"SY_DB_CONNECTION_STRING=" + fakeLease.ConnectionString, "SY_LEASE_EXPIRES_AT=2026-04-06T13:00:00Z"}
	// os/exec keeps the last of duplicate names, so the lease's SY_DB_USERNAME wins.
	if !slices.Equal(env, want) {
		t.Errorf("childEnv = %q\nwant %q", env, want)
	}
}

func TestParseSignal(t *testing.T) {
	for _, name := range []string{"SIGHUP", "HUP", "hup", "sigusr1", "TERM"} {
		if _, err := parseSignal(name); err != nil {
			t.Errorf("parseSignal(%q): %v", name, err)
		}
	}
	if _, err := parseSignal("SIGKILLME"); err == nil || !strings.Contains(err.Error(), "SIGHUP, SIGINT") {
		t.Errorf("parseSignal(SIGKILLME) = %v, want the list of signals", err)
	}
}

func TestPgpassEscape(t *testing.T) {
	if got, want := pgpassEscape(`a:b\c`), `a\:b\\c`; got != want {
		t.Errorf("pgpassEscape = %q, want %q", got, want)
	}
}

// TestAgent_received: the signal that cancelled the context is taken from sy agent's own
// channel, where it may arrive a moment later, so that it does not count as a second
// signal; without one, the context was cancelled by the caller, and SIGTERM stands in.
func TestAgent_received(t *testing.T) {
	sigs := make(chan os.Signal, 1)
	g := &agent{sigs: sigs}
	go func() { sigs <- os.Interrupt }()
	if s := g.received(); s != os.Interrupt {
		t.Errorf("received() = %v, want the interrupt that came", s)
	}
	if s := g.received(); s != stopSignal {
		t.Errorf("received() = %v without a signal, want %v", s, stopSignal)
	}
}

// TestLeaseFiles_allOrNone: a template whose file could not be written after --output
// was left --output naming the new lease, which the agent then revoked, while the
// application went on with the old one.
func TestLeaseFiles_allOrNone(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "creds.json")
	if err := os.WriteFile(out, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "t.tmpl")
	if err := os.WriteFile(in, []byte("{{.Username}}"), 0o600); err != nil {
		t.Fatal(err)
	}
	tmpl, err := loadTemplate(in, filepath.Join(dir, "gone", "app.conf"))
	if err != nil {
		t.Fatal(err)
	}
	// nothingWritten writes tmpl's lease files, which must fail (what it tried, for the
	// message), and checks that --output and the directory are as they were.
	nothingWritten := func(tmpl *leaseTemplate, tried, how string) {
		t.Helper()
		files := leaseFiles{output: out, templates: []*leaseTemplate{tmpl}}
		if err := files.write(&fakeLease); err == nil {
			t.Fatalf("%s succeeded", tried)
		}
		if data, _ := os.ReadFile(out); string(data) != "old" {
			t.Errorf("--output was replaced although a template could not be %s", how)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 2 {
			t.Errorf("the directory holds %d files, want the 2 it had", len(entries))
		}
	}
	nothingWritten(tmpl, "writing into a directory that is gone", "written")

	// The same when the template's file is made but cannot be written out (a full disk).
	if tmpl, err = loadTemplate(in, filepath.Join(dir, "app.conf")); err != nil {
		t.Fatal(err)
	}
	sync := syncFile
	t.Cleanup(func() { syncFile = sync })
	syncFile = func(f *os.File) error {
		if strings.Contains(f.Name(), "app.conf") {
			return syscall.ENOSPC
		}
		return sync(f)
	}
	nothingWritten(tmpl, "writing onto a full disk", "written out")
}

// limitedAPI refuses its first creates as the server's client rate limit does.
type limitedAPI struct {
	refusals, creates int
}

func (a *limitedAPI) CreateLease(context.Context, string, int) (*client.Lease, error) {
	a.creates++
	if a.refusals > 0 {
		a.refusals--
		return nil, &client.Error{Status: 429, Code: "rate_limited", Message: "Too fast.", RetryAfter: time.Millisecond}
	}
	l := fakeLease
	return &l, nil
}

func (a *limitedAPI) RenewLease(context.Context, string, int) (*client.LeaseInfo, error) {
	return nil, &client.Error{Status: 429, Code: "rate_limited", Message: "Too fast.", RetryAfter: 7 * time.Second}
}

func (a *limitedAPI) RevokeLease(context.Context, string) error {
	return errors.New("not in this test")
}

// TestAgent_rotationWaitsOutARateLimit: a lease that has ended (revoked by an admin, with
// the rest of the fleet's) is replaced once the rate limit lets the create through; the
// agent does not fail on the refusal, since its application has nothing else to use.
func TestAgent_rotationWaitsOutARateLimit(t *testing.T) {
	api := &limitedAPI{refusals: 1}
	ended := fakeLease
	ended.LeaseID = "ended-lease"
	g := &agent{api: api, log: slog.New(slog.DiscardHandler), jitter: func() float64 { return 0 },
		cur: &heldLease{lease: &ended, ended: true, replace: true}}
	if err := g.rotate(t.Context()); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if api.creates != 2 || g.cur.lease.LeaseID != fakeLease.LeaseID {
		t.Fatalf("%d creates, holding %s; want the second create's lease", api.creates, g.cur.lease.LeaseID)
	}
}

// TestAgent_renewalWaitsOutARateLimit: a renewal refused by the client rate limit is
// tried again when the server said, not on the agent's own backoff (half a second after
// a first failure), which the server would refuse too; but not later than half the
// credentials' time left, which leaves room for more attempts before the expiry.
func TestAgent_renewalWaitsOutARateLimit(t *testing.T) {
	for _, c := range []struct {
		name          string
		left          time.Duration
		atLeast, upTo time.Duration
	}{
		{"time left", time.Hour, 7 * time.Second, 8 * time.Second},
		{"the Retry-After past the expiry", 4 * time.Second, 1900 * time.Millisecond, 2100 * time.Millisecond},
		{"the Retry-After past half the time left", 10 * time.Second, 4900 * time.Millisecond, 5100 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			held := fakeLease
			held.ExpiresAt = time.Now().Add(c.left)
			g := &agent{app: &app{}, api: &limitedAPI{}, log: slog.New(slog.DiscardHandler), jitter: func() float64 { return 0 },
				cur: &heldLease{lease: &held, answered: time.Now()}}
			start := time.Now()
			if err := g.refresh(t.Context()); err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if wait := g.cur.next.Sub(start); wait < c.atLeast || wait > c.upTo {
				t.Errorf("next renewal in %v, want %v to %v (Retry-After 7 s, %v left)", wait, c.atLeast, c.upTo, c.left)
			}
		})
	}
}
