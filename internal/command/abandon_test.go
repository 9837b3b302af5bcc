package command

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore/jstest"
)

// dropper is a Preparer whose drop attempts and server probes answer as told, counted.
type dropper struct {
	nopPreparer
	attempted bool            // what a failed attempt says of itself
	err       error           // an attempt's failure: on every server, or those failing names
	failing   map[string]bool // by host
	gone      map[string]bool // hosts that take no connection
	slowDrop  bool            // an attempt lasts until its deadline
	slowProbe time.Duration
	cancel    context.CancelFunc // called during an attempt: its client gives up
	drops     atomic.Int32
	probes    atomic.Int32
}

func (d *dropper) DropNow(ctx context.Context, l events.Lease) (bool, error) {
	d.drops.Add(1)
	if d.cancel != nil {
		d.cancel()
	}
	if d.slowDrop {
		<-ctx.Done()
	}
	if d.err == nil || d.failing != nil && !d.failing[l.Spec.Target.Host] {
		return true, nil
	}
	return d.attempted, d.err
}

func (d *dropper) Reachable(ctx context.Context, l events.Lease) (bool, error) {
	d.probes.Add(1)
	select {
	case <-time.After(d.slowProbe):
	case <-ctx.Done():
		return false, ctx.Err()
	}
	return !d.gone[l.Spec.Target.Host], nil
}

// givingUp is a service whose drops answer as d says, with n active leases on one target,
// and a count of the revocations it gives up.
func givingUp(t *testing.T, d *dropper, n int) (*Service, events.Target, []string, *atomic.Int32) {
	t.Helper()
	s := newService(t, jstest.MustStore(t), d)
	var given atomic.Int32
	s.cfg.Abandoned = func() { given.Add(1) }
	reg, _ := registeredTarget(t, s)
	return s, reg, activeOn(t, s, reg, n), &given
}

// activeOn appends n active leases made with target's settings (its server among them).
func activeOn(t *testing.T, s *Service, target events.Target, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7()).String()
		now := time.Now()
		name := "v_given_" + ids[i][len(ids[i])-8:]
		if ok, err := s.usernames.Reserve(t.Context(), name, []byte(ids[i]), 0); !ok || err != nil {
			t.Fatalf("reserve %s: %v, %v", name, ok, err)
		}
		if _, err := s.cfg.Store.Append(t.Context(), events.LeaseSubject(ids[i]), events.RequestLease(events.LeaseRequest{LeaseID: ids[i],
			Target: target, TTLSeconds: 3600, Username: name, Now: now, Deadline: now.Add(time.Minute)}), 0); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.cfg.Store.DecideLease(t.Context(), ids[i], func(l events.Lease) (*events.Event, error) {
			act, err := l.Activate(time.Now())
			return &act, err
		}); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// lastEvent is the last event of lease id's history.
func lastEvent(t *testing.T, s *Service, id string) events.Event {
	t.Helper()
	evs, _, err := s.cfg.Store.History(t.Context(), events.LeaseSubject(id))
	if err != nil || len(evs) == 0 {
		t.Fatalf("lease %s's history: %v, %v", id, evs, err)
	}
	return evs[len(evs)-1]
}

// A forced revocation gives a drop up only once an attempt of its own has failed: one
// that succeeds records the drop, and one not made for a reason that may pass, or cut
// short by its client, gives nothing up.
func TestAbandonLease_GivesUpOnlyAFailedAttempt(t *testing.T) {
	down := events.Errorf(events.ETargetUnavailable, "Could not connect.")
	t.Run("failed", func(t *testing.T) {
		d := &dropper{attempted: true, err: down}
		s, _, ids, given := givingUp(t, d, 1)
		l, err := s.AbandonLease(t.Context(), ids[0], "admin")
		if err != nil || !l.Abandoned || l.Status != events.StatusRevoked || d.drops.Load() != 1 || given.Load() != 1 {
			t.Fatalf("lease %+v, %v, %d attempts, %d counted; want it abandoned after one attempt, counted once", l, err, d.drops.Load(), given.Load())
		}
		if e := lastEvent(t, s, ids[0]); e.Type != events.LeaseAbandoned || e.Reason != events.ReasonAbandoned || e.Username != l.Username || e.ClientID != "admin" {
			t.Fatalf("last event %+v", e)
		}
		if _, err := s.AbandonLease(t.Context(), ids[0], "admin"); events.ErrorCode(err) != events.ENotFound {
			t.Fatalf("forcing an ended lease: %v, want not found", err)
		}
	})
	t.Run("dropped", func(t *testing.T) {
		d := &dropper{attempted: true}
		s, _, ids, given := givingUp(t, d, 1)
		l, err := s.AbandonLease(t.Context(), ids[0], "admin")
		if err != nil || l.Abandoned || l.Status != events.StatusRevoked || given.Load() != 0 {
			t.Fatalf("lease %+v, %v, %d counted; want it dropped", l, err, given.Load())
		}
		if e := lastEvent(t, s, ids[0]); e.Type != events.LeaseDropped {
			t.Fatalf("last event %+v, want lease.dropped", e)
		}
		if _, held, err := s.usernames.Holder(t.Context(), l.Username); err != nil || held {
			t.Fatalf("the dropped user's name: held %v, %v; want it free, as after the worker's drop", held, err)
		}
	})
	for name, d := range map[string]*dropper{
		"not attempted": {err: events.Errorf(events.ETimeout, "The event store did not answer in time.")},
		"cancelled":     {attempted: true, err: down},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if name == "cancelled" {
				d.cancel = cancel
			}
			s, _, ids, given := givingUp(t, d, 1)
			if _, err := s.AbandonLease(ctx, ids[0], "admin"); events.ErrorCode(err) != events.EUnavailable {
				t.Fatalf("err = %v, want unavailable", err)
			}
			if e := lastEvent(t, s, ids[0]); e.Type != events.LeaseRevoked || given.Load() != 0 || d.drops.Load() != 1 {
				t.Fatalf("last event %+v, %d counted, %d attempts; want the revocation recorded after one attempt, nothing given up", e, given.Load(), d.drops.Load())
			}
		})
	}
}

// A drop that can never be tried (the target's admin password unusable) is given up, saying
// so: waiting would change nothing, and the lease would hold its target for good.
func TestAbandonLease_GivesUpADropThatCanNeverBeTried(t *testing.T) {
	d := &dropper{err: events.Errorf(events.EInternal, "The admin password does not open.")}
	s, _, ids, given := givingUp(t, d, 1)
	l, err := s.AbandonLease(t.Context(), ids[0], "admin")
	if err != nil || !l.Abandoned || given.Load() != 1 {
		t.Fatalf("lease %+v, %v, %d counted; want it abandoned", l, err, given.Load())
	}
	if e := lastEvent(t, s, ids[0]); e.Reason != events.ReasonAbandonedUntried {
		t.Fatalf("reason %q, want %q", e.Reason, events.ReasonAbandonedUntried)
	}
}

// A target's forced removal gives its leases up with one attempt each while their server
// takes connections (slow or locked, it is asked for each), and without one once an
// attempt failed and that server took none: only that server's, when the target moved
// and its older leases are on another. An attempt and a probe as slow as they may be
// still leave the outcome time to be recorded.
func TestRemoveTarget_ForcedAsksEachLeaseUnlessItsServerIsGone(t *testing.T) {
	const n = 12
	down := events.Errorf(events.ETargetUnavailable, "Could not connect.")
	count := func(t *testing.T, s *Service, ids []string) (abandoned, unasked, dropped int) {
		t.Helper()
		for _, id := range ids {
			switch e := lastEvent(t, s, id); {
			case e.Type == events.LeaseAbandoned && e.Reason == events.ReasonAbandonedUnreachable:
				abandoned++
				unasked++
			case e.Type == events.LeaseAbandoned:
				abandoned++
			case e.Type == events.LeaseDropped:
				dropped++
			default:
				t.Fatalf("lease %s ends with %+v", id, e)
			}
		}
		return abandoned, unasked, dropped
	}
	t.Run("up", func(t *testing.T) {
		d := &dropper{attempted: true, err: down}
		s, reg, ids, given := givingUp(t, d, n)
		if err := s.RemoveTarget(t.Context(), reg.RecordUID, true, true, "admin"); err != nil {
			t.Fatal(err)
		}
		if abandoned, unasked, _ := count(t, s, ids); abandoned != n || unasked != 0 || d.drops.Load() != n || given.Load() != n || d.probes.Load() != 1 {
			t.Fatalf("%d abandoned, %d unasked, %d attempts, %d probes, %d counted; want one attempt each, one probe", abandoned, unasked, d.drops.Load(), d.probes.Load(), given.Load())
		}
	})
	t.Run("gone", func(t *testing.T) {
		d := &dropper{attempted: true, err: down, gone: map[string]bool{"db.internal": true}}
		s, reg, ids, given := givingUp(t, d, n)
		if err := s.RemoveTarget(t.Context(), reg.RecordUID, true, true, "admin"); err != nil {
			t.Fatal(err)
		}
		abandoned, unasked, _ := count(t, s, ids)
		if abandoned != n || unasked == 0 || int(d.drops.Load())+unasked != n || given.Load() != n {
			t.Fatalf("%d abandoned, %d unasked, %d attempts; want the rest given up without one", abandoned, unasked, d.drops.Load())
		}
	})
	t.Run("moved", func(t *testing.T) {
		d := &dropper{attempted: true, err: down, failing: map[string]bool{"db.internal": true}, gone: map[string]bool{"db.internal": true}}
		s, reg, old, _ := givingUp(t, d, n)
		moved := reg
		moved.Host = "db-new.internal"
		fresh := activeOn(t, s, moved, n)
		if err := s.RemoveTarget(t.Context(), reg.RecordUID, true, true, "admin"); err != nil {
			t.Fatal(err)
		}
		if abandoned, _, dropped := count(t, s, old); abandoned != n || dropped != 0 {
			t.Fatalf("the old server's leases: %d abandoned, %d dropped; want all abandoned", abandoned, dropped)
		}
		if abandoned, _, dropped := count(t, s, fresh); abandoned != 0 || dropped != n {
			t.Fatalf("the new server's leases: %d abandoned, %d dropped; want each asked, and dropped", abandoned, dropped)
		}
	})
	t.Run("slow", func(t *testing.T) {
		d := &dropper{attempted: true, err: down, slowDrop: true, slowProbe: 1500 * time.Millisecond, gone: map[string]bool{"db.internal": true}}
		s, reg, ids, _ := givingUp(t, d, 3)
		s.cfg.RequestTimeout = 4 * time.Second // an attempt of 4 s and a probe of 1.5 s
		if err := s.RemoveTarget(t.Context(), reg.RecordUID, true, true, "admin"); err != nil {
			t.Fatalf("a slow attempt and probe: %v; want the removal recorded", err)
		}
		if abandoned, _, _ := count(t, s, ids); abandoned != 3 {
			t.Fatalf("%d abandoned, want 3", abandoned)
		}
	})
}
