package command

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/events/jsstore/jstest"
	"github.com/syvault/syvault/internal/seal"
	"github.com/syvault/syvault/internal/tcpproxy"
	"github.com/syvault/syvault/projections"
	"github.com/syvault/syvault/workers/driver"
)

// recorder accepts every target (or answers refuse), calling hold (when set) at the
// start of each Prepare and verified (when set) at its end, and records what each
// Prepare and Reprepare gave the target's database (nil: RemoveTarget or Unprepare took
// it away) and what it is asked to undo.
type recorder struct {
	nopPreparer
	hold           func(events.Target)
	verified       func(events.Target)
	removedTargets []events.Target // of each RemoveTarget
	perUser        bool            // as MySQL: users hold their own grants
	mu             sync.Mutex
	applied        [][]events.Grant
	isNew          []bool // of each Prepare
	undone         []events.Target
	passwords      []string // of each Unprepare
	refuse         error    // what each Prepare answers, its grants applied as given
}

func (p *recorder) Prepare(_ context.Context, t events.Target, _ string, isNew bool) ([]string, error) {
	if p.hold != nil {
		p.hold(t)
	}
	p.mu.Lock()
	p.isNew = append(p.isNew, isNew)
	p.applied = append(p.applied, t.Grants)
	p.mu.Unlock()
	if p.verified != nil {
		p.verified(t)
	}
	return nil, p.refuse
}

func (p *recorder) Reprepare(_ context.Context, t events.Target) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.applied = append(p.applied, t.Grants)
	return nil
}

// RemoveTarget records a database with nothing of the target's: no grants.
func (p *recorder) RemoveTarget(_ context.Context, t events.Target) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.applied = append(p.applied, nil)
	p.removedTargets = append(p.removedTargets, t)
	return nil
}

func (p *recorder) GrantsPerUser(events.Engine) bool { return p.perUser }

func (p *recorder) Unprepare(_ context.Context, t events.Target, adminPassword string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.applied = append(p.applied, nil)
	p.undone = append(p.undone, t)
	p.passwords = append(p.passwords, adminPassword)
	return nil
}

func (p *recorder) last() []events.Grant {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applied[len(p.applied)-1]
}

func (p *recorder) prepared() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.isNew)
}

// grants gives SELECT on table orders.public.<table>.
func grants(table string) []events.Grant {
	return []events.Grant{{Database: "orders", Schema: "public", Tables: []string{table}, Privileges: []string{"SELECT"}}}
}

// registeredTarget records a PostgreSQL target granting SELECT on "before" through s and
// returns it with its version.
func registeredTarget(t *testing.T, s *Service) (events.Target, uint64) {
	t.Helper()
	reg, err := s.RegisterTarget(t.Context(), events.Target{Name: "orders", Engine: events.PostgreSQL, Host: "db.internal", Port: 5432,
		Database: "orders", AdminUsername: "syvault_admin", TLSMode: events.TLSVerifyFull, Grants: grants("before")}, "pw", "")
	if err != nil {
		t.Fatal(err)
	}
	version, err := s.cfg.Store.LastSeq(t.Context(), events.TargetSubject(reg.RecordUID))
	if err != nil {
		t.Fatal(err)
	}
	return reg, version
}

// recordedTable is the table the grants of target uid name as recorded.
func recordedTable(t *testing.T, s *Service, uid string) string {
	t.Helper()
	cur, _, err := s.cfg.Projections.TargetVersion(t.Context(), uid)
	if err != nil {
		t.Fatal(err)
	}
	return cur.Grants[0].Tables[0]
}

// TestRegisterTarget_NotRecordedIsUndone: a registration whose append fails after the
// target was prepared (the store went away) left the group role Prepare made, and the
// admin's membership in it, on the target: one per attempt of an operator retrying
// through the outage. What Prepare made is now removed, with the password it was made with.
func TestRegisterTarget_NotRecordedIsUndone(t *testing.T) {
	srv := jstest.MustServer(t, "")
	p := &recorder{hold: func(events.Target) { srv.Shutdown() }}
	s := newService(t, srv.MustStore(t), p)
	// The append waits out its context with the store gone.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	target := events.Target{Name: "orders", Engine: events.PostgreSQL, Host: "db.internal", Port: 5432,
		Database: "orders", AdminUsername: "syvault_admin", TLSMode: events.TLSVerifyFull}
	got, err := s.RegisterTarget(ctx, target, "admin-password", "")
	if err == nil {
		t.Fatal("registered a target with the store down")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.undone) != 1 || p.undone[0].RecordUID != got.RecordUID || p.passwords[0] != "admin-password" {
		t.Fatalf("undone %d targets (%+v); want the one not recorded, %s, with its admin password", len(p.undone), p.undone, got.RecordUID)
	}
}

// TestRegisterTarget_RecordedUnansweredKeepsItsSetup: a registration whose append landed
// but went unanswered (its acknowledgement lost or late: a NATS leader change, a slow
// link) removed the group Prepare had made, under a target that is recorded: a lease
// made on it before its next create made the group again lost its grants. The store's
// leader is asked whether it landed first.
func TestRegisterTarget_RecordedUnansweredKeepsItsSetup(t *testing.T) {
	store, proxy := storeBehindProxy(t)
	// Verified, then every answer from NATS late: the append lands and its
	// acknowledgement comes after the request's end.
	p := &recorder{verified: func(events.Target) { proxy.SetReplyDelay(1500 * time.Millisecond) }}
	s := newService(t, store, p)
	s.cfg.RequestTimeout = 20 * time.Second // a quarter of it, 5 s, to ask whether the append landed
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	got, err := s.RegisterTarget(ctx, events.Target{Name: "orders", Engine: events.PostgreSQL, Host: "db.internal", Port: 5432,
		Database: "orders", AdminUsername: "syvault_admin", TLSMode: events.TLSVerifyFull, Grants: grants("before")}, "admin-password", "")
	if err == nil {
		t.Fatal("the registration answered within its time though NATS answered after it")
	}
	proxy.SetReplyDelay(0)
	seq, err := store.LastSeq(t.Context(), events.TargetSubject(got.RecordUID))
	if err != nil || seq == 0 {
		t.Fatalf("the registration's append: last %d, %v; want it landed", seq, err)
	}
	if err := s.cfg.Projections.WaitTarget(t.Context(), got.RecordUID, seq); err != nil {
		t.Fatalf("the target recorded unanswered does not show: %v", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.undone) != 0 {
		t.Fatalf("what Prepare made for the recorded target %s was removed", got.RecordUID)
	}
}

// A rename whose append landed but went unanswered cannot tell it landed: it keeps both
// names. The new one, which the target bears, is refused to every other target; the old
// one, which it no longer bears, is refused while its reservation is younger than a
// registration or rename takes (it may be one under way), and given to another past that.
func TestUpdateTarget_ARenameLandedUnansweredKeepsTheNewName(t *testing.T) {
	store, proxy := storeBehindProxy(t)
	p := &recorder{}
	s := newService(t, store, p)
	s.cfg.RequestTimeout = 20 * time.Second // a quarter of it, 5 s, to ask whether the append landed
	reg, version := registeredTarget(t, s)
	// Verified, then every answer from NATS late: the append lands and its
	// acknowledgement comes after the request's end.
	p.verified = func(events.Target) { proxy.SetReplyDelay(1500 * time.Millisecond) }
	renamed := reg
	renamed.Name = "ledger"
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if _, _, err := s.UpdateTarget(ctx, reg.RecordUID, renamed, "pw", "", nil); err == nil {
		t.Fatal("the rename answered within its time though NATS answered after it")
	}
	proxy.SetReplyDelay(0)
	p.verified = nil
	seq, err := store.LastSeq(t.Context(), events.TargetSubject(reg.RecordUID))
	if err != nil || seq == version {
		t.Fatalf("the rename's append: last %d, %v; want it landed", seq, err)
	}
	if err := s.cfg.Projections.WaitTarget(t.Context(), reg.RecordUID, seq); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ledger", "orders"} {
		if h, held, err := s.names.Holder(t.Context(), nameKey("target", name)); err != nil || !held || string(h.Value) != reg.RecordUID {
			t.Fatalf("the name %q after the rename landed unanswered: held by %q (%v), %v; want it kept for %s", name, h.Value, held, err, reg.RecordUID)
		}
	}
	other := func(name string) error {
		_, err := s.RegisterTarget(t.Context(), events.Target{Name: name, Engine: events.PostgreSQL, Host: "db.internal", Port: 5432,
			Database: "orders", AdminUsername: "syvault_admin", TLSMode: events.TLSVerifyFull, Grants: grants("other")}, "pw", "")
		return err
	}
	if err := other("ledger"); events.ErrorCode(err) != events.EConflict || !strings.Contains(events.ErrorMessage(err), reg.RecordUID) {
		t.Fatalf("another target named as the rename that landed: %v; want a conflict naming %s", err, reg.RecordUID)
	}
	if err := other("orders"); events.ErrorCode(err) != events.EConflict || !strings.Contains(events.ErrorMessage(err), "being registered") {
		t.Fatalf("another target named as the renamed one was, at once: %v; want a conflict, a rename being under way", err)
	}
	setRegistrationBound(t, 0)
	if err := other("orders"); err != nil {
		t.Fatalf("another target named as the renamed one was, past the bound: %v; want it registered", err)
	}
}

// setRegistrationBound sets how long a name's reservation may stand for a registration
// or rename under way, until the test ends.
func setRegistrationBound(t *testing.T, d time.Duration) {
	old := registrationBound
	registrationBound = d
	t.Cleanup(func() { registrationBound = old })
}

// storeBehindProxy opens a store on an embedded NATS server reached through a proxy, to
// hold NATS's answers back.
func storeBehindProxy(t *testing.T) (*jsstore.Store, *tcpproxy.Proxy) {
	t.Helper()
	ns := jstest.Start(t, &server.Options{JetStream: true, StoreDir: t.TempDir(), Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	proxy, err := tcpproxy.Start(ns.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", proxy.Port()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	store, err := jsstore.Open(t.Context(), nc, jsstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return store, proxy
}

// TestRegisterTarget_RefusedAtItsWriteIsUndone: a registration refused at its write (its
// new uid's subject held something already: written by whoever can write to NATS) did
// not land, whatever the subject holds: what Prepare made is removed.
func TestRegisterTarget_RefusedAtItsWriteIsUndone(t *testing.T) {
	store := jstest.MustStore(t)
	p := &recorder{verified: func(tg events.Target) {
		if _, err := store.AppendUnordered(context.Background(), events.TargetSubject(tg.RecordUID),
			events.Event{Type: events.TargetRemoved, ID: "forged", RecordUID: tg.RecordUID}); err != nil {
			t.Error(err)
		}
	}}
	s := newService(t, store, p)
	target := events.Target{Name: "orders", Engine: events.PostgreSQL, Host: "db.internal", Port: 5432,
		Database: "orders", AdminUsername: "syvault_admin", TLSMode: events.TLSVerifyFull, Grants: grants("before")}
	got, err := s.RegisterTarget(t.Context(), target, "admin-password", "")
	if err == nil {
		t.Fatal("a registration refused at its write answered as made")
	}
	p.mu.Lock()
	if len(p.undone) != 1 || p.undone[0].RecordUID != got.RecordUID {
		t.Fatalf("undone %+v; want what Prepare made for %s", p.undone, got.RecordUID)
	}
	p.verified = nil
	p.mu.Unlock()
	if _, err := s.RegisterTarget(t.Context(), target, "admin-password", ""); err != nil {
		t.Fatalf("the registration sent again: %v; want it made, its name free", err)
	}
}

// TestUpdateTarget_ALosingUpdateLeavesTheRecordedGrants: an update's verification gives
// the target's group its new grants before the update is recorded. Of two updates of one
// target at the same moment, the one refused (another was recorded first) could be
// verified last: its grants stayed on the database while the recorded target named the
// other's, so leases held what no setting said. The refused update now sets the database
// back to the target as recorded.
func TestUpdateTarget_ALosingUpdateLeavesTheRecordedGrants(t *testing.T) {
	p, s, other := twoProcesses(t)
	reg, version := registeredTarget(t, s)
	// The loser is verified after the winner, and appends after it.
	lost, release := heldUpdate(s, p, reg, "loser", true, version)
	updateTo(t, other, reg, "winner")
	close(release)
	if err := <-lost; events.ErrorCode(err) != events.EPreconditionFailed {
		t.Fatalf("the losing update: %v, want it refused as changed meanwhile", err)
	}
	if got := p.last(); got[0].Tables[0] != "winner" {
		t.Fatalf("the database was left with the %q update's grants; the recorded target has the winner's", got[0].Tables[0])
	}
	// Only the registration's Prepare may undo what it made: an update's target has
	// leases that may use it.
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.isNew) != 3 || !p.isNew[0] || p.isNew[1] || p.isNew[2] {
		t.Fatalf("Prepare was told the target is new: %v; want the registration's only", p.isNew)
	}
}

// TestUpdateTarget_VerifiedFirstRecordedLast: an update without If-Match read the
// target's version after its verification, so one verified before another but written
// after it was recorded over it: the recorded target named the first update's grants,
// the database held the second's. The version is now read before the verification; the
// first update is refused as changed meanwhile and the database set back.
func TestUpdateTarget_VerifiedFirstRecordedLast(t *testing.T) {
	p, s, other := twoProcesses(t)
	reg, _ := registeredTarget(t, s)
	done, release := heldUpdate(s, p, reg, "first", false)
	updateTo(t, other, reg, "second")
	close(release)
	if err := <-done; events.ErrorCode(err) != events.EConflict {
		t.Fatalf("the update verified first and written last: %v, want it refused as changed meanwhile", err)
	}
	if db, rec := p.last()[0].Tables[0], recordedTable(t, s, reg.RecordUID); db != rec {
		t.Fatalf("the database has the %q update's grants; the recorded target has the %q update's", db, rec)
	}
}

// TestUpdateTarget_OneProcessTakesItsUpdatesInTurn: two updates of one target at the
// same moment through one process (the default deployment) are made one after the
// other, so neither is refused as changed meanwhile, and the database ends with the
// grants recorded last.
func TestUpdateTarget_OneProcessTakesItsUpdatesInTurn(t *testing.T) {
	p := &recorder{}
	s := newService(t, jstest.MustStore(t), p)
	ctx := t.Context()
	reg, _ := registeredTarget(t, s)
	first, second := reg, reg
	first.Grants, second.Grants = grants("first"), grants("second")
	started := make(chan struct{})
	p.verified = func(target events.Target) {
		if target.Grants[0].Tables[0] != "first" {
			return
		}
		close(started)
		// Until the second update is verified too, or waits for its turn.
		for deadline := time.Now().Add(10 * time.Second); p.prepared() < 3 && s.targetTurns.Users(reg.RecordUID) < 2; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Error("the second update never came")
				return
			}
		}
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := s.UpdateTarget(ctx, reg.RecordUID, first, "pw", "", nil)
		done <- err
	}()
	<-started
	if _, _, err := s.UpdateTarget(ctx, reg.RecordUID, second, "pw", "", nil); err != nil {
		t.Fatalf("the second update: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the first update: %v", err)
	}
	if db, rec := p.last()[0].Tables[0], recordedTable(t, s, reg.RecordUID); db != "second" || rec != "second" {
		t.Fatalf("the database has the %q update's grants, the record the %q update's; want the second's both", db, rec)
	}
}

// twoProcesses is two command sides on one store and one database.
func twoProcesses(t *testing.T) (*recorder, *Service, *Service) {
	p := &recorder{}
	store := jstest.MustStore(t)
	return p, newService(t, store, p), newService(t, store, p)
}

// updateTo updates reg through s to grants on table, with no If-Match.
func updateTo(t *testing.T, s *Service, reg events.Target, table string) {
	t.Helper()
	upd := reg
	upd.Grants = grants(table)
	if _, _, err := s.UpdateTarget(t.Context(), reg.RecordUID, upd, "pw", "", nil); err != nil {
		t.Fatal(err)
	}
}

// heldUpdate starts an update of reg through s to grants on table, with ifMatch, held
// once verified (or, when before, as its verification starts) until release is closed;
// it answers on the channel returned.
func heldUpdate(s *Service, p *recorder, reg events.Target, table string, before bool, ifMatch ...uint64) (answer chan error, release chan struct{}) {
	upd := reg
	upd.Grants = grants(table)
	verified, release, answer := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	hold := func(t events.Target) {
		if t.Grants[0].Tables[0] == table {
			close(verified)
			<-release
		}
	}
	if before {
		p.hold = hold
	} else {
		p.verified = hold
	}
	go func() {
		_, _, err := s.UpdateTarget(context.Background(), reg.RecordUID, upd, "pw", "", ifMatch)
		answer <- err
	}()
	<-verified
	return answer, release
}

// TestUpdateTarget_AResealMeanwhileIsNoConflict: syvault reseal records the same
// settings with the password sealed under a new key. An update without If-Match being
// verified meanwhile is still made: nothing the reseal did touched the database.
func TestUpdateTarget_AResealMeanwhileIsNoConflict(t *testing.T) {
	p := &recorder{}
	s := newService(t, jstest.MustStore(t), p)
	ctx := t.Context()
	reg, _ := registeredTarget(t, s)
	answer, release := heldUpdate(s, p, reg, "after", false)
	cur, version, err := s.cfg.Store.LoadTarget(ctx, reg.RecordUID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.cfg.Store.Append(ctx, events.TargetSubject(reg.RecordUID), events.ResealTarget(cur, version, time.Now()), version); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-answer; err != nil {
		t.Fatalf("an update with a reseal recorded while it was verified: %v", err)
	}
	if rec := recordedTable(t, s, reg.RecordUID); rec != "after" {
		t.Fatalf("the recorded target grants %q; want the update's", rec)
	}
}

// TestUpdateTarget_ARemovalMeanwhileLeavesNothing: an update verified while another
// process removed the target made the target's setup (the PostgreSQL group, the MySQL
// marker role) again after the removal dropped it; refused at its write, it left that
// under a record that no longer exists. It is now removed, with the connection and
// password the verification used.
func TestUpdateTarget_ARemovalMeanwhileLeavesNothing(t *testing.T) {
	for _, c := range []struct{ perUser, beforeVerified bool }{{false, true}, {false, false}, {true, true}, {true, false}} {
		t.Run(fmt.Sprintf("grants per user %v, removed before the verification %v", c.perUser, c.beforeVerified), func(t *testing.T) {
			p, s, other := twoProcesses(t)
			p.perUser = c.perUser
			reg, _ := registeredTarget(t, s)
			answer, release := heldUpdate(s, p, reg, "after", c.beforeVerified)
			if err := other.RemoveTarget(t.Context(), reg.RecordUID, false, false, ""); err != nil {
				t.Fatal(err)
			}
			close(release)
			if err := <-answer; events.ErrorCode(err) != events.EConflict {
				t.Fatalf("an update of a target removed while it was verified: %v, want a conflict", err)
			}
			if got := p.last(); got != nil {
				t.Fatalf("the removed target's database was left with grants on %q", got[0].Tables[0])
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			if n := len(p.undone); n != 1 || p.undone[0].Grants[0].Tables[0] != "after" || p.passwords[0] != "pw" {
				t.Fatalf("undone %d targets (%+v); want the update's, with its password", n, p.undone)
			}
		})
	}
}

// TestRemoveTarget_RemovesTheSettingsRecordedLast: a removal drops the setup of the
// target as last recorded (here by another process), once, and the target is then not
// found. A guard of the order the removal now keeps (its write on condition of the
// version it read, then the drop); it passes on the old code too, which read no stale
// copy here: the race it closes needs an update between the read and the write.
func TestRemoveTarget_RemovesTheSettingsRecordedLast(t *testing.T) {
	p, s, other := twoProcesses(t)
	reg, _ := registeredTarget(t, s)
	updateTo(t, other, reg, "after")
	if err := s.RemoveTarget(t.Context(), reg.RecordUID, false, false, ""); err != nil {
		t.Fatalf("the removal: %v", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.removedTargets); n != 1 || p.removedTargets[0].Grants[0].Tables[0] != "after" {
		t.Fatalf("removed %d targets' setups (%+v); want the one recorded last", n, p.removedTargets)
	}
	if _, _, err := s.cfg.Projections.TargetVersion(t.Context(), reg.RecordUID); events.ErrorCode(err) != events.ENotFound {
		t.Fatalf("the target after its removal: %v, want not found", err)
	}
}

// until polls cond every millisecond for up to ten seconds, failing the test with what
// when it never holds.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
	}
}

// A lease activated after a removal had listed its target's leases (none) and before it
// was recorded: its user was made with the target's settings, and the removal answered
// while the lease stayed active, its credentials good until they expired. The removal
// now reads the target's leases again once every event before it is applied, and
// records their revocation, even when asked not to revoke leases: their target is gone.
func TestRemoveTarget_RevokesALeaseActivatedWhileItWasRemoved(t *testing.T) {
	p := &recorder{}
	s := newService(t, jstest.MustStore(t), p)
	ctx := t.Context()
	reg, _ := registeredTarget(t, s)
	release, err := s.targetTurns.Take(ctx, reg.RecordUID) // as another change of it would
	if err != nil {
		t.Fatal(err)
	}
	answer := make(chan error, 1)
	go func() { answer <- s.RemoveTarget(ctx, reg.RecordUID, false, false, "") }()
	until(t, "the removal never waited for its turn", func() bool { return s.targetTurns.Users(reg.RecordUID) == 2 })
	// Meanwhile a lease of the target is requested and activated, as the API and a
	// worker do.
	id := uuid.Must(uuid.NewV7()).String()
	now := time.Now()
	if _, err := s.cfg.Store.Append(ctx, events.LeaseSubject(id), events.RequestLease(events.LeaseRequest{LeaseID: id, Target: reg,
		TTLSeconds: 3600, Username: "v_late", Now: now, Deadline: now.Add(time.Minute)}), 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.cfg.Store.DecideLease(ctx, id, func(l events.Lease) (*events.Event, error) {
		act, err := l.Activate(time.Now())
		return &act, err
	}); err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-answer; err != nil {
		t.Fatalf("the removal: %v", err)
	}
	// Recorded, for the revoker to drop the user (retried until it is gone).
	if l, err := s.cfg.Store.LoadLease(ctx, id); err != nil || l.Status != events.StatusRevoking {
		t.Fatalf("the lease after its target's removal: %+v, %v; want its revocation recorded", l.Status, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.removedTargets); n != 1 {
		t.Fatalf("the target's setup was removed %d times, want once", n)
	}
}

// When the read side cannot say in time that it has applied every event before a
// removal (its projector stopped here), the removal answers 504 and says so, the removal
// recorded: the workers follow it through from the stream once the read side catches up
// (workers' TestWorkers_ARemovalIsFollowedThroughFromTheStream).
func TestRemoveTarget_AnswersTimeoutWhenTheReadSideLags(t *testing.T) {
	ctx := t.Context()
	store := jstest.MustStore(t)
	proj, err := projections.Open(ctx, store, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	run := func() (stop func()) {
		rctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = proj.Run(rctx) }()
		return func() { cancel(); <-done }
	}
	var once sync.Once
	running := run()
	stop := func() { once.Do(running) }
	t.Cleanup(stop) // also when the test fails before it stops the projector
	sealer, err := seal.New(seal.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, Config{Store: store, Projections: proj, Sealer: sealer, Preparer: nopPreparer{}, RequestTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	reg, _ := registeredTarget(t, s)
	stop()
	id := uuid.Must(uuid.NewV7()).String()
	now := time.Now()
	if _, err := store.Append(ctx, events.LeaseSubject(id), events.RequestLease(events.LeaseRequest{LeaseID: id, Target: reg,
		TTLSeconds: 3600, Username: "v_unseen", Now: now, Deadline: now.Add(time.Minute)}), 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.DecideLease(ctx, id, func(l events.Lease) (*events.Event, error) {
		act, err := l.Activate(time.Now())
		return &act, err
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveTarget(ctx, reg.RecordUID, false, false, ""); events.ErrorCode(err) != events.ETimeout {
		t.Fatalf("a removal the read side could not confirm in time: %v, want a timeout that says so", err)
	}
	evs, _, err := store.History(ctx, events.TargetSubject(reg.RecordUID))
	if err != nil || len(evs) == 0 || evs[len(evs)-1].Type != events.TargetRemoved {
		t.Fatalf("the target's events after a removal answered 504: %v, %v; want its removal recorded last", evs, err)
	}
}

// A rename that landed unanswered (its request could not tell whether it had, so kept
// both names) left the old name reserved for its target, which exists: every other
// target was refused that name for good. A reservation whose holder bears another name
// is now taken over once it has stood longer than a registration or rename takes.
func TestRegisterTarget_TakesANameItsHolderNoLongerBears(t *testing.T) {
	s := mustService(t)
	ctx := t.Context()
	reg, version := registeredTarget(t, s)
	renamed := reg
	renamed.Name = "ledger"
	seq, err := s.cfg.Store.Append(ctx, events.TargetSubject(reg.RecordUID), events.UpdateTarget(renamed, "", version, time.Now()), version)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cfg.Projections.WaitTarget(ctx, reg.RecordUID, seq); err != nil {
		t.Fatal(err)
	}
	named := func(name string) events.Target {
		return events.Target{Name: name, Engine: events.PostgreSQL, Host: "db.internal", Port: 5432,
			Database: "orders", AdminUsername: "syvault_admin", TLSMode: events.TLSVerifyFull, Grants: grants("other")}
	}
	if _, err := s.RegisterTarget(ctx, named("orders"), "pw", ""); events.ErrorCode(err) != events.EConflict {
		t.Fatalf("the old name while a rename to it could still be under way: %v; want a conflict", err)
	}
	setRegistrationBound(t, 0)
	if _, err := s.RegisterTarget(ctx, named("orders"), "pw", ""); err != nil {
		t.Fatalf("another target named as the renamed one was: %v; want it registered", err)
	}
	if _, err := s.RegisterTarget(ctx, named("ledger"), "pw", ""); events.ErrorCode(err) != events.EConflict {
		t.Fatalf("the name the renamed target bears: %v; want a conflict", err)
	}
}

// A claim of a name another holds asks the stream's leader what the holder bears, not
// the read side, which may not show a rename yet: one bearing it keeps it, however old
// its reservation; a holder the leader cannot read keeps it too, the claim answering the
// store's failure rather than "exists already".
func TestClaimName_AHolderBearingTheNameKeepsIt(t *testing.T) {
	s := mustService(t)
	ctx := t.Context()
	reg, _ := registeredTarget(t, s) // "orders", reserved for it
	setRegistrationBound(t, 0)
	err := s.claimName(ctx, "target", "orders", "Xother0uid01", s.targetName)
	if events.ErrorCode(err) != events.EConflict || !strings.Contains(events.ErrorMessage(err), reg.RecordUID) {
		t.Fatalf("a claim of a name its holder bears: %v; want a conflict naming %s", err, reg.RecordUID)
	}
	unreadable := func(context.Context, string) (string, error) {
		return "", events.Errorf(events.EUnavailable, "The event store is not available.")
	}
	if err := s.claimName(ctx, "target", "orders", "Xother0uid01", unreadable); events.ErrorCode(err) != events.EUnavailable {
		t.Fatalf("a claim whose holder cannot be read: %v; want the store's failure", err)
	}
	if h, _, err := s.names.Holder(ctx, nameKey("target", "orders")); err != nil || string(h.Value) != reg.RecordUID {
		t.Fatalf("the name's holder after the refused claims: %q, %v; want %s", h.Value, err, reg.RecordUID)
	}
}

// A target renamed back to a name it kept reserved from before (older than a rename
// takes) claimed it as its own and let it stand old: another registration of that name
// took it over while the rename was verified, and both were recorded with one name.
func TestUpdateTarget_ARenameBackHoldsItsOldReservation(t *testing.T) {
	p := &recorder{}
	s := newService(t, jstest.MustStore(t), p)
	ctx := t.Context()
	reg, version := registeredTarget(t, s)
	renamed := reg
	renamed.Name = "ledger"
	if _, err := s.cfg.Store.Append(ctx, events.TargetSubject(reg.RecordUID), events.UpdateTarget(renamed, "", version, time.Now()), version); err != nil {
		t.Fatal(err)
	}
	setRegistrationBound(t, 0) // the kept name's reservation older than a rename takes
	key := nameKey("target", "orders")
	kept, held, err := s.names.Holder(ctx, key)
	if err != nil || !held {
		t.Fatalf("the kept name's reservation: held %v, %v", held, err)
	}
	answer, release := heldUpdate(s, p, reg, "back", false) // named "orders" again
	h, _, err := s.names.Holder(ctx, key)
	if err != nil || h.Revision == kept.Revision || !h.Since.After(kept.Since) {
		close(release)
		t.Fatalf("the reservation the rename back claimed: revision %d since %v (before: %d since %v), %v; want it stamped anew",
			h.Revision, h.Since, kept.Revision, kept.Since, err)
	}
	registrationBound = time.Hour // however long the next claim takes to come
	_, err = s.RegisterTarget(ctx, events.Target{Name: "orders", Engine: events.PostgreSQL, Host: "db.internal", Port: 5432,
		Database: "orders", AdminUsername: "syvault_admin", TLSMode: events.TLSVerifyFull, Grants: grants("other")}, "pw", "")
	close(release)
	if events.ErrorCode(err) != events.EConflict {
		t.Fatalf("another target named as the one being renamed back: %v; want a conflict", err)
	}
	if err := <-answer; err != nil {
		t.Fatalf("the rename back: %v", err)
	}
}

// A PUT its database refused after setting some of the target's databases (PostgreSQL
// sets them one transaction each, in turn) left those with grants no record names. Now
// the database is set back to the target as recorded; a PUT refused before it changed
// anything is not followed by a second round on the database.
func TestUpdateTarget_RefusedPartwayIsSetBack(t *testing.T) {
	for _, tc := range []struct {
		name    string
		refusal error
		want    string // the table of the grants the database is left with
	}{
		{"partway", driver.PartlyApplied(events.Errorf(events.ETargetUnverified, "Cannot apply grant 2.")), "before"},
		{"before any change", events.Errorf(events.ETargetUnverified, "Cannot apply grant 1."), "after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &recorder{}
			s := newService(t, jstest.MustStore(t), p)
			reg, _ := registeredTarget(t, s)
			p.refuse = tc.refusal
			upd := reg
			upd.Grants = grants("after")
			if _, _, err := s.UpdateTarget(t.Context(), reg.RecordUID, upd, "pw", "", nil); events.ErrorCode(err) != events.ETargetUnverified {
				t.Fatalf("the refused PUT: %v; want its refusal", err)
			}
			if got := p.last(); got[0].Tables[0] != tc.want {
				t.Fatalf("the database was left with the grants on %q; want %q", got[0].Tables[0], tc.want)
			}
		})
	}
}

// A rename its database refused frees the new name at once, and the target keeps its
// old one: another target is given the new name and refused the old.
func TestUpdateTarget_ARenameItsDatabaseRefusedLeavesItsNameFree(t *testing.T) {
	p := &recorder{}
	s := newService(t, jstest.MustStore(t), p)
	reg, _ := registeredTarget(t, s)
	p.refuse = events.Errorf(events.ETargetUnverified, "Cannot apply grant 1.")
	renamed := reg
	renamed.Name = "ledger"
	if _, _, err := s.UpdateTarget(t.Context(), reg.RecordUID, renamed, "pw", "", nil); events.ErrorCode(err) != events.ETargetUnverified {
		t.Fatalf("the refused rename: %v; want its refusal", err)
	}
	p.refuse = nil
	another := func(name string) error {
		_, err := s.RegisterTarget(t.Context(), events.Target{Name: name, Engine: events.PostgreSQL, Host: "db.internal", Port: 5432,
			Database: "ledger", AdminUsername: "syvault_admin", TLSMode: events.TLSVerifyFull, Grants: grants("l")}, "pw", "")
		return err
	}
	if err := another("ledger"); err != nil {
		t.Errorf("another target named as the refused rename: %v; want it registered", err)
	}
	if err := another(reg.Name); events.ErrorCode(err) != events.EConflict {
		t.Errorf("another target named as the target still is: %v; want a conflict", err)
	}
}

// A rename refused at its write (another update recorded while it was verified) kept its
// new name reserved for its target, which exists: every other target was refused that
// name for good. It is freed now.
func TestUpdateTarget_ARefusedRenameLeavesItsNameFree(t *testing.T) {
	p, s, other := twoProcesses(t)
	reg, version := registeredTarget(t, s)
	renamed := reg
	renamed.Name = "ledger"
	answer, release := heldUpdate(s, p, renamed, "renamed", false, version)
	updateTo(t, other, reg, "winner")
	close(release)
	if err := <-answer; events.ErrorCode(err) != events.EPreconditionFailed {
		t.Fatalf("the rename: %v; want it refused as changed meanwhile", err)
	}
	p.mu.Lock()
	p.verified = nil
	p.mu.Unlock()
	if _, err := s.RegisterTarget(t.Context(), events.Target{Name: "ledger", Engine: events.PostgreSQL, Host: "db.internal", Port: 5432,
		Database: "ledger", AdminUsername: "syvault_admin", TLSMode: events.TLSVerifyFull, Grants: grants("l")}, "pw", ""); err != nil {
		t.Fatalf("another target named as the refused rename: %v; want it registered", err)
	}
}
