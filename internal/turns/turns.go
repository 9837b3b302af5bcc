// Package turns lets one caller at a time hold a key within a process: one renewal of a
// database role, one change of a target's database. A key nobody holds or waits for
// takes no memory, so there can be one per lease.
package turns

import (
	"context"
	"sync"
)

// Keys hands out turns on keys. The zero value is ready to use; it must not be copied
// after first use.
type Keys struct {
	mu sync.Mutex
	m  map[string]*turn
}

type turn struct {
	held  chan struct{} // full while a caller holds the key
	users int           // holders and waiters; guarded by Keys.mu
}

// Take waits for key's turn, or for ctx to end. release ends the turn; calling it again
// does nothing.
func (k *Keys) Take(ctx context.Context, key string) (release func(), err error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[string]*turn)
	}
	tu := k.m[key]
	if tu == nil {
		tu = &turn{held: make(chan struct{}, 1)}
		k.m[key] = tu
	}
	tu.users++
	k.mu.Unlock()
	leave := func() {
		k.mu.Lock()
		if tu.users--; tu.users == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
	if err := ctx.Err(); err != nil { // a free key would otherwise be taken half the time
		leave()
		return nil, err
	}
	select {
	case tu.held <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-tu.held; leave() }) }, nil
	case <-ctx.Done():
		leave()
		return nil, ctx.Err()
	}
}

// Users says how many callers hold or wait for key. Tests poll it to see a caller
// waiting rather than not yet arrived.
func (k *Keys) Users(key string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if tu := k.m[key]; tu != nil {
		return tu.users
	}
	return 0
}
