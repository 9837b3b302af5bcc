// Package command is SyVault's command side: everything that changes state goes through
// it. It generates lease credentials, reserves usernames, seals secrets, asks the domain
// (package events) for the event each change is, appends it, and waits for the outcome
// where the caller needs one. The HTTP layer decodes, authorizes and calls one method;
// the workers do the database work the appended events ask for.
package command

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/internal/seal"
	"github.com/syvault/syvault/internal/turns"
	"github.com/syvault/syvault/projections"
)

// Preparer verifies a target's admin rights and sets up what its users share before the
// target is registered, removes it when the target goes, and gives active lease users a
// target's new grants on engines where each user holds its own. The workers implement it.
type Preparer interface {
	// Prepare verifies t by setting it up; isNew says t is not recorded yet. It returns
	// what t's database lets a lease user do beyond t's grants (events.Target.Warnings).
	Prepare(ctx context.Context, t events.Target, adminPassword string, isNew bool) ([]string, error)
	// Unprepare removes what Prepare set up for t when t was then not recorded, with
	// the admin password Prepare was given, even once ctx is done.
	Unprepare(ctx context.Context, t events.Target, adminPassword string) error
	// Reprepare sets t up again as recorded, with its sealed admin password.
	Reprepare(ctx context.Context, t events.Target) error
	RemoveTarget(ctx context.Context, t events.Target) error
	GrantsPerUser(events.Engine) bool
	Regrant(ctx context.Context, t events.Target, username string) error
	// DropNow makes one attempt at dropping revoking lease l's user, here and now;
	// attempted is false when the database was not asked.
	DropNow(ctx context.Context, l events.Lease) (attempted bool, err error)
	// Reachable reports whether the server lease l's user is on takes a TCP connection;
	// err is set when there is no answer either way (ctx ended, a lookup that failed for
	// now, this process out of sockets).
	Reachable(ctx context.Context, l events.Lease) (bool, error)
}

// Config wires the command side. Every field but Logger and RequestTimeout is required.
type Config struct {
	Store       *jsstore.Store
	Projections *projections.Projections
	Sealer      *seal.Sealer
	Preparer    Preparer
	Logger      *slog.Logger
	// RequestTimeout bounds how long a lease create or revoke waits for its outcome.
	// Default 20 s.
	RequestTimeout time.Duration
	// Abandoned, when set, is called once for each revocation this process gives up (a
	// lease.abandoned it recorded), for a count deployments alert on.
	Abandoned func()
}

// Service carries out commands. It is safe for concurrent use.
type Service struct {
	cfg         Config
	log         *slog.Logger
	usernames   *jsstore.Names
	assertions  *jsstore.Names
	names       *jsstore.Names
	logins      *loginLinks
	ended       *jsstore.Names // dashboard sessions logged out (EndSession)
	newUsername func() string
	credentials *credentialPool
	quotas      *leaseQuotas
	adminsSeen  guardSeen
	targetTurns turns.Keys // one update or removal of a target at a time (targetTurn)
}

// New opens what the command side keeps in NATS (the username and assertion
// reservations, the login links) and returns the Service.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Projections == nil || cfg.Sealer == nil || cfg.Preparer == nil {
		return nil, errors.New("command.New: Store, Projections, Sealer and Preparer are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 20 * time.Second
	}
	s := &Service{cfg: cfg, log: cfg.Logger.With("component", "command"), newUsername: newUsername}
	var err error
	if s.usernames, err = OpenUsernames(ctx, cfg.Store); err != nil {
		return nil, err
	}
	if s.assertions, err = cfg.Store.OpenNames(ctx, AssertionsBucket, "Client assertion ids (jti) already used, until they expire", assertionHold, assertionHold-30*time.Second); err != nil {
		return nil, err
	}
	if s.logins, err = openLoginLinks(ctx, cfg.Store); err != nil {
		return nil, err
	}
	if s.ended, err = cfg.Store.OpenNames(ctx, EndedSessionsBucket, "Dashboard sessions logged out (by hash), for longer than any session lives", endedHold, 0); err != nil {
		return nil, err
	}
	if s.names, err = cfg.Store.OpenNames(ctx, NamesBucket, "SyVault target and client names, each with its holder", 0, 0); err != nil {
		return nil, err
	}
	s.credentials = newCredentialPool(credentialPoolSize)
	s.quotas = newLeaseQuotas(cfg.Projections)
	return s, nil
}

// credentialPoolSize is how many prepared PostgreSQL credentials a process keeps: a
// burst of that many creates skips the hashing.
const credentialPoolSize = 128

// Close stops the background work; the Service must not be used afterwards.
func (s *Service) Close() { s.credentials.close() }
