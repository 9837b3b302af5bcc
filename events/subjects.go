package events

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Streams and subjects. The events stream is the audit log: it has no age limit and
// refuses deletes and purges. Expiry schedules live in a second stream because JetStream
// only fires schedules in a stream that allows purges.
const (
	EventsStream    = "SYVAULT_EVENTS"
	SchedulesStream = "SYVAULT_SCHEDULES"

	leasePrefix  = "syvault.lease."
	targetPrefix = "syvault.target."
	schedPrefix  = "syvault.sched."
	duePrefix    = "syvault.due."
	expPrefix    = "syvault.exp."

	// LeaseSubjects and TargetSubjects filter the events stream by aggregate.
	LeaseSubjects  = leasePrefix + "*"
	TargetSubjects = targetPrefix + "*"
	// ScheduleSubjects hold one pending schedule per second at which some lease expires;
	// DueSubjects receive them when due; ExpirySubjects list, per second, the leases
	// that expire then. (Older versions scheduled each lease on its own subjects.)
	ScheduleSubjects = schedPrefix + "*"
	DueSubjects      = duePrefix + "*"
	ExpirySubjects   = expPrefix + "*"
)

// idPattern is what a record uid, lease id or client id may look like: SyVault makes them
// base62 or UUIDs. Ids become subject tokens and KV keys, so a NATS wildcard (* or >), a
// dot or a space must never pass for one.
var idPattern = regexp.MustCompile(`^[0-9A-Za-z_-]{1,64}$`)

// ValidID reports whether s can name a record, lease or client.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// LeaseSubject is the subject that holds every event of one lease, in order.
func LeaseSubject(leaseID string) string { return leasePrefix + leaseID }

// TargetSubject is the subject that holds every event of one target.
func TargetSubject(recordUID string) string { return targetPrefix + recordUID }

// ScheduleSubject holds the single pending schedule of the expiry second second (Unix
// time): publishing another replaces it.
func ScheduleSubject(second int64) string { return schedPrefix + strconv.FormatInt(second, 10) }

// DueSubject receives the expiry second second when its schedule fires.
func DueSubject(second int64) string { return duePrefix + strconv.FormatInt(second, 10) }

// ExpirySecond is the second whose schedule expires a lease ending at at: at itself when
// it is a whole second, else the next one, so an expiry never fires early.
func ExpirySecond(at time.Time) int64 {
	second := at.Unix()
	if at.After(time.Unix(second, 0)) {
		second++
	}
	return second
}

// ExpirySubject lists the leases that expire at second, one message (a lease id) each.
func ExpirySubject(second int64) string { return expPrefix + strconv.FormatInt(second, 10) }

// IDFromSubject returns the last token of a subject: the lease id or record uid.
func IDFromSubject(subject string) string {
	for i := len(subject) - 1; i >= 0; i-- {
		if subject[i] == '.' {
			return subject[i+1:]
		}
	}
	return subject
}

// OneToken reports whether id can stand as one token of a subject: not empty, no dot,
// no wildcard, no white space. An id read from an event's body is checked before it
// names a subject filter, where "*" (or "", which a filter takes for any) would match
// every id.
func OneToken(id string) bool {
	return id != "" && !strings.ContainsAny(id, ".*> \t\r\n")
}

// AttemptSubject carries, over core NATS and outside any stream, an Attempt for each
// failed revocation attempt and each renewal the database took or refused, so a caller
// waiting on a revoke or a renew answers at once instead of waiting out its deadline.
// Losing one costs that caller a timeout answer, nothing more: the work is retried anyway.
func AttemptSubject(leaseID string) string { return "_syvault.attempt." + leaseID }

// WaitingSubject is answered, over core NATS, by the API process waiting to hand a new
// lease's credentials to its requester. A worker asks it before activating the lease: no
// responder means the requester is gone (its process died, or it gave up), so nobody
// will ever receive the credentials, and the user is dropped instead.
func WaitingSubject(leaseID string) string { return "_syvault.waiting." + leaseID }
