package workers

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/workers/driver"
)

// Each target gets a bounded share of a process's workers, so a slow or unreachable
// database holds up its own leases and nobody else's: at most perTarget operations on it
// run at once (its admin pool has no more connections anyway), at most queuePerTarget more
// wait for a turn, and any further message for it is declined for a moment
// (jsstore.ErrBusy) instead of taking a slot another target's work could use.
//
// The queue is deep because a declined message comes back only after jsstore's busy
// delay: a target's queue must hold what its database gets through in that time, or the
// database idles between redeliveries however fast it is (with 16 places and a 200 ms
// delay, no target ever saw more than 80 drops a second). Waiting costs a goroutine.
const (
	perTarget      = driver.MaxAdminConns
	queuePerTarget = 256
	// defaultConcurrency leaves the other targets most of the slots even when one
	// target's queue is full.
	defaultConcurrency = 1024
	// maxDropBatch bounds the users one batched drop takes (see driver.BatchDropper).
	maxDropBatch = 64
)

type gates struct {
	mu sync.Mutex
	m  map[string]*gate
}

type gate struct {
	run     chan struct{}
	waiting atomic.Int32
	drops   dropQueue
}

func (g *gates) of(recordUID string) *gate {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[string]*gate{}
	}
	t, ok := g.m[recordUID]
	if !ok {
		t = &gate{run: make(chan struct{}, perTarget)}
		g.m[recordUID] = t
	}
	return t
}

// enter takes a turn on the target's database; call release when done. It returns
// jsstore.ErrBusy when the target's queue is full, or ctx's error.
func (g *gates) enter(ctx context.Context, recordUID string) (release func(), err error) {
	t := g.of(recordUID)
	release = func() { <-t.run }
	select {
	case t.run <- struct{}{}:
		return release, nil
	default:
	}
	leave, err := t.admit()
	if err != nil {
		return nil, err
	}
	defer leave()
	select {
	case t.run <- struct{}{}:
		return release, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// admit takes a place in the target's queue, or answers jsstore.ErrBusy when it is full.
func (t *gate) admit() (leave func(), err error) {
	if t.waiting.Add(1) > queuePerTarget {
		t.waiting.Add(-1)
		return nil, jsstore.ErrBusy
	}
	return func() { t.waiting.Add(-1) }, nil
}

// dropQueue coalesces the drops waiting for a target's database: whoever finds fewer
// than perTarget batches under way runs one, taking every drop queued by then (up to
// maxDropBatch), in a turn of the target's gate like any other operation.
type dropQueue struct {
	mu      sync.Mutex
	pending []*dropCall
	runners int
}

type dropCall struct {
	req  driver.DropUserRequest
	err  error
	done chan struct{}
}

// drop queues req and waits for its outcome, running batches while there is work and
// no other runner for it. run drops a batch (all of one Conn) and answers per request.
func (t *gate) drop(ctx context.Context, req driver.DropUserRequest, run func([]driver.DropUserRequest) []error) error {
	leave, err := t.admit()
	if err != nil {
		return err
	}
	defer leave()
	call := &dropCall{req: req, done: make(chan struct{})}
	q := &t.drops
	q.mu.Lock()
	q.pending = append(q.pending, call)
	start := q.runners < perTarget
	if start {
		q.runners++
	}
	q.mu.Unlock()
	if start {
		// The batches run to the end whatever becomes of this caller: others wait on
		// them, and a drop half-way through a database is finished, not abandoned.
		go t.runDrops(run)
	}
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *gate) runDrops(run func([]driver.DropUserRequest) []error) {
	q := &t.drops
	for {
		t.run <- struct{}{}
		q.mu.Lock()
		batch := takeBatch(&q.pending)
		if len(batch) == 0 {
			q.runners--
			q.mu.Unlock()
			<-t.run
			return
		}
		q.mu.Unlock()
		reqs := make([]driver.DropUserRequest, len(batch))
		for i, c := range batch {
			reqs[i] = c.req
		}
		errs := run(reqs)
		<-t.run
		for i, c := range batch {
			c.err = errs[i]
			close(c.done)
		}
	}
}

// takeBatch removes from pending the calls for the connection of its first call (a
// target whose admin password rotated has calls for two), up to maxDropBatch.
func takeBatch(pending *[]*dropCall) []*dropCall {
	if len(*pending) == 0 {
		return nil
	}
	key := (*pending)[0].req.Conn.PoolKey
	var batch, rest []*dropCall
	for _, c := range *pending {
		if c.req.Conn.PoolKey == key && len(batch) < maxDropBatch {
			batch = append(batch, c)
		} else {
			rest = append(rest, c)
		}
	}
	*pending = rest
	return batch
}
