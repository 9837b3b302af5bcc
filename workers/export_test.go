package workers

import (
	"context"

	"github.com/syvault/syvault/events"
)

// HandleLease exposes the lease handler so tests can deliver one message as often, and
// in whatever interleaving, they need.
func (w *Workers) HandleLease(ctx context.Context, e events.Event, seq uint64) error {
	return w.handleLease(ctx, e, seq)
}
