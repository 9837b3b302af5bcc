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
const (
	perTarget      = driver.MaxAdminConns
	queuePerTarget = 4 * driver.MaxAdminConns
)

type gates struct {
	mu sync.Mutex
	m  map[string]*gate
}

type gate struct {
	run     chan struct{}
	waiting atomic.Int32
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
	if t.waiting.Add(1) > queuePerTarget {
		t.waiting.Add(-1)
		return nil, jsstore.ErrBusy
	}
	defer t.waiting.Add(-1)
	select {
	case t.run <- struct{}{}:
		return release, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
