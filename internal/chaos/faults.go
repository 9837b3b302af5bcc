package chaos

import (
	"context"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"
)

// Fault kinds.
const (
	FaultKillSyVault = "kill -9 syvault"
	FaultKillNATS    = "kill -9 nats node"
	FaultPauseDB     = "database SIGSTOP"
	FaultCutConn     = "connection cut mid-statement"
)

// FaultKinds lists the kinds in the order the report prints them.
var FaultKinds = []string{FaultKillSyVault, FaultKillNATS, FaultPauseDB, FaultCutConn}

// faults injects faults until ctx ends, about every FaultEvery (uniformly 0.5–1.5 times
// it), each kind equally likely; what it hits and how long it lasts come from r, so a
// seed replays the same decisions. Recoveries (restarts, SIGCONT) run in the background;
// faults returns once every one of them is done. It returns the counts by kind.
func (h *Harness) faults(ctx context.Context, r *rand.Rand) map[string]int {
	counts := map[string]int{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	natsDown := false
	paused := map[string]bool{}
	// after ends a fault once it has lasted d (the fault's length, not synchronisation);
	// the run waits for every fault to have ended.
	after := func(d time.Duration, end func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(d)
			end()
		}()
	}
	restart := func(name string, start func() error) {
		if err := start(); err != nil {
			h.logf("restart %s: %v", name, err)
		}
	}
	for {
		wait := time.Duration(float64(h.cfg.FaultEvery) * (0.5 + r.Float64()))
		select {
		case <-ctx.Done():
			wg.Wait()
			return counts
		case <-time.After(wait):
		}
		kind := FaultKinds[r.IntN(len(FaultKinds))]
		pause := time.Duration(500+r.IntN(4500)) * time.Millisecond
		switch kind {
		case FaultKillSyVault:
			procs := h.all()
			p := procs[r.IntN(len(procs))]
			if !p.running() || !p.held.CompareAndSwap(false, true) {
				continue // its restart is under way
			}
			_ = p.kill(10 * time.Second)
			counts[kind]++
			h.logf("fault: kill -9 %s; restart in %s", p.name, pause)
			after(pause, func() {
				restart(p.name, p.start)
				p.held.Store(false)
			})
		case FaultKillNATS:
			n := h.nats[r.IntN(len(h.nats))]
			mu.Lock()
			busy := natsDown
			if !busy {
				natsDown = true
			}
			mu.Unlock()
			if busy {
				continue // one node at a time
			}
			_ = n.kill(10 * time.Second)
			counts[kind]++
			h.logf("fault: kill -9 %s; restart in %s", n.name, pause)
			after(pause, func() {
				restart(n.name, n.start)
				if err := waitNode(context.WithoutCancel(ctx), n); err != nil {
					h.logf("%v", err)
				}
				mu.Lock()
				natsDown = false
				mu.Unlock()
			})
		case FaultPauseDB:
			d := h.pg
			if r.IntN(2) == 1 {
				d = h.my
			}
			stopped := time.Duration(2000+r.IntN(4000)) * time.Millisecond
			mu.Lock()
			busy := paused[d.engine]
			paused[d.engine] = true
			mu.Unlock()
			if busy {
				continue
			}
			d.signal(syscall.SIGSTOP)
			counts[kind]++
			h.logf("fault: SIGSTOP %s for %s", d.name, stopped)
			after(stopped, func() {
				d.signal(syscall.SIGCONT)
				mu.Lock()
				paused[d.engine] = false
				mu.Unlock()
			})
		case FaultCutConn:
			d := h.pg
			if r.IntN(2) == 1 {
				d = h.my
			}
			n := d.proxy.CutInFlight(ctx, 3*time.Second)
			if n == 0 {
				h.logf("fault: no %s statement in flight for 3 s; nothing cut", d.engine)
				continue
			}
			counts[kind]++
			h.logf("fault: cut %d %s connection(s) mid-statement", n, d.engine)
		}
	}
}
