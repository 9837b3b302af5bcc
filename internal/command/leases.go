package command

import (
	"context"
	"crypto/rand"
	"errors"
	"math/big"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/syvault/syvault/events"
)

// CreateLease requests a lease of ttlSeconds on recordUID for client, and answers once
// the user exists with its grants, or the workers failed to create it. It checks the TTL
// against the target's and the client's caps (EInvalidTTL) and the client's max_leases
// (ETooManyLeases); the caller has authorized the client for the record.
//
// If the workers take longer than the request timeout, the lease is recorded as failed on
// condition that it is still pending, so a late create is undone by the worker and no
// active lease exists that nobody received. The wait is on one thing: the lease's record
// in the projection, so a read right after the answer sees the lease.
func (s *Service) CreateLease(ctx context.Context, client events.Client, recordUID string, ttlSeconds int) (events.Credentials, error) {
	target, err := s.cfg.Projections.Target(ctx, recordUID)
	if err != nil {
		return events.Credentials{}, err
	}
	if err := events.ValidTTL(ttlSeconds, capTTL(target.MaxTTLSeconds, client.MaxTTLSeconds)); err != nil {
		return events.Credentials{}, err
	}
	// The deadline covers the whole create, its wait for admission included: an answer
	// that could no longer be written would leave an active lease nobody received.
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	uid, err := uuid.NewV7()
	if err != nil {
		return events.Credentials{}, err
	}
	id := uid.String()
	done, err := s.quotas.admit(ctx, client, id)
	if err != nil {
		return events.Credentials{}, err
	}
	active := false
	defer func() { done(active) }()
	username, err := s.reserveUsername(ctx, id)
	if err != nil {
		return events.Credentials{}, err
	}
	cred := credential{password: newPassword()}
	if target.Engine == events.PostgreSQL {
		cred = s.credentials.take()
	}
	password := cred.password
	now := time.Now()
	req := events.LeaseRequest{LeaseID: id, ClientID: client.ClientID, Target: target, TTLSeconds: ttlSeconds,
		Username: username, SealedPassword: s.cfg.Sealer.Seal([]byte(password), []byte(id)),
		Now: now, Deadline: deadline}
	if cred.verifier != "" {
		req.SealedVerifier = s.cfg.Sealer.Seal([]byte(cred.verifier), []byte(events.VerifierAAD(id)))
	}
	ev := events.RequestLease(req)

	// Watch for the outcome, and tell the workers someone waits for these credentials,
	// until the answer goes.
	w, err := s.cfg.Projections.WatchNewLease(id, []string{events.AttemptSubject(id)}, []string{events.WaitingSubject(id)})
	if err != nil {
		return events.Credentials{}, err
	}
	defer w.Stop()
	if _, err := s.cfg.Store.Append(ctx, events.LeaseSubject(id), ev, 0); err != nil {
		return events.Credentials{}, err
	}
	l, err := w.Until(ctx, func(l events.Lease) bool { return l.Status != events.StatusPending }, ignoreAttempts)
	if err != nil {
		// Out of time, or the store stopped answering: settle the lease before answering.
		if l, err = s.giveUp(id); err != nil {
			return events.Credentials{}, err
		}
	}
	active = l.Status == events.StatusActive || l.Status == events.StatusRevoking // listed: its user exists
	switch l.Status {
	case events.StatusActive:
	case events.StatusFailed:
		return events.Credentials{}, failure(l)
	default: // revoking or ended: its expiry or a revocation came first
		if l.Ending == events.StatusExpired || l.Status == events.StatusExpired {
			return events.Credentials{}, events.ErrExpiredBeforeActivated
		}
		return events.Credentials{}, events.Errorf(events.EConflict, "The lease was revoked before it was created.")
	}
	return events.Credentials{Lease: l, Password: password, Target: target}, nil
}

// ignoreAttempts skips reports of failed attempts: a create waits for its outcome.
func ignoreAttempts(string, []byte) error { return nil }

// giveUp records a lease the workers did not finish in time as failed, unless it settled
// in the meantime, in which case that is the answer.
func (s *Service) giveUp(id string) (events.Lease, error) {
	// The request's own context is spent; this bookkeeping must still happen.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cause := events.Errorf(events.ETimeout, "The workers did not create the user before the request deadline.")
	l, seq, err := s.cfg.Store.DecideLease(ctx, id, func(l events.Lease) (*events.Event, error) {
		return l.Fail(time.Now(), cause), nil // nil once settled meanwhile: that is the answer
	})
	if err != nil {
		return l, err
	}
	// A read right after the answer must show the lease as the answer has it (failed, or
	// settled meanwhile), not still pending.
	if _, werr := s.cfg.Projections.WaitLease(ctx, id, max(seq, l.Seq)); werr != nil {
		s.log.Warn("read side did not show a settled lease in time", "lease_id", id, "err", werr)
	}
	if seq == 0 {
		return l, nil
	}
	return l, events.Errorf(events.ETimeout, "The database did not finish creating the user in time; the lease was not created and nothing was left behind. Try again.")
}

// failure is the answer to a create whose lease failed. A lease that failed at or after
// its expiry failed for it (the worker saw the expiry pass while the user was made, or
// the requester's deadline outlasted a short TTL): the answer says so, as when the
// expiry is recorded first.
func failure(l events.Lease) error {
	switch events.Code(l.FailCode) {
	case events.ETargetUnavailable:
		return events.Errorf(events.ETargetUnavailable, "The target database could not be reached, refused the admin login, or did not let the admin "+
			"create the user in time (on MariaDB, e.g. a backup's global read lock); an administrator finds the reason in the audit's "+
			"lease.failed event. No lease was created.")
	case events.ETimeout:
		if l.EndedAt != nil && !l.EndedAt.Before(l.ExpiresAt) {
			return events.ErrExpiredBeforeActivated
		}
		return events.Errorf(events.ETimeout, "The database did not finish creating the user in time; the lease was not created and nothing was left behind. Try again.")
	case events.ENotFound:
		return events.Errorf(events.ENotFound, "The target was removed while the lease was being created; no lease was created.")
	}
	return events.Errorf(events.ETargetUnavailable, "The target database refused to create the user; no lease was created.")
}

func capTTL(caps ...int) int {
	m := events.MaxTTLSeconds
	for _, c := range caps {
		if c > 0 && c < m {
			m = c
		}
	}
	return m
}

// readCap is a max_ttl_seconds read with err. A cap that cannot be read is not taken
// for none (the read's failure is returned: the renewal waits for the store); one of a
// target or client removed caps nothing (the lease keeps its own limits).
func readCap(seconds int, err error) (int, error) {
	if events.ErrorCode(err) == events.ENotFound {
		return 0, nil
	}
	return seconds, err
}

// RevokeLease revokes lease id on behalf of actor and waits until its user is dropped.
// Whatever the answer, once the revocation is recorded it is retried until the user is
// gone. ENotFound for an unknown or ended lease; ETargetUnavailable or ETimeout (saying
// the revocation goes on) when the database does not let it finish.
func (s *Service) RevokeLease(ctx context.Context, id, actor string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	w, err := s.cfg.Projections.WatchLease(id, []string{events.AttemptSubject(id)}, nil)
	if err != nil {
		return notRecorded(err)
	}
	defer w.Stop()
	l, seq, err := s.cfg.Store.DecideLease(ctx, id, func(l events.Lease) (*events.Event, error) {
		return l.Revoke(actor, time.Now()) // nil when already revoking: wait like the first caller
	})
	if err != nil {
		return notRecorded(err)
	}
	recorded := max(seq, l.Seq) // the sequence at which the revocation stands in the stream
	_, err = w.Until(ctx, func(l events.Lease) bool { return l.Status.Ended() }, revokeFailure)
	if err == nil {
		s.quotas.ended(l.ClientID, id) // its slot is free from this answer on
		return nil
	}
	// Whatever the answer, a read right after it must show the revocation.
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer wcancel()
	if _, werr := s.cfg.Projections.WaitLease(wctx, id, recorded); werr != nil {
		s.log.Warn("read side did not show a recorded revocation in time", "lease_id", id, "err", werr)
	}
	switch code := events.ErrorCode(err); code {
	case events.ETargetUnavailable:
		return events.Errorf(code, "%s The revocation is recorded (status: revoking) and is retried until the user is dropped.", events.ErrorMessage(err))
	case events.ETimeout:
		return events.Errorf(code, "The database did not finish dropping the user within the server's deadline. "+
			"The revocation is recorded (status: revoking) and is retried until the user is dropped.")
	}
	return err
}

// AbandonLease revokes lease id on behalf of actor, an admin, and gives its user's drop
// up if an attempt made here and now fails: for a database gone for good, whose
// revocations would otherwise be retried without end, holding their clients' max_leases
// slots and their target from removal. An active or pending lease's revocation is
// recorded first; then, whatever the workers' attempts so far (a database may be back),
// this makes one of its own, and records the drop, or that it was given up. An attempt
// not made for a reason that may pass gives nothing up (503). It returns the lease as it
// ended: Abandoned false when its user was dropped after all. An abandoned lease's user
// may remain on the database (a PostgreSQL one cannot log in past its expiry); syvault
// reconcile drops it once the database is back, while the target is registered. A
// request cancelled by its client gives nothing up.
func (s *Service) AbandonLease(ctx context.Context, id, actor string) (events.Lease, error) {
	return s.abandon(ctx, id, actor, nil)
}

// serversDown is what one forced removal learned of the servers its leases' users are
// on (a target moved keeps its older leases on the old one): once an attempt on one
// failed and it took no TCP connection, its other leases are given up without an attempt
// each (each would wait as long again). A server that is up, however slow or locked, is
// asked for each of its leases. Each server is probed once per removal.
type serversDown struct {
	mu     sync.Mutex
	probes map[string]*serverProbe
}

type serverProbe struct {
	once sync.Once
	gone atomic.Bool
}

// serverOf names the server lease l's user is on.
func serverOf(l events.Lease) string {
	if l.Spec == nil {
		return ""
	}
	t := l.Spec.Target
	return string(t.Engine) + "://" + net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
}

func (d *serversDown) probe(l events.Lease) *serverProbe {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.probes == nil {
		d.probes = map[string]*serverProbe{}
	}
	p := d.probes[serverOf(l)]
	if p == nil {
		p = &serverProbe{}
		d.probes[serverOf(l)] = p
	}
	return p
}

// gone reports whether an earlier attempt of the removal found l's server gone.
func (d *serversDown) gone(l events.Lease) bool {
	return d != nil && d.probe(l).gone.Load()
}

// learn probes l's server, once per removal, after an attempt on it failed with the
// database not answering (the others failing meanwhile wait for its answer). A probe
// cut short by ctx learns nothing.
func (d *serversDown) learn(ctx context.Context, p Preparer, l events.Lease, failed error) {
	if d == nil || !databaseDown(failed) {
		return
	}
	pr := d.probe(l)
	pr.once.Do(func() {
		if up, err := p.Reachable(ctx, l); err == nil && !up {
			pr.gone.Store(true)
		}
	})
}

// databaseDown says a drop attempt's err is the database not answering (unreachable,
// or not in time).
func databaseDown(err error) bool {
	code := events.ErrorCode(err)
	return code == events.ETargetUnavailable || code == events.ETimeout || errors.Is(err, context.DeadlineExceeded)
}

// abandon is AbandonLease; down, for a target's forced removal, shares what one attempt
// learned of a server with the leases of the others on it.
func (s *Service) abandon(parent context.Context, id, actor string, down *serversDown) (events.Lease, error) {
	ctx, cancel := context.WithTimeout(parent, s.cfg.RequestTimeout)
	defer cancel()
	l, _, err := s.cfg.Store.DecideLease(ctx, id, func(l events.Lease) (*events.Event, error) {
		return l.Revoke(actor, time.Now()) // nil when already revoking
	})
	if err != nil {
		return events.Lease{}, notRecorded(err)
	}
	if l.Status != events.StatusRevoking { // a fold from before the revocation recorded now
		if l, err = s.cfg.Store.LoadLease(ctx, id); err != nil {
			return l, notRecorded(err)
		}
	}
	// The attempt and the probe, outside any append's deadline, each with a bound of
	// its own (half a request timeout; a few seconds): with the revocation's record and
	// the outcome's, the answer comes within the server's write timeout.
	dropped, reason := false, events.ReasonAbandonedUnreachable
	if l.Status == events.StatusRevoking && !down.gone(l) {
		attempt, cancel := context.WithTimeout(parent, s.cfg.RequestTimeout/2)
		attempted, failed := s.cfg.Preparer.DropNow(attempt, l)
		cancel()
		switch {
		case failed == nil:
			dropped = true
		case parent.Err() != nil:
			return l, cancelled(parent)
		case attempted:
			reason = events.ReasonAbandoned
			s.log.Warn("a forced revocation's drop failed; giving it up", "lease_id", l.ID, "username", l.Username, "err", failed)
			down.learn(parent, s.cfg.Preparer, l, failed)
		case mayPass(failed):
			s.log.Warn("a forced revocation's drop could not be tried now; nothing given up", "lease_id", l.ID, "err", failed)
			return l, events.Wrap(failed, events.EUnavailable, "The revocation is recorded, but its drop could not be tried now "+
				"(the target's settings could not be read); nothing was given up; send it again.")
		default:
			reason = events.ReasonAbandonedUntried
			s.log.Warn("a forced revocation's drop cannot be tried; giving it up", "lease_id", l.ID, "username", l.Username, "err", failed)
		}
	}
	if parent.Err() != nil {
		return l, cancelled(parent)
	}
	// What it ended in is recorded with a budget of its own, not once its client has gone.
	record, stop := context.WithTimeout(context.WithoutCancel(parent), s.cfg.RequestTimeout/2)
	defer stop()
	var made *events.Event
	l, seq, err := s.cfg.Store.DecideLease(record, id, func(l events.Lease) (*events.Event, error) {
		made = nil
		switch {
		case l.Status != events.StatusRevoking:
			return nil, nil // ended meanwhile: dropped, or given up by another
		case dropped:
			made = l.Dropped(time.Now())
			return made, nil
		}
		e, err := l.Abandon(actor, reason, time.Now())
		made = e
		return e, err
	})
	if err != nil {
		return l, events.Wrap(err, events.ErrorCode(err), "The revocation is recorded, but neither the drop nor its giving up could be; send it again.")
	}
	if made != nil {
		l.Apply(*made, seq)
		if made.Type == events.LeaseDropped {
			// Freed as the worker frees a name it dropped: a redelivery finding the lease
			// ended does not. Losing this costs a reservation until its hold runs out.
			if err := s.usernames.Forget(record, l.Username); err != nil {
				s.log.Warn("could not free a dropped lease's username; it stays reserved until its hold runs out", "lease_id", id, "err", err)
			}
		}
		if made.Type == events.LeaseAbandoned {
			s.log.Warn("a lease's revocation was given up; its user may remain on the database until syvault reconcile drops it",
				"lease_id", id, "record_uid", l.RecordUID, "username", l.Username, "actor", actor)
			if s.cfg.Abandoned != nil {
				s.cfg.Abandoned()
			}
		}
	}
	wait, stopWait := context.WithTimeout(record, 5*time.Second)
	defer stopWait()
	if _, werr := s.cfg.Projections.WaitLease(wait, id, l.Seq); werr != nil {
		s.log.Warn("read side did not show a forced revocation's end in time", "lease_id", id, "err", werr)
	}
	s.quotas.ended(l.ClientID, id)
	return l, nil
}

// mayPass says a drop not tried for err may be tried later: the store slow or away;
// not a target whose settings or password cannot be used.
func mayPass(err error) bool {
	code := events.ErrorCode(err)
	return code == events.EUnavailable || code == events.ETimeout || errors.Is(err, context.DeadlineExceeded)
}

// cancelled is the answer to a forced revocation its client gave up on: nothing given up.
func cancelled(ctx context.Context) error {
	return events.Wrap(ctx.Err(), events.EUnavailable, "The request was cancelled: the revocation is recorded and goes on; nothing was given up.")
}

// notRecorded is the answer to a revocation the store did not (or may not have)
// recorded: a timeout there is not the 504 that says "recorded, and retried until the
// user is dropped", which a client may take for done, but a 503 asking it to try again
// (a retry of a revocation that did land is harmless: it waits like the first).
func notRecorded(err error) error {
	if events.ErrorCode(err) == events.ETimeout {
		return events.Wrap(err, events.EUnavailable, "The event store did not answer in time and the revocation may not be recorded; try again shortly.")
	}
	return err
}

// revokeFailure ends a revocation's wait with the failure a worker reported for one of
// its attempts: the caller learns at once, while the work goes on in the background.
func revokeFailure(_ string, data []byte) error {
	if a, ok := events.DecodeAttempt(data); ok && a.Op == events.AttemptRevoke {
		return a.Err()
	}
	return nil
}

// RenewLease moves lease id's expiry to now + ttlSeconds on behalf of client, never past
// created_at + 24 h nor the target's and client's caps, and returns the lease as the
// read side shows it once the database holds the new expiry (PostgreSQL's VALID UNTIL:
// a login right after the answer must not be refused under the old one). ENotFound for
// an ended lease or one whose expires_at has passed; EConflict for one that is not
// active; ETargetUnavailable or ETimeout (saying the renewal stands and is retried) when
// the database does not take it in time.
func (s *Service) RenewLease(ctx context.Context, id string, client events.Client, ttlSeconds int) (events.Lease, error) {
	cur, err := s.cfg.Projections.Lease(ctx, id)
	if err != nil {
		return events.Lease{}, err
	}
	t, err := s.cfg.Projections.Target(ctx, cur.RecordUID)
	targetMax, err := readCap(t.MaxTTLSeconds, err)
	if err != nil {
		return events.Lease{}, err
	}
	// The lease's client's cap binds whoever renews it: an admin's renewal would
	// otherwise give an app's credentials a life past the app's own maximum.
	ownerMax := 0
	if cur.ClientID != client.ClientID {
		o, err := s.cfg.Projections.Client(ctx, cur.ClientID)
		if ownerMax, err = readCap(o.MaxTTLSeconds, err); err != nil {
			return events.Lease{}, err
		}
	}
	maxTTL := time.Duration(capTTL(targetMax, client.MaxTTLSeconds, ownerMax)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	w, err := s.cfg.Projections.WatchLease(id, []string{events.AttemptSubject(id)}, nil)
	if err != nil {
		return events.Lease{}, err
	}
	defer w.Stop()
	_, seq, err := s.cfg.Store.DecideLease(ctx, id, func(l events.Lease) (*events.Event, error) {
		e, err := l.Renew(client.ClientID, time.Now(), ttlSeconds, maxTTL)
		if err != nil {
			return nil, err
		}
		return &e, nil
	})
	if err != nil {
		return events.Lease{}, err
	}
	// A lease revoked or expired meanwhile needs no new expiry (the worker skips it): its
	// answer is the read side's.
	_, err = w.Until(ctx, func(l events.Lease) bool { return l.Seq >= seq && l.Status != events.StatusActive }, func(_ string, data []byte) error {
		a, ok := events.DecodeAttempt(data)
		switch {
		case !ok || a.Op != events.AttemptRenew:
			return nil
		case a.Applied >= seq:
			return errApplied
		}
		return a.Err()
	})
	if err != nil && !errors.Is(err, errApplied) {
		s.log.Warn("renewal recorded but not yet applied", "lease_id", id, "err", err)
		switch code := events.ErrorCode(err); code {
		case events.ETargetUnavailable:
			return events.Lease{}, events.Errorf(code, "%s The renewal is recorded and is retried until the database takes the new expiry.", events.ErrorMessage(err))
		case events.ETimeout:
			return events.Lease{}, events.Errorf(code, "The database did not take the new expiry within the server's deadline. "+
				"The renewal is recorded and is retried until it does.")
		}
		return events.Lease{}, err
	}
	// The read side has most likely shown the renewal before the database took it; the
	// wait is the read-your-write guarantee, bounded by the projection itself.
	return s.cfg.Projections.WaitLease(context.WithoutCancel(ctx), id, seq)
}

// errApplied ends a renewal's wait: a worker reported the database holds the new expiry.
var errApplied = errors.New("renewal applied")

const (
	usernameAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	passwordAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789#$%&*+-=?@^_~!"
	passwordLength   = 24
)

func randomString(alphabet string, n int) string {
	b := make([]byte, n)
	limit := big.NewInt(int64(len(alphabet)))
	for i := range b {
		v, err := rand.Int(rand.Reader, limit)
		if err != nil {
			panic(err) // crypto/rand does not fail on supported platforms
		}
		b[i] = alphabet[v.Int64()]
	}
	return string(b)
}

func newUsername() string { return "vf_tmp_" + randomString(usernameAlphabet, 8) }

// newPassword returns 24 characters from crypto/rand with at least one symbol, one digit,
// one lower and one upper case letter, since some databases' password policies ask so.
func newPassword() string {
	for {
		p := randomString(passwordAlphabet, passwordLength)
		var lower, upper, digit, symbol bool
		for _, r := range p {
			switch {
			case r >= 'a' && r <= 'z':
				lower = true
			case r >= 'A' && r <= 'Z':
				upper = true
			case r >= '0' && r <= '9':
				digit = true
			default:
				symbol = true
			}
		}
		if lower && upper && digit && symbol {
			return p
		}
	}
}
