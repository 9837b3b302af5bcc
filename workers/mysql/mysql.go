// Package mysql is the MySQL and MariaDB driver: it creates lease users as 'name'@'%'
// accounts holding the lease's grants directly, and drops them after ending their
// sessions. Statements are those MariaDB 10.4+ and MySQL 8 share.
//
// Unlike PostgreSQL, granting to each user is cheap here: grants are rows of their own in
// mysql.db / mysql.tables_priv, not an ACL array on the table, so there is no shared row
// to fight over and no group is needed.
//
// The admin needs CREATE USER, PROCESS (to see other users' sessions), CONNECTION ADMIN or
// SUPER (to kill them), and the lease's privileges WITH GRANT OPTION; for reconciliation
// (ListUsers) also SELECT on the role grants and on mysql.user's account names (see
// GrantListing). Each lease user holds its target's marker role (see mark).
package mysql

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
)

var (
	_ driver.Driver     = (*Driver)(nil)
	_ driver.UserLister = (*Driver)(nil)
)

// maxUsername is MySQL 8's limit (MariaDB allows 80): names must fit both.
const maxUsername = 32

// Driver is the MySQL/MariaDB driver.Driver. It keeps one database/sql pool of at most 4
// connections per target pool key, opened on first use. It is safe for concurrent use;
// after Close every method but RenewUser fails.
type Driver struct {
	logger *slog.Logger

	mu     sync.Mutex
	pools  map[string]*sql.DB
	closed bool
	// swept holds, per server and admin (sweepKey), its sweep's target, while it runs.
	swept map[string]sweepTarget
	// stop ends the sweeps; sweeps counts them, for Close to wait on.
	stop   context.CancelFunc
	ctx    context.Context
	sweeps sync.WaitGroup
	// unmarked holds the record uids whose users the admin could not mark, warned once.
	unmarked sync.Map
	// sqlMode, when set, replaces the server's sql_mode in the admin sessions: tests use
	// it to be a server configured otherwise without changing the shared server's.
	sqlMode string
}

// New returns a Driver that logs to logger (nil discards). It opens no connection.
func New(logger *slog.Logger) *Driver {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Driver{logger: logger, pools: make(map[string]*sql.DB), swept: make(map[string]sweepTarget), ctx: ctx, stop: stop}
}

// Close ends the sweeps and closes every admin pool. It is idempotent.
func (d *Driver) Close() error {
	d.mu.Lock()
	d.closed = true // no sweep starts from here on
	d.mu.Unlock()
	d.stop()
	d.sweeps.Wait()
	d.mu.Lock()
	pools := d.pools
	d.pools = make(map[string]*sql.DB)
	d.mu.Unlock()
	var errs []error
	for _, p := range pools {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}

var errClosed = errors.New("driver closed")

// pool returns the admin pool for c, creating it on first use; that opens no connection.
func (d *Driver) pool(c driver.Conn) (*sql.DB, error) {
	if c.PoolKey == "" {
		return nil, errors.New("conn has no pool key")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errClosed
	}
	if p, ok := d.pools[c.PoolKey]; ok {
		return p, nil
	}
	cfg, err := config(c, d.logger)
	if err != nil {
		return nil, err
	}
	if d.sqlMode != "" {
		cfg.Params = map[string]string{"sql_mode": "'" + d.sqlMode + "'"}
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("connector: %w", err)
	}
	p := sql.OpenDB(connector)
	p.SetMaxOpenConns(driver.MaxAdminConns)
	p.SetMaxIdleConns(driver.MaxAdminConns)
	p.SetConnMaxIdleTime(5 * time.Minute)
	d.pools[c.PoolKey] = p
	return p, nil
}

// connect returns one admin connection. Its errors mean the target could not be reached
// or refused the admin, and are marked so.
func (d *Driver) connect(ctx context.Context, c driver.Conn) (*sql.Conn, error) {
	p, err := d.pool(c)
	if err != nil {
		return nil, err
	}
	conn, err := p.Conn(ctx)
	if err != nil {
		return nil, connectError{err}
	}
	return conn, nil
}

// config builds the driver configuration from mysql.Config's fields, never from a DSN
// string holding the password. It goes to mysql.NewConnector rather than through
// FormatDSN and sql.Open, because a custom *tls.Config (verify-full with a CA bundle)
// would otherwise have to be registered in the driver's global TLS registry.
func config(c driver.Conn, logger *slog.Logger) (*mysql.Config, error) {
	addr, err := address(c)
	if err != nil {
		return nil, err
	}
	cfg := mysql.NewConfig()
	cfg.Net = "tcp"
	cfg.Addr = addr
	cfg.User = c.Username
	cfg.Passwd = c.Password
	// No default database: every statement names its database, and a user must still be
	// droppable after the target's database itself was dropped.
	cfg.Timeout = driver.ConnectTimeout
	// Placeholders are filled in by the driver (it escapes per the session's
	// NO_BACKSLASH_ESCAPES status): one round trip per query instead of prepare, execute
	// and close, which tripled the cost of listing a user's sessions.
	cfg.InterpolateParams = true
	cfg.Logger = driverLogger{logger}
	switch c.TLSMode {
	case "", events.TLSDisable:
		cfg.TLSConfig = "false"
	case events.TLSRequire:
		// sslmode=require: encrypted, certificate not checked, by definition.
		cfg.TLS = &tls.Config{InsecureSkipVerify: true} //nolint:gosec
	case events.TLSVerifyFull:
		t := &tls.Config{ServerName: c.Host, MinVersion: tls.VersionTLS12}
		if c.CACert != "" {
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM([]byte(c.CACert)) {
				return nil, errors.New("ca_cert holds no PEM certificate")
			}
			t.RootCAs = roots
		}
		cfg.TLS = t
	default:
		return nil, fmt.Errorf("unknown tls_mode %q", c.TLSMode)
	}
	return cfg, nil
}

// address is c's host:port, 3306 when c names no port.
func address(c driver.Conn) (string, error) {
	port := 3306
	if c.Port != 0 {
		if c.Port < 0 || c.Port > 65535 {
			return "", fmt.Errorf("port %d out of range", c.Port)
		}
		port = c.Port
	}
	return net.JoinHostPort(c.Host, strconv.Itoa(port)), nil
}

// driverLogger sends go-sql-driver's own messages (dropped connections and the like) to
// slog instead of the package-global stderr logger.
type driverLogger struct{ l *slog.Logger }

func (l driverLogger) Print(v ...any) { l.l.Debug("mysql driver", "message", fmt.Sprint(v...)) }

// RemoveTarget drops the target's marker role, the one thing Prepare leaves (lease users
// hold their grants directly), for a target being removed (see driver.Driver); a role
// that does not exist is success.
func (d *Driver) RemoveTarget(ctx context.Context, req driver.RemoveTargetRequest) error {
	const op = "mysql.RemoveTarget"
	role, err := markerRole(req.RecordUID)
	if err != nil {
		return fail(op, err, events.EInternal, "The target's record uid cannot name a marker role.", req.Conn.Password)
	}
	conn, err := d.connect(ctx, req.Conn)
	if err != nil {
		return fail(op, err, events.EInternal, "Could not connect to the target.", req.Conn.Password)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "DROP ROLE IF EXISTS "+role); err != nil {
		return fail(op, err, events.EInternal, "Could not drop the target's marker role.", req.Conn.Password)
	}
	return nil
}
