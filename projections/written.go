package projections

import (
	"sync"
	"time"
)

// written remembers the lease records this process wrote last, as written and with their
// revisions. A lease's next event usually follows its previous one within milliseconds
// (the activation its request, the drop its revocation), and is then applied to the
// record remembered rather than one read back: the write is conditional on the
// remembered revision, so a record another process changed meanwhile fails it and is
// read afresh. Entries are forgotten after writtenFor, and the oldest go first past
// writtenMax, so the memory is bounded whatever the number of leases.
type written struct {
	mu    sync.Mutex
	m     map[string]writtenRecord
	order []string // keys in the order written, a ring of writtenMax
	next  int
}

type writtenRecord struct {
	data []byte
	rev  uint64
	at   time.Time
}

const (
	writtenMax = 4096
	// writtenFor is short so that a bucket thrown away and rebuilt by another process
	// (whose revisions start again) is not written on the strength of an old revision.
	writtenFor = 5 * time.Second
)

func newWritten() *written { return &written{m: map[string]writtenRecord{}} }

// get returns the record last written at key and its revision.
func (w *written) get(key string) ([]byte, uint64, bool) {
	if w == nil {
		return nil, 0, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.m[key]
	if !ok || r.rev == 0 || time.Since(r.at) > writtenFor {
		return nil, 0, false
	}
	return r.data, r.rev, true
}

// put remembers data as written at key with revision rev.
func (w *written) put(key string, data []byte, rev uint64) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.m[key]; !ok {
		if len(w.order) < writtenMax {
			w.order = append(w.order, key)
		} else {
			delete(w.m, w.order[w.next])
			w.order[w.next] = key
			w.next = (w.next + 1) % writtenMax
		}
	}
	w.m[key] = writtenRecord{data: data, rev: rev, at: time.Now()}
}

// forget drops what is remembered of key.
func (w *written) forget(key string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if r, ok := w.m[key]; ok {
		r.rev = 0
		w.m[key] = r // its place in the ring stays; a rev of 0 is never used
	}
}
