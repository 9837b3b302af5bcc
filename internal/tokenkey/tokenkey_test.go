package tokenkey

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events/jsstore/jstest"
	"github.com/syvault/syvault/internal/seal"
)

func mustSealer(t *testing.T, key []byte, previous ...[]byte) *seal.Sealer {
	t.Helper()
	s, err := seal.New(key, previous...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// process opens a ring through its own connection, as another server process would, and
// follows the bucket until the test ends.
func process(t *testing.T, srv *jstest.Server, sealer *seal.Sealer) *Ring {
	t.Helper()
	r, err := Open(context.Background(), srv.MustStore(t), sealer, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Processes starting together on a new deployment settle on one key, stored sealed.
func TestOpen_ConcurrentStartsShareOneSealedKey(t *testing.T) {
	srv := jstest.MustServer(t, "")
	sealer := mustSealer(t, seal.NewKey())
	rings := make([]*Ring, 6)
	var wg sync.WaitGroup
	for i := range rings {
		wg.Go(func() { rings[i] = process(t, srv, sealer) })
	}
	wg.Wait()
	kid, key := rings[0].Signing()
	if kid == "" || len(key) != 32 {
		t.Fatalf("signing key %q of %d bytes", kid, len(key))
	}
	for i, r := range rings[1:] {
		if k, b := r.Signing(); k != kid || !bytes.Equal(b, key) {
			t.Fatalf("process %d signs with %q, process 0 with %q", i+1, k, kid)
		}
	}

	js, _ := jetstream.New(srv.MustConnect(t))
	kv, err := js.KeyValue(context.Background(), Bucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), entry)
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{string(key), hex.EncodeToString(key), base64.StdEncoding.EncodeToString(key), base64.RawURLEncoding.EncodeToString(key)} {
		if bytes.Contains(e.Value(), []byte(form)) {
			t.Fatalf("the bucket holds the signing key in plaintext: %s", e.Value())
		}
	}
}

// A process given another master key refuses to start instead of issuing tokens no other
// process accepts.
func TestOpen_RefusesAnotherMasterKey(t *testing.T) {
	srv := jstest.MustServer(t, "")
	process(t, srv, mustSealer(t, seal.NewKey()))
	_, err := Open(context.Background(), srv.MustStore(t), mustSealer(t, seal.NewKey()), slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "another master key") {
		t.Fatalf("err = %v, want a refusal naming the master key", err)
	}
}

// A rotation reaches every process: they sign with the new key, and tokens of the old one
// keep working until dropped; dropping refuses them everywhere.
func TestRotate(t *testing.T) {
	srv := jstest.MustServer(t, "")
	sealer := mustSealer(t, seal.NewKey())
	a, b := process(t, srv, sealer), process(t, srv, sealer)
	ctx := context.Background()
	old, oldKey := a.Signing()

	r, err := a.Rotate(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if r.Current == old || len(r.Kept) != 1 || r.Kept[0] != old || len(r.Dropped) != 0 {
		t.Fatalf("rotation: %+v (old key %s)", r, old)
	}
	eventually(t, "the other process signs with the new key", func() bool { k, _ := b.Signing(); return k == r.Current })
	for name, p := range map[string]*Ring{"rotating": a, "other": b} {
		if k, err := p.Verifying(ctx, old); err != nil || !bytes.Equal(k, oldKey) {
			t.Errorf("%s process: the retired key no longer verifies: %v", name, err)
		}
	}

	r2, err := b.Rotate(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(r2.Kept) != 0 || len(r2.Dropped) != 2 {
		t.Fatalf("rotation dropping the previous keys: %+v", r2)
	}
	for name, p := range map[string]*Ring{"rotating": b, "other": a} {
		eventually(t, name+" process refuses the dropped keys", func() bool {
			_, e1 := p.Verifying(ctx, old)
			_, e2 := p.Verifying(ctx, r.Current)
			k, _ := p.Signing()
			return errors.Is(e1, ErrUnknownKey) && errors.Is(e2, ErrUnknownKey) && k == r2.Current
		})
	}
}

// A key another process rotated in is accepted at once, before this process's watch
// brings it: a token from one process never bounces off another.
func TestVerifying_ReloadsForAKeyItHasNotSeen(t *testing.T) {
	srv := jstest.MustServer(t, "")
	sealer := mustSealer(t, seal.NewKey())
	// Opened but not following the bucket: only the reload can teach it the new key.
	stale, err := Open(context.Background(), srv.MustStore(t), sealer, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	other := process(t, srv, sealer)
	r, err := other.Rotate(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	_, want := other.Signing()
	if k, err := stale.Verifying(context.Background(), r.Current); err != nil || !bytes.Equal(k, want) {
		t.Fatalf("the new key did not verify at a process that had not seen it: %v", err)
	}
	// Made-up key ids do not each cost a read of the bucket.
	stale.mu.RLock()
	last := stale.lastReload
	stale.mu.RUnlock()
	for range 100 {
		if _, err := stale.Verifying(context.Background(), "feedfacefeedface"); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("unknown key id: %v", err)
		}
	}
	stale.mu.RLock()
	defer stale.mu.RUnlock()
	if !stale.lastReload.Equal(last) && stale.lastReload.Sub(last) < reloadEvery {
		t.Fatalf("reloaded again %v after the last reload", stale.lastReload.Sub(last))
	}
}

// A retired key is kept while tokens it signed may still be alive, and dropped by the
// first rotation after that.
func TestRotate_DropsKeysRetiredLongerThanRetention(t *testing.T) {
	srv := jstest.MustServer(t, "")
	a := process(t, srv, mustSealer(t, seal.NewKey()))
	ctx := context.Background()
	first, _ := a.Signing()
	t0 := time.Now().UTC()
	r1, err := a.rotate(ctx, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := a.rotate(ctx, t0.Add(Retention), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(r2.Kept) != 2 || len(r2.Dropped) != 0 {
		t.Fatalf("at exactly Retention after retirement: %+v", r2)
	}
	r3, err := a.rotate(ctx, t0.Add(Retention+time.Second), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(r3.Dropped) != 1 || r3.Dropped[0] != first || len(r3.Kept) != 2 {
		t.Fatalf("past Retention: %+v (first key %s, second %s, third %s)", r3, first, r1.Current, r2.Current)
	}
}

// Rotations from several processes at once all land: none is lost to another's write.
func TestRotate_Concurrent(t *testing.T) {
	srv := jstest.MustServer(t, "")
	sealer := mustSealer(t, seal.NewKey())
	a, b := process(t, srv, sealer), process(t, srv, sealer)
	var mu sync.Mutex
	made := map[string]bool{}
	var wg sync.WaitGroup
	for _, p := range []*Ring{a, b, a, b} {
		wg.Go(func() {
			for range 3 {
				r, err := p.Rotate(context.Background(), false)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				made[r.Current] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(made) != 12 {
		t.Fatalf("%d distinct keys from 12 rotations", len(made))
	}
	for kid := range made {
		if _, err := a.Verifying(context.Background(), kid); err != nil {
			t.Errorf("key %s of a concurrent rotation was lost: %v", kid, err)
		}
	}
}

// Changing the master key: a process holding the new key and the old one as previous
// reseals the keys; from then on the new key alone opens them, and the signing key stays
// the same, so no token is cut off by the change.
func TestReseal_MasterKeyChange(t *testing.T) {
	srv := jstest.MustServer(t, "")
	oldKey, newKey := seal.NewKey(), seal.NewKey()
	before := process(t, srv, mustSealer(t, oldKey))
	if _, err := before.Rotate(context.Background(), false); err != nil { // two keys to reseal
		t.Fatal(err)
	}
	kid, key := before.Signing()
	if _, err := Open(context.Background(), srv.MustStore(t), mustSealer(t, newKey), slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("the new master key alone opened keys sealed under the old one")
	}
	during := process(t, srv, mustSealer(t, newKey, oldKey))
	n, err := during.Reseal(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("Reseal = %d, %v; want 2 keys resealed", n, err)
	}
	if n, err := during.Reseal(context.Background()); err != nil || n != 0 {
		t.Fatalf("second Reseal = %d, %v; want nothing left to do", n, err)
	}
	after := process(t, srv, mustSealer(t, newKey))
	if k, b := after.Signing(); k != kid || !bytes.Equal(b, key) {
		t.Fatalf("after the change the signing key is %s, was %s", k, kid)
	}
	if _, err := Open(context.Background(), srv.MustStore(t), mustSealer(t, oldKey), slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("the old master key still opens the resealed keys")
	}
}

// stuckWatcher is a watch that has stopped delivering, as one cut off from its stream.
type stuckWatcher struct{ updates chan jetstream.KeyValueEntry }

func (w stuckWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.updates }
func (w stuckWatcher) Stop() error                             { return nil }

// With its watch stuck, a process still learns of a rotation by re-reading the keys, so a
// dropped key cannot stay accepted there.
func TestFollow_PollsWhenTheWatchIsStuck(t *testing.T) {
	srv := jstest.MustServer(t, "")
	sealer := mustSealer(t, seal.NewKey())
	stuck, err := Open(context.Background(), srv.MustStore(t), sealer, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	old, _ := stuck.Signing()
	ctx, cancel := context.WithCancel(context.Background())
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	done := make(chan struct{})
	go func() { defer close(done); stuck.follow(ctx, stuckWatcher{make(chan jetstream.KeyValueEntry)}, poll) }()
	defer func() { cancel(); <-done }()

	r, err := process(t, srv, sealer).Rotate(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stuck process drops the old key", func() bool {
		k, _ := stuck.Signing()
		_, held := stuck.lookup(old)
		return k == r.Current && !held
	})
}

// A retired key verifies for Retention after its retirement and not a moment longer,
// even when no later rotation has come to drop it from the stored entry.
func TestVerifying_RetiredKeyStopsAfterRetention(t *testing.T) {
	srv := jstest.MustServer(t, "")
	a := process(t, srv, mustSealer(t, seal.NewKey()))
	ctx := context.Background()
	old, _ := a.Signing()
	t0 := time.Now().UTC()
	if _, err := a.rotate(ctx, t0, false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the rotation applied", func() bool { cur, _ := a.Signing(); return cur != old })
	var clock sync.Mutex
	now := t0
	a.mu.Lock()
	a.now = func() time.Time { clock.Lock(); defer clock.Unlock(); return now }
	a.mu.Unlock()
	at := func(d time.Duration) error {
		clock.Lock()
		now = t0.Add(d)
		clock.Unlock()
		_, err := a.Verifying(ctx, old)
		return err
	}
	if err := at(Retention); err != nil {
		t.Fatalf("at Retention after retirement: %v", err)
	}
	if err := at(Retention + time.Second); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("past Retention: %v, want ErrUnknownKey", err)
	}
	cur, _ := a.Signing()
	if _, err := a.Verifying(ctx, cur); err != nil {
		t.Fatalf("the current key: %v", err)
	}
}
