package events

import (
	"fmt"
	"time"
)

// Status is where a lease is in its life.
type Status string

// Lease statuses. Pending, active and revoking leases have (or may have) a database user;
// revoked, expired and failed ones never will again (an abandoned one's may remain, until
// reconciliation drops it).
const (
	StatusPending  Status = "pending"
	StatusActive   Status = "active"
	StatusRevoking Status = "revoking"
	StatusRevoked  Status = "revoked"
	StatusExpired  Status = "expired"
	StatusFailed   Status = "failed"
)

// MaxTTL is the longest a lease may live, counted from its creation, renewals included.
const MaxTTL = 24 * time.Hour

// Ended reports whether the lease is over: its user is gone (or, for an abandoned lease,
// no longer dropped by its revocation) and will never be created again.
func (s Status) Ended() bool {
	return s == StatusRevoked || s == StatusExpired || s == StatusFailed
}

// Lease is the state of one lease, folded from its events.
type Lease struct {
	ID         string     `json:"lease_id"`
	RecordUID  string     `json:"record_uid"`
	ClientID   string     `json:"client_id,omitempty"`
	Username   string     `json:"username"`
	Status     Status     `json:"status"`
	TTLSeconds int        `json:"ttl_seconds"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  time.Time  `json:"expires_at"`
	EndedAt    *time.Time `json:"ended_at,omitempty"`
	// Ending is the status a revoking lease ends in once its user is dropped, or its drop
	// given up.
	Ending Status `json:"ending,omitempty"`
	// ForRemoval says the lease is revoked because its target was removed
	// (RevokeForRemoval); the records leave it out.
	ForRemoval bool `json:"-"`
	// FailCode is the error code of a failed lease.
	FailCode string `json:"fail_code,omitempty"`
	// Abandoned says an admin gave up its user's drop (LeaseAbandoned): the lease ended
	// as revoked or expired, but its user may still be on the database.
	Abandoned bool `json:"abandoned,omitempty"`
	// Seq is the stream sequence of the last event applied; applying an event at or
	// below it is a no-op, which makes projections idempotent under redelivery.
	Seq uint64 `json:"seq"`

	// Spec is what creating and dropping the user need; projections leave it out.
	Spec *LeaseSpec `json:"-"`

	// base is the sequence of the last event folded that is not a renewal: the Base of
	// the next renewal.
	base uint64
}

// Credentials are what a new lease hands its requester, once: the only place its
// password exists in plaintext outside the worker that sets it.
type Credentials struct {
	Lease    Lease
	Password string
	// Target is the target as the lease was requested on (its address, engine and
	// database make the connection string).
	Target Target
}

// LeaseCreatedAt is a lease's created_at for a request made at t: whole seconds, as the
// API shows it, so that expires_at is exactly created_at plus the TTL. Its request event
// keeps t itself, so the audit orders and filters on the precise time.
func LeaseCreatedAt(t time.Time) time.Time { return t.UTC().Truncate(time.Second) }

// Apply folds one event, stored at stream sequence seq, into the lease. It returns false
// when the event changes nothing: already applied, stale, or not valid in the lease's
// current status. It never fails, so replaying any stream gives one answer.
func (l *Lease) Apply(e Event, seq uint64) bool {
	if seq != 0 && seq <= l.Seq {
		return false
	}
	changed := l.apply(e)
	if seq != 0 {
		l.Seq = seq
		if e.Type != LeaseRenewed {
			l.base = seq
		}
	}
	return changed
}

func (l *Lease) apply(e Event) bool {
	switch e.Type {
	case LeaseRequested:
		if l.Status != "" || e.Lease == nil {
			return false
		}
		l.ID, l.RecordUID, l.ClientID = e.LeaseID, e.RecordUID, e.ClientID
		l.Username = e.Lease.Username
		l.Status = StatusPending
		l.TTLSeconds = e.TTLSeconds
		l.CreatedAt = LeaseCreatedAt(e.Time)
		l.ExpiresAt = e.ExpiresAt
		spec := *e.Lease
		l.Spec = &spec
	case LeaseActivated:
		if l.Status != StatusPending {
			return false
		}
		l.Status = StatusActive
	case LeaseFailed:
		if l.Status != StatusPending {
			return false
		}
		l.end(StatusFailed, e.Time)
		l.FailCode = e.Outcome
	case LeaseRenewed:
		if l.Status != StatusActive {
			return false
		}
		l.ExpiresAt = e.ExpiresAt
		l.TTLSeconds = e.TTLSeconds
	case LeaseRevoked:
		if l.Status != StatusPending && l.Status != StatusActive {
			return false
		}
		l.Status, l.Ending = StatusRevoking, StatusRevoked
		l.ForRemoval = e.Reason == ReasonTargetRemoved
	case LeaseExpired:
		// A schedule armed for an earlier expiry that a renewal has since moved is stale.
		if (l.Status != StatusPending && l.Status != StatusActive) || e.ExpiresAt.Before(l.ExpiresAt) {
			return false
		}
		l.Status, l.Ending = StatusRevoking, StatusExpired
	case LeaseDropped:
		if l.Status != StatusRevoking {
			return false
		}
		l.end(l.Ending, e.Time)
	case LeaseAbandoned:
		if l.Status != StatusRevoking {
			return false
		}
		l.end(l.Ending, e.Time)
		l.Abandoned = true
	default:
		return false
	}
	return true
}

func (l *Lease) end(s Status, at time.Time) {
	l.Status = s
	t := at
	l.EndedAt = &t
}

// HistoryBehind returns an error when l was folded from a history that stops before seq,
// the sequence of the event being handled, and nil otherwise. A reader is handed an event
// by a consumer on one server and reads the lease's history from the stream's leader,
// which may not have applied that event yet: deciding on such a fold, or acknowledging
// the event, acts on a state the stream has already left (a revocation seen as an active
// lease is lost for good). The error is StoreUnavailable's, so the event is retried until
// a read includes it.
func HistoryBehind(l Lease, seq uint64) error {
	if l.Seq >= seq {
		return nil
	}
	return StoreUnavailable(fmt.Errorf("lease %s: its history read ends at seq %d, before the event at %d", l.ID, l.Seq, seq))
}

// Fold builds a lease from its events in stream order; seqs[i] is events[i]'s sequence.
func Fold(evs []Event, seqs []uint64) Lease {
	var l Lease
	for i, e := range evs {
		l.Apply(e, seqs[i])
	}
	return l
}

// RenewExpiry returns the expiry a renewal by ttl at now gives: now+ttl, but never past
// created+24h nor created+maxTTL (the tightest of the target's and client's caps; 0 for
// none). ok is false when the lease cannot be renewed: it is not active, or its expiry
// has passed and only its schedule has yet to fire. A renewal then would bring back
// credentials already due to stop working (PostgreSQL refuses them past VALID UNTIL).
func (l *Lease) RenewExpiry(now time.Time, ttl time.Duration, maxTTL time.Duration) (time.Time, bool) {
	if l.Status != StatusActive || !now.Before(l.ExpiresAt) {
		return time.Time{}, false
	}
	exp := now.Add(ttl)
	if limit := l.CreatedAt.Add(MaxTTL); exp.After(limit) {
		exp = limit
	}
	if maxTTL > 0 {
		if limit := l.CreatedAt.Add(maxTTL); exp.After(limit) {
			exp = limit
		}
	}
	return exp.UTC().Truncate(time.Second), true
}
