package mysql_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
	"github.com/syvault/syvault/workers/drivertest"
)

// TestDriver_UpdateUserNarrows: a lease active when its target's grants shrink loses
// what was taken away (a database-wide privilege, a table, a privilege on a table) and
// keeps the rest, with no moment of having less than the new grants.
func TestDriver_UpdateUserNarrows(t *testing.T) {
	s, sc, d, admin := setUp(t)
	ctx := t.Context()
	wide := []events.Grant{
		{Database: sc.Database, Privileges: []string{"SELECT", "INSERT", "DELETE"}},
		{Database: sc.Database, Tables: []string{"granted"}, Privileges: []string{"UPDATE"}},
	}
	narrow := []events.Grant{{Database: sc.Database, Tables: []string{"granted"}, Privileges: []string{"SELECT"}}}
	user, password, uid := drivertest.NewUsername(), drivertest.NewPassword(), drivertest.NewRecordUID()
	t.Cleanup(func() {
		_ = d.DropUser(context.Background(), driver.DropUserRequest{Conn: admin, Username: user})
	})
	if err := d.CreateUser(ctx, driver.CreateUserRequest{Conn: admin, RecordUID: uid, Username: user, Password: password,
		ExpiresAt: time.Now().Add(time.Hour), Grants: wide}); err != nil {
		t.Fatal(err)
	}
	exec := func(q string) error {
		sess, err := s.login(ctx, user, password, sc.Database)
		if err != nil {
			return err
		}
		defer sess.Close()
		return sess.Exec(ctx, q)
	}
	if err := exec("INSERT INTO denied VALUES (1)"); err != nil {
		t.Fatalf("wide grants do not work: %v", err)
	}
	if err := d.UpdateUser(ctx, driver.UpdateUserRequest{Conn: admin, RecordUID: uid, Username: user, Grants: narrow}); err != nil {
		t.Fatal(err)
	}
	// REVOKE ALL takes roles too (MariaDB): the user must still carry its target's marker.
	if users, err := d.ListUsers(ctx, driver.ListUsersRequest{Conn: admin, RecordUID: uid}); err != nil || len(users) != 1 || !users[0].Marked {
		t.Fatalf("after UpdateUser, the target's users are %+v (%v); want %s, marked", users, err, user)
	}
	if err := exec("SELECT id FROM granted"); err != nil {
		t.Fatalf("the still granted SELECT: %v", err)
	}
	for _, q := range []string{"INSERT INTO granted VALUES (2)", "DELETE FROM granted", "UPDATE granted SET id = 3", "SELECT id FROM denied"} {
		if err := exec(q); err == nil {
			t.Errorf("%s succeeded after the grants were narrowed", q)
		}
	}
	// Idempotent, and a missing user is no error.
	if err := d.UpdateUser(ctx, driver.UpdateUserRequest{Conn: admin, Username: user, Grants: narrow}); err != nil {
		t.Fatal(err)
	}
	if err := d.UpdateUser(ctx, driver.UpdateUserRequest{Conn: admin, Username: drivertest.NewUsername(), Grants: narrow}); err != nil {
		t.Fatalf("a missing user: %v", err)
	}
}

// TestDriver_MigrationByLeases: on MySQL tables have no owner: a lease with CREATE and
// ALTER creates a table and an index and is revoked, the next lease of the target alters,
// reads and writes it, and a lease granted another database sees none of it. DEFINER
// objects are refused at registration (events.NormalizeTarget), so none can outlive or
// block a drop.
func TestDriver_MigrationByLeases(t *testing.T) {
	s, sc, d, admin := setUp(t)
	other := s.newScratch(t)
	ctx := t.Context()
	// The admin may grant what a migration needs.
	if _, err := s.root.ExecContext(ctx, "GRANT ALTER, INDEX ON `"+strings.ReplaceAll(sc.Database, "_", `\_`)+"`.* TO '"+s.adminName+"'@'%' WITH GRANT OPTION"); err != nil {
		t.Fatal(err)
	}
	grants := []events.Grant{{Database: sc.Database, Privileges: []string{"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "INDEX"}}}
	newLease := func(g []events.Grant) (string, string) {
		user, password := drivertest.NewUsername(), drivertest.NewPassword()
		t.Cleanup(func() { _ = d.DropUser(context.Background(), driver.DropUserRequest{Conn: admin, Username: user}) })
		if err := d.CreateUser(ctx, driver.CreateUserRequest{Conn: admin, Username: user, Password: password,
			ExpiresAt: time.Now().Add(time.Hour), Grants: g}); err != nil {
			t.Fatal(err)
		}
		return user, password
	}
	run := func(user, password, db, q string) error {
		sess, err := s.login(ctx, user, password, db)
		if err != nil {
			return err
		}
		defer sess.Close()
		return sess.Exec(ctx, q)
	}
	u1, p1 := newLease(grants)
	for _, q := range []string{"CREATE TABLE orders2 (id int primary key, item varchar(20))", "CREATE INDEX orders2_item ON orders2 (item)"} {
		if err := run(u1, p1, sc.Database, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := d.DropUser(ctx, driver.DropUserRequest{Conn: admin, Username: u1}); err != nil {
		t.Fatal(err)
	}
	u2, p2 := newLease(grants)
	for _, q := range []string{"ALTER TABLE orders2 ADD COLUMN qty int", "INSERT INTO orders2 VALUES (1, 'book', 2)", "UPDATE orders2 SET qty = 3", "SELECT * FROM orders2"} {
		if err := run(u2, p2, sc.Database, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	u3, p3 := newLease([]events.Grant{{Database: other.Database, Privileges: []string{"SELECT", "INSERT", "CREATE"}}})
	if err := run(u3, p3, other.Database, "SELECT * FROM `"+sc.Database+"`.orders2"); err == nil {
		t.Fatal("a lease of another target read the migrated table")
	}
}
