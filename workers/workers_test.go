package workers_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/events/jsstore/jstest"
	"github.com/syvault/syvault/internal/seal"
	"github.com/syvault/syvault/internal/tcpproxy"
	"github.com/syvault/syvault/projections"
	"github.com/syvault/syvault/workers"
	"github.com/syvault/syvault/workers/driver"
	"github.com/syvault/syvault/workers/postgres"
)

// fixture is a store, a registered PostgreSQL target on the local server and Workers,
// with no consumer running: tests deliver messages themselves.
type fixture struct {
	srv    *jstest.Server
	store  *jsstore.Store
	sealer *seal.Sealer
	w      *workers.Workers
	target events.Target
	driver driver.Driver
	pg     *pgx.Conn
	names  *jsstore.Names // the usernames bucket
	proj   *projections.Projections
}

func mustFixture(t *testing.T) *fixture {
	t.Helper()
	return mustFixtureWith(t, nil)
}

// mustFixtureWith is mustFixture with the workers' PostgreSQL driver wrapped by wrap. The
// workers see only what the wrapper implements: one that embeds driver.Driver hides the
// driver's batched drops and its other optional interfaces.
func mustFixtureWith(t *testing.T, wrap func(driver.Driver) driver.Driver) *fixture {
	t.Helper()
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL on 127.0.0.1:5432 is required (CI=true): %v", err)
		}
		t.Skipf("PostgreSQL on 127.0.0.1:5432 unreachable, skipping: %v", err)
	}
	t.Cleanup(func() { pg.Close(ctx) })
	db := fmt.Sprintf("syvault_wk_%d", rand.IntN(1e9))
	if _, err := pg.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	uid := "W" + strings.ReplaceAll(uuid.NewString(), "-", "")[:11] // shaped as the uids SyVault makes
	t.Cleanup(func() {
		_, _ = pg.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
		// After the database, whose grants to it would block the drop.
		_, _ = pg.Exec(ctx, fmt.Sprintf(`DROP ROLE IF EXISTS "syvault_%s"`, uid))
	})

	srv := jstest.MustServer(t, "")
	store := srv.MustStore(t)
	logger := slog.New(slog.DiscardHandler)
	proj, err := projections.Open(ctx, store, logger)
	if err != nil {
		t.Fatal(err)
	}
	sealer, _ := seal.New(seal.NewKey())
	pgDriver := postgres.New(logger)
	t.Cleanup(func() { pgDriver.Close() })
	names, err := store.OpenNames(ctx, "SYVAULT_USERNAMES", "", 25*time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	var d driver.Driver = pgDriver
	if wrap != nil {
		d = wrap(d)
	}
	w, err := workers.New(workers.Config{Store: store, Sealer: sealer, Drivers: map[events.Engine]driver.Driver{events.PostgreSQL: d},
		Targets: proj, Logger: logger, Usernames: names})
	if err != nil {
		t.Fatal(err)
	}
	tg := events.Target{RecordUID: uid, Name: "w", Engine: events.PostgreSQL, Host: "127.0.0.1", Port: 5432, Database: db,
		AdminUsername: "postgres", TLSMode: events.TLSDisable, MaxTTLSeconds: 86400,
		Grants: []events.Grant{{Database: db, Schema: "public", Privileges: []string{"SELECT"}}}}
	if _, err := w.Prepare(ctx, tg, "unused-under-trust", true); err != nil {
		t.Fatal(err)
	}
	tg.SealedAdminPassword = sealer.Seal([]byte("unused-under-trust"), tg.AdminPasswordAAD())
	f := &fixture{srv: srv, store: store, sealer: sealer, w: w, target: tg, driver: pgDriver, pg: pg, names: names, proj: proj}
	f.record(t, events.Event{Type: events.TargetRegistered, ID: uid, Target: &tg, RecordUID: uid}, 0)
	return f
}

// record appends a target event after sequence last and applies it to the projection
// the workers read targets from.
func (f *fixture) record(t *testing.T, e events.Event, last uint64) uint64 {
	t.Helper()
	ctx := context.Background()
	seq, err := f.store.Append(ctx, events.TargetSubject(e.RecordUID), e, last)
	if err != nil {
		t.Fatal(err)
	}
	decoded, _ := events.Decode(e.Encode())
	if err := f.proj.Apply(ctx, decoded, seq); err != nil {
		t.Fatal(err)
	}
	return seq
}

// removeTarget records the target's removal and removes what its users shared, as
// RemoveTarget does in an API process.
func (f *fixture) removeTarget(t *testing.T) {
	t.Helper()
	last, err := f.store.LastSeq(t.Context(), events.TargetSubject(f.target.RecordUID))
	if err != nil {
		t.Fatal(err)
	}
	f.record(t, events.RemoveTarget(f.target.RecordUID, "", time.Now()), last)
	if err := f.w.RemoveTarget(t.Context(), f.target); err != nil {
		t.Fatal(err)
	}
}

// request appends a lease request and returns the lease id and username.
func (f *fixture) request(t *testing.T) (string, string) {
	t.Helper()
	return f.requestAs(t, time.Minute, true)
}

// requestAs is request, with a requester that waits for wait (negative: its deadline has
// passed) and, if answering, answers the workers' "still waiting?" until the test ends.
func (f *fixture) requestAs(t *testing.T, wait time.Duration, answering bool) (string, string) {
	t.Helper()
	return f.requestOn(t, f.target, wait, answering)
}

// requestOn is requestAs with the lease's target snapshot tg.
func (f *fixture) requestOn(t *testing.T, tg events.Target, wait time.Duration, answering bool) (string, string) {
	t.Helper()
	id := uuid.Must(uuid.NewV7()).String()
	user := "vf_tmp_" + fmt.Sprintf("%08x", rand.Uint32())
	now := time.Now()
	f.appendRequest(t, events.LeaseRequest{LeaseID: id, Target: tg, TTLSeconds: 3600, Username: user,
		SealedPassword: f.sealer.Seal([]byte("pw-"+id), []byte(id)), Now: now, Deadline: now.Add(wait)}, answering)
	return id, user
}

// appendRequest appends r's request event, as the API or a forger would, and drops its
// user when the test ends. Answering, a requester answers the workers' "still waiting?"
// until then.
func (f *fixture) appendRequest(t *testing.T, r events.LeaseRequest, answering bool) {
	t.Helper()
	if answering {
		w, err := f.store.Watch(nil, events.WaitingSubject(r.LeaseID))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Stop)
	}
	if _, err := f.store.Append(context.Background(), events.LeaseSubject(r.LeaseID), events.RequestLease(r), 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = f.pg.Exec(context.Background(), "DROP ROLE IF EXISTS "+r.Username) })
}

// active requests a lease and has the workers create it; it returns the lease, active,
// and its username.
func (f *fixture) active(t *testing.T) (events.Lease, string) {
	t.Helper()
	id, user := f.request(t)
	if err := f.deliver(t, id, 0); err != nil {
		t.Fatal(err)
	}
	l, err := f.store.LoadLease(context.Background(), id)
	if err != nil || l.Status != events.StatusActive {
		t.Fatalf("lease = %+v, %v; want active", l, err)
	}
	return l, user
}

// createAsDeadWorker creates the lease's user the way a worker would, as one that then
// died before recording anything.
func (f *fixture) createAsDeadWorker(t *testing.T, id, user string) {
	t.Helper()
	ctx := context.Background()
	l, err := f.store.LoadLease(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.driver.CreateUser(ctx, driver.CreateUserRequest{Conn: driver.Conn{PoolKey: "crash", Host: "127.0.0.1", Port: 5432,
		Database: f.target.Database, Username: "postgres", Password: "x", TLSMode: events.TLSDisable},
		RecordUID: f.target.RecordUID, Username: user, Password: "first-attempt", ExpiresAt: l.ExpiresAt, Grants: f.target.Grants}); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) revoke(t *testing.T, id string) {
	t.Helper()
	ctx := context.Background()
	for {
		l, err := f.store.LoadLease(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if l.Status != events.StatusPending && l.Status != events.StatusActive {
			return
		}
		_, err = f.store.Append(ctx, events.LeaseSubject(id), events.Event{Type: events.LeaseRevoked, ID: id + ".revoked", LeaseID: id}, l.Seq)
		if err == nil {
			return
		}
	}
}

// deliver fetches the n-th event (0-based) of a lease as a fresh delivery and hands it to
// the workers, as a redelivery or another process would.
func (f *fixture) deliver(t *testing.T, id string, n int) error {
	t.Helper()
	ctx := context.Background()
	cons, err := f.srv.MustStream(t, events.EventsStream).OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.LeaseSubject(id)}})
	if err != nil {
		t.Fatal(err)
	}
	var msg jetstream.Msg
	for range n + 1 {
		if msg, err = cons.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	e, err := events.Decode(msg.Data())
	if err != nil {
		t.Fatal(err)
	}
	md, err := msg.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	return f.w.HandleLease(ctx, e, md.Sequence.Stream)
}

func (f *fixture) userExists(t *testing.T, user string) bool {
	t.Helper()
	var n int
	if err := f.pg.QueryRow(context.Background(), "SELECT count(*) FROM pg_roles WHERE rolname = $1", user).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// wantHistory fails the test unless lease id's events are, in order, the types in want
// (space-separated).
func (f *fixture) wantHistory(t *testing.T, id, want string) {
	t.Helper()
	if got := fmt.Sprint(f.history(t, id)); got != "["+want+"]" {
		t.Fatalf("history of %s = %s; want [%s]", id, got, want)
	}
}

func (f *fixture) history(t *testing.T, id string) []events.Type {
	t.Helper()
	evs, _, err := f.store.History(context.Background(), events.LeaseSubject(id))
	if err != nil {
		t.Fatal(err)
	}
	var types []events.Type
	for _, e := range evs {
		types = append(types, e.Type)
	}
	return types
}

func TestWorkers_Idempotency(t *testing.T) {
	f := mustFixture(t)
	ctx := context.Background()

	t.Run("request delivered twice creates one user, activates once", func(t *testing.T) {
		id, user := f.request(t)
		for range 2 {
			if err := f.deliver(t, id, 0); err != nil {
				t.Fatal(err)
			}
		}
		f.wantHistory(t, id, "lease.requested lease.activated")
		if !f.userExists(t, user) {
			t.Fatal("no user")
		}
	})

	t.Run("crash between the SQL and the ack: the redelivery finishes the job", func(t *testing.T) {
		id, user := f.request(t)
		f.createAsDeadWorker(t, id, user)
		if err := f.deliver(t, id, 0); err != nil {
			t.Fatal(err)
		}
		f.wantHistory(t, id, "lease.requested lease.activated")
		if !f.userExists(t, user) {
			t.Fatal("no user")
		}
	})

	t.Run("the whole process dies after the SQL: the late redelivery fails the lease and drops the user", func(t *testing.T) {
		// No API process is left to give up on the lease, and by the time the request is
		// redelivered its requester stopped waiting.
		id, user := f.requestAs(t, -time.Second, false)
		f.createAsDeadWorker(t, id, user)
		if err := f.deliver(t, id, 0); err != nil {
			t.Fatal(err)
		}
		f.wantHistory(t, id, "lease.requested lease.failed")
		if f.userExists(t, user) {
			t.Fatal("the user the dead process created outlived its failed lease")
		}
	})

	t.Run("nobody waits for the lease any more: its user is dropped, not activated", func(t *testing.T) {
		// Within its deadline, but the process that was to answer the requester is gone.
		id, user := f.requestAs(t, time.Minute, false)
		if err := f.deliver(t, id, 0); err != nil {
			t.Fatal(err)
		}
		f.wantHistory(t, id, "lease.requested lease.failed")
		if f.userExists(t, user) {
			t.Fatal("the user of a lease nobody will receive was kept")
		}
	})

	t.Run("a request seen after its revocation creates nothing, ever", func(t *testing.T) {
		id, user := f.request(t)
		f.revoke(t, id)
		for _, n := range []int{0, 1, 0} { // request, revoke, then the request redelivered
			if err := f.deliver(t, id, n); err != nil {
				t.Fatal(err)
			}
			if f.userExists(t, user) {
				t.Fatalf("user created after the lease was revoked (delivery of event %d)", n)
			}
		}
		f.wantHistory(t, id, "lease.requested lease.revoked lease.dropped")
	})

	t.Run("create and revoke racing leave no user", func(t *testing.T) {
		const n = 20
		type lease struct{ id, user string }
		var leases []lease
		for range n {
			id, user := f.request(t)
			leases = append(leases, lease{id, user})
		}
		var wg sync.WaitGroup
		for _, l := range leases {
			wg.Add(2)
			go func() {
				defer wg.Done()
				if err := f.deliver(t, l.id, 0); err != nil {
					t.Error(err)
				}
			}()
			go func() {
				defer wg.Done()
				f.revoke(t, l.id)
			}()
		}
		wg.Wait()
		// Deliver whatever each lease's stream now holds after the request, as the
		// consumer would, and the request once more.
		for _, l := range leases {
			for i := 1; i < len(f.history(t, l.id)); i++ {
				if err := f.deliver(t, l.id, i); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.deliver(t, l.id, 0); err != nil {
				t.Fatal(err)
			}
		}
		for _, l := range leases {
			got, err := f.store.LoadLease(ctx, l.id)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != events.StatusRevoked {
				t.Errorf("lease %s is %s, want revoked (%v)", l.id, got.Status, f.history(t, l.id))
			}
			if f.userExists(t, l.user) {
				t.Errorf("user %s of a revoked lease exists", l.user)
			}
		}
	})
}

// TestWorkers_ExpiredBeforeCreated: a request whose expiry has passed by the time a
// worker gets to it (a short TTL, a create delayed by faults) is not activated: the
// lease fails and no user is left, rather than credentials that reach their requester
// already dead. A chaos run answered such leases 201.
func TestWorkers_ExpiredBeforeCreated(t *testing.T) {
	f := mustFixture(t)
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7()).String()
	w, err := f.store.Watch(nil, events.WaitingSubject(id)) // its requester still waits
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	user := "vf_tmp_" + fmt.Sprintf("%08x", rand.Uint32())
	t.Cleanup(func() { _, _ = f.pg.Exec(context.Background(), "DROP ROLE IF EXISTS "+user) })
	now := time.Now()
	// Requested 5 s ago with a TTL of 2 s; its requester waits a minute more.
	e := events.RequestLease(events.LeaseRequest{LeaseID: id, Target: f.target, TTLSeconds: 2, Username: user,
		SealedPassword: f.sealer.Seal([]byte("pw-"+id), []byte(id)), Now: now.Add(-5 * time.Second), Deadline: now.Add(time.Minute)})
	if _, err := f.store.Append(ctx, events.LeaseSubject(id), e, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.deliver(t, id, 0); err != nil {
		t.Fatal(err)
	}
	f.wantHistory(t, id, "lease.requested lease.failed")
	if f.userExists(t, user) {
		t.Fatal("a user exists for a lease that expired before it was created")
	}
}

// TestWorkers_StaleHistoryIsRetried: the consumer hands a worker an event from one NATS
// server while the lease's history is read from the stream's leader, which may not have
// applied that event yet. A revocation decided on that history saw an active lease, was
// acknowledged and never came back: a chaos run left an expired lease revoking, its user
// in the database, for good. The worker must refuse the event for a retry instead, and
// act on it once a read includes it.
func TestWorkers_StaleHistoryIsRetried(t *testing.T) {
	f := mustFixture(t)
	ctx := context.Background()
	l, user := f.active(t)
	id := l.ID
	// Events at a sequence the history read does not reach: what a leader behind the
	// consumer's server looks like to the worker.
	beyond := l.Seq + 10
	for _, e := range []events.Event{
		{Type: events.LeaseRevoked, ID: id + ".revoked", LeaseID: id, Prev: l.Seq},
		{Type: events.LeaseExpired, ID: id + ".expired", LeaseID: id, Prev: l.Seq, ExpiresAt: l.ExpiresAt},
		{Type: events.LeaseRenewed, ID: id + ".renewed", LeaseID: id, Prev: l.Seq, ExpiresAt: l.ExpiresAt.Add(time.Hour)},
	} {
		if err := f.w.HandleLease(ctx, e, beyond); err == nil {
			t.Errorf("%s beyond the history read was acknowledged", e.Type)
		}
	}
	f.wantHistory(t, id, "lease.requested lease.activated")
	if !f.userExists(t, user) {
		t.Fatal("the user was dropped on a stale read")
	}
	// Once the stream's leader has the revocation, its delivery drops the user.
	f.revoke(t, id)
	if err := f.deliver(t, id, 2); err != nil {
		t.Fatal(err)
	}
	f.wantHistory(t, id, "lease.requested lease.activated lease.revoked lease.dropped")
	if f.userExists(t, user) {
		t.Fatal("the revoked lease's user still exists")
	}
}

// TestWorkers_ExpiryArmedWithTheCreate: the expiry is armed while the user is created,
// so an activated lease is always listed under its expiry second; and a lease listed so
// but not activated (its requester gone) stays failed when that second fires.
func TestWorkers_ExpiryArmedWithTheCreate(t *testing.T) {
	f := mustFixture(t)
	ctx := context.Background()
	second := func(id string) int64 {
		l, err := f.store.LoadLease(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return events.ExpirySecond(l.ExpiresAt)
	}
	listed := func(id string) bool {
		ids, _, err := f.store.ExpiringAt(ctx, second(id))
		if err != nil {
			t.Fatal(err)
		}
		return slices.Contains(ids, id)
	}

	active, _ := f.request(t)
	if err := f.deliver(t, active, 0); err != nil {
		t.Fatal(err)
	}
	f.wantHistory(t, active, "lease.requested lease.activated")
	if !listed(active) {
		t.Fatal("an active lease is not listed under its expiry second")
	}
	// The test fires that second below, an hour early; the active lease, listed under it
	// too, would wait for its time (TestWorkers_AnEarlyScheduleExpiresNothing).
	f.revoke(t, active)

	gone, user := f.requestAs(t, time.Minute, false) // nobody answers "still waiting?"
	if err := f.deliver(t, gone, 0); err != nil {
		t.Fatal(err)
	}
	f.wantHistory(t, gone, "lease.requested lease.failed")
	if f.userExists(t, user) {
		t.Fatal("the user of a lease nobody waited for is left")
	}
	// The failure does not wait for the arming, which may still be on its way.
	for deadline := time.Now().Add(10 * time.Second); !listed(gone); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the failed lease's expiry was not armed during its create (the test checks nothing)")
		}
	}
	if err := f.w.HandleDue(ctx, events.ExpiryDue(time.Unix(second(gone), 0)), 0); err != nil {
		t.Fatal(err)
	}
	f.wantHistory(t, gone, "lease.requested lease.failed")
}

// TestWorkers_RenewalArmsItsNewExpiryFirst: a renewal moves the lease's expiry to a
// later second. That second was armed only once the database took the new expiry, so
// while the renewal kept failing (a target unreachable, an admin refused) the old second
// found the lease renewed and the new one was never armed: the lease outlived its
// recorded expiry with no expiry recorded (on MySQL, which enforces none, its user kept
// working). The new second is armed whatever the database says now.
func TestWorkers_RenewalArmsItsNewExpiryFirst(t *testing.T) {
	f := mustFixture(t)
	ctx := context.Background()
	l, user := f.active(t)
	id := l.ID
	// The renewal's database side fails: here its user was dropped behind SyVault's back.
	if _, err := f.pg.Exec(ctx, "DROP ROLE "+user); err != nil {
		t.Fatal(err)
	}
	e, err := l.Renew("admin", time.Now(), 7200, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := f.store.Append(ctx, events.LeaseSubject(id), e, l.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.w.HandleLease(ctx, e, seq); err == nil {
		t.Fatal("a renewal the database did not take was acknowledged")
	}
	second := events.ExpirySecond(e.ExpiresAt)
	if second == events.ExpirySecond(l.ExpiresAt) {
		t.Fatal("the renewal did not move the expiry second (the test checks nothing)")
	}
	ids, _, err := f.store.ExpiringAt(ctx, second)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ids, id) {
		t.Fatal("a renewal the database did not take left the lease's new expiry second unarmed")
	}
}

// beforeRenewal runs its hook before a renewal's statement is sent: once, unless again
// is set.
type beforeRenewal struct {
	driver.Driver
	hook  func()
	again bool
	sent  int
}

func (d *beforeRenewal) RenewUser(ctx context.Context, req driver.RenewUserRequest) error {
	if h := d.hook; h != nil {
		if !d.again {
			d.hook = nil
		}
		h()
	}
	d.sent++
	return d.Driver.RenewUser(ctx, req)
}

// renewalUnderWay makes a fixture whose driver is stall, an active lease and its user,
// and a renewal of it (to two hours) appended but not yet handled, with its sequence.
func renewalUnderWay(t *testing.T, stall *beforeRenewal) (*fixture, events.Lease, string, events.Event, uint64) {
	t.Helper()
	f := mustFixtureWith(t, func(d driver.Driver) driver.Driver { stall.Driver = d; return stall })
	l, user := f.active(t)
	first, err := l.Renew("admin", time.Now(), 7200, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := f.store.Append(context.Background(), events.LeaseSubject(l.ID), first, l.Seq)
	if err != nil {
		t.Fatal(err)
	}
	return f, l, user, first, seq
}

// Two renewals of one lease handled at once each send the expiry they read: the earlier
// one's statement, sent after the later one's, took the later expiry back, and
// PostgreSQL refused logins before the expiry the lease shows.
func TestWorkers_ARenewalSentLateDoesNotTakeBackALaterOne(t *testing.T) {
	stall := &beforeRenewal{}
	f, l, user, first, firstSeq := renewalUnderWay(t, stall)
	ctx := context.Background()
	renewed, err := f.store.LoadLease(ctx, l.ID)
	if err != nil {
		t.Fatal(err)
	}
	second, err := renewed.Renew("admin", time.Now(), 3*3600, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The first renewal's handler has read the lease; before its statement goes out, the
	// second renewal is made and handled elsewhere.
	stall.hook = func() {
		seq, err := f.store.Append(ctx, events.LeaseSubject(l.ID), second, renewed.Seq)
		if err == nil {
			err = f.w.HandleLease(ctx, second, seq)
		}
		if err != nil {
			t.Error(err)
		}
	}
	if err := f.w.HandleLease(ctx, first, firstSeq); err != nil {
		t.Fatal(err)
	}
	var until time.Time
	if err := f.pg.QueryRow(ctx, "SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1", user).Scan(&until); err != nil {
		t.Fatal(err)
	}
	if !until.Equal(second.ExpiresAt) {
		t.Fatalf("the user is valid until %s; the lease expires at %s (the first renewal's %s)", until.UTC(), second.ExpiresAt, first.ExpiresAt)
	}
}

// A lease renewed again each time its handler sends an expiry keeps that handler, and a
// turn of its target's workers, only for a few sends: then the handler fails, and its
// redelivery, once the renewals stop, sends the latest expiry.
func TestWorkers_ARenewalLoopDoesNotHoldItsHandler(t *testing.T) {
	stall := &beforeRenewal{again: true}
	f, l, user, first, firstSeq := renewalUnderWay(t, stall)
	ctx := context.Background()
	ttl := 7200
	stall.hook = func() { // another client renews again, every time
		_, _, err := f.store.DecideLease(ctx, l.ID, func(l events.Lease) (*events.Event, error) {
			ttl += 60
			e, err := l.Renew("admin", time.Now(), ttl, 24*time.Hour)
			return &e, err
		})
		if err != nil {
			t.Error(err)
		}
	}
	if err := f.w.HandleLease(ctx, first, firstSeq); err == nil {
		t.Fatal("a handler kept sending while its lease was renewed again and again")
	}
	if stall.sent > 5 {
		t.Fatalf("the handler sent %d expiries before it gave up", stall.sent)
	}
	stall.hook = nil // the renewals stop; the redelivery comes
	if err := f.w.HandleLease(ctx, first, firstSeq); err != nil {
		t.Fatal(err)
	}
	latest, err := f.store.LoadLease(ctx, l.ID)
	if err != nil {
		t.Fatal(err)
	}
	var until time.Time
	if err := f.pg.QueryRow(ctx, "SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1", user).Scan(&until); err != nil {
		t.Fatal(err)
	}
	if !until.Equal(latest.ExpiresAt) {
		t.Fatalf("the user is valid until %s; the lease expires at %s", until.UTC(), latest.ExpiresAt)
	}
}

// TestWorkers_AnEarlyScheduleExpiresNothing: an expiry second's schedule fires on the
// NATS server's clock; a server whose clock ran ahead of the workers' fired it before the
// leases listed under it were due, and they were expired, their users dropped, early.
// The expiry waits for its time by the worker's own clock now: the second comes back.
func TestWorkers_AnEarlyScheduleExpiresNothing(t *testing.T) {
	f := mustFixture(t)
	ctx := context.Background()
	l, user := f.active(t) // expires in an hour, listed under its second
	if err := f.w.HandleDue(ctx, events.ExpiryDue(time.Unix(events.ExpirySecond(l.ExpiresAt), 0)), 0); err == nil {
		t.Fatal("a second fired an hour early was acknowledged")
	}
	f.wantHistory(t, l.ID, "lease.requested lease.activated")
	if !f.userExists(t, user) {
		t.Fatal("the lease's user was dropped an hour before its expiry")
	}
}

// TestWorkers_ReplayedRequestSparesANameTakenSince: a dropped lease's username is
// forgotten, so a new lease may draw it; a request of the old lease delivered again
// afterwards (a crash before its ack, a consumer recreated) must not drop the new lease's
// user, as it would drop a user the old lease left behind.
func TestWorkers_ReplayedRequestSparesANameTakenSince(t *testing.T) {
	ctx := context.Background()
	f := mustFixture(t)
	id, user := f.request(t)
	if ok, err := f.names.Reserve(ctx, user, []byte(id), 0); err != nil || !ok {
		t.Fatal(ok, err)
	}
	for _, n := range []int{0, 2} { // the request, then (after the revocation) the revocation
		if n == 2 {
			f.revoke(t, id)
		}
		if err := f.deliver(t, id, n); err != nil {
			t.Fatal(err)
		}
	}
	f.wantHistory(t, id, "lease.requested lease.activated lease.revoked lease.dropped")
	if _, held, err := f.names.Holder(ctx, user); err != nil || held {
		t.Fatalf("the dropped lease's name is still held (%v)", err)
	}

	// Another lease draws the name and has its user.
	other := uuid.Must(uuid.NewV7()).String()
	if ok, err := f.names.Reserve(ctx, user, []byte(other), 0); err != nil || !ok {
		t.Fatal(ok, err)
	}
	f.createAsDeadWorker(t, id, user)

	if err := f.deliver(t, id, 0); err != nil {
		t.Fatal(err)
	}
	if !f.userExists(t, user) {
		t.Fatal("the old lease's replayed request dropped the user of the lease that holds the name now")
	}

	// The name back with nobody: the replay makes sure the old lease left no user.
	if err := f.names.Forget(ctx, user); err != nil {
		t.Fatal(err)
	}
	if err := f.deliver(t, id, 0); err != nil {
		t.Fatal(err)
	}
	if f.userExists(t, user) {
		t.Fatal("a replayed request of an ended lease left its user in place")
	}
}

// TestWorkers_ARequestSeenAfterItsTargetsRemovalCreatesNothing: a lease requested just
// before its target was removed, and seen by a worker after, had its user created with
// the target's snapshot, which made the target's group again: an active lease, and then
// a group, under a record that no longer exists. It now fails, creating nothing.
func TestWorkers_ARequestSeenAfterItsTargetsRemovalCreatesNothing(t *testing.T) {
	f := mustFixture(t)
	group := "syvault_" + f.target.RecordUID
	f.removeTarget(t)
	if f.userExists(t, group) {
		t.Fatal("the removal left the group")
	}
	id, user := f.request(t)
	if err := f.deliver(t, id, 0); err != nil {
		t.Fatal(err)
	}
	f.wantHistory(t, id, "lease.requested lease.failed")
	if f.userExists(t, user) || f.userExists(t, group) {
		t.Fatal("a lease requested before its target's removal made its user, or the target's group, after it")
	}
}

// A create whose process stopped before its check for the target's removal may have made
// the target's group again after the removal had dropped it. The request's redelivery,
// which then fails the lease without creating (the target seen removed, or its requester
// gone), drops the user and removes the group again: nothing else would. A live target's
// group stays.
func TestWorkers_AnEarlyExitAfterADeadCreateKeepsNothingOfARemovedTarget(t *testing.T) {
	for _, tc := range []struct {
		name    string
		wait    time.Duration
		removed bool
	}{{"target seen removed", time.Minute, true}, {"requester gone", -time.Second, true}, {"requester gone, target live", -time.Second, false}} {
		t.Run(tc.name, func(t *testing.T) {
			f := mustFixture(t)
			group := "syvault_" + f.target.RecordUID
			id, user := f.requestAs(t, tc.wait, true)
			if tc.removed {
				f.removeTarget(t) // and then the dead worker's create
			}
			f.createAsDeadWorker(t, id, user)
			if !f.userExists(t, group) {
				t.Fatal("the dead worker's create did not make the group again")
			}
			if err := f.deliver(t, id, 0); err != nil {
				t.Fatal(err)
			}
			f.wantHistory(t, id, "lease.requested lease.failed")
			if f.userExists(t, user) || f.userExists(t, group) != !tc.removed {
				t.Fatalf("after the redelivery: user left %v, group left %v; want no user, the group only if the target is live",
					f.userExists(t, user), f.userExists(t, group))
			}
		})
	}
}

// beforeCreate runs its hook once, before the first user's create is sent.
type beforeCreate struct {
	driver.Driver
	hook func()
}

func (d *beforeCreate) CreateUser(ctx context.Context, req driver.CreateUserRequest) error {
	if h := d.hook; h != nil {
		d.hook = nil
		h()
	}
	return d.Driver.CreateUser(ctx, req)
}

// A target removed (its group dropped) while a lease's user was being made, after the
// worker had found the target: the create makes the group again, and the lease would be
// active on a removed target, its user logging in with the removed target's grants until
// it expired, the group left behind for good. The worker checks for the removal after
// the create: the lease is revoked (its user then dropped) and the group removed again;
// a lease nobody waits for any more fails, and the group goes too.
func TestWorkers_ATargetRemovedWhileAUserIsMadeKeepsNothing(t *testing.T) {
	for _, answering := range []bool{true, false} {
		t.Run(fmt.Sprintf("requester waiting %v", answering), func(t *testing.T) {
			stall := &beforeCreate{}
			f := mustFixtureWith(t, func(d driver.Driver) driver.Driver { stall.Driver = d; return stall })
			group := "syvault_" + f.target.RecordUID
			stall.hook = func() {
				f.removeTarget(t) // meanwhile
			}
			id, user := f.requestAs(t, time.Minute, answering)
			if err := f.deliver(t, id, 0); err != nil {
				t.Fatal(err)
			}
			if f.userExists(t, group) {
				t.Fatal("the removed target's group was made again and left behind")
			}
			if !answering {
				f.wantHistory(t, id, "lease.requested lease.failed")
			} else {
				f.wantHistory(t, id, "lease.requested lease.activated lease.revoked")
				if err := f.deliver(t, id, 2); err != nil {
					t.Fatal(err)
				}
				f.wantHistory(t, id, "lease.requested lease.activated lease.revoked lease.dropped")
			}
			if f.userExists(t, user) {
				t.Fatal("the lease's user outlived its target's removal")
			}
		})
	}
}

// The worker's check after a create removes what the create made again of a removed
// target; a database that does not answer then (within an hour of the removal) has the
// request delivered again, whose check removes it once the database answers.
func TestWorkers_ACreatesSetupRemovalIsRetriedWhileItsDatabaseDoesNotAnswer(t *testing.T) {
	stall := &beforeCreate{}
	f := mustFixtureWith(t, func(d driver.Driver) driver.Driver { stall.Driver = d; return stall })
	group := "syvault_" + f.target.RecordUID
	var proxy *tcpproxy.Proxy
	stall.hook = func() {
		// Meanwhile the target is moved behind a proxy and removed; the proxy goes down.
		proxy, _ = f.behindProxy(t, false)
		f.removeTarget(t)
		proxy.Down()
	}
	id, user := f.requestAs(t, time.Minute, false)
	if err := f.deliver(t, id, 0); events.ErrorCode(err) != events.ETargetUnavailable {
		t.Fatalf("the request, the removed target's database down: %v; want it delivered again for the setup", err)
	}
	if !f.userExists(t, group) {
		t.Fatal("the group made again was removed with the database down")
	}
	if err := proxy.Up(); err != nil {
		t.Fatal(err)
	}
	if err := f.deliver(t, id, 0); err != nil {
		t.Fatal(err)
	}
	f.wantHistory(t, id, "lease.requested lease.failed")
	if f.userExists(t, group) || f.userExists(t, user) {
		t.Fatalf("once the database answers: group left %v, user left %v; want neither", f.userExists(t, group), f.userExists(t, user))
	}
}

// A lease activated while its target was being removed, which the removal's own request
// never revoked (its process stopped, or its read side lagged past the request's time),
// is revoked from the stream: the workers follow every removal through once the read side
// has applied it, retried until done, and remove the setup its create made again. A
// removal written on another target's subject, and listed leases that are not the
// target's (a history SyVault did not write, none, another target's), change nothing and
// hold nothing up.
func TestWorkers_ARemovalIsFollowedThroughFromTheStream(t *testing.T) {
	f := mustFixture(t)
	ctx := t.Context()
	uid := f.target.RecordUID
	group := "syvault_" + uid
	// Listed first: a lease whose history names another lease.
	forged, other := uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String()
	now := time.Now()
	if _, err := f.store.Append(ctx, events.LeaseSubject(forged), events.RequestLease(events.LeaseRequest{LeaseID: other, Target: f.target,
		TTLSeconds: 60, Username: "vf_tmp_forged", Now: now, Deadline: now.Add(time.Minute)}), 0); err != nil {
		t.Fatal(err)
	}
	// And listed too: a lease with no history, and another target's lease.
	elsewhereLease := uuid.Must(uuid.NewV7()).String()
	otherTarget := f.target
	otherTarget.RecordUID = "Wanothertgt1"
	if _, err := f.store.Append(ctx, events.LeaseSubject(elsewhereLease), events.RequestLease(events.LeaseRequest{LeaseID: elsewhereLease,
		Target: otherTarget, TTLSeconds: 60, Username: "vf_tmp_another", Now: now, Deadline: now.Add(time.Minute)}), 0); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{forged, uuid.Must(uuid.NewV7()).String(), elsewhereLease} {
		if _, err := f.store.IndexAdd(ctx, uid, "", id); err != nil {
			t.Fatal(err)
		}
	}
	l, user := f.active(t)
	last, err := f.store.LastSeq(ctx, events.TargetSubject(uid))
	if err != nil {
		t.Fatal(err)
	}
	misplaced := events.RemoveTarget(uid, "", time.Now())
	misplaced.ID = "misplaced" // not the real one's, which NATS would take for a copy
	elsewhere, err := f.store.Append(ctx, events.TargetSubject("Wnotthisone1"), misplaced, 0)
	if err != nil {
		t.Fatal(err)
	}
	removal := events.RemoveTarget(uid, "", time.Now())
	seq := f.record(t, removal, last)
	removal, _ = events.Decode(removal.Encode())

	// The projector has not run: the index may not list every lease active at the
	// removal yet, so the removal is not passed over (it is delivered again).
	short, cancel := context.WithTimeout(ctx, time.Second)
	err = f.w.HandleTarget(short, removal, seq)
	cancel()
	if events.ErrorCode(err) != events.ETimeout {
		t.Fatalf("a removal before the read side had applied it: %v, want it delivered again once the read side is waited for", err)
	}
	if err := f.w.HandleTarget(ctx, misplaced, elsewhere); err != nil {
		t.Fatalf("a removal on another target's subject: %v, want it passed over", err)
	}
	f.wantHistory(t, l.ID, "lease.requested lease.activated")

	// The lease consumer starts after the removal: whatever ends the lease from here on
	// is the removal's follow-through.
	if err := f.store.RestartConsumer(ctx, workers.LeaseConsumer, seq+1, events.LeaseSubjects); err != nil {
		t.Fatal(err)
	}
	run, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, fn := range []func(context.Context) error{f.proj.Run, f.w.Run} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = fn(run) }()
	}
	t.Cleanup(func() { stop(); wg.Wait() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		h := fmt.Sprint(f.history(t, l.ID))
		if h == "[lease.requested lease.activated lease.revoked lease.dropped]" && !f.userExists(t, user) && !f.userExists(t, group) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the removal was followed through: history %s, user left %v, group left %v; want the lease revoked and dropped, nothing left",
				h, f.userExists(t, user), f.userExists(t, group))
		}
	}
	for _, id := range []string{forged, elsewhereLease} {
		if n := len(f.history(t, id)); n != 1 {
			t.Fatalf("lease %s, listed under the removed target but not its own, has %d events, want its one", id, n)
		}
	}
}

// A removal whose API process stopped once it had recorded it, before it removed what the
// target's users shared, leaves nothing: the workers' follow-through removes the group
// too, with the settings the target was removed with. One followed through before
// (replayed to a consumer restarted by rebuild-projections, at or below what the consumer
// before had handled; or, to one made anew by a store of an earlier version, recorded
// well before it) does not reach the target's server again: the setup was removed when
// the removal was new, and the server is likely gone. A lease revoked before the removal,
// its drop still to come, does not hold the removal up: its revoker may have read the
// target before the removal, and would remove nothing.
func TestWorkers_ARemovalsSetupIsRemovedFromTheStream(t *testing.T) {
	for _, tc := range []struct {
		name    string
		age     time.Duration
		revoked bool // a lease revoked before the removal, not dropped yet
		handled int  // target events the consumer before handled (-1: made anew)
		left    bool
	}{
		{"recorded now", 0, false, -1, false},
		{"recorded two hours before its consumer was made", 2 * time.Hour, false, -1, true},
		{"a revoked lease not dropped yet", 0, true, -1, false},
		{"handled before a rebuild", 0, false, 2, true},
		{"recorded two hours before a rebuild, not handled", 2 * time.Hour, false, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := mustFixture(t)
			ctx := t.Context()
			uid := f.target.RecordUID
			group := "syvault_" + uid
			if !f.userExists(t, group) {
				t.Fatal("the registered target has no group")
			}
			if tc.revoked {
				l, _ := f.active(t)
				f.revoke(t, l.ID)
			}
			last, err := f.store.LastSeq(ctx, events.TargetSubject(uid))
			if err != nil {
				t.Fatal(err)
			}
			removal, seq := f.removalToFollow(t, last, tc.age, tc.handled)
			if err := f.follow(t, removal, seq); err != nil {
				t.Fatalf("the removal's follow-through: %v", err)
			}
			if left := f.userExists(t, group); left != tc.left {
				t.Fatalf("after the follow-through the group is left: %v, want %v", left, tc.left)
			}
		})
	}
}

// A removal whose setup's removal its database does not answer (down, paused, as around
// a server's maintenance) is followed through again, with the consumer's backoff, until
// the database answers, for an hour after the removal was recorded. Past that, the server
// is taken for gone: the failure is logged, and the removal done. A failure that is not
// the database's silence (a password that cannot be opened) is not retried either.
func TestWorkers_ARemovalsSetupIsRemovedOnceItsDatabaseAnswers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		age     time.Duration
		left    bool
		sealBad bool // its admin password sealed for another server
	}{{"recorded now", 0, false, false}, {"recorded two hours ago", 2 * time.Hour, true, false},
		{"its admin password unopenable", 0, true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := mustFixture(t)
			group := "syvault_" + f.target.RecordUID
			proxy, last := f.behindProxy(t, tc.sealBad)
			// Followed through by a consumer restarted in place of one that had handled
			// the registration and the update, not the removal: no replay, whatever its age.
			removal, seq := f.removalToFollow(t, last, tc.age, 2)
			proxy.Down()
			err := f.follow(t, removal, seq)
			if tc.left {
				if err != nil || !f.userExists(t, group) {
					t.Fatalf("with the database down: %v, group left %v; want the removal done, the group left", err, f.userExists(t, group))
				}
				return
			}
			if events.ErrorCode(err) != events.ETargetUnavailable || !f.userExists(t, group) {
				t.Fatalf("with the database down: %v, group left %v; want the removal followed through again", err, f.userExists(t, group))
			}
			if err := proxy.Up(); err != nil {
				t.Fatal(err)
			}
			if err := f.follow(t, removal, seq); err != nil || f.userExists(t, group) {
				t.Fatalf("once the database answers: %v, group left %v; want it removed", err, f.userExists(t, group))
			}
		})
	}
}

// afterRemoval counts the RemoveTarget calls and hands on, once, the outcome of the
// first (when first is set).
type afterRemoval struct {
	driver.Driver
	first chan error
	n     atomic.Int32
}

func (d *afterRemoval) RemoveTarget(ctx context.Context, req driver.RemoveTargetRequest) error {
	d.n.Add(1)
	err := d.Driver.RemoveTarget(ctx, req)
	select {
	case d.first <- err:
	default:
	}
	return err
}

// A registration whose record could not be stored undoes what its verification set up;
// nothing records such a target, so nothing tries the undo again. A chaos run found one
// undo cut mid-statement: the group, with the target's grants, was left for good,
// though the database answered a moment later. The undo now tries again, for up to 10 s,
// while the database does not answer.
func TestWorkers_AnUndoTriesAgainWhileItsDatabaseDoesNotAnswer(t *testing.T) {
	seen := &afterRemoval{first: make(chan error, 1)}
	f := mustFixtureWith(t, func(d driver.Driver) driver.Driver { seen.Driver = d; return seen })
	group := "syvault_" + f.target.RecordUID
	proxy := localProxy(t)
	unrecorded := f.target
	unrecorded.Port = proxy.Port()
	proxy.Down()
	undone := make(chan error, 1)
	go func() { undone <- f.w.Unprepare(context.Background(), unrecorded, "unused-under-trust") }()
	select {
	case err := <-seen.first:
		if events.ErrorCode(err) != events.ETargetUnavailable {
			t.Fatalf("the first attempt, the database down: %v; want it unavailable", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no attempt to undo the registration")
	}
	if err := proxy.Up(); err != nil {
		t.Fatal(err)
	}
	if err := <-undone; err != nil || f.userExists(t, group) {
		t.Fatalf("the undo once the database answers: %v, group left %v; want it removed", err, f.userExists(t, group))
	}
}

// The undo's retries are bounded: a database that stays away has the registration
// answered with its failure, the group left (README, "Preparing a target", says how to
// remove it), not held until the operation's deadline, nor tried once only.
func TestWorkers_AnUndoGivesUpOnADatabaseThatStaysAway(t *testing.T) {
	seen := &afterRemoval{}
	f := mustFixtureWith(t, func(d driver.Driver) driver.Driver { seen.Driver = d; return seen })
	workers.SetUndoRetryFor(t, time.Second)
	proxy := localProxy(t)
	proxy.Down()
	unrecorded := f.target
	unrecorded.Port = proxy.Port()
	err := f.w.Unprepare(t.Context(), unrecorded, "unused-under-trust")
	if events.ErrorCode(err) != events.ETargetUnavailable || seen.n.Load() < 2 {
		t.Fatalf("the undo, the database away: %v after %d attempts; want it unavailable, tried again", err, seen.n.Load())
	}
	if !f.userExists(t, "syvault_"+f.target.RecordUID) {
		t.Fatal("the group went though the database never answered")
	}
}

// After a cut, the cut session's statement may still hold, for a moment, what the undo's
// next attempt changes; any session may hold it for longer. The undo waited 2 s for the
// lock, then gave up for good, leaving the group with its grants. It now tries again
// while the lock is held, within its 10 s.
func TestWorkers_AnUndoTriesAgainWhileAnotherSessionHoldsItsLock(t *testing.T) {
	seen := &afterRemoval{first: make(chan error, 1)}
	f := mustFixtureWith(t, func(d driver.Driver) driver.Driver { seen.Driver = d; return seen })
	group := "syvault_" + f.target.RecordUID
	ctx := t.Context()
	holder, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/"+f.target.Database+"?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Close(context.Background()) })
	// An open change of the schema's catalog row, which the undo's REVOKE changes too.
	if _, err := holder.Exec(ctx, "BEGIN; GRANT USAGE ON SCHEMA public TO postgres"); err != nil {
		t.Fatal(err)
	}
	undone := make(chan error, 1)
	go func() { undone <- f.w.Unprepare(context.Background(), f.target, "unused-under-trust") }()
	select {
	case err := <-seen.first:
		if events.ErrorCode(err) != events.ETargetUnavailable {
			t.Fatalf("the first attempt, the lock held: %v; want the target taken as not answering", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no attempt to undo the registration")
	}
	if _, err := holder.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := <-undone; err != nil || f.userExists(t, group) {
		t.Fatalf("the undo once the lock is let go: %v, group left %v; want it removed", err, f.userExists(t, group))
	}
}

// localProxy is a proxy to the local PostgreSQL, closed when the test ends.
func localProxy(t *testing.T) *tcpproxy.Proxy {
	t.Helper()
	proxy, err := tcpproxy.Start("127.0.0.1:5432")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	return proxy
}

// behindProxy records the target updated to reach its database through a proxy (its
// admin password sealed for the new address, or, sealBad, left sealed for the old one),
// and returns the proxy and the update's sequence.
func (f *fixture) behindProxy(t *testing.T, sealBad bool) (*tcpproxy.Proxy, uint64) {
	t.Helper()
	proxy := localProxy(t)
	moved := f.target
	moved.Port = proxy.Port()
	moved.SealedAdminPassword = f.sealer.Seal([]byte("unused-under-trust"), moved.AdminPasswordAAD())
	if sealBad {
		moved.SealedAdminPassword = f.target.SealedAdminPassword
	}
	last, err := f.store.LastSeq(t.Context(), events.TargetSubject(f.target.RecordUID))
	if err != nil {
		t.Fatal(err)
	}
	return proxy, f.record(t, events.UpdateTarget(moved, "", last, time.Now()), last)
}

// removalToFollow records the target's removal, age old, after its event last, and
// readies its follow-through: the removals consumer restarted in place of one that had
// handled the first handled target events (made anew when handled < 0), the projector
// running until the test ends. It returns the removal as delivered, and its sequence.
func (f *fixture) removalToFollow(t *testing.T, last uint64, age time.Duration, handled int) (events.Event, uint64) {
	t.Helper()
	ctx := t.Context()
	uid := f.target.RecordUID
	removal := events.RemoveTarget(uid, "", time.Now().Add(-age))
	seq, err := f.store.Append(ctx, events.TargetSubject(uid), removal, last)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.RestartConsumer(ctx, workers.RemovalConsumer, 1, events.TargetSubjects); err != nil {
		t.Fatal(err)
	}
	if handled >= 0 {
		f.ackRemovals(t, handled)
		if err := f.store.RestartConsumer(ctx, workers.RemovalConsumer, 1, events.TargetSubjects); err != nil {
			t.Fatal(err)
		}
	}
	run, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.proj.Run(run) }()
	t.Cleanup(func() { stop(); <-done })
	removal, _ = events.Decode(removal.Encode())
	return removal, seq
}

// follow hands the removal at seq to the workers' follow-through until it is past the
// wait for the read side, and returns what it then answers.
func (f *fixture) follow(t *testing.T, removal events.Event, seq uint64) error {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		err := f.w.HandleTarget(t.Context(), removal, seq)
		if events.ErrorCode(err) != events.ETimeout {
			return err
		}
		if time.Now().After(deadline) {
			t.Fatalf("the removal's follow-through still waits for the read side: %v", err)
		}
	}
}

// ackRemovals has the removals consumer deliver and acknowledge its first n events, as a
// process following them through does.
func (f *fixture) ackRemovals(t *testing.T, n int) {
	t.Helper()
	cons, err := f.srv.MustStream(t, events.EventsStream).Consumer(t.Context(), workers.RemovalConsumer)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		if err := m.DoubleAck(t.Context()); err != nil {
			t.Fatal(err)
		}
		got++
	}
	if got != n {
		t.Fatalf("the removals consumer delivered %d events, want %d", got, n)
	}
}

// A revocation recorded for its target's removal says so, and its revoker removes the
// target's shared setup again after the drop even while its read side still shows the
// target (a copy behind on a cluster): the stream's leader confirms the removal. One that
// says so of a target that is not removed (whoever can write to NATS could write it)
// removes nothing.
func TestWorkers_ARevocationForARemovalRemovesTheSetupWhateverTheReadSideShows(t *testing.T) {
	f := mustFixture(t)
	ctx := t.Context()
	uid := f.target.RecordUID
	group := "syvault_" + uid
	forged, _ := f.active(t)
	l, user := f.active(t)
	if _, _, err := f.store.DecideLease(ctx, forged.ID, func(l events.Lease) (*events.Event, error) {
		return l.RevokeForRemoval("", time.Now())
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.deliver(t, forged.ID, 2); err != nil {
		t.Fatal(err)
	}
	if !f.userExists(t, group) {
		t.Fatal("a revocation saying its target was removed, of a target that is not, removed the target's group")
	}
	// Recorded on the stream, not applied to the read side the workers look at.
	last, err := f.store.LastSeq(ctx, events.TargetSubject(uid))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Append(ctx, events.TargetSubject(uid), events.RemoveTarget(uid, "", time.Now()), last); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.store.RevokeForRemoval(ctx, l.ID, uid, ""); err != nil {
		t.Fatal(err)
	}
	evs, _, err := f.store.History(ctx, events.LeaseSubject(l.ID))
	if err != nil {
		t.Fatal(err)
	}
	if last := evs[len(evs)-1]; last.Reason != events.ReasonTargetRemoved {
		t.Fatalf("the revocation's event: %+v; want it to say the target was removed", last)
	}
	if err := f.deliver(t, l.ID, 2); err != nil {
		t.Fatal(err)
	}
	f.wantHistory(t, l.ID, "lease.requested lease.activated lease.revoked lease.dropped")
	if f.userExists(t, user) || f.userExists(t, group) {
		t.Fatalf("after the drop: user left %v, group left %v; want neither", f.userExists(t, user), f.userExists(t, group))
	}
}

// The revoker of a lease revoked for its target's removal removes the target's setup
// again after the drop (the lease's create may have made it again). That removal was
// tried once and its failure logged: a connection cut at that moment (as the chaos run's
// faults cut them) left the group for good, as the removal's follow-through had been
// acknowledged already. A database that does not answer now has the revocation
// delivered again, for the setup alone: the drop is recorded at once. So for a lease
// revoked otherwise whose revoker finds the target removed (its drop may make the group
// again): the first draft retried only leases revoked for the removal.
func TestWorkers_ARevokersSetupRemovalIsRetriedWhileItsDatabaseDoesNotAnswer(t *testing.T) {
	for _, forRemoval := range []bool{true, false} {
		t.Run(fmt.Sprintf("revoked for the removal %v", forRemoval), func(t *testing.T) {
			f := mustFixture(t)
			ctx := t.Context()
			uid := f.target.RecordUID
			group := "syvault_" + uid
			l, user := f.active(t)
			// The lease's user is dropped where it was made; the setup is removed with the
			// settings the target was removed with, which reach the database through the proxy.
			proxy, last := f.behindProxy(t, false)
			if forRemoval {
				if _, err := f.store.Append(ctx, events.TargetSubject(uid), events.RemoveTarget(uid, "", time.Now()), last); err != nil {
					t.Fatal(err)
				}
				if _, _, err := f.store.RevokeForRemoval(ctx, l.ID, uid, ""); err != nil {
					t.Fatal(err)
				}
			} else {
				// Revoked by its client; the read side shows the target removed.
				f.record(t, events.RemoveTarget(uid, "", time.Now()), last)
				if _, _, err := f.store.DecideLease(ctx, l.ID, func(l events.Lease) (*events.Event, error) { return l.Revoke("", time.Now()) }); err != nil {
					t.Fatal(err)
				}
			}
			proxy.Down()
			if err := f.deliver(t, l.ID, 2); events.ErrorCode(err) != events.ETargetUnavailable {
				t.Fatalf("the revocation with the setup's database down: %v; want it delivered again for the setup", err)
			}
			f.wantHistory(t, l.ID, "lease.requested lease.activated lease.revoked lease.dropped")
			if f.userExists(t, user) || !f.userExists(t, group) {
				t.Fatalf("with the database down: user left %v, group left %v; want the user dropped, the group there", f.userExists(t, user), f.userExists(t, group))
			}
			if err := proxy.Up(); err != nil {
				t.Fatal(err)
			}
			if err := f.deliver(t, l.ID, 2); err != nil {
				t.Fatal(err)
			}
			f.wantHistory(t, l.ID, "lease.requested lease.activated lease.revoked lease.dropped")
			if f.userExists(t, group) {
				t.Fatal("once the database answers, the removed target's group is left")
			}
		})
	}
}

// A request without a lease in it (written by whoever can write to NATS) makes no lease:
// the workers pass over it, in every process it is delivered to, rather than fail on
// what it lacks.
func TestWorkers_ARequestWithoutALeaseIsPassedOver(t *testing.T) {
	f := mustFixture(t)
	id := uuid.Must(uuid.NewV7()).String()
	e := events.RequestLease(events.LeaseRequest{LeaseID: id, Target: f.target, TTLSeconds: 60, Username: "vf_tmp_none", Now: time.Now(), Deadline: time.Now().Add(time.Minute)})
	e.Lease = nil
	if _, err := f.store.Append(t.Context(), events.LeaseSubject(id), e, 0); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := f.deliver(t, id, 0); err != nil {
			t.Fatalf("a request without a lease: %v", err)
		}
	}
	f.wantHistory(t, id, "lease.requested")
}

// TestWorkers_ReachableTellsAGoneServerFromNoAnswer: a forced removal gives a server's
// leases up without an attempt each only on its word that the server is gone: a refusal
// says so; a listening server does not; a probe cut short says nothing.
func TestWorkers_ReachableTellsAGoneServerFromNoAnswer(t *testing.T) {
	f := mustFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	on := events.Lease{ID: "L", Spec: &events.LeaseSpec{Target: events.Target{Host: "127.0.0.1", Port: port}}}
	if up, err := f.w.Reachable(t.Context(), on); !up || err != nil {
		t.Fatalf("a listening server: %v, %v; want reachable", up, err)
	}
	ln.Close()
	if up, err := f.w.Reachable(t.Context(), on); up || err != nil {
		t.Fatalf("a server refusing: %v, %v; want gone", up, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := f.w.Reachable(ctx, on); err == nil {
		t.Fatal("a probe cut short answered")
	}
}
