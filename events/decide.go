package events

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"time"
)

// The decisions. Every change to SyVault is an event one of these functions returns: a
// lease's are methods of Lease, taking the state folded from its events and the facts of
// the moment, and returning the event to append (with its dedupe id) or an *Error saying
// why not; a nil event with a nil error means there is nothing to do. No other package
// builds an event, so the lease state machine and its dedupe ids live here alone.
//
// Dedupe ids make a retried append land once: a lease's requested, activated, failed,
// revoked, dropped and abandoned events can each happen once, so their ids are fixed; a renewal is
// one per state it was decided on; an expiry one per expiry time.

// LeaseRequest is what requesting a lease takes.
type LeaseRequest struct {
	LeaseID, ClientID string
	Target            Target
	TTLSeconds        int
	Username          string
	// SealedPassword is the lease password, sealed under the master key.
	SealedPassword []byte
	// SealedVerifier, optional, is the password's verifier prepared ahead (PostgreSQL's
	// SCRAM-SHA-256), sealed under the master key with VerifierAAD.
	SealedVerifier []byte
	// Now is when the request is made; Deadline when its requester stops waiting.
	Now, Deadline time.Time
}

// RequestLease returns the lease.requested event of a new lease: created_at is Now cut to
// the second, and expires_at exactly created_at plus the TTL.
func RequestLease(r LeaseRequest) Event {
	return Event{Type: LeaseRequested, ID: r.LeaseID + ".requested", Time: r.Now.UTC(), ClientID: r.ClientID,
		RecordUID: r.Target.RecordUID, LeaseID: r.LeaseID, TTLSeconds: r.TTLSeconds,
		ExpiresAt: LeaseCreatedAt(r.Now).Add(time.Duration(r.TTLSeconds) * time.Second),
		Lease: &LeaseSpec{Username: r.Username, SealedPassword: r.SealedPassword, SealedVerifier: r.SealedVerifier,
			Deadline: r.Deadline.UTC(), Target: r.Target}}
}

// Activate records that the lease's user exists with its grants. Only a pending lease
// can be activated; otherwise EConflict (it was revoked or failed meanwhile).
func (l Lease) Activate(now time.Time) (Event, error) {
	if l.Status != StatusPending {
		return Event{}, Errorf(EConflict, "Lease %q is %s, not pending.", l.ID, l.Status)
	}
	return Event{Type: LeaseActivated, ID: l.ID + ".activated", Time: now.UTC(), ClientID: l.ClientID,
		RecordUID: l.RecordUID, LeaseID: l.ID, Outcome: OutcomeOK}, nil
}

// Fail records that the lease's user was not created, for cause (its code and message
// are recorded, never its internals). Only a pending lease can fail: for any other there
// is nothing to do, since it moved on (activated, revoked, or failed already).
func (l Lease) Fail(now time.Time, cause error) *Event {
	if l.Status != StatusPending {
		return nil
	}
	return &Event{Type: LeaseFailed, ID: l.ID + ".failed", Time: now.UTC(), ClientID: l.ClientID,
		RecordUID: l.RecordUID, LeaseID: l.ID, Outcome: string(ErrorCode(cause)), Reason: ErrorMessage(cause)}
}

// Revoke records a revocation requested by actor. An ended lease is ENotFound; a lease
// already revoking needs nothing more.
func (l Lease) Revoke(actor string, now time.Time) (*Event, error) {
	switch {
	case l.Status.Ended():
		return nil, Errorf(ENotFound, "Lease %q has already ended.", l.ID)
	case l.Status == StatusRevoking:
		return nil, nil
	}
	return &Event{Type: LeaseRevoked, ID: l.ID + ".revoked", Time: now.UTC(), ClientID: actor,
		RecordUID: l.RecordUID, LeaseID: l.ID, Outcome: OutcomeOK}, nil
}

// ReasonTargetRemoved is the reason a revocation gives when the lease's target was
// removed (RevokeForRemoval). It is recorded in events and read back from them
// (Lease.ForRemoval): never reword it.
const ReasonTargetRemoved = "The lease's target was removed."

// RevokeForRemoval is Revoke for a lease whose target is removed: the event says so, for
// the audit log and for the revoker, which removes the target's shared setup again once
// the user is dropped.
func (l Lease) RevokeForRemoval(actor string, now time.Time) (*Event, error) {
	e, err := l.Revoke(actor, now)
	if e != nil {
		e.Reason = ReasonTargetRemoved
	}
	return e, err
}

// Renew moves the lease's expiry to now + ttl, within the caps RenewExpiry applies. An
// ended lease, or one whose expires_at has passed, is ENotFound; a lease that is not
// active is EConflict.
func (l Lease) Renew(actor string, now time.Time, ttlSeconds int, maxTTL time.Duration) (Event, error) {
	if l.Status.Ended() {
		return Event{}, Errorf(ENotFound, "Lease %q has already ended.", l.ID)
	}
	exp, ok := l.RenewExpiry(now, time.Duration(ttlSeconds)*time.Second, maxTTL)
	switch {
	case !ok && l.Status == StatusActive:
		return Event{}, Errorf(ENotFound, "Lease %q expired at %s; request a new one.", l.ID, l.ExpiresAt.Format(time.RFC3339))
	case !ok:
		return Event{}, Errorf(EConflict, "Only an active lease can be renewed; this one is %s.", l.Status)
	}
	return Event{Type: LeaseRenewed, ID: l.ID + ".renewed." + strconv.FormatUint(l.Seq, 10), Time: now.UTC(), Base: l.base,
		ClientID: actor, RecordUID: l.RecordUID, LeaseID: l.ID, TTLSeconds: ttlSeconds, ExpiresAt: exp, Outcome: OutcomeOK}, nil
}

// Expire records the expiry a schedule armed for due fired. A lease that has ended or is
// revoking needs nothing, nor does one a renewal has since moved past due (its new
// expiry is armed by the renewal). An expiry is never early: a schedule fires on the
// NATS server's clock, and one ahead of now's fired it before the lease is due, which
// is an error, for the schedule's delivery to come back.
func (l Lease) Expire(due, now time.Time) (*Event, error) {
	if (l.Status != StatusActive && l.Status != StatusPending) || due.Before(l.ExpiresAt) {
		return nil, nil
	}
	if now.Before(l.ExpiresAt) {
		return nil, Errorf(EUnavailable, "Lease %s expires at %s, %s from now by this process's clock: its expiry schedule fired early.",
			l.ID, l.ExpiresAt.Format(time.RFC3339), l.ExpiresAt.Sub(now).Round(time.Millisecond))
	}
	return &Event{Type: LeaseExpired, ID: ExpiredID(l.ID, due), Time: now.UTC(), ClientID: l.ClientID,
		RecordUID: l.RecordUID, LeaseID: l.ID, ExpiresAt: due}, nil
}

// Dropped records that a revoking lease's user is gone. For any other lease there is
// nothing to do.
func (l Lease) Dropped(now time.Time) *Event {
	if l.Status != StatusRevoking {
		return nil
	}
	return &Event{Type: LeaseDropped, ID: l.ID + ".dropped", Time: now.UTC(), ClientID: l.ClientID,
		RecordUID: l.RecordUID, LeaseID: l.ID, Outcome: string(l.Ending)}
}

// What a lease.abandoned event says: its drop given up after an attempt of its own
// failed (or ran out of time, a wait for a connection included); in a target's forced
// removal, with no attempt, once another lease's attempt failed and their server took
// no connection; or its drop not to be tried for good.
const (
	ReasonAbandoned            = "An admin gave up dropping the user after a drop attempt failed or ran out of time: the user may remain on the database (a PostgreSQL one cannot log in past its expiry); once the database is back, syvault reconcile --apply drops it while the target is registered (a MySQL 8 user without a marker is only reported)."
	ReasonAbandonedUnreachable = "An admin gave up dropping the user, whose server took no connection: the user may remain on the database (a PostgreSQL one cannot log in past its expiry)."
	ReasonAbandonedUntried     = "An admin gave up dropping the user, whose drop cannot be tried (the target's settings or admin password cannot be used): the user may remain on the database (a PostgreSQL one cannot log in past its expiry)."
)

// Abandon records that actor, an admin, gives up dropping a revoking lease's user, for
// reason (see the Reason constants): for a database gone for good, whose revocations
// would otherwise be retried without end. The
// lease ends as its revocation or expiry would have (its slot freed, its target
// removable). An active or pending lease is EConflict (revoke it first: its drop may yet
// succeed), an ended one ENotFound.
func (l Lease) Abandon(actor, reason string, now time.Time) (*Event, error) {
	switch {
	case l.Status.Ended():
		return nil, Errorf(ENotFound, "Lease %q has already ended.", l.ID)
	case l.Status != StatusRevoking:
		return nil, Errorf(EConflict, "Lease %q is %s: only a revocation that could not finish can be given up; revoke it first.", l.ID, l.Status)
	}
	return &Event{Type: LeaseAbandoned, ID: l.ID + ".abandoned", Time: now.UTC(), ClientID: actor,
		RecordUID: l.RecordUID, LeaseID: l.ID, Username: l.Username, Outcome: string(l.Ending), Reason: reason}, nil
}

// ExpiryDue is what an expiry second's schedule publishes when it fires: the second. The
// leases listed under it are each decided on with Expire.
func ExpiryDue(at time.Time) Event {
	return Event{Type: LeaseExpired, ID: "expiry." + strconv.FormatInt(at.Unix(), 10), ExpiresAt: at.UTC()}
}

// ExpiredID is the dedupe id of a lease's expiry for a given expiry time: firings of the
// same schedule collapse into one event.
func ExpiredID(leaseID string, at time.Time) string {
	return leaseID + ".expired." + strconv.FormatInt(at.UnixNano(), 10)
}

// RegisterTarget records a new target, verified by the caller, on behalf of actor.
func RegisterTarget(t Target, actor string, now time.Time) Event {
	return Event{Type: TargetRegistered, ID: t.RecordUID + ".registered", Time: now.UTC(), ClientID: actor,
		RecordUID: t.RecordUID, Outcome: OutcomeOK, Target: &t}
}

// UpdateTarget records a target's new settings, decided on its events up to after.
func UpdateTarget(t Target, actor string, after uint64, now time.Time) Event {
	return Event{Type: TargetUpdated, ID: t.RecordUID + ".updated." + strconv.FormatUint(after, 10) + "." + contentTag(t), Time: now.UTC(),
		ClientID: actor, RecordUID: t.RecordUID, Outcome: OutcomeOK, Target: &t}
}

// ResealTarget records a target whose admin password was sealed again under a new master
// key, decided on its events up to after.
func ResealTarget(t Target, after uint64, now time.Time) Event {
	return Event{Type: TargetResealed, ID: t.RecordUID + ".resealed." + strconv.FormatUint(after, 10), Time: now.UTC(),
		RecordUID: t.RecordUID, Outcome: OutcomeOK, Target: &t}
}

// RemoveTarget records a target's removal, appended on condition that the target is
// still as the removal read it; its dedupe id makes a retried removal land once.
func RemoveTarget(recordUID, actor string, now time.Time) Event {
	return Event{Type: TargetRemoved, ID: recordUID + ".removed", Time: now.UTC(), ClientID: actor, RecordUID: recordUID, Outcome: OutcomeOK}
}

// RegisterClient records a new client on behalf of actor (empty for the first admin,
// which nobody registers).
func RegisterClient(c Client, actor string, now time.Time) Event {
	return Event{Type: ClientRegistered, ID: c.ClientID + ".registered", Time: now.UTC(), ClientID: actor, Outcome: OutcomeOK, Client: &c}
}

// contentTag tells apart the dedupe ids of two updates decided on the same last event
// with different content: with one id, the second would be taken for a retry of the
// first (deduplicated by NATS, or matched with the subject's last message after its
// sequence check failed) and answered as stored, while only the first was.
func contentTag(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:9])
}

// UpdateClient records c replacing the client of the same id by actor, decided on the
// client's events up to after.
func UpdateClient(c Client, actor string, after uint64, now time.Time) Event {
	return Event{Type: ClientUpdated, ID: c.ClientID + ".updated." + strconv.FormatUint(after, 10) + "." + contentTag(c), Time: now.UTC(), ClientID: actor,
		Outcome: OutcomeOK, Client: &c}
}

// RemoveClient records a client's removal by actor. Like a target's, it needs no ordering
// condition.
func RemoveClient(clientID, actor string, now time.Time) Event {
	return Event{Type: ClientRemoved, ID: clientID + ".removed", Time: now.UTC(), ClientID: clientID, Outcome: OutcomeOK,
		Reason: "removed by " + actor}
}

// Denied records a refused request of client: what it tried (action), on what, and the
// refusal's code. Each refusal is its own event.
func Denied(client, action, recordUID, leaseID string, cause error, now time.Time) Event {
	return Event{Type: AccessDenied, ID: "denied." + rand.Text(), Time: now.UTC(), ClientID: client, RecordUID: recordUID,
		LeaseID: leaseID, Action: action, Outcome: string(ErrorCode(cause))}
}

// KeyOperation records an operation on the deployment's keys (t is TokenKeyRotated or
// TokenKeysResealed); id makes a retried record land once; reason names key ids, never
// keys.
func KeyOperation(t Type, id, reason string, now time.Time) Event {
	return Event{Type: t, ID: string(t) + "." + id, Time: now.UTC(), Outcome: OutcomeOK, Reason: reason}
}
