package main

import (
	"context"
	"testing"

	"github.com/syvault/syvault/http/client"
)

// engineCase is one engine's statements for the tests below.
type engineCase struct {
	eng engine
	// migrate creates a table and an index; evolve alters the table and uses it.
	migrate, evolve []string
	// grants returns a grant on the whole database (schema public on PostgreSQL).
	grants func(db string, privileges ...string) []client.Grant
	// migrationPrivileges are what a migration needs.
	migrationPrivileges []string
}

func engineCases(t *testing.T) []engineCase {
	return []engineCase{
		{
			eng:     postgresEngine(t),
			migrate: []string{"CREATE TABLE orders2 (id int primary key, item text)", "CREATE INDEX orders2_item ON orders2 (item)"},
			evolve:  []string{"ALTER TABLE orders2 ADD COLUMN qty int", "INSERT INTO orders2 VALUES (1, 'book', 2)", "UPDATE orders2 SET qty = 3", "SELECT * FROM orders2"},
			grants: func(db string, privileges ...string) []client.Grant {
				return []client.Grant{{Database: db, Schema: "public", Privileges: privileges}}
			},
			migrationPrivileges: []string{"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE"},
		},
		{
			eng:     mysqlEngine(t),
			migrate: []string{"CREATE TABLE orders2 (id int primary key, item varchar(20))", "CREATE INDEX orders2_item ON orders2 (item)"},
			evolve:  []string{"ALTER TABLE orders2 ADD COLUMN qty int", "INSERT INTO orders2 VALUES (1, 'book', 2)", "UPDATE orders2 SET qty = 3", "SELECT * FROM orders2"},
			grants: func(db string, privileges ...string) []client.Grant {
				return []client.Grant{{Database: db, Privileges: privileges}}
			},
			migrationPrivileges: []string{"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "INDEX"},
		},
	}
}

func mustSession(t *testing.T, eng engine, l *client.Lease) session {
	t.Helper()
	s, err := eng.login(context.Background(), l.ConnectionString)
	if err != nil {
		t.Fatalf("login with the lease: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestMigration_ThroughTheAPI is the product document's migration recipe, through the
// HTTP API on both engines: lease 1 runs a migration (a table and an index) and is
// revoked; lease 2 of the same target alters that table and reads and writes it; a lease
// of another target sees nothing of it.
func TestMigration_ThroughTheAPI(t *testing.T) {
	for _, ec := range engineCases(t) {
		t.Run(ec.eng.name, func(t *testing.T) {
			ctx := context.Background()
			srv := mustServer(t, "", nil)
			admin := srv.admin(t)
			tg := ec.eng.target(t)
			tg.Grants = ec.grants(tg.Database, ec.migrationPrivileges...)
			target := mustRegister(t, admin, tg)
			// Another target: on PostgreSQL the same database and schema (tables there
			// belong to one target's group, not to the other's); on MySQL, where grants
			// are per database, another database.
			other := ec.eng.target(t)
			if ec.eng.name == "postgresql" {
				other.Database = tg.Database
			}
			other.Grants = ec.grants(other.Database, ec.migrationPrivileges...)
			otherT := mustRegister(t, admin, other)

			first := mustLease(t, admin, target.RecordUID, 600)
			s1 := mustSession(t, ec.eng, first)
			for _, q := range ec.migrate {
				if err := s1.Exec(ctx, q); err != nil {
					t.Fatalf("migration with lease 1: %s: %v", q, err)
				}
			}
			if err := admin.RevokeLease(ctx, first.LeaseID); err != nil {
				t.Fatal(err)
			}
			mustBeGone(t, ec.eng, first.Username, 0)

			second := mustLease(t, admin, target.RecordUID, 600)
			s2 := mustSession(t, ec.eng, second)
			for _, q := range ec.evolve {
				if err := s2.Exec(ctx, q); err != nil {
					t.Fatalf("lease 2 on the migrated table: %s: %v", q, err)
				}
			}
			stranger := mustLease(t, admin, otherT.RecordUID, 600)
			s3 := mustSession(t, ec.eng, stranger)
			ref := tg.Database + ".orders2"
			if ec.eng.name == "postgresql" {
				ref = "public.orders2"
			}
			for _, q := range []string{"SELECT * FROM " + ref, "INSERT INTO " + ref + " VALUES (2, 'pen', 1)"} {
				if err := s3.Exec(ctx, q); err == nil {
					t.Fatalf("a lease of another target ran %s", q)
				}
			}
		})
	}
}

// TestTarget_NarrowedGrantsReachActiveLeases: after PUT narrows a target's grants, a
// lease active before it and one created after it hold only what remains, on both
// engines.
func TestTarget_NarrowedGrantsReachActiveLeases(t *testing.T) {
	for _, ec := range engineCases(t) {
		t.Run(ec.eng.name, func(t *testing.T) {
			ctx := context.Background()
			srv := mustServer(t, "", nil)
			admin := srv.admin(t)
			tg := ec.eng.target(t)
			tg.Grants = ec.grants(tg.Database, "SELECT", "INSERT", "DELETE")
			target := mustRegister(t, admin, tg)
			before := mustLease(t, admin, target.RecordUID, 600)
			sb := mustSession(t, ec.eng, before)
			if err := sb.Exec(ctx, "INSERT INTO secret VALUES (1)"); err != nil {
				t.Fatalf("the wide grants do not work: %v", err)
			}
			tg.Grants = ec.grants(tg.Database, "SELECT")
			tg.Grants[0].Tables = []string{"granted"}
			if _, err := admin.UpdateTarget(ctx, target.RecordUID, tg); err != nil {
				t.Fatal(err)
			}
			after := mustLease(t, admin, target.RecordUID, 600)
			for name, l := range map[string]*client.Lease{"active before the update": before, "created after it": after} {
				s := mustSession(t, ec.eng, l)
				if err := s.Exec(ctx, "SELECT id FROM granted"); err != nil {
					t.Errorf("%s: the still granted SELECT: %v", name, err)
				}
				for _, q := range []string{"INSERT INTO granted VALUES (2)", "DELETE FROM granted", "SELECT id FROM secret", "INSERT INTO secret VALUES (3)"} {
					if err := s.Exec(ctx, q); err == nil {
						t.Errorf("%s: %s succeeded after the target was narrowed", name, q)
					}
				}
			}
		})
	}
}
