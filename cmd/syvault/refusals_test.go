package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syvault/syvault/internal/seal"
)

// TestSyvault_Refusals: every refusal of the syvault command a user can cause with a
// command line, an environment variable or a file names it and says what to do next, and
// is an error (never a panic, never a server that starts anyway).
func TestSyvault_Refusals(t *testing.T) {
	// The environment this test runs in must not leak into the cases.
	for _, kv := range os.Environ() {
		if name, value, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "SYVAULT_") {
			t.Setenv(name, value)
			os.Unsetenv(name)
		}
	}
	dir := t.TempDir()
	nope := filepath.Join(dir, "nope")
	keyFile := filepath.Join(dir, "master.key")
	if err := os.WriteFile(keyFile, []byte(seal.EncodeKey(seal.NewKey())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badKey := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(badKey, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	inUse := t.TempDir()
	mustServer(t, inUse, nil)
	fresh := func() string { return t.TempDir() }
	const secretPassword = "nats-secret-password"
	secretKey := strings.Repeat("f", 63)

	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string // substrings of the error
	}{
		{"no command", nil, nil, []string{"syvault serve --dev", "usage above"}},
		{"unknown command", nil, []string{"serv"}, []string{`"serv"`, "usage above"}},
		{"stray argument", nil, []string{"serve", "--dev", "now"}, []string{`"now"`, "flags only", "syvault serve --help"}},
		{"bad flag value", nil, []string{"serve", "--replicas", "x"}, []string{"-replicas"}},
		{"bad environment value", map[string]string{"SYVAULT_REPLICAS": "x"}, []string{"serve"}, []string{`SYVAULT_REPLICAS="x"`, "--replicas", "replicas of streams"}},
		{"unknown component", nil, []string{"serve", "--components", "web"}, []string{"--components", `"web"`, "all, api, workers"}},
		{"half of TLS", nil, []string{"serve", "--tls-cert", nope}, []string{"--tls-cert and --tls-key"}},
		{"token lifetime", nil, []string{"serve", "--token-ttl", "10s"}, []string{"--token-ttl", "1m and 24h"}},
		{"replicas", nil, []string{"serve", "--replicas", "7"}, []string{"--replicas", "1 and 5"}},
		{"no master key", nil, []string{"serve", "--data-dir", fresh()}, []string{"--master-key-file", "SYVAULT_MASTER_KEY", "syvault init", "--dev"}},
		{"master key file missing", nil, []string{"serve", "--data-dir", fresh(), "--master-key-file", nope}, []string{"--master-key-file " + nope, "syvault init", "openssl rand -hex 32"}},
		{"master key file malformed", nil, []string{"serve", "--data-dir", fresh(), "--master-key-file", badKey}, []string{"--master-key-file " + badKey, "64 hex digits", "openssl rand -hex 32"}},
		{"master key variable malformed", map[string]string{"SYVAULT_MASTER_KEY": secretKey}, []string{"serve", "--data-dir", fresh()}, []string{"SYVAULT_MASTER_KEY", "openssl rand -hex 32"}},
		{"previous master key file missing", nil, []string{"serve", "--dev", "--data-dir", fresh(), "--previous-master-key-file", nope}, []string{"--previous-master-key-file " + nope}},
		{"data dir", nil, []string{"serve", "--dev", "--data-dir", "/proc/syvault-nope"}, []string{"--data-dir /proc/syvault-nope", "choose a directory"}},
		{"data dir in use", nil, []string{"serve", "--dev", "--data-dir", inUse, "--listen", "127.0.0.1:0"}, []string{"--data-dir " + inUse, "in use by another syvault process", "--nats-listen"}},
		{"NATS unreachable", nil, []string{"serve", "--dev", "--data-dir", fresh(), "--nats-url", "nats://syvault:" + secretPassword + "@127.0.0.1:1"},
			[]string{"127.0.0.1:1", "--nats-url", "--nats-creds", "--nats-ca"}},
		{"NATS credential missing", nil, []string{"serve", "--dev", "--data-dir", fresh(), "--nats-url", "nats://127.0.0.1:1", "--nats-creds", nope}, []string{"--nats-creds", nope}},
		{"address in use", nil, []string{"serve", "--dev", "--data-dir", fresh(), "--listen", busy.Addr().String()}, []string{"--listen " + busy.Addr().String(), "in use", "another address"}},
		{"TLS files missing", nil, []string{"serve", "--dev", "--data-dir", fresh(), "--listen", "127.0.0.1:0", "--tls-cert", nope, "--tls-key", nope}, []string{"--tls-cert " + nope, "--tls-key"}},
		{"every interface without a public URL", nil, []string{"serve", "--data-dir", fresh(), "--master-key-file", keyFile, "--listen", "0.0.0.0:0"}, []string{"--public-url"}},
		{"init over a master key", nil, []string{"init", "--data-dir", dir}, []string{"refusing to replace", "--master-key-file", "another --data-dir"}},
		{"reseal without the old key", nil, []string{"reseal", "--data-dir", fresh(), "--master-key-file", keyFile}, []string{"--previous-master-key-file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			err := run(ctx, tt.args, &stdout, &stderr)
			if err == nil {
				t.Fatalf("syvault %s: no error", strings.Join(tt.args, " "))
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q; want it to say %q", err, w)
				}
			}
			for _, secret := range []string{secretPassword, secretKey} {
				if strings.Contains(err.Error()+stderr.String(), secret) {
					t.Errorf("the refusal shows a secret: %v", err)
				}
			}
		})
	}
}
