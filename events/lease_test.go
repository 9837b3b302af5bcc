package events_test

import (
	"testing"
	"time"

	"github.com/syvault/syvault/events"
)

func requested(at time.Time, ttl time.Duration) events.Event {
	return events.Event{Type: events.LeaseRequested, LeaseID: "L", RecordUID: "R", Time: at, TTLSeconds: int(ttl.Seconds()),
		ExpiresAt: at.Add(ttl), Lease: &events.LeaseSpec{Username: "vf_tmp_abcdefgh"}}
}

func TestLease_Apply(t *testing.T) {
	t0 := time.Date(2026, 4, 6, 12, 0, 0, 0, time.UTC)
	ev := func(typ events.Type) events.Event {
		return events.Event{Type: typ, LeaseID: "L", Time: t0.Add(time.Minute)}
	}
	expired := func(due time.Time) events.Event {
		return events.Event{Type: events.LeaseExpired, LeaseID: "L", ExpiresAt: due, Time: due}
	}
	renewed := events.Event{Type: events.LeaseRenewed, LeaseID: "L", ExpiresAt: t0.Add(2 * time.Hour)}
	tests := []struct {
		name string
		evs  []events.Event
		want events.Status
	}{
		{"requested is pending", []events.Event{requested(t0, time.Hour)}, events.StatusPending},
		{"activated", []events.Event{requested(t0, time.Hour), ev(events.LeaseActivated)}, events.StatusActive},
		{"failed create", []events.Event{requested(t0, time.Hour), ev(events.LeaseFailed)}, events.StatusFailed},
		{"revoke of active is revoking", []events.Event{requested(t0, time.Hour), ev(events.LeaseActivated), ev(events.LeaseRevoked)}, events.StatusRevoking},
		{"revoke then drop is revoked", []events.Event{requested(t0, time.Hour), ev(events.LeaseActivated), ev(events.LeaseRevoked), ev(events.LeaseDropped)}, events.StatusRevoked},
		{"expiry then drop is expired", []events.Event{requested(t0, time.Hour), ev(events.LeaseActivated), expired(t0.Add(time.Hour)), ev(events.LeaseDropped)}, events.StatusExpired},
		{"stale expiry after renewal is ignored", []events.Event{requested(t0, time.Hour), ev(events.LeaseActivated), renewed, expired(t0.Add(time.Hour))}, events.StatusActive},
		{"activation after revoke is ignored", []events.Event{requested(t0, time.Hour), ev(events.LeaseRevoked), ev(events.LeaseActivated)}, events.StatusRevoking},
		{"activation after failure is ignored", []events.Event{requested(t0, time.Hour), ev(events.LeaseFailed), ev(events.LeaseActivated)}, events.StatusFailed},
		{"expiry after revoke keeps revoked", []events.Event{requested(t0, time.Hour), ev(events.LeaseActivated), ev(events.LeaseRevoked), expired(t0.Add(time.Hour)), ev(events.LeaseDropped)}, events.StatusRevoked},
		{"revoke after end is ignored", []events.Event{requested(t0, time.Hour), ev(events.LeaseActivated), ev(events.LeaseRevoked), ev(events.LeaseDropped), ev(events.LeaseRevoked)}, events.StatusRevoked},
		{"drop without revoke is ignored", []events.Event{requested(t0, time.Hour), ev(events.LeaseActivated), ev(events.LeaseDropped)}, events.StatusActive},
		{"revoke then abandon is revoked", []events.Event{requested(t0, time.Hour), ev(events.LeaseActivated), ev(events.LeaseRevoked), ev(events.LeaseAbandoned)}, events.StatusRevoked},
		{"expiry then abandon is expired", []events.Event{requested(t0, time.Hour), ev(events.LeaseActivated), expired(t0.Add(time.Hour)), ev(events.LeaseAbandoned)}, events.StatusExpired},
		{"abandon without revoke is ignored", []events.Event{requested(t0, time.Hour), ev(events.LeaseActivated), ev(events.LeaseAbandoned)}, events.StatusActive},
		{"a drop after abandon is ignored", []events.Event{requested(t0, time.Hour), ev(events.LeaseActivated), ev(events.LeaseRevoked), ev(events.LeaseAbandoned), ev(events.LeaseDropped)}, events.StatusRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seqs := make([]uint64, len(tt.evs))
			for i := range seqs {
				seqs[i] = uint64(i + 1)
			}
			l := events.Fold(tt.evs, seqs)
			if l.Status != tt.want {
				t.Fatalf("status = %s, want %s", l.Status, tt.want)
			}
		})
	}
	t.Run("replaying an applied sequence changes nothing", func(t *testing.T) {
		var l events.Lease
		l.Apply(requested(t0, time.Hour), 1)
		l.Apply(ev(events.LeaseActivated), 2)
		l.Apply(ev(events.LeaseRevoked), 3)
		if l.Apply(ev(events.LeaseActivated), 2) || l.Apply(ev(events.LeaseDropped), 3) {
			t.Fatal("an event at or below the applied sequence changed the lease")
		}
		if l.Status != events.StatusRevoking {
			t.Fatalf("status = %s, want revoking", l.Status)
		}
	})
}

func TestLease_RenewExpiry(t *testing.T) {
	t0 := time.Date(2026, 4, 6, 12, 0, 0, 0, time.UTC)
	l := events.Fold([]events.Event{requested(t0, time.Hour), {Type: events.LeaseActivated}}, []uint64{1, 2})
	t.Run("now plus ttl", func(t *testing.T) {
		got, ok := l.RenewExpiry(t0.Add(30*time.Minute), time.Hour, 0)
		if !ok || !got.Equal(t0.Add(90*time.Minute)) {
			t.Fatalf("got %v %v", got, ok)
		}
	})
	long := events.Fold([]events.Event{requested(t0, 24*time.Hour), {Type: events.LeaseActivated}}, []uint64{1, 2})
	t.Run("capped at created plus 24h", func(t *testing.T) {
		got, _ := long.RenewExpiry(t0.Add(23*time.Hour), 10*time.Hour, 0)
		if !got.Equal(t0.Add(24 * time.Hour)) {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("capped at the tighter max ttl", func(t *testing.T) {
		got, _ := long.RenewExpiry(t0.Add(time.Hour), 10*time.Hour, 2*time.Hour)
		if !got.Equal(t0.Add(2 * time.Hour)) {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("not once its expiry has passed", func(t *testing.T) {
		for _, at := range []time.Time{t0.Add(time.Hour), t0.Add(time.Hour + time.Millisecond)} {
			if _, ok := l.RenewExpiry(at, time.Hour, 0); ok {
				t.Fatalf("renewed at %v a lease that expired at %v", at, l.ExpiresAt)
			}
		}
	})
	t.Run("only active leases", func(t *testing.T) {
		p := events.Fold([]events.Event{requested(t0, time.Hour)}, []uint64{1})
		if _, ok := p.RenewExpiry(t0, time.Hour, 0); ok {
			t.Fatal("renewed a pending lease")
		}
	})
}

// A revocation for its target's removal says so and folds to ForRemoval; a plain one does
// not. The reason is read back from events already written, so its sentence is pinned.
func TestLease_RevokeForRemoval(t *testing.T) {
	if events.ReasonTargetRemoved != "The lease's target was removed." {
		t.Fatalf("ReasonTargetRemoved reworded to %q: events written before would no longer be recognised", events.ReasonTargetRemoved)
	}
	for _, forRemoval := range []bool{true, false} {
		l := events.Lease{ID: "L", Status: events.StatusActive}
		revoke := l.Revoke
		if forRemoval {
			revoke = l.RevokeForRemoval
		}
		e, err := revoke("", time.Now())
		if err != nil || e == nil {
			t.Fatalf("revoke: %v, %v", e, err)
		}
		l.Apply(*e, 0)
		if l.Status != events.StatusRevoking || l.ForRemoval != forRemoval {
			t.Fatalf("for removal %v: status %s, ForRemoval %v", forRemoval, l.Status, l.ForRemoval)
		}
	}
}

// Only a revocation that could not finish can be given up: an active or pending lease is
// to be revoked first (its drop may yet succeed), an ended one is gone. Given up, the
// lease ends as its revocation would have, marked abandoned, by the admin who did it.
func TestLease_Abandon(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for _, s := range []events.Status{events.StatusPending, events.StatusActive} {
		if _, err := (events.Lease{ID: "L", Status: s}).Abandon("admin", events.ReasonAbandoned, now); events.ErrorCode(err) != events.EConflict {
			t.Errorf("abandoning a %s lease: %v, want %s", s, err, events.EConflict)
		}
	}
	for _, s := range []events.Status{events.StatusRevoked, events.StatusExpired, events.StatusFailed} {
		if _, err := (events.Lease{ID: "L", Status: s}).Abandon("admin", events.ReasonAbandoned, now); events.ErrorCode(err) != events.ENotFound {
			t.Errorf("abandoning a %s lease: %v, want %s", s, err, events.ENotFound)
		}
	}
	l := events.Lease{ID: "L", RecordUID: "R", Status: events.StatusRevoking, Ending: events.StatusExpired}
	e, err := l.Abandon("admin", events.ReasonAbandoned, now)
	if err != nil || e.Type != events.LeaseAbandoned || e.ClientID != "admin" || e.Reason != events.ReasonAbandoned {
		t.Fatalf("abandon: %+v, %v", e, err)
	}
	l.Apply(*e, 0)
	if l.Status != events.StatusExpired || !l.Abandoned || l.EndedAt == nil || !l.EndedAt.Equal(now) {
		t.Fatalf("after abandon: status %s, abandoned %v, ended %v", l.Status, l.Abandoned, l.EndedAt)
	}
}
