package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/internal/tokenkey"
	"github.com/syvault/syvault/projections"
)

// allMessages returns the data and headers of every message in every stream of the
// server: the events, the schedules and every KV bucket.
func allMessages(t *testing.T, js jetstream.JetStream) map[string][]string {
	t.Helper()
	ctx := context.Background()
	out := map[string][]string{}
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			msg, err := s.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			hdr, _ := json.Marshal(msg.Header)
			out[name] = append(out[name], msg.Subject+" "+string(hdr)+" "+string(msg.Data))
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSecrets_NowhereInPlaintext runs a session on both engines (targets, leases created,
// renewed, revoked, expired, one failed) and then scans every stream message, every KV
// value and every log line for the admin passwords, the lease passwords, the admin
// client's private key, the access token, the token signing key, the NATS nkey seed and the
// master key, raw,
// URL-encoded and base64-encoded.
func TestSecrets_NowhereInPlaintext(t *testing.T) {
	pg, my := postgresEngine(t), mysqlEngine(t)
	ctx := context.Background()
	// Exposed NATS, so its nkey seed is one of the secrets too.
	srv := mustServer(t, "", func(c *Config) { c.NATSListen = freeAddr(t) })
	admin := srv.admin(t)
	var secrets []string
	seed, err := os.ReadFile(filepath.Join(srv.Dir, NATSClientSeedFile))
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, strings.TrimSpace(string(seed)))
	for _, eng := range []engine{pg, my} {
		tg := eng.target(t)
		secrets = append(secrets, tg.AdminPassword)
		target := mustRegister(t, admin, tg)
		var leases []*client.Lease
		// The short lease lives 2 s: its expires_at counts from its created_at, a whole
		// second, so a 1 s lease may have expired before its user exists, and a lease
		// is never activated past its expiry.
		for _, ttl := range []int{3600, 3600, 2} {
			l := mustLease(t, admin, target.RecordUID, ttl)
			secrets = append(secrets, l.Password)
			leases = append(leases, l)
		}
		if _, err := admin.RenewLease(ctx, leases[0].LeaseID, 7200); err != nil {
			t.Fatal(err)
		}
		for _, l := range leases[:2] {
			if err := admin.RevokeLease(ctx, l.LeaseID); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, 10*time.Second, "short lease expired", func() (bool, error) {
			got, err := admin.GetLease(ctx, leases[2].LeaseID)
			return err == nil && got.Status == "expired", err
		})
		// A target whose admin login is refused: the failure path must not echo it.
		bad := eng.target(t)
		bad.AdminPassword = "wrong-" + randomSecret()
		bad.AdminUsername = "no_such_admin"
		secrets = append(secrets, bad.AdminPassword)
		if _, err := admin.CreateTarget(ctx, bad); err == nil && eng.name == "mysql" {
			t.Fatal("a target with a refused admin login was registered")
		}
	}
	token, err := admin.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, token)
	var ac AdminClient
	data, _ := os.ReadFile(filepath.Join(srv.Dir, AdminClientFile))
	if err := json.Unmarshal(data, &ac); err != nil {
		t.Fatal(err)
	}
	keyBody := strings.Join(strings.Split(ac.PrivateKey, "\n")[1:2], "")
	secrets = append(secrets, keyBody)
	_, tokenKey := srv.tokens.Signing()
	masterKey, err := os.ReadFile(filepath.Join(srv.Dir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, string(tokenKey), hex.EncodeToString(tokenKey), strings.TrimSpace(string(masterKey)))

	forms := func(s string) []string {
		return []string{s, url.QueryEscape(s), url.PathEscape(s), base64.StdEncoding.EncodeToString([]byte(s)),
			strings.TrimRight(base64.RawStdEncoding.EncodeToString([]byte(s)), "=")}
	}
	check := func(where, text string) {
		t.Helper()
		for _, s := range secrets {
			for _, f := range forms(s) {
				if len(f) >= 8 && strings.Contains(text, f) {
					t.Errorf("a secret (%d characters) appears in %s", len(s), where)
				}
			}
		}
	}
	msgs := allMessages(t, jetStream(t, srv.Main))
	for _, stream := range []string{"SYVAULT_EVENTS", "SYVAULT_SCHEDULES", "KV_" + projections.LeasesBucket, "KV_" + projections.TargetsBucket, "KV_" + tokenkey.Bucket} {
		if len(msgs[stream]) == 0 {
			t.Errorf("stream %s is empty: the scan would prove nothing", stream)
		}
	}
	n := 0
	for stream, ms := range msgs {
		for _, m := range ms {
			check("stream "+stream, m)
			n++
		}
	}
	logs := srv.Log.String()
	check("the server log", logs)
	t.Logf("scanned %d stream messages in %d streams and %d bytes of log for %d secrets", n, len(msgs), len(logs), len(secrets))
}
