package mysql_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
	"github.com/syvault/syvault/workers/drivertest"
	"github.com/syvault/syvault/workers/mysql"
)

// TestDriver_RevocationEndsASessionInADefinerRoutine: while a session runs a SQL
// SECURITY DEFINER routine (or a DEFINER trigger), MariaDB lists it in PROCESSLIST under
// the definer's name, not its login's. A lease session inside such a routine at its
// revocation was not found: the drop reported success, and once the routine returned
// the session worked on as the dropped user, with the database-wide grants it had
// cached. Such a session is now ended once it shows as the dropped user again.
func TestDriver_RevocationEndsASessionInADefinerRoutine(t *testing.T) {
	s, sc, d, admin := setUp(t)
	ctx := t.Context()

	// What an application's migration account might have left: a routine that runs as
	// its definer, for as long as its caller asks.
	definer := "vf_definer_" + strings.ToLower(rand.Text()[:8])
	for _, stmt := range []string{
		"CREATE USER '" + definer + "'@'%' ACCOUNT LOCK",
		"GRANT EXECUTE ON `" + strings.ReplaceAll(sc.Database, "_", `\_`) + "`.* TO '" + definer + "'@'%'",
		"GRANT EXECUTE ON `" + strings.ReplaceAll(sc.Database, "_", `\_`) + "`.* TO '" + s.adminName + "'@'%' WITH GRANT OPTION",
		"CREATE DEFINER = '" + definer + "'@'%' PROCEDURE `" + sc.Database + "`.report(secs DOUBLE) SQL SECURITY DEFINER DO SLEEP(secs)",
	} {
		if _, err := s.root.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	t.Cleanup(func() { _, _ = s.root.ExecContext(context.Background(), "DROP USER IF EXISTS '"+definer+"'@'%'") })

	grants := []events.Grant{{Database: sc.Database, Privileges: []string{"SELECT", "INSERT", "EXECUTE"}}}
	user, password := newUser(t, d, admin, grants)
	_, sess, id := pinnedSession(t, s.addr, user, password, sc.Database)
	called := make(chan error, 1)
	go func() { _, err := sess.ExecContext(ctx, "CALL report(3)"); called <- err }()
	listed := func() (string, bool) {
		var who string
		err := s.root.QueryRowContext(ctx, "SELECT USER FROM information_schema.PROCESSLIST WHERE ID = ?", id).Scan(&who)
		if errors.Is(err, sql.ErrNoRows) {
			return "", false
		} else if err != nil {
			t.Fatal(err)
		}
		return who, true
	}
	deadline := time.Now().Add(30 * time.Second)
	for who, _ := listed(); who != definer; who, _ = listed() {
		select {
		case err := <-called:
			t.Fatalf("the routine returned (%v) before the session showed as its definer (it shows as %q)", err, who)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session never showed as the routine's definer (it shows as %q)", who)
		}
		time.Sleep(10 * time.Millisecond)
	}

	if err := d.DropUser(ctx, driver.DropUserRequest{Conn: admin, Username: user}); err != nil {
		t.Fatal(err)
	}
	<-called // the routine returns (or the session was ended in it)
	for who, ok := listed(); ok; who, ok = listed() {
		if time.Now().After(deadline) {
			t.Fatalf("the revoked lease's session lives on, as %q", who)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := sess.ExecContext(ctx, "INSERT INTO granted VALUES (1)"); err == nil {
		t.Error("the revoked lease's session still writes")
	}
}

// setUp is a test's server, scratch database, driver (closed after the test's other
// cleanups, which drop users through it) and admin.
func setUp(t *testing.T) (*server, drivertest.Scratch, *mysql.Driver, driver.Conn) {
	t.Helper()
	s := mustServer(t)
	sc := s.newScratch(t)
	d := mysql.New(nil)
	t.Cleanup(func() { _ = d.Close() })
	return s, sc, d, s.admin()
}

// accounts counts the accounts named user, at any host.
func (s *server) accounts(t *testing.T, user string) int {
	t.Helper()
	var n int
	if err := s.root.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM mysql.user WHERE User = ?", user).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// pinnedSession opens a session of user on database at addr (host:port), closed at the
// end of the test, with the pool it came from and its connection id.
func pinnedSession(t *testing.T, addr, user, password, database string) (*sql.DB, *sql.Conn, uint64) {
	t.Helper()
	db, err := openDB(addr, user, password, database)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var id uint64
	if err := conn.QueryRowContext(t.Context(), "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		t.Fatal(err)
	}
	return db, conn, id
}

// newUser creates a lease user with grants, dropped again at the end of the test.
func newUser(t *testing.T, d *mysql.Driver, admin driver.Conn, grants []events.Grant) (user, password string) {
	t.Helper()
	user, password = drivertest.NewUsername(), drivertest.NewPassword()
	t.Cleanup(func() { _ = d.DropUser(context.Background(), driver.DropUserRequest{Conn: admin, Username: user}) })
	if err := d.CreateUser(t.Context(), driver.CreateUserRequest{Conn: admin, RecordUID: drivertest.NewRecordUID(), Username: user,
		Password: password, ExpiresAt: time.Now().Add(time.Hour), Grants: grants}); err != nil {
		t.Fatal(err)
	}
	return user, password
}

// TestDriver_GrantsNeverCreateAUser: on a MariaDB server whose sql_mode lacks
// NO_AUTO_CREATE_USER (a common setting for older applications: an empty sql_mode), a GRANT
// to a missing account creates it, with no password. A target's PUT regrants its
// leases, and one whose user a revocation had just dropped came back: unlocked,
// passwordless, with the target's grants, under a name its former holder knows.
func TestDriver_GrantsNeverCreateAUser(t *testing.T) {
	s, sc, d, admin := setUp(t)
	ctx := t.Context()
	mysql.SetSQLMode(d, "STRICT_TRANS_TABLES") // before the driver's first connection
	user, uid := drivertest.NewUsername(), drivertest.NewRecordUID()
	t.Cleanup(func() { _, _ = s.root.ExecContext(context.Background(), "DROP USER IF EXISTS '"+user+"'@'%'") })
	if err := d.CreateUser(ctx, driver.CreateUserRequest{Conn: admin, RecordUID: uid, Username: user,
		Password: drivertest.NewPassword(), ExpiresAt: time.Now().Add(time.Hour), Grants: sc.Grants}); err != nil {
		t.Fatal(err)
	}
	if err := d.DropUser(ctx, driver.DropUserRequest{Conn: admin, Username: user}); err != nil {
		t.Fatal(err)
	}
	// The PUT's regrant of a lease revoked meanwhile.
	if err := d.UpdateUser(ctx, driver.UpdateUserRequest{Conn: admin, RecordUID: uid, Username: user, Grants: sc.Grants}); err != nil {
		t.Fatalf("UpdateUser of a dropped user: %v", err)
	}
	n := s.accounts(t, user)
	if n != 0 {
		sess, err := s.login(ctx, user, "", sc.Database)
		if err == nil {
			err = sess.Exec(ctx, "SELECT id FROM granted")
			sess.Close()
		}
		t.Fatalf("the dropped user was made again by a GRANT (a login with no password: %v)", err)
	}
}

// TestDriver_RevocationDoesNotWaitOnARollback: a killed session rolls back its open
// transaction before it goes, listed as Killed meanwhile, and a lease decides how large
// that transaction is. The drop waited for every listed session to go, and gave up
// after about two seconds ("1 still running") at every attempt until the rollback
// ended, its user left in place. A killed session runs nothing more: the drop goes on.
func TestDriver_RevocationDoesNotWaitOnARollback(t *testing.T) {
	s, sc, d, admin := setUp(t)
	ctx := t.Context()
	for _, stmt := range []string{
		"CREATE TABLE `" + sc.Database + "`.ten (id int) ENGINE=InnoDB",
		// Secondary indexes make a rollback slow, row by row.
		"CREATE TABLE `" + sc.Database + "`.wide (a int, b int, c int, d int, KEY (b), KEY (c), KEY (d), KEY (b, c)) ENGINE=InnoDB",
	} {
		if _, err := s.root.ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.root.ExecContext(ctx, "INSERT INTO `"+sc.Database+"`.ten VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)"); err != nil {
		t.Fatal(err)
	}
	grants := []events.Grant{{Database: sc.Database, Privileges: []string{"SELECT", "INSERT"}}}
	user, password := newUser(t, d, admin, grants)
	sess, err := s.login(ctx, user, password, sc.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if err := sess.Exec(ctx, "START TRANSACTION"); err != nil {
		t.Fatal(err)
	}
	if err := sess.Exec(ctx, "INSERT INTO wide SELECT a.id, RAND() * 1e9, RAND() * 1e9, RAND() * 1e9 FROM ten a, ten b, ten c, ten d, ten e, ten f WHERE f.id < 3"); err != nil {
		t.Fatal(err)
	}
	if err := d.DropUser(ctx, driver.DropUserRequest{Conn: admin, Username: user}); err != nil {
		t.Fatalf("revoke a user whose session rolls back a large transaction: %v", err)
	}
	n := s.accounts(t, user)
	if n != 0 {
		t.Errorf("%s still exists", user)
	}
}

// TestDriver_RevocationEndsASessionMarkedKilledByItsOwnUser: MariaDB lists a session as
// Killed once any KILL reached it, KILL QUERY included, which leaves the connection open
// and idle: a lease may send it to its own idle session. A revocation that counted every
// Killed session as ending would never end that one.
func TestDriver_RevocationEndsASessionMarkedKilledByItsOwnUser(t *testing.T) {
	s, sc, d, admin := setUp(t)
	ctx := t.Context()
	grants := []events.Grant{{Database: sc.Database, Privileges: []string{"SELECT", "INSERT"}}}
	user, password := newUser(t, d, admin, grants)
	db, hidden, id := pinnedSession(t, s.addr, user, password, sc.Database)
	other, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.ExecContext(ctx, fmt.Sprintf("KILL QUERY %d", id)); err != nil {
		t.Fatal(err)
	}
	other.Close()
	var command string
	if err := s.root.QueryRowContext(ctx, "SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = ?", id).Scan(&command); err != nil {
		t.Fatal(err)
	}
	if command != "Killed" {
		t.Skipf("this server lists an idle session KILL QUERY reached as %q, not Killed (MariaDB does; MySQL 8 does not)", command)
	}

	if err := d.DropUser(ctx, driver.DropUserRequest{Conn: admin, Username: user}); err != nil {
		t.Fatal(err)
	}
	if _, err := hidden.ExecContext(ctx, "INSERT INTO granted VALUES (1)"); err == nil {
		t.Error("the revoked lease's session still writes")
	}
}
