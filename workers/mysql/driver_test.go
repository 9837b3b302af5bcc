package mysql_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/internal/logbuf"
	"github.com/syvault/syvault/workers/driver"
	"github.com/syvault/syvault/workers/drivertest"
	"github.com/syvault/syvault/workers/mysql"
)

// The suite runs against the MariaDB (or MySQL) server at MYSQL_ADDR (default
// 127.0.0.1:3306), reached as root without a password to set up a dedicated admin with
// only the rights the driver needs. It is set up on first use and torn down by TestMain.
var (
	serverOnce sync.Once
	theServer  *server
	serverErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if theServer != nil {
		theServer.close()
	}
	os.Exit(code)
}

func mustServer(tb testing.TB) *server {
	tb.Helper()
	serverOnce.Do(func() { theServer, serverErr = startServer() })
	if serverErr != nil {
		drivertest.Skip(tb, serverErr.Error())
	}
	return theServer
}

func TestDriver(t *testing.T) {
	drivertest.Run(t, mustServer(t).harness())
}

type server struct {
	addr             string
	root             *sql.DB
	adminName        string
	adminPW          string
	host             string
	port             int
	mu               sync.Mutex
	scratchDatabases []string
}

type nopLogger struct{}

func (nopLogger) Print(...any) {}

func addr() string {
	if a := os.Getenv("MYSQL_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:3306"
}

func openDB(address, user, password, database string) (*sql.DB, error) {
	cfg := gomysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.User, cfg.Passwd, cfg.DBName = "tcp", address, user, password, database
	cfg.Timeout = 5 * time.Second
	cfg.Logger = nopLogger{}
	connector, err := gomysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(connector), nil
}

func secret() string { return "s'" + rand.Text() }

func startServer() (s *server, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root, err := openDB(addr(), "root", "", "")
	if err != nil {
		return nil, err
	}
	if err := root.PingContext(ctx); err != nil {
		root.Close()
		return nil, fmt.Errorf("MariaDB/MySQL at %s as root: %w", addr(), err)
	}
	s = &server{addr: addr(), root: root, adminName: "vf_admin_" + strings.ToLower(rand.Text()[:8]), adminPW: secret()}
	defer func() {
		if err != nil {
			s.close()
			s = nil
		}
	}()
	if _, err := fmt.Sscanf(strings.Replace(s.addr, ":", " ", 1), "%s %d", &s.host, &s.port); err != nil {
		return s, fmt.Errorf("parse MYSQL_ADDR: %w", err)
	}
	if _, err := root.ExecContext(ctx, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'",
		s.adminName, strings.ReplaceAll(s.adminPW, "'", "''"))); err != nil {
		return s, fmt.Errorf("create admin: %w", err)
	}
	// Only what the driver needs; the scratch database's privileges come WITH GRANT OPTION
	// in newScratch. MariaDB spells it CONNECTION ADMIN, MySQL 8 CONNECTION_ADMIN.
	_, err = root.ExecContext(ctx, "GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO '"+s.adminName+"'@'%'")
	if err != nil {
		_, err = root.ExecContext(ctx, "GRANT CREATE USER, PROCESS, CONNECTION_ADMIN ON *.* TO '"+s.adminName+"'@'%'")
	}
	if err != nil {
		return s, fmt.Errorf("grant admin: %w", err)
	}
	// What reconciliation reads: who holds which marker role, and account names.
	if err := mysql.GrantListing(ctx, root, "'"+s.adminName+"'@'%'"); err != nil {
		return s, fmt.Errorf("grant admin: %w", err)
	}
	return s, nil
}

func (s *server) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s.mu.Lock()
	dbs := s.scratchDatabases
	s.mu.Unlock()
	for _, db := range dbs {
		_, _ = s.root.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+db+"`")
	}
	drivertest.DropMarkerRoles(s.root, s.adminName)
	_, _ = s.root.ExecContext(ctx, "DROP USER IF EXISTS '"+s.adminName+"'@'%'")
	s.root.Close()
}

func (s *server) admin() driver.Conn {
	return driver.Conn{
		PoolKey: "mysql-test-" + s.adminName, Host: s.host, Port: s.port,
		Username: s.adminName, Password: s.adminPW, TLSMode: events.TLSDisable,
	}
}

// newScratch makes a database with tables granted and denied, on which the admin holds
// SELECT, INSERT, UPDATE, DELETE and CREATE WITH GRANT OPTION, and not DROP: the
// ungrantable privilege.
func (s *server) newScratch(tb testing.TB) drivertest.Scratch {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := "vf_scratch_" + strings.ToLower(rand.Text()[:8])
	for _, stmt := range []string{
		"CREATE DATABASE `" + db + "`",
		"CREATE TABLE `" + db + "`.granted (id integer)",
		"CREATE TABLE `" + db + "`.denied (id integer)",
		"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON `" + strings.ReplaceAll(db, "_", `\_`) + "`.* TO '" +
			s.adminName + "'@'%' WITH GRANT OPTION",
	} {
		if _, err := s.root.ExecContext(ctx, stmt); err != nil {
			tb.Fatalf("%s: %v", stmt, err)
		}
		if strings.HasPrefix(stmt, "CREATE DATABASE") {
			s.mu.Lock()
			s.scratchDatabases = append(s.scratchDatabases, db)
			s.mu.Unlock()
		}
	}
	return drivertest.Scratch{
		Database: db,
		Grants: []events.Grant{{
			Database: db, Tables: []string{"granted"}, Privileges: []string{"SELECT", "INSERT"},
		}},
		Granted:     "granted",
		Denied:      "denied",
		NewTable:    "made_by_user",
		Ungrantable: events.Grant{Database: db, Privileges: []string{"DROP"}},
	}
}

type session struct {
	db   *sql.DB
	conn *sql.Conn
}

func (s session) Exec(ctx context.Context, q string) error {
	_, err := s.conn.ExecContext(ctx, q)
	return err
}

func (s session) Close() error {
	_ = s.conn.Close()
	return s.db.Close()
}

// login opens one pinned connection, so a killed session is seen as killed instead of
// being replaced by database/sql with a fresh login.
func (s *server) login(ctx context.Context, user, password, database string) (drivertest.Session, error) {
	db, err := openDB(s.addr, user, password, database)
	if err != nil {
		return nil, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	return session{db: db, conn: conn}, nil
}

func (s *server) harness() drivertest.Harness {
	return drivertest.Harness{
		NewDriver:  func() driver.Driver { return mysql.New(nil) },
		Admin:      s.admin(),
		NewScratch: s.newScratch,
		Login:      s.login,
		AllowCreate: func(ctx context.Context, sc drivertest.Scratch, user string) error {
			_, err := s.root.ExecContext(ctx, "GRANT CREATE, INSERT ON `"+strings.ReplaceAll(sc.Database, "_", `\_`)+"`.* TO '"+user+"'@'%'")
			return err
		},
		AdminExec: func(ctx context.Context, sc drivertest.Scratch, q string) error {
			db, err := openDB(s.addr, s.adminName, s.adminPW, sc.Database)
			if err != nil {
				return err
			}
			defer db.Close()
			_, err = db.ExecContext(ctx, q)
			return err
		},
		Expires: false,
		RoleExists: func(ctx context.Context, name string) (bool, error) {
			var n int
			err := s.root.QueryRowContext(ctx, "SELECT count(*) FROM mysql.user WHERE User = ?", name).Scan(&n)
			return n > 0, err
		},
	}
}

// TestDriver_AdminWithoutRights checks that Prepare names the missing right.
func TestDriver_AdminWithoutRights(t *testing.T) {
	s := mustServer(t)
	scratch := s.newScratch(t)
	for _, tc := range []struct {
		name    string
		global  string
		missing string
	}{
		{name: "NoCreateUser", global: "PROCESS, CONNECTION ADMIN", missing: "CREATE USER"},
		{name: "NoProcess", global: "CREATE USER, CONNECTION ADMIN", missing: "PROCESS"},
		{name: "NoConnectionAdmin", global: "CREATE USER, PROCESS", missing: "CONNECTION ADMIN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			name, pw := "vf_weak_"+strings.ToLower(rand.Text()[:6]), secret()
			t.Cleanup(func() { _, _ = s.root.Exec("DROP USER IF EXISTS '" + name + "'@'%'") })
			for _, stmt := range []string{
				fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", name, strings.ReplaceAll(pw, "'", "''")),
				"GRANT " + tc.global + " ON *.* TO '" + name + "'@'%'",
				"GRANT SELECT, INSERT ON `" + strings.ReplaceAll(scratch.Database, "_", `\_`) + "`.* TO '" + name + "'@'%' WITH GRANT OPTION",
			} {
				if _, err := s.root.ExecContext(ctx, stmt); err != nil {
					t.Fatalf("%s: %v", stmt, err)
				}
			}
			d := mysql.New(nil)
			t.Cleanup(func() { _ = d.Close() }) // after the cleanups that drop users through it
			conn := s.admin()
			conn.Username, conn.Password, conn.PoolKey = name, pw, "weak-"+name
			uid := drivertest.NewRecordUID()
			err := d.Prepare(ctx, driver.PrepareRequest{Conn: conn, RecordUID: uid, Grants: scratch.Grants, New: true})
			if got := events.ErrorCode(err); got != events.ETargetUnverified {
				t.Fatalf("code = %s; want %s (err: %v)", got, events.ETargetUnverified, err)
			}
			// Refused at any step, the registration leaves no marker role behind.
			if exists, err := s.harness().RoleExists(ctx, "syvault_"+uid); err != nil || exists {
				t.Fatalf("the refused target's marker role syvault_%s is left (%v)", uid, err)
			}
			if strings.Contains(err.Error(), pw) {
				t.Fatalf("error holds the admin password: %v", err)
			}
			if msg := events.ErrorMessage(err); !strings.Contains(msg, tc.missing) || !strings.Contains(msg, "GRANT "+tc.missing) {
				t.Fatalf("the refusal does not name %s with the GRANT that gives it: %s", tc.missing, msg)
			}
		})
	}
}

func BenchmarkCreateDrop(b *testing.B) {
	s := mustServer(b)
	h := s.harness()
	sc := h.NewScratch(b)
	d := mysql.New(nil)
	b.Cleanup(func() { _ = d.Close() })
	uid := drivertest.NewRecordUID()
	if err := d.Prepare(b.Context(), driver.PrepareRequest{Conn: h.Admin, RecordUID: uid, Grants: sc.Grants}); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("c%d", n), func(b *testing.B) {
			drivertest.Bench(b, n, drivertest.DriverOps(d, h.Admin, uid, sc.Grants))
		})
	}
}

// BenchmarkRawSQL runs the statements the driver sends, straight through an admin pool of
// the same size, without the driver's checks and cleanup: the baseline.
func BenchmarkRawSQL(b *testing.B) {
	s := mustServer(b)
	sc := s.newScratch(b)
	admin, err := openDB(s.addr, s.adminName, s.adminPW, "")
	if err != nil {
		b.Fatal(err)
	}
	admin.SetMaxOpenConns(4)
	admin.SetMaxIdleConns(4)
	b.Cleanup(func() { _ = admin.Close() })
	ops := drivertest.Ops{
		Create: func(ctx context.Context, user, password string) error {
			acct := "'" + user + "'@'%'"
			if _, err := admin.ExecContext(ctx, "CREATE USER "+acct+" IDENTIFIED BY '"+strings.ReplaceAll(password, "'", "''")+"'"); err != nil {
				return err
			}
			_, err := admin.ExecContext(ctx, "GRANT SELECT, INSERT ON `"+sc.Database+"`.`granted` TO "+acct)
			return err
		},
		Drop: func(ctx context.Context, user string) error {
			acct := "'" + user + "'@'%'"
			if _, err := admin.ExecContext(ctx, "ALTER USER "+acct+" ACCOUNT LOCK"); err != nil {
				return err
			}
			rows, err := admin.QueryContext(ctx, "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?", user)
			if err != nil {
				return err
			}
			rows.Close()
			_, err = admin.ExecContext(ctx, "DROP USER "+acct)
			return err
		},
	}
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("c%d", n), func(b *testing.B) { drivertest.Bench(b, n, ops) })
	}
}

// TestDriver_MarkerRoleNotGivable: an admin that may not give the target's marker role (a
// role another account made) still creates working lease users, unmarked, with one
// warning per target.
func TestDriver_MarkerRoleNotGivable(t *testing.T) {
	s := mustServer(t)
	scratch := s.newScratch(t)
	ctx := t.Context()
	uid := drivertest.NewRecordUID()
	role := "`syvault_" + uid + "`"
	if _, err := s.root.ExecContext(ctx, "CREATE ROLE "+role); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = s.root.Exec("DROP ROLE IF EXISTS " + role) })
	var logs logbuf.Buffer
	d := mysql.New(slog.New(slog.NewTextHandler(&logs, nil)))
	t.Cleanup(func() { _ = d.Close() })
	for i := range 3 {
		user, pw := "vf_tmp_"+strings.ToLower(rand.Text()[:8]), secret()
		t.Cleanup(func() {
			_ = d.DropUser(context.Background(), driver.DropUserRequest{Conn: s.admin(), RecordUID: uid, Username: user})
		})
		if err := d.CreateUser(ctx, driver.CreateUserRequest{Conn: s.admin(), RecordUID: uid, Username: user, Password: pw, Grants: scratch.Grants}); err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		sess, err := s.login(ctx, user, pw, scratch.Database)
		if err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
		err = sess.Exec(ctx, "INSERT INTO granted VALUES (1)")
		_ = sess.Close()
		if err != nil {
			t.Fatalf("user %d cannot use its grant: %v", i, err)
		}
	}
	if n := strings.Count(logs.String(), "marker role"); n != 1 {
		t.Fatalf("%d warnings about the marker role, want 1:\n%s", n, logs.String())
	}
}

// TestDriver_FailedGrantIsNamed: a create that fails on its second grant is refused with
// that grant named, and leaves no user.
func TestDriver_FailedGrantIsNamed(t *testing.T) {
	s := mustServer(t)
	scratch := s.newScratch(t)
	ctx := t.Context()
	d := mysql.New(nil)
	t.Cleanup(func() { _ = d.Close() })
	bad := scratch.Grants[0]
	bad.Tables = []string{"no_such_table"}
	user, pw := "vf_tmp_"+strings.ToLower(rand.Text()[:8]), secret()
	err := d.CreateUser(ctx, driver.CreateUserRequest{Conn: s.admin(), RecordUID: drivertest.NewRecordUID(), Username: user, Password: pw,
		Grants: []events.Grant{scratch.Grants[0], bad}})
	if events.ErrorCode(err) != events.ETargetUnverified || !strings.Contains(events.ErrorMessage(err), "grant 2") ||
		!strings.Contains(events.ErrorMessage(err), "a table does not exist") {
		t.Fatalf("err = %v; want %s naming grant 2 and its missing table", err, events.ETargetUnverified)
	}
	if strings.Contains(err.Error(), pw) {
		t.Fatalf("error holds the lease password: %v", err)
	}
	if n := s.accounts(t, user); n != 0 {
		t.Fatalf("%d users named %s left", n, user)
	}
}

// TestDriver_ACancelledRegistrationLeavesNoProbe: Prepare verifies the admin's rights
// with a probe user it creates and drops. A registration cancelled meanwhile (its client
// gone, its deadline passed) has its connection closed by the MySQL driver, and the drop
// sent on that connection failed, leaving a vf_probe_ user holding the target's grants.
// Cancelled at points all along a Prepare, none is left, nor a marker role.
func TestDriver_ACancelledRegistrationLeavesNoProbe(t *testing.T) {
	s, scratch, d, uid := newRegistration(t)
	// Probes of other tests' registrations on the shared server come and go; this
	// test's, if left, stay.
	probes := func() int {
		var n int
		if err := s.root.QueryRow(`SELECT count(*) FROM mysql.user WHERE User LIKE 'vf\_probe\_%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := probes()
	if err := d.Prepare(t.Context(), driver.PrepareRequest{Conn: s.admin(), RecordUID: uid, Grants: scratch.Grants, New: true}); err != nil {
		t.Fatal(err)
	}
	// A warm registration of a new target, so that the points below fall along one,
	// its marker role's steps included.
	timed := drivertest.NewRecordUID()
	t.Cleanup(func() {
		_ = d.RemoveTarget(context.Background(), driver.RemoveTargetRequest{Conn: s.admin(), RecordUID: timed, Grants: scratch.Grants})
	})
	start := time.Now()
	if err := d.Prepare(t.Context(), driver.PrepareRequest{Conn: s.admin(), RecordUID: timed, Grants: scratch.Grants, New: true}); err != nil {
		t.Fatal(err)
	}
	whole := time.Since(start)
	const points = 60
	for i := range points {
		// A new target each time: one refused must not leave its marker role either.
		uid := drivertest.NewRecordUID()
		t.Cleanup(func() {
			_ = d.RemoveTarget(context.Background(), driver.RemoveTargetRequest{Conn: s.admin(), RecordUID: uid, Grants: scratch.Grants})
		})
		ctx, cancel := context.WithTimeout(t.Context(), whole*time.Duration(i)/points)
		err := d.Prepare(ctx, driver.PrepareRequest{Conn: s.admin(), RecordUID: uid, Grants: scratch.Grants, New: true})
		cancel()
		if err == nil {
			continue
		}
		if exists, err := s.harness().RoleExists(t.Context(), "syvault_"+uid); err != nil || exists {
			t.Fatalf("a registration cancelled after %d/%d of a Prepare left its marker role (%v)", i, points, err)
		}
	}
	for deadline := time.Now().Add(15 * time.Second); probes() > before; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d probe users left by registrations cancelled along the way", probes()-before)
		}
	}
}

// TestDriver_AVerificationDropsTheProbesLeftBehind: a process killed while it verified a
// target left its probe user, holding the target's grants, for good: nothing named it.
// A verification that passes now drops the probes whose names say they were made over
// an hour ago, and leaves younger ones (a verification in progress) and names of
// another shape alone.
func TestDriver_AVerificationDropsTheProbesLeftBehind(t *testing.T) {
	s, scratch, d, uid := newRegistration(t)
	suffix := strings.ToLower(rand.Text()[:4]) // of this run: tests share the server
	named := func(age time.Duration, shape string) string {
		return "vf_probe_" + strconv.FormatInt(time.Now().Add(-age).Unix(), 36) + shape + suffix
	}
	stale, young, other := named(2*time.Hour, "_abcd"), named(time.Minute, "_abcd"), named(2*time.Hour, "x")
	for _, u := range []string{stale, young, other} {
		if _, err := s.root.ExecContext(t.Context(), "CREATE USER '"+u+"'@'%' IDENTIFIED BY 'Secret-0123456789'"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = s.root.Exec("DROP USER IF EXISTS '" + u + "'@'%'") })
		if _, err := s.root.ExecContext(t.Context(), "GRANT SELECT ON `"+scratch.Grants[0].Database+"`.* TO '"+u+"'@'%'"); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Prepare(t.Context(), driver.PrepareRequest{Conn: s.admin(), RecordUID: uid, Grants: scratch.Grants, New: true}); err != nil {
		t.Fatal(err)
	}
	for u, want := range map[string]int{stale: 0, young: 1, other: 1} {
		if n := s.accounts(t, u); n != want {
			t.Errorf("%d accounts named %s after a verification, want %d", n, u, want)
		}
	}
}

// newRegistration is what a registration test starts from: the server, a scratch
// database, a driver and the record uid of a target whose setup goes at the end.
func newRegistration(t *testing.T) (*server, drivertest.Scratch, *mysql.Driver, string) {
	t.Helper()
	s := mustServer(t)
	scratch := s.newScratch(t)
	d := mysql.New(nil)
	t.Cleanup(func() { _ = d.Close() })
	uid := drivertest.NewRecordUID()
	t.Cleanup(func() {
		_ = d.RemoveTarget(context.Background(), driver.RemoveTargetRequest{Conn: s.admin(), RecordUID: uid, Grants: scratch.Grants})
	})
	return s, scratch, d, uid
}
