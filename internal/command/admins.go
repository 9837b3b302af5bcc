package command

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
)

// adminsGuard is the name (in NamesBucket) every change that takes an admin away (a
// demotion, a removal) holds while it is decided and recorded. adminsGuardBound is how
// long a holding may stay unchanged before a waiter takes it over, as left by a process
// that died holding it; a holder works under a deadline of half that, so it is done (or
// has given up) before anyone may take over.
const adminsGuard = "guard.admins"

var adminsGuardBound = time.Minute

// guardSeen is the holding of the admins' guard this process last found in the way, and
// when it first did, by its own monotonic clock: the holding's stored time is the NATS
// server's, and a host whose clock ran ahead of it would take every guard for stale.
// Kept across requests, so that clients giving up and asking again still reach the bound.
type guardSeen struct {
	mu       sync.Mutex
	revision uint64
	since    time.Time
}

// stale reports whether h has been in the way, unchanged, for the bound.
func (g *guardSeen) stale(h jsstore.Holding) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.revision != h.Revision {
		g.revision, g.since = h.Revision, time.Now()
		return false
	}
	return time.Since(g.since) >= adminsGuardBound
}

// takeAdminsGuard makes one attempt at the admins' guard for token: free, or left in the
// way unchanged for the bound.
func (s *Service) takeAdminsGuard(ctx context.Context, token []byte) (bool, error) {
	if ok, err := s.names.Reserve(ctx, adminsGuard, token, 0); err != nil || ok {
		return ok, err
	}
	h, held, err := s.names.Holder(ctx, adminsGuard)
	if err != nil || !held || !s.adminsSeen.stale(h) {
		return false, err
	}
	return s.names.Take(ctx, adminsGuard, h, token)
}

// guardAdmins holds the admins' guard for a change by actor that takes an admin away, and
// then reads actor's own role from the stream: of two admins demoting or removing each
// other at the same moment (each allowed on its own, since neither changes itself), the
// second finds itself no longer an admin and is refused (EForbidden), rather than leave
// neither, and a deployment whose last two admins did so no way back but its bootstrap.
// The change is to be made under the context it returns (a deadline of half the bound),
// and release called once it is recorded.
func (s *Service) guardAdmins(ctx context.Context, actor string) (guarded context.Context, release func(), err error) {
	busy := func() error {
		return events.Errorf(events.EConflict, "Another change to an admin client took longer than this request could wait; send it again.")
	}
	token := []byte(uuid.NewString())
	for wait := 2 * time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		ok, err := s.takeAdminsGuard(ctx, token)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, nil, busy()
		case err != nil:
			return nil, nil, err
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return nil, nil, busy()
		case <-time.After(wait):
		}
	}
	guarded, cancel := context.WithTimeout(ctx, adminsGuardBound/2)
	release = func() {
		cancel()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		h, held, err := s.names.Holder(ctx, adminsGuard)
		switch {
		case err == nil && held && string(h.Value) == string(token):
			err = s.names.ReleaseHeld(ctx, adminsGuard, h)
		case err == nil && held:
			s.log.Warn("the admins' guard was taken over before this change released it: it took longer than its bound")
		}
		if err != nil {
			s.log.Warn("could not release the admins' guard; another change takes it over once its bound has passed", "err", err)
		}
	}
	a, _, err := s.cfg.Store.LoadClient(guarded, actor)
	switch {
	case events.ErrorCode(err) == events.ENotFound:
		err = events.Errorf(events.EForbidden, "This client was removed while the request was made.")
	case err == nil && a.Role != events.RoleAdmin:
		err = events.Errorf(events.EForbidden, "This client is no longer an admin: another admin changed its role while the request was made.")
	}
	if err != nil {
		release()
		return nil, nil, err
	}
	return guarded, release, nil
}
