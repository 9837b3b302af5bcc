package chaos

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/syvault/syvault/events"
)

// Target churn: besides the lease load on the two long-lived targets, the run registers
// short-lived targets under the same faults, makes a few leases on each and removes it
// (revoking its leases) while those creates may still be in flight. A target's setup (a
// PostgreSQL group role holding its grants, a MariaDB marker role) is made at its
// registration and must be gone once its removal is recorded, whatever process was
// killed or database frozen on the way: invariant g.

// Target operations, as the report counts them.
const (
	OpTargetRegister = "register"
	OpTargetRemove   = "remove"
)

// churnRemovalBudget bounds how long the run retries one target's removal, counting
// from the first attempt.
const churnRemovalBudget = 60 * time.Second

// ChurnTarget is a target the run registered to remove.
type ChurnTarget struct {
	UID, Engine string
	// Removed is set once a removal was answered 204 (or 404: an earlier attempt,
	// unanswered, had landed).
	Removed bool
}

// churn registers and removes a target about every `every` (seeded), until load ends;
// each target's requests run within run, the run's own context, whose end stops them.
func (h *Harness) churn(load, run context.Context, ledger *Ledger, r *rand.Rand, every time.Duration) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for n := 1; ; n++ {
		select {
		case <-load.Done():
			return
		case <-time.After(time.Duration(float64(every) * (0.5 + r.Float64()))):
		}
		engine := "postgresql"
		if r.IntN(2) == 1 {
			engine = "mysql"
		}
		ci := r.IntN(len(h.clients))
		leases, ttl, delay := 1+r.IntN(3), 20+r.IntN(71), time.Duration(r.IntN(1500))*time.Millisecond
		wg.Go(func() { h.churnOne(run, ledger, n, engine, ci, leases, ttl, delay) })
	}
}

// churnOne registers target n on engine through client ci, asks for leases on it, and
// removes it after delay, whether or not those creates have been answered.
func (h *Harness) churnOne(ctx context.Context, ledger *Ledger, n int, engine string, ci, leases, ttl int, delay time.Duration) {
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, other := h.clients[ci], h.clients[(ci+1)%len(h.clients)]
	got, err := c.CreateTarget(rctx, h.db(engine).target(fmt.Sprintf("chaos-churn-%d", n)))
	code, clean := status(err)
	if code == 200 {
		code = 201
	}
	ledger.answer(OpTargetRegister, code, clean, err)
	if err != nil {
		return
	}
	t := &ChurnTarget{UID: got.RecordUID, Engine: engine}
	ledger.mu.Lock()
	ledger.targets = append(ledger.targets, t)
	ledger.mu.Unlock()
	// The creates get their own minute, however long the registration took.
	cctx, cancelCreates := context.WithTimeout(ctx, 60*time.Second)
	defer cancelCreates()
	var wg sync.WaitGroup
	for range leases {
		wg.Go(func() { ledger.create(cctx, c, other, engine, t.UID, ttl) })
	}
	select {
	case <-ctx.Done(): // the run's end: the removal after the faults removes it
	case <-time.After(delay):
	}
	h.removeChurned(ctx, ledger, t)
	wg.Wait()
}

// removeChurned removes t, revoking its leases, trying again every second (through each
// API process in turn) until an attempt is answered 204 or 404, for churnRemovalBudget.
func (h *Harness) removeChurned(ctx context.Context, ledger *Ledger, t *ChurnTarget) {
	rctx, cancel := context.WithTimeout(ctx, churnRemovalBudget)
	defer cancel()
	for i := 0; rctx.Err() == nil; i++ {
		err := h.clients[i%len(h.clients)].DeleteTarget(rctx, t.UID, true)
		code, clean := status(err)
		if code == 200 {
			code = 204
		}
		ledger.answer(OpTargetRemove, code, clean, err)
		if code == 204 || code == 404 {
			ledger.mu.Lock()
			t.Removed = true
			ledger.mu.Unlock()
			return
		}
		select {
		case <-rctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Churned returns a copy of the targets the run registered to remove.
func (l *Ledger) Churned() []ChurnTarget {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]ChurnTarget, 0, len(l.targets))
	for _, t := range l.targets {
		out = append(out, *t)
	}
	return out
}

// removeLeftChurned removes, after the faults, every target whose removal the run did
// not see answered, all at once, each for up to churnRemovalBudget.
func (h *Harness) removeLeftChurned(ctx context.Context, ledger *Ledger) {
	ledger.mu.Lock()
	var left []*ChurnTarget
	for _, t := range ledger.targets {
		if !t.Removed {
			left = append(left, t)
		}
	}
	ledger.mu.Unlock()
	var wg sync.WaitGroup
	for _, t := range left {
		wg.Go(func() { h.removeChurned(ctx, ledger, t) })
	}
	wg.Wait()
}

// CheckRemovedTargets is invariant g: every target the run registered (answered 201) had
// its removal recorded; no removed target's setup (group or marker role) is left on its database;
// no lease of a removed target is still active.
func CheckRemovedTargets(o Observation) []Violation {
	var out []Violation
	bad := func(format string, args ...any) {
		out = append(out, Violation{InvRemoved, fmt.Sprintf(format, args...)})
	}
	for _, t := range o.Churned {
		if o.Targets[t.UID] != events.TargetRemoved {
			bad("target %s (%s): registered, but its removal was not recorded (last event %q)", t.UID, t.Engine, o.Targets[t.UID])
		}
	}
	for _, r := range setupRoles(o, removed) {
		bad("%s target %s was removed, but its setup role %s%s is left", r.engine, r.uid, SetupPrefix, r.uid)
	}
	for _, id := range slices.Sorted(maps.Keys(o.Histories)) {
		l := o.Histories[id].Fold()
		if l.Status == events.StatusActive && o.Targets[l.RecordUID] == events.TargetRemoved {
			bad("lease %s is active on the removed target %s", id, l.RecordUID)
		}
	}
	return out
}

// unrecordedSetups lists the setup roles whose target the stream never recorded: what a
// registration leaves when its process is killed between making the role and recording
// the target, or when its undo gives up (README, "Preparing a target"). Reported, not a
// violation.
func unrecordedSetups(o Observation) []string {
	var out []string
	for _, r := range setupRoles(o, func(_ events.Type, recorded bool) bool { return !recorded }) {
		out = append(out, r.engine+" "+SetupPrefix+r.uid)
	}
	return out
}

// removedSetups lists the setup roles of removed targets that exist.
func removedSetups(o Observation) []string {
	var out []string
	for _, r := range setupRoles(o, removed) {
		out = append(out, r.engine+" "+r.uid)
	}
	return out
}

// setupRole is a target's setup role that exists: its engine and record uid.
type setupRole struct{ engine, uid string }

// setupRoles lists, in order, the setup roles that exist whose target keep accepts, by
// its last event's type and whether the stream recorded it at all.
func setupRoles(o Observation, keep func(last events.Type, recorded bool) bool) []setupRole {
	var out []setupRole
	for _, engine := range slices.Sorted(maps.Keys(o.Setups)) {
		for _, uid := range slices.Sorted(maps.Keys(o.Setups[engine])) {
			last, recorded := o.Targets[uid]
			if keep(last, recorded) {
				out = append(out, setupRole{engine, uid})
			}
		}
	}
	return out
}

// removed accepts a target whose last event is its removal.
func removed(last events.Type, _ bool) bool { return last == events.TargetRemoved }
