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
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
)

// Bucket and consumer names.
const (
	LeasesBucket  = "SYVAULT_LEASES"
	TargetsBucket = "SYVAULT_TARGETS"
	ClientsBucket = "SYVAULT_CLIENTS"
	Consumer      = "projector"
	// legacyActiveBucket is the list index of earlier versions (a KV bucket listed
	// whole for every page); a rebuild removes it.
	legacyActiveBucket = "SYVAULT_ACTIVE_LEASES"
)

// Buckets lists every bucket the projections own, for rebuilds and scans. The list of
// active leases lives in the index stream (jsstore.IndexStream).
var Buckets = []string{LeasesBucket, TargetsBucket, ClientsBucket}

// record wraps every projected value with the stream sequence of the last event applied.
type record[T any] struct {
	Seq     uint64 `json:"seq"`
	Removed bool   `json:"removed,omitempty"`
	// Index is where a listed lease stands in the index stream (0: not listed).
	Index uint64 `json:"index,omitempty"`
	Value T      `json:"value"`
}

// Projections applies events to the buckets and answers queries from them. It is safe
// for concurrent use.
type Projections struct {
	store  *jsstore.Store
	logger *slog.Logger
	leases jetstream.KeyValue
	// written remembers the lease records this process wrote last (see cas).
	written *written
	targets jetstream.KeyValue
	clients jetstream.KeyValue
	// endedRetention is how long an ended lease's record stays in the bucket.
	endedRetention time.Duration
	// recordReads counts the lease records lists read, for tests of their cost;
	// exactPages counts the index pages read again with their sequences (indexPage);
	// indexReads counts the reads of index pages, either way.
	recordReads, exactPages, indexReads atomic.Int64
}

// Open creates the buckets if they are missing.
func Open(ctx context.Context, store *jsstore.Store, logger *slog.Logger) (*Projections, error) {
	p := &Projections{store: store, logger: logger, written: newWritten(), endedRetention: EndedLeaseRetention}
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{LeasesBucket, &p.leases}, {TargetsBucket, &p.targets}, {ClientsBucket, &p.clients}} {
		kv, err := store.Bucket(ctx, jetstream.KeyValueConfig{Bucket: b.name, Storage: jetstream.FileStorage, History: 1})
		if err != nil {
			return nil, err
		}
		*b.kv = kv
	}
	// Records written with a time to live of their own (JetStream's per-message TTL, NATS
	// 2.11 and later; a stream cannot take it back once set), and each record stored
	// published again for the API's watches (see leaseRecordSubject).
	if err := store.AmendBucket(ctx, LeasesBucket, func(cfg *jetstream.StreamConfig) {
		cfg.AllowMsgTTL = true
		cfg.RePublish = &jetstream.RePublish{Source: leaseKeySubject(">"), Destination: leaseRecordSubject(">")}
	}); err != nil {
		return nil, err
	}
	return p, nil
}

// SetEndedRetention sets how long the lease bucket keeps an ended lease's record written
// from now on (EndedLeaseRetention unless set); call it before Run. Records already
// written keep the TTL they were written with.
func (p *Projections) SetEndedRetention(d time.Duration) { p.endedRetention = d }

// EndedLeaseRetention is how long the lease bucket keeps an ended lease's record by
// default (serve --ended-lease-retention sets another). The
// bucket then holds the active leases and those of the last day, not every lease ever
// made, so what NATS keeps per key (memory, and the index it rebuilds at a restart)
// follows the active leases rather than growing for good. An older ended lease is
// still read, from its events in the stream (see Lease), which keep it forever as the
// audit log.
const EndedLeaseRetention = 24 * time.Hour

// leaseWrites is how lease records are written: index keeps the list index in step, and
// an ended lease's record is written to leave the bucket after endedRetention.
func (p *Projections) leaseWrites(index func(*record[events.Lease]) error) writeOpts[events.Lease] {
	return writeOpts[events.Lease]{before: index, put: p.store.PutExpiring, ttl: func(r *record[events.Lease]) time.Duration {
		if !r.Value.Status.Ended() {
			return 0
		}
		return p.endedRetention
	}}
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
		_, _, err := cas(ctx, p.store, p.targets, nil, e.RecordUID, seq, false, func(r *record[events.Target]) bool {
			r.Value, r.Removed = *e.Target, false
			return true
		})
		return err
	case e.Type == events.TargetRemoved:
		_, _, err := cas(ctx, p.store, p.targets, nil, e.RecordUID, seq, false, func(r *record[events.Target]) bool {
			r.Removed = true
			return true
		})
		return err
	case e.Type == events.ClientRegistered && e.Client != nil:
		_, _, err := cas(ctx, p.store, p.clients, nil, e.Client.ClientID, seq, false, func(r *record[events.Client]) bool {
			r.Value, r.Removed = *e.Client, false
			return true
		})
		return err
	case e.Type == events.ClientUpdated && e.Client != nil:
		// An update is appended only after the client's last event, never after its
		// removal, so it keeps the record's removal as it finds it.
		_, _, err := cas(ctx, p.store, p.clients, nil, e.Client.ClientID, seq, false, func(r *record[events.Client]) bool {
			r.Value = *e.Client
			return true
		})
		return err
	case e.Type == events.ClientRemoved:
		_, _, err := cas(ctx, p.store, p.clients, nil, e.ClientID, seq, false, func(r *record[events.Client]) bool {
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
//
// The index follows the record: a lease that becomes listed is added to the index before
// its record says so (a read that sees the record active finds it in the list), and one
// that stops being listed is removed after.
func (p *Projections) applyLease(ctx context.Context, e events.Event, seq uint64) error {
	var published, dropped uint64 // what this call added to the index, and the entry to remove
	index := func(r *record[events.Lease]) error {
		dropped = 0
		switch want := listed(r.Value.Status); {
		case want && r.Index == 0:
			if published == 0 {
				s, err := p.store.IndexAdd(ctx, r.Value.RecordUID, r.Value.ClientID, r.Value.ID)
				if err != nil {
					return err
				}
				published = s
			}
			r.Index = published
		case !want && r.Index != 0:
			dropped, r.Index = r.Index, 0
		}
		return nil
	}
	// A request older than half the retention is not applied to a missing record: its
	// lease may have ended and its record left the bucket since, and the request would
	// bring it back as pending. The fold of the whole history is right whatever the
	// bucket holds, and costs one read per lease (its later events then find the record
	// ahead of them). Any other event applies only to a record that exists. (An event
	// without a time is taken as recent.)
	recent := e.Time.IsZero() || time.Since(e.Time) < p.endedRetention/2
	chained := e.Prev != 0 || (e.Type == events.LeaseRequested && recent)
	first := e.Type == events.LeaseRequested && e.Prev == 0
	w := p.written
	if !w.current(ctx, p.leases) {
		w = nil
	}
	r, changed, err := cas(ctx, p.store, p.leases, w, e.LeaseID, seq, first, func(r *record[events.Lease]) bool {
		if !chained || r.Seq != e.Prev {
			return false
		}
		r.Value.Apply(e, seq)
		return true
	}, p.leaseWrites(index))
	if err == nil && !changed && r.Seq < seq {
		var l events.Lease
		l, err = p.store.LoadLease(ctx, e.LeaseID)
		if events.ErrorCode(err) == events.ENotFound {
			return nil
		}
		if err == nil {
			// Writing a fold that stops short of this very event would leave the record
			// behind the stream for good, reporting an ended lease as active.
			err = events.HistoryBehind(l, seq)
		}
		if err == nil {
			r, changed, err = cas(ctx, p.store, p.leases, w, e.LeaseID, l.Seq, false, func(r *record[events.Lease]) bool {
				r.Value = l
				return true
			}, p.leaseWrites(index))
		}
	}
	if err != nil {
		return err
	}
	if !changed {
		dropped = 0
	}
	if published != 0 && r.Index != published {
		// Added for a write that did not land: another process's won.
		if err := p.store.IndexRemove(ctx, published); err != nil {
			return err
		}
	}
	if dropped != 0 {
		return p.store.IndexRemove(ctx, dropped)
	}
	return nil
}

// writeOpts are what a bucket's writes may add to cas.
type writeOpts[T any] struct {
	// before gets the record as it is about to be written, before each write.
	before func(*record[T]) error
	// ttl, when it returns more than zero for the record about to be written, has it
	// written through put, to be removed from the bucket that long after.
	ttl func(*record[T]) time.Duration
	put func(ctx context.Context, bucket, key string, value []byte, rev uint64, ttl time.Duration) (uint64, error)
}

func (o writeOpts[T]) expire(r *record[T]) time.Duration {
	if o.ttl == nil {
		return 0
	}
	return o.ttl(r)
}

// cas applies mutate to the record at key unless it already holds seq or later, retrying
// on concurrent updates, with what opts (at most one) adds to the writes. changed is
// false when nothing was written.
//
// The first attempt may skip reading the record: it takes the record w remembers writing
// (see written), or, when absent says the record cannot exist yet (a lease's request),
// none. A wrong guess fails the write, which is conditional on the revision, or is not
// trusted to decline it, and the next attempt reads the record.
//
// A read is a direct get, which any copy of the bucket answers, until a write is refused:
// then the record is read from the bucket's leader (s.CurrentEntry): a follower behind it
// would answer with the same old revision, and each write decided on that would be
// refused, until the follower caught up. Refused again, the record moved on meanwhile
// (another process applying the same lease's events): the next attempts back off, a few
// milliseconds doubling, rather than press a busy leader.
func cas[T any](ctx context.Context, s *jsstore.Store, kv jetstream.KeyValue, w *written, key string, seq uint64, absent bool, mutate func(*record[T]) bool, opts ...writeOpts[T]) (record[T], bool, error) {
	var o writeOpts[T]
	if len(opts) > 0 {
		o = opts[0]
	}
	guess := true
	refused := 0 // writes refused in a row
	for {
		var (
			r       record[T]
			rev     uint64
			data    []byte
			guessed bool
		)
		if guess {
			guess = false
			data, rev, guessed = w.get(key)
			guessed = guessed || absent
		}
		if !guessed {
			var err error
			if refused == 0 {
				var entry jetstream.KeyValueEntry
				if entry, err = kv.Get(ctx, key); err == nil {
					data, rev = entry.Value(), entry.Revision()
				}
			} else {
				data, rev, err = s.CurrentEntry(ctx, kv, key)
			}
			if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				return r, false, unavailable(err)
			}
		}
		if data != nil {
			if err := events.Unmarshal(data, &r); err != nil {
				return r, false, fmt.Errorf("projections: %s/%s: %w", kv.Bucket(), key, err)
			}
		}
		if r.Seq >= seq || !mutate(&r) {
			if guessed {
				continue
			}
			return r, false, nil
		}
		r.Seq = seq
		if o.before != nil {
			if err := o.before(&r); err != nil {
				return r, false, err
			}
		}
		data, err := json.Marshal(r)
		if err != nil {
			return r, false, err
		}
		switch ttl := o.expire(&r); {
		case ttl > 0:
			rev, err = o.put(ctx, kv.Bucket(), key, data, rev, ttl)
		case rev == 0:
			rev, err = kv.Create(ctx, key, data)
		default:
			rev, err = kv.Update(ctx, key, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			w.forget(key)
			if refused++; refused > 1 {
				select {
				case <-ctx.Done():
					return r, false, unavailable(ctx.Err())
				case <-time.After(casPause(refused - 1)):
				}
			}
			continue
		}
		if err != nil {
			w.forget(key) // it may have landed or not
			return r, false, unavailable(err)
		}
		w.put(key, data, rev)
		return r, true, nil
	}
}

// casPause is the wait before a write's attempt after n refusals in a row on a record
// that keeps moving: 1 ms doubling to 64, each at random between half and all of it, so
// that processes writing the same record fall out of step.
func casPause(n int) time.Duration {
	d := time.Millisecond << min(n-1, 6)
	return d/2 + rand.N(d/2+1)
}

// listed reports whether a lease belongs in the list of active leases: its user exists.
func listed(s events.Status) bool { return s == events.StatusActive || s == events.StatusRevoking }

func (p *Projections) getLease(ctx context.Context, id string) (events.Lease, error) {
	r, err := p.leaseRecord(ctx, id)
	if err != nil {
		return events.Lease{}, err
	}
	return r.Value, nil
}

// readLease is a wait's read of a lease's record, given at most a second: on a cluster
// it is a request to the bucket's leader, and a request sent while the bucket elects a
// new one (its leader's server lost) is never answered.
func (p *Projections) readLease(ctx context.Context, id string) (events.Lease, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return p.getLease(ctx, id)
}

// noAnswer reports whether err is a read of a wait that the store did not answer, in time
// or at all, while the wait itself goes on. That is no answer about the lease: a bucket
// whose leader was lost answers nothing, then "unavailable", for the seconds of its
// election, while the create, revocation or renewal waited for goes on, and its record,
// once written, reaches the wait through the watch or the next read. Ending the wait
// there failed a create the worker was finishing.
func noAnswer(ctx context.Context, err error) bool {
	code := events.ErrorCode(err)
	return err != nil && ctx.Err() == nil && (code == events.EUnavailable || code == events.ETimeout)
}

// leaseRecord reads a lease's record with every write acknowledged so far (see
// jsstore.CurrentRecord): what a create, a revoke or a renewal answered on is then what
// the caller's next read shows, on a cluster too.
func (p *Projections) leaseRecord(ctx context.Context, id string) (record[events.Lease], error) {
	data, err := p.store.CurrentRecord(ctx, p.leases, id)
	return decodeRecord[events.Lease](p.leases, id, data, err)
}

func get[T any](ctx context.Context, kv jetstream.KeyValue, key string) (record[T], error) {
	if jsstore.TooLong(key) {
		return decodeRecord[T](kv, key, nil, jetstream.ErrKeyNotFound)
	}
	entry, err := kv.Get(ctx, key)
	var data []byte
	if err == nil {
		data = entry.Value()
	}
	return decodeRecord[T](kv, key, data, err)
}

// reader reads kv's records by direct gets, which any copy of the bucket answers.
func reader[T any](kv jetstream.KeyValue) func(context.Context, string) (record[T], error) {
	return func(ctx context.Context, key string) (record[T], error) { return get[T](ctx, kv, key) }
}

// decodeRecord decodes key's record as read from kv, or turns the read's error into
// ours.
func decodeRecord[T any](kv jetstream.KeyValue, key string, data []byte, err error) (record[T], error) {
	var r record[T]
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return r, events.Errorf(events.ENotFound, "Not found.")
	}
	if err != nil {
		return r, unavailable(err)
	}
	if err := events.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("projections: %s/%s: %w", kv.Bucket(), key, err)
	}
	return r, nil
}

// Lease returns a lease, ended or not. ENotFound when there is none.
//
// A lease the bucket does not hold is looked up in the stream (read from its leader)
// before it is said not to exist: the projection may lag behind the stream (after a
// failover, events wait for their redelivery), and a 404 then would tell a client that a
// lease it was just handed, or whose revocation it asks for, does not exist; and an
// ended lease's record leaves the bucket after EndedLeaseRetention.
//
// A record still pending is checked against the stream too: a create answered once the
// lease settled, after the projector fell behind (NATS servers failing over while the
// create ran out of time), would otherwise be read back as pending by its requester. A
// lease is pending for a moment only, so few reads pay this.
func (p *Projections) Lease(ctx context.Context, id string) (events.Lease, error) {
	fromStream := false
	load := func() (events.Lease, error) {
		fromStream = true
		l, err := p.store.LoadLease(ctx, id)
		l.Spec = nil // as in the records, which leave it out
		return l, err
	}
	l, err := current(ctx, p.leaseRecord, id, load, events.Errorf(events.ENotFound, "No lease with id %q.", id))
	if err != nil || fromStream || l.Status != events.StatusPending {
		return l, err
	}
	if settled, err := load(); err == nil && settled.Status != events.StatusPending {
		return settled, nil
	}
	return l, nil
}

// MaxWait bounds every wait for the read side, whatever the caller's context: a
// projector that stopped must turn into an answer, not into a request that never ends.
const MaxWait = 10 * time.Second

// WaitLease waits until the projection has applied the lease's event at seq, so a
// caller reads its own write; reads the store does not answer are tried again (see
// noAnswer). It returns ETimeout when ctx ends first, or after MaxWait.
func (p *Projections) WaitLease(ctx context.Context, id string, seq uint64) (events.Lease, error) {
	ctx, cancel := context.WithTimeout(ctx, MaxWait)
	defer cancel()
	delay := time.Millisecond
	for {
		l, err := p.readLease(ctx, id)
		if err == nil && l.Seq >= seq {
			return l, nil
		}
		if err != nil && events.ErrorCode(err) != events.ENotFound && !noAnswer(ctx, err) {
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

// ActiveLeases lists active and revoking leases, oldest first (in the order they became
// active). next is the cursor of the following page, empty on the last. A page costs two
// requests to the store, the index's next entries and the records they name, whatever
// the number of leases; entries the index holds for leases no longer listed (left by a
// crash between the two writes) are skipped at the price of a little more reading.
func (p *Projections) ActiveLeases(ctx context.Context, q events.LeaseQuery) (page []events.Lease, next string, err error) {
	var after uint64
	if q.Cursor != "" {
		if after, err = strconv.ParseUint(q.Cursor, 10, 64); err != nil {
			return nil, "", events.Errorf(events.EInvalid, "cursor must be a next_cursor from an earlier answer.")
		}
	}
	f := jsstore.IndexFilter{RecordUID: q.RecordUID, ClientID: q.ClientID}
	var last uint64 // the index position of the page's last lease
	for {
		entries, recs, more, err := p.indexPage(ctx, f, after, q.Limit+1-len(page))
		if err != nil {
			return nil, "", err
		}
		for _, en := range entries {
			r, ok := recs[en.LeaseID]
			if !ok || r.Index != en.Seq || !listed(r.Value.Status) {
				p.dropStale(ctx, en, r, ok)
				continue
			}
			if len(page) == q.Limit {
				return page, strconv.FormatUint(last, 10), nil // one more exists
			}
			page, last = append(page, r.Value), en.Seq
		}
		if !more || len(entries) == 0 {
			return page, "", nil
		}
		after = entries[len(entries)-1].Seq
	}
}

// IndexedCount is the number of the client's entries in the list index, in one request
// whatever the number of leases. It may count a lease that ended a moment ago (its entry
// goes after its record) or an entry a crash left behind: ListedAtLeast tells them apart.
func (p *Projections) IndexedCount(ctx context.Context, clientID string) (int, error) {
	return p.store.IndexCount(ctx, jsstore.IndexFilter{ClientID: clientID})
}

// ListedAtLeast counts the client's listed leases (active or revoking: their users exist)
// but those skip names, as a list shows them, page by page, until want are found.
func (p *Projections) ListedAtLeast(ctx context.Context, clientID string, skip func(leaseID string) bool, want int) (int, error) {
	q := events.LeaseQuery{ClientID: clientID, Limit: 1000}
	n := 0
	for {
		page, next, err := p.ActiveLeases(ctx, q)
		if err != nil {
			return 0, err
		}
		for _, l := range page {
			if !skip(l.ID) {
				n++
			}
		}
		if n >= want || next == "" {
			return n, nil
		}
		q.Cursor = next
	}
}

// indexPage reads up to n entries of the index after the sequence after, and their
// records. It asks for the entries without their sequences first: when every entry's
// lease is listed and each record names a position after the last one, up to the last
// entry read, those positions are the entries' sequences (a record names its lease's one
// entry, and every entry matching f in that range is in the answer), and the server
// writes and the client parses no headers for the hundred entries of a page (about a
// sixth of a list's CPU at 100,000 leases, BENCHMARKS.md). Anything else (an entry a
// crash left behind, a lease just ended, a record not written yet) reads the entries
// again with their sequences, so that the list skips and removes such entries exactly;
// records already read are not read again.
func (p *Projections) indexPage(ctx context.Context, f jsstore.IndexFilter, after uint64, n int) ([]jsstore.IndexEntry, map[string]record[events.Lease], bool, error) {
	p.indexReads.Add(1)
	ids, last, more, err := p.store.IndexIDs(ctx, f, after, n)
	if err != nil {
		return nil, nil, false, err
	}
	entries := make([]jsstore.IndexEntry, len(ids))
	for i, id := range ids {
		entries[i].LeaseID = id
	}
	recs, err := p.leaseRecords(ctx, entries)
	if err != nil {
		return nil, nil, false, err
	}
	prev := after
	for i := range entries {
		r, ok := recs[entries[i].LeaseID]
		if !ok || !listed(r.Value.Status) || r.Index <= prev || r.Index > last {
			return p.indexPageWithSeqs(ctx, f, after, n, recs)
		}
		entries[i].Seq, prev = r.Index, r.Index
	}
	return entries, recs, more, nil
}

// indexPageWithSeqs is indexPage's exact read: the entries with their sequences, and
// the records of those not in read yet.
func (p *Projections) indexPageWithSeqs(ctx context.Context, f jsstore.IndexFilter, after uint64, n int, read map[string]record[events.Lease]) ([]jsstore.IndexEntry, map[string]record[events.Lease], bool, error) {
	p.exactPages.Add(1)
	p.indexReads.Add(1)
	entries, more, err := p.store.IndexPage(ctx, f, after, n)
	if err != nil {
		return nil, nil, false, err
	}
	var unread []jsstore.IndexEntry
	for _, en := range entries {
		if _, ok := read[en.LeaseID]; !ok {
			unread = append(unread, en)
		}
	}
	recs, err := p.leaseRecords(ctx, unread)
	if err != nil {
		return nil, nil, false, err
	}
	maps.Copy(recs, read)
	return entries, recs, more, nil
}

// dropStale removes an index entry a crash left behind, once it is certain nobody will
// claim it: its lease has ended, or its record names another entry, or it has no record
// and was made longer ago than a lease can live plus the retention (its record ended and
// left the bucket). An entry whose lease is still pending, or that has no record yet, may
// be one a projector is about to record, so it is left alone.
func (p *Projections) dropStale(ctx context.Context, en jsstore.IndexEntry, r record[events.Lease], found bool) {
	if (!found && !p.longGone(en.LeaseID)) || (found && !r.Value.Status.Ended() && (r.Index == 0 || r.Index == en.Seq)) {
		return
	}
	if err := p.store.IndexRemove(ctx, en.Seq); err != nil {
		p.logger.Warn("could not remove a stale entry of the lease index", "lease_id", en.LeaseID, "err", err)
	}
}

// longGone reports whether lease id, by the time in its UUIDv7, was made longer ago than
// a lease can live plus the retention of its ended record.
func (p *Projections) longGone(id string) bool {
	u, err := uuid.Parse(id)
	if err != nil || u.Version() != 7 {
		return false
	}
	sec, nsec := u.Time().UnixTime()
	return time.Since(time.Unix(sec, nsec)) > events.MaxTTL+p.endedRetention
}

// leaseRecords reads the records of the leases the entries name, in one request.
func (p *Projections) leaseRecords(ctx context.Context, entries []jsstore.IndexEntry) (map[string]record[events.Lease], error) {
	subjects := make([]string, len(entries))
	for i, en := range entries {
		subjects[i] = leaseKeySubject(en.LeaseID)
	}
	raw, err := p.store.LastOf(ctx, "KV_"+LeasesBucket, subjects)
	if err != nil {
		return nil, err
	}
	p.recordReads.Add(int64(len(raw)))
	out := make(map[string]record[events.Lease], len(raw))
	for _, en := range entries {
		data, ok := raw[leaseKeySubject(en.LeaseID)]
		var r record[events.Lease]
		if ok && len(data) > 0 && events.Unmarshal(data, &r) == nil {
			out[en.LeaseID] = r
		}
	}
	return out, nil
}

// Target returns a registered target. ENotFound when there is none or it was removed.
//
// A target the bucket does not hold is looked up in the stream first, as a client is (see
// Client): a lease asked for right after its target was registered must find it.
func (p *Projections) Target(ctx context.Context, uid string) (events.Target, error) {
	return current(ctx, reader[events.Target](p.targets), uid, func() (events.Target, error) {
		t, _, err := p.store.LoadTarget(ctx, uid)
		return t, err
	}, events.Errorf(events.ENotFound, "No target with record_uid %q.", uid))
}

// TargetVersion returns a target as its events stand on the stream's leader, with its
// version: the sequence of its last event, which an update's If-Match names and is
// checked against. Not the bucket's record: one behind (a lagging copy, a projector
// catching up) would hand out a version every update is refused on until it caught up.
// ENotFound as for Target.
func (p *Projections) TargetVersion(ctx context.Context, uid string) (events.Target, uint64, error) {
	return versioned(uid, func() (events.Target, uint64, error) { return p.store.LoadTarget(ctx, uid) },
		events.Errorf(events.ENotFound, "No target with record_uid %q.", uid))
}

// Targets lists registered targets ordered by creation.
func (p *Projections) Targets(ctx context.Context) ([]events.Target, error) {
	return list(ctx, p.targets, func(t events.Target) time.Time { return t.CreatedAt })
}

// Client returns a registered client. ENotFound when there is none or it was removed.
//
// A client the bucket does not hold is looked up in the stream (read from its leader)
// before it is said not to exist, as for a lease: on a cluster, a bucket read may be
// answered by a replica that has not caught up yet, and a just registered client (the
// first admin of a new install) would be refused its first token.
func (p *Projections) Client(ctx context.Context, id string) (events.Client, error) {
	load := func() (events.Client, error) {
		c, _, err := p.store.LoadClient(ctx, id)
		return c, err
	}
	return current(ctx, reader[events.Client](p.clients), id, load, events.Errorf(events.ENotFound, "No client with id %q.", id))
}

// ClientVersion is TargetVersion for a client.
func (p *Projections) ClientVersion(ctx context.Context, id string) (events.Client, uint64, error) {
	return versioned(id, func() (events.Client, uint64, error) { return p.store.LoadClient(ctx, id) },
		events.Errorf(events.ENotFound, "No client with id %q.", id))
}

// versioned is what load folds from the stream's leader, with its version; notFound when
// it holds nothing or a removal (the store's loaders take a key that is not an id for
// one naming nothing).
func versioned[T any](key string, load func() (T, uint64, error), notFound error) (T, uint64, error) {
	var zero T
	v, seq, err := load()
	if events.ErrorCode(err) == events.ENotFound {
		return zero, 0, notFound
	}
	return v, seq, err
}

// current reads key's record, or, when the bucket does not hold it, what load folds from
// the stream's leader; notFound when neither has it or the record says it was removed.
// A key that cannot name a subject is not looked up at all: a read puts it in its
// request's subject, and one longer than NATS's control line (4 KiB) has NATS close the
// connection for good.
func current[T any](ctx context.Context, read func(context.Context, string) (record[T], error), key string, load func() (T, error), notFound error) (T, error) {
	var zero T
	if !events.ValidID(key) {
		return zero, notFound
	}
	r, err := read(ctx, key)
	switch {
	case err == nil && r.Removed:
		return zero, notFound
	case events.ErrorCode(err) != events.ENotFound:
		return r.Value, err
	}
	v, _, err := versioned(key, func() (T, uint64, error) {
		v, err := load()
		return v, 0, err
	}, notFound)
	return v, err
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

// WaitApplied waits until every event up to stream sequence seq is applied (or given up
// on, see jsstore.AckFloor), by whichever process: then the leaders of the buckets and
// the index hold what the events before seq made of them. Waiting for one record
// (WaitTarget) says nothing of the others, as events are applied concurrently and in any
// order. A failed read of the consumer (its leader changing) is read again. It returns
// ETimeout when ctx ends first, or after MaxWait.
func (p *Projections) WaitApplied(ctx context.Context, seq uint64) error {
	var last error // of the last read
	err := poll(ctx, func(ctx context.Context) (bool, error) {
		floor, err := p.store.AckFloor(ctx, Consumer)
		last = err
		return err == nil && floor >= seq, nil
	})
	if err != nil && last != nil {
		return events.Wrap(errors.Join(err, last), events.ETimeout, "The change was recorded, but how far the read side has applied the events could not be read in time.")
	}
	return err
}

// WaitClient is WaitTarget for a client.
func (p *Projections) WaitClient(ctx context.Context, clientID string, seq uint64) error {
	return wait(ctx, p.clients, clientID, seq)
}

func wait(ctx context.Context, kv jetstream.KeyValue, key string, seq uint64) error {
	return poll(ctx, func(ctx context.Context) (bool, error) {
		r, err := get[json.RawMessage](ctx, kv, key)
		if events.ErrorCode(err) == events.ENotFound {
			return false, nil
		}
		return err == nil && r.Seq >= seq, err
	})
}

// poll asks caughtUp, at growing intervals, until it says so or fails, for at most
// MaxWait.
func poll(ctx context.Context, caughtUp func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, MaxWait)
	defer cancel()
	delay := time.Millisecond
	for {
		done, err := caughtUp(ctx)
		if err != nil || done {
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

// ActiveByTarget counts active and revoking leases per target, from the index's
// per-subject counts: its cost grows with the number of targets and clients, not leases.
func (p *Projections) ActiveByTarget(ctx context.Context) (map[string]int, error) {
	return p.store.IndexCounts(ctx)
}

// LeaseWatch follows one lease's record as the projection writes it, so a caller can wait
// for an outcome without asking again and again.
type LeaseWatch struct {
	p  *Projections
	id string
	w  *jsstore.Watch
	// unwritten: the lease has no record before the caller's next append (it is new), so
	// Until need not read one first.
	unwritten bool
}

// WatchLease starts following lease id's record; messages on the extra subjects are
// delivered to Until's other, and requests on the serve subjects answered (see
// jsstore.Store.Watch). Every update written after the store's next request reaches the
// watch. Stop it.
func (p *Projections) WatchLease(id string, extra, serve []string) (*LeaseWatch, error) {
	w, err := p.store.Watch(append([]string{leaseRecordSubject(id)}, extra...), serve...)
	if err != nil {
		return nil, err
	}
	return &LeaseWatch{p: p, id: id, w: w}, nil
}

// WatchNewLease is WatchLease for a lease not yet requested: Until then waits for the
// record's first version to arrive rather than reading it first (a read that, made
// right after the request, finds nothing while the workers have the database to get
// through).
func (p *Projections) WatchNewLease(id string, extra, serve []string) (*LeaseWatch, error) {
	lw, err := p.WatchLease(id, extra, serve)
	if lw != nil {
		lw.unwritten = true
	}
	return lw, err
}

// errNoRecordYet stands for the record of a lease just requested, before its first version.
var errNoRecordYet = events.Errorf(events.ENotFound, "The lease has no record yet.")

// leaseRecordSubject is where JetStream publishes each version of a lease's record once
// it has stored it (the lease bucket's RePublish), for the watches that answer a create,
// a revoke or a renewal. The bucket's own subject would not do: it carries each write as
// it is published, before JetStream stores it and even when JetStream refuses it, so a
// caller answered on it could read the older record right after: a GET right after a
// create found it pending, one right after a revoke found it revoking
// (TestLease_ReadRightAfterTheAnswer, TestWatch_AReadAfterUntilSeesTheRecord).
func leaseRecordSubject(id string) string { return "_syvault.record.lease." + id }

// leaseKeySubject is the subject a lease's record is stored under in the bucket.
func leaseKeySubject(id string) string { return "$KV." + LeasesBucket + "." + id }

// Stop ends the watch.
func (lw *LeaseWatch) Stop() { lw.w.Stop() }

// Until returns the lease once done holds for its projected record. A message on an
// extra subject goes to other, whose error ends the wait. The record is also read every
// second, since a notification can be lost; a read the store does not answer does not
// end the wait (see noAnswer). It returns ETimeout when ctx ends first.
func (lw *LeaseWatch) Until(ctx context.Context, done func(events.Lease) bool, other func(subject string, data []byte) error) (events.Lease, error) {
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	var (
		l   events.Lease
		err error = errNoRecordYet
	)
	read := func() {
		got, rerr := lw.p.readLease(ctx, lw.id)
		if !noAnswer(ctx, rerr) {
			l, err = got, rerr
		}
	}
	if !lw.unwritten {
		read()
	}
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
			if events.Unmarshal(m.Data, &r) != nil || r.Seq < l.Seq {
				continue // a delete marker, or older than what we hold
			}
			l, err = r.Value, nil
		case <-poll.C:
			read()
		}
	}
}
