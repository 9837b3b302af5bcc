package jsstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
)

// Tickets keeps values that are handed out once: Put stores one under a key, Take returns
// it and removes it in one conditional write, so across every process exactly one Take of
// a key succeeds. Entries vanish after the bucket's lifetime even if never taken.
type Tickets struct{ kv jetstream.KeyValue }

// OpenTickets opens (creating when missing) the ticket bucket bucket, whose entries live
// for ttl at most.
func (s *Store) OpenTickets(ctx context.Context, bucket, description string, ttl time.Duration) (*Tickets, error) {
	kv, err := s.Bucket(ctx, jetstream.KeyValueConfig{Bucket: bucket, Description: description, Storage: jetstream.FileStorage,
		History: 1, TTL: ttl})
	if err != nil {
		return nil, err
	}
	return &Tickets{kv: kv}, nil
}

// Put stores value under key (a KV key: letters, digits, - _ / = .). A key already
// present is an error: keys are meant to be drawn at random.
func (t *Tickets) Put(ctx context.Context, key string, value []byte) error {
	if _, err := t.kv.Create(ctx, key, value); err != nil {
		return events.StoreUnavailable(fmt.Errorf("jsstore.Tickets.Put: %w", err))
	}
	return nil
}

// Take returns the value under key and removes it, on condition that nobody removed or
// replaced it in between: ok is false, with no error, when the key is unknown, expired or
// already taken.
func (t *Tickets) Take(ctx context.Context, key string) (value []byte, ok bool, err error) {
	entry, err := t.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrInvalidKey):
		return nil, false, nil
	case err != nil:
		return nil, false, events.StoreUnavailable(fmt.Errorf("jsstore.Tickets.Take: %w", err))
	}
	err = t.kv.Delete(ctx, key, jetstream.LastRevision(entry.Revision()))
	switch {
	case err == nil:
		return entry.Value(), true, nil
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return nil, false, nil // another Take got there first
	}
	return nil, false, events.StoreUnavailable(fmt.Errorf("jsstore.Tickets.Take: %w", err))
}
