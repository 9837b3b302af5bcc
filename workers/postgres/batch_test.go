package postgres_test

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
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
