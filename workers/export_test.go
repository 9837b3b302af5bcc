package workers

import (
	"context"
	"time"

	"github.com/syvault/syvault/events"
)

// HandleLease exposes the lease handler so tests can deliver one message as often, and
// in whatever interleaving, they need.
func (w *Workers) HandleLease(ctx context.Context, e events.Event, seq uint64) error {
	return w.handleLease(ctx, e, seq)
}

// HandleDue exposes the expiry handler, so a test fires a second when it needs to.
func (w *Workers) HandleDue(ctx context.Context, e events.Event, seq uint64) error {
	return w.handleDue(ctx, e, seq)
}

// HandleTarget exposes the removals' handler, so a test delivers a removal when it needs to.
func (w *Workers) HandleTarget(ctx context.Context, e events.Event, seq uint64) error {
	return w.handleTarget(ctx, e, seq)
}

// SetUndoRetryFor sets how long Unprepare tries again, until the test ends.
func SetUndoRetryFor(t interface{ Cleanup(func()) }, d time.Duration) {
	old := undoRetryFor
	undoRetryFor = d
	t.Cleanup(func() { undoRetryFor = old })
}
