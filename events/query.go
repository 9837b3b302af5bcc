package events

import "time"

// LeaseQuery selects active (and revoking) leases for a list.
type LeaseQuery struct {
	RecordUID string // empty: every target
	ClientID  string // empty: every client
	Limit     int
	// Cursor is the next_cursor of the previous page, empty for the first.
	Cursor string
}

// AuditQuery selects events of the audit trail.
type AuditQuery struct {
	Since, Until                 time.Time
	RecordUID, LeaseID, ClientID string
	// After is the sequence of the last event of the previous page (its cursor).
	After uint64
	Limit int
}

// Matches reports whether e passes the query's filters.
func (q AuditQuery) Matches(e Event) bool {
	switch {
	case !q.Since.IsZero() && e.Time.Before(q.Since):
		return false
	case !q.Until.IsZero() && e.Time.After(q.Until):
		return false
	case q.RecordUID != "" && e.RecordUID != q.RecordUID:
		return false
	case q.LeaseID != "" && e.LeaseID != q.LeaseID:
		return false
	case q.ClientID != "" && e.ClientID != q.ClientID && (e.Client == nil || e.Client.ClientID != q.ClientID):
		return false
	}
	return true
}

// Recorded is an event as the stream stored it, at sequence Seq.
type Recorded struct {
	Seq   uint64
	Event Event
}
