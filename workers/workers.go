// Package workers turns lease events into database work: the provisioner creates users,
// the revoker drops them, the renewer moves their expiry and the expirer turns fired
// schedules into expiries. Each runs on a durable JetStream consumer that any number of
// processes share, and each step is idempotent, so redelivery, duplicates, crashes
// between the SQL and the ack, and races between processes all end in one outcome.
package workers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/internal/seal"
	"github.com/syvault/syvault/workers/driver"
)

// Consumer names.
const (
	LeaseConsumer  = "workers"
	ExpiryConsumer = "expirer"
	// RemovalConsumer follows each target's removal through (see handleTarget).
	RemovalConsumer = "removals"
)

// ReadSide is what the workers read of the projections: *projections.Projections.
type ReadSide interface {
	// Target returns a target's current registration (ENotFound once removed).
	Target(ctx context.Context, recordUID string) (events.Target, error)
	// WaitApplied waits until every event up to stream sequence seq is applied.
	WaitApplied(ctx context.Context, seq uint64) error
}

// Config wires the workers.
type Config struct {
	Store   *jsstore.Store
	Sealer  *seal.Sealer
	Drivers map[events.Engine]driver.Driver
	Targets ReadSide
	Logger  *slog.Logger
	// Concurrency bounds the lease operations one process runs or holds at once,
	// across targets; each target gets at most a few of them running and a bounded
	// queue (see gate.go). Default 1024.
	Concurrency int
	// OpTimeout bounds one database operation. Default 30 s.
	OpTimeout time.Duration
	// MaxBackoff caps the delay between retries of a failed revocation. Default 30 s.
	MaxBackoff time.Duration
	// AckWait is how long a process may hold a lease event before it is redelivered to
	// another, i.e. how soon work of a crashed process resumes. Default 2 minutes.
	AckWait time.Duration
	// Observer is told about revocations and expiries, for metrics. Optional.
	Observer Observer
	// Usernames, when set, is where lease usernames are reserved: a name is forgotten
	// once its lease's user is dropped, so the reservations follow the leases alive
	// rather than every lease of the last 25 hours. Optional.
	Usernames Usernames
}

// Usernames tells who holds a lease username and frees one for good: *jsstore.Names.
type Usernames interface {
	Holder(ctx context.Context, name string) (jsstore.Holding, bool, error)
	Forget(ctx context.Context, name string) error
}

// Observer records what the workers did. Implementations must be safe for concurrent use
// and must not block.
type Observer interface {
	// RevocationFailed: an attempt to drop a lease's user failed; it will be retried.
	RevocationFailed(leaseID string)
	// RevocationDone: the lease's user is dropped (after any number of attempts), or the
	// lease ended otherwise (its drop given up, or recorded by another process).
	RevocationDone(leaseID string)
	// Expired: a lease's expiry was recorded lag after its expires_at.
	Expired(lag time.Duration)
	// DriverCall: one database operation (op) on an engine took took and ended with
	// code ("" for success).
	DriverCall(engine events.Engine, op string, took time.Duration, code events.Code)
}

type nopObserver struct{}

func (nopObserver) RevocationFailed(string)                                      {}
func (nopObserver) RevocationDone(string)                                        {}
func (nopObserver) Expired(time.Duration)                                        {}
func (nopObserver) DriverCall(events.Engine, string, time.Duration, events.Code) {}

// Workers runs the lease and expiry consumers. It is safe for concurrent use.
type Workers struct {
	cfg Config
	log *slog.Logger
	// drivers are cfg.Drivers, each wrapped once to scrub secrets and record metrics.
	drivers map[events.Engine]instrumented
	// gates bound each target's share of the work.
	gates gates
	// origins checks passwords sealed before the binding.
	origins *Origins
}

// New returns Workers; Run starts them.
func New(cfg Config) (*Workers, error) {
	if cfg.Store == nil || cfg.Sealer == nil || cfg.Targets == nil || len(cfg.Drivers) == 0 {
		return nil, errors.New("workers.New: Store, Sealer, Targets and Drivers are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = defaultConcurrency
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 2 * time.Minute
	}
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = min(30*time.Second, cfg.AckWait/2)
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	drivers := make(map[events.Engine]instrumented, len(cfg.Drivers))
	for e, d := range cfg.Drivers {
		drivers[e] = instrumented{d: d, engine: e, obs: cfg.Observer}
	}
	return &Workers{cfg: cfg, log: cfg.Logger.With("component", "workers"), drivers: drivers, origins: NewOrigins(cfg.Store)}, nil
}

// Run consumes lease events, fired schedules and target removals until ctx ends, then
// lets the operations in flight finish.
func (w *Workers) Run(ctx context.Context) error {
	errc := make(chan error, 3)
	go func() {
		errc <- w.cfg.Store.Consume(ctx, jsstore.ConsumeConfig{
			Stream: events.EventsStream, Durable: LeaseConsumer, Filters: []string{events.LeaseSubjects},
			Concurrency: w.cfg.Concurrency, MaxBackoff: w.cfg.MaxBackoff, AckWait: w.cfg.AckWait, Logger: w.log,
		}, w.handleLease)
	}()
	go func() {
		errc <- w.cfg.Store.Consume(ctx, jsstore.ConsumeConfig{
			Stream: events.SchedulesStream, Durable: ExpiryConsumer, Filters: []string{events.DueSubjects},
			// An expiry only appends an event (the drop is lease work, per target), so
			// a storm of them is turned into revocations as fast as NATS takes them.
			Concurrency: 64, MaxBackoff: w.cfg.MaxBackoff, AckWait: w.cfg.AckWait, Logger: w.log,
		}, w.handleDue)
	}()
	go func() {
		errc <- w.cfg.Store.Consume(ctx, jsstore.ConsumeConfig{
			Stream: events.EventsStream, Durable: RemovalConsumer, Filters: []string{events.TargetSubjects},
			// Target events are few; a removal may wait for the read side, or for a
			// database that is gone (a connect timeout at each retry, for an hour: many
			// targets of one server removed at once hold as many slots that long).
			Concurrency: 64, MaxBackoff: w.cfg.MaxBackoff, AckWait: w.cfg.AckWait, Logger: w.log,
		}, w.handleTarget)
	}()
	var errs []error
	for range 3 {
		if err := <-errc; err != nil {
			// Said at once: the others serve on meanwhile, and this consumer's work waits.
			w.log.Error("a consumer of the workers stopped", "err", err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// handleTarget follows a target's removal through, once for the deployment, until it is
// done: the leases activated while the removal was under way are revoked (and, once their
// users are dropped, the setup their creates may have made again is removed again: see
// revoke), and with none revoked for the removal left to drop, the setup is removed here
// (unless the removal is a replay: see replayed). The removal's request does both too,
// but within its own time and process: a read side behind it, or its process stopping,
// would leave such a lease logging in with the removed target's grants until it expires,
// or the setup for good. The check waits until every event up to the removal is applied,
// so the index's leader lists each lease active at the removal; a lease activated after
// it is its worker's to revoke (removedSince). Other target events need nothing here.
func (w *Workers) handleTarget(ctx context.Context, e events.Event, seq uint64) error {
	if e.Type != events.TargetRemoved {
		return nil
	}
	uid := e.RecordUID
	// Only a removal as SyVault records it, the last event of the target it names: one
	// naming another target (written by whoever can write to NATS) revokes nothing.
	if !events.OneToken(uid) {
		w.log.Error("a target removal names no target; passing it over", "seq", seq)
		return nil
	}
	switch last, err := w.cfg.Store.LastSeq(ctx, events.TargetSubject(uid)); {
	case err != nil:
		return err
	case last != seq:
		w.log.Error("a target removal is not its target's last event; passing it over", "record_uid", uid, "seq", seq, "last_seq", last)
		return nil
	}
	// Asked for a little while, then again after the consumer's backoff: a read side
	// stopped for long is not polled without pause.
	wait, cancel := context.WithTimeout(ctx, readSideWait)
	err := w.cfg.Targets.WaitApplied(wait, seq)
	cancel()
	if err != nil {
		return fmt.Errorf("the read side has not applied the removal of %s yet: %w", uid, err)
	}
	// Revocations only, recorded in NATS: the revoker drops each user and then removes
	// what the target's users shared again (revoke), retried as any revocation is.
	revoked, pending, err := w.cfg.Store.RevokeIndexed(ctx, uid, e.ClientID)
	if revoked > 0 {
		w.log.Warn("revoked the leases of a removed target activated during its removal", "record_uid", uid, "leases", revoked)
	}
	if err != nil || pending > 0 {
		return err // the revoker removes it after each of their drops (see revoke)
	}
	// What the target's users shared: the removal's request removes it too, unless its
	// process stopped first. A removal replayed (rebuild-projections, or a store of an
	// earlier version) had it removed when it was new: its server, likely gone by now,
	// is not reached again.
	origin, err := w.cfg.Store.ConsumerOrigin(ctx, RemovalConsumer)
	if err != nil {
		return err
	}
	if replayed(origin, seq, e.Time) {
		w.log.Info("a removal followed through before; its target's server is not reached again", "record_uid", uid, "seq", seq)
		return nil
	}
	return w.removeSetupAgain(ctx, uid)
}

// replayed reports whether the removal at stream sequence seq, recorded at recorded, was
// followed through before this consumer began: at or below what a consumer it was
// restarted in place of had handled; or, for one made anew (a store of an earlier
// version, or a consumer deleted), recorded well before it was made.
func replayed(o jsstore.Origin, seq uint64, recorded time.Time) bool {
	if o.Restarted {
		return seq <= o.HandledThrough
	}
	return recorded.Before(o.Created.Add(-replayMargin))
}

const (
	// readSideWait bounds one delivery's wait for the read side to apply a removal.
	readSideWait = 2 * time.Second
	// replayMargin is how long before a consumer made anew began a removal may be
	// recorded and still have its setup removed: one whose API process stopped as an
	// upgrade began, and the clocks of that process and of NATS apart.
	replayMargin = time.Hour
	// setupRetryWindow is how long after a removal the removal of the target's setup
	// is retried on a database failure (by its follow-through, a revoker, a worker's
	// check after a create).
	setupRetryWindow = time.Hour
)

func (w *Workers) handleLease(ctx context.Context, e events.Event, seq uint64) error {
	switch e.Type {
	case events.LeaseRequested, events.LeaseRenewed:
		free, err := w.gates.enter(ctx, e.RecordUID)
		if err != nil {
			return err
		}
		var once sync.Once
		release := func() { once.Do(free) }
		defer release()
		l, err := w.cfg.Store.LoadLease(ctx, e.LeaseID)
		if err == nil {
			err = events.HistoryBehind(l, seq)
		}
		if err != nil {
			return err
		}
		if e.Type == events.LeaseRenewed {
			return w.renew(ctx, l)
		}
		return w.provision(ctx, l, seq, release)
	case events.LeaseRevoked, events.LeaseExpired:
		// Drops take their turns on the target's gate themselves (see revoke).
		return w.revoke(ctx, e.LeaseID, seq)
	}
	return nil // the rest asks for no database work
}

// provision creates the user of a requested lease. A user is only ever created while the
// lease's last event is its request; activation is appended on condition that this is
// still so, and a create that loses that race drops what it made. So once a lease has
// ended, nothing creates its user again. leave gives up the turn on the target's
// database (see handleLease) once the user's create or drop is done: what follows is a
// read, and the database work it rarely leads to takes a turn of its own (inTurn).
func (w *Workers) provision(ctx context.Context, l events.Lease, requestSeq uint64, leave func()) error {
	log := w.log.With("lease_id", l.ID, "record_uid", l.RecordUID)
	switch {
	case l.Status.Ended() && l.Abandoned:
		return nil // its drop given up by an admin: its server is not reached again
	case l.Status.Ended():
		// Redelivered request of a lease that failed or ended: a crash may have left the
		// user behind, so make sure it is gone (retried until the target answers, or for
		// an hour once the target is removed: see gaveUpOnRemoved), unless another lease
		// holds the name now: a name is free again once its user is dropped, and a new
		// lease may have drawn it.
		if taken, err := w.nameTakenSince(ctx, l); err != nil || taken {
			return err
		}
		if w.gaveUpOnRemoved(ctx, l) {
			return nil
		}
		if err := w.dropUser(ctx, l); err != nil {
			return err
		}
		leave()
		_, _, err := w.removedSince(ctx, l, l.Spec.Target)
		return err
	case l.Status == events.StatusActive && l.Spec != nil:
		// Activated, by this request's first delivery or another process, which may have
		// ended before it could tell whether the target was removed meanwhile, or whether
		// its grants changed (against the grants its create used, which no event holds:
		// so they are given again). Only for SyVault's own request (see below).
		leave()
		if first, err := w.cfg.Store.FirstSeq(ctx, events.LeaseSubject(l.ID)); err != nil || first != requestSeq {
			return err
		}
		cur, removed, err := w.removedSince(ctx, l, l.Spec.Target)
		if err != nil || removed || !cur.SameServer(l.Spec.Target) {
			return err
		}
		return w.inTurn(ctx, cur.RecordUID, func() error { return w.Regrant(ctx, cur, l.Username) })
	case l.Status != events.StatusPending || l.Seq != requestSeq:
		return nil // revocation under way: the revoker owns it
	}
	// A lease's history is read back to its latest request, so a request appended over a
	// lease's (by whoever can write to NATS, the lease's sealed password and a target of
	// theirs in it) would be taken for a new lease; SyVault's is its subject's first
	// event. Nothing is recorded on, or dropped for, a history SyVault did not write.
	switch first, err := w.cfg.Store.FirstSeq(ctx, events.LeaseSubject(l.ID)); {
	case err != nil:
		return err
	case first != requestSeq: // both read from the stream's leader, so never a lag
		log.Error("lease request is not its lease's first event; not creating it", "request_seq", requestSeq, "first_seq", first)
		return &events.Error{Code: events.EInternal, Err: jsstore.ErrPermanent,
			Message: "The lease request was not written by SyVault: it is not its lease's first event."}
	}
	if time.Now().After(l.Spec.Deadline) {
		log.Warn("lease request seen after its requester stopped waiting; not creating it")
		return w.failEarly(ctx, l, events.Errorf(events.ETimeout, "The lease was not created before the request deadline."), leave)
	}
	if expired(l) {
		log.Warn("lease request seen after its expiry; not creating it")
		return w.failEarly(ctx, l, events.ErrExpiredBeforeActivated, leave)
	}
	if !leaseID(l.ID) {
		// Its id is the associated data its password opens with; spelled as another
		// secret's (a record uid), that secret would become this user's password.
		return w.failAndDrop(ctx, l, events.Errorf(events.EInternal, "The lease id is not one SyVault makes."))
	}
	password, err := w.cfg.Sealer.Open(l.Spec.SealedPassword, []byte(l.ID))
	if err != nil {
		return w.failAndDrop(ctx, l, events.Wrap(err, events.EInternal, "The lease password could not be unsealed."))
	}
	var verifier []byte
	if len(l.Spec.SealedVerifier) > 0 {
		if verifier, err = w.cfg.Sealer.Open(l.Spec.SealedVerifier, []byte(events.VerifierAAD(l.ID))); err != nil {
			return w.failAndDrop(ctx, l, events.Wrap(err, events.EInternal, "The lease password's verifier could not be unsealed."))
		}
	}
	target, conn, removed, err := w.resolve(ctx, l.Spec.Target)
	if code := events.ErrorCode(err); code == events.EUnavailable || code == events.ETimeout {
		return err // the store, not the target: tried again until the request's deadline
	}
	if removed {
		// Requested before its target's removal, seen after: created, the user would
		// make the target's group again, under a record that no longer exists.
		log.Warn("lease request seen after its target's removal; not creating it")
		return w.failEarly(ctx, l, events.Errorf(events.ENotFound, "The lease's target was removed before its user was created."), leave)
	}
	if err != nil {
		return w.failAndDrop(ctx, l, err)
	}
	// Expiry is armed while the user is created, off the create's critical path (one or
	// two publishes, 0.1–0.3 ms at one client); the activation waits for both, so an
	// active lease always has a schedule. A lease that is then not activated is ended
	// or still pending when its second comes, and its expiry finds nothing to do.
	armed := w.armExpiry(ctx, l)
	opCtx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	defer cancel()
	start := time.Now()
	err = w.driver(target).CreateUser(opCtx, driver.CreateUserRequest{
		Conn: conn, RecordUID: target.RecordUID, Username: l.Username, Password: string(password), PasswordVerifier: string(verifier),
		ExpiresAt: l.ExpiresAt, Grants: target.Grants, ConnectionLimit: target.ConnectionLimit,
	})
	activated, err := w.activate(ctx, l, err, start, armed)
	// From the create on, the user and what the target's users share (PostgreSQL's
	// group, MySQL's marker role: a create that finds them missing makes them again) may
	// exist, whatever the outcome. So the target's removal is checked for last: a read,
	// which another create on the target need not wait for.
	leave()
	cur, removed, rerr := w.removedSince(ctx, l, target)
	switch {
	case err != nil:
		return err
	case rerr != nil || removed || !activated:
		return rerr
	}
	return w.followGrants(ctx, target, cur, l.Username)
}

// activate records the activation of lease l, whose user's create (begun at start)
// ended with created, once its expiry is armed; or, when it must not be activated, drops
// what the create made and records why. activated says the activation is recorded.
func (w *Workers) activate(ctx context.Context, l events.Lease, created error, start time.Time, armed <-chan error) (activated bool, err error) {
	log := w.log.With("lease_id", l.ID, "record_uid", l.RecordUID)
	if created != nil {
		log.Warn("create user failed", "err", created)
		return false, w.failAndDrop(ctx, l, created)
	}
	log.Info("user created", "username", l.Username, "took", time.Since(start).Round(time.Microsecond))
	if !w.requesterWaiting(ctx, l.ID) {
		log.Warn("nobody is waiting for this lease any more; dropping its user instead of activating it")
		return false, w.failAndDrop(ctx, l, events.Errorf(events.ETimeout,
			"Nobody was waiting for the lease any more (its requester stopped or gave up); it was not activated."))
	}
	if expired(l) {
		// A short TTL and a slow create (a paused database, a failover): the credentials
		// would reach their requester dead (PostgreSQL refuses them past VALID UNTIL).
		log.Warn("lease expired while its user was created; dropping the user instead of activating it")
		return false, w.failAndDrop(ctx, l, events.ErrExpiredBeforeActivated)
	}
	if err := <-armed; err != nil {
		return false, err // redelivery creates idempotently and tries again
	}
	act, err := l.Activate(time.Now())
	if err != nil {
		return false, err
	}
	_, err = w.cfg.Store.Append(ctx, events.LeaseSubject(l.ID), act, l.Seq)
	if errors.Is(err, jsstore.ErrConflict) {
		// Revoked or timed out while we were creating: undo.
		log.Info("lease moved on while its user was created; dropping the user")
		return false, w.dropUser(ctx, l)
	}
	return err == nil, err
}

// removedSince makes sure lease l, whose user was made (or dropped) on target used,
// does not outlive its target's removal, and returns the target as it stands. It reads
// the target from the stream's leader after the create and the lease's activation, if
// any: a removal recorded later reads the target's leases once every event before it is
// applied, and so finds this lease active; one recorded earlier is found here. Then
// the lease is revoked (its user dropped as any revocation's), and what the target's
// users shared is removed again, with the settings it was removed with: the create may
// have made it again after the removal had dropped it. A failure to read or record is
// returned, for the redelivery to check again. Its caller holds no turn on the target's
// gate: the setup's removal takes one.
func (w *Workers) removedSince(ctx context.Context, l events.Lease, used events.Target) (cur events.Target, removed bool, err error) {
	cur, _, err = w.cfg.Store.LoadTarget(ctx, used.RecordUID)
	if events.ErrorCode(err) != events.ENotFound {
		return cur, false, err
	}
	w.log.Warn("the lease's target is removed; removing the target's shared setup again",
		"lease_id", l.ID, "record_uid", used.RecordUID)
	if _, _, err := w.cfg.Store.RevokeForRemoval(ctx, l.ID, used.RecordUID, ""); err != nil {
		return cur, true, err
	}
	// A failure comes back with the redelivery for an ended lease, whose request checks
	// again; an activated one's revocation says why, and its revoker removes the setup
	// after the drop once the stream's leader confirms the removal.
	return cur, true, w.removeSetupAgain(ctx, used.RecordUID)
}

// databaseMayPass reports whether err, a target's database work's failure, may pass by
// itself: the database not answering or another session's lock (ETargetUnavailable), or
// the store, a turn or a deadline (transient).
func databaseMayPass(err error) bool {
	return err != nil && (events.ErrorCode(err) == events.ETargetUnavailable || transient(err))
}

// transient reports whether err may pass by itself: the store or its read side away or
// slow, a turn on a gate not had, a deadline.
func transient(err error) bool {
	code := events.ErrorCode(err)
	return code == events.EUnavailable || code == events.ETimeout || errors.Is(err, jsstore.ErrBusy) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// removeSetupAgain removes what the users of removed target uid shared, with the
// settings it was removed with (see removeSetupOf); a target never recorded has none. It
// returns the failure to read them or to get a turn on the target's gate, and the
// database's failure to answer for a while after the removal, for the caller's
// redelivery to try again: a target is often removed around its server's maintenance.
// Past that (see withinSetupRetry) its server is taken for gone, and the failure only
// logged.
func (w *Workers) removeSetupAgain(ctx context.Context, uid string) error {
	last, removedAt, err := w.cfg.Store.RemovedTarget(ctx, uid)
	if events.ErrorCode(err) == events.ENotFound {
		return nil
	}
	if err != nil && !transient(err) { // an event it cannot read: the same on every try
		w.log.Warn("could not read the removed target's settings; its shared setup is not removed again", "record_uid", uid, "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	return w.removeSetupOf(ctx, last, withinSetupRetry(removedAt))
}

// withinSetupRetry reports whether t (a removal's, or a lease's end, as its event says:
// its writer's clock, or a forger's) is within setupRetryWindow of now, either way: one
// far ahead is not retried at all, rather than for good.
func withinSetupRetry(t time.Time) bool {
	age := time.Since(t)
	return age < setupRetryWindow && age > -setupRetryWindow
}

// removeSetupOf removes what the users of removed target t (its settings when it was
// removed) shared: a create may have made it again after the removal had dropped it. It
// waits for a turn on the target's gate (its caller holds none) within ctx and at most an
// operation's timeout, and returns the failure to get one; the removal itself runs to its
// end, ctx done or not. A target is often removed because its server is going away:
// retried without end, the removal itself could fail for good, so its failure is logged,
// and returned only when it is to be retried (for a while after the removal: see
// removeSetupAgain) and the database did not answer, or another session held what the
// removal changes: a refusal, or a password that cannot be opened, would be the same an
// hour on. What is left cannot log in, and holds no lease
// user once the revoker has dropped them; a user that made objects hands them at its drop
// to a group made again to own them, a group that cannot log in, as a removal keeps a
// group that owns objects.
func (w *Workers) removeSetupOf(ctx context.Context, t events.Target, retry bool) error {
	turn, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	defer cancel()
	return w.inTurn(turn, t.RecordUID, func() error {
		op, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.OpTimeout)
		defer cancel()
		err := w.RemoveTarget(op, t)
		if retry && databaseMayPass(err) {
			return fmt.Errorf("remove the removed target's shared setup: %w", err)
		}
		if err != nil {
			w.log.Warn("could not remove the removed target's shared setup again", "record_uid", t.RecordUID, "err", err)
		}
		return nil
	})
}

// armExpiry arms l's expiry second alongside the database work that follows; the caller
// waits for its outcome before it records or acknowledges anything.
func (w *Workers) armExpiry(ctx context.Context, l events.Lease) <-chan error {
	armed := make(chan error, 1)
	go func() { armed <- w.cfg.Store.ScheduleExpiry(ctx, l.ID, l.ExpiresAt) }()
	return armed
}

// expired reports whether the lease's expiry has passed: it must not be activated then.
func expired(l events.Lease) bool { return !time.Now().Before(l.ExpiresAt) }

// followGrants re-grants a user just activated whose target's grants changed while it was
// being created (engines whose users hold their own grants only): an update that listed
// the target's active leases before this one was among them would otherwise leave it
// with the old grants.
func (w *Workers) followGrants(ctx context.Context, used, cur events.Target, username string) error {
	if !w.GrantsPerUser(used.Engine) || !cur.SameServer(used) || slices.EqualFunc(cur.Grants, used.Grants, sameGrant) {
		return nil // moved, or unchanged: nothing to follow
	}
	return w.inTurn(ctx, cur.RecordUID, func() error { return w.Regrant(ctx, cur, username) })
}

// inTurn runs fn, work on the database of target uid, in a turn on the target's gate
// (see gate.go), for a handler that has given its own up (see provision).
func (w *Workers) inTurn(ctx context.Context, uid string, fn func() error) error {
	release, err := w.gates.enter(ctx, uid)
	if err != nil {
		return err
	}
	defer release()
	return fn()
}

func sameGrant(a, b events.Grant) bool {
	return a.Database == b.Database && a.Schema == b.Schema && slices.Equal(a.Tables, b.Tables) && slices.Equal(a.Privileges, b.Privileges)
}

// GrantsPerUser reports whether the engine's lease users hold their grants themselves
// (see driver.UserGranter), so that a target's changed grants must be given to each.
func (w *Workers) GrantsPerUser(e events.Engine) bool {
	_, ok := w.cfg.Drivers[e].(driver.UserGranter)
	return ok
}

// Regrant gives a lease user of target t exactly t's grants, on engines whose users hold
// their own; elsewhere it does nothing.
func (w *Workers) Regrant(ctx context.Context, t events.Target, username string) error {
	if !w.GrantsPerUser(t.Engine) {
		return nil
	}
	_, conn, err := w.conn(ctx, t)
	if err != nil {
		return err
	}
	opCtx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	defer cancel()
	if err := w.driver(t).UpdateUser(opCtx, driver.UpdateUserRequest{Conn: conn, RecordUID: t.RecordUID, Username: username, Grants: t.Grants}); err != nil {
		return fmt.Errorf("regrant %s: %w", username, err)
	}
	return nil
}

// requesterWaiting asks whether an API process still waits to hand the lease to its
// requester. Only a definite "no responders" counts as gone: a slow or lost answer is
// taken as yes, since activating a lease nobody receives costs a user until its expiry,
// while failing one somebody waits for fails a request that would have succeeded.
func (w *Workers) requesterWaiting(ctx context.Context, leaseID string) bool {
	return w.cfg.Store.Ask(ctx, events.WaitingSubject(leaseID))
}

// gaveUpOnRemoved reports whether ended lease l's drop is no longer tried from its
// request: its target removed over an hour ago (a target is often removed because its
// database is gone for good, its leases' revocations given up), as a removed target's
// setup is not. Reconciliation, or the operator, sees to what it may have left.
func (w *Workers) gaveUpOnRemoved(ctx context.Context, l events.Lease) bool {
	_, removedAt, err := w.cfg.Store.RemovedTarget(ctx, l.RecordUID)
	if err != nil || withinSetupRetry(removedAt) {
		return false
	}
	w.log.Warn("no longer making sure the user of an ended lease of a removed target is gone; its request is passed over",
		"lease_id", l.ID, "record_uid", l.RecordUID, "username", l.Username)
	return true
}

// failAndDrop records a failed creation and makes sure no user is left. This attempt may
// have made none, but an earlier one may have, in a process that died after its SQL and
// before recording anything (with no API process left to give up on the lease either).
// When the target cannot be reached, the error gets the request redelivered, and the
// redelivery, finding the lease failed, drops the user once the target is back.
func (w *Workers) failAndDrop(ctx context.Context, l events.Lease, cause error) error {
	ferr := w.fail(ctx, l, cause)
	if derr := w.dropUser(ctx, l); derr != nil {
		return errors.Join(ferr, derr)
	}
	return ferr
}

// failEarly fails pending lease l for cause without creating its user. An earlier
// delivery may have created it before its process stopped, and with it what the
// target's users share, made again after a removal had dropped it: so the user is
// dropped, and the target's removal checked for as after a create (removedSince).
func (w *Workers) failEarly(ctx context.Context, l events.Lease, cause error, leave func()) error {
	if err := w.failAndDrop(ctx, l, cause); err != nil {
		return err
	}
	leave()
	_, _, err := w.removedSince(ctx, l, l.Spec.Target)
	return err
}

// fail records a failed creation. A conflict means the lease moved on (revoked, or the
// requester gave up first), which needs nothing more here.
func (w *Workers) fail(ctx context.Context, l events.Lease, cause error) error {
	e := l.Fail(time.Now(), cause)
	if e == nil {
		return nil
	}
	_, err := w.cfg.Store.Append(ctx, events.LeaseSubject(l.ID), *e, l.Seq)
	if errors.Is(err, jsstore.ErrConflict) {
		return nil
	}
	return err
}

// revoke drops the user of a revoking lease, whose revocation or expiry is the event at
// seen, and records it. Failures are returned so the message is redelivered with backoff,
// forever: a revocation is never given up here (only an admin gives one up, AbandonLease).
func (w *Workers) revoke(ctx context.Context, id string, seen uint64) error {
	removeSetup := false // its target's setup, removed again once the drop is recorded
	l, seq, err := w.cfg.Store.DecideLease(ctx, id, func(l events.Lease) (*events.Event, error) {
		removeSetup = false
		if err := events.HistoryBehind(l, seen); err != nil {
			return nil, err
		}
		if l.Status != events.StatusRevoking {
			return nil, nil
		}
		removed, err := w.revokeUser(ctx, l)
		if err != nil {
			if errors.Is(err, jsstore.ErrBusy) {
				return nil, err // not an attempt: its turn comes on redelivery
			}
			w.notify(l.ID, events.FailedAttempt(events.AttemptRevoke, err))
			w.cfg.Observer.RevocationFailed(l.ID)
			return nil, err
		}
		if !removed && l.ForRemoval {
			// Revoked for its target's removal, which the read side may not show yet:
			// the stream's leader says whether it is so (a revocation that says it may
			// have been written by whoever can write to NATS).
			switch _, _, err := w.cfg.Store.LoadTarget(ctx, l.RecordUID); {
			case events.ErrorCode(err) == events.ENotFound:
				removed = true
			case err != nil && transient(err):
				return nil, fmt.Errorf("read the target of %s from the stream's leader: %v", l.ID, err)
			case err != nil:
				w.log.Warn("could not tell whether the lease's target is removed; its shared setup is not removed again", "lease_id", l.ID, "record_uid", l.RecordUID, "err", err)
			}
		}
		if removed {
			// A lease of a removed target was activated while its target was being
			// removed: its create may have made the target's group (or MySQL marker
			// role) again, and its drop hands what it owned to that group. That is
			// removed again once the drop is recorded, not to hold the lease up; what
			// may pass (a turn or a read not had, the database not answering or
			// another session's lock, within an hour of the removal) has the
			// revocation come back for the setup alone (below). Anything else is logged.
			removeSetup = true
		}
		return l.Dropped(time.Now()), nil
	})
	if err != nil {
		return err
	}
	var setupLeft error
	switch {
	case seq != 0:
		w.cfg.Observer.RevocationDone(l.ID)
		w.log.Info("user dropped", "lease_id", l.ID, "username", l.Username, "reason", l.Ending)
		w.forgetUsername(ctx, l)
		if removeSetup {
			setupLeft = w.removeSetupAgain(ctx, l.RecordUID)
		}
	case l.Status.Ended():
		// Delivered again after it ended otherwise (its drop recorded by another process
		// or an admin's attempt, or given up by an admin): the attempts that failed here
		// are no longer pending. A drop recorded may have left a removal of its target's
		// setup for this (or its process stopped before it): a target not removed answers
		// after a read of its events (no server is reached); past the hour a replay
		// reaches no removed target's server; a drop given up reaches it no more.
		w.cfg.Observer.RevocationDone(l.ID)
		if !l.Abandoned && l.EndedAt != nil && withinSetupRetry(*l.EndedAt) {
			setupLeft = w.removeSetupAgain(ctx, l.RecordUID)
		}
	}
	if setupLeft != nil {
		return fmt.Errorf("remove the removed target's shared setup after the drop of %s: %w", l.Username, setupLeft)
	}
	return nil
}

// DropNow makes one attempt, in this process and within ctx, at dropping the user of
// revoking lease l (as folded from the stream, with its spec): an admin gives a
// revocation up only once an attempt of its own has failed, not on the word of an
// attempt long past (a database may be back). attempted is false when the database was
// not asked (the target's settings or admin password could not be read; the caller tells
// what may pass from what will not). The attempt takes no turn on the target's gate,
// whose queue the workers' retries may fill for good on a hung server, but shares their
// admin connections (a target sees no more sessions than it was promised): a wait for
// one counts within the attempt's time, as a hung server's connections never come back.
// The driver's drop runs beside a worker's drop of the same user: each step tolerates
// the other's.
func (w *Workers) DropNow(ctx context.Context, l events.Lease) (attempted bool, err error) {
	if l.Spec == nil {
		return false, events.Errorf(events.EInternal, "Lease %s has no spec to drop its user by.", l.ID)
	}
	target, conn, _, err := w.resolve(ctx, l.Spec.Target)
	if err != nil {
		return false, err
	}
	err = w.driver(target).DropUser(ctx, driver.DropUserRequest{Conn: conn, RecordUID: target.RecordUID, Username: l.Username,
		Grants: l.Spec.Target.Grants})
	return true, err
}

// Reachable reports whether the server lease l's user is on (its snapshot's: a target
// moved since keeps its older leases there) takes a TCP connection within reachWithin:
// a forced removal whose attempt found the database not answering gives that server's
// other leases up without one each only if not, a server gone; one that is up but slow,
// or locked, is asked for each. A server that answers does so in milliseconds. Only a
// refusal, an unreachable host or network, a name that does not exist or a connect that
// timed out says "gone"; anything else (ctx's end, a lookup that failed for now, this
// process out of sockets) is no answer: err is set.
func (w *Workers) Reachable(ctx context.Context, l events.Lease) (bool, error) {
	if l.Spec == nil {
		return false, events.Errorf(events.EInternal, "Lease %s has no spec to find its server by.", l.ID)
	}
	t := l.Spec.Target
	d := net.Dialer{Timeout: reachWithin}
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(t.Host, strconv.Itoa(t.Port)))
	if err == nil {
		c.Close()
	}
	var dns *net.DNSError
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return false, ctx.Err()
	case err == nil:
		return true, nil
	case errors.As(err, &dns):
		if dns.IsNotFound {
			return false, nil
		}
		return false, err
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.As(err, &ne) && ne.Timeout():
		return false, nil
	}
	return false, err
}

// reachWithin bounds Reachable's dial.
const reachWithin = 3 * time.Second

// nameTakenSince reports whether a lease other than l holds l's username now.
func (w *Workers) nameTakenSince(ctx context.Context, l events.Lease) (bool, error) {
	if w.cfg.Usernames == nil {
		return false, nil
	}
	h, held, err := w.cfg.Usernames.Holder(ctx, l.Username)
	if err != nil || !held || string(h.Value) == l.ID {
		return false, err
	}
	w.log.Warn("a request of an ended lease was delivered again after another lease took its username; its user is left to that lease",
		"lease_id", l.ID, "username", l.Username, "holder", string(h.Value))
	return true, nil
}

// forgetUsername frees a dropped lease's username. Losing this costs nothing but memory
// until the reservation's hold runs out (a process that dies between the drop and here
// leaves it the same way), so a failure is logged, not retried.
func (w *Workers) forgetUsername(ctx context.Context, l events.Lease) {
	if w.cfg.Usernames == nil {
		return
	}
	if err := w.cfg.Usernames.Forget(ctx, l.Username); err != nil {
		w.log.Warn("could not free a dropped lease's username; it stays reserved until its hold runs out",
			"lease_id", l.ID, "username", l.Username, "err", err)
	}
}

// revokeUser drops a revoked or expired lease's user in a turn of its target's gate: on
// engines that drop in batches, together with the other drops waiting for that target.
func (w *Workers) revokeUser(ctx context.Context, l events.Lease) (removed bool, err error) {
	target, conn, removed, err := w.resolve(ctx, l.Spec.Target)
	if err != nil {
		return removed, err
	}
	d := w.driver(target)
	if !d.batches() {
		release, err := w.gates.enter(ctx, l.RecordUID)
		if err != nil {
			return removed, err
		}
		defer release()
		return removed, w.dropUser(ctx, l)
	}
	req := driver.DropUserRequest{Conn: conn, RecordUID: target.RecordUID, Username: l.Username, Grants: l.Spec.Target.Grants}
	err = w.gates.of(l.RecordUID).drop(ctx, req, func(reqs []driver.DropUserRequest) []error {
		opCtx, cancel := context.WithTimeout(context.Background(), w.cfg.OpTimeout)
		defer cancel()
		return d.DropUsers(opCtx, reqs)
	})
	if err != nil {
		return removed, fmt.Errorf("drop %s of lease %s: %w", l.Username, l.ID, err)
	}
	return removed, nil
}

func (w *Workers) dropUser(ctx context.Context, l events.Lease) error {
	target, conn, err := w.conn(ctx, l.Spec.Target)
	if err != nil {
		return err
	}
	opCtx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	defer cancel()
	err = w.driver(target).DropUser(opCtx, driver.DropUserRequest{Conn: conn, RecordUID: target.RecordUID, Username: l.Username, Grants: l.Spec.Target.Grants})
	if err != nil {
		return fmt.Errorf("drop %s of lease %s: %w", l.Username, l.ID, err)
	}
	return nil
}

// renew moves the database-side expiry and re-arms the schedule for the lease's latest
// expiry (folded from the stream, so renewals handled out of order still end right), and
// tells a caller waiting on the renewal how it went: the answer to a renewal says the
// database holds the new expiry, or that it did not take it yet.
func (w *Workers) renew(ctx context.Context, l events.Lease) error {
	if l.Status != events.StatusActive {
		return nil
	}
	// The new second is armed whatever the database says: while the renewal fails (the
	// target unreachable, the admin refused), the old second finds the lease renewed, and
	// only the new one ends it when its recorded expiry comes.
	armed := w.armExpiry(ctx, l)
	err := w.renewUser(ctx, l)
	if aerr := <-armed; err == nil {
		err = aerr
	}
	if err != nil {
		w.notify(l.ID, events.FailedAttempt(events.AttemptRenew, err))
		return err
	}
	w.notify(l.ID, events.Attempt{Op: events.AttemptRenew, Applied: l.Seq})
	return w.renewedLast(ctx, l)
}

// renewedLast makes sure the expiry the database was last sent for the lease is its
// latest. Two renewals of one lease handled at once (two goroutines or processes) each
// send the expiry they read, in either order: the earlier renewal's statement, sent last,
// took the later one's back, and PostgreSQL refused logins before the expiry the lease
// shows. So once a statement is sent (and its caller answered: the database holds what it
// asked for), the lease is checked again (its last sequence, one read), and while it
// moved on, still active, the newer expiry is sent too: whichever handler sends last then
// sends what the stream holds. A lease renewed faster than that settles gets a few sends
// here, then an error: the redelivery, after its backoff, sends the latest expiry and
// checks again, and the target's workers are not held meanwhile. Any error leaves the
// renewal to its redelivery so.
func (w *Workers) renewedLast(ctx context.Context, l events.Lease) error {
	const sends = 3
	for range sends {
		last, err := w.cfg.Store.LastSeq(ctx, events.LeaseSubject(l.ID))
		if err != nil || last <= l.Seq {
			return err
		}
		cur, err := w.cfg.Store.LoadLease(ctx, l.ID)
		if err == nil {
			err = events.HistoryBehind(cur, last)
		}
		if err != nil || cur.Status != events.StatusActive || cur.ExpiresAt.Equal(l.ExpiresAt) {
			return err
		}
		if err := w.renewUser(ctx, cur); err != nil {
			return err
		}
		w.notify(cur.ID, events.Attempt{Op: events.AttemptRenew, Applied: cur.Seq})
		l = cur
	}
	return fmt.Errorf("renew %s: renewed again while %d later expiries were sent; checked again at the redelivery", l.ID, sends)
}

func (w *Workers) renewUser(ctx context.Context, l events.Lease) error {
	return w.onTarget(ctx, l.Spec.Target, "renew "+l.ID, func(ctx context.Context, d driver.Driver, _ events.Target, conn driver.Conn) error {
		return d.RenewUser(ctx, driver.RenewUserRequest{Conn: conn, Username: l.Username, ExpiresAt: l.ExpiresAt})
	})
}

// handleDue expires the leases of an expiry second whose schedule fired: each lease
// listed under it gets a lease.expired event, unless it was renewed since (its new second
// is armed already) or has ended. The second's list is cleared once every lease on it is
// decided; a failure leaves it for the redelivery. A schedule of an older version names
// one lease, and is decided the same way.
func (w *Workers) handleDue(ctx context.Context, e events.Event, _ uint64) error {
	if e.LeaseID != "" {
		return w.expire(ctx, e.LeaseID, e.ExpiresAt)
	}
	second := e.ExpiresAt.Unix()
	ids, upTo, err := w.cfg.Store.ExpiringAt(ctx, second)
	if err != nil {
		return err
	}
	sem := make(chan struct{}, expiryConcurrency)
	errs := make(chan error, len(ids))
	for _, id := range ids {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			errs <- w.expire(ctx, id, e.ExpiresAt)
		}()
	}
	var first error
	for range ids {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return first
	}
	if err := w.cfg.Store.DoneExpiring(ctx, second, upTo); err != nil {
		return err
	}
	// The list may have been read from a copy of the stream behind its leader: a lease
	// it missed would never expire once this second is acknowledged.
	more, err := w.cfg.Store.StillListed(ctx, second)
	if err == nil && more {
		err = events.StoreUnavailable(fmt.Errorf("workers: leases listed as expiring at %d beyond the list read; reading it again", second))
	}
	return err
}

// expiryConcurrency bounds the expiries one fired second decides at once (each an append;
// the drops follow as lease work, per target).
const expiryConcurrency = 32

// expire records lease id's expiry for the second due, unless it no longer applies.
func (w *Workers) expire(ctx context.Context, id string, due time.Time) error {
	l, seq, err := w.cfg.Store.DecideLease(ctx, id, func(l events.Lease) (*events.Event, error) {
		return l.Expire(due, time.Now())
	})
	switch {
	case events.ErrorCode(err) == events.ENotFound:
		return nil
	case err == nil && seq != 0:
		lag := time.Since(l.ExpiresAt)
		w.cfg.Observer.Expired(lag)
		w.log.Info("lease expired", "lease_id", l.ID, "lag", lag.Round(time.Millisecond))
	}
	return err
}

// Prepare verifies a target's admin rights and sets up what its users share. The admin
// password is the plaintext the caller is about to seal. It returns what the target's
// database lets a lease user do beyond its grants, for the operator to take away.
func (w *Workers) Prepare(ctx context.Context, t events.Target, adminPassword string, isNew bool) ([]string, error) {
	var advice []string
	err := w.withPassword(ctx, t, adminPassword, "prepare "+t.RecordUID, func(ctx context.Context, d driver.Driver, conn driver.Conn) error {
		return d.Prepare(ctx, driver.PrepareRequest{Conn: conn, RecordUID: t.RecordUID, Grants: t.Grants, New: isNew,
			Advise: func(a string) { advice = append(advice, a) }})
	})
	if err != nil {
		return nil, err
	}
	return advice, nil
}

// Unprepare removes what Prepare set up for t when t was then not recorded. The admin
// password is the one Prepare was given: no sealed copy is anywhere to open. It outlives
// ctx, as a cancelled registration must not leave the group or marker role either.
//
// Nothing records a target that was never recorded, so nothing would try its undo
// again: a failure to reach the database (a connection cut, a restart; a refused login
// cannot be told from one), or to finish for another session's lock (after a cut, the
// cut statement may still hold one), is retried with a short backoff for up to
// undoRetryFor, all attempts within one operation's timeout, the bound one attempt had.
// The registration's answer waits for it. A statement refused is not retried: it would
// be the same.
func (w *Workers) Unprepare(ctx context.Context, t events.Target, adminPassword string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.OpTimeout)
	defer cancel()
	start := time.Now()
	var last error
	for attempt := uint64(1); ; attempt++ {
		err := w.removeSetup(ctx, t, adminPassword)
		if err != nil && ctx.Err() != nil && last != nil {
			err = last // the deadline hides why the attempts before failed
		}
		if !databaseMayPass(err) || time.Since(start) >= undoRetryFor {
			return err
		}
		if last == nil {
			w.log.Warn("removing what a target not recorded set up failed; trying again", "record_uid", t.RecordUID, "for", undoRetryFor, "err", err)
		}
		last = err
		select {
		case <-ctx.Done():
			return err
		case <-time.After(min(jsstore.Backoff(attempt, 2*time.Second), undoRetryFor-time.Since(start))):
		}
	}
}

// undoRetryFor is how long after Unprepare's first attempt another may begin (a
// variable for the test of its bound).
var undoRetryFor = 10 * time.Second

// removeSetup removes what Prepare set up for t, connecting with adminPassword, within
// ctx and an operation's timeout.
func (w *Workers) removeSetup(ctx context.Context, t events.Target, adminPassword string) error {
	return w.withPassword(ctx, t, adminPassword, "remove target "+t.RecordUID, func(ctx context.Context, d driver.Driver, conn driver.Conn) error {
		return d.RemoveTarget(ctx, driver.RemoveTargetRequest{Conn: conn, RecordUID: t.RecordUID, Grants: t.Grants})
	})
}

// withPassword runs op with the driver of t's engine and an admin connection with the
// password given (a target not recorded yet has no sealed one to open), under the
// operation timeout; what names the operation in its error.
func (w *Workers) withPassword(ctx context.Context, t events.Target, adminPassword, what string, op func(context.Context, driver.Driver, driver.Conn) error) error {
	d, ok := w.drivers[t.Engine]
	if !ok {
		return events.Errorf(events.EInvalid, "Engine %q is not supported by this server.", t.Engine)
	}
	opCtx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	defer cancel()
	if err := op(opCtx, d, connFor(t, adminPassword)); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Reprepare sets t up again as recorded (its current registration), with its sealed
// admin password: an update verified (its grants given to the group) and then not
// recorded is set back.
func (w *Workers) Reprepare(ctx context.Context, t events.Target) error {
	return w.onTarget(ctx, t, "prepare "+t.RecordUID+" again", func(ctx context.Context, d driver.Driver, target events.Target, conn driver.Conn) error {
		return d.Prepare(ctx, driver.PrepareRequest{Conn: conn, RecordUID: target.RecordUID, Grants: target.Grants})
	})
}

// RemoveTarget removes what Prepare set up for target t, being removed, with t's own
// settings and sealed admin password. Its callers read t from the stream's leader: no
// copy of the read side is newer, and one behind could name an admin password rotated
// since.
func (w *Workers) RemoveTarget(ctx context.Context, t events.Target) error {
	pw, err := w.adminPassword(ctx, t)
	if err != nil {
		return fmt.Errorf("remove target %s: %w", t.RecordUID, err)
	}
	return w.removeSetup(ctx, t, pw)
}

// onTarget runs op with the driver of t's target and its admin connection (see conn),
// under the operation timeout; what names the operation in its error.
func (w *Workers) onTarget(ctx context.Context, t events.Target, what string, op func(context.Context, driver.Driver, events.Target, driver.Conn) error) error {
	target, conn, err := w.conn(ctx, t)
	if err != nil {
		return err
	}
	opCtx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	defer cancel()
	if err := op(opCtx, w.driver(target), target, conn); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// conn resolves how to reach a lease's target. The current registration wins over the
// lease's snapshot, so a rotated admin password is used for leases issued before the
// rotation; the snapshot serves once the target is removed.
func (w *Workers) conn(ctx context.Context, snapshot events.Target) (events.Target, driver.Conn, error) {
	t, c, _, err := w.resolve(ctx, snapshot)
	return t, c, err
}

// resolve is conn, saying too whether the target is removed.
func (w *Workers) resolve(ctx context.Context, snapshot events.Target) (events.Target, driver.Conn, bool, error) {
	t := snapshot
	cur, err := w.cfg.Targets.Target(ctx, snapshot.RecordUID)
	removed := events.ErrorCode(err) == events.ENotFound
	switch {
	case err == nil && cur.SameServer(snapshot):
		t = cur
	case err != nil && !removed:
		return t, driver.Conn{}, false, err
	}
	if _, ok := w.cfg.Drivers[t.Engine]; !ok {
		return t, driver.Conn{}, removed, events.Errorf(events.EInternal, "Engine %q is not supported by this server.", t.Engine)
	}
	pw, err := w.adminPassword(ctx, t)
	if err != nil {
		return t, driver.Conn{}, removed, err
	}
	return t, connFor(t, pw), removed, nil
}

// adminPassword opens t's sealed admin password.
func (w *Workers) adminPassword(ctx context.Context, t events.Target) (string, error) {
	pw, _, err := OpenAdminPassword(ctx, w.cfg.Sealer, w.origins, t)
	if errors.Is(err, seal.ErrOpen) {
		return "", events.Wrap(err, events.EInternal, "The target's admin password could not be unsealed: another master key, or a target naming another server than the one its password was sealed for.")
	}
	if err != nil {
		return "", err // the target's history could not be read: tried again
	}
	return string(pw), nil
}

// leaseID reports whether id is shaped as the lease ids SyVault makes: a UUID in its
// canonical form.
func leaseID(id string) bool {
	u, err := uuid.Parse(id)
	return err == nil && u.String() == id
}

// TargetHistory reads a target's events (jsstore.Store does).
type TargetHistory interface {
	History(ctx context.Context, subject string) ([]events.Event, []uint64, error)
}

// Origins checks where passwords sealed before the binding were first recorded: one
// opens only with the connection of the first of its target's events that holds it.
// Whoever can write to NATS can copy it from the audit trail next to a server of theirs
// in a later event, never an earlier one. A password found to open is remembered, so each
// costs one history read per process.
type Origins struct {
	history TargetHistory
	opened  sync.Map // sha256 of the sealed password and its connection: struct{}
}

// NewOrigins returns Origins reading targets' events from history.
func NewOrigins(history TargetHistory) *Origins { return &Origins{history: history} }

func (o *Origins) check(ctx context.Context, t events.Target) error {
	conn := t.AdminPasswordAAD()
	h := sha256.New()
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(t.SealedAdminPassword))))
	h.Write(t.SealedAdminPassword)
	h.Write(conn)
	key := string(h.Sum(nil))
	if _, ok := o.opened.Load(key); ok {
		return nil
	}
	evs, _, err := o.history.History(ctx, events.TargetSubject(t.RecordUID))
	if err != nil {
		return err
	}
	for _, e := range evs {
		if e.Target == nil || !bytes.Equal(e.Target.SealedAdminPassword, t.SealedAdminPassword) {
			continue
		}
		if !bytes.Equal(e.Target.AdminPasswordAAD(), conn) {
			return seal.ErrOpen // first recorded with another connection
		}
		o.opened.Store(key, struct{}{})
		return nil
	}
	return seal.ErrOpen
}

// OpenAdminPassword opens t's sealed admin password, bound to t's connection (see
// events.Target.AdminPasswordAAD) or, sealed before that binding, to its record alone
// and then only with the connection it was first recorded with (see Origins). resealed
// says it is bound and under the current master key: nothing to reseal.
func OpenAdminPassword(ctx context.Context, s *seal.Sealer, origins *Origins, t events.Target) (pw []byte, resealed bool, err error) {
	if pw, current, err := s.OpenCurrent(t.SealedAdminPassword, t.AdminPasswordAAD()); err == nil {
		return pw, current, nil
	}
	aad, ok := t.LegacyAdminPasswordAAD()
	if !ok {
		return nil, false, seal.ErrOpen
	}
	if pw, _, err = s.OpenCurrent(t.SealedAdminPassword, aad); err != nil {
		return nil, false, err
	}
	if err := origins.check(ctx, t); err != nil {
		return nil, false, err
	}
	return pw, false, nil
}

func (w *Workers) driver(t events.Target) instrumented { return w.drivers[t.Engine] }

func connFor(t events.Target, password string) driver.Conn {
	h := sha256.New()
	for _, s := range []string{t.Host, strconv.Itoa(t.Port), t.Database, t.AdminUsername, password, string(t.TLSMode), t.CACert} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return driver.Conn{
		PoolKey:  t.RecordUID + ":" + hex.EncodeToString(h.Sum(nil))[:16],
		Host:     t.Host,
		Port:     t.Port,
		Database: t.Database,
		Username: t.AdminUsername,
		Password: password,
		TLSMode:  t.TLSMode,
		CACert:   t.CACert,
	}
}

func (w *Workers) notify(leaseID string, a events.Attempt) {
	w.cfg.Store.Notify(events.AttemptSubject(leaseID), a.Encode())
}
