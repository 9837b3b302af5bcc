package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Every lease user a test server created must be gone once the package's tests end:
// a test that leaves one behind (a cleanup that ran in the wrong order, a revocation
// that could not reach its target) fails the run, and the user is dropped so the shared
// databases stay clean for the next.
var created = struct {
	sync.Mutex
	users map[string]bool
}{users: map[string]bool{}}

var userCreated = regexp.MustCompile(`msg="user created".* username=(vf_tmp_[a-z0-9]+)`)

// noteCreatedUsers records the lease users a server's log says it created.
func noteCreatedUsers(log string) {
	created.Lock()
	defer created.Unlock()
	for _, m := range userCreated.FindAllStringSubmatch(log, -1) {
		created.users[m[1]] = true
	}
}

func TestMain(m *testing.M) {
	applyMemoryLimit = func(string, *slog.Logger) {} // a server started by run() is this process
	code := m.Run()
	if left := dropLeftUsers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: lease users left in the shared databases after the tests (now dropped): %v\n", left)
		code = 1
	}
	os.Exit(code)
}

// dropLeftUsers drops, and returns, the created lease users that still exist in the local
// PostgreSQL and MariaDB. A database that cannot be reached is not checked: the tests that
// need it have already skipped or failed.
func dropLeftUsers() []string {
	created.Lock()
	users := make([]string, 0, len(created.users))
	for u := range created.users {
		users = append(users, u)
	}
	created.Unlock()
	if len(users) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var left []string
	if c, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"); err == nil {
		rows, _ := c.Query(ctx, "SELECT rolname FROM pg_roles WHERE rolname = ANY($1)", users)
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err == nil {
			for _, u := range names {
				left = append(left, "postgresql:"+u)
				_, _ = c.Exec(ctx, "DROP OWNED BY "+pgx.Identifier{u}.Sanitize())
				_, _ = c.Exec(ctx, "DROP ROLE "+pgx.Identifier{u}.Sanitize())
			}
			_, _ = c.Exec(ctx, dropIdleGroups)
		}
		c.Close(ctx)
	}
	if db, err := sql.Open("mysql", "root@tcp(127.0.0.1:3306)/"); err == nil {
		for _, u := range users {
			var n int
			if db.QueryRowContext(ctx, "SELECT COUNT(*) FROM mysql.user WHERE User = ?", u).Scan(&n) == nil && n > 0 {
				left = append(left, "mysql:"+u)
				_, _ = db.ExecContext(ctx, "DROP USER IF EXISTS '"+u+"'@'%'")
			}
		}
		db.Close()
	}
	slices.Sort(left)
	return left
}
