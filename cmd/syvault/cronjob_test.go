package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/syvault/syvault/http/client"
)

// seedInitContainer is the product document's CronJob init container script, verbatim.
const seedInitContainer = `sy dynamic lease create \
--record-uid 7Kj9mNpQ2xRs \
--ttl 3600 \
--output /shared/db-creds.json`

// TestCronJob_SeedCommand runs the seed's init-container command through sh with the
// environment the seed gives it (SY_SERVER, SY_CLIENT_ID, SY_PRIVATE_KEY from a Secret),
// then logs in to PostgreSQL with what it wrote, as the application container would.
func TestCronJob_SeedCommand(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	target := mustTarget(t, admin, eng)
	env, _ := appEnv(t, admin, srv.HTTP.URL(), buildSy(t), target.RecordUID)
	shared := t.TempDir()
	script := strings.NewReplacer("7Kj9mNpQ2xRs", target.RecordUID, "/shared/", shared+"/").Replace(seedInitContainer)
	cmd := exec.Command("sh", "-c", script)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the seed's command failed: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "PRIVATE KEY") {
		t.Fatal("the command printed the private key")
	}
	path := filepath.Join(shared, "db-creds.json")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", path, st.Mode().Perm())
	}
	if entries, _ := os.ReadDir(shared); len(entries) != 1 {
		t.Fatalf("the shared volume holds %d files, want only db-creds.json", len(entries))
	}
	var creds client.Lease
	data, _ := os.ReadFile(path)
	if err := json.Unmarshal(data, &creds); err != nil {
		t.Fatal(err)
	}
	sess, err := eng.login(ctx, creds.ConnectionString)
	if err != nil {
		t.Fatalf("the application cannot log in with the written credentials: %v", err)
	}
	if err := sess.Exec(ctx, "SELECT * FROM granted"); err != nil {
		t.Fatalf("granted SELECT refused: %v", err)
	}
	sess.Close()
	if err := admin.RevokeLease(ctx, creds.LeaseID); err != nil {
		t.Fatal(err)
	}
}
