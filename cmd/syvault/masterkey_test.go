package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
	syhttp "github.com/syvault/syvault/http"
	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/internal/seal"
	"github.com/syvault/syvault/workers"
)

// TestMasterKeyChange walks the documented procedure for replacing the master key:
// restart on the new key with the old one as previous, `syvault reseal`, restart on the
// new key alone. Leases issued under the old key are still revoked at the end, access
// tokens issued before the change still work, and reseal says when something still needs
// the old key (a lease whose target moved since) and when nothing does. A target whose
// admin password an earlier version sealed to its record alone comes out of reseal bound
// to its connection, and reseal says where.
func TestMasterKeyChange(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	k := newKeyChange(t)
	dir, natsAddr, listen, oldFile, newFile, newKey := k.dir, k.natsAddr, k.listen, k.oldFile, k.newFile, k.newKey

	before := mustServer(t, dir, listen)
	admin := before.admin(t)
	stays := mustTarget(t, admin, eng)
	kept := mustLease(t, admin, stays.RecordUID, 3600)
	moves := eng.target(t)
	movesT := mustRegister(t, admin, moves)
	onMoved := mustLease(t, admin, movesT.RecordUID, 3600)
	moves.Host = "localhost" // the same server under another name: its leases keep their snapshot
	if _, err := admin.UpdateTarget(ctx, movesT.RecordUID, moves); err != nil {
		t.Fatal(err)
	}
	oldToken := mustToken(t, admin)
	sealedBeforeTheBinding(t, before, stays.RecordUID)
	if err := before.Close(); err != nil {
		t.Fatal(err)
	}

	onNew := func(c *Config) { listen(c); c.MasterKeyFile = newFile }
	cfg := Config{Dev: true, DataDir: dir, Listen: "127.0.0.1:0", Replicas: 1, Components: []string{"all"}}
	onNew(&cfg)
	var logs bytes.Buffer
	refused := NewMain(cfg, newLogger(&logs, "error"))
	err := refused.Open(ctx)
	_ = refused.Close()
	if err == nil || !strings.Contains(err.Error(), "another master key") {
		t.Fatalf("a server on the new key alone, before reseal: %v", err)
	}

	during := mustServer(t, dir, func(c *Config) { onNew(c); c.PreviousMasterKeyFile = oldFile })
	admin = during.admin(t)
	issuedDuring := mustLease(t, admin, stays.RecordUID, 3600)
	reseal := func(args ...string) (string, error) { return runReseal(t, natsAddr, dir, newFile, args...) }
	if _, err := reseal(); err == nil || !strings.Contains(err.Error(), "--previous-master-key-file") {
		t.Fatalf("reseal without the previous key: %v", err)
	}
	out, err := reseal("--previous-master-key-file", oldFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"access-token keys resealed: 1\n", "targets resealed: 2 of 2\n", "keep the previous master key until", "1 active lease(s)",
		`target "` + stays.RecordUID + `": admin password bound to "postgresql" "`, `target "` + movesT.RecordUID + `": admin password bound to`} {
		if !strings.Contains(out, want) {
			t.Fatalf("reseal output lacks %q:\n%s", want, out)
		}
	}
	if err := admin.RevokeLease(ctx, onMoved.LeaseID); err != nil {
		t.Fatal(err)
	}
	mustBeGone(t, eng, onMoved.Username, 0)
	if out, err = reseal("--previous-master-key-file", oldFile); err != nil || !strings.Contains(out, "targets resealed: 0 of 2\n") ||
		!strings.Contains(out, "nothing needs the previous master key") {
		t.Fatalf("second reseal: %v\n%s", err, out)
	}
	newSealer, _ := seal.New(newKey)
	for _, uid := range []string{stays.RecordUID, movesT.RecordUID} {
		tg, _, err := during.store.LoadTarget(ctx, uid)
		if err != nil {
			t.Fatal(err)
		}
		if _, resealed, err := workers.OpenAdminPassword(ctx, newSealer, workers.NewOrigins(during.store), tg); err != nil || !resealed {
			t.Fatalf("target %s after reseal: bound under the new key %v, %v", uid, resealed, err)
		}
	}
	if err := during.Close(); err != nil {
		t.Fatal(err)
	}

	after := mustServer(t, dir, onNew)
	admin = after.admin(t)
	if status, body := raw(t, after, "GET", syhttp.BasePath+"/dynamic/leases", oldToken, "", nil); status != 200 {
		t.Fatalf("a token issued before the change got %d %v", status, body)
	}
	for _, l := range []*client.Lease{kept, issuedDuring} {
		if err := admin.RevokeLease(ctx, l.LeaseID); err != nil {
			t.Fatalf("revoking a lease issued before the old key was given up: %v", err)
		}
		mustBeGone(t, eng, l.Username, 0)
	}
	l := mustLease(t, admin, stays.RecordUID, 60)
	if err := admin.RevokeLease(ctx, l.LeaseID); err != nil {
		t.Fatal(err)
	}
	page, err := admin.Audit(ctx, client.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	resealed := map[string]int{}
	for _, e := range page.Data {
		resealed[e.Type+" "+e.RecordUID]++
	}
	// stays: sealed once as an earlier version would have, then by reseal.
	if resealed["target.resealed "+stays.RecordUID] != 2 || resealed["target.resealed "+movesT.RecordUID] != 1 || resealed["token_keys.resealed "] != 1 {
		t.Fatalf("reseal events in the audit: %v", resealed)
	}
	if strings.Contains(after.Log.String()+during.Log.String(), seal.EncodeKey(newKey)) {
		t.Fatal("the master key reached the log")
	}
}

// sealedBeforeTheBinding seals target uid's admin password as versions before the
// binding did, to its record uid alone, in a target.resealed event that may change the
// target's other settings too (as a forged one would).
func sealedBeforeTheBinding(t *testing.T, srv *testServer, uid string, change ...func(*events.Target)) {
	t.Helper()
	ctx := context.Background()
	key, err := seal.LoadKeyFile(filepath.Join(srv.Dir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	sealer, _ := seal.New(key)
	tg, last, err := srv.store.LoadTarget(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	pw, _, err := workers.OpenAdminPassword(ctx, sealer, workers.NewOrigins(srv.store), tg)
	if err != nil {
		t.Fatal(err)
	}
	tg.SealedAdminPassword = sealer.Seal(pw, []byte(uid))
	for _, c := range change {
		c(&tg)
	}
	seq, err := srv.store.Append(ctx, events.TargetSubject(uid), events.ResealTarget(tg, last, time.Now()), last)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.proj.WaitTarget(ctx, uid, seq); err != nil {
		t.Fatal(err)
	}
}

// runReseal runs `syvault reseal` against the NATS at natsAddr of the server with data in
// dir, on the master key in newFile, and returns what it printed.
func runReseal(t *testing.T, natsAddr, dir, newFile string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	args = append([]string{"reseal", "--nats-url", "nats://" + natsAddr, "--nats-creds", filepath.Join(dir, NATSClientSeedFile),
		"--master-key-file", newFile, "--data-dir", t.TempDir()}, args...)
	err := run(context.Background(), args, &stdout, &stderr)
	return stdout.String(), err
}

// TestReseal_GoesOnPastATargetItCannotReseal: a target whose admin password neither key
// opens (a forged one) is named, the others are resealed all the same, and reseal fails,
// so the previous key is kept; what the store named is printed quoted, so a name or host
// cannot redraw or add a line.
func TestReseal_GoesOnPastATargetItCannotReseal(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	k := newKeyChange(t)
	before := mustServer(t, k.dir, k.listen)
	good := mustTarget(t, before.admin(t), eng)
	forged := events.Target{RecordUID: "Forged123456", Name: "evil\x1b[2K\r", Engine: events.PostgreSQL, Host: "attacker.example",
		Port: 5432, Database: "app", AdminUsername: "x", TLSMode: events.TLSRequire, SealedAdminPassword: []byte("not sealed"), CreatedAt: time.Now()}
	seq, err := before.store.Append(ctx, events.TargetSubject(forged.RecordUID), events.RegisterTarget(forged, "", time.Now()), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := before.proj.WaitTarget(ctx, forged.RecordUID, seq); err != nil {
		t.Fatal(err)
	}
	// The one it can reseal was sealed before the binding; its name and host were written
	// to redraw the line reseal prints.
	sealedBeforeTheBinding(t, before, good.RecordUID, func(tg *events.Target) { tg.Name, tg.Host = "ok\x1b[2K\r", "db\nforged line" })
	if err := before.Close(); err != nil {
		t.Fatal(err)
	}
	mustServer(t, k.dir, func(c *Config) { k.listen(c); c.MasterKeyFile = k.newFile; c.PreviousMasterKeyFile = k.oldFile })

	out, err := runReseal(t, k.natsAddr, k.dir, k.newFile, "--previous-master-key-file", k.oldFile)
	if err == nil || !strings.Contains(err.Error(), "1 target(s) could not be resealed (Forged123456)") {
		t.Fatalf("reseal with a target it cannot open: %v", err)
	}
	for _, want := range []string{`target "Forged123456": not resealed`, `target "` + good.RecordUID + `": admin password bound to`, "targets resealed: 1 of 2\n"} {
		if !strings.Contains(out, want) {
			t.Fatalf("reseal output lacks %q:\n%s", want, out)
		}
	}
	if strings.ContainsAny(out, "\x1b\r") || strings.Contains(out, "\nforged line") || !strings.Contains(out, `\x1b[2K\r`) ||
		strings.Contains(out, "nothing needs the previous master key") {
		t.Fatalf("reseal output:\n%s", out)
	}
}

// keyChange is the setting of a master key change: a data directory (its key file
// oldFile) whose NATS will listen on natsAddr, and a new key in a file of its own.
type keyChange struct {
	dir, natsAddr, oldFile, newFile string
	newKey                          []byte
}

func newKeyChange(t *testing.T) keyChange {
	t.Helper()
	dir := t.TempDir()
	k := keyChange{dir: dir, natsAddr: freeAddr(t), oldFile: filepath.Join(dir, "master.key"),
		newFile: filepath.Join(t.TempDir(), "new.key"), newKey: seal.NewKey()}
	if err := os.WriteFile(k.newFile, []byte(seal.EncodeKey(k.newKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

// listen has a server's NATS listen where reseal will reach it.
func (k keyChange) listen(c *Config) { c.NATSListen = k.natsAddr }
