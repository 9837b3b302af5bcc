package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/syvault/syvault/http/client"
)

// Ops the load sends.
const (
	OpCreate = "create"
	OpRenew  = "renew"
	OpRevoke = "revoke"
)

// NoAnswer is the status recorded when a request got no HTTP answer at all (the process
// was killed, the connection refused or cut).
const NoAnswer = 0

// Lease is what the load knows of a lease it was answered 201 for.
type Lease struct {
	ID, Username, Engine string
	password             string // checked by logging in; never printed
	ExpiresAt            time.Time
	// RevokeAccepted is set when a revoke was answered 204, 502 or 504: the revocation
	// was recorded, and must end the lease.
	RevokeAccepted bool
	RevokeStatus   int
	RevokedAt      time.Time // when that answer came
	RevokeAnswer   string    // its error code and message, for a 502 or 504
}

// Ledger is every answer of the run, safe for concurrent use.
type Ledger struct {
	mu      sync.Mutex
	leases  map[string]*Lease
	order   []string               // lease ids in the order their 201 came
	answers map[string]map[int]int // op → status → count
	// Unclean lists the 5xx answers whose body was not a JSON error with a code and a
	// message.
	Unclean []string
	// Stale lists the reads right after an answer that did not show it.
	Stale []string
	// targets are the targets registered to remove (targets.go).
	targets []*ChurnTarget
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{leases: map[string]*Lease{}, answers: map[string]map[int]int{}}
}

func (l *Ledger) record(op string, status int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.answers[op] == nil {
		l.answers[op] = map[int]int{}
	}
	l.answers[op][status]++
}

// Answers returns a copy of the counts of answers by op and status.
func (l *Ledger) Answers() map[string]map[int]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]map[int]int{}
	for op, m := range l.answers {
		out[op] = map[int]int{}
		for s, n := range m {
			out[op][s] = n
		}
	}
	return out
}

// Leases returns a copy of every lease answered 201.
func (l *Ledger) Leases() []Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Lease, 0, len(l.order))
	for _, id := range l.order {
		out = append(out, *l.leases[id])
	}
	return out
}

// pick returns a lease the load may still renew or revoke: answered 201, not revoked by
// the load, and not about to expire.
func (l *Ledger) pick(r *rand.Rand) *Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	// Recent leases are the likely live ones: look at the last few hundred.
	lo := max(0, len(l.order)-300)
	for range 8 {
		if len(l.order) == 0 {
			return nil
		}
		le := l.leases[l.order[lo+r.IntN(len(l.order)-lo)]]
		if !le.RevokeAccepted && le.ExpiresAt.After(now.Add(time.Second)) {
			c := *le
			return &c
		}
	}
	return nil
}

// status classifies an answer: its HTTP status (NoAnswer for none) and, for a 5xx,
// whether it was a clean JSON error.
func status(err error) (code int, clean bool) {
	if err == nil {
		return 200, true
	}
	var ce *client.Error
	if errors.As(err, &ce) {
		// The client makes Code "http_error" of a body that is not {"error": "<code>", "message": ...}.
		return ce.Status, ce.Code != "http_error" && ce.Message != ""
	}
	return NoAnswer, true
}

// load sends lease operations at rate a second from concurrency clients until ctx ends.
// Each client spreads its requests over the API processes.
func (h *Harness) load(ctx context.Context, ledger *Ledger, seed uint64) {
	tokens := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Duration(float64(time.Second) / h.cfg.Rate))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				close(tokens)
				return
			case <-t.C:
				select {
				case tokens <- struct{}{}:
				default: // every client is busy: the load is bounded, not queued
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range h.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(i)+1))
			for range tokens {
				h.op(ctx, ledger, r)
			}
		}()
	}
	wg.Wait()
}

// op sends one operation: create (half of them), renew or revoke. Creates ask for a
// short TTL (2–6 s, expired during the run) two times in three, else 20–90 s.
func (h *Harness) op(ctx context.Context, ledger *Ledger, r *rand.Rand) {
	// A request in flight when the load ends still gets its answer recorded.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	ci := r.IntN(len(h.clients))
	c, other := h.clients[ci], h.clients[(ci+1)%len(h.clients)]
	x := r.IntN(100)
	var le *Lease
	if x >= 50 {
		le = ledger.pick(r)
	}
	switch {
	case le == nil:
		engine := "postgresql"
		if r.IntN(2) == 1 {
			engine = "mysql"
		}
		ttl := 2 + r.IntN(5)
		if r.IntN(3) == 0 {
			ttl = 20 + r.IntN(71)
		}
		ledger.create(rctx, c, other, engine, h.targets[engine], ttl)
	case x < 75:
		got, err := c.RenewLease(rctx, le.ID, 2+r.IntN(29))
		code, clean := status(err)
		if err == nil {
			ledger.mu.Lock()
			ledger.leases[le.ID].ExpiresAt = got.ExpiresAt
			ledger.mu.Unlock()
		}
		ledger.answer(OpRenew, code, clean, err)
	default:
		err := c.RevokeLease(rctx, le.ID)
		code, clean := status(err)
		if code == 200 {
			code = 204
		}
		if code == 204 || code == 502 || code == 504 {
			ledger.mu.Lock()
			l := ledger.leases[le.ID]
			if !l.RevokeAccepted {
				l.RevokeAccepted, l.RevokeStatus, l.RevokedAt = true, code, time.Now()
				var ce *client.Error
				if errors.As(err, &ce) {
					l.RevokeAnswer = fmt.Sprintf(" (%s: %s)", ce.Code, ce.Message)
				}
			}
			ledger.mu.Unlock()
		}
		if code == 204 {
			ledger.readBack(rctx, other, le.ID, OpRevoke, func(s string) bool { return s == "revoked" || s == "expired" })
		}
		ledger.answer(OpRevoke, code, clean, err)
	}
}

// create asks c for a lease of ttl seconds on the engine's target uid, records the
// answer, and reads an answered lease back through other.
func (l *Ledger) create(ctx context.Context, c, other *client.Client, engine, uid string, ttl int) {
	got, err := c.CreateLease(ctx, uid, ttl)
	code, clean := status(err)
	if code == 200 {
		code = 201
		l.mu.Lock()
		l.leases[got.LeaseID] = &Lease{ID: got.LeaseID, Username: got.Username, Engine: engine, password: got.Password, ExpiresAt: got.ExpiresAt}
		l.order = append(l.order, got.LeaseID)
		l.mu.Unlock()
		l.readBack(ctx, other, got.LeaseID, OpCreate, func(s string) bool { return s != "pending" && s != "failed" })
	}
	l.answer(OpCreate, code, clean, err)
}

// readBack reads lease id through c right after op was answered and records a read
// whose status is not one the answer allows (or that does not find the lease). A read
// that fails is not one: the faults make some.
func (l *Ledger) readBack(ctx context.Context, c *client.Client, id, op string, allowed func(status string) bool) {
	got, err := c.GetLease(ctx, id)
	var ce *client.Error
	switch {
	case err == nil && !allowed(got.Status):
		err = fmt.Errorf("status %s", got.Status)
	case errors.As(err, &ce) && ce.Status == 404:
	default:
		return
	}
	l.mu.Lock()
	l.Stale = append(l.Stale, fmt.Sprintf("lease %s: the GET right after its %s answered found %v", id, op, err))
	l.mu.Unlock()
}

func (l *Ledger) answer(op string, code int, clean bool, err error) {
	l.record(op, code)
	if code >= 500 && !clean {
		l.mu.Lock()
		l.Unclean = append(l.Unclean, op+": "+err.Error())
		l.mu.Unlock()
	}
}
