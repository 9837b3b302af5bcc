package workers_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/internal/nettest"
	"github.com/syvault/syvault/internal/seal"
	"github.com/syvault/syvault/workers"
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
	issued, _ := f.active(t)
	full, err := f.store.LoadLease(t.Context(), issued.ID)
	if err != nil {
		t.Fatal(err)
	}
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
			tg.RecordUID, tg.SealedAdminPassword = issued.ID, full.Spec.SealedPassword
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
// opening, so an upgrade revokes what it issued before, and is reported for reseal; no
// other secret opens as an admin password under a record uid spelled as its associated
// data.
func TestOpenAdminPassword(t *testing.T) {
	key := seal.NewKey()
	sealer, _ := seal.New(key)
	tg := events.Target{RecordUID: "R1aaaaaaaaaa", Engine: events.PostgreSQL, Host: "db.internal", Port: 5432, Database: "app",
		AdminUsername: "syvault_admin", TLSMode: events.TLSVerifyFull, CACert: "-----BEGIN CERTIFICATE-----"}
	secret := []byte("admin-secret")
	tg.SealedAdminPassword = sealer.Seal(secret, tg.AdminPasswordAAD())
	if pw, resealed, err := workers.OpenAdminPassword(sealer, tg); err != nil || string(pw) != string(secret) || !resealed {
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
		if _, _, err := workers.OpenAdminPassword(sealer, moved); err == nil {
			t.Errorf("the sealed password opened with another %s", field)
		}
	}

	legacy := tg
	legacy.SealedAdminPassword = sealer.Seal(secret, []byte(tg.RecordUID))
	if pw, resealed, err := workers.OpenAdminPassword(sealer, legacy); err != nil || string(pw) != string(secret) || resealed {
		t.Fatalf("sealed before the binding: %q resealed=%v %v; want it opened and due for reseal", pw, resealed, err)
	}
	rotated, _ := seal.New(seal.NewKey(), key)
	if _, resealed, err := workers.OpenAdminPassword(rotated, tg); err != nil || resealed {
		t.Fatalf("bound under the previous key: resealed=%v %v; want it opened and due for reseal", resealed, err)
	}

	leaseID := "0193a0c4-7d2e-7b1a-9f00-123456789abc"
	for _, aad := range []string{string(tg.AdminPasswordAAD()), leaseID, events.VerifierAAD(leaseID), "syvault token key k1"} {
		forged := tg
		forged.RecordUID, forged.Host = aad, "attacker.example"
		forged.SealedAdminPassword = sealer.Seal(secret, []byte(aad))
		if _, _, err := workers.OpenAdminPassword(sealer, forged); err == nil {
			t.Errorf("a secret sealed to %q opened as the admin password of a target with that record uid", aad)
		}
	}
}

// TestWorkers_ATargetSealedBeforeTheBindingKeepsWorking: a registration whose admin
// password was sealed to its record uid alone (by an earlier version) still creates and
// revokes leases after the upgrade, including a lease revoked with its own snapshot
// because its target moved since.
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
	t.Cleanup(func() { _, _ = f.pg.Exec(context.Background(), "DROP ROLE IF EXISTS "+user) })
	waiting, err := f.store.Watch(nil, events.WaitingSubject(id)) // a requester, as a NATS writer can be
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(waiting.Stop)
	now := time.Now()
	e := events.RequestLease(events.LeaseRequest{LeaseID: id, Target: f.target, TTLSeconds: 3600, Username: user,
		SealedPassword: f.sealer.Seal([]byte("the admin's password"), []byte(id)), Now: now, Deadline: now.Add(time.Minute)})
	if _, err := f.store.Append(t.Context(), events.LeaseSubject(id), e, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.deliver(t, id, 0); err != nil {
		t.Fatal(err)
	}
	if l, err := f.store.LoadLease(t.Context(), id); err != nil || l.Status != events.StatusFailed {
		t.Fatalf("a request whose id is a record uid: %+v, %v; want it failed", l, err)
	}

	if f.userExists(t, user) {
		t.Fatalf("user %s was created", user)
	}
}
