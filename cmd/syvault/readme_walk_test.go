package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/internal/logbuf"
)

// TestReadme_Walk runs the README's Quickstart (setup, PostgreSQL, MySQL/MariaDB), its CLI
// section and its Python SDK sample as a new operator would, in one bash from the
// repository's root, against a server built from this tree. The blocks run verbatim but
// for what cannot be: the server's address and data directory (the test's own), the
// database and MySQL admin names (the database servers are shared), and the sample's
// client_id and record_uid placeholders, filled in from what the blocks before printed.
//
// It checks what the reader is told will happen: each lease is created, its credentials
// log in and write, each revocation answers 204, every lease user is gone afterwards, the
// files that hold secrets are readable by their owner alone, and the repository's work
// tree has no new file holding a secret or named like one.
func TestReadme_Walk(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "psql", "mysql", "git", "go"} {
		_, err := exec.LookPath(tool)
		requireDB(t, "the README's command "+tool, err)
	}
	err := exec.Command("/usr/bin/python3", "-c", "import cryptography, ensurepip, setuptools, wheel").Run()
	requireDB(t, "Debian's python3 with cryptography, venv, setuptools and wheel (deploy/dev/python-deps.sh)", err)
	pg, my := postgresEngine(t), mysqlEngine(t)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	before := workTree(t, root)

	b := startBinary(t)
	admin := b.admin(t)
	t.Cleanup(func() { revokeEvery(t, admin) })

	pgDB, myDB := scratchName(), scratchName()
	myAdmin := "sv_walk_" + strings.ToLower(randomSecret()[:8])
	t.Cleanup(func() {
		dropScratch(pgDB)
		_ = my.admin(context.Background(), "DROP DATABASE IF EXISTS "+myDB)
		my.dropMarkerRoles(myAdmin)
		_ = my.admin(context.Background(), "DROP USER IF EXISTS '"+myAdmin+"'@'%'")
	})

	// The MySQL Quickstart makes its admin with the statements of "Preparing a target".
	mysqlBlock := readmeBlock(t, "quickstart-mysql")
	if !strings.Contains(mysqlBlock, readmeBlock(t, "admin-sql-mysql")) {
		t.Fatal("the MySQL Quickstart does not make its admin with the statements of \"Preparing a target\"")
	}
	database := regexp.MustCompile(`\b` + readmeDatabase + `\b`)
	sample := readmeBlock(t, "python-sample")
	script := strings.Join([]string{
		"set -euo pipefail",
		readmeBlock(t, "quickstart-setup"),
		database.ReplaceAllLiteralString(readmeBlock(t, "quickstart-postgresql"), pgDB),
		adminWord.ReplaceAllLiteralString(database.ReplaceAllLiteralString(mysqlBlock, myDB), myAdmin),
		readmeBlock(t, "cli"),
		readmeBlock(t, "python-setup"),
		// The sample, saved where python-setup left the shell, its placeholders filled in.
		"cat > sample.py <<'SYVAULT_SAMPLE'\n" + sample + "SYVAULT_SAMPLE",
		`sed -i -e "s/c9a1b2d3-4e5f-6789-abcd-ef0123456789/$(field myapp-client.json client_id)/" -e "s/7Kj9mNpQ2xRs/$RECORD_UID/" sample.py`,
		"venv/bin/python sample.py",
		`echo "WORK=$WORK"`,
	}, "\n")
	script = strings.ReplaceAll(script, "127.0.0.1:8200", b.addr)
	script = strings.ReplaceAll(script, "data/admin-client.json", filepath.Join(b.dir, AdminClientFile))
	for _, placeholder := range []string{"c9a1b2d3-4e5f-6789-abcd-ef0123456789", "7Kj9mNpQ2xRs", "127.0.0.1:8200", "data/admin-client.json"} {
		if !strings.Contains(sample+readmeBlock(t, "quickstart-setup")+readmeBlock(t, "cli"), placeholder) {
			t.Fatalf("the README's blocks no longer hold %q: update the substitutions", placeholder)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = root
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "SY_") && !strings.HasPrefix(name, "PG") && name != "SM_TOKEN" && name != "MYSQL_PWD" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var out logbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	runErr := cmd.Run()
	output := out.String()
	t.Logf("the README's blocks ran in %v", time.Since(start).Round(time.Millisecond))
	if runErr != nil {
		t.Fatalf("the README's blocks failed: %v\n%s", runErr, output)
	}
	work := ""
	if i := strings.LastIndex(output, "\nWORK="); i >= 0 {
		work = strings.TrimSpace(output[i+len("\nWORK="):])
	}
	if !strings.HasPrefix(work, os.TempDir()) {
		t.Fatalf("no WORK directory under %s in the output:\n%s", os.TempDir(), output)
	}
	t.Cleanup(func() { _ = os.RemoveAll(work) })

	// The leases the Quickstart printed, its logins and its revocations.
	leases := printedLeases(output)
	if len(leases) != 2 || !strings.HasPrefix(leases[0].ConnectionString, "postgresql://") || !strings.HasPrefix(leases[1].ConnectionString, "mysql://") {
		t.Fatalf("want the PostgreSQL and the MySQL lease printed, got %+v\n%s", leases, output)
	}
	for _, want := range []string{" 1 | book", "1\tbook", "Connect with: postgresql://"} {
		if !strings.Contains(output, want) {
			t.Errorf("the output lacks %q:\n%s", want, output)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^204$`).FindAllString(output, -1)); n != 2 {
		t.Errorf("%d revocations answered 204, want 2:\n%s", n, output)
	}

	// Every lease (the two above, the CLI's and the sample's) was created and has ended,
	// and its user is gone.
	if page, err := admin.ListLeases(ctx, client.ListLeasesOptions{}); err != nil || len(page.Data) != 0 {
		t.Fatalf("active leases after the README: %+v, %v", page, err)
	}
	audit, err := admin.Audit(ctx, client.AuditOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	targets, err := admin.ListTargets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	engineOf := map[string]engine{}
	for _, tg := range targets {
		engineOf[tg.RecordUID] = map[string]engine{"postgresql": pg, "mysql": my}[tg.Engine]
	}
	activated := 0
	for _, e := range audit.Data {
		if e.Type == "lease.activated" {
			activated++
			mustBeGone(t, engineOf[e.RecordUID], e.Username, 10*time.Second)
		}
	}
	if activated != 4 {
		t.Fatalf("%d leases activated, want 4 (PostgreSQL, MySQL, CLI, Python):\n%s", activated, output)
	}

	// The files that hold secrets: the owner's alone, and none in the work tree.
	err = filepath.WalkDir(work, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(path, filepath.Join(work, "venv")) || strings.HasSuffix(path, ".pub.pem") {
			return err // a public key is no secret
		}
		if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v: others may read it", path, st.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{b.adminPrivateKey(t)}
	for _, l := range leases {
		secrets = append(secrets, l.Password)
	}
	for path := range workTree(t, root) {
		if before[path] {
			continue
		}
		if secretName.MatchString(filepath.Base(path)) {
			t.Errorf("the README left %s in the work tree", path)
		}
		if data, err := os.ReadFile(filepath.Join(root, path)); err == nil && len(data) < 1<<20 {
			for _, s := range secrets {
				if bytes.Contains(data, []byte(s)) {
					t.Errorf("the README left a secret in %s", path)
				}
			}
		}
	}
}

// secretName matches the names of files that hold secrets (.gitignore lists them too).
var secretName = regexp.MustCompile(`^(target.*\.json|lease.*\.json|creds\.json|admin-client\.json|.*\.pem|.*\.key)$`)

// workTree lists the files git sees as untracked or ignored in the work tree at root,
// directories expanded.
func workTree(t *testing.T, root string) map[string]bool {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "status", "--porcelain", "--ignored", "--untracked-files=all").Output()
	if err != nil {
		t.Fatalf("git status: %v", err)
	}
	files := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, "?? ") && !strings.HasPrefix(line, "!! ") {
			continue
		}
		path := strings.TrimSuffix(line[3:], "/")
		_ = filepath.WalkDir(filepath.Join(root, path), func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(root, p)
				files[rel] = true
			}
			return nil
		})
	}
	return files
}

// printedLeases decodes the lease answers (JSON objects starting with "lease_id") in out.
func printedLeases(out string) []client.Lease {
	var leases []client.Lease
	for rest := out; ; {
		i := strings.Index(rest, `{"lease_id"`)
		if i < 0 {
			return leases
		}
		var l client.Lease
		dec := json.NewDecoder(strings.NewReader(rest[i:]))
		if err := dec.Decode(&l); err == nil && l.Password != "" {
			leases = append(leases, l)
		}
		rest = rest[i+1:]
	}
}

// adminPrivateKey is the private key of the admin client --dev wrote.
func (b *binary) adminPrivateKey(t *testing.T) string {
	t.Helper()
	var ac AdminClient
	data, _ := os.ReadFile(filepath.Join(b.dir, AdminClientFile))
	if err := json.Unmarshal(data, &ac); err != nil {
		t.Fatal(err)
	}
	return ac.PrivateKey
}

// revokeEvery revokes every active lease, best effort, so that a failed test leaves no
// user in the shared databases.
func revokeEvery(t *testing.T, admin *client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	page, err := admin.ListLeases(ctx, client.ListLeasesOptions{})
	if err != nil {
		return
	}
	for _, l := range page.Data {
		if err := admin.RevokeLease(ctx, l.LeaseID); err != nil {
			t.Logf("cleanup: lease %s may have left a database user: %v", l.LeaseID, err)
		}
	}
}
