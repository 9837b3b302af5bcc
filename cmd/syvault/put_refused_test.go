package main

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/syvault/syvault/http/client"
)

// A PostgreSQL target's databases are set one transaction each, in turn: a PUT refused in
// its second database (a migration holding the table there) kept its new grants in the
// first, which no recorded setting names: lease users held privileges the audit log says
// were refused (or lost ones it says they keep). A PUT refused partway now sets the
// database back to the target as recorded.
func TestTarget_ARefusedPutLeavesTheGrantsAsRecorded(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	tg := eng.target(t)
	dbs := []string{tg.Database, eng.target(t).Database}
	slices.Sort(dbs)
	first, last := dbs[0], dbs[1]
	grants := func(privileges ...string) []client.Grant {
		return []client.Grant{{Database: first, Schema: "public", Tables: []string{"granted"}, Privileges: privileges},
			{Database: last, Schema: "public", Tables: []string{"granted"}, Privileges: privileges}}
	}
	tg.Grants = grants("SELECT")
	reg := mustRegister(t, admin, tg)

	migration, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/"+last+"?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer migration.Close(ctx)
	if _, err := migration.Exec(ctx, "BEGIN; ALTER TABLE granted ADD COLUMN w int"); err != nil {
		t.Fatal(err)
	}
	upd := tg
	upd.Grants = grants("SELECT", "INSERT")
	_, err = admin.UpdateTarget(ctx, reg.RecordUID, upd)
	mustCode(t, err, 422, "target_unverified")
	if _, err := migration.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}

	conn, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/"+first+"?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var insert, sel bool
	if err := conn.QueryRow(ctx, "SELECT has_table_privilege($1, 'public.granted', 'INSERT'), has_table_privilege($1, 'public.granted', 'SELECT')",
		"syvault_"+reg.RecordUID).Scan(&insert, &sel); err != nil {
		t.Fatal(err)
	}
	if insert || !sel {
		t.Fatalf("after a refused PUT, the group in %s holds INSERT %v, SELECT %v; want the recorded SELECT alone", first, insert, sel)
	}
}
