package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/projections"
	"github.com/syvault/syvault/workers"
)

// Report is a run's outcome.
type Report struct {
	Seed       uint64
	Operations int
	Answers    map[string]map[int]int
	Faults     map[string]int
	Leases     int // answered 201
	Targets    int // registered to remove, answered 201
	// UnrecordedSetups are setup roles of targets the stream never recorded (see
	// unrecordedSetups): reported, not violations.
	UnrecordedSetups []string
	Violations       []Violation
	Settle           time.Duration // from the faults' end to a settled system
	Settled          bool
	// Exits counts the SyVault processes that exited on their own (and were started
	// again), by the last line they logged.
	Exits map[string]int
}

// Run sets everything up, runs the load and the faults for cfg.Duration, lets the system
// settle, checks the invariants and prints the report to cfg.Out. It returns the report
// (nil when the setup failed) and an error for a run that could not be carried out; a
// run that found violations is not an error: the report lists them. Everything started
// is stopped before it returns, also when ctx is cancelled.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64()
	}
	h := &Harness{cfg: cfg, start: time.Now(), exits: map[string]int{}}
	defer h.Close()
	h.logf("chaos run: seed %d, duration %s, rate %.1f/s, concurrency %d, a fault about every %s (replay with SEED=%d)",
		cfg.Seed, cfg.Duration, cfg.Rate, cfg.Concurrency, cfg.FaultEvery, cfg.Seed)
	if err := h.setup(ctx); err != nil {
		return nil, err
	}
	rep := &Report{Seed: cfg.Seed}
	ledger := NewLedger()
	superCtx, stopSupervising := context.WithCancel(ctx)
	defer stopSupervising()
	go h.supervise(superCtx)

	loadCtx, stopLoad := context.WithTimeout(ctx, cfg.Duration)
	defer stopLoad()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rep.Faults = h.faults(loadCtx, rand.New(rand.NewPCG(cfg.Seed, 0xfa17)))
	}()
	h.logf("load and faults for %s", cfg.Duration)
	progress := time.NewTicker(15 * time.Second)
	go func() {
		for {
			select {
			case <-loadCtx.Done():
				return
			case <-progress.C:
				h.logf("progress: %s", summarize(ledger.Answers()))
			}
		}
	}()
	churned := make(chan struct{})
	go func() {
		defer close(churned)
		if cfg.TargetEvery > 0 {
			h.churn(loadCtx, ctx, ledger, rand.New(rand.NewPCG(cfg.Seed, 0x7a26)), cfg.TargetEvery)
		}
	}()
	h.load(loadCtx, ledger, cfg.Seed)
	progress.Stop()
	wg.Wait() // every restart done, every database resumed
	faultsStopped := time.Now()
	<-churned // every target registered has had its removal tried
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	// A removal the faults kept from being answered is asked again, as an operator
	// would; whether it was recorded the first time is invariant g's to tell.
	h.removeLeftChurned(ctx, ledger)
	rep.Answers = ledger.Answers()
	for _, m := range rep.Answers {
		for _, n := range m {
			rep.Operations += n
		}
	}
	rep.Leases = len(ledger.Leases())
	h.logf("load and faults over: %d operations, %d leases answered 201, faults %v", rep.Operations, rep.Leases, rep.Faults)

	reader := newStreamReader(h.js)
	var expiryViolations []Violation
	seen := map[string]bool{}
	rep.Settle, rep.Settled = h.settle(ctx, reader, faultsStopped, func(o Observation) {
		// Invariant c is watched all through the settle, not only at its end.
		for _, v := range CheckExpiry(o) {
			key := strings.Fields(v.What)[1]
			if !seen[key] {
				seen[key] = true
				expiryViolations = append(expiryViolations, v)
			}
		}
	})
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if rep.Settled {
		h.logf("settled %s after the faults stopped", rep.Settle.Round(100*time.Millisecond))
	} else {
		h.logf("NOT settled within %s", cfg.Settle)
	}

	// The checks look at a system that no longer moves: a lease expiring between two
	// reads would otherwise look different to each.
	stopSupervising()
	stoppedAt := time.Now()
	if err := h.stopSyVault(); err != nil {
		return nil, err
	}
	o, err := h.observe(ctx, reader, faultsStopped)
	if err != nil {
		return nil, err
	}
	o.RunningUntil = stoppedAt
	o.Leases, o.Churned = ledger.Leases(), ledger.Churned()
	rep.Targets, rep.UnrecordedSetups = len(o.Churned), unrecordedSetups(o)
	o.Login = func(le Lease) error {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return h.db(le.Engine).login(lctx, le.Username, le.password)
	}
	rep.Violations = append(rep.Violations, expiryViolations...)
	for _, v := range Check(o) {
		if v.Invariant == InvExpiry && seen[strings.Fields(v.What)[1]] {
			continue
		}
		rep.Violations = append(rep.Violations, v)
	}
	for _, s := range ledger.Stale {
		rep.Violations = append(rep.Violations, Violation{InvReadBack, s})
	}
	for _, u := range ledger.Unclean {
		rep.Violations = append(rep.Violations, Violation{InvClean, "5xx answer that is not a clean JSON error: " + u})
	}
	// A rebuild that cannot run is a finding too, not a reason to lose the report.
	diffs, err := h.checkProjections(ctx, o.Histories)
	if err != nil {
		diffs = append(diffs, "the projections could not be compared with a rebuild: "+err.Error())
	}
	for _, d := range diffs {
		rep.Violations = append(rep.Violations, Violation{InvClean, d})
	}
	// Last: the processes have stopped, so their logs are complete.
	for _, p := range h.allProcs() {
		lines, err := p.panicked()
		if err != nil {
			return nil, err
		}
		for _, l := range lines {
			rep.Violations = append(rep.Violations, Violation{InvClean, p.name + " log: " + l})
		}
	}
	h.mu.Lock()
	rep.Exits = h.exits
	h.mu.Unlock()
	rep.print(h)
	if len(rep.Violations) > 0 {
		var logs []string
		for _, p := range h.allProcs() {
			if !slices.Contains(logs, p.logPath) {
				logs = append(logs, p.logPath)
			}
		}
		printEvidence(h.cfg.Out, rep.Violations, o.Histories, o.Targets, logs)
	}
	return rep, nil
}

// stopSyVault stops every SyVault process with SIGTERM, all at once.
func (h *Harness) stopSyVault() error {
	var wg sync.WaitGroup
	errs := make([]error, len(h.all()))
	for i, p := range h.all() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.stop(syscall.SIGTERM, 30*time.Second)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (h *Harness) allProcs() []*proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*proc{}, h.procs...)
}

// observe lists the databases' lease users, then reads the stream up to now.
func (h *Harness) observe(ctx context.Context, reader *streamReader, faultsStopped time.Time) (Observation, error) {
	o := Observation{UsersAt: time.Now(), FaultsStopped: faultsStopped, Users: map[string]map[string]bool{}, Setups: map[string]map[string]bool{}}
	for _, d := range []*database{h.pg, h.my} {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		us, err := d.users(qctx)
		var setups map[string]bool
		if err == nil {
			setups, err = d.setups(qctx)
		}
		cancel()
		if err != nil {
			return o, fmt.Errorf("list %s users and roles: %w", d.engine, err)
		}
		o.Users[d.engine], o.Setups[d.engine] = us, setups
	}
	if err := reader.catchUp(ctx); err != nil {
		return o, err
	}
	o.Histories, o.Targets = reader.histories, reader.targets
	return o, nil
}

// settle waits, up to cfg.Settle from its call, for every process to serve, every lease
// to have settled (none pending or revoking, none active past its expiry), every lease
// user to belong to an active lease and no removed target's setup to be left; it
// returns how long after faultsStopped that was. watch sees each observation on the way.
func (h *Harness) settle(ctx context.Context, reader *streamReader, faultsStopped time.Time, watch func(Observation)) (time.Duration, bool) {
	deadline := time.Now().Add(h.cfg.Settle)
	last := ""
	for time.Now().Before(deadline) && ctx.Err() == nil {
		reason := h.unsettled(ctx, reader, faultsStopped, watch)
		if reason == "" {
			return time.Since(faultsStopped), true
		}
		if reason != last {
			h.logf("settling: %s", reason)
			last = reason
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return time.Since(faultsStopped), false
}

// imminence is how far ahead no expiry may be due when the processes are stopped.
const imminence = 8 * time.Second

// unsettled says what is not settled yet, "" when everything is.
func (h *Harness) unsettled(ctx context.Context, reader *streamReader, faultsStopped time.Time, watch func(Observation)) string {
	for _, p := range h.all() {
		if err := probe(ctx, p.addr, "/healthz"); err != nil {
			return p.name + " not serving"
		}
	}
	// The read side and the workers have caught up: nothing waits in their consumers.
	for _, c := range [][2]string{{events.EventsStream, projections.Consumer}, {events.EventsStream, workers.LeaseConsumer},
		{events.EventsStream, workers.RemovalConsumer}, {events.SchedulesStream, workers.ExpiryConsumer}} {
		info, err := h.consumerInfo(ctx, c[0], c[1])
		if err != nil {
			return fmt.Sprintf("consumer %s: %v", c[1], err)
		}
		if info.NumPending > 0 || info.NumAckPending > 0 {
			return fmt.Sprintf("consumer %s: %d pending, %d awaiting ack", c[1], info.NumPending, info.NumAckPending)
		}
	}
	o, err := h.observe(ctx, reader, faultsStopped)
	if err != nil {
		return err.Error()
	}
	watch(o)
	users := byUsername(o.Histories)
	now := time.Now()
	// The ids of what is stuck go into the log: a run that does not settle is read from
	// its processes' logs, by lease.
	var pending, revoking, overdue, stray []string
	imminent := 0
	for id, hist := range o.Histories {
		l := hist.Fold()
		switch {
		case l.Status == events.StatusPending:
			pending = append(pending, id)
		case l.Status == events.StatusRevoking:
			revoking = append(revoking, id)
		case l.Status == events.StatusActive && !l.ExpiresAt.After(now):
			overdue = append(overdue, id)
		case l.Status == events.StatusActive && l.ExpiresAt.Before(now.Add(imminence)):
			// The checks stop the processes: an expiry due while they stop would be left
			// half done by the run itself.
			imminent++
		}
	}
	for _, us := range o.Users {
		for u := range us {
			id, ok := users[u]
			if !ok || o.Histories[id].Fold().Status != events.StatusActive {
				stray = append(stray, u)
			}
		}
	}
	setups := removedSetups(o)
	if len(pending)+len(revoking)+len(overdue)+len(stray)+len(setups)+imminent == 0 {
		return ""
	}
	return fmt.Sprintf("%s pending, %s revoking, %s active past expiry, %d expiring within %s, %s users without an active lease, %s removed targets' setups",
		some(pending), some(revoking), some(overdue), imminent, imminence, some(stray), some(setups))
}

// some gives how many names there are and the first few of them in order.
func some(names []string) string {
	if len(names) == 0 {
		return "0"
	}
	sort.Strings(names)
	const shown = 3
	s := fmt.Sprintf("%d (%s", len(names), strings.Join(names[:min(shown, len(names))], ", "))
	if len(names) > shown {
		s += ", …"
	}
	return s + ")"
}

func (h *Harness) consumerInfo(ctx context.Context, stream, name string) (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := h.js.Consumer(ctx, stream, name)
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// checkProjections compares the live projections (the SyVault processes stopped) with
// the stream's own fold of each lease, then rebuilds them with `syvault
// rebuild-projections` (the path the README documents) and compares the rebuilt buckets
// with the live ones.
func (h *Harness) checkProjections(ctx context.Context, hs map[string]*History) ([]string, error) {
	live, err := h.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	var diffs []string
	for id, hist := range hs {
		l := hist.Fold()
		raw, ok := live[projections.LeasesBucket+"/"+id]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("lease %s (%s in the stream) is missing from the live projection", id, l.Status))
			continue
		}
		var rec struct {
			Seq   uint64       `json:"seq"`
			Value events.Lease `json:"value"`
		}
		if err := json.Unmarshal([]byte(raw), &rec); err != nil {
			return nil, err
		}
		if rec.Value.Status != l.Status || !rec.Value.ExpiresAt.Equal(l.ExpiresAt) || rec.Seq != l.Seq {
			diffs = append(diffs, fmt.Sprintf("lease %s: live projection %s (seq %d, expires %s), stream %s (seq %d, expires %s)",
				id, rec.Value.Status, rec.Seq, rec.Value.ExpiresAt.Format(time.RFC3339), l.Status, l.Seq, l.ExpiresAt.Format(time.RFC3339)))
		}
	}
	// An operator runs the command again when the store timed out; so does the run (the
	// rebuild starts over each time), and says so.
	var out []byte
	for attempt := 1; ; attempt++ {
		cmd := exec.CommandContext(ctx, h.syvaultBin, "rebuild-projections", "--nats-url", h.natsURLs(), "--replicas", "3")
		out, err = cmd.CombinedOutput()
		if err == nil {
			break
		}
		if attempt == 3 {
			return nil, fmt.Errorf("syvault rebuild-projections, 3 attempts: %w\n%s", err, out)
		}
		h.logf("syvault rebuild-projections failed (attempt %d), again: %s", attempt, strings.TrimSpace(string(out)))
	}
	h.logf("%s", strings.TrimSpace(string(out)))
	rebuilt, err := h.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	for k, v := range live {
		if rebuilt[k] != v {
			diffs = append(diffs, fmt.Sprintf("rebuilt projection differs at %s:\n      live    %s\n      rebuilt %s", k, v, rebuilt[k]))
		}
	}
	for k := range rebuilt {
		if _, ok := live[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("rebuilt projection has %s, the live one not", k))
		}
	}
	return diffs, nil
}

// snapshot reads every key of the projection buckets, leaving out where a lease stands
// in the list index (a position, not state).
func (h *Harness) snapshot(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	for _, b := range projections.Buckets {
		kv, err := h.js.KeyValue(ctx, b)
		if err != nil {
			return nil, fmt.Errorf("bucket %s: %w", b, err)
		}
		lister, err := kv.ListKeys(ctx)
		if err != nil {
			if errors.Is(err, jetstream.ErrNoKeysFound) {
				continue
			}
			return nil, err
		}
		for k := range lister.Keys() {
			e, err := kv.Get(ctx, k)
			if err != nil {
				return nil, fmt.Errorf("%s/%s: %w", b, k, err)
			}
			var v map[string]any
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				return nil, err
			}
			delete(v, "index")
			data, _ := json.Marshal(v)
			out[b+"/"+k] = string(data)
		}
	}
	return out, nil
}

func summarize(answers map[string]map[int]int) string {
	var b bytes.Buffer
	for _, op := range []string{OpCreate, OpRenew, OpRevoke, OpTargetRegister, OpTargetRemove} {
		m, ok := answers[op]
		if !ok && (op == OpTargetRegister || op == OpTargetRemove) {
			continue
		}
		var codes []int
		total := 0
		for c, n := range m {
			codes = append(codes, c)
			total += n
		}
		sort.Ints(codes)
		fmt.Fprintf(&b, "%s %d [", op, total)
		for i, c := range codes {
			if i > 0 {
				b.WriteString(" ")
			}
			name := fmt.Sprint(c)
			if c == NoAnswer {
				name = "no-answer"
			}
			fmt.Fprintf(&b, "%s:%d", name, m[c])
		}
		b.WriteString("]  ")
	}
	return strings.TrimSpace(b.String())
}

func (r *Report) print(h *Harness) {
	w := h.cfg.Out
	fmt.Fprintf(w, "\n=== chaos report (seed %d) ===\n", r.Seed)
	fmt.Fprintf(w, "duration      %s load, rate %.1f/s, concurrency %d\n", h.cfg.Duration, h.cfg.Rate, h.cfg.Concurrency)
	fmt.Fprintf(w, "operations    %d (leases answered 201: %d; targets answered 201, each then removed: %d)\n", r.Operations, r.Leases, r.Targets)
	fmt.Fprintf(w, "answers       %s\n", summarize(r.Answers))
	total := 0
	for _, k := range FaultKinds {
		total += r.Faults[k]
	}
	fmt.Fprintf(w, "faults        %d:", total)
	for _, k := range FaultKinds {
		fmt.Fprintf(w, "  %s %d;", k, r.Faults[k])
	}
	fmt.Fprintln(w)
	settled := "settled"
	if !r.Settled {
		settled = "NOT settled"
	}
	fmt.Fprintf(w, "settle        %s in %s\n", settled, r.Settle.Round(100*time.Millisecond))
	for line, n := range r.Exits {
		fmt.Fprintf(w, "exited alone  %d× %s\n", n, line)
	}
	for _, s := range r.UnrecordedSetups {
		fmt.Fprintf(w, "left setup    %s, of a registration never recorded (killed halfway, or its undo gave up: README, \"Preparing a target\")\n", s)
	}
	fmt.Fprintf(w, "violations    %d\n", len(r.Violations))
	for i, v := range r.Violations {
		if i == 50 {
			fmt.Fprintf(w, "  ... and %d more\n", len(r.Violations)-50)
			break
		}
		fmt.Fprintf(w, "  %s\n", v)
	}
}
