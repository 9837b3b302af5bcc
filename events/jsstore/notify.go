package jsstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
)

// Watch delivers the messages published on some subjects, over core NATS (delivery at
// most once: a watcher that must not miss a state polls too).
type Watch struct {
	c    chan *nats.Msg
	subs []*nats.Subscription
}

// C is where the messages arrive; a slow reader loses messages rather than blocking the
// connection.
func (w *Watch) C() <-chan *nats.Msg { return w.c }

// Stop ends the watch. Safe to call more than once.
func (w *Watch) Stop() {
	for _, s := range w.subs {
		_ = s.Unsubscribe()
	}
	w.subs = nil
}

// Watch subscribes to subjects and to any serve subjects given, answering requests on
// the latter with an empty reply (see Ask). It costs no round trip: NATS handles one
// connection's messages in order, so the subscriptions are in place before anything this
// Store sends afterwards (an append whose consequences the watch waits for, a read), and
// so before whatever others publish in answer to it. Waiting for the server to confirm
// them would add nothing to that on one server, and on a cluster it would not tell that
// the other servers know of them either (the watchers poll for what they must not miss).
func (s *Store) Watch(subjects []string, serve ...string) (*Watch, error) {
	w := &Watch{c: make(chan *nats.Msg, 16)}
	for _, subj := range subjects {
		if TooLong(subj) {
			w.Stop()
			return nil, events.Errorf(events.ENotFound, "Nothing is named by a subject of %d characters.", len(subj))
		}
		sub, err := s.nc.ChanSubscribe(subj, w.c)
		if err != nil {
			w.Stop()
			return nil, events.StoreUnavailable(fmt.Errorf("jsstore.Watch(%s): %w", subj, err))
		}
		w.subs = append(w.subs, sub)
	}
	for _, subj := range serve {
		sub, err := s.nc.Subscribe(subj, func(m *nats.Msg) { _ = m.Respond(nil) })
		if err != nil {
			w.Stop()
			return nil, events.StoreUnavailable(fmt.Errorf("jsstore.Watch(%s): %w", subj, err))
		}
		w.subs = append(w.subs, sub)
	}
	return w, nil
}

// Ask reports whether anything answers a request on subject within two seconds. Only a
// definite "no responders" is false: a slow or lost answer counts as yes.
func (s *Store) Ask(ctx context.Context, subject string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := s.nc.RequestWithContext(ctx, subject, nil)
	return !errors.Is(err, nats.ErrNoResponders)
}

// Notify publishes data on subject over core NATS, to whoever watches it now; losing it
// must be harmless to the caller.
func (s *Store) Notify(subject string, data []byte) { _ = s.nc.Publish(subject, data) }

// Names reserves names in a KV bucket: a reservation is a create, which succeeds once
// across every process, and expires after the bucket's hold time.
type Names struct {
	kv     jetstream.KeyValue
	stream jetstream.Stream // the bucket's stream, for Forget's purge
	s      *Store
}

// OpenNames opens (creating when missing) the reservation bucket bucket, whose entries
// live for hold. A non-zero markerTTL lets reservations carry a shorter TTL of their own
// (JetStream then needs delete markers, kept that long).
func (s *Store) OpenNames(ctx context.Context, bucket, description string, hold, markerTTL time.Duration) (*Names, error) {
	kv, err := s.Bucket(ctx, jetstream.KeyValueConfig{Bucket: bucket, Description: description, Storage: jetstream.FileStorage,
		History: 1, TTL: hold, LimitMarkerTTL: markerTTL})
	if err != nil {
		return nil, err
	}
	stream, err := s.js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, unavailable(fmt.Errorf("jsstore.OpenNames(%s): %w", bucket, err))
	}
	return &Names{kv: kv, stream: stream, s: s}, nil
}

// Reserve claims name (a KV key: letters, digits, - _ / = .) with value, for ttl when it
// is not zero (else for the bucket's hold; a ttl needs a bucket opened with a markerTTL). It returns false, with no error, when the
// name is already taken.
func (n *Names) Reserve(ctx context.Context, name string, value []byte, ttl time.Duration) (bool, error) {
	var opts []jetstream.KVCreateOpt
	if ttl > 0 {
		opts = append(opts, jetstream.KeyTTL(ttl))
	}
	_, err := n.kv.Create(ctx, name, value, opts...)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyExists):
		return false, nil
	}
	return false, events.StoreUnavailable(fmt.Errorf("jsstore.Reserve: %w", err))
}

// Holder returns the value name was reserved with, when and at which revision; held is
// false when it is not reserved. It reads the bucket's leader: reconciliation drops a
// user whose name nobody holds, and a copy of the bucket catching up after a restart
// (which NATS lets answer direct gets, as the KV client's Get uses, once 90 % caught up)
// may not have a reservation made moments before the user was created.
func (n *Names) Holder(ctx context.Context, name string) (h Holding, held bool, err error) {
	if h, held, err = n.s.lastRecord(ctx, n.kv, name); err != nil {
		return Holding{}, false, events.StoreUnavailable(fmt.Errorf("jsstore.Holder: %w", err))
	}
	return h, held, nil
}

// Held reports whether name is reserved, as any copy of the bucket answers (a direct
// get: no JetStream API request): for a check whose stale "no" costs little, as the
// reservation that follows still decides.
func (n *Names) Held(ctx context.Context, name string) (bool, error) {
	_, err := n.kv.Get(ctx, name)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	}
	return false, events.StoreUnavailable(fmt.Errorf("jsstore.Held: %w", err))
}

// Holding is one reservation.
type Holding struct {
	Value    []byte
	Since    time.Time
	Revision uint64
}

// Take moves the reservation h of name to value, for a reservation its holder has left
// behind (a process that died between reserving and recording). It reports false when
// the reservation changed since h was read: someone else took it first.
func (n *Names) Take(ctx context.Context, name string, h Holding, value []byte) (bool, error) {
	_, err := n.kv.Update(ctx, name, value, h.Revision)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyExists):
		return false, nil
	}
	return false, events.StoreUnavailable(fmt.Errorf("jsstore.Take: %w", err))
}

// Release frees name; a name not reserved is success.
func (n *Names) Release(ctx context.Context, name string) error {
	if err := n.kv.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return events.StoreUnavailable(fmt.Errorf("jsstore.Release: %w", err))
	}
	return nil
}

// ReleaseHeld frees name while it is still the reservation h, and leaves it alone once
// another has taken it over (Take) since: a holder that outlived its bound must not free
// its successor's.
func (n *Names) ReleaseHeld(ctx context.Context, name string, h Holding) error {
	err := n.kv.Delete(ctx, name, jetstream.LastRevision(h.Revision))
	var apiErr *jetstream.APIError
	if err == nil || errors.Is(err, jetstream.ErrKeyNotFound) || (errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence) {
		return nil
	}
	return events.StoreUnavailable(fmt.Errorf("jsstore.ReleaseHeld: %w", err))
}

// Forget frees name and leaves nothing of it behind: a purge of its subject, where a
// Release (a KV delete) leaves a marker, and with it NATS's state for the subject, until
// the bucket's hold has passed. For a name whose holder is done with it for good.
func (n *Names) Forget(ctx context.Context, name string) error {
	if err := n.stream.Purge(ctx, jetstream.WithPurgeSubject("$KV."+n.kv.Bucket()+"."+name)); err != nil {
		return events.StoreUnavailable(fmt.Errorf("jsstore.Forget: %w", err))
	}
	return nil
}

// List returns every name reserved now, in no particular order.
func (n *Names) List(ctx context.Context) ([]string, error) {
	keys, err := n.kv.ListKeys(ctx)
	if err != nil {
		return nil, events.StoreUnavailable(fmt.Errorf("jsstore.List: %w", err))
	}
	defer keys.Stop()
	var out []string
	for k := range keys.Keys() {
		out = append(out, k)
	}
	return out, nil
}
