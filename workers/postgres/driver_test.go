package postgres_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/internal/pgtest"
	"github.com/syvault/syvault/workers/driver"
	"github.com/syvault/syvault/workers/drivertest"
	"github.com/syvault/syvault/workers/postgres"
)

// The suite runs against a private cluster with scram-sha-256 authentication, because the
// machine's shared cluster trusts every local login and would accept a wrong password.
// It is started on first use and stopped by TestMain.
var (
	clusterOnce sync.Once
	theCluster  *cluster
	clusterErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if theCluster != nil {
		theCluster.stop()
	}
	os.Exit(code)
}

// mustCluster returns the running cluster, skipping tb when PostgreSQL is not installed
// (failing instead under CI=true).
func mustCluster(tb testing.TB) *cluster {
	tb.Helper()
	clusterOnce.Do(func() { theCluster, clusterErr = startCluster() })
	if clusterErr != nil {
		drivertest.Skip(tb, clusterErr.Error())
	}
	return theCluster
}

func TestDriver(t *testing.T) {
	drivertest.Run(t, mustCluster(t).harness())
}

const adminRole = "vf_admin"

type cluster struct {
	dir, bin string
	port     int
	superPW  string
	adminPW  string
	super    *pgxpool.Pool       // superuser, database postgres
	cred     *syscall.Credential // the postgres OS user's, when running as root
}

func secret() string { return "s'" + rand.Text() }

func startCluster() (c *cluster, err error) {
	bin := pgtest.Bin()
	if err := pgtest.CheckBin(bin, "initdb", "pg_ctl", "postgres"); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "syvault-pg-")
	if err != nil {
		return nil, err
	}
	c = &cluster{dir: dir, bin: bin, superPW: secret(), adminPW: secret()}
	defer func() {
		if err != nil {
			c.stop()
			c = nil
		}
	}()
	if c.cred, err = pgtest.OSUser("postgres"); err != nil {
		return c, err
	}
	if err := pgtest.MkOwnedDir(dir, c.cred); err != nil {
		return c, err
	}
	if err := pgtest.InitDB(bin, dir, filepath.Join(dir, "data"), c.superPW, c.cred); err != nil {
		return c, err
	}
	if c.port, err = freePort(); err != nil {
		return c, err
	}
	// Prepared transactions are on, as on targets that serve a transaction manager: a
	// lease may leave one behind, and its revocation must not wait on it.
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200 -c max_prepared_transactions=8", c.port, dir)
	if err := c.run("pg_ctl", "-D", filepath.Join(dir, "data"), "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "start"); err != nil {
		return c, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.super, err = pgxpool.NewWithConfig(ctx, c.poolConfig("postgres", c.superPW, "postgres"))
	if err != nil {
		return c, err
	}
	// The admin is deliberately not a superuser: the suite tests the minimal rights.
	_, err = c.super.Exec(ctx, fmt.Sprintf(
		"CREATE ROLE %s LOGIN CREATEROLE PASSWORD %s; GRANT pg_signal_backend TO %s",
		adminRole, literal(c.adminPW), adminRole))
	if err != nil {
		return c, fmt.Errorf("create admin: %w", err)
	}
	return c, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (c *cluster) run(name string, args ...string) error {
	return pgtest.Run(c.cred, append([]string{filepath.Join(c.bin, name)}, args...)...)
}

func (c *cluster) stop() {
	if c.super != nil {
		c.super.Close()
	}
	if c.port != 0 {
		_ = c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w", "stop")
	}
	_ = os.RemoveAll(c.dir)
}

// literal quotes a test secret; the driver's own quoter is tested in quote_test.go.
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func (c *cluster) connConfig(user, password, database string) *pgx.ConnConfig {
	cfg, err := pgx.ParseConfig("")
	if err != nil {
		panic(err)
	}
	cfg.Host, cfg.Port, cfg.User, cfg.Password, cfg.Database = "127.0.0.1", uint16(c.port), user, password, database
	cfg.TLSConfig, cfg.Fallbacks = nil, nil
	return cfg
}

func (c *cluster) poolConfig(user, password, database string) *pgxpool.Config {
	cfg, err := pgxpool.ParseConfig("")
	if err != nil {
		panic(err)
	}
	cfg.ConnConfig = c.connConfig(user, password, database)
	cfg.MaxConns = 4
	return cfg
}

func (c *cluster) admin() driver.Conn {
	return driver.Conn{
		PoolKey: "pg-test-admin", Host: "127.0.0.1", Port: c.port, Database: "postgres",
		Username: adminRole, Password: c.adminPW, TLSMode: events.TLSDisable,
	}
}

// execIn runs sql in database as user.
func (c *cluster) execIn(ctx context.Context, user, password, database, sql string) error {
	conn, err := pgx.ConnectConfig(ctx, c.connConfig(user, password, database))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// newScratch makes a database owned by the admin, with public.granted and public.denied
// created by the admin (so it may grant on them), and other.foreign_t created by the
// superuser, on which the admin holds SELECT without the grant option.
func (c *cluster) newScratch(tb testing.TB) drivertest.Scratch {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := "vf_scratch_" + strings.ToLower(rand.Text()[:8])
	if _, err := c.super.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s OWNER %s", db, adminRole)); err != nil {
		tb.Fatalf("create scratch database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := c.super.Exec(ctx, "DROP DATABASE "+db+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop scratch database: %v", err)
		}
	})
	if err := c.execIn(ctx, adminRole, c.adminPW, db,
		"CREATE TABLE public.granted (id integer); CREATE TABLE public.denied (id integer)"); err != nil {
		tb.Fatalf("create scratch tables: %v", err)
	}
	if err := c.execIn(ctx, "postgres", c.superPW, db, `CREATE SCHEMA other;
		CREATE TABLE other.foreign_t (id integer);
		GRANT USAGE ON SCHEMA other TO `+adminRole+`;
		GRANT SELECT ON other.foreign_t TO `+adminRole); err != nil {
		tb.Fatalf("create foreign table: %v", err)
	}
	return drivertest.Scratch{
		Database: db,
		Schema:   "public",
		Grants: []events.Grant{{
			Database: db, Schema: "public", Tables: []string{"granted"}, Privileges: []string{"SELECT", "INSERT"},
		}},
		Granted:  "public.granted",
		Denied:   "public.denied",
		NewTable: "public.made_by_user",
		Ungrantable: events.Grant{
			Database: db, Schema: "other", Tables: []string{"foreign_t"}, Privileges: []string{"SELECT"},
		},
	}
}

type session struct{ conn *pgx.Conn }

func (s session) Exec(ctx context.Context, sql string) error {
	_, err := s.conn.Exec(ctx, sql)
	return err
}

func (s session) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.conn.Close(ctx)
}

func (c *cluster) harness() drivertest.Harness {
	return drivertest.Harness{
		NewDriver:  func() driver.Driver { return postgres.New(nil) },
		Admin:      c.admin(),
		NewScratch: c.newScratch,
		Login: func(ctx context.Context, user, password, database string) (drivertest.Session, error) {
			conn, err := pgx.ConnectConfig(ctx, c.connConfig(user, password, database))
			if err != nil {
				return nil, err
			}
			return session{conn}, nil
		},
		AllowCreate: func(ctx context.Context, s drivertest.Scratch, user string) error {
			// Granted by the superuser on a schema the admin's database owns, so the
			// grant is recorded as the owner's and the admin's DROP OWNED can revoke it.
			return c.execIn(ctx, "postgres", c.superPW, s.Database,
				"GRANT CREATE ON SCHEMA public TO "+pgx.Identifier{user}.Sanitize())
		},
		AdminExec: func(ctx context.Context, s drivertest.Scratch, sql string) error {
			return c.execIn(ctx, adminRole, c.adminPW, s.Database, sql)
		},
		ActAsUser: "SET ROLE NONE",
		Expires:   true,
		RoleExists: func(ctx context.Context, name string) (bool, error) {
			var n int
			err := c.super.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", name).Scan(&n)
			return n > 0, err
		},
	}
}

// TestDriver_AdminWithoutRights checks that Prepare names the missing right.
func TestDriver_AdminWithoutRights(t *testing.T) {
	c := mustCluster(t)
	ctx := t.Context()
	pw := secret()
	for _, tc := range []struct {
		name, attrs, extra string
	}{
		{name: "NoCreateRole", attrs: "LOGIN", extra: "GRANT pg_signal_backend TO %s"},
		{name: "NoSignalBackend", attrs: "LOGIN CREATEROLE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			role := "vf_weak_" + strings.ToLower(rand.Text()[:6])
			stmt := fmt.Sprintf("CREATE ROLE %s %s PASSWORD %s", role, tc.attrs, literal(pw))
			if tc.extra != "" {
				stmt += "; " + fmt.Sprintf(tc.extra, role)
			}
			if _, err := c.super.Exec(ctx, stmt); err != nil {
				t.Fatal(err)
			}
			d := postgres.New(nil)
			t.Cleanup(func() { _ = d.Close() }) // after the cleanups that drop users through it
			conn := c.admin()
			conn.Username, conn.Password, conn.PoolKey = role, pw, "weak-"+role
			err := d.Prepare(ctx, driver.PrepareRequest{
				Conn: conn, RecordUID: drivertest.NewRecordUID(),
				Grants: []events.Grant{{Database: "postgres", Privileges: []string{"SELECT"}}},
			})
			if got := events.ErrorCode(err); got != events.ETargetUnverified {
				t.Fatalf("code = %s; want %s (err: %v)", got, events.ETargetUnverified, err)
			}
			if strings.Contains(err.Error(), pw) {
				t.Fatalf("error holds the admin password: %v", err)
			}
			t.Logf("message: %s", events.ErrorMessage(err))
		})
	}
}

func TestDriver_Closed(t *testing.T) {
	d := postgres.New(nil)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	err := d.DropUser(t.Context(), driver.DropUserRequest{
		Conn: driver.Conn{PoolKey: "k", Host: "127.0.0.1", Port: 1}, Username: "u",
	})
	if err == nil {
		t.Fatal("DropUser after Close succeeded")
	}
	if errors.Is(err, context.Canceled) {
		t.Fatalf("unexpected: %v", err)
	}
}

func BenchmarkCreateDrop(b *testing.B) {
	c := mustCluster(b)
	h := c.harness()
	s := h.NewScratch(b)
	d := postgres.New(nil)
	b.Cleanup(func() { _ = d.Close() })
	uid := drivertest.NewRecordUID()
	if err := d.Prepare(b.Context(), driver.PrepareRequest{Conn: h.Admin, RecordUID: uid, Grants: s.Grants}); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("c%d", n), func(b *testing.B) {
			drivertest.Bench(b, n, drivertest.DriverOps(d, h.Admin, uid, s.Grants))
		})
	}
}

// BenchmarkRawSQL runs the statements the driver sends, straight through admin pools of
// the same size, without the driver's checks, retries and cleanup: the baseline.
func BenchmarkRawSQL(b *testing.B) {
	c := mustCluster(b)
	h := c.harness()
	s := h.NewScratch(b)
	d := postgres.New(nil)
	b.Cleanup(func() { _ = d.Close() })
	uid := drivertest.NewRecordUID()
	// Prepare (untimed) only makes the group role.
	if err := d.Prepare(b.Context(), driver.PrepareRequest{Conn: h.Admin, RecordUID: uid, Grants: s.Grants}); err != nil {
		b.Fatal(err)
	}
	group := pgx.Identifier{"syvault_" + uid}.Sanitize()
	home, err := pgxpool.NewWithConfig(b.Context(), c.poolConfig(adminRole, c.adminPW, "postgres"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(home.Close)
	scratch, err := pgxpool.NewWithConfig(b.Context(), c.poolConfig(adminRole, c.adminPW, s.Database))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(scratch.Close)
	ops := drivertest.Ops{
		Create: func(ctx context.Context, user, password string) error {
			until := time.Now().Add(time.Hour).UTC().Format("2006-01-02 15:04:05-07:00")
			_, err := home.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s VALID UNTIL '%s' IN ROLE %s ADMIN CURRENT_USER",
				user, literal(password), until, group))
			return err
		},
		Drop: func(ctx context.Context, user string) error {
			if _, err := home.Exec(ctx, "ALTER ROLE "+user+" NOLOGIN"); err != nil {
				return err
			}
			if _, err := home.Exec(ctx, "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = $1", user); err != nil {
				return err
			}
			for _, p := range []*pgxpool.Pool{home, scratch} {
				if _, err := p.Exec(ctx, "REASSIGN OWNED BY "+user+" TO CURRENT_USER; DROP OWNED BY "+user); err != nil {
					return err
				}
			}
			_, err := home.Exec(ctx, "DROP ROLE "+user)
			return err
		},
	}
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("c%d", n), func(b *testing.B) { drivertest.Bench(b, n, ops) })
	}
}
