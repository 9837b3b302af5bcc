package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRefusals_SayWhatToDo: every refusal a user can cause names what is wrong (the flag,
// variable, file or field) and what to do next, on one line.
func TestRefusals_SayWhatToDo(t *testing.T) {
	f := MustFakeServer(t)
	keyPath, key := MustKey(t)
	privPath, pubPath, _ := mustPublicKey(t)
	dir := t.TempDir()
	nope := filepath.Join(dir, "nope")
	creds := filepath.Join(dir, "admin-client.json")
	data, _ := json.Marshal(credentialsFile{Server: f.URL, ClientID: "id", PrivateKey: key})
	if err := os.WriteFile(creds, data, 0o600); err != nil {
		t.Fatal(err)
	}
	idKey := map[string]string{EnvClientID: "id", EnvPrivateKey: key}
	with := func(m map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	tests := []struct {
		name  string
		env   map[string]string
		stdin string
		args  []string
		code  int
		want  []string // substrings of the one error line
	}{
		// The command line.
		{"unknown flag", nil, "", []string{"dynamic", "lease", "list", "--bogus"}, 2, []string{"--bogus", "see 'sy dynamic lease list --help'"}},
		{"misspelt command", nil, "", []string{"dynamc"}, 2, []string{`"dynamc"`, `did you mean "dynamic"`}},
		{"missing flag", nil, "", []string{"dynamic", "lease", "create", "--record-uid", "x"}, 2, []string{`"ttl"`, "--help"}},
		{"missing argument", nil, "", []string{"dynamic", "lease", "revoke"}, 2, []string{"missing argument LEASE_ID", "--help"}},
		{"bad format", nil, "", []string{"dynamic", "lease", "list", "--format", "xml"}, 2, []string{"--format", "table, json"}},
		{"bad ttl", nil, "", []string{"dynamic", "lease", "renew", "id", "--ttl", "soon"}, 2, []string{"--ttl", "3600 or 1h"}},
		{"app client without --allow", nil, "", []string{"client", "create", "--name", "b", "--public-key-file", pubPath}, 2, []string{"--allow"}},
		{"agent without a destination", nil, "", []string{"agent", "--record-uid", "x", "--ttl", "60"}, 2, []string{"--output, --template or --exec"}},
		// Credentials.
		{"no credentials", nil, "", []string{"auth", "token"}, 1, []string{"SY_SERVER", "SY_CLIENT_ID", "SY_PRIVATE_KEY", "--credentials-file"}},
		{"credentials file missing", nil, "", []string{"auth", "token", "--credentials-file", nope}, 1,
			[]string{nope, "--credentials-file", "admin-client.json", "syvault serve --dev"}},
		{"key file missing", with(idKey, EnvServer, f.URL), "", []string{"auth", "token", "--private-key-file", nope}, 1,
			[]string{nope, "--private-key-file", "sy keygen"}},
		{"key file from the environment missing", map[string]string{EnvServer: f.URL, EnvClientID: "id", EnvPrivateKeyFile: nope}, "", []string{"auth", "token"}, 1,
			[]string{nope, EnvPrivateKeyFile, "sy keygen"}},
		{"credentials file given as the key", map[string]string{EnvServer: f.URL, EnvClientID: "id"}, "", []string{"auth", "token", "--private-key-file", creds}, 1,
			[]string{"--private-key-file " + creds, "JSON credentials file", "--credentials-file"}},
		{"not a key", map[string]string{EnvServer: f.URL, EnvClientID: "id", EnvPrivateKey: "hello"}, "", []string{"auth", "token"}, 1,
			[]string{EnvPrivateKey, "sy keygen", "sy client create"}},
		{"not a URL", with(idKey, EnvServer, "vault.example.com"), "", []string{"auth", "token"}, 1, []string{EnvServer, "https://vault.example.com"}},
		// The server.
		{"unreachable", idKey, "", []string{"auth", "token", "--server", "http://127.0.0.1:1"}, 1,
			[]string{"http://127.0.0.1:1", "is the server running there", "(from --server)"}},
		{"not a SyVault server", with(idKey, EnvServer, f.URL+"/broken"), "", []string{"auth", "token"}, 1,
			[]string{"SyVault server's URL", "(from SY_SERVER)"}},
		// Files.
		{"public key file missing", f.env(t), "", []string{"client", "create", "--name", "b", "--allow", "x", "--public-key-file", nope}, 1,
			[]string{nope, "--public-key-file", "sy keygen"}},
		{"private key as the public key", f.env(t), "", []string{"client", "create", "--name", "b", "--allow", "x", "--public-key-file", privPath}, 1,
			[]string{"holds a private key", ".pub.pem"}},
		{"target file missing", f.env(t), "", []string{"dynamic", "target", "create", "-f", nope}, 1, []string{nope, "(-f)"}},
		{"misspelt target field", f.env(t), `{"name": "x", "admin_pasword": "typo"}`, []string{"dynamic", "target", "create", "-f", "-"}, 1,
			[]string{`"admin_pasword"`, "admin_password", "grants"}},
		{"key file exists", nil, "", []string{"keygen", "--out", keyPath}, 1, []string{keyPath, "--force"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, tt.env, tt.stdin, tt.args...)
			wantOneErrorLine(t, r, tt.code)
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr = %q, want it to say %q", r.stderr, w)
				}
			}
			if line := strings.Split(key, "\n")[1]; strings.Contains(r.stderr, line) {
				t.Error("the private key was printed")
			}
		})
	}
}
