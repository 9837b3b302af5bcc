package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/workers"
	"github.com/syvault/syvault/workers/driver"
	"github.com/syvault/syvault/workers/drivertest"
)

// reconcileOut runs 'syvault reconcile' on the data directory of a stopped dev server.
func reconcileOut(t *testing.T, dir string, args ...string) (workersReports []workers.TargetReport, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := []string{"reconcile", "--data-dir", dir, "--master-key-file", filepath.Join(dir, "master.key")}
	var stdout, stderr bytes.Buffer
	if err := run(ctx, append(base, args...), &stdout, &stderr); err != nil {
		t.Fatalf("syvault reconcile %v: %v\n%s\n%s", args, err, stdout.String(), stderr.String())
	}
	if !strings.Contains(strings.Join(args, " "), "json") {
		return nil, stdout.String()
	}
	var out struct {
		Targets []workers.TargetReport `json:"targets"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("reconcile --format json printed %q: %v", stdout.String(), err)
	}
	return out.Targets, stdout.String()
}

func findingOf(reports []workers.TargetReport, uid, username string) *workers.Finding {
	for _, r := range reports {
		if r.RecordUID != uid {
			continue
		}
		for _, f := range r.Findings {
			if f.Username == username {
				return &f
			}
		}
	}
	return nil
}

// TestReconcile_RestoredDataDirectory restores a server's data directory from a copy
// taken before a lease was made: the lease's user is then one no lease accounts for.
// A dry run reports it and changes nothing; --apply drops it, records the drop in the
// audit trail, and leaves the user of the lease the store knows, a look-alike user
// SyVault did not make (named vf_tmp_ too) and the admin alone. A server reconciling
// every second does the same for a marked user left behind later.
func TestReconcile_RestoredDataDirectory(t *testing.T) {
	for _, eng := range []engine{postgresEngine(t), mysqlEngine(t)} {
		t.Run(eng.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			dir := t.TempDir()
			srv := mustServer(t, dir, nil)
			c := srv.admin(t)
			input := eng.target(t)
			tg := mustRegister(t, c, input)
			kept := mustLease(t, c, tg.RecordUID, 3600)
			if err := srv.Close(); err != nil {
				t.Fatal(err)
			}
			backup := t.TempDir()
			if err := os.CopyFS(backup, os.DirFS(dir)); err != nil {
				t.Fatal(err)
			}

			srv = mustServer(t, dir, nil)
			lost := mustLease(t, srv.admin(t), tg.RecordUID, 3600)
			if err := srv.Close(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = eng.admin(context.Background(), "DROP USER IF EXISTS "+lost.Username) })
			restore(t, backup, dir)

			foreign := drivertest.NewUsername()
			if err := eng.admin(ctx, "CREATE USER "+foreign); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = eng.admin(context.Background(), "DROP USER IF EXISTS "+foreign) })

			reports, _ := reconcileOut(t, dir, "--format", "json")
			f := findingOf(reports, tg.RecordUID, lost.Username)
			if f == nil || f.Verdict != workers.VerdictOrphan || f.Dropped {
				t.Fatalf("dry run: finding for %s = %+v; want an orphan, not dropped (reports %+v)", lost.Username, f, reports)
			}
			for _, u := range []string{kept.Username, foreign} {
				if findingOf(reports, tg.RecordUID, u) != nil {
					t.Errorf("dry run reports %s, which it must leave alone", u)
				}
			}
			if ok, err := eng.userExists(ctx, lost.Username); err != nil || !ok {
				t.Fatalf("the dry run dropped %s (exists %v, %v)", lost.Username, ok, err)
			}
			_, text := reconcileOut(t, dir, "--target", tg.RecordUID)
			if !strings.Contains(text, lost.Username+" would drop") || !strings.Contains(text, "nothing was changed") {
				t.Errorf("text report does not say what it would drop:\n%s", text)
			}

			reports, _ = reconcileOut(t, dir, "--apply", "--format", "json")
			if f := findingOf(reports, tg.RecordUID, lost.Username); f == nil || !f.Dropped {
				t.Fatalf("--apply: finding for %s = %+v; want dropped", lost.Username, f)
			}
			mustBeGone(t, eng, lost.Username, 0)
			for _, u := range []string{kept.Username, foreign, tg.AdminUsername} {
				if ok, err := eng.userExists(ctx, u); err != nil || !ok {
					t.Errorf("%s was touched: exists %v, %v", u, ok, err)
				}
			}
			reports, _ = reconcileOut(t, dir, "--apply", "--format", "json")
			if len(reports) != 1 || len(reports[0].Findings) != 0 || reports[0].Live != 1 {
				t.Errorf("a second run found %+v; want nothing left but the live lease's user", reports)
			}

			// The server comes back with a sweep every second; what it drops is audited too.
			srv = mustServer(t, dir, func(cfg *Config) { cfg.ReconcileInterval = time.Second })
			c = srv.admin(t)
			sess, err := eng.login(ctx, kept.ConnectionString)
			if err != nil {
				t.Fatalf("the kept lease's user cannot log in: %v", err)
			}
			sess.Close()
			stray := drivertest.NewUsername()
			t.Cleanup(func() { _ = eng.admin(context.Background(), "DROP USER IF EXISTS "+stray) })
			leftBehind(t, srv, input, tg.RecordUID, stray)
			mustBeGone(t, eng, stray, 30*time.Second)

			var dropped []client.AuditEvent
			eventually(t, 10*time.Second, "both drops in the audit", func() (bool, error) {
				page, err := c.Audit(ctx, client.AuditOptions{RecordUID: tg.RecordUID, Limit: 1000})
				if err != nil {
					return false, err
				}
				dropped = dropped[:0]
				for _, e := range page.Data {
					if e.Type == "orphan.dropped" {
						dropped = append(dropped, e)
					}
					if strings.Contains(e.Reason, lost.Password) || strings.Contains(e.Reason, kept.Password) {
						t.Fatalf("an audit event holds a lease password: %+v", e)
					}
				}
				return len(dropped) == 2, nil
			})
			if dropped[0].Username != lost.Username || dropped[1].Username != stray || dropped[0].Outcome != "ok" ||
				!strings.Contains(dropped[0].Reason, lost.Username) {
				t.Errorf("audit: %+v; want the drops of %s then %s", dropped, lost.Username, stray)
			}
			if ok, err := eng.userExists(ctx, kept.Username); err != nil || !ok {
				t.Errorf("the sweep touched the kept lease's user: exists %v, %v", ok, err)
			}
		})
	}
}

// restore replaces dir with the copy in backup, as an operator restoring an old backup
// of the data directory would.
func restore(t *testing.T, backup, dir string) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(dir, os.DirFS(backup)); err != nil {
		t.Fatal(err)
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			_ = os.Chmod(p, 0o600)
		}
		return nil
	})
}

// leftBehind makes user on target tg (registered as uid) the way SyVault does, with the
// server's own driver and the target's admin, but with no lease: what a SyVault whose
// store was lost leaves behind.
func leftBehind(t *testing.T, srv *testServer, tg client.Target, uid, user string) {
	t.Helper()
	var grants []events.Grant
	for _, g := range tg.Grants {
		grants = append(grants, events.Grant{Database: g.Database, Schema: g.Schema, Tables: g.Tables, Privileges: g.Privileges})
	}
	err := srv.drivers[events.Engine(tg.Engine)].CreateUser(context.Background(), driver.CreateUserRequest{
		Conn: driver.Conn{PoolKey: "left-behind-" + uid, Host: tg.Host, Port: tg.Port, Database: tg.Database,
			Username: tg.AdminUsername, Password: tg.AdminPassword, TLSMode: events.TLSDisable},
		RecordUID: uid, Username: user, Password: drivertest.NewPassword(), ExpiresAt: time.Now().Add(time.Hour), Grants: grants})
	if err != nil {
		t.Fatalf("make %s: %v", user, err)
	}
}
