package workers_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/internal/nettest"
	"github.com/syvault/syvault/internal/seal"
	"github.com/syvault/syvault/workers"
	"github.com/syvault/syvault/workers/driver"
)

// listener is a server a forged event names: it tells each connection's peer address.
type listener struct {
	ln       net.Listener
	accepted chan string
}

func mustListener(t *testing.T) *listener {
	t.Helper()
	l := &listener{accepted: make(chan string, 100)}
	l.ln = nettest.Serve(t, func(c net.Conn) {
		l.accepted <- c.RemoteAddr().String()
		c.Close()
	})
	return l
}

func (l *listener) port() int { return l.ln.Addr().(*net.TCPAddr).Port }

// connections returns how many connections were made to it before now: it connects
// itself and counts the others accepted until its own, since accepts come in order.
func (l *listener) connections(t *testing.T) int {
	t.Helper()
	c, err := net.Dial("tcp", l.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := 0
	deadline := time.After(10 * time.Second)
	for {
		select {
		case peer := <-l.accepted:
			if peer == c.LocalAddr().String() {
				return n
			}
			n++
		case <-deadline:
			t.Fatal("the listener did not accept a connection in 10 s")
		}
	}
}

// TestWorkers_AnAdminPasswordGoesOnlyWhereItWasRegistered: whoever can write to NATS can
// copy a sealed secret from the audit trail into a lease request whose target names their
// own server. The worker must not open it there (the target's admin password bound to
// its connection; a lease's password, a bound password's whole associated data or a
// token key's spelled as a record uid), so nothing is ever sent to them and no user is
// created.
func TestWorkers_AnAdminPasswordGoesOnlyWhereItWasRegistered(t *testing.T) {
	f := mustFixture(t)
	srv := mustListener(t)
	issued := f.activeWithSpec(t)
	elsewhere := func(change func(*events.Target)) events.Target {
		tg := f.target
		tg.Port = srv.port()
		change(&tg)
		return tg
	}
	for name, forged := range map[string]events.Target{
		"the admin password, another server": elsewhere(func(*events.Target) {}),
		"the admin password, its binding as the record uid": elsewhere(func(tg *events.Target) {
			tg.RecordUID = string(f.target.AdminPasswordAAD())
		}),
		"a lease's password, its lease id as the record uid": elsewhere(func(tg *events.Target) {
			tg.RecordUID, tg.SealedAdminPassword = issued.ID, issued.Spec.SealedPassword
		}),
	} {
		t.Run(name, func(t *testing.T) {
			id, user := f.requestOn(t, forged, time.Minute, true)
			err := f.deliver(t, id, 0)
			if err == nil || !strings.Contains(err.Error(), "could not be unsealed") {
				t.Fatalf("a request for another server with a copied sealed secret: %v", err)
			}
			if n := srv.connections(t); n != 0 {
				t.Fatalf("the worker connected %d time(s) to the server a forged request named", n)
			}
			if f.userExists(t, user) {
				t.Fatalf("user %s was created", user)
			}
		})
	}

	// The registration itself still works.
	if _, user := f.active(t); !f.userExists(t, user) {
		t.Fatalf("the registered target's lease has no user %s", user)
	}
}

// TestOpenAdminPassword: a sealed admin password opens only with every connection field
// it was sealed with; one sealed before the binding (to the record uid alone) keeps
// opening, so an upgrade revokes what it issued before, and is reported for reseal, but
// only with the connection it was first recorded with; no other secret opens as an admin
// password under a record uid spelled as its associated data.
func TestOpenAdminPassword(t *testing.T) {
	ctx := t.Context()
	key := seal.NewKey()
	sealer, _ := seal.New(key)
	tg := events.Target{RecordUID: "R1aaaaaaaaaa", Engine: events.PostgreSQL, Host: "db.internal", Port: 5432, Database: "app",
		AdminUsername: "syvault_admin", TLSMode: events.TLSVerifyFull, CACert: "-----BEGIN CERTIFICATE-----"}
	secret := []byte("admin-secret")
	tg.SealedAdminPassword = sealer.Seal(secret, tg.AdminPasswordAAD())
	none := workers.NewOrigins(history(nil))
	if pw, resealed, err := workers.OpenAdminPassword(ctx, sealer, none, tg); err != nil || string(pw) != string(secret) || !resealed {
		t.Fatalf("bound, current key: %q %v %v", pw, resealed, err)
	}
	for field, change := range map[string]func(*events.Target){
		"record_uid":     func(t *events.Target) { t.RecordUID = "R2aaaaaaaaaa" },
		"engine":         func(t *events.Target) { t.Engine = events.MySQL },
		"host":           func(t *events.Target) { t.Host = "attacker.example" },
		"port":           func(t *events.Target) { t.Port = 5433 },
		"database":       func(t *events.Target) { t.Database = "other" },
		"admin_username": func(t *events.Target) { t.AdminUsername = "postgres" },
		"tls_mode":       func(t *events.Target) { t.TLSMode = events.TLSRequire },
		"ca_cert":        func(t *events.Target) { t.CACert = "-----BEGIN CERTIFICATE----- attacker's" },
	} {
		moved := tg
		change(&moved)
		if _, _, err := workers.OpenAdminPassword(ctx, sealer, none, moved); err == nil {
			t.Errorf("the sealed password opened with another %s", field)
		}
	}

	legacy := tg
	legacy.SealedAdminPassword = sealer.Seal(secret, []byte(tg.RecordUID))
	elsewhere := legacy
	elsewhere.Host = "attacker.example"
	recorded := workers.NewOrigins(history{{Type: events.TargetRegistered, Target: &legacy}, {Type: events.TargetUpdated, Target: &elsewhere}})
	if pw, resealed, err := workers.OpenAdminPassword(ctx, sealer, recorded, legacy); err != nil || string(pw) != string(secret) || resealed {
		t.Fatalf("sealed before the binding: %q resealed=%v %v; want it opened and due for reseal", pw, resealed, err)
	}
	if _, _, err := workers.OpenAdminPassword(ctx, sealer, recorded, elsewhere); err == nil {
		t.Error("sealed before the binding, it opened next to a server a later event named")
	}
	if _, _, err := workers.OpenAdminPassword(ctx, sealer, none, legacy); err == nil {
		t.Error("sealed before the binding, it opened though no event of its target holds it")
	}
	down := workers.NewOrigins(unreadable{})
	if _, _, err := workers.OpenAdminPassword(ctx, sealer, down, legacy); events.ErrorCode(err) != events.EUnavailable {
		t.Errorf("sealed before the binding, its target's history unreadable: %v; want the store's unavailability (tried again), not a refusal", err)
	}
	rotated, _ := seal.New(seal.NewKey(), key)
	if _, resealed, err := workers.OpenAdminPassword(ctx, rotated, none, tg); err != nil || resealed {
		t.Fatalf("bound under the previous key: resealed=%v %v; want it opened and due for reseal", resealed, err)
	}

	leaseID := "0193a0c4-7d2e-7b1a-9f00-123456789abc"
	for _, aad := range []string{string(tg.AdminPasswordAAD()), leaseID, events.VerifierAAD(leaseID), "syvault token key k1"} {
		forged := tg
		forged.RecordUID, forged.Host = aad, "attacker.example"
		forged.SealedAdminPassword = sealer.Seal(secret, []byte(aad))
		if _, _, err := workers.OpenAdminPassword(ctx, sealer, workers.NewOrigins(history{{Type: events.TargetRegistered, Target: &forged}}), forged); err == nil {
			t.Errorf("a secret sealed to %q opened as the admin password of a target with that record uid", aad)
		}
	}
}

// unreadable is a store that cannot be read just now.
type unreadable struct{}

func (unreadable) History(context.Context, string) ([]events.Event, []uint64, error) {
	return nil, nil, events.StoreUnavailable(errors.New("no quorum"))
}

// history is a target's events, as a store would read them.
type history []events.Event

func (h history) History(context.Context, string) ([]events.Event, []uint64, error) {
	return h, make([]uint64, len(h)), nil
}

// TestWorkers_ATargetSealedBeforeTheBindingKeepsWorking: a registration whose admin
// password was sealed to its record uid alone (by an earlier version) still creates and
// revokes leases after the upgrade, including a lease revoked with its own snapshot
// because its target moved since; copied next to another server, it opens nothing.
func TestWorkers_ATargetSealedBeforeTheBindingKeepsWorking(t *testing.T) {
	f := mustFixture(t)
	bound, boundUser := f.active(t)
	legacy := f.target
	legacy.SealedAdminPassword = f.sealer.Seal([]byte("unused-under-trust"), []byte(legacy.RecordUID))
	reseal := func(tg events.Target) {
		last, err := f.store.LastSeq(t.Context(), events.TargetSubject(tg.RecordUID))
		if err != nil {
			t.Fatal(err)
		}
		f.record(t, events.ResealTarget(tg, last, time.Now()), last)
		f.target = tg
	}
	reseal(legacy)
	onLegacy, legacyUser := f.active(t)

	moved := legacy // the same server under another name: leases keep their snapshot
	moved.Host = "localhost"
	moved.SealedAdminPassword = f.sealer.Seal([]byte("unused-under-trust"), moved.AdminPasswordAAD())
	reseal(moved)

	for _, l := range []events.Lease{bound, onLegacy} {
		f.revoke(t, l.ID)
		if err := f.deliver(t, l.ID, 2); err != nil { // requested, activated, revoked
			t.Fatalf("revoking %s: %v", l.ID, err)
		}
	}
	for _, u := range []string{boundUser, legacyUser} {
		if f.userExists(t, u) {
			t.Fatalf("user %s outlived its revocation", u)
		}
	}

	// That legacy password, copied from the audit trail next to a server of someone who
	// can write to NATS, does not open there: it opens only with the connection it was
	// first recorded with.
	srv := mustListener(t)
	copied := legacy
	copied.Port = srv.port()
	id, user := f.requestOn(t, copied, time.Minute, true)
	if err := f.deliver(t, id, 0); err == nil || !strings.Contains(err.Error(), "could not be unsealed") {
		t.Fatalf("a request for another server with a legacy-sealed password: %v", err)
	}
	if n := srv.connections(t); n != 0 {
		t.Fatalf("the worker connected %d time(s) to the server a forged request named", n)
	}
	if f.userExists(t, user) {
		t.Fatalf("user %s was created", user)
	}
}

// TestWorkers_NoOtherSecretBecomesALeasePassword: a lease's password opens with its id as
// the associated data, and the id comes from the event. A forged request whose id is a
// record uid, with that target's admin password sealed as earlier versions did (to the
// uid alone), would make the admin password a new user's password: refused, and no user
// is made.
func TestWorkers_NoOtherSecretBecomesALeasePassword(t *testing.T) {
	f := mustFixture(t)
	id := f.target.RecordUID
	user := "vf_tmp_" + strings.ToLower(id[:8])
	f.mustFail(t, id, user, "the admin's password")

	if f.userExists(t, user) {
		t.Fatalf("user %s was created", user)
	}
}

// TestWorkers_ACopiedRequestOpensNothing: whoever can write to NATS can copy a lease's
// request, its sealed password and lease id included, onto a subject of their own whose
// target is a server of theirs (one they registered: its admin password is theirs), and
// follow it with a request of that subject's own. The password opens with the copied id,
// so the history is refused whole: nothing reaches that server.
func TestWorkers_ACopiedRequestOpensNothing(t *testing.T) {
	f := mustFixture(t)
	srv := mustListener(t)
	victim := f.activeWithSpec(t)
	theirs := f.theirs(srv)
	own := uuid.Must(uuid.NewV7()).String()
	first, err := f.store.Append(t.Context(), events.LeaseSubject(own), copyRequest(victim, victim.ID, theirs, own+".copied"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Append(t.Context(), events.LeaseSubject(own), copyRequest(victim, own, theirs, own+".requested"), first); err != nil {
		t.Fatal(err)
	}
	err = f.deliver(t, own, 1)
	if !errors.Is(err, jsstore.ErrPermanent) || !strings.Contains(err.Error(), "not written by SyVault") {
		t.Fatalf("the copied request's follower: %v; want it refused for good", err)
	}
	if n := srv.connections(t); n != 0 {
		t.Fatalf("the worker connected %d time(s) to the server the copied request named", n)
	}
}

// TestWorkers_NoAccountButALeaseUsers: a lease's username comes from its events; a forged
// one naming another account (an application's role) must not be created, renewed,
// regranted or dropped by the admin.
func TestWorkers_NoAccountButALeaseUsers(t *testing.T) {
	f := mustFixture(t)
	app := fmt.Sprintf("app_role_%d", rand.IntN(1e9))
	if _, err := f.pg.Exec(t.Context(), "CREATE ROLE "+app+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	f.mustFail(t, uuid.Must(uuid.NewV7()).String(), app, "pw")
	var valid *time.Time
	if err := f.pg.QueryRow(t.Context(), "SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1", app).Scan(&valid); err != nil {
		t.Fatalf("the application's role after the forged request (its create failed, then its user was dropped): %v", err)
	}
	if valid != nil {
		t.Fatalf("the application's role was given VALID UNTIL %v", valid)
	}
}

// activeWithSpec is an active lease as its events hold it, the sealed password included,
// which whoever can read the audit trail can copy.
func (f *fixture) activeWithSpec(t *testing.T) events.Lease {
	t.Helper()
	l, _ := f.active(t)
	full, err := f.store.LoadLease(t.Context(), l.ID)
	if err != nil {
		t.Fatal(err)
	}
	return full
}

// mustFail has the workers handle a forged request for lease id, user username and the
// given password (sealed to the id), with a requester waiting: it must be failed.
func (f *fixture) mustFail(t *testing.T, id, username, password string) {
	t.Helper()
	now := time.Now()
	f.appendRequest(t, events.LeaseRequest{LeaseID: id, Target: f.target, TTLSeconds: 3600, Username: username,
		SealedPassword: f.sealer.Seal([]byte(password), []byte(id)), Now: now, Deadline: now.Add(time.Minute)}, true)
	if err := f.deliver(t, id, 0); err != nil {
		t.Fatal(err)
	}
	if l, err := f.store.LoadLease(t.Context(), id); err != nil || l.Status != events.StatusFailed {
		t.Fatalf("a forged request for lease %q, user %q: %+v, %v; want it failed", id, username, l, err)
	}
}

// TestWorkers_ARequestOverALeasesHistoryOpensNothing: a lease's history is read back to
// its latest request, so whoever can write to NATS could append a request over a live
// lease's own (its id and sealed password, a target of theirs) and have it taken for a new
// lease. SyVault's request is its subject's first event: nothing is opened for another.
func TestWorkers_ARequestOverALeasesHistoryOpensNothing(t *testing.T) {
	f := mustFixture(t)
	srv := mustListener(t)
	victim := f.activeWithSpec(t)
	over := copyRequest(victim, victim.ID, f.theirs(srv), victim.ID+".again")
	if _, err := f.store.AppendUnordered(t.Context(), events.LeaseSubject(victim.ID), over); err != nil {
		t.Fatal(err)
	}
	err := f.deliver(t, victim.ID, 2) // requested, activated, the request over them
	if !errors.Is(err, jsstore.ErrPermanent) || !strings.Contains(err.Error(), "not its lease's first event") {
		t.Fatalf("a request appended over a live lease's history: %v; want it refused for good", err)
	}
	if n := srv.connections(t); n != 0 {
		t.Fatalf("the worker connected %d time(s) to the server the request named", n)
	}
}

// theirs is a target whoever can write to NATS registered for a server of theirs (srv):
// its admin password is theirs, sealed bound to it.
func (f *fixture) theirs(srv *listener) events.Target {
	tg := f.target
	tg.RecordUID, tg.Port = "Attacker1234", srv.port()
	tg.SealedAdminPassword = f.sealer.Seal([]byte("theirs"), tg.AdminPasswordAAD())
	return tg
}

// copyRequest is victim's request as whoever reads the audit trail can copy it (its
// username and sealed password), for lease leaseID on target tg, with dedupe id id
// (another than the original's, which NATS would drop as a duplicate).
func copyRequest(victim events.Lease, leaseID string, tg events.Target, id string) events.Event {
	now := time.Now()
	e := events.RequestLease(events.LeaseRequest{LeaseID: leaseID, Target: tg, TTLSeconds: 3600, Username: victim.Username,
		SealedPassword: victim.Spec.SealedPassword, Now: now, Deadline: now.Add(time.Minute)})
	e.ID = id
	return e
}

// TestWorkers_ACreateWhoseStoreIsDownIsTriedAgain: a create whose target cannot be looked
// up because the store does not answer is handed back to be tried again, not failed:
// the store's unavailability says nothing about the lease.
func TestWorkers_ACreateWhoseStoreIsDownIsTriedAgain(t *testing.T) {
	f := mustFixture(t)
	for _, down := range []error{events.StoreUnavailable(errors.New("no quorum")), events.StoreUnavailable(context.DeadlineExceeded)} {
		w, err := workers.New(workers.Config{Store: f.store, Sealer: f.sealer, Drivers: map[events.Engine]driver.Driver{events.PostgreSQL: f.driver},
			Targets: targetsDown{down}, Usernames: f.names})
		if err != nil {
			t.Fatal(err)
		}
		f.w = w
		id, user := f.request(t)
		if err := f.deliver(t, id, 0); events.ErrorCode(err) != events.ErrorCode(down) {
			t.Fatalf("a create while the store answers %v: %v; want that error, to be tried again", down, err)
		}
		if l, err := f.store.LoadLease(t.Context(), id); err != nil || l.Status != events.StatusPending {
			t.Fatalf("lease %s after the store failed its create: %+v, %v; want it still pending", id, l, err)
		}
		if f.userExists(t, user) {
			t.Fatalf("user %s was created", user)
		}
	}
}

// targetsDown is a read side whose store does not answer.
type targetsDown struct{ err error }

func (d targetsDown) Target(context.Context, string) (events.Target, error) {
	return events.Target{}, d.err
}

func (d targetsDown) WaitApplied(context.Context, uint64) error { return d.err }
