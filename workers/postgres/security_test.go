package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
	"github.com/syvault/syvault/workers/drivertest"
	"github.com/syvault/syvault/workers/postgres"
)

// The attacks of a hostile lease user against the target's admin, each on a scratch
// database with PostgreSQL 14's defaults (PUBLIC may create in schema public), which is
// what clusters upgraded from 14 still have.

// lease is one lease user made by the driver, for these tests.
type lease struct{ user, password, group string }

// pg14Scratch is a scratch database where PUBLIC may create in public, as before 15.
func (c *cluster) pg14Scratch(t *testing.T) drivertest.Scratch {
	t.Helper()
	s := c.newScratch(t)
	if err := c.execIn(t.Context(), "postgres", c.superPW, s.Database, "GRANT CREATE ON SCHEMA public TO PUBLIC"); err != nil {
		t.Fatal(err)
	}
	return s
}

// setUp gives a test the package's cluster, a scratch database, a driver closed after
// the test's other cleanups (which drop users through it), the admin and a new target's
// record uid.
func setUp(t *testing.T) (*cluster, drivertest.Scratch, *postgres.Driver, driver.Conn, string) {
	t.Helper()
	c := mustCluster(t)
	s := c.newScratch(t)
	d := postgres.New(nil)
	t.Cleanup(func() { _ = d.Close() })
	return c, s, d, c.admin(), drivertest.NewRecordUID()
}

// newLease prepares nothing: it creates a user of target uid with grants and drops it in
// t.Cleanup.
func newLease(t *testing.T, d *postgres.Driver, admin driver.Conn, uid string, grants []events.Grant) lease {
	t.Helper()
	l := lease{user: drivertest.NewUsername(), password: drivertest.NewPassword(), group: "syvault_" + uid}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = d.DropUser(ctx, driver.DropUserRequest{Conn: admin, RecordUID: uid, Username: l.user, Grants: grants})
	})
	err := d.CreateUser(t.Context(), driver.CreateUserRequest{Conn: admin, RecordUID: uid, Username: l.user,
		Password: l.password, ExpiresAt: time.Now().Add(time.Hour), Grants: grants})
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	return l
}

func drop(t *testing.T, d *postgres.Driver, admin driver.Conn, uid string, l lease, grants []events.Grant) {
	t.Helper()
	if err := d.DropUser(t.Context(), driver.DropUserRequest{Conn: admin, RecordUID: uid, Username: l.user, Grants: grants}); err != nil {
		t.Fatalf("DropUser: %v", err)
	}
}

func (c *cluster) roleExists(t *testing.T, name string) bool {
	t.Helper()
	var n int
	if err := c.super.QueryRow(t.Context(), "SELECT count(*) FROM pg_roles WHERE rolname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// owner returns the owner of a function or table in database.
func (c *cluster) owner(t *testing.T, database, query string) string {
	t.Helper()
	conn, err := pgx.ConnectConfig(t.Context(), c.connConfig("postgres", c.superPW, database))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var owner string
	if err := conn.QueryRow(t.Context(), query).Scan(&owner); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return owner
}

// TestDriver_SecurityDefinerEscalation: a lease plants SECURITY DEFINER functions that
// create a role (something only the admin may do), once as itself and once as what its
// sessions start as; it is revoked; a second lease calls them. Before, the revocation
// reassigned the functions to the admin, and the second call made a role with the
// admin's rights (a SUPERUSER where the admin was one). Now they belong to the target's
// group role, which may create no role, whoever the admin is.
func TestDriver_SecurityDefinerEscalation(t *testing.T) {
	c := mustCluster(t)
	for _, admin := range []struct {
		name string
		conn driver.Conn
	}{
		{"least-rights admin", c.admin()},
		{"superuser admin", func() driver.Conn {
			a := c.admin()
			a.Username, a.Password, a.PoolKey = "postgres", c.superPW, "pg-test-superuser"
			return a
		}()},
	} {
		t.Run(admin.name, func(t *testing.T) {
			s := c.pg14Scratch(t)
			d := postgres.New(nil)
			t.Cleanup(func() { _ = d.Close() }) // after the cleanups that drop users through it
			uid := drivertest.NewRecordUID()
			group := "syvault_" + uid
			if err := d.Prepare(t.Context(), driver.PrepareRequest{Conn: admin.conn, RecordUID: uid, Grants: s.Grants}); err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			first := newLease(t, d, admin.conn, uid, s.Grants)
			evil := "vf_evil_" + strings.ToLower(drivertest.NewRecordUID()[:8])
			body := fmt.Sprintf("CREATE ROLE %s LOGIN SUPERUSER", evil)
			weaker := fmt.Sprintf("CREATE ROLE %s_b LOGIN", evil)
			plant := fmt.Sprintf(`CREATE FUNCTION public.as_group() RETURNS void LANGUAGE sql SECURITY DEFINER AS $f$ %s $f$;
				CREATE FUNCTION public.as_group_b() RETURNS void LANGUAGE sql SECURITY DEFINER AS $f$ %s $f$;
				SET ROLE NONE;
				CREATE FUNCTION public.as_user() RETURNS void LANGUAGE sql SECURITY DEFINER AS $f$ %s $f$;
				CREATE FUNCTION public.as_user_b() RETURNS void LANGUAGE sql SECURITY DEFINER AS $f$ %s $f$`, body, weaker, body, weaker)
			if err := c.execIn(ctx, first.user, first.password, s.Database, plant); err != nil {
				t.Fatalf("plant: %v", err)
			}
			drop(t, d, admin.conn, uid, first, s.Grants)

			for _, fn := range []string{"as_group", "as_group_b", "as_user", "as_user_b"} {
				if got := c.owner(t, s.Database, "SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = '"+fn+"'"); got != group {
					t.Errorf("%s is owned by %s after the revocation; want the group %s", fn, got, group)
				}
			}
			second := newLease(t, d, admin.conn, uid, s.Grants)
			for _, fn := range []string{"as_group", "as_group_b", "as_user", "as_user_b"} {
				if err := c.execIn(ctx, second.user, second.password, s.Database, "SELECT public."+fn+"()"); err == nil {
					t.Errorf("%s() succeeded for a second lease", fn)
				}
			}
			for _, role := range []string{evil, evil + "_b"} {
				if c.roleExists(t, role) {
					t.Errorf("role %s exists: a lease escalated through the revocation", role)
					_, _ = c.super.Exec(context.Background(), "DROP ROLE "+role)
				}
			}
		})
	}
}

// TestDriver_PlantedFunctionsNeverRunAsAdmin: a lease plants, in the schemas the admin's
// sessions could search, overloads closer in signature than the built-ins the driver
// calls (format, unnest, pg_terminate_backend, has_table_privilege, starts_with) and a
// shadowing operator; each records who ran it. After every driver operation on that
// target, nobody has.
func TestDriver_PlantedFunctionsNeverRunAsAdmin(t *testing.T) {
	c := mustCluster(t)
	s := c.pg14Scratch(t)
	ctx := t.Context()
	// Planted in the scratch database (where grants are checked) and in the admin's own
	// database, where role statements run.
	admin := c.admin()
	admin.Database, admin.PoolKey = s.Database, "pg-test-planted"
	d := postgres.New(nil)
	t.Cleanup(func() { _ = d.Close() }) // after the cleanups that drop users through it
	uid := drivertest.NewRecordUID()
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants}); err != nil {
		t.Fatal(err)
	}
	attacker := newLease(t, d, admin, uid, s.Grants)
	if err := c.execIn(ctx, "postgres", c.superPW, s.Database,
		"CREATE TABLE public.ran (who text); GRANT INSERT, SELECT ON public.ran TO PUBLIC"); err != nil {
		t.Fatal(err)
	}
	plant := `SET ROLE NONE;
		CREATE FUNCTION public.format(text, text, text) RETURNS text LANGUAGE plpgsql AS $f$
			BEGIN INSERT INTO public.ran VALUES (current_user || ' format'); RETURN pg_catalog.format($1, $2, $3); END $f$;
		CREATE FUNCTION public.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql AS $f$
			BEGIN INSERT INTO public.ran VALUES (current_user || ' unnest'); RETURN QUERY SELECT pg_catalog.unnest($1); END $f$;
		CREATE FUNCTION public.pg_terminate_backend(integer, integer) RETURNS boolean LANGUAGE plpgsql AS $f$
			BEGIN INSERT INTO public.ran VALUES (current_user || ' terminate'); RETURN true; END $f$;
		CREATE FUNCTION public.has_table_privilege(integer, text, text) RETURNS boolean LANGUAGE plpgsql AS $f$
			BEGIN INSERT INTO public.ran VALUES (current_user || ' has_table_privilege'); RETURN true; END $f$;
		CREATE FUNCTION public.starts_with(name, text) RETURNS boolean LANGUAGE plpgsql AS $f$
			BEGIN INSERT INTO public.ran VALUES (current_user || ' starts_with'); RETURN true; END $f$;
		CREATE FUNCTION public.name_eq(name, text) RETURNS boolean LANGUAGE plpgsql AS $f$
			BEGIN INSERT INTO public.ran VALUES (current_user || ' ='); RETURN $1::text = $2; END $f$;
		CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = text, FUNCTION = public.name_eq)`
	if err := c.execIn(ctx, attacker.user, attacker.password, s.Database, plant); err != nil {
		t.Fatalf("plant: %v", err)
	}
	// Every operation, including the paths that hand over what a user owns.
	owner := newLease(t, d, admin, uid, s.Grants)
	if err := c.execIn(ctx, owner.user, owner.password, s.Database, "SET ROLE NONE; CREATE TABLE public.mine (id int)"); err != nil {
		t.Fatal(err)
	}
	sess, err := pgx.ConnectConfig(ctx, c.connConfig(owner.user, owner.password, s.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close(context.Background())
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants}); err != nil {
		t.Fatalf("Prepare again: %v", err)
	}
	if err := d.RenewUser(ctx, driver.RenewUserRequest{Conn: admin, Username: owner.user, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	drop(t, d, admin, uid, owner, s.Grants)
	drop(t, d, admin, uid, attacker, s.Grants)
	if err := d.RemoveTarget(ctx, driver.RemoveTargetRequest{Conn: admin, RecordUID: uid, Grants: s.Grants}); err != nil {
		t.Fatal(err)
	}
	rows, err := c.super.Query(ctx, "SELECT 1") // keep the pool warm; the check runs in the scratch database
	if err == nil {
		rows.Close()
	}
	conn, err := pgx.ConnectConfig(ctx, c.connConfig("postgres", c.superPW, s.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	ran, err := conn.Query(ctx, "SELECT who FROM public.ran")
	if err != nil {
		t.Fatal(err)
	}
	who, err := pgx.CollectRows(ran, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(who) > 0 {
		t.Fatalf("planted functions ran inside the driver's statements: %v", who)
	}
}

// TestDriver_NoTriggerOnOthersTables: a trigger a lease user attaches to a table it does
// not own runs its function as whoever writes to the table (the table's owner, a DBA,
// the admin), and stays on the table after the lease ends. Before, a target granting
// TRIGGER (or ALL, which PostgreSQL counts TRIGGER in) let a lease plant one on the
// admin's table, and the admin's next INSERT ran the lease's code as the admin. TRIGGER
// is now refused, and ALL is spelled out without it.
func TestDriver_NoTriggerOnOthersTables(t *testing.T) {
	c := mustCluster(t)
	s := c.pg14Scratch(t)
	ctx := t.Context()
	d := postgres.New(nil)
	t.Cleanup(func() { _ = d.Close() })
	admin := c.admin()

	uid := drivertest.NewRecordUID()
	withTrigger := []events.Grant{{Database: s.Database, Schema: "public", Tables: []string{"granted"}, Privileges: []string{"SELECT", "INSERT", "TRIGGER"}}}
	err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: withTrigger})
	if events.ErrorCode(err) != events.ETargetUnverified || !strings.Contains(events.ErrorMessage(err), "TRIGGER") {
		t.Fatalf("Prepare with TRIGGER: err = %v, want target_unverified naming TRIGGER", err)
	}
	if c.roleExists(t, "syvault_"+uid) {
		t.Error("a refused target left its group role behind")
	}

	uid = drivertest.NewRecordUID()
	all := []events.Grant{{Database: s.Database, Schema: "public", Tables: []string{"granted"}, Privileges: []string{"ALL"}}}
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: all}); err != nil {
		t.Fatal(err)
	}
	attacker := newLease(t, d, admin, uid, all)
	if err := c.execIn(ctx, "postgres", c.superPW, s.Database,
		"CREATE TABLE public.ran (who text); GRANT INSERT, SELECT ON public.ran TO PUBLIC"); err != nil {
		t.Fatal(err)
	}
	if err := c.execIn(ctx, attacker.user, attacker.password, s.Database, `INSERT INTO public.granted VALUES (1);
		CREATE FUNCTION public.planted() RETURNS trigger LANGUAGE plpgsql AS $f$
			BEGIN INSERT INTO public.ran VALUES (current_user); RETURN NEW; END $f$`); err != nil {
		t.Fatalf("the lease lost what ALL grants, or may not create in public: %v", err)
	}
	err = c.execIn(ctx, attacker.user, attacker.password, s.Database,
		"CREATE TRIGGER planted BEFORE INSERT ON public.granted FOR EACH ROW EXECUTE FUNCTION public.planted()")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("CREATE TRIGGER on the admin's table: err = %v, want insufficient_privilege (42501)", err)
	}
	drop(t, d, admin, uid, attacker, all)
	if err := c.execIn(ctx, adminRole, c.adminPW, s.Database, "INSERT INTO public.granted VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	if ran := c.owner(t, s.Database, "SELECT coalesce(string_agg(who, ', '), '') FROM public.ran"); ran != "" {
		t.Fatalf("a lease's trigger ran in the admin's INSERT as %s", ran)
	}
}

// TestDriver_NarrowedGrants: preparing a target again with fewer privileges, tables,
// schema rights or default privileges takes them from the leases already active as well
// as from new ones.
func TestDriver_NarrowedGrants(t *testing.T) {
	c, s, d, admin, uid := setUp(t)
	ctx := t.Context()
	wide := []events.Grant{{Database: s.Database, Schema: "public", Privileges: []string{"SELECT", "INSERT", "DELETE", "CREATE"}}}
	narrow := []events.Grant{{Database: s.Database, Schema: "public", Tables: []string{"granted"}, Privileges: []string{"SELECT"}}}
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: wide}); err != nil {
		t.Fatal(err)
	}
	old := newLease(t, d, admin, uid, wide)
	if err := c.execIn(ctx, old.user, old.password, s.Database,
		"INSERT INTO public.granted VALUES (1); DELETE FROM public.denied; CREATE TABLE public.by_lease (id int)"); err != nil {
		t.Fatalf("wide grants do not work: %v", err)
	}
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: narrow}); err != nil {
		t.Fatal(err)
	}
	if err := c.execIn(ctx, adminRole, c.adminPW, s.Database, "CREATE TABLE public.after_put (id int)"); err != nil {
		t.Fatal(err)
	}
	fresh := newLease(t, d, admin, uid, narrow)
	for _, l := range []lease{old, fresh} {
		if err := c.execIn(ctx, l.user, l.password, s.Database, "SELECT id FROM public.granted"); err != nil {
			t.Errorf("SELECT on the still granted table: %v", err)
		}
		for _, stmt := range []string{
			"INSERT INTO public.granted VALUES (2)",
			"DELETE FROM public.granted",
			"SELECT id FROM public.denied",
			"SELECT id FROM public.after_put",
			"CREATE TABLE public.again (id int)",
		} {
			if err := c.execIn(ctx, l.user, l.password, s.Database, stmt); err == nil {
				t.Errorf("%s succeeded after the target was narrowed", stmt)
			}
		}
	}
	// What a lease created is its own while it lasts, then the group's: it stays usable
	// by the target's later leases.
	if err := c.execIn(ctx, old.user, old.password, s.Database, "INSERT INTO public.by_lease VALUES (1)"); err != nil {
		t.Errorf("a lease lost the table it created: %v", err)
	}
	drop(t, d, admin, uid, old, wide)
	if err := c.execIn(ctx, fresh.user, fresh.password, s.Database, "INSERT INTO public.by_lease VALUES (2)"); err != nil {
		t.Errorf("a table a lease created is lost to the target's leases: %v", err)
	}
}

// TestDriver_SetRoleSharesAtOnce: a lease session that takes the group's role first
// creates objects the group owns from the start, which the target's other active leases
// use at once; its sessions start as the user, with no per-user setting (a
// pg_db_role_setting row per user would make every DROP ROLE read them all).
func TestDriver_SetRoleSharesAtOnce(t *testing.T) {
	c, s, d, admin, uid := setUp(t)
	ctx := t.Context()
	grants := []events.Grant{{Database: s.Database, Schema: "public", Privileges: []string{"SELECT", "INSERT", "CREATE"}}}
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: grants}); err != nil {
		t.Fatal(err)
	}
	migrator, app := newLease(t, d, admin, uid, grants), newLease(t, d, admin, uid, grants)
	if err := c.execIn(ctx, migrator.user, migrator.password, s.Database,
		"SET ROLE "+pgx.Identifier{"syvault_" + uid}.Sanitize()+"; CREATE TABLE public.shared_now (id int)"); err != nil {
		t.Fatal(err)
	}
	if err := c.execIn(ctx, app.user, app.password, s.Database, "INSERT INTO public.shared_now VALUES (1)"); err != nil {
		t.Errorf("another active lease cannot use what the group owns: %v", err)
	}
	var settings int
	if err := c.super.QueryRow(ctx, "SELECT count(*) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname IN ($1, $2)",
		migrator.user, app.user).Scan(&settings); err != nil || settings != 0 {
		t.Fatalf("per-user settings: %d, %v", settings, err)
	}
}

// TestDriver_AdminMembershipsDoNotGrow: creating and dropping leases never adds to the
// admin's role memberships (one, the group, per target), which on PostgreSQL 15 slow
// every privilege check quadratically in their number.
func TestDriver_AdminMembershipsDoNotGrow(t *testing.T) {
	c := mustCluster(t)
	s := c.newScratch(t)
	ctx := t.Context()
	d := postgres.New(nil)
	t.Cleanup(func() { _ = d.Close() }) // after the cleanups that drop users through it
	admin := c.admin()
	count := func() int {
		var n int
		err := c.super.QueryRow(ctx, "SELECT count(*) FROM pg_auth_members WHERE member = $1::regrole", adminRole).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	uid := drivertest.NewRecordUID()
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants}); err != nil {
		t.Fatal(err)
	}
	before := count()
	var leases []lease
	for range 20 {
		leases = append(leases, newLease(t, d, admin, uid, s.Grants))
	}
	if got := count(); got != before {
		t.Fatalf("the admin has %d role memberships with 20 leases, %d with none", got, before)
	}
	// A lease that owns something is handed over with a membership taken for the drop
	// alone.
	if err := c.execIn(ctx, leases[0].user, leases[0].password, s.Database, "SET ROLE NONE; SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if err := c.execIn(ctx, "postgres", c.superPW, s.Database, "GRANT CREATE ON SCHEMA public TO "+leases[0].user); err != nil {
		t.Fatal(err)
	}
	if err := c.execIn(ctx, leases[0].user, leases[0].password, s.Database, "SET ROLE NONE; CREATE TABLE public.owned (id int)"); err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		drop(t, d, admin, uid, l, s.Grants)
	}
	if got := count(); got != before {
		t.Fatalf("the admin has %d role memberships after the drops, %d before", got, before)
	}
}

// creatingLease is setUp with a prepared target whose grants let a lease create
// tables in the scratch database's public schema, and one lease of it.
func creatingLease(t *testing.T) (*cluster, drivertest.Scratch, *postgres.Driver, driver.Conn, string, []events.Grant, lease) {
	t.Helper()
	c, s, d, admin, uid := setUp(t)
	grants := []events.Grant{{Database: s.Database, Schema: "public", Privileges: []string{"SELECT", "CREATE"}}}
	if err := d.Prepare(t.Context(), driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: grants}); err != nil {
		t.Fatal(err)
	}
	return c, s, d, admin, uid, grants, newLease(t, d, admin, uid, grants)
}

// TestDriver_RemoveTargetKeepsWhatLeasesMade: removing a target whose leases created
// tables keeps the group role as their owner, with no privilege left, rather than
// dropping the tables or giving them to the admin.
func TestDriver_RemoveTargetKeepsWhatLeasesMade(t *testing.T) {
	c, s, d, admin, uid, grants, l := creatingLease(t)
	ctx := t.Context()
	group := "syvault_" + uid
	if err := c.execIn(ctx, l.user, l.password, s.Database, "CREATE TABLE public.migrated (id int)"); err != nil {
		t.Fatal(err)
	}
	drop(t, d, admin, uid, l, grants)
	if err := d.RemoveTarget(ctx, driver.RemoveTargetRequest{Conn: admin, RecordUID: uid, Grants: grants}); err != nil {
		t.Fatal(err)
	}
	if got := c.owner(t, s.Database, "SELECT tableowner::text FROM pg_tables WHERE tablename = 'migrated'"); got != group {
		t.Fatalf("migrated is owned by %s; want the kept group %s", got, group)
	}
	var select_, connect bool
	conn, err := pgx.ConnectConfig(ctx, c.connConfig("postgres", c.superPW, s.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, `SELECT has_table_privilege($1, 'public.granted', 'SELECT'), has_database_privilege($1, current_database(), 'CONNECT')`,
		group).Scan(&select_, &connect); err != nil {
		t.Fatal(err)
	}
	if select_ {
		t.Error("the removed target's group still holds SELECT on the admin's table")
	}
	_ = connect // PUBLIC holds CONNECT on every database by default
	// A target without leftovers loses its group entirely.
	uid2 := drivertest.NewRecordUID()
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid2, Grants: s.Grants}); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveTarget(ctx, driver.RemoveTargetRequest{Conn: admin, RecordUID: uid2, Grants: s.Grants}); err != nil {
		t.Fatal(err)
	}
	if c.roleExists(t, "syvault_"+uid2) {
		t.Fatal("the group of a target whose leases made nothing was kept")
	}
	if err := c.execIn(ctx, "postgres", c.superPW, s.Database, "DROP TABLE public.migrated; DROP ROLE "+pgx.Identifier{group}.Sanitize()); err != nil {
		t.Fatal(err)
	}
}

// TestDriver_ARemovalMeetingAnObjectMadeMeanwhileKeepsTheGroup: a lease (acting as its
// group) created a table while the target's removal ran, committing after the removal
// counted what the group owns: its DROP ROLE, which waits for the creating transaction,
// then failed "dependent objects" as an internal error, and the removal nothing records
// again (a setup made again, an undo) was not tried again. It now looks again at what
// the group owns, and keeps it as the new table's owner.
func TestDriver_ARemovalMeetingAnObjectMadeMeanwhileKeepsTheGroup(t *testing.T) {
	c, s, d, admin, uid, grants, l := creatingLease(t)
	ctx := t.Context()
	group := "syvault_" + uid
	conn, err := pgx.ConnectConfig(ctx, c.connConfig(l.user, l.password, s.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := removeMeanwhile(t, c, d, admin, uid, grants, conn, "SET ROLE "+pgx.Identifier{group}.Sanitize()+"; CREATE TABLE public.meanwhile (id int)"); err != nil {
		t.Fatalf("the removal: %v; want it done, the group kept as the new table's owner", err)
	}
	if got := c.owner(t, s.Database, "SELECT tableowner::text FROM pg_tables WHERE tablename = 'meanwhile'"); got != group {
		t.Fatalf("meanwhile is owned by %s; want the kept group %s", got, group)
	}
	if err := c.execIn(context.Background(), "postgres", c.superPW, s.Database, "DROP TABLE public.meanwhile; DROP ROLE "+pgx.Identifier{group}.Sanitize()); err != nil {
		t.Fatal(err)
	}
}

// removeMeanwhile removes target uid while conn's transaction runs stmt, committing it
// once the removal's DROP ROLE waits for it, and returns the removal's outcome.
func removeMeanwhile(t *testing.T, c *cluster, d *postgres.Driver, admin driver.Conn, uid string, grants []events.Grant, conn *pgx.Conn, stmt string) error {
	t.Helper()
	ctx := t.Context()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, stmt); err != nil {
		t.Fatal(err)
	}
	removed := make(chan error, 1)
	go func() {
		removed <- d.RemoveTarget(ctx, driver.RemoveTargetRequest{Conn: admin, RecordUID: uid, Grants: grants})
	}()
	waitFor(t, "the removal's DROP ROLE waiting for the other transaction", func() (bool, error) {
		var n int
		err := c.super.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%DROP ROLE%' || $1 || '%'`,
			"syvault_"+uid).Scan(&n)
		return n > 0, err
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return <-removed
}

// TestDriver_ARemovalMeetingAGrantMadeMeanwhileDropsTheGroup: the admin (another
// process's update of the target) granted the group a table while the removal ran,
// committing after the removal revoked what the group held: its DROP ROLE then failed
// "dependent objects". The removal is run again, revokes that grant too, and the group
// goes, holding nothing.
func TestDriver_ARemovalMeetingAGrantMadeMeanwhileDropsTheGroup(t *testing.T) {
	c, s, d, admin, uid := setUp(t)
	ctx := t.Context()
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants}); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, c.connConfig(adminRole, c.adminPW, s.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := removeMeanwhile(t, c, d, admin, uid, s.Grants, conn, "GRANT SELECT ON public.denied TO "+pgx.Identifier{"syvault_" + uid}.Sanitize()); err != nil {
		t.Fatalf("the removal: %v; want it done, the grant made meanwhile revoked", err)
	}
	if c.roleExists(t, "syvault_"+uid) {
		t.Fatal("the group outlived its target's removal")
	}
}

// TestDriver_MigrationByLeases: lease 1 creates a table and an index and is revoked;
// lease 2 of the same target alters that table and reads and writes it; a lease of
// another target sees nothing of it; the admin owns none of it.
func TestDriver_MigrationByLeases(t *testing.T) {
	c := mustCluster(t)
	s := c.newScratch(t)
	ctx := t.Context()
	d := postgres.New(nil)
	t.Cleanup(func() { _ = d.Close() }) // after the cleanups that drop users through it
	admin := c.admin()
	grants := []events.Grant{{Database: s.Database, Schema: "public", Privileges: []string{"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE"}}}
	uid, other := drivertest.NewRecordUID(), drivertest.NewRecordUID()
	for _, u := range []string{uid, other} {
		if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: u, Grants: grants}); err != nil {
			t.Fatal(err)
		}
	}
	first := newLease(t, d, admin, uid, grants)
	if err := c.execIn(ctx, first.user, first.password, s.Database,
		"CREATE TABLE public.orders2 (id int primary key, item text); CREATE INDEX orders2_item ON public.orders2 (item)"); err != nil {
		t.Fatalf("migration: %v", err)
	}
	drop(t, d, admin, uid, first, grants)
	second := newLease(t, d, admin, uid, grants)
	if err := c.execIn(ctx, second.user, second.password, s.Database,
		"ALTER TABLE public.orders2 ADD COLUMN qty int; INSERT INTO public.orders2 VALUES (1, 'book', 2); UPDATE public.orders2 SET qty = 3; SELECT * FROM public.orders2"); err != nil {
		t.Fatalf("second lease on the migrated table: %v", err)
	}
	stranger := newLease(t, d, admin, other, grants)
	for _, stmt := range []string{"SELECT * FROM public.orders2", "INSERT INTO public.orders2 VALUES (2, 'pen', 1)", "ALTER TABLE public.orders2 ADD COLUMN x int"} {
		if err := c.execIn(ctx, stranger.user, stranger.password, s.Database, stmt); err == nil {
			t.Errorf("a lease of another target ran %q", stmt)
		}
	}
	if got := c.owner(t, s.Database, "SELECT tableowner::text FROM pg_tables WHERE tablename = 'orders2'"); got != "syvault_"+uid {
		t.Fatalf("orders2 is owned by %s; want the target's group", got)
	}
	var err error
	if err = c.execIn(ctx, "postgres", c.superPW, s.Database, "DROP TABLE public.orders2"); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// TestDriver_PreparedVerifier: a verifier prepared ahead is what the role gets: the
// password logs in, and a verifier of another password would not let it.
func TestDriver_PreparedVerifier(t *testing.T) {
	c := mustCluster(t)
	s := c.newScratch(t)
	ctx := t.Context()
	d := postgres.New(nil)
	t.Cleanup(func() { _ = d.Close() }) // after the cleanups that drop users through it
	admin, uid := c.admin(), drivertest.NewRecordUID()
	for _, tc := range []struct {
		name, verifierOf string
		logsIn           bool
	}{{"its own password's", "", true}, {"another password's", "other-" + drivertest.NewPassword(), false}} {
		t.Run(tc.name, func(t *testing.T) {
			user, password := drivertest.NewUsername(), drivertest.NewPassword()
			of := password
			if tc.verifierOf != "" {
				of = tc.verifierOf
			}
			v, ok := driver.SCRAMVerifier(of)
			if !ok {
				t.Fatal("no verifier")
			}
			t.Cleanup(func() {
				_ = d.DropUser(context.Background(), driver.DropUserRequest{Conn: admin, RecordUID: uid, Username: user})
			})
			if err := d.CreateUser(ctx, driver.CreateUserRequest{Conn: admin, RecordUID: uid, Username: user, Password: password,
				PasswordVerifier: v, ExpiresAt: time.Now().Add(time.Hour), Grants: s.Grants}); err != nil {
				t.Fatal(err)
			}
			err := c.execIn(ctx, user, password, s.Database, "SELECT 1")
			if (err == nil) != tc.logsIn {
				t.Fatalf("login with the password: %v, want it to succeed: %v", err, tc.logsIn)
			}
		})
	}
}

// TestDriver_PrepareNamesEveryMissingRight: an admin lacking several rights learns of all
// of them from one refusal, not one per attempt.
func TestDriver_PrepareNamesEveryMissingRight(t *testing.T) {
	c := mustCluster(t)
	s := c.newScratch(t)
	ctx := t.Context()
	role, pw := "vf_bare_"+strings.ToLower(drivertest.NewRecordUID()[:6]), secret()
	if _, err := c.super.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", role, literal(pw))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.super.Exec(context.Background(), "DROP ROLE IF EXISTS "+role) })
	d := postgres.New(nil)
	t.Cleanup(func() { _ = d.Close() }) // after the cleanups that drop users through it
	conn := c.admin()
	conn.Username, conn.Password, conn.PoolKey, conn.Database = role, pw, "bare-"+role, s.Database
	err := d.Prepare(ctx, driver.PrepareRequest{Conn: conn, RecordUID: drivertest.NewRecordUID(), Grants: []events.Grant{
		{Database: s.Database, Schema: "public", Tables: []string{"granted", "no_such_table"}, Privileges: []string{"SELECT", "CREATE"}},
	}})
	if events.ErrorCode(err) != events.ETargetUnverified {
		t.Fatalf("err = %v, want %s", err, events.ETargetUnverified)
	}
	msg := events.ErrorMessage(err)
	for _, want := range []string{"CREATEROLE", "pg_signal_backend", "USAGE on the schema", "CREATE on the schema", "SELECT on granted", `"no_such_table" does not exist`} {
		if !strings.Contains(msg, want) {
			t.Errorf("the refusal does not name %q: %s", want, msg)
		}
	}
	t.Logf("message: %s", msg)
}

// TestDriver_PrepareWarnsWhereEveryRoleMayCreate: where PUBLIC may create in a schema
// (PostgreSQL 14's default on public, kept by upgraded clusters) a lease user can leave
// what no grant names, a function shadowing a built-in one, kept at its revocation.
// Registration is not refused for it, but says where and how to take it away: in the
// target's databases and in template1, which later databases copy. Looking at template1
// leaves no session there, or the next CREATE DATABASE would fail.
func TestDriver_PrepareWarnsWhereEveryRoleMayCreate(t *testing.T) {
	c, s, d, admin, uid := setUp(t)
	ctx := t.Context()
	prepare := func() []string {
		t.Helper()
		var advice []string
		err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants,
			Advise: func(a string) { advice = append(advice, a) }})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range advice {
			if strings.Contains(a, c.adminPW) {
				t.Errorf("the advice holds the admin password: %s", a)
			}
		}
		return advice
	}
	if got := prepare(); len(got) != 0 {
		t.Fatalf("PostgreSQL 15's defaults warned: %q", got)
	}

	if err := c.execIn(ctx, "postgres", c.superPW, s.Database, "GRANT CREATE ON SCHEMA public, other TO PUBLIC"); err != nil {
		t.Fatal(err)
	}
	if err := c.execIn(ctx, "postgres", c.superPW, "template1", "GRANT CREATE ON SCHEMA public TO PUBLIC"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.execIn(context.Background(), "postgres", c.superPW, "template1", "REVOKE CREATE ON SCHEMA public FROM PUBLIC"); err != nil {
			t.Errorf("take template1's CREATE back: %v", err)
		}
	})
	got := prepare()
	if len(got) != 2 {
		t.Fatalf("advice = %q, want one for the granted database and one for template1", got)
	}
	for _, want := range []string{
		fmt.Sprintf(`schemas "other", "public" of the database %q`, s.Database), `REVOKE CREATE ON SCHEMA "other", "public" FROM PUBLIC`,
	} {
		if !strings.Contains(got[0], want) {
			t.Errorf("the granted database's advice does not say %q: %s", want, got[0])
		}
	}
	if !strings.Contains(got[1], `schema "public" of the database "template1"`) {
		t.Errorf("template1's advice: %s", got[1])
	}
	// template1 is copied only while nobody is connected to it.
	if _, err := c.super.Exec(ctx, "CREATE DATABASE vf_after_advice"); err != nil {
		t.Fatalf("CREATE DATABASE after the look at template1: %v", err)
	}
	if _, err := c.super.Exec(ctx, "DROP DATABASE vf_after_advice"); err != nil {
		t.Fatal(err)
	}

	if err := c.execIn(ctx, "postgres", c.superPW, s.Database, "REVOKE CREATE ON SCHEMA other, public FROM PUBLIC"); err != nil {
		t.Fatal(err)
	}
	if err := c.execIn(ctx, "postgres", c.superPW, "template1", "REVOKE CREATE ON SCHEMA public FROM PUBLIC"); err != nil {
		t.Fatal(err)
	}
	if got := prepare(); len(got) != 0 {
		t.Errorf("advice after the statements it gave: %q", got)
	}

	// A database the admin cannot look at (here pg_hba.conf refuses it template1, as a
	// pooler or a locked-down cluster may) is advised too: no advice is not a clean bill.
	hba := filepath.Join(c.dir, "data", "pg_hba.conf")
	kept, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	reload := func(conf []byte) {
		t.Helper()
		if err := os.WriteFile(hba, conf, 0); err != nil { // in place: its owner and mode stay
			t.Fatal(err)
		}
		if _, err := c.super.Exec(context.Background(), "SELECT pg_reload_conf()"); err != nil {
			t.Fatal(err)
		}
	}
	reload(append([]byte("host template1 "+adminRole+" 127.0.0.1/32 reject\n"), kept...))
	t.Cleanup(func() { reload(kept) })
	waitFor(t, "pg_hba.conf reloaded", func() (bool, error) {
		err := c.execIn(ctx, adminRole, c.adminPW, "template1", "SELECT 1")
		return err != nil, nil
	})
	got = prepare()
	if len(got) != 1 || !strings.Contains(got[0], `Could not check whether every role may create objects in a schema of the database "template1"`) {
		t.Fatalf("advice with template1 refused to the admin: %q", got)
	}

	// A schema per tenant: the advice names twenty, and a statement for them all.
	var many strings.Builder
	for i := range 21 {
		fmt.Fprintf(&many, "CREATE SCHEMA tenant_%02d; GRANT CREATE ON SCHEMA tenant_%02d TO PUBLIC;", i, i)
	}
	if err := c.execIn(ctx, "postgres", c.superPW, s.Database, many.String()); err != nil {
		t.Fatal(err)
	}
	got = prepare()
	if len(got) != 2 || !strings.Contains(got[0], `"tenant_19" and 1 more of the database`) || strings.Contains(got[0], "tenant_20") ||
		!strings.Contains(got[0], `\gexec`) {
		t.Fatalf("advice for 21 schemas: %q", got)
	}
}
