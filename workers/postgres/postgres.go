// Package postgres is the PostgreSQL driver: it creates lease users as LOGIN roles that
// inherit a per-target NOLOGIN group role holding the target's grants, and drops them.
//
// Why a group role: granting table privileges to each lease user rewrites the table's ACL
// row in pg_class for every lease. Concurrent grants then fail with "tuple concurrently
// updated" or deadlocks, and the ACL row cannot hold more than about 2,400 grantees. A
// lease user that is only a member of the group costs one pg_auth_members row, so creating
// and dropping users never touches the tables' catalog rows.
//
// The admin need not be a superuser: CREATEROLE plus membership in pg_signal_backend is
// enough, provided it may grant the target's privileges (owner or WITH GRANT OPTION).
// Requires PostgreSQL 14 or later (pg_terminate_backend with a timeout).
package postgres

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/internal/turns"
	"github.com/syvault/syvault/workers/driver"
)

var _ driver.Driver = (*Driver)(nil)

const (
	// terminateWaitMillis is how long pg_terminate_backend waits for each backend to exit.
	terminateWaitMillis = 5000
	// lockTimeout prefixes the statements that alter or drop a lease user, those that
	// set a group's grants and those that remove a group. A lock they wait for longer is
	// someone else's to give back: a transaction of the user that changed its own
	// password (a revocation ends its session first; a prepared one is rolled back, then
	// the drop goes on), or a session using a table the user owns.
	// Waiting on would hold one of the target's admin connections and, behind REASSIGN
	// OWNED's exclusive lock, every later query of that table; the statement fails
	// instead, and a revocation is retried with backoff. A target's grants take it too: a
	// GRANT waits for a transaction that changed the table (a migration's TRUNCATE), and
	// a PUT waiting on one would hold the group's lock, and the creates behind it, in
	// its process.
	lockTimeout = "SET LOCAL lock_timeout = '2s'; "
	// maintenanceDB is where role-level statements run when the target's own database
	// has been dropped; every PostgreSQL cluster has it.
	maintenanceDB = "postgres"
	// groupPrefix prefixes the group role of a target: syvault_<record uid>.
	groupPrefix = "syvault_"
	// maxIdentifier is PostgreSQL's NAMEDATALEN-1: longer names are silently truncated,
	// which would make the role we create differ from the one we later look up.
	maxIdentifier = 63
)

// Driver is the PostgreSQL driver.Driver. It keeps one small pgx pool per (target pool
// key, database), created on first use, because a grant's database may differ from the
// target's. It is safe for concurrent use; after Close every method fails.
type Driver struct {
	logger *slog.Logger

	mu     sync.Mutex
	pools  map[poolID]*pgxpool.Pool
	groups map[string]*sync.Mutex // serialises group set-up per (pool key, group)
	closed bool

	renewals turns.Keys // one renewal of a role at a time in this process
	removals turns.Keys // one removal of a group at a time in this process
}

type poolID struct {
	key      string
	database string
}

// New returns a Driver that logs to logger (nil discards). It opens no connection.
func New(logger *slog.Logger) *Driver {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Driver{
		logger: logger,
		pools:  make(map[poolID]*pgxpool.Pool),
		groups: make(map[string]*sync.Mutex),
	}
}

// Close closes every admin pool, waiting for connections in use to be released. It is
// idempotent; methods called afterwards fail with EInternal.
func (d *Driver) Close() error {
	d.mu.Lock()
	pools := d.pools
	d.pools = make(map[poolID]*pgxpool.Pool)
	d.closed = true
	d.mu.Unlock()
	for _, p := range pools {
		p.Close()
	}
	return nil
}

var errClosed = errors.New("driver closed")

// pool returns the admin pool for conn's target and database, creating it on first use.
// Creating a pool opens no connection: connection and login errors surface on Acquire.
func (d *Driver) pool(c driver.Conn, database string) (*pgxpool.Pool, error) {
	if c.PoolKey == "" {
		return nil, errors.New("conn has no pool key")
	}
	id := poolID{key: c.PoolKey, database: database}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errClosed
	}
	if p, ok := d.pools[id]; ok {
		return p, nil
	}
	cfg, err := poolConfig(c, database)
	if err != nil {
		return nil, err
	}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("new pool: %w", err)
	}
	d.pools[id] = p
	return p, nil
}

// acquire returns an admin connection to database; a failure is the target's
// unavailability, since the pool only fails when it cannot connect or log in.
func (d *Driver) acquire(ctx context.Context, c driver.Conn, database string) (*pgxpool.Conn, error) {
	p, err := d.pool(c, database)
	if err != nil {
		return nil, err
	}
	conn, err := p.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to database %q: %w", database, err)
	}
	return conn, nil
}

// poolConfig builds the pool configuration from structs, never from a connection string
// holding the password. ParseConfig("") only supplies pgx's defaults; every field that
// names the server, the credentials or TLS is then set here, overriding whatever PG*
// environment variables ParseConfig read.
func poolConfig(c driver.Conn, database string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig("")
	if err != nil {
		return nil, fmt.Errorf("default config: %w", err)
	}
	cc := cfg.ConnConfig
	cc.Host = c.Host
	cc.Port = 5432
	if c.Port != 0 {
		if c.Port < 0 || c.Port > 65535 {
			return nil, fmt.Errorf("port %d out of range", c.Port)
		}
		cc.Port = uint16(c.Port)
	}
	cc.Database = database
	cc.User = c.Username
	cc.Password = c.Password
	cc.ConnectTimeout = driver.ConnectTimeout
	cc.Fallbacks = nil
	cc.ValidateConnect = nil
	// The admin's sessions resolve names in pg_catalog alone (pg_temp, which it never
	// uses, last): a function or operator a lease user planted in a schema it may create
	// in, closer in signature than the built-in it shadows, can never run as the admin.
	// Every statement also qualifies what it calls, so this is the second line.
	//
	// Prepared statements are planned at each call, for the catalog as it is then: by
	// default a session plans one once for all its calls after the fifth, and the batched
	// drop's look-up of its users, first run while pg_authid was a few pages long, kept
	// a plan that reads every role as the roles grew (TestDriver_NoPlanOutlivesItsCall).
	// The statements stay prepared: sending the look-up as text planned at each call
	// cost PostgreSQL more CPU per drop, this did not (BENCHMARKS, runs T and W).
	cc.RuntimeParams = map[string]string{
		"application_name": "syvault",
		"search_path":      "pg_catalog, pg_temp",
		"plan_cache_mode":  "force_custom_plan",
	}
	tlsConfig, err := tlsConfig(c)
	if err != nil {
		return nil, err
	}
	cc.TLSConfig = tlsConfig
	cfg.MaxConns = driver.MaxAdminConns
	cfg.MinConns = 0
	return cfg, nil
}

// tlsConfig maps tls_mode onto libpq's sslmode meanings: disable sends no SSLRequest,
// require encrypts without checking the certificate, verify-full checks the chain
// (against CACert when given, else the system roots) and the host name.
func tlsConfig(c driver.Conn) (*tls.Config, error) {
	switch c.TLSMode {
	case "", events.TLSDisable:
		return nil, nil
	case events.TLSRequire:
		return &tls.Config{InsecureSkipVerify: true, ServerName: c.Host}, nil //nolint:gosec // sslmode=require does not verify, by definition
	case events.TLSVerifyFull:
		cfg := &tls.Config{ServerName: c.Host, MinVersion: tls.VersionTLS12}
		if c.CACert != "" {
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM([]byte(c.CACert)) {
				return nil, errors.New("ca_cert holds no PEM certificate")
			}
			cfg.RootCAs = roots
		}
		return cfg, nil
	default:
		return nil, fmt.Errorf("unknown tls_mode %q", c.TLSMode)
	}
}

// groupName is the group role of a target.
func groupName(recordUID string) (string, error) {
	if recordUID == "" {
		return "", errors.New("no record uid")
	}
	name := groupPrefix + recordUID
	if err := checkIdentifier(name); err != nil {
		return "", fmt.Errorf("group role: %w", err)
	}
	return name, nil
}

// checkIdentifier rejects names PostgreSQL would alter: empty, NUL (which Sanitize
// silently strips) and longer than 63 bytes (which the server silently truncates).
func checkIdentifier(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > maxIdentifier:
		return fmt.Errorf("name %q longer than %d bytes", name, maxIdentifier)
	}
	for i := 0; i < len(name); i++ {
		if name[i] == 0 {
			return errors.New("name holds a NUL byte")
		}
	}
	return nil
}

func ident(parts ...string) string { return pgx.Identifier(parts).Sanitize() }

// groupLock returns the mutex serialising set-up of one group in this process. Two
// processes may still race; the grant retries absorb that.
func (d *Driver) groupLock(poolKey, group string) *sync.Mutex {
	key := poolKey + "\x00" + group
	d.mu.Lock()
	defer d.mu.Unlock()
	m, ok := d.groups[key]
	if !ok {
		m = new(sync.Mutex)
		d.groups[key] = m
	}
	return m
}

// roleOID returns the oid of the role named name, or ok=false when there is none.
func roleOID(ctx context.Context, q querier, name string) (oid uint32, ok bool, err error) {
	err = q.QueryRow(ctx, "SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = $1", name).Scan(&oid)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("look up role %q: %w", name, err)
	}
	return oid, true, nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}
