package command

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
)

// fakeLeases stands in for the projection's counts: indexed entries (of which stale
// ones name no listed lease) and the listed leases by id.
type fakeLeases struct {
	mu     sync.Mutex
	listed []string
	stale  int
	reads  atomic.Int32 // lease-by-lease counts
	gate   chan struct{}
	settle time.Duration // how long an activation here counts while the index may not show it
}

func (f *fakeLeases) quotas() *leaseQuotas {
	return &leaseQuotas{clients: map[string]*clientQuota{}, confirmed: map[string]confirmation{}, settle: f.settle,
		indexed: func(ctx context.Context, _ string) (int, error) {
			if f.gate != nil {
				select {
				case <-f.gate:
				case <-ctx.Done():
					return 0, ctx.Err()
				}
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			return len(f.listed) + f.stale, nil
		},
		listed: func(_ context.Context, _ string, skip func(string) bool, want int) (int, error) {
			f.reads.Add(1)
			f.mu.Lock()
			defer f.mu.Unlock()
			n := 0
			for _, id := range f.listed {
				if !skip(id) {
					n++
				}
			}
			return n, nil
		},
	}
}

func (f *fakeLeases) activate(id string) {
	f.mu.Lock()
	f.listed = append(f.listed, id)
	f.mu.Unlock()
}

func capped(n int) events.Client { return events.Client{ClientID: "c1", MaxLeases: n} }

func TestLeaseQuotas_ABurstGetsTheCap(t *testing.T) {
	f := &fakeLeases{}
	q := f.quotas()
	var admitted atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			_, err := q.admit(context.Background(), capped(3), fmt.Sprint("L", i))
			if err == nil {
				admitted.Add(1) // its create still under way
			} else if events.ErrorCode(err) != events.ETooManyLeases {
				t.Errorf("admit: %v", err)
			}
		})
	}
	wg.Wait()
	if admitted.Load() != 3 {
		t.Fatalf("%d of 8 creates admitted under a cap of 3", admitted.Load())
	}
}

// A create that became active while it settles is listed and in flight at once: it
// counts once.
func TestLeaseQuotas_ACreateSettlingCountsOnce(t *testing.T) {
	f := &fakeLeases{listed: []string{"L1"}}
	q := f.quotas()
	done2, err := q.admit(context.Background(), capped(3), "L2")
	if err != nil {
		t.Fatal(err)
	}
	f.activate("L2") // active and listed; its create has not answered yet
	done3, err := q.admit(context.Background(), capped(3), "L3")
	if err != nil {
		t.Fatalf("third lease under a cap of 3, the second still settling: %v", err)
	}
	if _, err := q.admit(context.Background(), capped(3), "L4"); events.ErrorCode(err) != events.ETooManyLeases {
		t.Fatalf("fourth lease under a cap of 3 = %v", err)
	}
	done2(true)
	done3(true)
	f.activate("L3")
	if _, err := q.admit(context.Background(), capped(3), "L5"); events.ErrorCode(err) != events.ETooManyLeases {
		t.Fatalf("fourth lease under a cap of 3, the others settled = %v", err)
	}
	if len(q.clients) != 0 {
		t.Fatalf("%d clients still remembered with nothing under way", len(q.clients))
	}
}

// A lease activated here counts while a copy of the index behind does not show it yet.
func TestLeaseQuotas_AnActivationCountsBeforeTheIndexShowsIt(t *testing.T) {
	f := &fakeLeases{listed: []string{"L1"}, settle: time.Minute}
	q := f.quotas()
	done, err := q.admit(context.Background(), capped(2), "L2")
	if err != nil {
		t.Fatal(err)
	}
	done(true) // active, not in the copy of the index that answers next
	if _, err := q.admit(context.Background(), capped(2), "L3"); events.ErrorCode(err) != events.ETooManyLeases {
		t.Fatalf("a third lease under a cap of 2, the second's entry not shown yet = %v", err)
	}
	f.activate("L2")
	if _, err := q.admit(context.Background(), capped(2), "L3"); events.ErrorCode(err) != events.ETooManyLeases {
		t.Fatalf("a third lease under a cap of 2, the second shown = %v", err)
	}
	// Revoked here: its slot is free at once, its entry gone or not.
	f.mu.Lock()
	f.listed, f.stale = f.listed[:1], f.stale+1
	f.mu.Unlock()
	q.ended("c1", "L2")
	done, err = q.admit(context.Background(), capped(2), "L4")
	if err != nil {
		t.Fatalf("a second lease under a cap of 2, the other revoked: %v", err)
	}
	done(false)
	q.settle = 0
	done, err = q.admit(context.Background(), capped(3), "L3")
	if err != nil {
		t.Fatalf("a third lease under a cap of 3: %v", err)
	}
	done(false)
	if len(q.clients) != 0 {
		t.Fatalf("%d clients still remembered with nothing under way", len(q.clients))
	}
}

// Refusals at the cap read the client's leases once while nothing changes, and a
// stale entry in the index takes no slot.
func TestLeaseQuotas_RefusalsAtTheCapReadOnce(t *testing.T) {
	f := &fakeLeases{listed: []string{"L1", "L2"}, stale: 1}
	q := f.quotas()
	done, err := q.admit(context.Background(), capped(3), "L3")
	if err != nil {
		t.Fatalf("a stale entry took a slot: %v", err)
	}
	done(true)
	f.activate("L3")
	for range 10 {
		if _, err := q.admit(context.Background(), capped(3), "L4"); events.ErrorCode(err) != events.ETooManyLeases {
			t.Fatalf("past the cap = %v", err)
		}
	}
	if n := f.reads.Load(); n != 2 {
		t.Fatalf("%d lease-by-lease counts for one admission and 10 refusals with nothing changed, want 2", n)
	}
	// The cap raised (a client update): counted again, and admitted.
	done, err = q.admit(context.Background(), capped(4), "L4")
	if err != nil {
		t.Fatalf("a fourth lease under a cap raised to 4: %v", err)
	}
	done(false)
	// A revocation answered here: the next create counts again, and finds the slot.
	f.mu.Lock()
	f.listed, f.stale = f.listed[1:], f.stale+1 // its entry not removed yet
	f.mu.Unlock()
	q.ended("c1", "L1")
	if _, err := q.admit(context.Background(), capped(3), "L5"); err != nil {
		t.Fatalf("a create right after a revocation answered: %v", err)
	}
}

// An admission waiting behind another of the client's ends with its request, having
// recorded nothing.
func TestLeaseQuotas_AWaitEndsWithItsRequest(t *testing.T) {
	f := &fakeLeases{gate: make(chan struct{})}
	q := f.quotas()
	first := make(chan error, 1)
	go func() {
		done, err := q.admit(context.Background(), capped(3), "L1")
		if err == nil {
			done(false)
		}
		first <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q.mu.Lock()
		c := q.clients["c1"]
		waiting := c != nil && len(c.turn) == 1
		q.mu.Unlock()
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first admission never took its turn")
		}
		time.Sleep(time.Millisecond) // polling interval of a deadline-bounded wait
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := q.admit(ctx, capped(3), "L2"); events.ErrorCode(err) != events.EUnavailable {
		t.Fatalf("an admission past its request's deadline = %v, want unavailable", err)
	}
	close(f.gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if len(q.clients) != 0 {
		t.Fatalf("%d clients still remembered with nothing under way", len(q.clients))
	}
	if _, err := f.quotas().admit(context.Background(), events.Client{ClientID: "free"}, "L9"); err != nil {
		t.Fatalf("a client without a cap: %v", err)
	}
}
