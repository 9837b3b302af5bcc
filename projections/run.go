package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
)

// Run keeps the buckets up to date until ctx ends. Any number of processes may run it:
// they share one durable consumer.
func (p *Projections) Run(ctx context.Context) error {
	return p.store.Consume(ctx, jsstore.ConsumeConfig{
		Stream:  events.EventsStream,
		Durable: Consumer,
		// Records are written as the fold of an aggregate's history under compare-and-set,
		// so events may be applied concurrently and in any order, here as across processes.
		Concurrency: 16,
		AckWait:     AckWait,
		Logger:      p.logger,
	}, p.Apply)
}

// AckWait is how long the projector's consumer waits for an event's acknowledgement
// before delivering it again. Applying an event takes milliseconds, but its nak (with a
// retry delay) or ack can be lost when the consumer's NATS leader dies: the event is then
// only delivered again after AckWait, and until then the read side shows the lease as it
// was (after a failover a chaos run saw revoked leases reported active for the 2 minutes
// of the consumer default). The handler's own deadline is 9/10 of it.
const AckWait = 10 * time.Second

// Rebuild throws the buckets away and builds them again by replaying the whole events
// stream, then points the durable consumer just past what was replayed. Processes running
// Run at the time pick up from there; the idempotent updates make overlap harmless.
// It returns the number of events replayed.
func Rebuild(ctx context.Context, store *jsstore.Store, p *Projections) (int, error) {
	for _, b := range append(Buckets, legacyActiveBucket) {
		if err := store.DeleteBucket(ctx, b); err != nil {
			return 0, fmt.Errorf("projections.Rebuild: %w", err)
		}
	}
	if err := store.IndexReset(ctx); err != nil {
		return 0, fmt.Errorf("projections.Rebuild: %w", err)
	}
	fresh, err := Open(ctx, store, p.logger)
	if err != nil {
		return 0, err
	}
	p.leases, p.written, p.targets, p.clients = fresh.leases, fresh.written, fresh.targets, fresh.clients
	n := 0
	var last uint64
	err = store.Replay(ctx, 1, nil, func(msg jetstream.Msg) error {
		md, err := msg.Metadata()
		if err != nil {
			return err
		}
		last = md.Sequence.Stream
		e, err := events.Decode(msg.Data())
		if err != nil {
			p.logger.Error("rebuild: skipping undecodable event", "seq", last, "err", err)
			return nil
		}
		n++
		err = p.Apply(ctx, e, last)
		if errors.Is(err, jsstore.ErrPermanent) {
			// A history SyVault did not write (a forged one) must not stop the rebuild.
			p.logger.Error("rebuild: skipping an event that can never be applied", "seq", last, "err", err)
			return nil
		}
		return err
	})
	if err != nil {
		return n, fmt.Errorf("projections.Rebuild: %w", err)
	}
	if err := store.RestartConsumer(ctx, Consumer, last+1); err != nil {
		return n, fmt.Errorf("projections.Rebuild: %w", err)
	}
	return n, nil
}
