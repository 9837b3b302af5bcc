package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/syvault/syvault/http/client"
)

// TestRecoverAdmin: a deployment whose admins can act no more (here its only admin's key
// is lost) gets one more admin client from whoever holds its master key and its store,
// and the new admin can manage the deployment again. A master key that does not open
// the deployment's token keys, a credentials file that exists, or none named, is refused
// with nothing registered; no private key reaches the command's messages.
func TestRecoverAdmin(t *testing.T) {
	ctx := context.Background()

	// A store init made and no server ran on has sealed nothing with its master key: no
	// key, its own or another's, can be told apart there, and nothing is registered.
	fresh := t.TempDir()
	var initOut, initErr bytes.Buffer
	if err := run(ctx, []string{"init", "--data-dir", fresh}, &initOut, &initErr); err != nil {
		t.Fatalf("init: %v\n%s", err, initErr.String())
	}
	var o, e bytes.Buffer
	err := run(ctx, []string{"recover-admin", "--data-dir", fresh, "--master-key-file", filepath.Join(fresh, "master.key"),
		"--admin-client-file", filepath.Join(fresh, "recovered.json")}, &o, &e)
	if err == nil || !strings.Contains(err.Error(), "no token-signing key yet") {
		t.Fatalf("recover-admin before any server ran: %v", err)
	}
	if _, err := os.Stat(filepath.Join(fresh, "recovered.json")); err == nil {
		t.Fatal("a refused recovery left a credentials file")
	}

	dir := t.TempDir()
	srv := mustServer(t, dir, nil)
	lost := srv.adminClient(t).ClientID
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	recoverAdmin := func(args ...string) (string, string, error) {
		var stdout, stderr bytes.Buffer
		err := run(ctx, append([]string{"recover-admin", "--data-dir", dir, "--public-url", "https://vault.example"}, args...), &stdout, &stderr)
		return stdout.String(), stderr.String(), err
	}
	key := filepath.Join(dir, "master.key")
	wrongKey := filepath.Join(t.TempDir(), "other.key")
	if err := os.WriteFile(wrongKey, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "recovered.json")
	for _, c := range []struct {
		name, want string
		args       []string
	}{
		{"no credentials file named", "--admin-client-file is required", []string{"--master-key-file", key}},
		{"an existing credentials file", "exists already", []string{"--master-key-file", key, "--admin-client-file", filepath.Join(dir, AdminClientFile)}},
		{"another deployment's master key", "does not open this deployment's token-signing keys", []string{"--master-key-file", wrongKey, "--admin-client-file", out}},
	} {
		if _, _, err := recoverAdmin(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a refused recovery wrote credentials")
	}

	stdout, stderr, err := recoverAdmin("--master-key-file", key, "--admin-client-file", out)
	if err != nil {
		t.Fatalf("recover-admin: %v\n%s", err, stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var ac AdminClient
	if err := json.Unmarshal(data, &ac); err != nil {
		t.Fatal(err)
	}
	if ac.Server != "https://vault.example" || strings.Contains(stdout+stderr, "PRIVATE KEY") || !strings.Contains(stdout, ac.ClientID) {
		t.Fatalf("credentials for %q; the command said %q %q", ac.Server, stdout, stderr)
	}
	if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the credentials file: %v %v, want mode 0600", st, err)
	}

	// The recovered admin manages the deployment again; its registration is audited.
	srv = mustServer(t, dir, func(c *Config) { c.Dev = false; c.MasterKeyFile = key })
	admin, err := client.New(srv.HTTP.URL(), ac.ClientID, ac.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	clients, err := admin.ListClients(ctx)
	if err != nil {
		t.Fatalf("the recovered admin cannot use the server: %v", err)
	}
	if len(clients) != 2 {
		t.Fatalf("%d clients after the refusals and one recovery, want the lost admin and the recovered one: %+v", len(clients), clients)
	}
	var names []string
	for _, c := range clients {
		names = append(names, c.Name)
		if c.ClientID == ac.ClientID && (c.Role != "admin" || !strings.HasPrefix(c.Name, "recovered-admin-")) {
			t.Fatalf("the recovered client: %+v", c)
		}
	}
	if err := admin.DeleteClient(ctx, lost); err != nil {
		t.Fatalf("the recovered admin cannot remove the admin whose key was lost: %v", err)
	}
	page, err := admin.Audit(ctx, client.AuditOptions{ClientID: ac.ClientID, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	registered := false
	for _, e := range page.Data {
		registered = registered || (e.Type == "client.registered" && (e.SubjectClientID == ac.ClientID || e.ClientID == ac.ClientID))
	}
	if !registered {
		t.Fatalf("no client.registered for %s in the audit trail (clients %v)", ac.ClientID, names)
	}

	// Through kubectl exec: the credentials alone on standard output, the notes on error.
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err = recoverAdmin("--master-key-file", key, "--admin-client-file", "-")
	if err != nil {
		t.Fatalf("recover-admin to stdout: %v\n%s", err, stderr)
	}
	var piped AdminClient
	if err := json.Unmarshal([]byte(stdout), &piped); err != nil || piped.ClientID == "" || !strings.Contains(stderr, piped.ClientID) ||
		strings.Contains(stderr, "PRIVATE KEY") {
		t.Fatalf("stdout %q (%v), stderr %q: want the credentials alone, and the notes apart", stdout, err, stderr)
	}
}
