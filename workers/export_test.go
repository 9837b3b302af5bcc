package workers

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// HandleLease exposes the lease handler so tests can deliver one message as often, and
// in whatever interleaving, they need.
func (w *Workers) HandleLease(ctx context.Context, msg jetstream.Msg) error {
	return w.handleLease(ctx, msg)
}
