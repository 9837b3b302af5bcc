package projections

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// written remembers the lease records this process wrote last, as written and with their
// revisions. A lease's next event usually follows its previous one within milliseconds
// (the activation its request, the drop its revocation), and is then applied to the
// record remembered rather than one read back: the write is conditional on the
// remembered revision, so a record another process changed meanwhile fails it and is
// read afresh, and a remembered record that is not the event's predecessor is not
// trusted to decline it. The oldest entries go first past writtenMax, so the memory is
// bounded whatever the number of leases; all are forgotten when the bucket is made anew
// (see current).
type written struct {
	mu    sync.Mutex
	m     map[string]writtenRecord
	order []string // keys in the order written, a ring of writtenMax
	next  int
	// bucket is when the bucket the records were written to was made, checked is when
	// that was last read (see current).
	bucket, checked time.Time
}

type writtenRecord struct {
	data []byte
	rev  uint64
}

const writtenMax = 4096

// writtenCheck is how often current reads the bucket's creation time.
var writtenCheck = time.Second

// current reports whether what w remembers may be used for kv, dropping it all when the
// bucket was made anew since it was written: a rebuild in another process throws the
// bucket away and makes it again, its revisions start over, and a remembered revision could
// then match another write, which the remembered record (its index position that of the old
// index) would overwrite. The creation time is read at most once a writtenCheck; a bucket
// that cannot be read is not trusted.
func (w *written) current(ctx context.Context, kv jetstream.KeyValue) bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	fresh := time.Since(w.checked) < writtenCheck
	w.mu.Unlock()
	if fresh {
		return true
	}
	st, err := kv.Status(ctx)
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if err != nil || !ok || bs.StreamInfo() == nil {
		return false
	}
	made := bs.StreamInfo().Created
	w.mu.Lock()
	defer w.mu.Unlock()
	if !made.Equal(w.bucket) {
		clear(w.m)
		w.order, w.next, w.bucket = w.order[:0], 0, made
	}
	w.checked = time.Now()
	return true
}

func newWritten() *written { return &written{m: map[string]writtenRecord{}} }

// get returns the record last written at key and its revision.
func (w *written) get(key string) ([]byte, uint64, bool) {
	if w == nil {
		return nil, 0, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.m[key]
	if !ok || r.rev == 0 {
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
	w.m[key] = writtenRecord{data: data, rev: rev}
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
