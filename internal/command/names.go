package command

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
)

// UsernamesBucket reserves every lease username for longer than a lease can live. A name
// holds about 41 random bits, so among ten thousand live users a new one collides about
// once in 3·10⁸ leases: rare, but a busy deployment gets there, and the drivers take an
// existing user of a lease's name for that lease's own earlier attempt, which would hand
// one database user to two applications. Reserving with a create, which succeeds once,
// makes each name one lease's across every process. The workers forget a name once its
// lease's user is dropped; the hold bounds it when they do not get to.
const UsernamesBucket = "SYVAULT_USERNAMES"

// usernameHold outlasts the longest lease and the drop at its end.
const usernameHold = events.MaxTTL + time.Hour

// OpenUsernames opens the usernames bucket, where each lease username names the lease
// that reserved it: reconciliation looks users up there.
func OpenUsernames(ctx context.Context, store *jsstore.Store) (*jsstore.Names, error) {
	return store.OpenNames(ctx, UsernamesBucket, "SyVault lease usernames in use or recently used, each with its lease id", usernameHold, 0)
}

// reserveUsername draws usernames until one is free and reserves it for leaseID.
func (s *Service) reserveUsername(ctx context.Context, leaseID string) (string, error) {
	for range 8 {
		name := s.newUsername()
		ok, err := s.usernames.Reserve(ctx, name, []byte(leaseID), 0)
		if err != nil {
			return "", err
		}
		if ok {
			return name, nil
		}
		s.log.Warn("drew a lease username already taken; drawing another", "lease_id", leaseID)
	}
	return "", errors.New("command: no free lease username in 8 draws")
}

// AssertionsBucket remembers the ids (jti) of accepted client assertions until they
// expire, so replay protection holds across every server process.
const AssertionsBucket = "SYVAULT_JTI"

// assertionHold outlasts the longest-lived assertion (5 minutes) and the clock leeway.
const assertionHold = 6 * time.Minute

// UseAssertion accepts the assertion jti of client once: a second use, in any process,
// is EUnauthenticated until the assertion has expired (at until).
func (s *Service) UseAssertion(ctx context.Context, clientID, jti string, until time.Time) error {
	ok, err := s.assertions.Reserve(ctx, clientKey(clientID, jti), nil, max(time.Until(until), time.Second))
	if err != nil {
		return err
	}
	if !ok {
		return errReplayed
	}
	return nil
}

// RefuseReplay answers EUnauthenticated when any copy of the bucket shows the assertion
// jti of client used already: a check before a charge to the client's allowance, cheap
// (a direct get) and possibly stale; UseAssertion still decides, once for all
// processes.
func (s *Service) RefuseReplay(ctx context.Context, clientID, jti string) error {
	used, err := s.assertions.Held(ctx, clientKey(clientID, jti))
	if err == nil && used {
		return errReplayed
	}
	return err
}

var errReplayed = events.Errorf(events.EUnauthenticated, "This client assertion was already used; sign a new one with a fresh jti.")

// clientKey is the KV key of a client's id paired with another (an assertion's jti, a
// dashboard session's): those are arbitrary strings; KV keys are not.
func clientKey(clientID, id string) string {
	sum := sha256.Sum256([]byte(clientID + "\x00" + id))
	return hex.EncodeToString(sum[:])
}
