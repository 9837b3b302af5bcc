package http

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
)

// UsernamesBucket reserves every lease username for longer than a lease can live. A name
// holds about 41 random bits, so among ten thousand live users a new one collides about
// once in 3·10⁸ leases: rare, but a busy deployment gets there, and the drivers take an
// existing user of a lease's name for that lease's own earlier attempt, which would hand
// one database user to two applications. Reserving with a create, which succeeds once,
// makes each name one lease's across every process.
const UsernamesBucket = "SYVAULT_USERNAMES"

// usernameHold outlasts the longest lease and the drop at its end.
const usernameHold = events.MaxTTL + time.Hour

func openUsernames(ctx context.Context, cfg Config) (jetstream.KeyValue, error) {
	kv, err := jsstore.EnsureKeyValue(ctx, cfg.Store.JetStream(), jetstream.KeyValueConfig{
		Bucket:      UsernamesBucket,
		Description: "SyVault lease usernames in use or recently used, each with its lease id",
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Store.Replicas(),
		History:     1,
		TTL:         usernameHold,
	})
	if err != nil {
		return nil, events.Wrap(fmt.Errorf("http: usernames bucket: %w", err), events.EUnavailable, "The event store is unavailable.")
	}
	return kv, nil
}

// reserveUsername draws usernames until one is free and reserves it for leaseID.
func (s *Server) reserveUsername(ctx context.Context, leaseID string) (string, error) {
	for range 8 {
		name := s.newUsername()
		_, err := s.usernames.Create(ctx, name, []byte(leaseID))
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return "", events.Wrap(err, events.EUnavailable, "The event store is unavailable; try again shortly.")
		}
		s.log.Warn("drew a lease username already taken; drawing another", "lease_id", leaseID)
	}
	return "", errors.New("http: no free lease username in 8 draws")
}
