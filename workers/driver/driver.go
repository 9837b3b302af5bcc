// Package driver is the seam between SyVault and a database engine: the Driver interface
// each engine implements, the requests and answers its methods take, and the helpers that
// turn a driver's failures into coded errors without secrets. It imports nothing of
// SyVault but the domain (events), so a driver is a leaf: it knows its database and this
// contract, nothing of NATS, the workers or the API.
package driver

import (
	"context"
	"regexp"
	"time"

	"github.com/syvault/syvault/events"
)

// Conn is how a driver reaches a target as its admin. Password is plaintext and lives only
// in memory for the duration of one operation; drivers must never log it or put it in an
// error.
type Conn struct {
	// PoolKey identifies the pool this connection may share: the same key means the same
	// host, port, database, credentials and TLS settings.
	PoolKey  string
	Host     string
	Port     int
	Database string
	Username string
	Password string
	TLSMode  events.TLSMode
	// CACert is an optional PEM bundle for TLSVerifyFull.
	CACert string
}

// Every driver bounds what it asks of a target the same way.
const (
	// MaxAdminConns bounds each admin pool: a target sees at most this many admin
	// sessions per database from one SyVault process, however many leases are in flight.
	MaxAdminConns = 4
	// ConnectTimeout bounds one connection attempt, so an unreachable target fails fast.
	ConnectTimeout = 10 * time.Second
)

// PrepareRequest asks a driver to check that the admin may create users and grant the
// target's privileges, and to set up what the target's users share (PostgreSQL: the
// group role that holds the grants).
type PrepareRequest struct {
	Conn      Conn
	RecordUID string
	Grants    []events.Grant
	// New says the target is not recorded yet (a registration): nothing but this
	// Prepare knows its record uid, so what a refused one made is removed. An update's
	// is kept: the target's leases may be using it.
	New bool
	// Advise, when set, is told of each setting of the target's database, found while it
	// is verified, that lets a lease user do more than the grants say: it is not refused
	// (a target registered before the check would be at its next update), only reported.
	Advise func(advice string)
}

// CreateUserRequest asks for one lease user.
type CreateUserRequest struct {
	Conn      Conn
	RecordUID string
	Username  string
	Password  string
	// PasswordVerifier, when set, is Password's SCRAM-SHA-256 verifier, prepared ahead
	// (see SCRAMVerifier); engines that store one take it instead of computing it.
	PasswordVerifier string
	ExpiresAt        time.Time
	Grants           []events.Grant
	// ConnectionLimit caps the user's concurrent sessions; 0 means none.
	ConnectionLimit int
}

// RenewUserRequest moves a user's database-side expiry (PostgreSQL VALID UNTIL).
type RenewUserRequest struct {
	Conn      Conn
	Username  string
	ExpiresAt time.Time
}

// BatchDropper is a Driver that drops many users of one target together, in a few round
// trips and transactions for all of them rather than a few for each: what keeps an
// expiry storm's drops from queueing. Every request names the same Conn. The answer holds
// one error (nil for success) per request, in order; each means what DropUser's would.
type BatchDropper interface {
	DropUsers(ctx context.Context, reqs []DropUserRequest) []error
}

// DropUserRequest asks for a user to be gone: no new logins, no open sessions, no objects
// left that block the drop, no role.
type DropUserRequest struct {
	Conn Conn
	// RecordUID names the user's target; what the user created goes to the target's
	// shared owner (PostgreSQL: its group role).
	RecordUID string
	Username  string
	Grants    []events.Grant
}

// RemoveTargetRequest asks a driver to remove what Prepare set up for a target.
type RemoveTargetRequest struct {
	Conn      Conn
	RecordUID string
	Grants    []events.Grant
}

// Driver creates and drops lease users in one database engine.
//
// Every method is idempotent and safe for concurrent use. Errors wrap an *events.Error:
// code ETargetUnavailable when the target cannot be reached, refuses the admin login or
// holds a lock the driver does not wait out (MariaDB's global read lock; on PostgreSQL,
// another session's lock on what a target's removal changes), ETargetUnverified
// from Prepare when the admin lacks a right, EInternal otherwise. No
// error or log line holds a password.
type Driver interface {
	// Prepare verifies the admin's rights for the grants and creates or refreshes what the
	// target's users share. Called when a target is registered; safe to call again. A
	// failure after it changed, or may have changed, what the target's users hold (a
	// statement committed, or sent and never answered) carries ErrPartlyApplied.
	Prepare(ctx context.Context, req PrepareRequest) error
	// CreateUser creates a login user with exactly the grants, its password set, and (where
	// the engine has it) a database-side expiry. A user of that name that already exists
	// is taken to be this lease's from an earlier attempt: its password and expiry are set
	// again and that is success. On failure no user of that name is left behind.
	CreateUser(ctx context.Context, req CreateUserRequest) error
	// RenewUser moves the database-side expiry; engines without one return nil.
	RenewUser(ctx context.Context, req RenewUserRequest) error
	// DropUser stops new logins, ends the user's sessions, removes what it owns and drops
	// it. It returns nil when the user does not exist. When it returns nil the credentials
	// can open no session.
	DropUser(ctx context.Context, req DropUserRequest) error
	// RemoveTarget removes what Prepare set up (PostgreSQL: the group role and its
	// grants) for a target being removed: its users are dropped or being dropped, and a
	// drop after it may make it again (so it is called again then). It may run in two
	// processes at once. Nothing to remove is success.
	RemoveTarget(ctx context.Context, req RemoveTargetRequest) error
	// Close releases the pooled admin connections.
	Close() error
}

// UpdateUserRequest asks for an existing user to hold exactly Grants.
type UpdateUserRequest struct {
	Conn Conn
	// RecordUID names the user's target, whose marker the user keeps (see ListedUser).
	RecordUID string
	Username  string
	Grants    []events.Grant
}

// UserGranter is implemented by drivers whose lease users hold their grants themselves
// (MySQL), so that a target's changed grants must reach each active user; where users
// only inherit a shared role's (PostgreSQL), Prepare changes them all at once.
type UserGranter interface {
	// UpdateUser gives the user exactly req.Grants: what they add is granted first,
	// then what the user holds beyond them is revoked, so no privilege kept is ever
	// missing in between. A user that does not exist is success. Idempotent.
	UpdateUser(ctx context.Context, req UpdateUserRequest) error
}

// ListUsersRequest asks for the lease users a target's server holds for RecordUID.
type ListUsersRequest struct {
	Conn      Conn
	RecordUID string
	// Unmarked asks also for the users that have a lease user's name but no marker of
	// any target (made before markers, or not SyVault's).
	Unmarked bool
}

// ListedUser is one database user a driver found.
type ListedUser struct {
	Username string
	// Marked says the user carries the target's marker, which only SyVault's admin gives
	// (PostgreSQL: membership in the target's group role; MySQL: the target's marker
	// role). An unmarked user merely has a lease user's name: it may predate markers, or
	// be somebody else's, and is never dropped on the strength of its name.
	Marked bool
}

// UserLister is implemented by drivers that can list the users they made, for
// reconciliation against the store.
type UserLister interface {
	// ListUsers returns the users with a lease user's name that carry the target's
	// marker, never the admin, and with req.Unmarked also those carrying no marker of any
	// target. The order is unspecified. It changes nothing on the target. Errors are
	// coded like the Driver's: ETargetUnavailable when the target cannot be reached,
	// ETargetUnverified (naming the GRANT that fixes it) when the admin may not read what
	// it needs.
	ListUsers(ctx context.Context, req ListUsersRequest) ([]ListedUser, error)
}

// leaseUsername is the shape of every lease username: vf_tmp_ and 8 lowercase letters or
// digits (the API's contract).
var leaseUsername = regexp.MustCompile(`^vf_tmp_[a-z0-9]{8}$`)

// IsLeaseUsername reports whether name has the shape of a lease username.
func IsLeaseUsername(name string) bool { return leaseUsername.MatchString(name) }
