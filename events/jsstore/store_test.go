package jsstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/events/jsstore/jstest"
)

func ev(typ events.Type, id string) events.Event {
	return events.Event{Type: typ, ID: "L." + id, LeaseID: "L", Time: time.Now().UTC()}
}

func TestStore_Append(t *testing.T) {
	ctx := context.Background()
	srv := jstest.MustServer(t, "")
	s := srv.MustStore(t)
	subj := events.LeaseSubject("L")

	seq1, err := s.Append(ctx, subj, ev(events.LeaseRequested, "requested"), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("a second first event conflicts", func(t *testing.T) {
		if _, err := s.Append(ctx, subj, ev(events.LeaseRequested, "other"), 0); !errors.Is(err, jsstore.ErrConflict) {
			t.Fatalf("err = %v, want ErrConflict", err)
		}
	})
	t.Run("retrying the same event is stored once", func(t *testing.T) {
		again, err := s.Append(ctx, subj, ev(events.LeaseRequested, "requested"), 0)
		if err != nil || again != seq1 {
			t.Fatalf("retry = %d, %v; want seq %d", again, err, seq1)
		}
	})
	seq2, err := s.Append(ctx, subj, ev(events.LeaseActivated, "activated"), seq1)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("deciding on a stale sequence conflicts", func(t *testing.T) {
		if _, err := s.Append(ctx, subj, ev(events.LeaseFailed, "failed"), seq1); !errors.Is(err, jsstore.ErrConflict) {
			t.Fatalf("err = %v, want ErrConflict", err)
		}
	})
	t.Run("a retried append that landed is success", func(t *testing.T) {
		got, err := s.Append(ctx, subj, ev(events.LeaseActivated, "activated"), seq1)
		if err != nil || got != seq2 {
			t.Fatalf("retry = %d, %v; want %d", got, err, seq2)
		}
	})
	t.Run("history is in order and only this lease", func(t *testing.T) {
		if _, err := s.Append(ctx, events.LeaseSubject("other"), events.Event{Type: events.LeaseRequested, ID: "o"}, 0); err != nil {
			t.Fatal(err)
		}
		evs, seqs, err := s.History(ctx, subj)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 2 || evs[0].Type != events.LeaseRequested || evs[1].Type != events.LeaseActivated || seqs[1] != seq2 {
			t.Fatalf("history = %+v %v", evs, seqs)
		}
	})
	t.Run("unknown lease is not found", func(t *testing.T) {
		if _, err := s.LoadLease(ctx, "nope"); events.ErrorCode(err) != events.ENotFound {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("the audit log refuses purges and deletes", func(t *testing.T) {
		if err := srv.MustStream(t, events.EventsStream).Purge(ctx); err == nil {
			t.Fatal("purge of the events stream succeeded")
		}
		if err := srv.MustStream(t, events.EventsStream).DeleteMsg(ctx, seq1); err == nil {
			t.Fatal("delete from the events stream succeeded")
		}
	})
}

// TestScheduleExpiry_WaitsForTheSecondsPublish: two leases of one process expire in the
// same second, and the first one's schedule publish is still in flight when the second
// lease is armed, then fails (its handler's context ended, the stream's leader was
// lost). The second lease's arming returned at once, counting the second as armed: it
// was activated with no schedule stored for its second, and never expired. It now waits
// for the publish under way, and publishes itself when that failed.
func TestScheduleExpiry_WaitsForTheSecondsPublish(t *testing.T) {
	ctx := context.Background()
	srv := jstest.MustServer(t, "")
	s := srv.MustStore(t)
	sched := srv.MustStream(t, events.SchedulesStream)
	at := time.Now().Add(time.Hour).Truncate(time.Second)
	second := events.ExpirySecond(at)
	end := jsstore.HoldArming(s, second)
	armed := make(chan error, 1)
	go func() { armed <- s.ScheduleExpiry(ctx, "B", at) }()
	// The lease is listed before its second is armed: once it is, the arming is under way.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		ids, _, err := s.ExpiringAt(ctx, second)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lease was not listed under its second")
		}
	}
	end(errors.New("the first caller's publish failed"))
	if err := <-armed; err != nil {
		t.Fatal(err)
	}
	info, err := sched.Info(ctx, jetstream.WithSubjectFilter(events.ScheduleSubject(second)))
	if err != nil || info.State.Subjects[events.ScheduleSubject(second)] != 1 {
		t.Fatalf("schedules stored for the second once its lease was armed: %v, %v; want one", info.State.Subjects, err)
	}
}

func TestStore_ScheduleExpiry(t *testing.T) {
	ctx := context.Background()
	srv := jstest.MustServer(t, "")
	s := srv.MustStore(t)
	sched := srv.MustStream(t, events.SchedulesStream)
	cons, err := sched.CreateConsumer(ctx, jetstream.ConsumerConfig{FilterSubject: events.DueSubjects})
	if err != nil {
		t.Fatal(err)
	}
	next := func() (events.Event, time.Time) {
		t.Helper()
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		e, err := events.Decode(msg.Data())
		if err != nil || e.Type != events.LeaseExpired {
			t.Fatalf("fired %+v, %v", e, err)
		}
		return e, time.Now()
	}
	t.Run("fires once at the second, never early, listing the leases due then", func(t *testing.T) {
		at := time.Now().Add(1500 * time.Millisecond)
		for _, id := range []string{"L1", "L2"} {
			if err := s.ScheduleExpiry(ctx, id, at); err != nil {
				t.Fatal(err)
			}
		}
		e, got := next()
		if got.Before(at) || e.ExpiresAt.Before(at) {
			t.Fatalf("fired at %v for %v: before the expiry at %v", got, e.ExpiresAt, at)
		}
		t.Logf("schedule fired %v after the expiry", got.Sub(at).Round(time.Millisecond))
		ids, upTo, err := s.ExpiringAt(ctx, e.ExpiresAt.Unix())
		if err != nil || len(ids) != 2 || ids[0] != "L1" || ids[1] != "L2" {
			t.Fatalf("expiring at the second: %v, %v", ids, err)
		}
		if err := s.DoneExpiring(ctx, e.ExpiresAt.Unix(), upTo); err != nil {
			t.Fatal(err)
		}
		if ids, _, err := s.ExpiringAt(ctx, e.ExpiresAt.Unix()); err != nil || len(ids) != 0 {
			t.Fatalf("after DoneExpiring: %v, %v", ids, err)
		}
		if more, err := s.StillListed(ctx, e.ExpiresAt.Unix()); err != nil || more {
			t.Fatalf("StillListed after DoneExpiring = %v, %v; want none", more, err)
		}
	})
	t.Run("one pending schedule per second, whatever the number of leases", func(t *testing.T) {
		at := time.Now().Add(time.Hour)
		for i := range 50 {
			if err := s.ScheduleExpiry(ctx, fmt.Sprintf("M%d", i), at); err != nil {
				t.Fatal(err)
			}
		}
		info, err := sched.Info(ctx, jetstream.WithSubjectFilter(events.ScheduleSubjects))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(info.State.Subjects); n != 1 {
			t.Fatalf("%d pending schedules for one second", n)
		}
	})
	t.Run("a lease listed after its second was read stays for the next firing", func(t *testing.T) {
		at := time.Now().Add(time.Second)
		if err := s.ScheduleExpiry(ctx, "N1", at); err != nil {
			t.Fatal(err)
		}
		e, _ := next()
		second := e.ExpiresAt.Unix()
		_, upTo, err := s.ExpiringAt(ctx, second)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.ScheduleExpiry(ctx, "N2", time.Unix(second, 0)); err != nil { // listed late
			t.Fatal(err)
		}
		if err := s.DoneExpiring(ctx, second, upTo); err != nil {
			t.Fatal(err)
		}
		// What is left of the list after DoneExpiring is seen from the leader: a read
		// answered by a copy behind it would have missed such a lease the same way.
		if more, err := s.StillListed(ctx, second); err != nil || !more {
			t.Fatalf("StillListed = %v, %v; want the late lease seen", more, err)
		}
		again, _ := next() // its schedule, published again, fires at once
		ids, _, err := s.ExpiringAt(ctx, again.ExpiresAt.Unix())
		if err != nil || len(ids) != 1 || ids[0] != "N2" {
			t.Fatalf("the late lease: %v, %v", ids, err)
		}
	})
}

func TestStore_ConsumeUpdatesAckWait(t *testing.T) {
	srv := jstest.MustServer(t, "")
	s := srv.MustStore(t)
	evs := srv.MustStream(t, events.EventsStream)
	// run starts a consumer with the given ack wait, as a restarted process with a new
	// --ack-wait would, and returns once the durable consumer shows it.
	run := func(ackWait time.Duration) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- s.Consume(ctx, jsstore.ConsumeConfig{Stream: events.EventsStream, Durable: "d", Filters: []string{events.LeaseSubjects},
				AckWait: ackWait, Logger: slog.New(slog.DiscardHandler)}, func(context.Context, events.Event, uint64) error { return nil })
		}()
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := evs.Consumer(context.Background(), "d")
			if err == nil && c.CachedInfo().Config.AckWait == ackWait {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("consumer never showed ack wait %v (%v)", ackWait, err)
			}
			time.Sleep(10 * time.Millisecond) // polling interval of a deadline-bounded wait
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	run(time.Minute)
	run(3 * time.Minute)
}

// A consumer restarted while a process consumes it (as rebuild-projections restarts the
// projector's and the removals' consumers under running servers) is consumed on, from
// where the restart put it, and one deleted by hand is made again and consumed from the
// stream's start: the server ends the first consumption, and a process that
// stopped there would serve on with nothing consumed until it restarted.
func TestStore_ConsumesOnAfterARestartOfItsConsumer(t *testing.T) {
	ctx := context.Background()
	srv := jstest.MustServer(t, "")
	s := srv.MustStore(t)
	var mu sync.Mutex
	seen := map[string]int{}
	times := func(id string) int {
		mu.Lock()
		defer mu.Unlock()
		return seen[id]
	}
	run, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Consume(run, jsstore.ConsumeConfig{Stream: events.EventsStream, Durable: "d", Filters: []string{events.LeaseSubjects},
			Logger: slog.New(slog.DiscardHandler)}, func(_ context.Context, e events.Event, _ uint64) error {
			mu.Lock()
			defer mu.Unlock()
			seen[e.LeaseID]++
			return nil
		})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	handled := func(id string) bool { return times(id) > 0 }
	appendOne := func(id string) uint64 {
		seq, err := s.Append(ctx, events.LeaseSubject(id), events.Event{Type: events.LeaseRequested, ID: id + ".requested", LeaseID: id,
			Lease: &events.LeaseSpec{Username: "vf_tmp_" + id}}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	waitHandled := func(id string) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !handled(id); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("event of %s never handled", id)
			}
		}
	}
	last := appendOne("before")
	waitHandled("before")
	if err := s.RestartConsumer(ctx, "d", last+1, events.LeaseSubjects); err != nil {
		t.Fatal(err)
	}
	appendOne("after")
	waitHandled("after")
	// Deleted by hand, it is made again, from the stream's start.
	if err := srv.MustStream(t, events.EventsStream).DeleteConsumer(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	appendOne("deleted")
	waitHandled("deleted")
	for deadline := time.Now().Add(15 * time.Second); times("before") != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after the consumer was deleted, the first event was handled %d times, want again", times("before"))
		}
	}
}

// A consumer RestartConsumer makes in place of another knows how far that one got (its
// ack floor, or what it had been handed itself): the events up to there are a replay to
// it. One made anew knows only when it was made.
func TestStore_ARestartedConsumerKnowsWhatItsPredecessorHandled(t *testing.T) {
	ctx := t.Context()
	srv := jstest.MustServer(t, "")
	s := srv.MustStore(t)
	var seqs []uint64
	for _, id := range []string{"a", "b", "c"} {
		seq, err := s.Append(ctx, events.LeaseSubject(id), events.Event{Type: events.LeaseRequested, ID: id + ".requested", LeaseID: id}, 0)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	before := time.Now().Add(-time.Second)
	if err := s.RestartConsumer(ctx, "d", 1, events.LeaseSubjects); err != nil {
		t.Fatal(err)
	}
	if o, err := s.ConsumerOrigin(ctx, "d"); err != nil || o.Restarted || o.Created.Before(before) {
		t.Fatalf("a consumer made anew: %+v, %v; want only when it was made", o, err)
	}
	cons, err := srv.MustStream(t, events.EventsStream).Consumer(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // the second restart's predecessor has handled nothing itself
		if err := s.RestartConsumer(ctx, "d", 1, events.LeaseSubjects); err != nil {
			t.Fatal(err)
		}
		if o, err := s.ConsumerOrigin(ctx, "d"); err != nil || !o.Restarted || o.HandledThrough != seqs[1] {
			t.Fatalf("a restarted consumer: %+v, %v; want its predecessor's floor %d", o, err, seqs[1])
		}
	}
}

// A consumer made again at once after its deletion could meet the server still
// removing the old one's files: a restart failed with a 500 naming a rename (one in a
// few hundred here; `rebuild-projections` restarts consumers under running processes).
// It is made again after a pause now.
func TestStore_RestartsAConsumerAgainAndAgain(t *testing.T) {
	ctx := t.Context()
	srv := jstest.MustServer(t, "")
	s := srv.MustStore(t)
	if _, err := s.Append(ctx, events.LeaseSubject("a"), events.Event{Type: events.LeaseRequested, ID: "a.requested", LeaseID: "a"}, 0); err != nil {
		t.Fatal(err)
	}
	stream := srv.MustStream(t, events.EventsStream)
	for i := range 1000 {
		if err := s.RestartConsumer(ctx, "d", 1, events.LeaseSubjects); err != nil {
			t.Fatalf("restart %d: %v", i+1, err)
		}
		cons, err := stream.Consumer(ctx, "d")
		if err != nil {
			t.Fatal(err)
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() { // a consumer with state of its own to write
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// A consumer deleted while no fetch of the process waited at it (every message it could
// take in hand) is not told of by the server: the process finds it missing when its
// fetches go unanswered, and consumes it again.
func TestStore_ConsumesOnAfterAnUnnoticedDeletion(t *testing.T) {
	ctx := context.Background()
	srv := jstest.MustServer(t, "")
	s := srv.MustStore(t)
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	var mu sync.Mutex
	seen := map[string]bool{}
	run, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Consume(run, jsstore.ConsumeConfig{Stream: events.EventsStream, Durable: "d", Filters: []string{events.LeaseSubjects},
			Concurrency: 1, Logger: slog.New(slog.DiscardHandler)}, func(_ context.Context, e events.Event, _ uint64) error {
			if e.LeaseID == "busy" {
				<-release
			}
			mu.Lock()
			defer mu.Unlock()
			seen[e.LeaseID] = true
			return nil
		})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	t.Cleanup(free) // first, should the test fail while the handler holds its event
	handled := func(id string) bool {
		mu.Lock()
		defer mu.Unlock()
		return seen[id]
	}
	appendOne := func(id string) {
		if _, err := s.Append(ctx, events.LeaseSubject(id), events.Event{Type: events.LeaseRequested, ID: id + ".requested", LeaseID: id,
			Lease: &events.LeaseSpec{Username: "vf_tmp_" + id}}, 0); err != nil {
			t.Fatal(err)
		}
	}
	// One event held in the handler, the next in hand waiting for its slot: no fetch
	// waits at the server.
	appendOne("busy")
	appendOne("waiting")
	c, err := srv.MustStream(t, events.EventsStream).Consumer(ctx, "d")
	for deadline := time.Now().Add(10 * time.Second); err != nil || c.CachedInfo().NumAckPending < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the two events never reached the process: %v", err)
		}
		c, err = srv.MustStream(t, events.EventsStream).Consumer(ctx, "d")
	}
	if err := srv.MustStream(t, events.EventsStream).DeleteConsumer(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	free()
	appendOne("after")
	// Found at the first unanswered fetch (no responders), or else at the missed
	// heartbeats, 30 s after the last fetch.
	for deadline := time.Now().Add(60 * time.Second); !handled("after"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the consumer deleted unnoticed was never consumed again")
		}
	}
}

func TestStore_DecideLease(t *testing.T) {
	ctx := context.Background()
	s := jstest.MustStore(t)
	now := time.Now().UTC()
	req := events.Event{Type: events.LeaseRequested, ID: "D.requested", LeaseID: "D", Time: now, ExpiresAt: now.Add(time.Hour),
		Lease: &events.LeaseSpec{Username: "vf_tmp_dddddddd"}}
	if _, err := s.Append(ctx, events.LeaseSubject("D"), req, 0); err != nil {
		t.Fatal(err)
	}
	t.Run("a decision taken on a state that moved on is taken again", func(t *testing.T) {
		var seen []events.Status
		l, seq, err := s.DecideLease(ctx, "D", func(l events.Lease) (*events.Event, error) {
			seen = append(seen, l.Status)
			if len(seen) == 1 {
				// Another process activates the lease between this load and the append.
				if _, err := s.Append(ctx, events.LeaseSubject("D"), events.Event{Type: events.LeaseActivated, ID: "D.activated", LeaseID: "D"}, l.Seq); err != nil {
					t.Fatal(err)
				}
			}
			if l.Status != events.StatusActive {
				return &events.Event{Type: events.LeaseFailed, ID: "D.failed", LeaseID: "D"}, nil
			}
			return &events.Event{Type: events.LeaseRevoked, ID: "D.revoked", LeaseID: "D"}, nil
		})
		if err != nil || seq == 0 || l.Status != events.StatusActive {
			t.Fatalf("decided on %+v, seq %d, %v", l, seq, err)
		}
		if fmt.Sprint(seen) != "[pending active]" {
			t.Fatalf("decide saw %v, want [pending active]", seen)
		}
		got, _ := s.LoadLease(ctx, "D")
		if got.Status != events.StatusRevoking {
			t.Fatalf("lease is %s: the stale decision (failed) was appended", got.Status)
		}
	})
	t.Run("nothing to do appends nothing", func(t *testing.T) {
		before, _ := s.LastSeq(ctx, events.LeaseSubject("D"))
		_, seq, err := s.DecideLease(ctx, "D", func(events.Lease) (*events.Event, error) { return nil, nil })
		after, _ := s.LastSeq(ctx, events.LeaseSubject("D"))
		if err != nil || seq != 0 || after != before {
			t.Fatalf("seq %d, %v, last %d -> %d", seq, err, before, after)
		}
	})
	t.Run("an unknown lease is not found", func(t *testing.T) {
		if _, _, err := s.DecideLease(ctx, "nope", func(events.Lease) (*events.Event, error) { return nil, nil }); events.ErrorCode(err) != events.ENotFound {
			t.Fatalf("err = %v", err)
		}
	})
}

// A client that renews its lease in a loop must not make every later decision on that
// lease slower: a lease's read skips the renewals its last one supersedes, and folds to
// what its whole history does, renewals written by an earlier version (which name no
// base) and all.
func TestStore_RenewalsDoNotLengthenALeasesRead(t *testing.T) {
	ctx := context.Background()
	s, nc := jstest.MustServer(t, "").MustStoreConn(t)
	now := time.Now().UTC()
	subj := events.LeaseSubject("R")
	seq, err := s.Append(ctx, subj, events.Event{Type: events.LeaseRequested, ID: "R.requested", LeaseID: "R", Time: now,
		TTLSeconds: 60, ExpiresAt: now.Add(time.Minute), Lease: &events.LeaseSpec{Username: "vf_tmp_rrrrrrrr"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if seq, err = s.Append(ctx, subj, events.Event{Type: events.LeaseActivated, ID: "R.activated", LeaseID: "R", Time: now}, seq); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // an earlier version's renewals
		e := events.Event{Type: events.LeaseRenewed, ID: fmt.Sprintf("R.old%d", i), LeaseID: "R", Time: now,
			TTLSeconds: 100 + i, ExpiresAt: now.Add(time.Duration(100+i) * time.Second)}
		if seq, err = s.Append(ctx, subj, e, seq); err != nil {
			t.Fatal(err)
		}
	}
	renew := func(ttl int) {
		t.Helper()
		if _, _, err := s.DecideLease(ctx, "R", func(l events.Lease) (*events.Event, error) {
			e, err := l.Renew("app", time.Now(), ttl, 0)
			return &e, err
		}); err != nil {
			t.Fatal(err)
		}
	}
	reads := func() (events.Lease, uint64) {
		t.Helper()
		before := nc.Stats().OutMsgs
		l, err := s.LoadLease(ctx, "R")
		if err != nil {
			t.Fatal(err)
		}
		return l, nc.Stats().OutMsgs - before
	}
	whole := func() events.Lease {
		t.Helper()
		evs, seqs, err := s.History(ctx, subj)
		if err != nil {
			t.Fatal(err)
		}
		return events.Fold(evs, seqs)
	}

	for i := range 200 {
		renew(600 + i%7)
	}
	l, n := reads()
	if n != 3 {
		t.Errorf("reading a lease after 203 renewals took %d reads, want 3 (the last renewal, the activation, the request)", n)
	}
	if want := whole(); !reflect.DeepEqual(l, want) {
		t.Errorf("the read folded to\n%+v\nits whole history to\n%+v", l, want)
	}
	if l.TTLSeconds != 600+199%7 || l.Status != events.StatusActive {
		t.Errorf("after the renewals the lease is %+v, want active with the last renewal's TTL", l)
	}

	if _, _, err := s.DecideLease(ctx, "R", func(l events.Lease) (*events.Event, error) { return l.Revoke("app", time.Now()) }); err != nil {
		t.Fatal(err)
	}
	l, n = reads()
	if n != 4 || l.Status != events.StatusRevoking || !reflect.DeepEqual(l, whole()) {
		t.Errorf("after a revocation the read took %d reads (want 4) and folded to %+v", n, l)
	}
}

// An events stream made by an earlier version, without the subjects added since, takes
// them on at the next start, keeping its events and its refusal of deletes.
func TestOpen_UpgradesTheEventsStream(t *testing.T) {
	ctx := context.Background()
	srv := jstest.MustServer(t, "")
	js, err := jetstream.New(srv.MustConnect(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.EventsStream, Storage: jetstream.FileStorage,
		Subjects: []string{events.LeaseSubjects, events.TargetSubjects}, DenyDelete: true, DenyPurge: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, events.LeaseSubject("L"), []byte(`{"type":"lease.requested"}`)); err != nil {
		t.Fatal(err)
	}
	s := srv.MustStore(t)
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 || !info.Config.DenyDelete || !info.Config.DenyPurge {
		t.Fatalf("after the upgrade: %d events, deny delete %v, deny purge %v", info.State.Msgs, info.Config.DenyDelete, info.Config.DenyPurge)
	}
	if _, err := s.AppendUnordered(ctx, events.KeysSubject("token"), events.Event{Type: events.TokenKeyRotated, ID: "k1", Time: time.Now()}); err != nil {
		t.Fatalf("append to a subject added since: %v", err)
	}
}

// LoadTarget reads a target's latest settings from its events, whatever a projection
// shows, with the sequence to append after, in one read however many updates it had; a
// removed target is not found.
func TestStore_LoadTarget(t *testing.T) {
	ctx := context.Background()
	s, nc := jstest.MustServer(t, "").MustStoreConn(t)
	subj := events.TargetSubject("T1")
	if _, _, err := s.LoadTarget(ctx, "T1"); events.ErrorCode(err) != events.ENotFound {
		t.Fatalf("no events: %v", err)
	}
	reg := events.Target{RecordUID: "T1", Host: "a"}
	upd := events.Target{RecordUID: "T1", Host: "b"}
	if _, err := s.Append(ctx, subj, events.Event{Type: events.TargetRegistered, ID: "T1.r", RecordUID: "T1", Target: &reg}, 0); err != nil {
		t.Fatal(err)
	}
	seq, err := s.Append(ctx, subj, events.Event{Type: events.TargetUpdated, ID: "T1.u", RecordUID: "T1", Target: &upd}, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		upd.Port = i
		if seq, err = s.Append(ctx, subj, events.Event{Type: events.TargetUpdated, ID: fmt.Sprintf("T1.u%d", i), RecordUID: "T1", Target: &upd}, seq); err != nil {
			t.Fatal(err)
		}
	}
	before := nc.Stats().OutMsgs
	got, last, err := s.LoadTarget(ctx, "T1")
	if err != nil || got.Host != "b" || got.Port != 49 || last != seq {
		t.Fatalf("LoadTarget = %+v, %d, %v; want host b, port 49 at %d", got, last, err, seq)
	}
	if n := nc.Stats().OutMsgs - before; n != 1 {
		t.Errorf("reading a target after 51 updates took %d reads, want 1", n)
	}
	if _, err := s.AppendUnordered(ctx, subj, events.Event{Type: events.TargetRemoved, ID: "T1.x", RecordUID: "T1"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.LoadTarget(ctx, "T1"); events.ErrorCode(err) != events.ENotFound {
		t.Fatalf("removed: %v", err)
	}
}

// RemovedTarget gives the settings a target was removed with and when, and none for a target that
// is not removed now: its setup is removed with what it returns, and a target brought
// back after a removal (by whoever can write to NATS) keeps it.
func TestStore_RemovedTarget(t *testing.T) {
	ctx := t.Context()
	s := jstest.MustStore(t)
	subj := events.TargetSubject("T2")
	reg := events.Target{RecordUID: "T2", Host: "a"}
	if _, err := s.Append(ctx, subj, events.Event{Type: events.TargetRegistered, ID: "T2.r", RecordUID: "T2", Target: &reg}, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RemovedTarget(ctx, "T2"); events.ErrorCode(err) != events.ENotFound {
		t.Fatalf("a live target: %v, want not found", err)
	}
	removedAt := time.Date(2026, 12, 5, 6, 0, 0, 0, time.UTC)
	if _, err := s.AppendUnordered(ctx, subj, events.Event{Type: events.TargetRemoved, ID: "T2.x", RecordUID: "T2", Time: removedAt}); err != nil {
		t.Fatal(err)
	}
	if got, at, err := s.RemovedTarget(ctx, "T2"); err != nil || got.Host != "a" || !at.Equal(removedAt) {
		t.Fatalf("the removed target: %+v at %s, %v; want its settings, removed at %s", got, at, err, removedAt)
	}
	if _, err := s.AppendUnordered(ctx, subj, events.Event{Type: events.TargetRegistered, ID: "T2.again", RecordUID: "T2", Target: &reg}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RemovedTarget(ctx, "T2"); events.ErrorCode(err) != events.ENotFound {
		t.Fatalf("a target registered again after its removal: %v, want not found", err)
	}
}

// A process of an older version, restarted during a rolling upgrade, keeps the subjects a
// newer one added to the events stream: appends to them go on working.
func TestOpen_KeepsSubjectsAddedByANewerVersion(t *testing.T) {
	ctx := context.Background()
	srv := jstest.MustServer(t, "")
	s := srv.MustStore(t)
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	newer := info.Config
	newer.Subjects = append(newer.Subjects, "syvault.future.*")
	js, err := jetstream.New(srv.MustConnect(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.UpdateStream(ctx, newer); err != nil {
		t.Fatal(err)
	}
	srv.MustStore(t) // this version starts again
	if _, err := js.Publish(ctx, "syvault.future.x", []byte(`{}`)); err != nil {
		t.Fatalf("a subject a newer version added was taken away: %v", err)
	}
}

// A lease's history is read along its chain: one read per event, whatever else the
// stream holds. A history whose events do not name their predecessors (appended by an
// earlier version) is still read whole.
func TestStore_LoadLeaseFollowsTheChain(t *testing.T) {
	ctx := context.Background()
	s, nc := jstest.MustServer(t, "").MustStoreConn(t)
	now := time.Now().UTC()
	var seq uint64
	var err error
	for i, typ := range []events.Type{events.LeaseRequested, events.LeaseActivated, events.LeaseRenewed, events.LeaseRevoked} {
		e := events.Event{Type: typ, ID: fmt.Sprintf("C.%d", i), LeaseID: "C", Time: now, ExpiresAt: now.Add(time.Hour),
			Lease: &events.LeaseSpec{Username: "vf_tmp_cccccccc"}}
		if seq, err = s.Append(ctx, events.LeaseSubject("C"), e, seq); err != nil {
			t.Fatal(err)
		}
		// Other leases' events in between.
		if _, err := s.Append(ctx, events.LeaseSubject(fmt.Sprintf("other%d", i)), ev(events.LeaseRequested, "o"), 0); err != nil {
			t.Fatal(err)
		}
	}
	before := nc.Stats().OutMsgs
	l, err := s.LoadLease(ctx, "C")
	if err != nil {
		t.Fatal(err)
	}
	if reads := nc.Stats().OutMsgs - before; reads != 4 {
		t.Errorf("loading a lease of 4 events took %d reads, want 4", reads)
	}
	if l.Status != events.StatusRevoking || l.Seq != seq || l.Username != "vf_tmp_cccccccc" {
		t.Errorf("folded %+v", l)
	}

	// Unchained: the same events with no predecessor recorded.
	for i, typ := range []events.Type{events.LeaseRequested, events.LeaseActivated, events.LeaseRevoked} {
		e := events.Event{Type: typ, ID: fmt.Sprintf("U.%d", i), LeaseID: "U", Time: now, ExpiresAt: now.Add(time.Hour),
			Lease: &events.LeaseSpec{Username: "vf_tmp_uuuuuuuu"}}
		if seq, err = s.AppendUnordered(ctx, events.LeaseSubject("U"), e); err != nil {
			t.Fatal(err)
		}
	}
	if l, err = s.LoadLease(ctx, "U"); err != nil || l.Status != events.StatusRevoking || l.Seq != seq || l.Username != "vf_tmp_uuuuuuuu" {
		t.Errorf("unchained history folded to %+v, %v", l, err)
	}
	if _, err := s.LoadLease(ctx, "none"); events.ErrorCode(err) != events.ENotFound {
		t.Errorf("unknown lease: %v", err)
	}
}

// Two updates decided on the same last event with different content: the second is a
// conflict, not taken for a retry of the first and answered as stored (a key change or
// a narrowing lost behind a 200). A retry of the first itself still lands once.
func TestStore_TwoUpdatesOnOneLastEvent(t *testing.T) {
	ctx := context.Background()
	s := jstest.MustStore(t)
	now := time.Now()
	c := events.Client{ClientID: "C1", Name: "app", Role: events.RoleApp}
	tg := events.Target{RecordUID: "T1", Host: "a"}
	for _, step := range []struct {
		subject       string
		first, second func(last uint64) events.Event
	}{
		{events.ClientSubject("C1"),
			func(last uint64) events.Event { c.MaxLeases = 5; return events.UpdateClient(c, "admin", last, now) },
			func(last uint64) events.Event { c.MaxLeases = 9; return events.UpdateClient(c, "admin", last, now) }},
		{events.TargetSubject("T1"),
			func(last uint64) events.Event { tg.Host = "b"; return events.UpdateTarget(tg, "admin", last, now) },
			func(last uint64) events.Event { tg.Host = "c"; return events.UpdateTarget(tg, "admin", last, now) }},
	} {
		last, err := s.AppendUnordered(ctx, step.subject, events.Event{Type: events.ClientRegistered, ID: step.subject + ".r"})
		if err != nil {
			t.Fatal(err)
		}
		first := step.first(last)
		seq, err := s.Append(ctx, step.subject, first, last)
		if err != nil {
			t.Fatal(err)
		}
		if again, err := s.Append(ctx, step.subject, first, last); err != nil || again != seq {
			t.Fatalf("%s: the first update sent again = %d, %v; want it at %d", step.subject, again, err, seq)
		}
		if _, err := s.Append(ctx, step.subject, step.second(last), last); !errors.Is(err, jsstore.ErrConflict) {
			t.Fatalf("%s: a second update decided on the same last event = %v, want a conflict", step.subject, err)
		}
	}
}

// A subject longer than NATS takes on its protocol line (4 KiB) made NATS close the
// connection for good. The store's reads and watches take one as naming nothing, and
// the store answers as before.
func TestStore_ASubjectTooLongForNATSNamesNothing(t *testing.T) {
	store := jstest.MustStore(t)
	long := events.LeaseSubject(strings.Repeat("A", 5000))
	if seq, err := store.LastSeq(t.Context(), long); seq != 0 || err != nil {
		t.Errorf("the last event on a 5,000-letter subject: %d, %v; want none", seq, err)
	}
	if _, err := store.Watch([]string{long}); events.ErrorCode(err) != events.ENotFound {
		t.Errorf("a watch on a 5,000-letter subject: %v; want not found", err)
	}
	if _, err := store.Append(t.Context(), events.LeaseSubject("after"), ev(events.LeaseRequested, "after"), 0); err != nil {
		t.Fatalf("an append after the long subjects: %v; want the store answering", err)
	}
}
