// Package tokenkey keeps the keys that sign SyVault's access tokens. A deployment's first
// process generates one; it is sealed under the master key and kept in a KV bucket, so
// every process behind a load balancer signs and verifies with the same keys and none of
// them has another secret to be given. Rotation adds a new signing key and keeps the
// retired ones verifying until every token they signed has expired, or drops them at once
// when a key must be assumed stolen.
package tokenkey

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/internal/seal"
)

const (
	// Bucket holds the sealed keys, under one entry so a rotation is one compare-and-set.
	Bucket = "SYVAULT_TOKEN_KEYS"
	entry  = "hs256"
	// MaxTokenTTL is the longest lifetime a server may give its access tokens.
	MaxTokenTTL = 24 * time.Hour
	// Retention is how long a retired key still verifies: the longest a token it signed
	// can live, plus the clock skew tokens are checked with.
	Retention = MaxTokenTTL + time.Minute
	// reloadEvery bounds how often a token naming an unknown key makes a process re-read
	// the bucket, so tokens with made-up key ids cannot turn into a flood of reads.
	reloadEvery = time.Second
	// pollEvery bounds how long a process can miss a rotation if its watch fails.
	pollEvery = 30 * time.Second
)

// ErrUnknownKey is returned for a key id the deployment does not hold (any more): the
// token naming it is not authentic, an EUnauthenticated error.
var ErrUnknownKey = events.Errorf(events.EUnauthenticated, "The access token names a signing key this deployment does not hold; get a new token.")

// stored is the bucket entry.
type stored struct {
	Current string      `json:"current"`
	Keys    []storedKey `json:"keys"`
}

type storedKey struct {
	ID        string     `json:"kid"`
	Sealed    []byte     `json:"sealed"`
	CreatedAt time.Time  `json:"created_at"`
	RetiredAt *time.Time `json:"retired_at,omitempty"`
}

// keyset is the opened form of one revision of the entry.
type keyset struct {
	rev     uint64
	current string
	keys    map[string][]byte
	// until is when each retired key stops verifying, whether or not a later rotation
	// has removed it from the entry yet.
	until map[string]time.Time
}

// Ring is one process's view of the keys. It is safe for concurrent use.
type Ring struct {
	kv     jetstream.KeyValue
	sealer *seal.Sealer
	log    *slog.Logger

	mu         sync.RWMutex
	set        keyset
	lastReload time.Time
	// now is the clock retirement is measured against (time.Now outside tests).
	now func() time.Time
}

var bucketConfig = jetstream.KeyValueConfig{
	Bucket:      Bucket,
	Description: "SyVault access-token signing keys, sealed under the master key",
	Storage:     jetstream.FileStorage,
	History:     16,
}

// Open loads the deployment's keys, generating the first one if there is none yet. It
// fails when the keys were sealed under another master key, so a process given the wrong
// key refuses to start rather than issue tokens nobody else accepts.
func Open(ctx context.Context, store *jsstore.Store, sealer *seal.Sealer, log *slog.Logger) (*Ring, error) {
	kv, err := store.Bucket(ctx, bucketConfig)
	if err != nil {
		return nil, fmt.Errorf("tokenkey: bucket: %w", err)
	}
	r := &Ring{kv: kv, sealer: sealer, log: log, now: time.Now}
	for {
		err := r.reload(ctx)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, err
		}
		k, err := r.newKey(time.Now())
		if err != nil {
			return nil, err
		}
		data, _ := json.Marshal(stored{Current: k.ID, Keys: []storedKey{k}})
		// Processes starting together race here; Create lets exactly one key win and the
		// others load it on the next turn.
		if _, err := kv.Create(ctx, entry, data); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("tokenkey: store the first key: %w", err)
		}
	}
}

// ErrNone is Check's answer for a deployment that has no signing key yet (no server has
// run), which leaves nothing to check a master key against.
var ErrNone = errors.New("tokenkey: no signing key yet")

// Check reports whether sealer opens the deployment's signing keys, making none: it
// fails with ErrNone where there are none yet (where Open would make the first, sealed
// under whatever key it is given), and as Open does where they were sealed under another
// master key.
func Check(ctx context.Context, store *jsstore.Store, sealer *seal.Sealer) error {
	kv, err := store.Bucket(ctx, bucketConfig)
	if err != nil {
		return fmt.Errorf("tokenkey: bucket: %w", err)
	}
	err = (&Ring{kv: kv, sealer: sealer, log: slog.New(slog.DiscardHandler), now: time.Now}).reload(ctx)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ErrNone
	}
	return err
}

// Run follows the bucket until ctx ends, so a rotation made anywhere reaches this process
// within moments: it signs with the new key and stops accepting dropped ones. A watch
// that cannot be set up or breaks is set up again with backoff, and the keys are also
// re-read every pollEvery, so a dropped key is refused here within that bound whatever
// happens to the watch.
func (r *Ring) Run(ctx context.Context) error {
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	var failures uint64
	for {
		w, err := r.kv.Watch(ctx, entry)
		if err == nil {
			if r.follow(ctx, w, poll) {
				failures = 0
			}
			_ = w.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
		failures++
		r.log.Warn("token keys: the watch on the bucket failed; setting it up again", "attempt", failures, "err", err)
		retry := time.NewTimer(jsstore.Backoff(failures, 30*time.Second))
		for waiting := true; waiting; {
			select {
			case <-ctx.Done():
				retry.Stop()
				return nil
			case <-poll.C:
				r.poll(ctx)
			case <-retry.C:
				waiting = false
			}
		}
	}
}

// follow applies the watch's updates until ctx ends or the watch breaks, and reports
// whether it received anything.
func (r *Ring) follow(ctx context.Context, w jetstream.KeyWatcher, poll *time.Ticker) (received bool) {
	for {
		select {
		case <-ctx.Done():
			return received
		case <-poll.C:
			r.poll(ctx)
		case e, ok := <-w.Updates():
			if !ok {
				return received
			}
			received = true
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			if err := r.apply(e.Value(), e.Revision()); err != nil {
				r.log.Error("token keys: cannot use the new revision; keeping the old keys", "revision", e.Revision(), "err", err)
			}
		}
	}
}

func (r *Ring) poll(ctx context.Context) {
	if err := r.reload(ctx); err != nil && ctx.Err() == nil {
		r.log.Warn("token keys: cannot re-read the bucket", "err", err)
	}
}

// Signing returns the key that signs new tokens and its id.
func (r *Ring) Signing() (kid string, key []byte) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.set.current, r.set.keys[r.set.current]
}

// Verifying returns the key with id kid. A kid this process has not seen yet (a rotation
// made elsewhere that the watch has not brought) makes it re-read the bucket, at most
// once per reloadEvery.
func (r *Ring) Verifying(ctx context.Context, kid string) ([]byte, error) {
	if k, ok := r.lookup(kid); ok {
		return k, nil
	}
	r.mu.Lock()
	due := time.Since(r.lastReload) >= reloadEvery
	if due {
		r.lastReload = time.Now()
	}
	r.mu.Unlock()
	if due {
		if err := r.reload(ctx); err != nil {
			return nil, err
		}
		if k, ok := r.lookup(kid); ok {
			return k, nil
		}
	}
	return nil, ErrUnknownKey
}

// lookup returns the key kid while it verifies: a retired key stops Retention after its
// retirement, at that moment in every process, not at the next rotation.
func (r *Ring) lookup(kid string) ([]byte, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	k, ok := r.set.keys[kid]
	if until, retired := r.set.until[kid]; ok && retired && r.now().After(until) {
		return nil, false
	}
	return k, ok
}

// Rotated is what a rotation did.
type Rotated struct {
	Current string   // the new signing key's id
	Kept    []string // retired keys that still verify
	Dropped []string // keys that no longer verify
}

// Rotate makes a new signing key. The one it replaces keeps verifying for Retention,
// unless dropPrevious, which drops every older key at once: every token issued so far
// stops working, in every process, as soon as the change reaches it.
func (r *Ring) Rotate(ctx context.Context, dropPrevious bool) (Rotated, error) {
	return r.rotate(ctx, time.Now().UTC(), dropPrevious)
}

func (r *Ring) rotate(ctx context.Context, now time.Time, dropPrevious bool) (Rotated, error) {
	for {
		s, rev, err := r.get(ctx)
		if err != nil {
			return Rotated{}, err
		}
		k, err := r.newKey(now)
		if err != nil {
			return Rotated{}, err
		}
		out := Rotated{Current: k.ID}
		next := stored{Current: k.ID, Keys: []storedKey{k}}
		for _, old := range s.Keys {
			if old.RetiredAt == nil {
				old.RetiredAt = &now
			}
			if dropPrevious || now.Sub(*old.RetiredAt) > Retention {
				out.Dropped = append(out.Dropped, old.ID)
				continue
			}
			out.Kept = append(out.Kept, old.ID)
			next.Keys = append(next.Keys, old)
		}
		if err := r.update(ctx, next, rev); errors.Is(err, errConflict) {
			continue // another change landed first: rotate what it left
		} else if err != nil {
			return Rotated{}, err
		}
		return out, nil
	}
}

// Reseal seals every key under the current master key, so that a previous master key can
// be given up. It returns how many keys needed it.
func (r *Ring) Reseal(ctx context.Context) (int, error) {
	for {
		s, rev, err := r.get(ctx)
		if err != nil {
			return 0, err
		}
		n := 0
		for i, k := range s.Keys {
			key, current, err := r.sealer.OpenCurrent(k.Sealed, aad(k.ID))
			if err != nil {
				return 0, errAnotherMasterKey
			}
			if !current {
				s.Keys[i].Sealed = r.sealer.Seal(key, aad(k.ID))
				n++
			}
		}
		if n == 0 {
			return 0, nil
		}
		if err := r.update(ctx, s, rev); errors.Is(err, errConflict) {
			continue
		} else if err != nil {
			return 0, err
		}
		return n, nil
	}
}

var (
	errConflict         = errors.New("tokenkey: the keys changed meanwhile")
	errAnotherMasterKey = errors.New("tokenkey: the access-token keys were sealed under another master key; every process of a deployment needs the same master key (or, while it changes, the old one as --previous-master-key-file)")
)

// get reads the stored keys, checking that this process can open them all: nothing is
// added to keys sealed under a master key it does not hold.
func (r *Ring) get(ctx context.Context) (stored, uint64, error) {
	e, err := r.kv.Get(ctx, entry)
	if err != nil {
		return stored{}, 0, fmt.Errorf("tokenkey: %w", err)
	}
	var s stored
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return stored{}, 0, fmt.Errorf("tokenkey: decode the stored keys: %w", err)
	}
	if _, err := r.open(s, e.Revision()); err != nil {
		return stored{}, 0, err
	}
	return s, e.Revision(), nil
}

// update stores s if the entry is still at revision rev, and uses it at once.
func (r *Ring) update(ctx context.Context, s stored, rev uint64) error {
	data, _ := json.Marshal(s)
	next, err := r.kv.Update(ctx, entry, data, rev)
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return errConflict
	}
	if err != nil {
		return fmt.Errorf("tokenkey: store the keys: %w", err)
	}
	return r.apply(data, next)
}

func (r *Ring) newKey(now time.Time) (storedKey, error) {
	id := make([]byte, 8)
	key := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return storedKey{}, err
	}
	if _, err := rand.Read(key); err != nil {
		return storedKey{}, err
	}
	kid := hex.EncodeToString(id)
	return storedKey{ID: kid, Sealed: r.sealer.Seal(key, aad(kid)), CreatedAt: now}, nil
}

// aad binds each sealed key to its id, so keys cannot be swapped between ids.
func aad(kid string) []byte { return []byte("syvault token key " + kid) }

func (r *Ring) reload(ctx context.Context) error {
	e, err := r.kv.Get(ctx, entry)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
		return fmt.Errorf("tokenkey: load: %w", err)
	}
	return r.apply(e.Value(), e.Revision())
}

// apply installs a revision of the entry unless this process already holds a newer one.
func (r *Ring) apply(data []byte, rev uint64) error {
	var s stored
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("tokenkey: decode the stored keys: %w", err)
	}
	set, err := r.open(s, rev)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if rev > r.set.rev {
		r.set = set
	}
	return nil
}

func (r *Ring) open(s stored, rev uint64) (keyset, error) {
	set := keyset{rev: rev, current: s.Current, keys: make(map[string][]byte, len(s.Keys)), until: map[string]time.Time{}}
	for _, k := range s.Keys {
		key, err := r.sealer.Open(k.Sealed, aad(k.ID))
		if err != nil {
			return keyset{}, errAnotherMasterKey
		}
		set.keys[k.ID] = key
		if k.RetiredAt != nil && k.ID != s.Current {
			set.until[k.ID] = k.RetiredAt.Add(Retention)
		}
	}
	if _, ok := set.keys[s.Current]; !ok {
		return keyset{}, fmt.Errorf("tokenkey: the stored keys name %q as current but do not hold it", s.Current)
	}
	return set, nil
}
