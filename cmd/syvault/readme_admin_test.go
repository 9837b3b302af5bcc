package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/syvault/syvault/http/client"
)

// TestReadme_PreparingTarget: an admin made with exactly the README's "Preparing a target"
// statements (names substituted) may register a target and run a lease's whole life on
// it, on both engines: create, a login that holds the granted privileges and nothing else,
// renew, revoke with an open session, and expiry. Each of those statements is needed:
// without any one of them, registration is refused with a message naming the right.
func TestReadme_PreparingTarget(t *testing.T) {
	for _, mk := range []func(testing.TB) engine{postgresEngine, mysqlEngine} {
		eng := mk(t)
		t.Run(eng.name, func(t *testing.T) {
			ctx := context.Background()
			base := eng.target(t)
			start := "postgres"
			if eng.name == "mysql" {
				start = ""
			}
			// readmeAdminTarget makes an admin with stmts and returns base registered as it.
			readmeAdminTarget := func(t *testing.T, edit func([]string) []string) (client.Target, string) {
				n := adminNames{Admin: "sv_readme_" + strings.ToLower(randomSecret()[:8]), Password: "readme-" + randomSecret(),
					Database: base.Database, Schema: "public"}
				drop := "DROP ROLE IF EXISTS " + n.Admin
				if eng.name == "mysql" {
					drop = "DROP USER IF EXISTS '" + n.Admin + "'@'%'"
				}
				// Runs while the scratch database still exists (its cleanup is the
				// parent test's): what the admin holds there goes first.
				t.Cleanup(func() {
					if eng.name == "postgresql" {
						_ = eng.adminIn(base.Database, "DROP OWNED BY "+n.Admin)
					}
					eng.dropMarkerRoles(n.Admin)
					_ = eng.admin(context.Background(), drop)
				})
				stmts := adminStatements(t, eng.name, n)
				if edit != nil {
					stmts = edit(stmts)
				}
				runAdminStatements(t, stmts, start, eng.adminIn)
				tg := base
				tg.Name = "readme-" + n.Admin
				tg.AdminUsername, tg.AdminPassword = n.Admin, n.Password
				tg.Grants = []client.Grant{{Database: base.Database, Tables: []string{"granted"},
					Privileges: strings.Split(readmePrivileges, ", ")}}
				if eng.name == "postgresql" {
					tg.Grants[0].Schema = "public"
				}
				return tg, n.Admin
			}

			t.Run("a lease's life", func(t *testing.T) {
				srv := mustServer(t, "", nil)
				admin := srv.admin(t)
				tg, _ := readmeAdminTarget(t, nil)
				target := mustRegister(t, admin, tg)

				lease := mustLease(t, admin, target.RecordUID, 600)
				s, err := eng.login(ctx, lease.ConnectionString)
				if err != nil {
					t.Fatalf("login with the lease: %v", err)
				}
				defer s.Close()
				for _, q := range []string{"INSERT INTO granted VALUES (1, 'a')", "UPDATE granted SET v = 'b'",
					"SELECT * FROM granted", "DELETE FROM granted"} {
					if err := s.Exec(ctx, q); err != nil {
						t.Fatalf("%s with a granted privilege: %v", q, err)
					}
				}
				for _, q := range []string{"SELECT * FROM secret", "CREATE TABLE mine (id int)"} {
					if err := s.Exec(ctx, q); err == nil {
						t.Fatalf("%s succeeded: the lease holds more than its grants", q)
					}
				}

				renewed, err := admin.RenewLease(ctx, lease.LeaseID, 1200)
				if err != nil {
					t.Fatal(err)
				}
				if !renewed.ExpiresAt.After(lease.ExpiresAt) {
					t.Fatalf("renewed expires_at %v, was %v", renewed.ExpiresAt, lease.ExpiresAt)
				}
				if eng.name == "postgresql" {
					if until := pgValidUntil(t, lease.Username); until.Sub(renewed.ExpiresAt).Abs() > time.Second {
						t.Fatalf("VALID UNTIL %v after the renewal, expires_at %v", until, renewed.ExpiresAt)
					}
				}

				if err := admin.RevokeLease(ctx, lease.LeaseID); err != nil {
					t.Fatal(err)
				}
				if err := s.Exec(ctx, "SELECT * FROM granted"); err == nil {
					t.Fatal("the lease's open session still works after the revocation")
				}
				mustBeGone(t, eng, lease.Username, 0)

				short := mustLease(t, admin, target.RecordUID, 2) // 1 s may expire before its user exists
				mustBeGone(t, eng, short.Username, 20*time.Second)
				eventually(t, 10*time.Second, "lease expired", func() (bool, error) {
					l, err := admin.GetLease(ctx, short.LeaseID)
					return err == nil && l.Status == "expired", err
				})
			})

			t.Run("each statement is needed", func(t *testing.T) {
				srv := mustServer(t, "", nil)
				admin := srv.admin(t)
				n := len(adminStatements(t, eng.name, adminNames{Admin: "x", Password: "x", Database: base.Database}))
				for i := range n {
					var want string
					tg, name := readmeAdminTarget(t, func(stmts []string) []string {
						var out []string
						out, want = withoutRight(t, stmts, i)
						return out
					})
					if want == "" {
						continue // a statement that grants nothing on its own
					}
					_, err := admin.CreateTarget(ctx, tg)
					mustCode(t, err, 422, "target_unverified")
					mustMention(t, err, want)
					mustMention(t, err, name)
				}
				if ts, err := admin.ListTargets(ctx); err != nil || len(ts) != 0 {
					t.Fatalf("targets after the refusals: %v, %v", ts, err)
				}
			})
		})
	}
}

// withoutRight returns stmts with the right that statement i gives taken out, and what a
// refused registration then names; want is empty when statement i gives no right of its
// own (it is kept then).
func withoutRight(t *testing.T, stmts []string, i int) (out []string, want string) {
	t.Helper()
	s := stmts[i]
	if strings.HasPrefix(s, `\connect`) || strings.HasPrefix(s, "CREATE USER") {
		return stmts, ""
	}
	if strings.HasPrefix(s, "CREATE ROLE") && strings.Contains(s, " CREATEROLE") {
		out = append(out, stmts...)
		out[i] = strings.Replace(s, " CREATEROLE", "", 1)
		return out, "CREATEROLE"
	}
	// A GRANT statement, by what it names, and what a registration without it names.
	for _, g := range []struct{ names, want string }{
		{"pg_signal_backend", "pg_signal_backend"},
		{"ON DATABASE", "CONNECT on the database"},
		{"ON SCHEMA", "USAGE on the schema"},
		{"ON ALL TABLES IN SCHEMA", "on granted WITH GRANT OPTION"},
		{"GRANT CREATE USER ", "CREATE USER"},
		{"GRANT PROCESS ", "PROCESS"},
		{"GRANT CONNECTION ADMIN ", "CONNECTION ADMIN"},
		{"ON mysql.roles_mapping", "SELECT ON mysql.roles_mapping"},
		{"ON mysql.user", "SELECT (User, Host) ON mysql.user"},
		{"GRANT " + readmePrivileges + " ON ", "WITH GRANT OPTION for grant 1"},
	} {
		if strings.HasPrefix(s, "GRANT ") && strings.Contains(s, g.names) {
			out = append(out, stmts[:i]...)
			return append(out, stmts[i+1:]...), g.want
		}
	}
	t.Fatalf("the README's admin statement %q is new to this test: say what a registration without it names", s)
	return nil, ""
}

// pgValidUntil reads a PostgreSQL role's VALID UNTIL.
func pgValidUntil(t *testing.T, role string) time.Time {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var until time.Time
	if err := c.QueryRow(ctx, "SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1", role).Scan(&until); err != nil {
		t.Fatal(err)
	}
	return until
}
