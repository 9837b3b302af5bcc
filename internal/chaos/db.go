package chaos

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/syvault/syvault/internal/pgtest"
	"github.com/syvault/syvault/internal/tcpproxy"
)

// LeasePrefix starts the name of every database user SyVault makes for a lease;
// SetupPrefix, followed by the target's record uid, names a target's setup role (the
// PostgreSQL group, the MariaDB marker role).
const (
	LeasePrefix = "vf_tmp_"
	SetupPrefix = "syvault_"
)

// adminName is the targets' admin, whose name SetupPrefix also starts.
const adminName = "syvault_admin"

// database is a private database server of the run: its process, the address SyVault
// reaches it by (a proxy the harness can cut), and the harness's own superuser access,
// which goes straight to the server.
type database struct {
	engine string // "postgresql" or "mysql", as the API names it
	*proc
	port    int    // the server's own port
	adminPW string // of syvault_admin, the target's admin (never printed)
	proxy   *tcpproxy.Proxy
	// users lists the lease users that exist now; setups the record uids whose setup
	// role exists.
	users, setups func(ctx context.Context) (map[string]bool, error)
	// login opens and closes a session as user with password.
	login func(ctx context.Context, user, password string) error
	close func()
}

func secret() string { return rand.Text() }

// startPostgres makes a private cluster that checks passwords (scram-sha-256), runs its
// postmaster directly (not through pg_ctl) so that it and its backends share the process
// group SIGSTOP freezes, and prepares the target's admin exactly as the README's
// "A PostgreSQL admin" does, with the database myapp.
func (h *Harness) startPostgres(ctx context.Context) (*database, error) {
	bin := h.cfg.PGBin
	if err := pgtest.CheckBin(bin, "initdb", "postgres"); err != nil {
		return nil, missing(err)
	}
	cred, err := pgtest.OSUser("postgres")
	if err != nil {
		return nil, missing(err)
	}
	dir := filepath.Join(h.dir, "pg")
	if err := pgtest.MkOwnedDir(dir, cred); err != nil {
		return nil, err
	}
	superPW := secret()
	data := filepath.Join(dir, "data")
	if err := pgtest.InitDB(bin, dir, data, superPW, cred); err != nil {
		return nil, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	d := &database{engine: "postgresql", port: ports[0], adminPW: secret()}
	d.proc = &proc{name: "postgresql", cred: cred, logPath: filepath.Join(h.dir, "postgresql.log"),
		argv: []string{filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(d.port), "-k", dir,
			"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", "-c", "fsync=off",
			"-c", "shared_buffers=64MB", "-c", "log_min_messages=fatal"}}
	h.track(d.proc)
	if err := d.start(); err != nil {
		return nil, err
	}
	cfg := func(user, password, database string) *pgx.ConnConfig {
		c, _ := pgx.ParseConfig("")
		c.Host, c.Port, c.User, c.Password, c.Database = "127.0.0.1", uint16(d.port), user, password, database
		c.TLSConfig, c.Fallbacks = nil, nil
		c.ConnectTimeout = 5 * time.Second
		return c
	}
	var super *pgx.Conn
	if err := poll(ctx, 60*time.Second, "PostgreSQL to accept logins", func() error {
		super, err = pgx.ConnectConfig(ctx, cfg("postgres", superPW, "postgres"))
		return err
	}); err != nil {
		return nil, err
	}
	quote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	for _, stmt := range []string{
		"CREATE ROLE syvault_admin LOGIN PASSWORD " + quote(d.adminPW) + " CREATEROLE",
		"GRANT pg_signal_backend TO syvault_admin",
		"CREATE DATABASE myapp",
		"GRANT CONNECT ON DATABASE myapp TO syvault_admin WITH GRANT OPTION",
	} {
		if _, err := super.Exec(ctx, stmt); err != nil {
			super.Close(ctx)
			return nil, scrubbed("postgresql setup", err, d.adminPW, superPW)
		}
	}
	super.Close(ctx)
	myapp, err := pgx.ConnectConfig(ctx, cfg("postgres", superPW, "myapp"))
	if err != nil {
		return nil, err
	}
	for _, stmt := range []string{
		"CREATE TABLE orders (id int, item text)",
		"GRANT USAGE ON SCHEMA public TO syvault_admin WITH GRANT OPTION",
		"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO syvault_admin WITH GRANT OPTION",
	} {
		if _, err := myapp.Exec(ctx, stmt); err != nil {
			myapp.Close(ctx)
			return nil, scrubbed("postgresql setup", err, d.adminPW, superPW)
		}
	}
	myapp.Close(ctx)
	pcfg, _ := pgxpool.ParseConfig("")
	pcfg.ConnConfig = cfg("postgres", superPW, "postgres")
	pcfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	roles := func(ctx context.Context, prefix string) ([]string, error) {
		rows, err := pool.Query(ctx, `SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1) AND rolname <> $2`, prefix, adminName)
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, pgx.RowTo[string])
	}
	d.users = func(ctx context.Context) (map[string]bool, error) {
		names, err := roles(ctx, LeasePrefix)
		return set(names), err
	}
	d.setups = func(ctx context.Context) (map[string]bool, error) {
		names, err := roles(ctx, SetupPrefix)
		return uids(names), err
	}
	d.login = func(ctx context.Context, user, password string) error {
		c, err := pgx.ConnectConfig(ctx, cfg(user, password, "myapp"))
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, "SELECT count(*) FROM orders")
		return err
	}
	d.close = pool.Close
	h.pgSuper = superPW
	return d, nil
}

// startMariaDB makes a private MariaDB (its own datadir, port and socket), run as the
// mysql OS user when root, and its admin with the README's statements.
func (h *Harness) startMariaDB(ctx context.Context) (*database, error) {
	installDB, err := exec.LookPath("mariadb-install-db")
	if err != nil {
		return nil, missing(fmt.Errorf("mariadb-install-db not found on PATH: %w", err))
	}
	server, err := exec.LookPath("mariadbd")
	if err != nil {
		if server, err = exec.LookPath("/usr/sbin/mariadbd"); err != nil {
			return nil, missing(fmt.Errorf("mariadbd not found (PATH or /usr/sbin): %w", err))
		}
	}
	cred, err := pgtest.OSUser("mysql")
	if err != nil {
		return nil, missing(err)
	}
	dir := filepath.Join(h.dir, "mariadb")
	if err := pgtest.MkOwnedDir(dir, cred); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := pgtest.Run(cred, installDB, "--no-defaults", "--datadir="+data, "--auth-root-authentication-method=normal",
		"--skip-test-db", "--skip-name-resolve"); err != nil {
		return nil, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "mysqld.sock")
	d := &database{engine: "mysql", port: ports[0], adminPW: secret()}
	d.proc = &proc{name: "mariadb", cred: cred, logPath: filepath.Join(h.dir, "mariadb.log"),
		argv: []string{server, "--no-defaults", "--datadir=" + data, "--port=" + strconv.Itoa(d.port), "--bind-address=127.0.0.1",
			"--socket=" + sock, "--pid-file=" + filepath.Join(dir, "mariadbd.pid"), "--skip-name-resolve", "--max-connections=500",
			"--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=2", "--skip-log-bin"}}
	h.track(d.proc)
	if err := d.start(); err != nil {
		return nil, err
	}
	rootCfg := gomysql.NewConfig()
	// The driver logs a connection the server dropped (a pause, a restart) before it
	// retries; the checks report what matters themselves.
	rootCfg.Logger = gomysql.Logger(log.New(io.Discard, "", 0))
	rootCfg.User, rootCfg.Net, rootCfg.Addr = "root", "unix", sock
	rootCfg.Timeout = 5 * time.Second
	root := sql.OpenDB(mustConnector(rootCfg))
	root.SetMaxOpenConns(4)
	if err := poll(ctx, 60*time.Second, "MariaDB to accept logins", func() error { return root.PingContext(ctx) }); err != nil {
		root.Close()
		return nil, err
	}
	quote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	for _, stmt := range []string{
		"CREATE DATABASE myapp",
		"CREATE TABLE myapp.orders (id int, item text)",
		"CREATE USER 'syvault_admin'@'%' IDENTIFIED BY " + quote(d.adminPW),
		"GRANT CREATE USER ON *.* TO 'syvault_admin'@'%'",
		"GRANT PROCESS ON *.* TO 'syvault_admin'@'%'",
		"GRANT CONNECTION ADMIN ON *.* TO 'syvault_admin'@'%'",
		"GRANT SELECT ON mysql.roles_mapping TO 'syvault_admin'@'%'",
		"GRANT SELECT (User, Host) ON mysql.user TO 'syvault_admin'@'%'",
		"GRANT SELECT, INSERT, UPDATE, DELETE ON myapp.* TO 'syvault_admin'@'%' WITH GRANT OPTION",
	} {
		if _, err := root.ExecContext(ctx, stmt); err != nil {
			root.Close()
			return nil, scrubbed("mariadb setup", err, d.adminPW)
		}
	}
	accounts := func(ctx context.Context, query string) ([]string, error) {
		rows, err := root.QueryContext(ctx, query)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var names []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				return nil, err
			}
			names = append(names, n)
		}
		return names, rows.Err()
	}
	d.users = func(ctx context.Context) (map[string]bool, error) {
		names, err := accounts(ctx, `SELECT User FROM mysql.user WHERE User LIKE 'vf\_tmp\_%'`)
		return set(names), err
	}
	d.setups = func(ctx context.Context) (map[string]bool, error) {
		names, err := accounts(ctx, `SELECT User FROM mysql.user WHERE is_role = 'Y' AND User LIKE 'syvault\_%'`)
		return uids(names), err
	}
	d.login = func(ctx context.Context, user, password string) error {
		c := gomysql.NewConfig()
		c.User, c.Passwd, c.Net, c.Addr, c.DBName = user, password, "tcp", "127.0.0.1:"+strconv.Itoa(d.port), "myapp"
		c.Timeout = 5 * time.Second
		c.Logger = rootCfg.Logger
		db := sql.OpenDB(mustConnector(c))
		defer db.Close()
		_, err := db.ExecContext(ctx, "SELECT count(*) FROM orders")
		return err
	}
	d.close = func() { root.Close() }
	return d, nil
}

func mustConnector(c *gomysql.Config) driver.Connector {
	conn, err := gomysql.NewConnector(c)
	if err != nil {
		panic(err) // a Config built in code: a programming error
	}
	return conn
}

// scrubbed is err for op with the secrets it might quote (a server's syntax error quotes
// the statement) replaced: no secret reaches the run's output.
func scrubbed(op string, err error, secrets ...string) error {
	text := err.Error()
	for _, s := range secrets {
		text = strings.ReplaceAll(text, s, "<secret>")
	}
	return fmt.Errorf("%s: %s", op, text)
}

func set(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// ErrMissing marks a missing dependency (a database server's binaries, an OS user): the
// caller skips the run, except under CI, where it is a failure.
var ErrMissing = errors.New("missing dependency")

// uids are the record uids of setup roles' names.
func uids(names []string) map[string]bool {
	out := map[string]bool{}
	for _, n := range names {
		out[strings.TrimPrefix(n, SetupPrefix)] = true
	}
	return out
}

func missing(err error) error { return fmt.Errorf("%w: %w", ErrMissing, err) }
