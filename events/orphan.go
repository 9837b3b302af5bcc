package events

import "time"

// OrphanDropped records that reconciliation dropped a database user of a target that no
// lease of the store accounts for (its data was lost or restored from an older copy), or
// whose lease has ended. It carries the user's name, the lease that used the name if the
// store knows one, and why; never a password.
const OrphanDropped Type = "orphan.dropped"

const orphanPrefix = "syvault.orphan."

// OrphanSubjects filters the events stream to reconciliation's drops.
const OrphanSubjects = orphanPrefix + "*"

// OrphanSubject holds the drops of one target's left-behind users.
func OrphanSubject(recordUID string) string { return orphanPrefix + recordUID }

// Orphan is a database user of a target that no live lease accounts for.
type Orphan struct {
	RecordUID string
	Username  string
	// LeaseID is the lease that last used the name, when the store knows one.
	LeaseID string
	// Reason says why no lease accounts for the user, without secrets.
	Reason string
}

// DropOrphan returns the event recording that o was dropped at now, on behalf of actor
// (empty for the syvault command and the server's own sweep). Each drop is its own
// event: a name may be left behind again after it was dropped once.
func DropOrphan(o Orphan, actor string, now time.Time) Event {
	return Event{Type: OrphanDropped, ID: "orphan." + o.RecordUID + "." + o.Username + "." + now.UTC().Format("20060102T150405.000000000"),
		Time: now.UTC(), ClientID: actor, RecordUID: o.RecordUID, LeaseID: o.LeaseID, Username: o.Username,
		Outcome: OutcomeOK, Reason: o.Reason}
}
