package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/syvault/syvault/cmd/sy/cli"
	"github.com/syvault/syvault/http/client"
)

// On a PostgreSQL target where every role may create in public (14's default, kept by
// upgraded clusters) a lease user can leave a function shadowing a built-in one, kept at
// its revocation. The registration is not refused, but its answer and sy's stderr say
// where and how to take it away; the target as read later names no warning (the database
// may have changed since), and once taken away an update has none.
func TestTarget_RegistrationWarnsWhereEveryRoleMayCreate(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	srv := mustServer(t, "", nil)
	tg := eng.target(t)
	db, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/"+tg.Database+"?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	if _, err := db.Exec(ctx, "GRANT CREATE ON SCHEMA public TO PUBLIC"); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "target.json")
	data, _ := json.Marshal(tg)
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sy := syRunner{t, map[string]string{cli.EnvCredentialsFile: filepath.Join(srv.Dir, AdminClientFile)}}

	code, out, errs := sy.run("dynamic", "target", "create", "-f", file)
	if code != 0 {
		t.Fatalf("target create: exit %d: %s", code, errs)
	}
	var reg client.Target
	if err := json.Unmarshal([]byte(out), &reg); err != nil || reg.RecordUID == "" {
		t.Fatalf("target create printed %q (%v)", out, err)
	}
	if len(reg.Warnings) != 1 || !strings.Contains(reg.Warnings[0], `schema "public" of the database "`+tg.Database+`"`) ||
		!strings.Contains(reg.Warnings[0], `REVOKE CREATE ON SCHEMA "public" FROM PUBLIC`) {
		t.Fatalf("the registration's warnings: %q", reg.Warnings)
	}
	if !strings.Contains(errs, "sy: warning: "+reg.Warnings[0]) {
		t.Errorf("sy's stderr does not show the warning: %q", errs)
	}
	for _, s := range append([]string{out, errs}, reg.Warnings...) {
		if strings.Contains(s, tg.AdminPassword) {
			t.Fatalf("the admin password is shown: %s", s)
		}
	}
	admin := srv.admin(t)
	got, err := admin.GetTarget(ctx, reg.RecordUID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Warnings) != 0 {
		t.Errorf("a read of the target names warnings: %q", got.Warnings)
	}

	if _, err := db.Exec(ctx, "REVOKE CREATE ON SCHEMA public FROM PUBLIC"); err != nil {
		t.Fatal(err)
	}
	code, out, errs = sy.run("dynamic", "target", "update", reg.RecordUID, "-f", file)
	if code != 0 || strings.Contains(out, "warnings") || errs != "" {
		t.Fatalf("update after the REVOKE: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}
