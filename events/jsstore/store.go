// Package jsstore keeps SyVault's events in NATS JetStream: it appends them with a dedupe
// id and an expected per-subject sequence (so concurrent deciders cannot interleave on one
// lease), reads one aggregate's history back, arms expiry schedules, runs durable
// consumers, reserves names, and carries the few core NATS messages the processes
// exchange (watches, the "still waiting?" question). It is the only package that knows
// how events map onto streams and the only one holding the NATS connection: callers get
// verbs, never the connection.
package jsstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
)

// ErrConflict is returned by Append when another event was appended to the subject after
// the sequence the caller decided on. The caller reloads and decides again.
var ErrConflict = errors.New("jsstore: subject moved on (expected last sequence mismatch)")

// Config sets up the streams.
type Config struct {
	// Replicas is the replica count of streams, consumers and buckets: 1 for a single
	// server, 3 for a cluster. Default 1.
	Replicas int
	// DuplicateWindow is how long a dedupe id is remembered. Default 15 seconds: long
	// enough for a retry of an append whose answer was lost, and short because JetStream
	// keeps every id of the window in memory (at a thousand creates a second, two
	// minutes' worth was most of the server's memory). Ordered appends do not depend on
	// it: a conflict is resolved by reading the subject's last message.
	DuplicateWindow time.Duration
}

func (c *Config) setDefaults() {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 15 * time.Second
	}
}

// Store appends and reads events. It is safe for concurrent use.
type Store struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	events jetstream.Stream
	sched  jetstream.Stream
	// leaderReads makes every read a leader's (for the benchmark that compares the two).
	leaderReads bool
	index       jetstream.Stream
	// scheduled is the expiry seconds this process published schedules for lately.
	scheduled seconds
}

// Open creates or updates the streams and returns a Store. It fails with an *events.Error
// of code EUnavailable when JetStream does not answer.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Store, error) {
	cfg.setDefaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jsstore.Open: %w", err)
	}
	evs, err := ensureStream(ctx, js, jetstream.StreamConfig{
		Name:        events.EventsStream,
		Description: "SyVault events: the source of truth and the audit log",
		Subjects:    []string{events.LeaseSubjects, events.TargetSubjects, events.ClientSubjects, events.AccessSubjects, events.KeysSubjects, events.OrphanSubjects},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
		// The audit trail must not be editable through NATS.
		DenyDelete:  true,
		DenyPurge:   true,
		AllowDirect: true,
	})
	if err != nil {
		return nil, events.StoreUnavailable(fmt.Errorf("jsstore.Open: events stream: %w", err))
	}
	sched, err := ensureStream(ctx, js, jetstream.StreamConfig{
		Name:        events.SchedulesStream,
		Description: "SyVault lease expiry schedules and their firings",
		Subjects:    []string{events.ScheduleSubjects, events.DueSubjects, events.ExpirySubjects},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		// A schedule is re-published at every renewal and no lease lives past 24 h, so no
		// pending schedule is ever older than a day; a week of MaxAge only cleans up fired
		// ones. A MaxAge under 24 h would silently delete pending schedules.
		MaxAge:            7 * 24 * time.Hour,
		Duplicates:        cfg.DuplicateWindow,
		AllowMsgSchedules: true,
		AllowDirect:       true,
	})
	if err != nil {
		return nil, events.StoreUnavailable(fmt.Errorf("jsstore.Open: schedules stream: %w", err))
	}
	st := &Store{cfg: cfg, nc: nc, js: js, events: evs, sched: sched}
	if st.index, err = st.openIndex(ctx); err != nil {
		return nil, events.StoreUnavailable(fmt.Errorf("jsstore.Open: index stream: %w", err))
	}
	return st, nil
}

// ensureStream creates a stream, or updates it only when a setting SyVault manages
// differs (subjects it does not list are kept): processes starting together must not rewrite a config nothing changed in (a
// stream update racing consumer creation is a data race inside nats-server 2.15).
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = js.Stream(ctx, want.Name)
		}
		if err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	have := s.CachedInfo().Config
	// Subjects are only ever added: a process of an older version, restarted during a
	// rolling upgrade, must not take away a subject a newer one appends to.
	for _, subj := range have.Subjects {
		if !slices.Contains(want.Subjects, subj) {
			want.Subjects = append(want.Subjects, subj)
		}
	}
	if slices.Equal(have.Subjects, want.Subjects) && have.Replicas == want.Replicas && have.Duplicates == want.Duplicates &&
		have.MaxAge == want.MaxAge && have.DenyDelete == want.DenyDelete && have.DenyPurge == want.DenyPurge &&
		have.AllowMsgSchedules == want.AllowMsgSchedules && have.AllowDirect == want.AllowDirect {
		return s, nil
	}
	return js.UpdateStream(ctx, want)
}

// Bucket opens a KV bucket, creating it when missing with cfg and the store's replica
// count; an existing bucket is used as it is, for the reason ensureStream gives. For the
// packages that keep state of their own in NATS (projections, token keys).
func (s *Store) Bucket(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Replicas = s.cfg.Replicas
	kv, err := s.js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = s.js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = s.js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if err == nil {
		err = awaitDirectGets(ctx, kv)
	}
	if err != nil {
		return nil, events.StoreUnavailable(fmt.Errorf("jsstore.Bucket(%s): %w", cfg.Bucket, err))
	}
	return kv, nil
}

// awaitDirectGets returns once a read of kv is answered. A KV read is a direct get, which
// only copies of the bucket that are current answer: on a cluster, just after the bucket
// was created (or its servers restarted), none may be yet, and the read fails at once
// with "no responders" where a missing key should be "not found". (A server's start
// failed that way: "tokenkey: load: nats: no responders available for request", its
// key bucket read the moment it was created on a fresh three-node cluster.) Without a
// deadline on ctx it gives up after 30 seconds.
func awaitDirectGets(ctx context.Context, kv jetstream.KeyValue) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	wait := 5 * time.Millisecond
	for {
		_, err := kv.Get(ctx, "syvault-probe")
		if err == nil || errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if !errors.Is(err, nats.ErrNoResponders) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no copy answers reads yet: %w", err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// DeleteBucket removes a KV bucket and everything in it; a missing one is success.
func (s *Store) DeleteBucket(ctx context.Context, name string) error {
	if err := s.js.DeleteKeyValue(ctx, name); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return events.StoreUnavailable(fmt.Errorf("jsstore.DeleteBucket(%s): %w", name, err))
	}
	return nil
}

// Connected reports whether the connection to NATS is up right now.
func (s *Store) Connected() bool { return s.nc.IsConnected() }

// Append publishes e on subject provided the subject's last sequence is still expect
// (0: the subject must be empty). e.ID is the dedupe id: appending the same event twice
// stores it once and returns the stored sequence. It returns ErrConflict when another
// event got there first, and an EUnavailable *events.Error when JetStream does not answer.
func (s *Store) Append(ctx context.Context, subject string, e events.Event, expect uint64) (uint64, error) {
	e.Prev = expect
	return s.append(ctx, subject, e, jetstream.WithMsgID(e.ID), jetstream.WithExpectLastSequencePerSubject(expect))
}

// AppendUnordered publishes e with its dedupe id but no ordering check, for events whose
// effect the state machine decides on its own (it ignores them when they do not apply).
func (s *Store) AppendUnordered(ctx context.Context, subject string, e events.Event) (uint64, error) {
	return s.append(ctx, subject, e, jetstream.WithMsgID(e.ID))
}

func (s *Store) append(ctx context.Context, subject string, e events.Event, opts ...jetstream.PublishOpt) (uint64, error) {
	if e.ID == "" {
		return 0, fmt.Errorf("jsstore.Append(%s): event has no dedupe id", e.Type)
	}
	data := e.Encode()
	ack, err := publishExpecting(ctx, func() (*jetstream.PubAck, error) { return s.js.Publish(ctx, subject, data, opts...) })
	if err == nil {
		return ack.Sequence, nil
	}
	if wrongLastSequence(err) {
		// A retry of an append that did land comes back as a conflict on one node: it is
		// a success if the subject's last message is this very event.
		// A read that fails says nothing either way: not a conflict, which its callers
		// act on (a worker undoes the user it made), but an answer to try again.
		last, gerr := s.leaderGet(ctx, events.EventsStream, msgGetRequest{LastFor: subject})
		switch {
		case gerr != nil && !errors.Is(gerr, jetstream.ErrMsgNotFound):
			return 0, unavailable(fmt.Errorf("jsstore.Append(%s %s): refused, and its subject could not be read: %w", e.Type, subject, gerr))
		case gerr == nil && last.Header.Get(jetstream.MsgIDHeader) == e.ID:
			return last.Sequence, nil
		}
		return 0, ErrConflict
	}
	return 0, unavailable(fmt.Errorf("jsstore.Append(%s %s): %w", e.Type, subject, err))
}

// History returns every event on subject in order, with their stream sequences. An empty
// history is not an error.
func (s *Store) History(ctx context.Context, subject string) ([]events.Event, []uint64, error) {
	var (
		evs  []events.Event
		seqs []uint64
		next uint64 = 1
	)
	for {
		msg, err := s.leaderGet(ctx, events.EventsStream, msgGetRequest{Seq: next, NextFor: subject})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return evs, seqs, nil
		}
		if err != nil {
			return nil, nil, unavailable(fmt.Errorf("jsstore.History(%s): %w", subject, err))
		}
		e, err := events.Decode(msg.Data)
		if err != nil {
			return nil, nil, fmt.Errorf("jsstore.History(%s) seq %d: %w", subject, msg.Sequence, err)
		}
		evs, seqs = append(evs, e), append(seqs, msg.Sequence)
		next = msg.Sequence + 1
	}
}

// leaseHistory is History for a lease, read backwards along the chain its events form
// (each names its predecessor, and the first is the request): the last event, then each
// predecessor by its sequence, one read per event, where reading forwards takes one more
// to learn that the history has ended, and searches the stream for each next event. A
// renewal's predecessors back to its Base are renewals it supersedes, left out: what
// they would fold to is what it folds to. A chain that does not end at a request (events
// appended before they named their predecessor), or does not step back, is read
// forwards instead.
func (s *Store) leaseHistory(ctx context.Context, subject string) ([]events.Event, []uint64, error) {
	var (
		evs  []events.Event
		seqs []uint64
	)
	req := msgGetRequest{LastFor: subject}
	for {
		msg, err := s.leaderGet(ctx, events.EventsStream, req)
		if errors.Is(err, jetstream.ErrMsgNotFound) && len(evs) == 0 {
			return nil, nil, nil
		}
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, nil, unavailable(fmt.Errorf("jsstore.History(%s): %w", subject, err))
		}
		if err != nil || msg.Subject != subject {
			return s.History(ctx, subject)
		}
		e, err := events.Decode(msg.Data)
		if err != nil {
			return nil, nil, fmt.Errorf("jsstore.History(%s) seq %d: %w", subject, msg.Sequence, err)
		}
		evs, seqs = append(evs, e), append(seqs, msg.Sequence)
		if e.Prev == 0 {
			if e.Type != events.LeaseRequested {
				return s.History(ctx, subject)
			}
			slices.Reverse(evs)
			slices.Reverse(seqs)
			return evs, seqs, nil
		}
		prev := e.Prev
		if e.Type == events.LeaseRenewed && e.Base != 0 && e.Base <= prev {
			prev = e.Base
		}
		if prev >= msg.Sequence {
			return s.History(ctx, subject)
		}
		req = msgGetRequest{Seq: prev}
	}
}

// LoadTarget returns a target's latest settings, read from its events rather than from a
// projection that may lag, and the sequence of its last event, to append after it on
// condition that nothing came between. It returns an ENotFound *events.Error when the
// target has no events or was removed.
//
// The last event alone says it, as a rule: a removal, or the whole target (registered,
// updated, resealed). So a target updated daily for years is read in one request, as
// every update and removal does; only a last event of neither kind reads the history.
func (s *Store) LoadTarget(ctx context.Context, recordUID string) (events.Target, uint64, error) {
	subject := events.TargetSubject(recordUID)
	notFound := events.Errorf(events.ENotFound, "No target has record_uid %q.", recordUID)
	if !events.ValidID(recordUID) { // a wildcard would read other targets' events as one
		return events.Target{}, 0, notFound
	}
	msg, err := s.leaderGet(ctx, events.EventsStream, msgGetRequest{LastFor: subject})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return events.Target{}, 0, notFound
	}
	if err != nil {
		return events.Target{}, 0, unavailable(fmt.Errorf("jsstore.LoadTarget(%s): %w", recordUID, err))
	}
	if e, err := events.Decode(msg.Data); err == nil {
		if e.Type == events.TargetRemoved {
			return events.Target{}, 0, notFound
		}
		if t := targetState(e); t != nil {
			return *t, msg.Sequence, nil
		}
	}
	evs, seqs, err := s.History(ctx, subject)
	if err != nil {
		return events.Target{}, 0, err
	}
	t := lastState(evs, events.TargetRemoved, targetState)
	if t == nil {
		return events.Target{}, 0, notFound
	}
	return *t, seqs[len(seqs)-1], nil
}

// RemovedTarget returns the settings target recordUID had when it was removed (its last
// registration, update or reseal), read from its events: what its users shared, made
// with them, is removed with them; and the time its removal was recorded at (as its
// event says). ENotFound when it has none, or is not removed now
// (its callers saw a removal earlier; whoever can write to NATS could have written one,
// and then settings after it). Settings naming another target (copied onto its subject
// the same way) are not its own: removed with them, that other target's setup would go.
func (s *Store) RemovedTarget(ctx context.Context, recordUID string) (events.Target, time.Time, error) {
	if !events.ValidID(recordUID) {
		return events.Target{}, time.Time{}, events.Errorf(events.ENotFound, "No removed target has record_uid %q.", recordUID)
	}
	evs, _, err := s.History(ctx, events.TargetSubject(recordUID))
	if err != nil {
		return events.Target{}, time.Time{}, err
	}
	if len(evs) == 0 || evs[len(evs)-1].Type != events.TargetRemoved {
		return events.Target{}, time.Time{}, events.Errorf(events.ENotFound, "No removed target has record_uid %q.", recordUID)
	}
	for _, e := range slices.Backward(evs) {
		if t := targetState(e); t != nil && t.RecordUID == recordUID {
			return *t, evs[len(evs)-1].Time, nil
		}
	}
	return events.Target{}, time.Time{}, events.Errorf(events.ENotFound, "No target has record_uid %q.", recordUID)
}

// targetState is the whole target an event records, as the read side takes it: those of
// a registration, an update and a reseal; nil for any other.
func targetState(e events.Event) *events.Target {
	switch e.Type {
	case events.TargetRegistered, events.TargetUpdated, events.TargetResealed:
		return e.Target
	}
	return nil
}

// LoadClient returns a client as its events stand, and the sequence of its last event,
// read like LoadTarget. It returns an ENotFound *events.Error when the client has no
// events or was removed.
func (s *Store) LoadClient(ctx context.Context, clientID string) (events.Client, uint64, error) {
	if !events.ValidID(clientID) { // a wildcard would read other clients' events as one
		return events.Client{}, 0, events.Errorf(events.ENotFound, "No client with id %q.", clientID)
	}
	evs, seqs, err := s.History(ctx, events.ClientSubject(clientID))
	if err != nil {
		return events.Client{}, 0, err
	}
	c := lastState(evs, events.ClientRemoved, func(e events.Event) *events.Client {
		if e.Type != events.ClientRegistered && e.Type != events.ClientUpdated {
			return nil
		}
		return e.Client
	})
	if c == nil {
		return events.Client{}, 0, events.Errorf(events.ENotFound, "No client with id %q.", clientID)
	}
	return *c, seqs[len(seqs)-1], nil
}

// lastState is what an aggregate's events leave of it, for aggregates whose events each
// carry the whole state (state picks it, nil when an event carries none) and whose
// removal ends it: nil when there is none.
func lastState[T any](evs []events.Event, removed events.Type, state func(events.Event) *T) *T {
	var last *T
	for _, e := range evs {
		if e.Type == removed {
			last = nil
		} else if v := state(e); v != nil {
			last = v
		}
	}
	return last
}

// LoadLease folds a lease's history. It returns an ENotFound *events.Error when the lease
// has no events.
func (s *Store) LoadLease(ctx context.Context, leaseID string) (events.Lease, error) {
	if !events.ValidID(leaseID) { // a wildcard would read other leases' events as one
		return events.Lease{}, events.Errorf(events.ENotFound, "No lease with id %q.", leaseID)
	}
	evs, seqs, err := s.leaseHistory(ctx, events.LeaseSubject(leaseID))
	if err != nil {
		return events.Lease{}, err
	}
	if len(evs) == 0 {
		return events.Lease{}, events.Errorf(events.ENotFound, "No lease with id %q.", leaseID)
	}
	l := events.Fold(evs, seqs)
	if l.ID != "" && l.ID != leaseID {
		// SyVault's request on a lease's subject names that lease. One naming another was
		// copied there, sealed password and all, by whoever can write to NATS: that
		// password opens with the other lease's id, so the history is refused whole. (A
		// request without a lease, which sets no id, makes no lease to act on.)
		return events.Lease{}, &events.Error{Code: events.EInternal, Err: ErrPermanent,
			Message: fmt.Sprintf("The history of lease %q was not written by SyVault: its request names another lease.", leaseID)}
	}
	return l, nil
}

// DecideLease is how every change to a lease is made: it loads the lease and asks decide
// what to append. decide returns the event, or nil when there is nothing to do (its error
// is returned as it is). The event is appended on condition that the lease has not moved
// on since it was loaded; when it has, the lease is loaded and decided on again, so a
// decision is never taken on a stale state. It returns the lease decide last saw and the
// sequence of the appended event (0 when none).
func (s *Store) DecideLease(ctx context.Context, id string, decide func(events.Lease) (*events.Event, error)) (events.Lease, uint64, error) {
	for {
		l, err := s.LoadLease(ctx, id)
		if err != nil {
			return l, 0, err
		}
		e, err := decide(l)
		if err != nil || e == nil {
			return l, 0, err
		}
		seq, err := s.Append(ctx, events.LeaseSubject(id), *e, l.Seq)
		if errors.Is(err, ErrConflict) {
			continue
		}
		return l, seq, err
	}
}

// LastSeq returns the sequence of the last event on subject, 0 when there is none.
func (s *Store) LastSeq(ctx context.Context, subject string) (uint64, error) {
	msg, err := s.leaderGet(ctx, events.EventsStream, msgGetRequest{LastFor: subject})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, unavailable(fmt.Errorf("jsstore.LastSeq(%s): %w", subject, err))
	}
	return msg.Sequence, nil
}

// FirstSeq returns the sequence of the first event on subject (0 when it has none), read
// from the stream's leader.
func (s *Store) FirstSeq(ctx context.Context, subject string) (uint64, error) {
	msg, err := s.leaderGet(ctx, events.EventsStream, msgGetRequest{Seq: 1, NextFor: subject})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, unavailable(fmt.Errorf("jsstore.FirstSeq(%s): %w", subject, err))
	}
	return msg.Sequence, nil
}

// ScheduleExpiry arms the lease's expiry at at (a whole second; anything finer is
// rounded up, so an expiry never fires early): the lease is listed under that second,
// and that second's schedule is (re-)published, which makes JetStream publish the second
// on its due subject when it comes. One pending schedule per second at which some lease
// expires, not one per lease: their number stays within a day's seconds however many
// leases there are, and so does the memory the server keeps for them. Idempotent; a
// renewal arms the new second and the old one finds the lease renewed.
func (s *Store) ScheduleExpiry(ctx context.Context, leaseID string, at time.Time) error {
	second := events.ExpirySecond(at)
	if _, err := s.js.Publish(ctx, events.ExpirySubject(second), []byte(leaseID),
		jetstream.WithMsgID(leaseID+".expires."+strconv.FormatInt(second, 10))); err != nil {
		return unavailable(fmt.Errorf("jsstore.ScheduleExpiry(%s): %w", leaseID, err))
	}
	publish := func() error {
		due := time.Unix(second, 0).UTC()
		msg := nats.NewMsg(events.ScheduleSubject(second))
		msg.Data = events.ExpiryDue(due).Encode()
		msg.Header.Set(jetstream.ScheduleHeader, "@at "+due.Format(time.RFC3339Nano))
		msg.Header.Set(jetstream.ScheduleTargetHeader, events.DueSubject(second))
		_, err := s.js.PublishMsg(ctx, msg)
		return err
	}
	// Near or past seconds always get their schedule published again: one that already
	// fired would not come back for a lease listed after it.
	var err error
	if second > time.Now().Unix()+2 {
		err = s.scheduled.arm(ctx, second, publish)
	} else {
		err = publish()
	}
	if err != nil {
		return unavailable(fmt.Errorf("jsstore.ScheduleExpiry(%s): %w", leaseID, err))
	}
	return nil
}

// ExpiringAt returns the leases listed as expiring at second and the sequence to pass
// to DoneExpiring once they are dealt with. Each request reads up to a thousand.
func (s *Store) ExpiringAt(ctx context.Context, second int64) (ids []string, upTo uint64, err error) {
	var after uint64
	seen := map[string]bool{}
	for {
		// Without headers: only the bodies and the last sequence (in the end marker) are
		// needed, and a second of a storm lists thousands.
		msgs, end, err := s.directBatch(ctx, events.SchedulesStream,
			map[string]any{"seq": after + 1, "next_by_subj": events.ExpirySubject(second), "batch": 1000, "no_hdr": true})
		if err != nil {
			return nil, 0, err
		}
		for _, m := range msgs {
			if id := string(m.Data); !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		if len(msgs) > 0 {
			after = end.last
		}
		if end.pending == 0 || len(msgs) == 0 {
			return ids, after, nil
		}
	}
}

// DoneExpiring removes the second's list up to and including upTo: a lease armed for
// that second after the list was read stays, and its schedule, published again, brings
// the second back.
func (s *Store) DoneExpiring(ctx context.Context, second int64, upTo uint64) error {
	if upTo == 0 {
		return nil
	}
	err := s.sched.Purge(ctx, jetstream.WithPurgeSubject(events.ExpirySubject(second)), jetstream.WithPurgeSequence(upTo+1))
	if err != nil {
		return unavailable(fmt.Errorf("jsstore.DoneExpiring(%d): %w", second, err))
	}
	return nil
}

// StillListed reports whether any lease is listed as expiring at second, read from the
// stream's leader. ExpiringAt's batched read may be answered by any copy of the stream,
// one still catching up after a restart included (NATS lets a copy answer direct gets
// once it is 90 % caught up), which can miss leases listed before the second fired; once
// the list read is done with, anything left of it is such a lease or one listed since,
// and the second must be read again rather than acknowledged.
func (s *Store) StillListed(ctx context.Context, second int64) (bool, error) {
	_, err := s.leaderGet(ctx, events.SchedulesStream, msgGetRequest{LastFor: events.ExpirySubject(second)})
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	case err != nil:
		return false, unavailable(fmt.Errorf("jsstore.StillListed(%d): %w", second, err))
	}
	return true, nil
}

// seconds remembers the expiry seconds this process has published schedules for
// lately, so a burst of leases expiring at the same second publishes its schedule once.
type seconds struct {
	mu sync.Mutex
	m  map[int64]*arming
}

// arming is one publish of a second's schedule: done is closed once err is set.
type arming struct {
	done chan struct{}
	err  error
}

// arm returns once second's schedule is stored, publishing it unless this process did
// lately. One caller publishes; the others of the same second wait for its outcome, and
// publish themselves when it failed. A second counts as armed only once its publish was
// acknowledged: a caller that returned on a publish still in flight, which then failed
// (its handler's context ended, the stream's leader was lost), had its lease activated
// with no schedule for its second, and the lease never expired.
func (c *seconds) arm(ctx context.Context, second int64, publish func() error) error {
	for {
		a, first := c.begin(second)
		if first {
			err := publish()
			c.finish(second, a, err)
			return err
		}
		select {
		case <-a.done:
			if a.err == nil {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// begin returns second's arming, new (first) when none is armed or under way.
func (c *seconds) begin(second int64) (a *arming, first bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a, ok := c.m[second]; ok {
		return a, false
	}
	if c.m == nil {
		c.m = map[int64]*arming{}
	}
	if len(c.m) >= 1<<16 { // a day of seconds and then some: start over
		clear(c.m)
	}
	a = &arming{done: make(chan struct{})}
	c.m[second] = a
	return a, true
}

// finish ends the arming a of second with err; a failed one is forgotten.
func (c *seconds) finish(second int64, a *arming, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a.err = err
	if err != nil && c.m[second] == a {
		delete(c.m, second)
	}
	close(a.done)
}

// Info returns the events stream's state (for readiness and metrics).
func (s *Store) Info(ctx context.Context) (*jetstream.StreamInfo, error) {
	info, err := s.events.Info(ctx)
	if err != nil {
		return nil, unavailable(fmt.Errorf("jsstore.Info: %w", err))
	}
	return info, nil
}

// stream returns the stream of the given name (events.EventsStream or
// events.SchedulesStream).
func (s *Store) stream(name string) (jetstream.Stream, error) {
	switch name {
	case events.EventsStream:
		return s.events, nil
	case events.SchedulesStream:
		return s.sched, nil
	}
	return nil, fmt.Errorf("jsstore: no stream %q", name)
}

func unavailable(err error) error { return events.StoreUnavailable(err) }
