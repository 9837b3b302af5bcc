package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
	"github.com/syvault/syvault/workers/drivertest"
	"github.com/syvault/syvault/workers/mysql"
)

// root logs in to the private server as root, over its socket.
func (s *tlsServer) root(t *testing.T) *sql.DB {
	t.Helper()
	cfg := gomysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.User = "unix", filepath.Join(s.dir, "sock"), "root"
	cfg.Logger = nopLogger{}
	c, err := gomysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// A backup that holds FLUSH TABLES WITH READ LOCK (mysqldump --lock-all-tables) makes
// MariaDB's account statements wait for as long as it runs, lock_wait_timeout or not. A
// revocation meanwhile must still end the user's sessions, and say what it waits for,
// rather than leave the user working and fail at its deadline blaming nothing; once the
// lock goes, the revocation's retry drops the user. A create meanwhile fails within seconds,
// saying why, rather than at its deadline. The server is a private one: the lock stops
// every write on its server.
func TestDriver_RevocationDuringABackupsReadLock(t *testing.T) {
	s := startTLSServer(t)
	d := mysql.New(nil)
	t.Cleanup(func() { _ = d.Close() })
	ctx := t.Context()
	conn := s.conn("localhost", events.TLSVerifyFull, s.caPEM, "backup")
	uid := drivertest.NewRecordUID()
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: conn, RecordUID: uid, Grants: s.grants()}); err != nil {
		t.Fatal(err)
	}
	user, password := newUser(t, d, conn, s.grants())
	_, session, _ := pinnedSession(t, fmt.Sprintf("127.0.0.1:%d", s.port), user, password, s.database)
	if _, err := session.ExecContext(ctx, "SELECT COUNT(*) FROM granted"); err != nil {
		t.Fatal(err)
	}

	root := s.root(t)
	backup, err := root.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer backup.Close()
	if _, err := backup.ExecContext(ctx, "FLUSH TABLES WITH READ LOCK"); err != nil {
		t.Fatal(err)
	}
	drop := driver.DropUserRequest{Conn: conn, Username: user, Grants: s.grants()}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = d.DropUser(dctx, drop)
	cancel()
	var e *events.Error
	// target_unavailable: the revocation's answer then says it is recorded and retried.
	if !errors.As(err, &e) || e.Code != events.ETargetUnavailable || !strings.Contains(e.Message, "global read lock") ||
		!strings.Contains(e.Message, "sessions were ended") {
		t.Fatalf("a revocation under the lock failed with %v; want %s naming the global read lock", err, events.ETargetUnavailable)
	}
	if strings.Contains(err.Error(), s.adminPW) || strings.Contains(err.Error(), password) {
		t.Fatal("the error holds a password")
	}
	if _, err := session.ExecContext(ctx, "SELECT COUNT(*) FROM granted"); err == nil {
		t.Fatal("the revoked user's session still works under the backup's lock")
	}

	// A create meanwhile fails at once, saying why, and leaves no account.
	other := drivertest.NewUsername()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = d.CreateUser(cctx, driver.CreateUserRequest{Conn: conn, RecordUID: uid, Username: other, Password: drivertest.NewPassword(),
		ExpiresAt: time.Now().Add(time.Minute), Grants: s.grants()})
	cancel()
	if !errors.As(err, &e) || e.Code != events.ETargetUnavailable || !strings.Contains(e.Message, "global read lock") {
		t.Fatalf("a create under the lock failed with %v; want %s naming the global read lock", err, events.ETargetUnavailable)
	}

	if _, err := backup.ExecContext(ctx, "UNLOCK TABLES"); err != nil {
		t.Fatal(err)
	}
	if err := d.DropUser(ctx, drop); err != nil {
		t.Fatalf("the revocation's retry after the lock: %v", err)
	}
	var n int
	if err := root.QueryRowContext(ctx, "SELECT COUNT(*) FROM mysql.user WHERE User IN (?, ?)", user, other).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d accounts named %s or %s after the lock (%v)", n, user, other, err)
	}
}
