package postgres_test

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
	"github.com/syvault/syvault/workers/postgres"
)

// TestDriver_DropUsers: a batch of an expiry storm drops every user in it, whatever each
// one is doing: one with an open session (ended), one that owns a table it made as itself
// (handed to the group, then dropped), one gone already, and plain ones; each answer is
// nil, and nothing of them is left.
func TestDriver_DropUsers(t *testing.T) {
	c, s, d, admin, uid := setUp(t)
	ctx := t.Context()
	grants := []events.Grant{{Database: s.Database, Schema: "public", Privileges: []string{"SELECT", "INSERT", "CREATE"}}}
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: grants}); err != nil {
		t.Fatal(err)
	}
	var leases []lease
	for range 6 {
		leases = append(leases, newLease(t, d, admin, uid, grants))
	}
	connected, owner := leases[0], leases[1]
	conn, err := pgx.ConnectConfig(ctx, c.connConfig(connected.user, connected.password, s.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := c.execIn(ctx, owner.user, owner.password, s.Database, "SET ROLE NONE; CREATE TABLE public.batch_owned (id int)"); err != nil {
		t.Fatal(err)
	}
	drop(t, d, admin, uid, leases[2], grants) // gone before the batch
	reqs := make([]driver.DropUserRequest, len(leases))
	for i, l := range leases {
		reqs[i] = driver.DropUserRequest{Conn: admin, RecordUID: uid, Username: l.user, Grants: grants}
	}
	for i, err := range d.DropUsers(ctx, reqs) {
		if err != nil {
			t.Errorf("%s: %v", leases[i].user, err)
		}
	}
	for _, l := range leases {
		if c.roleExists(t, l.user) {
			t.Errorf("%s still exists", l.user)
		}
	}
	if err := conn.Ping(ctx); err == nil {
		t.Error("the session of a dropped user still answers")
	}
	if got := c.owner(t, s.Database, "SELECT tableowner::text FROM pg_tables WHERE tablename = 'batch_owned'"); got != "syvault_"+uid {
		t.Errorf("batch_owned is owned by %s; want the target's group", got)
	}
	if err := c.execIn(ctx, "postgres", c.superPW, s.Database, "DROP TABLE public.batch_owned"); err != nil {
		t.Fatal(err)
	}
}

// TestDriver_NoPlanOutlivesItsCall: the admin sessions plan each statement at each call,
// so each call reads the catalog as it is then. (A statement a session had prepared was
// planned once for all its calls after the fifth: the batched drop's look-up of its
// users, first run while pg_authid was a few pages long, kept a plan that reads every
// role as the roles grew, and at 100,000 roles each batch read them all.)
func TestDriver_NoPlanOutlivesItsCall(t *testing.T) {
	_, s, d, admin, uid := setUp(t)
	ctx := t.Context()
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants}); err != nil {
		t.Fatal(err)
	}
	// Enough batches for six or more on each of the pool's sessions.
	var leases []lease
	for range 48 {
		leases = append(leases, newLease(t, d, admin, uid, s.Grants))
	}
	for i := 0; i < len(leases); i += 2 {
		reqs := []driver.DropUserRequest{
			{Conn: admin, RecordUID: uid, Username: leases[i].user, Grants: s.Grants},
			{Conn: admin, RecordUID: uid, Username: leases[i+1].user, Grants: s.Grants},
		}
		for j, err := range d.DropUsers(ctx, reqs) {
			if err != nil {
				t.Fatalf("%s: %v", reqs[j].Username, err)
			}
		}
	}
	kept, err := postgres.PlansKept(ctx, d, admin, admin.Database)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) > 0 {
		t.Errorf("the admin sessions keep plans for: %q", kept)
	}
}

// TestDriver_DropUsersAnswersEachCallForOneUser: a user twice in one batch (a call whose
// waiter gave up, still pending, beside its redelivery's) whose drop fails on its own was
// answered for the last of the two only: the other was told it succeeded, and its
// revocation recorded a drop that did not happen. Each is answered now.
func TestDriver_DropUsersAnswersEachCallForOneUser(t *testing.T) {
	c, s, d, admin, uid := setUp(t)
	ctx := t.Context()
	grants := []events.Grant{{Database: s.Database, Schema: "public", Privileges: []string{"SELECT", "CREATE"}}}
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: grants}); err != nil {
		t.Fatal(err)
	}
	owner, plain := newLease(t, d, admin, uid, grants), newLease(t, d, admin, uid, grants)
	if err := c.execIn(ctx, owner.user, owner.password, s.Database, "SET ROLE NONE; CREATE TABLE public.dup_owned (id int)"); err != nil {
		t.Fatal(err)
	}
	// A lock on what the user owns holds its hand-over past the drop's lock timeout.
	holder, err := pgx.ConnectConfig(ctx, c.connConfig("postgres", c.superPW, s.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE public.dup_owned IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	req := func(user string) driver.DropUserRequest {
		return driver.DropUserRequest{Conn: admin, RecordUID: uid, Username: user, Grants: grants}
	}
	errs := d.DropUsers(ctx, []driver.DropUserRequest{req(owner.user), req(owner.user), req(plain.user)})
	if errs[0] == nil || errs[1] == nil || errs[2] != nil {
		t.Fatalf("answers %v; want the held user's drop failed for both its calls, the other dropped", errs)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	drop(t, d, admin, uid, owner, grants)
	if err := c.execIn(ctx, "postgres", c.superPW, s.Database, "DROP TABLE public.dup_owned"); err != nil {
		t.Fatal(err)
	}
}
