package chaos

import (
	"fmt"
	"sort"
	"time"

	"github.com/syvault/syvault/events"
)

// Invariant names, as the report prints them.
const (
	InvAnswered  = "a. answered 201: active with a working login, or ended with its user gone"
	InvRevoked   = "b. revoke accepted: ends revoked, its user gone"
	InvExpiry    = "c. no user outlives its expires_at by more than 10 s after the faults stop"
	InvOrphans   = "d. no orphan user, no user re-created after its lease ended, every lease settled"
	InvClean     = "e. clean 5xx answers, no panic, projections equal to the stream and to a rebuild"
	InvReadBack  = "f. a GET right after a 201 create or a 204 revoke, through another API process, shows what it answered"
	InvRemoved   = "g. a target registered is removed for good: its removal recorded, its setup role gone, none of its leases active"
	expiryLeeway = 10 * time.Second
)

// Violation is one broken promise.
type Violation struct {
	Invariant string
	What      string
}

func (v Violation) String() string { return v.Invariant[:2] + " " + v.What }

// Observation is what the checks look at, gathered after the settle: the stream's lease
// histories, the lease users that exist in each database (read before the stream, so
// that every user is accounted for by what the stream says later), and the load's answers.
type Observation struct {
	// UsersAt is when the users were listed.
	UsersAt time.Time
	// FaultsStopped is when the last fault was over (the last restart, the last SIGCONT).
	FaultsStopped time.Time
	// RunningUntil, when set, is when the SyVault processes were stopped for the final
	// checks: expiries due after it had nobody to carry them out.
	RunningUntil time.Time
	Histories    map[string]*History
	Users        map[string]map[string]bool // engine → lease users that exist
	Leases       []Lease                    // answered 201
	// Setups are the targets' setup roles that exist (engine → record uid), listed with
	// Users; Targets is each recorded target's last event type.
	Setups  map[string]map[string]bool
	Targets map[string]events.Type
	// Churned are the targets the run registered to remove.
	Churned []ChurnTarget
	// Login logs in as an active lease's user with its password.
	Login func(Lease) error
}

// byUsername indexes the histories by the lease user they name.
func byUsername(hs map[string]*History) map[string]string {
	out := map[string]string{}
	for id, h := range hs {
		for _, e := range h.Events {
			if e.Type == events.LeaseRequested && e.Lease != nil {
				out[e.Lease.Username] = id
			}
		}
	}
	return out
}

func exists(o Observation, engine, user string) bool { return o.Users[engine][user] }

// CheckAnswered is invariant a.
func CheckAnswered(o Observation) []Violation {
	var out []Violation
	bad := func(format string, args ...any) {
		out = append(out, Violation{InvAnswered, fmt.Sprintf(format, args...)})
	}
	for _, le := range o.Leases {
		h := o.Histories[le.ID]
		if h == nil {
			bad("lease %s was answered 201 but has no events", le.ID)
			continue
		}
		l := h.Fold()
		switch {
		case l.Status == events.StatusActive:
			if !exists(o, le.Engine, le.Username) {
				bad("lease %s is active but its user %s does not exist", le.ID, le.Username)
			} else if l.ExpiresAt.After(o.UsersAt.Add(3*time.Second)) && o.Login != nil {
				// Leases about to expire may be refused by the time the login runs (PostgreSQL's
				// VALID UNTIL): invariant c covers them.
				if err := o.Login(le); err != nil {
					bad("lease %s is active but its user %s cannot log in: %v", le.ID, le.Username, err)
				}
			}
		case l.Status.Ended():
			if exists(o, le.Engine, le.Username) {
				bad("lease %s ended %s but its user %s exists", le.ID, l.Status, le.Username)
			}
		default:
			bad("lease %s is still %s after the settle", le.ID, l.Status)
		}
	}
	return out
}

// CheckRevoked is invariant b. A revoke that came when the lease's expiry was already
// recorded ends it expired: the revocation had nothing left to do.
func CheckRevoked(o Observation) []Violation {
	var out []Violation
	for _, le := range o.Leases {
		if !le.RevokeAccepted {
			continue
		}
		h := o.Histories[le.ID]
		if h == nil {
			continue // invariant a reports it
		}
		l := h.Fold()
		ok := l.Status == events.StatusRevoked
		if l.Status == events.StatusExpired {
			for _, e := range h.Events {
				if e.Type == events.LeaseExpired && !e.Time.After(le.RevokedAt) {
					ok = true
				}
			}
		}
		if !ok {
			out = append(out, Violation{InvRevoked, fmt.Sprintf("lease %s: revoke answered %d%s, lease %s", le.ID, le.RevokeStatus, le.RevokeAnswer, l.Status)})
		}
		if exists(o, le.Engine, le.Username) {
			out = append(out, Violation{InvRevoked, fmt.Sprintf("lease %s: revoke answered %d, user %s still exists", le.ID, le.RevokeStatus, le.Username)})
		}
	}
	return out
}

// CheckExpiry is invariant c: at UsersAt, no user exists whose lease expired more than
// 10 s before, counting from when the faults stopped at the earliest.
func CheckExpiry(o Observation) []Violation {
	var out []Violation
	users := byUsername(o.Histories)
	for engine, us := range o.Users {
		for u := range us {
			id, ok := users[u]
			if !ok {
				continue // an orphan: invariant d
			}
			l := o.Histories[id].Fold()
			deadline := l.ExpiresAt
			if deadline.Before(o.FaultsStopped) {
				deadline = o.FaultsStopped
			}
			at := o.UsersAt
			if !o.RunningUntil.IsZero() && o.RunningUntil.Before(at) {
				at = o.RunningUntil
			}
			if late := at.Sub(deadline); late > expiryLeeway {
				out = append(out, Violation{InvExpiry, fmt.Sprintf("%s user %s (lease %s, %s) exists %s past its expiry %s",
					engine, u, id, l.Status, late.Round(time.Second), l.ExpiresAt.Format(time.RFC3339))})
			}
		}
	}
	return out
}

// CheckOrphans is invariant d: every lease user that exists belongs to a lease that has
// not ended; no lease was requested or activated again after it ended (or its end was
// recorded); and every lease has settled (none pending or revoking).
func CheckOrphans(o Observation) []Violation {
	var out []Violation
	bad := func(format string, args ...any) {
		out = append(out, Violation{InvOrphans, fmt.Sprintf(format, args...)})
	}
	users := byUsername(o.Histories)
	for engine, us := range o.Users {
		for u := range us {
			id, ok := users[u]
			if !ok {
				bad("%s user %s: no lease of the store names it", engine, u)
				continue
			}
			if l := o.Histories[id].Fold(); l.Status.Ended() {
				bad("%s user %s: its lease %s has ended (%s)", engine, u, id, l.Status)
			}
		}
	}
	ids := make([]string, 0, len(o.Histories))
	for id := range o.Histories {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		h := o.Histories[id]
		ended := events.Type("")
		for _, e := range h.Events {
			switch e.Type {
			case events.LeaseFailed, events.LeaseRevoked, events.LeaseExpired, events.LeaseDropped:
				if ended == "" {
					ended = e.Type
				}
			case events.LeaseActivated, events.LeaseRequested:
				if ended != "" {
					bad("lease %s: %s after %s", id, e.Type, ended)
				}
			}
		}
		if l := h.Fold(); l.Status == events.StatusPending || l.Status == events.StatusRevoking {
			bad("lease %s is still %s after the settle", id, l.Status)
		}
	}
	return out
}

// Check runs invariants a to d and g. Invariant e's parts (answers, logs, projections) are
// gathered by the run itself.
func Check(o Observation) []Violation {
	var out []Violation
	out = append(out, CheckAnswered(o)...)
	out = append(out, CheckRevoked(o)...)
	out = append(out, CheckExpiry(o)...)
	out = append(out, CheckOrphans(o)...)
	out = append(out, CheckRemovedTargets(o)...)
	return out
}
