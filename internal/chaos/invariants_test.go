package chaos

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
)

var t0 = time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)

// history makes a lease's history from event types, the first being lease.requested
// for user with expiry exp; each event a second after the one before.
func history(user string, exp time.Time, types ...events.Type) *History {
	h := &History{}
	for i, typ := range types {
		e := events.Event{Type: typ, LeaseID: user, Time: t0.Add(time.Duration(i) * time.Second)}
		if typ == events.LeaseRequested {
			e.Lease, e.ExpiresAt = &events.LeaseSpec{Username: user}, exp
		}
		if typ == events.LeaseExpired {
			e.ExpiresAt = exp
		}
		h.Events, h.Seqs = append(h.Events, e), append(h.Seqs, uint64(i+1))
	}
	return h
}

const (
	req  = events.LeaseRequested
	act  = events.LeaseActivated
	rev  = events.LeaseRevoked
	exd  = events.LeaseExpired
	drop = events.LeaseDropped
	fail = events.LeaseFailed
)

func obs(users []string, hs map[string]*History, leases ...Lease) Observation {
	return Observation{UsersAt: t0.Add(time.Minute), FaultsStopped: t0, Histories: hs,
		Users: map[string]map[string]bool{"postgresql": set(users)}, Leases: leases,
		Login: func(Lease) error { return nil }}
}

func lease(id string) Lease { return Lease{ID: id, Username: id, Engine: "postgresql"} }

func mustViolate(t *testing.T, got []Violation, invariant string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("violations = %v; want %d", got, len(want))
	}
	for i, w := range want {
		if got[i].Invariant != invariant || !strings.Contains(got[i].What, w) {
			t.Errorf("violation %d = %v; want %q under %q", i, got[i], w, invariant)
		}
	}
}

func TestCheckAnswered(t *testing.T) {
	far := t0.Add(time.Hour)
	hs := map[string]*History{
		"active":       history("active", far, req, act),
		"revoked":      history("revoked", far, req, act, rev, drop),
		"gone-active":  history("gone-active", far, req, act),
		"left-behind":  history("left-behind", far, req, act, exd, drop),
		"stuck":        history("stuck", far, req, act, rev),
		"cannot-login": history("cannot-login", far, req, act),
	}
	o := obs([]string{"active", "left-behind", "stuck", "cannot-login"}, hs,
		lease("active"), lease("revoked"), lease("gone-active"), lease("left-behind"), lease("stuck"), lease("cannot-login"), lease("unknown"))
	o.Login = func(l Lease) error {
		if l.ID == "cannot-login" {
			return errors.New("password authentication failed")
		}
		return nil
	}
	mustViolate(t, CheckAnswered(o), InvAnswered,
		"gone-active is active but its user", "left-behind ended expired but its user", "stuck is still revoking",
		"cannot-login is active but its user cannot-login cannot log in", "unknown was answered 201 but has no events")
}

func TestCheckRevoked(t *testing.T) {
	far := t0.Add(time.Hour)
	accepted := func(id string, at time.Time) Lease {
		l := lease(id)
		l.RevokeAccepted, l.RevokeStatus, l.RevokedAt = true, 502, at
		return l
	}
	hs := map[string]*History{
		"ok":          history("ok", far, req, act, rev, drop),
		"lost":        history("lost", far, req, act),
		"moot":        history("moot", t0, req, act, exd, drop),        // expiry recorded at t0+2s
		"late-expiry": history("late-expiry", t0, req, act, exd, drop), // recorded after the revoke's answer
		"user-left":   history("user-left", far, req, act, rev, drop),
	}
	o := obs([]string{"user-left"}, hs, accepted("ok", t0), accepted("lost", t0), accepted("moot", t0.Add(5*time.Second)),
		accepted("late-expiry", t0), accepted("user-left", t0), lease("not-revoked"))
	mustViolate(t, CheckRevoked(o), InvRevoked, "lost: revoke answered 502, lease active", "late-expiry: revoke answered 502, lease expired",
		"user-left: revoke answered 502, user user-left still exists")
}

func TestCheckExpiry(t *testing.T) {
	o := obs([]string{"early", "late", "fresh", "orphan"}, map[string]*History{
		// Expired before the faults stopped: the 10 s count from then.
		"early": history("early", t0.Add(-time.Hour), req, act),
		// Expired 40 s after the faults stopped, 20 s before UsersAt.
		"late":  history("late", t0.Add(40*time.Second), req, act),
		"fresh": history("fresh", t0.Add(55*time.Second), req, act),
	})
	o.UsersAt = t0.Add(9 * time.Second)
	if v := CheckExpiry(o); len(v) != 0 {
		t.Fatalf("within 10 s of the faults' end: %v", v)
	}
	o.UsersAt = t0.Add(time.Minute)
	got := CheckExpiry(o)
	if len(got) != 2 || got[0].Invariant != InvExpiry {
		t.Fatalf("violations = %v; want early and late", got)
	}
	for _, v := range got {
		if !strings.Contains(v.What, "early") && !strings.Contains(v.What, "late") {
			t.Errorf("unexpected %v", v)
		}
	}
}

func TestCheckOrphans(t *testing.T) {
	far := t0.Add(time.Hour)
	hs := map[string]*History{
		"active":    history("active", far, req, act),
		"ended":     history("ended", far, req, act, rev, drop),
		"recreated": history("recreated", far, req, rev, act),
		"pending":   history("pending", far, req),
		"failed":    history("failed", far, req, fail),
	}
	got := CheckOrphans(obs([]string{"active", "ended", "stranger"}, hs))
	want := []string{"ended: its lease ended has ended", "stranger: no lease of the store names it",
		"pending is still pending", "recreated: lease.activated after lease.revoked", "recreated is still revoking"}
	if len(got) != len(want) {
		t.Fatalf("violations = %v; want %d", got, len(want))
	}
	all := ""
	for _, v := range got {
		if v.Invariant != InvOrphans {
			t.Errorf("%v under the wrong invariant", v)
		}
		all += v.What + "\n"
	}
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("no violation %q in:\n%s", w, all)
		}
	}
}

func TestPanicLines(t *testing.T) {
	log := "time=... level=INFO msg=ok\npanic: runtime error: index out of range\n\ngoroutine 1 [running]:\nfatal error: concurrent map writes\nmsg=\"panic: not at the start\"\n"
	got := panicLines(log)
	if len(got) != 2 || !strings.HasPrefix(got[0], "panic:") || !strings.HasPrefix(got[1], "fatal error:") {
		t.Fatalf("panicLines = %q", got)
	}
}

func TestCheckExpiry_NotPastTheStop(t *testing.T) {
	// Expired 40 s after the faults stopped, but the processes were stopped at 45 s: no
	// one was left to drop it, and that is the run's doing, not SyVault's.
	o := obs([]string{"late"}, map[string]*History{"late": history("late", t0.Add(40*time.Second), req, act)})
	o.UsersAt, o.RunningUntil = t0.Add(time.Minute), t0.Add(45*time.Second)
	if v := CheckExpiry(o); len(v) != 0 {
		t.Fatalf("violations = %v; want none", v)
	}
}

func TestCheckRemovedTargets(t *testing.T) {
	onTarget := func(uid string, h *History) *History {
		for i := range h.Events {
			h.Events[i].RecordUID = uid
		}
		return h
	}
	o := obs(nil, map[string]*History{
		"live":  onTarget("gone", history("live", t0.Add(time.Hour), req, act)),
		"ended": onTarget("gone", history("ended", t0.Add(time.Hour), req, act, rev, drop)),
		"kept":  onTarget("kept", history("kept", t0.Add(time.Hour), req, act)),
	})
	o.Targets = map[string]events.Type{"gone": events.TargetRemoved, "kept": events.TargetRegistered, "left": events.TargetRemoved,
		"notyet": events.TargetUpdated}
	o.Setups = map[string]map[string]bool{"mysql": {"left": true, "kept": true, "neverrecorded": true}, "postgresql": {"gone": true}}
	o.Churned = []ChurnTarget{{UID: "gone", Engine: "postgresql", Removed: true}, {UID: "notyet", Engine: "mysql"}}
	mustViolate(t, CheckRemovedTargets(o), InvRemoved,
		"target notyet (mysql): registered, but its removal was not recorded",
		"mysql target left was removed, but its setup role syvault_left is left",
		"postgresql target gone was removed, but its setup role syvault_gone is left",
		"lease live is active on the removed target gone")
	if got := unrecordedSetups(o); len(got) != 1 || got[0] != "mysql syvault_neverrecorded" {
		t.Fatalf("unrecorded setups = %v; want the one never recorded", got)
	}
	if got := removedSetups(o); len(got) != 2 {
		t.Fatalf("removed targets' setups = %v; want left and gone", got)
	}
}
