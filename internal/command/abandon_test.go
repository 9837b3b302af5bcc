package command

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore/jstest"
)

// dropper is a Preparer whose drop attempts answer as told, counted.
type dropper struct {
	nopPreparer
	attempted, reachable bool
	err                  error
	drops                atomic.Int32
}

func (d *dropper) DropNow(context.Context, events.Lease) (bool, error) {
	d.drops.Add(1)
	return d.attempted, d.err
}

func (d *dropper) Reachable(context.Context, events.Lease) bool { return d.reachable }

// givingUp is a service whose drops answer as d says, with n active leases on one target,
// and a count of the revocations it gives up.
func givingUp(t *testing.T, d *dropper, n int) (*Service, events.Target, []string, *atomic.Int32) {
	t.Helper()
	s := newService(t, jstest.MustStore(t), d)
	var given atomic.Int32
	s.cfg.Abandoned = func() { given.Add(1) }
	reg, _ := registeredTarget(t, s)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7()).String()
		now := time.Now()
		if _, err := s.cfg.Store.Append(t.Context(), events.LeaseSubject(ids[i]), events.RequestLease(events.LeaseRequest{LeaseID: ids[i],
			Target: reg, TTLSeconds: 3600, Username: fmt.Sprintf("v_given_%d", i), Now: now, Deadline: now.Add(time.Minute)}), 0); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.cfg.Store.DecideLease(t.Context(), ids[i], func(l events.Lease) (*events.Event, error) {
			act, err := l.Activate(time.Now())
			return &act, err
		}); err != nil {
			t.Fatal(err)
		}
	}
	return s, reg, ids, &given
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
// that succeeds records the drop, and one that could not be made (the target's settings
// unreadable) gives nothing up.
func TestAbandonLease_GivesUpOnlyAFailedAttempt(t *testing.T) {
	down := events.Errorf(events.ETargetUnavailable, "Could not connect.")
	t.Run("failed", func(t *testing.T) {
		d := &dropper{attempted: true, err: down}
		s, _, ids, given := givingUp(t, d, 1)
		l, err := s.AbandonLease(t.Context(), ids[0], "admin")
		if err != nil || !l.Abandoned || l.Status != events.StatusRevoked || d.drops.Load() != 1 || given.Load() != 1 {
			t.Fatalf("lease %+v, %v, %d attempts, %d counted; want it abandoned after one attempt, counted once", l, err, d.drops.Load(), given.Load())
		}
		if e := lastEvent(t, s, ids[0]); e.Type != events.LeaseAbandoned || e.Reason != events.ReasonAbandoned || e.Username != "v_given_0" || e.ClientID != "admin" {
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
	})
	t.Run("not attempted", func(t *testing.T) {
		d := &dropper{err: events.Errorf(events.EUnavailable, "The event store did not answer.")}
		s, _, ids, given := givingUp(t, d, 1)
		if _, err := s.AbandonLease(t.Context(), ids[0], "admin"); events.ErrorCode(err) != events.EUnavailable {
			t.Fatalf("err = %v, want unavailable", err)
		}
		if e := lastEvent(t, s, ids[0]); e.Type != events.LeaseRevoked || given.Load() != 0 {
			t.Fatalf("last event %+v, %d counted; want the revocation alone, nothing given up", e, given.Load())
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		d := &dropper{attempted: true, err: down}
		s, _, ids, _ := givingUp(t, d, 1)
		cancel()
		if _, err := s.AbandonLease(ctx, ids[0], "admin"); err == nil {
			t.Fatal("a cancelled request answered")
		}
		if e := lastEvent(t, s, ids[0]); e.Type == events.LeaseAbandoned {
			t.Fatal("a cancelled request gave the drop up")
		}
	})
}

// A target's forced removal gives its leases up with one attempt each while its server
// takes connections (slow or locked, it is asked for each), and without one once an
// attempt failed and the server took none.
func TestRemoveTarget_ForcedAsksEachLeaseUnlessTheServerIsGone(t *testing.T) {
	const n = 12
	for _, reachable := range []bool{true, false} {
		t.Run(fmt.Sprintf("reachable=%v", reachable), func(t *testing.T) {
			d := &dropper{attempted: true, reachable: reachable, err: events.Errorf(events.ETargetUnavailable, "Could not connect.")}
			s, reg, ids, given := givingUp(t, d, n)
			if err := s.RemoveTarget(t.Context(), reg.RecordUID, true, true, "admin"); err != nil {
				t.Fatal(err)
			}
			unreached := 0
			for _, id := range ids {
				e := lastEvent(t, s, id)
				if e.Type != events.LeaseAbandoned {
					t.Fatalf("lease %s ends with %+v", id, e)
				}
				if e.Reason == events.ReasonAbandonedUnreachable {
					unreached++
				}
			}
			switch {
			case given.Load() != n:
				t.Fatalf("%d given up counted, want %d", given.Load(), n)
			case reachable && (d.drops.Load() != n || unreached != 0):
				t.Fatalf("a server that takes connections: %d attempts, %d given up unasked; want one each", d.drops.Load(), unreached)
			case !reachable && (d.drops.Load() >= n || unreached == 0 || int(d.drops.Load())+unreached != n):
				t.Fatalf("a server gone: %d attempts, %d given up unasked; want the rest given up without one", d.drops.Load(), unreached)
			}
		})
	}
}
