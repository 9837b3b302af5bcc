package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore/jstest"
	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/workers/drivertest"
)

// Whoever may publish to the events stream controls SyVault: a forged client.registered
// event makes its author an admin. These tests try that door.

// TestNATSListen_RefusesUnauthenticated: the embedded NATS exposed with --nats-listen
// refuses a connection without its nkey (and with another nkey), so the forgery cannot
// even be attempted; with the seed file it writes, another process joins.
func TestNATSListen_RefusesUnauthenticated(t *testing.T) {
	natsAddr := freeAddr(t)
	p1 := mustServer(t, "", func(c *Config) { c.NATSListen = natsAddr })
	seed := filepath.Join(p1.Dir, NATSClientSeedFile)
	if fi, err := os.Stat(seed); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v, want a 0600 file", seed, fi, err)
	}
	if nc, err := nats.Connect("nats://"+natsAddr, nats.MaxReconnects(0)); err == nil {
		// Had it connected, this is what an attacker would publish.
		_, perr := nc.Request(events.ClientSubject("x"), []byte(`{"type":"client.registered"}`), time.Second)
		nc.Close()
		t.Fatalf("connected without credentials (publish: %v)", perr)
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Logf("refused with: %v", err)
	}
	other := filepath.Join(t.TempDir(), "other.nk")
	kp, _ := nkeys.CreateUser()
	s, _ := kp.Seed()
	if err := os.WriteFile(other, s, 0o600); err != nil {
		t.Fatal(err)
	}
	opt, err := nats.NkeyOptionFromSeed(other)
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect("nats://"+natsAddr, opt, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("connected with another nkey")
	}
	mustServer(t, "", func(c *Config) {
		c.Dev = false
		c.NATSURL = "nats://" + natsAddr
		c.NATSCreds = seed
		c.MasterKeyFile = filepath.Join(p1.Dir, "master.key")
		c.Components = []string{"workers"}
	})
	// A restart keeps the same credential: joined processes need not be told again.
	pub := func() string {
		data, _ := os.ReadFile(seed)
		kp, err := nkeys.ParseDecoratedNKey(data)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := kp.PublicKey()
		return p
	}
	before := pub()
	if err := p1.Close(); err != nil {
		t.Fatal(err)
	}
	mustServer(t, p1.Dir, func(c *Config) { c.NATSListen = natsAddr })
	if pub() != before {
		t.Fatal("the NATS credential changed across a restart")
	}
}

// tlsNATS is a NATS server (the real one, in this process) that requires TLS with a
// client certificate and admits one nkey user.
type tlsNATS struct {
	url               string
	caFile, certFile  string
	keyFile, seedFile string
	wrongSeed         string
}

func startTLSNATS(t *testing.T) tlsNATS {
	t.Helper()
	dir := t.TempDir()
	ca := drivertest.NewCA(t)
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	n := tlsNATS{caFile: write("ca.pem", []byte(ca.PEM))}
	srvCert, srvKey := ca.ServerCert(t, "localhost")
	sc, sk := write("server.pem", srvCert), write("server-key.pem", srvKey)
	cc, ck := ca.ClientCert(t, "syvault")
	n.certFile, n.keyFile = write("client.pem", cc), write("client-key.pem", ck)
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	n.seedFile = write("syvault.nk", seed)
	wrong, _ := nkeys.CreateUser()
	ws, _ := wrong.Seed()
	n.wrongSeed = write("wrong.nk", ws)
	tlsConfig, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: sc, KeyFile: sk, CaFile: n.caFile, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	ns := jstest.Start(t, &server.Options{
		ServerName: "tls", Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		TLSConfig: tlsConfig, TLSVerify: true, TLS: true, TLSTimeout: 2,
		Nkeys: []*server.NkeyUser{{Nkey: pub}}, NoLog: true, NoSigs: true,
	})
	n.url = fmt.Sprintf("tls://localhost:%d", ns.Addr().(*net.TCPAddr).Port)
	return n
}

// TestNATSURL_TLSAndCredentials: --nats-url with --nats-ca, --nats-cert/--nats-key and
// --nats-creds reaches a NATS that requires all of them, and works end to end; missing
// any of them, or holding the wrong key, the process refuses to start.
func TestNATSURL_TLSAndCredentials(t *testing.T) {
	n := startTLSNATS(t)
	dir := t.TempDir()
	ok := func(c *Config) {
		c.NATSURL, c.NATSCA, c.NATSCert, c.NATSKey, c.NATSCreds = n.url, n.caFile, n.certFile, n.keyFile, n.seedFile
	}
	srv := mustServer(t, dir, ok)
	admin := srv.admin(t)
	if _, err := admin.ListLeases(context.Background(), client.ListLeasesOptions{}); err != nil {
		t.Fatalf("a request through a server on the TLS NATS: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"no credentials", func(c *Config) { c.NATSCreds = "" }},
		{"another nkey", func(c *Config) { c.NATSCreds = n.wrongSeed }},
		{"no client certificate", func(c *Config) { c.NATSCert, c.NATSKey = "", "" }},
		{"no CA: the server's certificate is not trusted", func(c *Config) { c.NATSCA = "" }},
		{"plain nats://", func(c *Config) { c.NATSURL = strings.Replace(c.NATSURL, "tls://", "nats://", 1); c.NATSCA = "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Dev: true, DataDir: dir, Listen: "127.0.0.1:0", Replicas: 1, Components: []string{"all"}}
			ok(&cfg)
			tc.mutate(&cfg)
			m := NewMain(cfg, discardLogger())
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := m.Open(ctx)
			_ = m.Close()
			if err == nil {
				t.Fatal("started without what the NATS server requires")
			}
			t.Logf("refused: %v", err)
		})
	}
	// And nobody without credentials can publish the forgery.
	if nc, err := nats.Connect(n.url, nats.RootCAs(n.caFile), nats.ClientCert(n.certFile, n.keyFile), nats.MaxReconnects(0)); err == nil {
		js, _ := jetstream.New(nc)
		e := events.Event{Type: events.ClientRegistered, ID: uuid.NewString()}
		_, perr := js.Publish(context.Background(), events.ClientSubject(e.ID), e.Encode())
		nc.Close()
		t.Fatalf("connected with a certificate but no nkey (publish: %v)", perr)
	}
}

// TestNATSCredential: `syvault nats-credential` makes a seed (0600) and an authorization
// block that a real NATS server loads to admit that key alone; running it again keeps
// them; a server joined with the seed works and nothing else connects.
func TestNATSCredential(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cred")
	var out strings.Builder
	if err := run(context.Background(), []string{"nats-credential", "--out", dir}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	seed, _ := os.ReadFile(filepath.Join(dir, "nkey-seed"))
	if fi, err := os.Stat(filepath.Join(dir, "nkey-seed")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("nkey-seed: %v %v", fi, err)
	}
	if strings.Contains(out.String(), strings.TrimSpace(string(seed))) {
		t.Fatal("the command printed the seed")
	}
	if err := run(context.Background(), []string{"nats-credential", "--out", dir}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "nkey-seed")); string(again) != string(seed) {
		t.Fatal("a second run replaced the seed")
	}
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats-auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.JetStream, opts.StoreDir, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, t.TempDir(), true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats did not start")
	}
	if nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("the server admits a client without the key")
	}
	srv := mustServer(t, "", func(c *Config) { c.NATSURL, c.NATSCreds = ns.ClientURL(), filepath.Join(dir, "nkey-seed") })
	if _, err := srv.admin(t).ListTargets(context.Background()); err != nil {
		t.Fatal(err)
	}
}
