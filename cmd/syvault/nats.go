package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// NATSClientSeedFile is where an embedded NATS exposed with --nats-listen keeps the nkey
// seed of the one user it admits: every process joining it passes this file as
// --nats-creds. Whoever can publish to the events stream controls SyVault (a forged
// client.registered event is an admin), so an exposed NATS never serves anyone without it.
const NATSClientSeedFile = "nats-client.nk"

// natsOptions are the client options every connection to NATS uses: reconnect forever,
// the credentials of --nats-creds (a NATS .creds file with a user JWT, or an nkey seed
// file such as the one --nats-listen writes) and the TLS settings of --nats-ca,
// --nats-cert and --nats-key.
func (m *Main) natsOptions() ([]nats.Option, error) {
	opts := []nats.Option{nats.Name("syvault"), nats.MaxReconnects(-1), nats.ErrorHandler(m.natsError), nats.ClosedHandler(m.natsClosed)}
	if f := m.Config.NATSCreds; f != "" {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--nats-creds: %w", err)
		}
		if strings.Contains(string(data), "BEGIN NATS USER JWT") {
			opts = append(opts, nats.UserCredentials(f))
		} else {
			opt, err := nats.NkeyOptionFromSeed(f)
			if err != nil {
				return nil, fmt.Errorf("--nats-creds %s holds neither a user JWT nor an nkey seed", f)
			}
			opts = append(opts, opt)
		}
	}
	if m.Config.NATSCA != "" {
		opts = append(opts, nats.RootCAs(m.Config.NATSCA))
	}
	if (m.Config.NATSCert == "") != (m.Config.NATSKey == "") {
		return nil, errors.New("--nats-cert and --nats-key go together")
	}
	if m.Config.NATSCert != "" {
		opts = append(opts, nats.ClientCert(m.Config.NATSCert, m.Config.NATSKey))
	}
	return opts, nil
}

// natsError logs what NATS reports asynchronously (a denied subject, a slow consumer)
// rather than nats.go printing it to stderr, and keeps a denial: a request denied is
// answered only by that error and times out, which at start would be waited for without
// end (see deniedByNATS).
func (m *Main) natsError(nc *nats.Conn, sub *nats.Subscription, err error) {
	attrs := []any{"conn", nc.Opts.Name, "err", err}
	if sub != nil {
		attrs = append(attrs, "subject", sub.Subject)
	}
	m.Logger.Warn("NATS reported an error", attrs...)
	if errors.Is(err, nats.ErrPermissionViolation) {
		m.denied.Store(&err)
	}
}

// natsClosed ends the process's run (see run) when one of its connections to NATS
// closes for good: it reconnects without end after an outage, so only a fault of the
// connection itself closes it (NATS refusing the process's credential twice on
// reconnecting, or a protocol line longer than it takes). The process would otherwise
// stay up answering 503 to every request, alive to a liveness probe, where a
// supervisor's restart mends it.
func (m *Main) natsClosed(nc *nats.Conn) {
	if m.closing.Load() {
		return
	}
	err := closedError(nc)
	m.Logger.Error(err.Error())
	select {
	case m.lost <- err:
	default:
	}
}

// closedForGood says why a connection of this process closed for good, if one did: read
// from the connection, as nats.go runs natsClosed after it has woken the requests that
// failed for it.
func (m *Main) closedForGood() error {
	var errs []error
	for _, nc := range []*nats.Conn{m.nc, m.reqNC} {
		if nc != nil && nc.IsClosed() && nc.LastError() != nil {
			errs = append(errs, closedError(nc))
		}
	}
	return errors.Join(errs...)
}

// closedError says that nc closed for good, and why.
func closedError(nc *nats.Conn) error {
	return fmt.Errorf("the connection to NATS (%s) closed for good: %w", nc.Opts.Name, nc.LastError())
}

// startEmbedded starts the embedded NATS server on the data directory. Without
// --nats-listen it opens no port at all; with it, it admits only the nkey user whose seed
// it keeps in NATSClientSeedFile (made on first use), and auth is the option this
// process's own in-process connection authenticates with.
func (m *Main) startEmbedded() (ns *server.Server, auth nats.Option, err error) {
	if err := os.MkdirAll(m.Config.DataDir, 0o700); err != nil {
		return nil, nil, dataDirError(m.Config.DataDir, err)
	}
	if m.dirLock, err = lockDataDir(m.Config.DataDir); err != nil {
		return nil, nil, err
	}
	sopts := &server.Options{
		ServerName: "syvault",
		JetStream:  true,
		StoreDir:   filepath.Join(m.Config.DataDir, "nats"),
		DontListen: m.Config.NATSListen == "",
		NoSigs:     true,
		NoLog:      true,
	}
	if m.Config.NATSListen != "" {
		host, port, err := splitHostPort(m.Config.NATSListen)
		if err != nil {
			return nil, nil, fmt.Errorf("--nats-listen: %w", err)
		}
		sopts.Host, sopts.Port = host, port
		seedFile := filepath.Join(m.Config.DataDir, NATSClientSeedFile)
		pub, err := natsUser(seedFile)
		if err != nil {
			return nil, nil, err
		}
		sopts.Nkeys = []*server.NkeyUser{{Nkey: pub}}
		if auth, err = nats.NkeyOptionFromSeed(seedFile); err != nil {
			return nil, nil, fmt.Errorf("--nats-listen: %w", err)
		}
		m.Logger.Info("embedded NATS listening; it admits only the nkey in the seed file: other processes join with --nats-url and --nats-creds",
			"address", m.Config.NATSListen, "nats_creds", seedFile)
	}
	ns, err = server.NewServer(sopts)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded nats: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, nil, errors.New("embedded nats did not start within 30s")
	}
	return ns, auth, nil
}

// natsUser returns the public key of the nkey user whose seed is in file, making the
// seed (mode 0600) when the file does not exist yet.
func natsUser(file string) (string, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return "", fmt.Errorf("make the NATS user key: %w", err)
		}
		seed, err := kp.Seed()
		if err != nil {
			return "", fmt.Errorf("make the NATS user key: %w", err)
		}
		if err := writeFileAtomic(file, append(seed, '\n')); err != nil {
			return "", fmt.Errorf("write %s: %w", file, err)
		}
		return kp.PublicKey()
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return "", fmt.Errorf("%s holds no nkey seed: %w", file, err)
	}
	return kp.PublicKey()
}

// NATSCredential makes, in dir, the nkey a NATS server admits SyVault by: nkey-seed (mode
// 0600, for every syvault process's --nats-creds), nkey-public (for the server's
// configuration) and nats-auth.conf (an authorization block admitting that key alone, for
// nats-server -c or an include). Files already there are kept, so running it again
// changes nothing.
func NATSCredential(dir string, stdout io.Writer) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	seed := filepath.Join(dir, "nkey-seed")
	pub, err := natsUser(seed)
	if err != nil {
		return err
	}
	for name, content := range map[string]string{
		"nkey-public":    pub + "\n",
		"nats-auth.conf": "# Admit SyVault, by its nkey, and no one else.\nauthorization {\n  users: [\n    { nkey: " + pub + " }\n  ]\n}\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "NATS credential in %s: nkey-seed (secret: the syvault processes' --nats-creds), nkey-public %s, nats-auth.conf\n", dir, pub)
	return nil
}
