// Package projections keeps the read side of SyVault: KV buckets for leases, targets and
// clients, built from the events stream by one durable consumer that any number of
// processes share. Every update is a compare-and-set guarded by the stream sequence it
// comes from, so redelivered or duplicated events change nothing, and the buckets can be
// thrown away and rebuilt by replaying the stream.
package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
)

// Bucket and consumer names.
const (
	LeasesBucket  = "SYVAULT_LEASES"
	ActiveBucket  = "SYVAULT_ACTIVE_LEASES"
	TargetsBucket = "SYVAULT_TARGETS"
	ClientsBucket = "SYVAULT_CLIENTS"
	Consumer      = "projector"
)

// Buckets lists every bucket the projections own, for rebuilds and scans.
var Buckets = []string{LeasesBucket, ActiveBucket, TargetsBucket, ClientsBucket}

// record wraps every projected value with the stream sequence of the last event applied.
type record[T any] struct {
	Seq     uint64 `json:"seq"`
	Removed bool   `json:"removed,omitempty"`
	Value   T      `json:"value"`
}

// Projections applies events to the buckets and answers queries from them. It is safe
// for concurrent use.
type Projections struct {
	store   *jsstore.Store
	logger  *slog.Logger
	leases  jetstream.KeyValue
	active  jetstream.KeyValue
	targets jetstream.KeyValue
	clients jetstream.KeyValue
}

// Open creates the buckets if they are missing.
func Open(ctx context.Context, store *jsstore.Store, logger *slog.Logger) (*Projections, error) {
	p := &Projections{store: store, logger: logger}
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{LeasesBucket, &p.leases}, {ActiveBucket, &p.active}, {TargetsBucket, &p.targets}, {ClientsBucket, &p.clients}} {
		kv, err := store.Bucket(ctx, jetstream.KeyValueConfig{Bucket: b.name, Storage: jetstream.FileStorage, History: 1})
		if err != nil {
			return nil, err
		}
		*b.kv = kv
	}
	return p, nil
}

// Apply brings the buckets up to date with one event stored at stream sequence seq.
// Applying an event again, or an older one after a newer, changes nothing, and events of
// one aggregate may be applied in any order.
func (p *Projections) Apply(ctx context.Context, e events.Event, seq uint64) error {
	switch {
	case strings.HasPrefix(string(e.Type), "lease."):
		if e.LeaseID == "" {
			return nil
		}
		return p.applyLease(ctx, e, seq)
	case (e.Type == events.TargetRegistered || e.Type == events.TargetUpdated || e.Type == events.TargetResealed) && e.Target != nil:
		_, _, err := cas(ctx, p.targets, e.RecordUID, seq, func(r *record[events.Target]) bool {
			r.Value, r.Removed = *e.Target, false
			return true
		})
		return err
	case e.Type == events.TargetRemoved:
		_, _, err := cas(ctx, p.targets, e.RecordUID, seq, func(r *record[events.Target]) bool {
			r.Removed = true
			return true
		})
		return err
	case e.Type == events.ClientRegistered && e.Client != nil:
		_, _, err := cas(ctx, p.clients, e.Client.ClientID, seq, func(r *record[events.Client]) bool {
			r.Value, r.Removed = *e.Client, false
			return true
		})
		return err
	case e.Type == events.ClientRemoved:
		_, _, err := cas(ctx, p.clients, e.ClientID, seq, func(r *record[events.Client]) bool {
			r.Removed = true
			return true
		})
		return err
	}
	return nil
}

// applyLease brings a lease's record up to date with its event at seq. Any process may
// apply any event of a lease, in any order. When the record stands exactly at the event's
// predecessor (the common case) the event is applied to it; otherwise (events applied out
// of order, or an event from before predecessors were recorded) the record is set to the
// fold of the lease's whole history, which every order agrees on.
func (p *Projections) applyLease(ctx context.Context, e events.Event, seq uint64) error {
	chained := e.Type == events.LeaseRequested || e.Prev != 0
	r, changed, err := cas(ctx, p.leases, e.LeaseID, seq, func(r *record[events.Lease]) bool {
		if !chained || r.Seq != e.Prev {
			return false
		}
		r.Value.Apply(e, seq)
		return true
	})
	if err != nil {
		return err
	}
	if !changed && r.Seq < seq {
		l, err := p.store.LoadLease(ctx, e.LeaseID)
		if events.ErrorCode(err) == events.ENotFound {
			return nil
		}
		if err != nil {
			return err
		}
		if r, changed, err = cas(ctx, p.leases, e.LeaseID, l.Seq, func(r *record[events.Lease]) bool {
			r.Value = l
			return true
		}); err != nil {
			return err
		}
	}
	if !changed {
		return nil
	}
	return p.syncActive(ctx, r.Value)
}

// cas applies mutate to the record at key unless it already holds seq or later, retrying
// on concurrent updates. changed is false when nothing was written.
func cas[T any](ctx context.Context, kv jetstream.KeyValue, key string, seq uint64, mutate func(*record[T]) bool) (record[T], bool, error) {
	for {
		var r record[T]
		var rev uint64
		entry, err := kv.Get(ctx, key)
		switch {
		case err == nil:
			if err := json.Unmarshal(entry.Value(), &r); err != nil {
				return r, false, fmt.Errorf("projections: %s/%s: %w", kv.Bucket(), key, err)
			}
			rev = entry.Revision()
		case errors.Is(err, jetstream.ErrKeyNotFound):
		default:
			return r, false, unavailable(err)
		}
		if r.Seq >= seq || !mutate(&r) {
			return r, false, nil
		}
		r.Seq = seq
		data, err := json.Marshal(r)
		if err != nil {
			return r, false, err
		}
		if rev == 0 {
			_, err = kv.Create(ctx, key, data)
		} else {
			_, err = kv.Update(ctx, key, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return r, false, unavailable(err)
		}
		return r, true, nil
	}
}

// listed reports whether a lease belongs in the list of active leases: its user exists.
func listed(s events.Status) bool { return s == events.StatusActive || s == events.StatusRevoking }

func activeKey(l events.Lease) string { return l.RecordUID + "." + l.ID }

// syncActive makes the active-lease index agree with the lease record. Two processes may
// apply a lease's events concurrently, so after writing the index it reads the record
// again: whoever writes the index last sees the final record and leaves it right.
func (p *Projections) syncActive(ctx context.Context, l events.Lease) error {
	for {
		var err error
		if listed(l.Status) {
			_, err = p.active.Put(ctx, activeKey(l), []byte(l.ID))
		} else {
			err = p.active.Delete(ctx, activeKey(l))
		}
		if err != nil {
			return unavailable(err)
		}
		now, err := p.getLease(ctx, l.ID)
		if err != nil {
			return err
		}
		if now.Seq == l.Seq {
			return nil
		}
		l = now
	}
}

func (p *Projections) getLease(ctx context.Context, id string) (events.Lease, error) {
	r, err := get[events.Lease](ctx, p.leases, id)
	if err != nil {
		return events.Lease{}, err
	}
	return r.Value, nil
}

func get[T any](ctx context.Context, kv jetstream.KeyValue, key string) (record[T], error) {
	var r record[T]
	entry, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return r, events.Errorf(events.ENotFound, "Not found.")
	}
	if err != nil {
		return r, unavailable(err)
	}
	if err := json.Unmarshal(entry.Value(), &r); err != nil {
		return r, fmt.Errorf("projections: %s/%s: %w", kv.Bucket(), key, err)
	}
	return r, nil
}

// Lease returns a lease, ended or not. ENotFound when there is none.
func (p *Projections) Lease(ctx context.Context, id string) (events.Lease, error) {
	l, err := p.getLease(ctx, id)
	if events.ErrorCode(err) == events.ENotFound {
		return l, events.Errorf(events.ENotFound, "No lease with id %q.", id)
	}
	return l, err
}

// MaxWait bounds every wait for the read side, whatever the caller's context: a
// projector that stopped must turn into an answer, not into a request that never ends.
const MaxWait = 10 * time.Second

// WaitLease waits until the projection has applied the lease's event at seq, so a
// caller reads its own write. It returns ETimeout when ctx ends first, or after MaxWait.
func (p *Projections) WaitLease(ctx context.Context, id string, seq uint64) (events.Lease, error) {
	ctx, cancel := context.WithTimeout(ctx, MaxWait)
	defer cancel()
	delay := time.Millisecond
	for {
		l, err := p.getLease(ctx, id)
		if err == nil && l.Seq >= seq {
			return l, nil
		}
		if err != nil && events.ErrorCode(err) != events.ENotFound {
			return l, err
		}
		select {
		case <-ctx.Done():
			return l, events.Wrap(ctx.Err(), events.ETimeout, "The lease was recorded but the read side did not catch up in time.")
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// ActiveLeases lists active and revoking leases, oldest first (lease ids are UUIDv7, so
// their order is their creation order). next is the cursor of the following page, empty
// on the last. Cost grows with the number of active leases of the filter, not with the
// stream's length.
func (p *Projections) ActiveLeases(ctx context.Context, q events.LeaseQuery) (page []events.Lease, next string, err error) {
	filter := "*.*"
	if q.RecordUID != "" {
		filter = q.RecordUID + ".*"
	}
	lister, err := p.active.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, "", unavailable(err)
	}
	var ids []string
	for k := range lister.Keys() {
		if id := events.IDFromSubject(k); id > q.Cursor {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids) // a busy bucket may list a key twice
	for _, id := range ids {
		if len(page) == q.Limit {
			return page, page[len(page)-1].ID, nil
		}
		l, err := p.getLease(ctx, id)
		if events.ErrorCode(err) == events.ENotFound {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		if !listed(l.Status) || (q.ClientID != "" && l.ClientID != q.ClientID) {
			continue
		}
		page = append(page, l)
	}
	return page, "", nil
}

// Target returns a registered target. ENotFound when there is none or it was removed.
func (p *Projections) Target(ctx context.Context, uid string) (events.Target, error) {
	r, err := get[events.Target](ctx, p.targets, uid)
	if err == nil && r.Removed {
		err = events.Errorf(events.ENotFound, "Not found.")
	}
	if events.ErrorCode(err) == events.ENotFound {
		return events.Target{}, events.Errorf(events.ENotFound, "No target with record_uid %q.", uid)
	}
	return r.Value, err
}

// Targets lists registered targets ordered by creation.
func (p *Projections) Targets(ctx context.Context) ([]events.Target, error) {
	return list(ctx, p.targets, func(t events.Target) time.Time { return t.CreatedAt })
}

// Client returns a registered client. ENotFound when there is none or it was removed.
func (p *Projections) Client(ctx context.Context, id string) (events.Client, error) {
	r, err := get[events.Client](ctx, p.clients, id)
	if err == nil && r.Removed {
		err = events.Errorf(events.ENotFound, "Not found.")
	}
	if events.ErrorCode(err) == events.ENotFound {
		return events.Client{}, events.Errorf(events.ENotFound, "No client with id %q.", id)
	}
	return r.Value, err
}

// Clients lists registered clients ordered by creation.
func (p *Projections) Clients(ctx context.Context) ([]events.Client, error) {
	return list(ctx, p.clients, func(c events.Client) time.Time { return c.CreatedAt })
}

func list[T any](ctx context.Context, kv jetstream.KeyValue, created func(T) time.Time) ([]T, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	var out []T
	for k := range lister.Keys() {
		r, err := get[T](ctx, kv, k)
		if events.ErrorCode(err) == events.ENotFound {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !r.Removed {
			out = append(out, r.Value)
		}
	}
	slices.SortFunc(out, func(a, b T) int { return created(a).Compare(created(b)) })
	return out, nil
}

// WaitTarget waits until the target's record reflects its event at seq, so a caller
// reads its own write. It returns ETimeout when ctx ends first, or after MaxWait.
func (p *Projections) WaitTarget(ctx context.Context, recordUID string, seq uint64) error {
	return wait(ctx, p.targets, recordUID, seq)
}

// WaitClient is WaitTarget for a client.
func (p *Projections) WaitClient(ctx context.Context, clientID string, seq uint64) error {
	return wait(ctx, p.clients, clientID, seq)
}

func wait(ctx context.Context, kv jetstream.KeyValue, key string, seq uint64) error {
	ctx, cancel := context.WithTimeout(ctx, MaxWait)
	defer cancel()
	delay := time.Millisecond
	for {
		r, err := get[json.RawMessage](ctx, kv, key)
		if err == nil && r.Seq >= seq {
			return nil
		}
		if err != nil && events.ErrorCode(err) != events.ENotFound {
			return err
		}
		select {
		case <-ctx.Done():
			return events.Wrap(ctx.Err(), events.ETimeout, "The change was recorded but the read side did not catch up in time.")
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

func unavailable(err error) error { return events.StoreUnavailable(err) }

// Ping checks that the buckets answer.
func (p *Projections) Ping(ctx context.Context) error {
	if _, err := p.leases.Status(ctx); err != nil {
		return unavailable(err)
	}
	return nil
}

// ActiveByTarget counts active and revoking leases per target, from the index keys alone.
func (p *Projections) ActiveByTarget(ctx context.Context) (map[string]int, error) {
	lister, err := p.active.ListKeys(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	counts := map[string]int{}
	for k := range lister.Keys() {
		if i := strings.IndexByte(k, '.'); i > 0 {
			counts[k[:i]]++
		}
	}
	return counts, nil
}

// LeaseWatch follows one lease's record as the projection writes it, so a caller can wait
// for an outcome without asking again and again.
type LeaseWatch struct {
	p  *Projections
	id string
	w  *jsstore.Watch
}

// WatchLease starts following lease id's record; messages on the extra subjects are
// delivered to Until's other, and requests on the serve subjects answered (see
// jsstore.Store.Watch). Every update written from now on reaches the watch. Stop it.
func (p *Projections) WatchLease(ctx context.Context, id string, extra, serve []string) (*LeaseWatch, error) {
	w, err := p.store.Watch(ctx, append([]string{leaseRecordSubject(id)}, extra...), serve...)
	if err != nil {
		return nil, err
	}
	return &LeaseWatch{p: p, id: id, w: w}, nil
}

// leaseRecordSubject is where the KV bucket publishes each new version of a lease's
// record.
func leaseRecordSubject(id string) string { return "$KV." + LeasesBucket + "." + id }

// Stop ends the watch.
func (lw *LeaseWatch) Stop() { lw.w.Stop() }

// Until returns the lease once done holds for its projected record. A message on an
// extra subject goes to other, whose error ends the wait. The record is also read every
// second, since a notification can be lost. It returns ETimeout when ctx ends first.
func (lw *LeaseWatch) Until(ctx context.Context, done func(events.Lease) bool, other func(subject string, data []byte) error) (events.Lease, error) {
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	l, err := lw.p.getLease(ctx, lw.id)
	for {
		switch {
		case err == nil && done(l):
			return l, nil
		case err != nil && events.ErrorCode(err) != events.ENotFound:
			return l, err
		}
		select {
		case <-ctx.Done():
			return l, events.Wrap(ctx.Err(), events.ETimeout, "The operation did not finish within the server's deadline.")
		case m := <-lw.w.C():
			if m.Subject != leaseRecordSubject(lw.id) {
				if err := other(m.Subject, m.Data); err != nil {
					return l, err
				}
				continue
			}
			var r record[events.Lease]
			if json.Unmarshal(m.Data, &r) != nil || r.Seq < l.Seq {
				continue // a delete marker, or older than what we hold
			}
			l, err = r.Value, nil
		case <-poll.C:
			l, err = lw.p.getLease(ctx, lw.id)
		}
	}
}
