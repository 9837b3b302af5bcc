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
//
// The group roles of the tests' PostgreSQL targets are noted too, so that the cleanups
// drop those and only those (see dropIdleGroups).
var created = struct {
	sync.Mutex
	users  map[string]bool
	groups map[string]bool
}{users: map[string]bool{}, groups: map[string]bool{}}

var (
	userCreated      = regexp.MustCompile(`msg="user created".* username=(vf_tmp_[a-z0-9]+)`)
	targetRegistered = regexp.MustCompile(`msg="target registered".* record_uid=([0-9A-Za-z]+) engine=postgresql\b`)
)

// noteCreatedUsers records the lease users a server's log says it created, and the
// group roles of the PostgreSQL targets it registered.
func noteCreatedUsers(log string) {
	created.Lock()
	defer created.Unlock()
	for _, m := range userCreated.FindAllStringSubmatch(log, -1) {
		created.users[m[1]] = true
	}
	for _, m := range targetRegistered.FindAllStringSubmatch(log, -1) {
		created.groups["syvault_"+m[1]] = true
	}
}

// noteScratchGroups records the group roles that hold privileges (or own objects) in the
// scratch database db, before db is dropped and takes what says so with it: the groups
// of targets registered on db by servers whose logs this process does not read (the
// binaries). c is a superuser connection.
func noteScratchGroups(ctx context.Context, c *pgx.Conn, db string) {
	rows, _ := c.Query(ctx, `SELECT DISTINCT a.rolname FROM pg_catalog.pg_shdepend s
		JOIN pg_catalog.pg_authid a ON a.oid = s.refobjid JOIN pg_catalog.pg_database d ON d.datname = $1
		WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass AND a.rolname LIKE 'syvault\_%'
			AND (s.dbid = d.oid OR (s.classid = 'pg_catalog.pg_database'::pg_catalog.regclass AND s.objid = d.oid))`, db)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	created.Lock()
	defer created.Unlock()
	for _, n := range names {
		created.groups[n] = true
	}
}

// dropIdleGroups drops the noted group roles no lease user belongs to any more: they are
// cluster-wide and outlive the scratch databases. Only those: a sweep of every idle
// syvault_ role dropped the group of a target another test (of this package or one run
// beside it on the same server) was preparing at that moment, failing its grant.
func dropIdleGroups(ctx context.Context, c *pgx.Conn) {
	created.Lock()
	groups := make([]string, 0, len(created.groups))
	for g := range created.groups {
		groups = append(groups, g)
	}
	created.Unlock()
	rows, _ := c.Query(ctx, `SELECT g.rolname FROM pg_catalog.pg_roles g WHERE g.rolname = ANY($1) AND NOT g.rolcanlogin
		AND NOT EXISTS (SELECT FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles u ON u.oid = m.member
			WHERE m.roleid = g.oid AND u.rolname LIKE 'vf\_tmp\_%')`, groups)
	idle, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	for _, g := range idle {
		if _, err := c.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{g}.Sanitize()); err == nil {
			created.Lock()
			delete(created.groups, g)
			created.Unlock()
		}
	}
}

// withLocalPostgres runs f with a superuser connection to the local PostgreSQL, when it
// answers.
func withLocalPostgres(f func(ctx context.Context, c *pgx.Conn)) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	if err != nil {
		return
	}
	defer c.Close(ctx)
	f(ctx, c)
}

func TestMain(m *testing.M) {
	applyMemoryLimit = func(string, *slog.Logger) {} // a server started by run() is this process
	code := m.Run()
	if left := dropLeftUsers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: lease users left in the shared databases after the tests (now dropped): %v\n", left)
		code = 1
	}
	withLocalPostgres(dropIdleGroups) // the groups those users were in, too
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
