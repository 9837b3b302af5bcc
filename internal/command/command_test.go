package command

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/events/jsstore/jstest"
	"github.com/syvault/syvault/internal/seal"
	"github.com/syvault/syvault/projections"
)

func TestNewPassword(t *testing.T) {
	const symbols = "#$%&*+-=?@^_~!"
	seen := map[string]bool{}
	for range 200 {
		p := newPassword()
		if len(p) < 20 || !strings.ContainsAny(p, symbols) || !strings.ContainsAny(p, "0123456789") || seen[p] {
			t.Fatalf("password %q: too short, no symbol or digit, or repeated", p)
		}
		seen[p] = true
	}
	if u := newUsername(); len(u) != 15 || !strings.HasPrefix(u, "vf_tmp_") || strings.Trim(u[7:], usernameAlphabet) != "" {
		t.Fatalf("username %q", u)
	}
}

// nopPreparer accepts every target.
type nopPreparer struct{}

func (nopPreparer) Prepare(context.Context, events.Target, string, bool) ([]string, error) {
	return nil, nil
}
func (nopPreparer) Unprepare(context.Context, events.Target, string) error { return nil }
func (nopPreparer) Reprepare(context.Context, events.Target) error         { return nil }
func (nopPreparer) RemoveTarget(context.Context, events.Target) error      { return nil }
func (nopPreparer) GrantsPerUser(events.Engine) bool                       { return false }
func (nopPreparer) Regrant(context.Context, events.Target, string) error   { return nil }
func (nopPreparer) DropNow(context.Context, events.Lease) (bool, error)    { return true, nil }
func (nopPreparer) Reachable(context.Context, events.Lease) (bool, error)  { return true, nil }

// mustService builds the command side on an embedded JetStream, with no database.
func mustService(t *testing.T) *Service {
	t.Helper()
	return newService(t, jstest.MustStore(t), nopPreparer{})
}

// newService builds the command side on store with preparer, its projector running.
func newService(t *testing.T, store *jsstore.Store, preparer Preparer) *Service {
	t.Helper()
	ctx := context.Background()
	proj, err := projections.Open(ctx, store, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	run, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = proj.Run(run) }()
	t.Cleanup(func() { stop(); <-done })
	sealer, err := seal.New(seal.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, Config{Store: store, Projections: proj, Sealer: sealer, Preparer: preparer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Two leases never get one username, even when the draw repeats: the second lease draws
// again, and a taken name stays taken.
func TestReserveUsername_NeverTwice(t *testing.T) {
	s := mustService(t)
	draws := []string{"vf_tmp_aaaaaaaa", "vf_tmp_aaaaaaaa", "vf_tmp_bbbbbbbb"}
	s.newUsername = func() string { d := draws[0]; draws = draws[1:]; return d }
	ctx := context.Background()
	first, err := s.reserveUsername(ctx, "lease-1")
	if err != nil || first != "vf_tmp_aaaaaaaa" {
		t.Fatalf("first lease: %q, %v", first, err)
	}
	second, err := s.reserveUsername(ctx, "lease-2")
	if err != nil || second != "vf_tmp_bbbbbbbb" {
		t.Fatalf("second lease, whose first draw was taken: %q, %v", second, err)
	}
	// Draws that keep finding taken names give up rather than loop.
	s.newUsername = func() string { return first }
	if _, err := s.reserveUsername(ctx, "lease-3"); err == nil {
		t.Fatal("reserved a taken name")
	}
}

// The pool hands out each prepared pair once, with a verifier of its own password.
func TestCredentialPool(t *testing.T) {
	p := newCredentialPool(4)
	defer p.close()
	seen := map[string]bool{}
	for range 50 {
		c := p.take()
		if seen[c.password] {
			t.Fatal("a password was handed out twice")
		}
		seen[c.password] = true
		if c.verifier != "" && strings.Contains(c.verifier, c.password) {
			t.Fatal("a verifier holds its password")
		}
	}
}

// TestFailure_SaysWhenTheExpiryCameFirst: a create whose worker saw the lease's expiry
// pass while its user was made (the lease failed, code timeout) answered "The database
// did not finish creating the user in time", as for a create out of time; it says the
// expiry came first, as when the expiry is recorded first.
func TestFailure_SaysWhenTheExpiryCameFirst(t *testing.T) {
	expires := time.Now()
	after, before := expires.Add(time.Millisecond), expires.Add(-time.Second)
	l := events.Lease{Status: events.StatusFailed, FailCode: string(events.ETimeout), ExpiresAt: expires, EndedAt: &after}
	if err := failure(l); events.ErrorCode(err) != events.ETimeout || !strings.Contains(events.ErrorMessage(err), "expiry passed") {
		t.Errorf("failed after its expiry: %v", err)
	}
	l.EndedAt = &before
	if err := failure(l); events.ErrorCode(err) != events.ETimeout || !strings.Contains(events.ErrorMessage(err), "did not finish creating") {
		t.Errorf("failed before its expiry: %v", err)
	}
}

// TestFailure_SaysWhenTheTargetWasRemoved: a lease failed because its target was removed
// before its user was made answered 502, "The target database refused to create the
// user"; it is a 404 that says so.
func TestFailure_SaysWhenTheTargetWasRemoved(t *testing.T) {
	err := failure(events.Lease{Status: events.StatusFailed, FailCode: string(events.ENotFound)})
	if events.ErrorCode(err) != events.ENotFound || !strings.Contains(events.ErrorMessage(err), "removed") {
		t.Errorf("a lease failed for its target's removal: %v", err)
	}
}
