package projections

import (
	"context"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
)

// untilSlack is how far past until the audit reads, for events stamped before they were
// stored.
const untilSlack = time.Minute

// maxAuditScan bounds the events one audit query reads, so a narrow filter over a long
// stream answers with a cursor to continue from instead of scanning it all at once.
const maxAuditScan = 100000

// Audit replays the events stream, oldest first, for the events q selects. next is the
// cursor to continue from when there may be more, 0 when the stream's end was reached.
// Undecodable events are skipped.
func (p *Projections) Audit(ctx context.Context, q events.AuditQuery) (page []events.Recorded, next uint64, err error) {
	opts := jsstore.ScanOptions{After: q.After, Since: q.Since}
	if q.LeaseID != "" {
		// Stop at the lease's own last event rather than wait for more at the stream's end.
		opts.Subject = events.LeaseSubject(q.LeaseID)
	}
	scanned := 0
	err = p.store.Scan(ctx, opts, func(seq uint64, stored time.Time, data []byte, last bool) bool {
		scanned++
		if e, err := events.Decode(data); err == nil && q.Matches(e) {
			page = append(page, events.Recorded{Seq: seq, Event: e})
		}
		// Events are filtered on their own time, stamped before the append: it never
		// follows the time the stream stored them at, and concurrent appends may be
		// stored out of time order, so stop only once storage is well past until.
		if last || !q.Until.IsZero() && stored.After(q.Until.Add(untilSlack)) {
			return true
		}
		if len(page) == q.Limit || scanned >= maxAuditScan {
			next = seq
			return true
		}
		return false
	})
	return page, next, err
}
