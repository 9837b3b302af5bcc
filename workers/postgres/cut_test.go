package postgres_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/internal/tcpproxy"
	"github.com/syvault/syvault/workers/driver"
	"github.com/syvault/syvault/workers/drivertest"
	"github.com/syvault/syvault/workers/postgres"
)

// mustCutter forwards a local port to the cluster; its Cut cuts every open connection.
func mustCutter(t *testing.T, port int) *tcpproxy.Proxy {
	t.Helper()
	p, err := tcpproxy.Start("127.0.0.1:" + strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// TestCreateUser_CutMidStatement: the admin connection is cut while the server is still
// running the CREATE ROLE (here: waiting on a lock). pgx reports that as "conn closed",
// which it calls safe to retry although the statement went out; the driver used to take
// it for "never sent" and send the CREATE again with the first backend still running, so
// that a retry failing later (a deadline) skipped the undo and left the first backend to
// commit a user nobody accounts for. Now the backend that ran the cut CREATE is ended
// before anything else is sent, and the outcome is consistent: success with the user
// there, or failure with no user. (A chaos run left users behind after connections cut
// mid-create.)
func TestCreateUser_CutMidStatement(t *testing.T) {
	c := mustCluster(t)
	ctx := t.Context()
	s := c.newScratch(t)
	px := mustCutter(t, c.port)
	admin := c.admin()
	admin.Port, admin.PoolKey = px.Port(), "pg-cut-test"
	d := postgres.New(nil)
	t.Cleanup(func() { _ = d.Close() })
	req := func(user string) driver.CreateUserRequest {
		return driver.CreateUserRequest{Conn: admin, RecordUID: "cutTest", Username: user, Password: secret(),
			ExpiresAt: time.Now().Add(time.Hour), Grants: s.Grants}
	}
	// The target's group exists before the lock is taken (its creation would wait too).
	first := drivertest.NewUsername()
	if err := d.CreateUser(ctx, req(first)); err != nil {
		t.Fatal(err)
	}
	dropAtEnd(t, c, first)

	// Holding pg_authid in EXCLUSIVE mode lets logins read it but makes CREATE ROLE wait.
	lock := lockAuthid(t, ctx, c)
	defer lock.Rollback(context.Background())
	user := drivertest.NewUsername()
	dropAtEnd(t, c, user)
	done := make(chan error, 1)
	go func() { done <- d.CreateUser(context.Background(), req(user)) }()

	var pid int32
	waitFor(t, "the CREATE ROLE waiting on the lock", func() (bool, error) {
		err := c.super.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'
			AND query LIKE 'CREATE ROLE %' AND usename = $1`, "vf_admin").Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		return err == nil, err
	})
	px.Cut()
	// The lock is still held: a backend waiting on it notices no closed socket, so only
	// the driver can have ended it.
	waitFor(t, "the backend that ran the cut CREATE to be ended, with the lock still held", func() (bool, error) {
		var n int
		err := c.super.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n)
		return n == 0, err
	})
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var createErr error
	select {
	case createErr = <-done:
	case <-time.After(time.Minute):
		t.Fatal("CreateUser did not return within a minute of the cut")
	}
	var exists bool
	if err := c.super.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", user).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists != (createErr == nil) {
		t.Fatalf("create after the cut: %v, and the user exists: %v; want success with the user or failure without", createErr, exists)
	}
}

// waitFor polls cond every 20 ms for up to 15 s.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok, err := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 15 s for %s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

// TestDropUser_CutMidStatement: the admin connection is cut while a revocation's
// statement is running, and the target cannot be reached again: pgx's "conn closed" is a
// lost connection, so the drop fails as target_unavailable (the API's 502, the
// revocation retried in the background), not as an internal error (500).
func TestDropUser_CutMidStatement(t *testing.T) {
	c := mustCluster(t)
	ctx := t.Context()
	s := c.newScratch(t)
	px := mustCutter(t, c.port)
	admin := c.admin()
	admin.Port, admin.PoolKey = px.Port(), "pg-cut-drop-test"
	d := postgres.New(nil)
	t.Cleanup(func() { _ = d.Close() })
	user := drivertest.NewUsername()
	if err := d.CreateUser(ctx, driver.CreateUserRequest{Conn: admin, RecordUID: "cutDropTest", Username: user, Password: secret(),
		ExpiresAt: time.Now().Add(time.Hour), Grants: s.Grants}); err != nil {
		t.Fatal(err)
	}
	dropAtEnd(t, c, user)
	lock := lockAuthid(t, ctx, c)
	defer lock.Rollback(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- d.DropUser(context.Background(), driver.DropUserRequest{Conn: admin, RecordUID: "cutDropTest", Username: user, Grants: s.Grants})
	}()
	waitFor(t, "the revocation's statement waiting on the lock", func() (bool, error) {
		var n int
		err := c.super.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND usename = $1`, "vf_admin").Scan(&n)
		return n > 0, err
	})
	px.Down() // cut, and the target is now unreachable
	select {
	case err := <-done:
		if code := events.ErrorCode(err); code != events.ETargetUnavailable {
			t.Fatalf("drop cut mid-statement: %v (code %q); want %q", err, code, events.ETargetUnavailable)
		}
	case <-time.After(time.Minute):
		t.Fatal("DropUser did not return within a minute of the cut")
	}
}

// lockAuthid takes pg_authid in EXCLUSIVE mode in a transaction of its own: logins can still
// read it, but a CREATE or DROP ROLE waits until the caller rolls the transaction back.
func lockAuthid(t *testing.T, ctx context.Context, c *cluster) pgx.Tx {
	t.Helper()
	lock, err := c.super.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Exec(ctx, "LOCK TABLE pg_catalog.pg_authid IN EXCLUSIVE MODE"); err != nil {
		_ = lock.Rollback(context.Background())
		t.Fatal(err)
	}
	return lock
}

// dropAtEnd drops role user, if it still exists, when t ends.
func dropAtEnd(t *testing.T, c *cluster, user string) {
	t.Cleanup(func() {
		_, _ = c.super.Exec(context.Background(), "DROP ROLE IF EXISTS "+pgx.Identifier{user}.Sanitize())
	})
}
