package postgres_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
	"github.com/syvault/syvault/workers/drivertest"
	"github.com/syvault/syvault/workers/postgres"
)

// A lease user may change its own password (ALTER ROLE CURRENT_USER PASSWORD), which
// locks its own pg_authid row until the transaction ends. The revocation's first
// statement, ALTER ROLE ... NOLOGIN, needs that row: these tests hold it from an open
// session and from a prepared transaction, and lock what the user owns, and expect the
// revocation to end all of it.

// dropDeadline bounds a drop in these tests: a drop stuck behind a lock meets it.
const dropDeadline = 30 * time.Second

// holdRoleRow opens a session of l that changes its own password and keeps the
// transaction open.
func holdRoleRow(t *testing.T, c *cluster, l lease, database string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.ConnectConfig(t.Context(), c.connConfig(l.user, l.password, database))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := conn.Exec(t.Context(), "BEGIN; ALTER ROLE CURRENT_USER PASSWORD "+literal(secret())); err != nil {
		t.Fatalf("the lease could not change its own password: %v", err)
	}
	return conn
}

// TestDriver_RevocationEndsASessionHoldingItsRole: a lease session that locked its own
// role row was never ended, because the revocation's NOLOGIN waited for that session's
// transaction before it terminated anything: the drop failed at its deadline, every
// retry did the same, and the session worked on. Now the sessions end first, alone and
// in a batch.
func TestDriver_RevocationEndsASessionHoldingItsRole(t *testing.T) {
	for _, batch := range []bool{false, true} {
		name := map[bool]string{false: "alone", true: "batch"}[batch]
		t.Run(name, func(t *testing.T) {
			c, s, d, admin, uid := setUp(t)
			ctx := t.Context()
			if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants}); err != nil {
				t.Fatal(err)
			}
			leases := []lease{newLease(t, d, admin, uid, s.Grants)}
			if batch {
				leases = append(leases, newLease(t, d, admin, uid, s.Grants), newLease(t, d, admin, uid, s.Grants))
			}
			holder := holdRoleRow(t, c, leases[0], s.Database)

			dctx, cancel := context.WithTimeout(ctx, dropDeadline)
			defer cancel()
			reqs := make([]driver.DropUserRequest, len(leases))
			for i, l := range leases {
				reqs[i] = driver.DropUserRequest{Conn: admin, RecordUID: uid, Username: l.user, Grants: s.Grants}
			}
			for i, err := range d.DropUsers(dctx, reqs) {
				if err != nil {
					t.Errorf("drop %s: %v", leases[i].user, err)
				}
			}
			for _, l := range leases {
				if c.roleExists(t, l.user) {
					t.Errorf("%s still exists", l.user)
				}
			}
			if _, err := holder.Exec(ctx, "SELECT 1"); err == nil {
				t.Error("the session holding its role row outlived the revocation")
			}
		})
	}
}

// TestDriver_RenewalDoesNotWaitOnTheUsersOwnLock: a renewal of a user whose own open
// transaction holds its role row waited, an admin connection held, until its deadline;
// it now fails at once saying why.
func TestDriver_RenewalDoesNotWaitOnTheUsersOwnLock(t *testing.T) {
	c, s, d, admin, uid := setUp(t)
	ctx := t.Context()
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants}); err != nil {
		t.Fatal(err)
	}
	l := newLease(t, d, admin, uid, s.Grants)
	holdRoleRow(t, c, l, s.Database)
	rctx, cancel := context.WithTimeout(ctx, dropDeadline)
	defer cancel()
	err := d.RenewUser(rctx, driver.RenewUserRequest{Conn: admin, Username: l.user, ExpiresAt: time.Now().Add(2 * time.Hour)})
	if err == nil || rctx.Err() != nil || !strings.Contains(events.ErrorMessage(err), "changed its password") {
		t.Fatalf("RenewUser = %v (deadline: %v), want a refusal naming the user's own transaction", err, rctx.Err())
	}
}

// pending returns those of gids that are still prepared transactions.
func (c *cluster) pending(t *testing.T, gids []string) []string {
	t.Helper()
	rows, err := c.super.Query(t.Context(), "SELECT gid FROM pg_prepared_xacts WHERE gid = ANY($1) ORDER BY gid", gids)
	if err != nil {
		t.Fatal(err)
	}
	left, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return left
}

// prepare leaves a prepared transaction of l in database that ran sql, and rolls it back
// as the superuser at the end of the test should the revocation have left it. It
// returns the transaction's gid.
func prepare(t *testing.T, c *cluster, l lease, database, sql string) string {
	t.Helper()
	gid := "lease's " + strings.ToLower(rand.Text()[:10])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.execIn(ctx, "postgres", c.superPW, database, "ROLLBACK PREPARED "+literal(gid))
	})
	if err := c.execIn(t.Context(), l.user, l.password, database, "BEGIN; "+sql+"; PREPARE TRANSACTION "+literal(gid)); err != nil {
		t.Fatalf("prepare %q: %v", sql, err)
	}
	return gid
}

// holdEnv is what a case of TestDriver_RevocationRollsBackPreparedTransactions sets up in.
type holdEnv struct {
	c      *cluster
	d      *postgres.Driver
	admin  driver.Conn
	uid    string
	grants []events.Grant
	l      lease
	s      drivertest.Scratch
}

// TestDriver_RevocationRollsBackPreparedTransactions: a prepared transaction outlives
// its session, so terminating the sessions did not end it. One that locked the user's
// role row kept NOLOGIN waiting (the user could log in for good, its revocation failing
// at every deadline); one that locked a table the user owns kept REASSIGN OWNED waiting;
// one that wrote elsewhere stayed pending with its locks after the user was gone, and
// only a superuser could end it. Revocation now rolls back the user's prepared
// transactions, in whichever database they were prepared, as it ends its sessions; and
// one prepared as the target's group (SET ROLE first makes the group its owner) when it
// changed a role, never another lease's that did not.
func TestDriver_RevocationRollsBackPreparedTransactions(t *testing.T) {
	grants := func(s drivertest.Scratch) []events.Grant {
		return []events.Grant{{Database: s.Database, Schema: "public", Privileges: []string{"SELECT", "INSERT", "CREATE"}}}
	}
	for _, tc := range []struct {
		name  string
		setUp func(t *testing.T, e holdEnv) (gone, kept []string)
	}{
		{"its role row", func(t *testing.T, e holdEnv) (gone, kept []string) {
			return []string{prepare(t, e.c, e.l, e.s.Database, "ALTER ROLE CURRENT_USER PASSWORD "+literal(secret()))}, nil
		}},
		{"its table and others' rows", func(t *testing.T, e holdEnv) (gone, kept []string) {
			if err := e.c.execIn(t.Context(), e.l.user, e.l.password, e.s.Database, "CREATE TABLE public.mine (id int)"); err != nil {
				t.Fatal(err)
			}
			return []string{
				prepare(t, e.c, e.l, e.s.Database, "LOCK TABLE public.mine IN ACCESS EXCLUSIVE MODE"),
				prepare(t, e.c, e.l, e.s.Database, "INSERT INTO public.granted VALUES (1)"),
			}, nil
		}},
		{"its role row, prepared as the group", func(t *testing.T, e holdEnv) (gone, kept []string) {
			// PostgreSQL records as the owner whoever the session is at PREPARE.
			return []string{prepare(t, e.c, e.l, e.s.Database, "ALTER ROLE CURRENT_USER PASSWORD "+literal(secret())+
				"; SET LOCAL ROLE "+pgx.Identifier{e.l.group}.Sanitize())}, nil
		}},
		{"not another lease's, prepared as the group", func(t *testing.T, e holdEnv) (gone, kept []string) {
			other := newLease(t, e.d, e.admin, e.uid, e.grants)
			kept = []string{prepare(t, e.c, other, e.s.Database, "SET LOCAL ROLE "+pgx.Identifier{e.l.group}.Sanitize()+"; INSERT INTO public.granted VALUES (2)")}
			return []string{prepare(t, e.c, e.l, e.s.Database, "INSERT INTO public.granted VALUES (1)")}, kept
		}},
		{"another database", func(t *testing.T, e holdEnv) (gone, kept []string) {
			other := e.c.newScratch(t)
			return []string{
				prepare(t, e.c, e.l, other.Database, "ALTER ROLE CURRENT_USER PASSWORD "+literal(secret())),
				prepare(t, e.c, e.l, "postgres", "SELECT 1"),
			}, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s, d, admin, uid := setUp(t)
			ctx := t.Context()
			if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: grants(s)}); err != nil {
				t.Fatal(err)
			}
			l := newLease(t, d, admin, uid, grants(s))
			gids, kept := tc.setUp(t, holdEnv{c: c, d: d, admin: admin, uid: uid, grants: grants(s), l: l, s: s})

			dctx, cancel := context.WithTimeout(ctx, dropDeadline)
			defer cancel()
			if err := d.DropUser(dctx, driver.DropUserRequest{Conn: admin, RecordUID: uid, Username: l.user, Grants: grants(s)}); err != nil {
				t.Fatalf("DropUser: %v", err)
			}
			if c.roleExists(t, l.user) {
				t.Errorf("%s still exists", l.user)
			}
			if left := c.pending(t, gids); len(left) > 0 {
				t.Errorf("prepared transactions outlived the revocation: %q", left)
			}
			if left := c.pending(t, kept); len(left) != len(kept) {
				t.Errorf("the revocation rolled back another lease's prepared transaction: %d of %d left", len(left), len(kept))
			}
		})
	}
}

// TestDriver_RevocationAfterTheTargetLostCreate: PostgreSQL lets REASSIGN OWNED give a
// function, type or other schema object (not a table) only to a role that may create in
// its schema. A lease that made some while its target granted CREATE, then a PUT that
// took CREATE away, and its revocation failed at every attempt. The drop now lends the
// group CREATE on such schemas for the REASSIGN, in its transaction, and takes it back.
func TestDriver_RevocationAfterTheTargetLostCreate(t *testing.T) {
	c, s, d, admin, uid := setUp(t)
	ctx := t.Context()
	wide := []events.Grant{{Database: s.Database, Schema: "public", Privileges: []string{"SELECT", "CREATE"}}}
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: wide}); err != nil {
		t.Fatal(err)
	}
	l := newLease(t, d, admin, uid, wide)
	if err := c.execIn(ctx, l.user, l.password, s.Database, `SET ROLE NONE;
		CREATE FUNCTION public.made_by_lease() RETURNS int LANGUAGE sql AS 'SELECT 1';
		CREATE TYPE public.mood AS ENUM ('ok'); CREATE TABLE public.kept (id int)`); err != nil {
		t.Fatal(err)
	}
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants}); err != nil {
		t.Fatal(err)
	}
	drop(t, d, admin, uid, l, s.Grants)
	if c.roleExists(t, l.user) {
		t.Fatalf("%s still exists", l.user)
	}
	for what, query := range map[string]string{
		"function": "SELECT pg_get_userbyid(proowner)::text FROM pg_proc WHERE proname = 'made_by_lease'",
		"type":     "SELECT pg_get_userbyid(typowner)::text FROM pg_type WHERE typname = 'mood'",
		"table":    "SELECT tableowner::text FROM pg_tables WHERE tablename = 'kept'",
	} {
		if got := c.owner(t, s.Database, query); got != l.group {
			t.Errorf("the %s is owned by %s; want the group", what, got)
		}
	}
	if got := c.owner(t, s.Database, fmt.Sprintf("SELECT has_schema_privilege(%s, 'public', 'CREATE')::text", literal(l.group))); got != "false" {
		t.Errorf("the group may create in public after the revocation: %s", got)
	}
}

// TestDriver_PutWithLeasesTables: a lease that made a table (a migration) and shared it
// with the group, or shared a temporary table, made every PUT of a schema-wide target
// fail: the admin may neither grant nor revoke on a table it has no right to, and the
// PUT's GRANT ON ALL TABLES and its revocations of the group's old privileges touched
// those tables too, so narrowed grants never took effect. The PUT now leaves lease users'
// tables to their owners (they reach the group with the revocation).
func TestDriver_PutWithLeasesTables(t *testing.T) {
	c, s, d, admin, uid := setUp(t)
	ctx := t.Context()
	wide := []events.Grant{{Database: s.Database, Schema: "public", Privileges: []string{"SELECT", "INSERT", "CREATE"}}}
	narrow := []events.Grant{{Database: s.Database, Schema: "public", Privileges: []string{"SELECT"}}}
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: wide}); err != nil {
		t.Fatal(err)
	}
	l := newLease(t, d, admin, uid, wide)
	group := pgx.Identifier{l.group}.Sanitize()
	if err := c.execIn(ctx, l.user, l.password, s.Database,
		"CREATE TABLE public.mine (id int); GRANT SELECT ON public.mine TO "+group); err != nil {
		t.Fatal(err)
	}
	temp, err := pgx.ConnectConfig(ctx, c.connConfig(l.user, l.password, s.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer temp.Close(context.Background())
	if _, err := temp.Exec(ctx, "CREATE TEMP TABLE scratch (id int); GRANT SELECT ON scratch TO "+group); err != nil {
		t.Fatal(err)
	}

	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: narrow}); err != nil {
		t.Fatalf("PUT with a lease's tables in the schema: %v", err)
	}
	fresh := newLease(t, d, admin, uid, narrow)
	if err := c.execIn(ctx, fresh.user, fresh.password, s.Database, "SELECT id FROM public.granted"); err != nil {
		t.Errorf("the narrowed grant does not work: %v", err)
	}
	for _, stmt := range []string{"INSERT INTO public.granted VALUES (1)", "CREATE TABLE public.again (id int)"} {
		if err := c.execIn(ctx, fresh.user, fresh.password, s.Database, stmt); err == nil {
			t.Errorf("%s succeeded after the target was narrowed", stmt)
		}
	}
}

// TestDriver_PutDoesNotWaitOnABusyTable: a target's PUT re-grants on every table of its
// grants, and a GRANT waits for any open transaction that changed the table's catalog row
// (a migration's TRUNCATE, ALTER TABLE or CREATE INDEX). The PUT waited up to its
// deadline, holding the target's group lock in that process, so the process's creates
// for the target waited with it. It now fails within the lock timeout saying why, and
// goes through once the transaction ends.
func TestDriver_PutDoesNotWaitOnABusyTable(t *testing.T) {
	c, s, d, admin, uid := setUp(t)
	ctx := t.Context()
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants}); err != nil {
		t.Fatal(err)
	}
	migration := migrating(t, c, s)

	pctx, cancel := context.WithTimeout(ctx, dropDeadline)
	defer cancel()
	err := d.Prepare(pctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants})
	if err == nil || pctx.Err() != nil || events.ErrorCode(err) != events.ETargetUnverified ||
		!strings.Contains(events.ErrorMessage(err), "another transaction") || errors.Is(err, driver.ErrPartlyApplied) {
		t.Fatalf("PUT behind a busy table = %v (deadline: %v), want a refusal naming the other transaction, nothing applied", err, pctx.Err())
	}
	if !c.roleExists(t, "syvault_"+uid) {
		t.Fatal("a refused PUT dropped the group its target's leases are in")
	}
	if _, err := migration.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants}); err != nil {
		t.Fatalf("PUT once the transaction ended: %v", err)
	}

	// Nor a group it made itself (the group had gone): a lease of the target may have
	// joined it meanwhile.
	if err := d.RemoveTarget(ctx, driver.RemoveTargetRequest{Conn: admin, RecordUID: uid, Grants: s.Grants}); err != nil {
		t.Fatal(err)
	}
	migrating(t, c, s)
	qctx, cancel2 := context.WithTimeout(ctx, dropDeadline)
	defer cancel2()
	err = d.Prepare(qctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants})
	if events.ErrorCode(err) != events.ETargetUnverified || !c.roleExists(t, "syvault_"+uid) || !errors.Is(err, driver.ErrPartlyApplied) {
		t.Fatalf("a PUT refused after it made the missing group: %v; the group must stay, the refusal saying it changed the database", err)
	}
}

// A PUT's statements that went unanswered (its request cancelled while a GRANT waited on
// a migration's lock) ran on once the lock was let go, pgx sending no cancel, and
// committed grants no record names, after the PUT had answered. The session is now
// ended before the PUT answers, and its failure says the database may have changed
// (driver.ErrPartlyApplied), for the caller to set it back to the target as recorded; a
// PUT refused before it changed anything says nothing of the kind.
func TestDriver_APutCutWhileItsGrantWaitsCommitsNothingLater(t *testing.T) {
	c, s, d, admin, uid := setUp(t)
	ctx := t.Context()
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants}); err != nil {
		t.Fatal(err)
	}
	missing := []events.Grant{{Database: s.Database, Schema: "public", Tables: []string{"no_such_table"}, Privileges: []string{"SELECT"}}}
	err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: missing})
	if err == nil || errors.Is(err, driver.ErrPartlyApplied) {
		t.Fatalf("a PUT refused before any change: %v; want a refusal not marked as partly applied", err)
	}

	migration := migrating(t, c, s)
	super, err := pgx.ConnectConfig(ctx, c.connConfig("postgres", c.superPW, s.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(context.Background())
	grantsAt := func(state string) int {
		var n int
		if err := super.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = $1 AND pid <> pg_backend_pid() AND query LIKE '%GRANT%'`+state, s.Database).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	wider := slices.Clone(s.Grants)
	wider[0].Privileges = append(slices.Clone(wider[0].Privileges), "UPDATE")
	// Cancelled while its GRANT waits; a stalled machine may let the GRANT's 2 s lock wait
	// end first, and then the PUT is made again.
	for attempt := 1; ; attempt++ {
		put, cancel := context.WithCancel(ctx)
		answer := make(chan error, 1)
		go func() { answer <- d.Prepare(put, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: wider}) }()
		answered := false
		waitFor(t, "the PUT's GRANT waiting on the migration's lock", func() (bool, error) {
			select {
			case err = <-answer: // its lock wait ended first
				answered = true
				return true, nil
			default:
				return grantsAt(" AND wait_event_type = 'Lock'") > 0, nil
			}
		})
		cancel()
		if !answered {
			err = <-answer
		}
		if errors.Is(err, driver.ErrPartlyApplied) || attempt == 5 {
			break
		}
		t.Logf("attempt %d: the PUT ended before it was cancelled (%v); again", attempt, err)
	}
	if _, rerr := migration.Exec(ctx, "ROLLBACK"); rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil || !errors.Is(err, driver.ErrPartlyApplied) {
		t.Fatalf("a PUT cut while its GRANT waited: %v; want it marked as partly applied", err)
	}
	waitFor(t, "the cut PUT's session's end, whichever way", func() (bool, error) { return grantsAt("") == 0, nil })
	var update bool
	if err := super.QueryRow(ctx, "SELECT has_table_privilege($1, $2, 'UPDATE')", "syvault_"+uid, s.Granted).Scan(&update); err != nil {
		t.Fatal(err)
	}
	if update {
		t.Fatal("the cut PUT's GRANT committed after it answered: the group holds UPDATE, which no record names")
	}
}

// TestDriver_ARefusedRegistrationLeavesNoGroup: a registration makes the target's group
// role, makes the admin its member, then grants; a grant refused there (a table busy in
// a migration, a registration cancelled by its client) left the group and the admin's
// membership in it behind, one per attempt, under a record uid nothing names. What a
// refused registration made is now removed.
func TestDriver_ARefusedRegistrationLeavesNoGroup(t *testing.T) {
	c, s, d, admin, uid := setUp(t)
	ctx := t.Context()
	before := c.memberships(t, adminRole)
	grants := s.Grants
	migration := migrating(t, c, s)
	pctx, cancel := context.WithTimeout(ctx, dropDeadline)
	defer cancel()
	err := d.Prepare(pctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: grants, New: true})
	if events.ErrorCode(err) != events.ETargetUnverified {
		t.Fatalf("registration behind a busy table = %v, want it refused as unverified", err)
	}
	if c.roleExists(t, "syvault_"+uid) {
		t.Fatalf("the refused registration left its group role syvault_%s", uid)
	}
	if got := c.memberships(t, adminRole); got != before {
		t.Fatalf("the admin is a member of %d roles after a refused registration, %d before", got, before)
	}
	if _, err := migration.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: grants, New: true}); err != nil {
		t.Fatalf("the registration tried again once the table is free: %v", err)
	}
	t.Cleanup(func() {
		_ = d.RemoveTarget(context.Background(), driver.RemoveTargetRequest{Conn: admin, RecordUID: uid, Grants: grants})
	})
}

// migrating opens a superuser session of s holding a TRUNCATE of its granted table in an
// open transaction, as a migration does, closed when the test ends.
func migrating(t *testing.T, c *cluster, s drivertest.Scratch) *pgx.Conn {
	t.Helper()
	migration, err := pgx.ConnectConfig(t.Context(), c.connConfig("postgres", c.superPW, s.Database))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { migration.Close(context.Background()) })
	if _, err := migration.Exec(t.Context(), "BEGIN; TRUNCATE "+s.Granted); err != nil {
		t.Fatal(err)
	}
	return migration
}

// TestDriver_RevocationOfAUserAnotherLeaseSharedWith: a lease that created a table may
// grant on it to another lease user, name that user in a row-security policy, or set
// default privileges for it. Only the granting role may take such a grant back, and the
// admin was not it: the other user's revocation ended its sessions and logins, but its
// DROP ROLE failed ("privileges for table ...") at every attempt until the granting
// lease ended, and for good when the two leases' targets have different admins. The
// revocation now takes back what lease users granted to the user, as them, and the admin
// is left a member of no lease user.
func TestDriver_RevocationOfAUserAnotherLeaseSharedWith(t *testing.T) {
	for _, tc := range []struct {
		name                               string
		sameAdmin, sharerFirst, policyOnly bool
	}{
		{"same target", true, false, false},
		{"same target, a policy alone", true, false, true},
		{"another admin's target", false, false, false},
		{"another admin's target, a policy alone", false, false, true},
		{"another admin's target, the sharing lease revoked first", false, true, false},
	} {
		sameAdmin := tc.sameAdmin
		t.Run(tc.name, func(t *testing.T) {
			c, s, d, admin, uid := setUp(t)
			ctx := t.Context()
			if !sameAdmin && c.version(t) >= 160000 {
				t.Skip("PostgreSQL 16 lets an admin take membership only in the roles it made (README: give targets sharing a database one admin)")
			}
			grants := []events.Grant{{Database: s.Database, Schema: "public", Privileges: []string{"SELECT", "INSERT", "CREATE"}}}
			if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: grants, New: true}); err != nil {
				t.Fatal(err)
			}
			granting := newLease(t, d, admin, uid, grants)
			other, otherUID, otherGrants := admin, uid, grants
			if !sameAdmin {
				other, otherUID, otherGrants = c.secondAdmin(t, s), drivertest.NewRecordUID(), s.Grants
				if err := d.Prepare(ctx, driver.PrepareRequest{Conn: other, RecordUID: otherUID, Grants: otherGrants}); err != nil {
					t.Fatal(err)
				}
			}
			revoked := newLease(t, d, other, otherUID, otherGrants)
			to := pgx.Identifier{revoked.user}.Sanitize()
			share := "SET ROLE NONE; CREATE TABLE public.shared (id int); INSERT INTO public.shared VALUES (1); " +
				"ALTER TABLE public.shared ENABLE ROW LEVEL SECURITY; " +
				"CREATE POLICY only_them ON public.shared TO " + to + " USING (true)"
			if !tc.policyOnly {
				share += "; GRANT SELECT, UPDATE (id) ON public.shared TO " + to +
					"; ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO " + to + "; CREATE TABLE public.later (id int)"
			}
			if err := c.execIn(ctx, granting.user, granting.password, s.Database, share); err != nil {
				t.Fatal(err)
			}
			if !tc.policyOnly {
				if err := c.execIn(ctx, revoked.user, revoked.password, s.Database, "SELECT s.id, l.id FROM public.shared s, public.later l"); err != nil {
					t.Fatalf("the share did not work: %v", err)
				}
			}
			if tc.sharerFirst {
				// Its table, and the grant it made, pass to its target's group.
				drop(t, d, admin, uid, granting, grants)
			}
			memberships, otherMemberships := c.memberships(t, adminRole), c.memberships(t, other.Username)

			dctx, cancel := context.WithTimeout(ctx, dropDeadline)
			defer cancel()
			if err := d.DropUser(dctx, driver.DropUserRequest{Conn: other, RecordUID: otherUID, Username: revoked.user, Grants: otherGrants}); err != nil {
				t.Fatalf("revoke a user another lease shared with: %v", err)
			}
			if c.roleExists(t, revoked.user) {
				t.Fatalf("%s still exists", revoked.user)
			}
			if got := c.memberships(t, adminRole); got != memberships {
				t.Errorf("the admin is a member of %d roles after the drop, %d before", got, memberships)
			}
			if got := c.memberships(t, other.Username); got != otherMemberships {
				t.Errorf("the revoking admin is a member of %d roles after the drop, %d before", got, otherMemberships)
			}
			if tc.sharerFirst {
				return
			}
			// The granting lease is untouched: it still owns its table and uses it.
			if got := c.owner(t, s.Database, "SELECT relowner::regrole::text FROM pg_class WHERE relname = 'shared'"); got != granting.user {
				t.Errorf("the shared table is owned by %s, want the granting lease %s", got, granting.user)
			}
			if err := c.execIn(ctx, granting.user, granting.password, s.Database, "SET ROLE NONE; SELECT id FROM public.shared; CREATE TABLE public.after (id int)"); err != nil {
				t.Errorf("the granting lease lost its table: %v", err)
			}
		})
	}
}

// secondAdmin makes another minimal admin, with the rights s.Grants need in s's
// database, for a target of its own there.
func (c *cluster) secondAdmin(t *testing.T, s drivertest.Scratch) driver.Conn {
	t.Helper()
	name := "vf_admin_" + strings.ToLower(rand.Text()[:8])
	password := secret()
	ctx := t.Context()
	if _, err := c.super.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN CREATEROLE PASSWORD %s; GRANT pg_signal_backend TO %s",
		name, literal(password), name)); err != nil {
		t.Fatal(err)
	}
	if err := c.execIn(ctx, "postgres", c.superPW, s.Database, fmt.Sprintf(
		"GRANT CONNECT ON DATABASE %s TO %s WITH GRANT OPTION; GRANT USAGE ON SCHEMA public TO %s WITH GRANT OPTION; "+
			"GRANT SELECT, INSERT ON %s TO %s WITH GRANT OPTION", s.Database, name, name, s.Granted, name)); err != nil {
		t.Fatal(err)
	}
	a := c.admin()
	a.PoolKey, a.Username, a.Password = "pg-test-"+name, name, password
	return a
}

// TestDriver_NoMembershipInAnApplicationsRole: what an application's own role shared
// with a lease user is not the admin's to take back, and the admin takes no membership
// in that role to do so: the drop fails saying what holds it, and is retried.
func TestDriver_NoMembershipInAnApplicationsRole(t *testing.T) {
	c, s, d, admin, uid := setUp(t)
	ctx := t.Context()
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants, New: true}); err != nil {
		t.Fatal(err)
	}
	l := newLease(t, d, admin, uid, s.Grants)
	app := "vf_app_" + strings.ToLower(rand.Text()[:8])
	to := pgx.Identifier{l.user}.Sanitize()
	if err := c.execIn(ctx, "postgres", c.superPW, s.Database, "CREATE ROLE "+app+"; CREATE TABLE public.apps (id int); "+
		"ALTER TABLE public.apps OWNER TO "+app+"; GRANT SELECT ON public.apps TO "+to); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.execIn(context.Background(), "postgres", c.superPW, s.Database, "REVOKE ALL ON public.apps FROM "+to)
	})
	err := d.DropUser(ctx, driver.DropUserRequest{Conn: admin, RecordUID: uid, Username: l.user, Grants: s.Grants})
	if err == nil || !strings.Contains(events.ErrorMessage(err), "holds privileges") {
		t.Fatalf("DropUser = %v, want the refusal naming what holds it", err)
	}
	var member bool
	if err := c.super.QueryRow(ctx, "SELECT pg_has_role($1, $2, 'MEMBER')", adminRole, app).Scan(&member); err != nil {
		t.Fatal(err)
	}
	if member {
		t.Errorf("the admin took membership in the application's role %s", app)
	}
}

// version is the cluster's server_version_num.
func (c *cluster) version(t *testing.T) int {
	t.Helper()
	var v int
	if err := c.super.QueryRow(t.Context(), "SELECT current_setting('server_version_num')::int").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// memberships counts the roles role is a member of.
func (c *cluster) memberships(t *testing.T, role string) int {
	t.Helper()
	var n int
	if err := c.super.QueryRow(t.Context(), "SELECT count(*) FROM pg_auth_members WHERE member = $1::regrole", role).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDriver_ACancelledRegistrationLeavesNoGroup: a registration cancelled along the way
// (its client gone, its deadline passed), even while its CREATE ROLE is unanswered,
// leaves no group role.
func TestDriver_ACancelledRegistrationLeavesNoGroup(t *testing.T) {
	c, s, d, admin, uid := setUp(t)
	if err := d.Prepare(t.Context(), driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants, New: true}); err != nil {
		t.Fatal(err)
	}
	// A warm registration of a new target, so that the points below fall along one.
	timed := drivertest.NewRecordUID()
	start := time.Now()
	if err := d.Prepare(t.Context(), driver.PrepareRequest{Conn: admin, RecordUID: timed, Grants: s.Grants, New: true}); err != nil {
		t.Fatal(err)
	}
	whole := time.Since(start)
	_ = d.RemoveTarget(t.Context(), driver.RemoveTargetRequest{Conn: admin, RecordUID: timed, Grants: s.Grants})
	_ = d.RemoveTarget(t.Context(), driver.RemoveTargetRequest{Conn: admin, RecordUID: uid, Grants: s.Grants})
	const points = 60
	for i := range points {
		uid := drivertest.NewRecordUID()
		ctx, cancel := context.WithTimeout(t.Context(), whole*time.Duration(i)/points)
		err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants, New: true})
		cancel()
		if err == nil {
			_ = d.RemoveTarget(t.Context(), driver.RemoveTargetRequest{Conn: admin, RecordUID: uid, Grants: s.Grants})
			continue
		}
		if c.roleExists(t, "syvault_"+uid) {
			t.Fatalf("a registration cancelled after %d/%d of a Prepare (%v) left its group role", i, points, err)
		}
	}
}

// TestDriver_ARegistrationCutOffInItsCreateRoleLeavesNoGroup: a registration cancelled
// while its CREATE ROLE waits (here on a lock of the role catalog) has its connection
// closed by pgx, but the statement runs on in its session: once the lock went, it made
// the group after the undo had found none. The undo now ends that session first.
func TestDriver_ARegistrationCutOffInItsCreateRoleLeavesNoGroup(t *testing.T) {
	c, s, d, admin, uid := setUp(t)
	ctx := t.Context()
	locker, err := pgx.ConnectConfig(ctx, c.connConfig("postgres", c.superPW, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(context.Background())
	// SHARE: the role catalog stays readable (the checks, the undo's look-up), while a
	// CREATE ROLE waits.
	if _, err := locker.Exec(ctx, "BEGIN; LOCK TABLE pg_catalog.pg_authid IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- d.Prepare(pctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants, New: true})
	}()
	waiting := func() bool {
		var n int
		err := c.super.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE 'CREATE ROLE%'`).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	for deadline := time.Now().Add(30 * time.Second); !waiting(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the registration's CREATE ROLE never waited on the lock")
		}
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("a registration cancelled in its CREATE ROLE succeeded")
	}
	if _, err := locker.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	// Whatever was still running in the cut session has had the lock; what it made
	// would be there now.
	for deadline := time.Now().Add(5 * time.Second); waitingOrActive(t, c); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the cut CREATE ROLE is still running")
		}
	}
	if c.roleExists(t, "syvault_"+uid) {
		t.Fatal("the cancelled registration's CREATE ROLE made the group after its undo")
	}
}

// waitingOrActive reports whether a CREATE ROLE is still running in any session.
func waitingOrActive(t *testing.T, c *cluster) bool {
	var n int
	if err := c.super.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
		WHERE state = 'active' AND query LIKE 'CREATE ROLE%'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// A target's removal and the workers' follow-through of it remove its group at about the
// same time, in one process or two; each succeeds, and the group is gone. Run together,
// one of two failed on a catalog conflict ("tuple concurrently updated"), or on the role
// dropped under its statements.
func TestDriver_RemovalsOfAGroupAtOnceAllSucceed(t *testing.T) {
	c, s, d, admin, uid := setUp(t)
	other := postgres.New(nil) // another process's
	t.Cleanup(func() { _ = other.Close() })
	t.Cleanup(func() { // a round that failed may leave the group
		_ = d.RemoveTarget(context.Background(), driver.RemoveTargetRequest{Conn: admin, RecordUID: uid, Grants: s.Grants})
	})
	for round := range 10 {
		if err := d.Prepare(t.Context(), driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants, New: true}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for i, by := range []*postgres.Driver{d, d, other} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = by.RemoveTarget(t.Context(), driver.RemoveTargetRequest{Conn: admin, RecordUID: uid, Grants: s.Grants})
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("round %d: removals at once: %v", round, err)
		}
		if c.roleExists(t, "syvault_"+uid) {
			t.Fatalf("round %d: the group outlived its removals", round)
		}
	}
}
