package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	nethttp "net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	syhttp "github.com/syvault/syvault/http"
	"github.com/syvault/syvault/http/ui"
	"github.com/syvault/syvault/internal/command"
	"github.com/syvault/syvault/internal/seal"
	"github.com/syvault/syvault/internal/termtext"
	"github.com/syvault/syvault/internal/tokenkey"
	"github.com/syvault/syvault/projections"
	"github.com/syvault/syvault/workers"
	"github.com/syvault/syvault/workers/driver"
	"github.com/syvault/syvault/workers/mysql"
	"github.com/syvault/syvault/workers/postgres"
)

// Main is one SyVault process: Open starts it, Close drains and stops it.
type Main struct {
	Config Config
	Logger *slog.Logger

	ns       *server.Server
	nc       *nats.Conn
	commands *command.Service
	// reqNC is the API's own connection, for the request path alone.
	reqNC    *nats.Conn
	natsURL  string
	natsOpts []nats.Option
	store    *jsstore.Store
	proj     *projections.Projections
	workers  *workers.Workers
	drivers  map[events.Engine]driver.Driver
	// usernames is the usernames bucket on the store's connection: the workers forget
	// names in it, and reconciliation looks users up in it.
	usernames *jsstore.Names
	tokens    *tokenkey.Ring
	HTTP      *syhttp.Server
	// dirLock is held while the embedded NATS uses the data directory.
	dirLock *os.File

	// lost carries why a connection to NATS closed for good while the process ran;
	// closing is set once Close begins, when a closed connection is expected.
	lost    chan error
	closing atomic.Bool
	// denied is the last permission NATS denied this process a request needs (see
	// natsError).
	denied atomic.Pointer[error]

	cancel    context.CancelFunc
	stopDebug func()
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// NewMain returns a Main for cfg.
func NewMain(cfg Config, logger *slog.Logger) *Main {
	return &Main{Config: cfg, Logger: logger, lost: make(chan error, 1)}
}

// AdminClientFile is where --dev and init write the first admin client's credentials.
const AdminClientFile = "admin-client.json"

// AdminClient is the content of admin-client.json.
type AdminClient struct {
	Server     string `json:"server"`
	ClientID   string `json:"client_id"`
	PrivateKey string `json:"private_key"`
}

// connect starts the embedded NATS server (unless --nats-url) and opens the event store.
func (m *Main) connect(ctx context.Context) error {
	url := m.Config.NATSURL
	opts, err := m.natsOptions()
	if err != nil {
		return err
	}
	if url == "" {
		ns, auth, err := m.startEmbedded()
		if err != nil {
			return err
		}
		m.ns = ns
		opts = append(opts, nats.InProcessServer(ns))
		if auth != nil {
			opts = append(opts, auth)
		}
	}
	m.natsURL, m.natsOpts = url, opts
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return m.natsConnectError(err)
	}
	m.nc = nc
	if m.store, err = jsstore.Open(ctx, nc, jsstore.Config{Replicas: m.Config.Replicas}); err != nil {
		return err
	}
	if m.proj, err = projections.Open(ctx, m.store, m.Logger.With("component", "projections")); err != nil {
		return err
	}
	if m.Config.EndedLeaseRetention != 0 {
		m.proj.SetEndedRetention(m.Config.EndedLeaseRetention)
	}
	return nil
}

// masterKey returns the master key from SYVAULT_MASTER_KEY or --master-key-file; in dev
// mode, from (or newly into) DIR/master.key.
func (m *Main) masterKey(create bool) ([]byte, error) {
	switch {
	case m.Config.MasterKey != "":
		return parseKey("SYVAULT_MASTER_KEY", m.Config.MasterKey)
	case m.Config.MasterKeyFile != "":
		return loadKeyFile("--master-key-file", m.Config.MasterKeyFile)
	case !create:
		return nil, errors.New("no master key: pass --master-key-file or set SYVAULT_MASTER_KEY (run 'syvault init' to make one, or use --dev for a throw-away server)")
	}
	path := filepath.Join(m.Config.DataDir, "master.key")
	key, err := seal.LoadKeyFile(path)
	if err == nil {
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(m.Config.DataDir, 0o700); err != nil {
		return nil, dataDirError(m.Config.DataDir, err)
	}
	key = seal.NewKey()
	if err := writeFileAtomic(path, []byte(seal.EncodeKey(key)+"\n")); err != nil {
		return nil, err
	}
	m.Logger.Warn("generated a master key; keep it safe: without it no sealed secret can be opened", "path", path)
	return key, nil
}

// unsealAndConnect loads the master key (creating it in dev mode when createKey) and
// connects to NATS; the key is checked first, so a missing one costs no connection.
func (m *Main) unsealAndConnect(ctx context.Context, createKey bool) (*seal.Sealer, error) {
	key, err := m.masterKey(createKey)
	if err != nil {
		return nil, err
	}
	var previous [][]byte
	switch {
	case m.Config.PreviousMasterKey != "":
		k, err := parseKey("SYVAULT_PREVIOUS_MASTER_KEY", m.Config.PreviousMasterKey)
		if err != nil {
			return nil, err
		}
		previous = append(previous, k)
	case m.Config.PreviousMasterKeyFile != "":
		k, err := loadKeyFile("--previous-master-key-file", m.Config.PreviousMasterKeyFile)
		if err != nil {
			return nil, err
		}
		previous = append(previous, k)
	}
	sealer, err := seal.New(key, previous...)
	if err != nil {
		return nil, err
	}
	return sealer, m.connect(ctx)
}

// Open starts everything this process runs and returns once it serves.
func (m *Main) Open(ctx context.Context) error {
	if m.Config.DebugListen != "" {
		stop, err := serveDebug(m.Config.DebugListen)
		if err != nil {
			return err
		}
		m.stopDebug = stop
	}
	sealer, err := m.unsealAndConnect(ctx, m.Config.Dev)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.goRun("projections", func() error { return m.proj.Run(runCtx) })
	// Every process opens the token keys, workers too: it is where a wrong master key is
	// caught at start, before a worker fails to open a target's admin password.
	if m.tokens, err = m.openTokenKeys(ctx, sealer); err != nil {
		return err
	}
	m.goRun("token keys", func() error { return m.tokens.Run(runCtx) })

	obs := newMetrics(m.proj, m.store, m.Logger)
	if err := m.openWorkers(ctx, sealer, obs); err != nil {
		return err
	}
	if m.Config.runs("workers") {
		m.goRun("workers", func() error { return m.workers.Run(runCtx) })
		if m.Config.ReconcileInterval > 0 {
			if err := m.startSweep(ctx, runCtx); err != nil {
				return err
			}
		}
	}
	var commands syhttp.Commands
	var dashboard nethttp.Handler // nil without the API: an interface holding a nil *ui.Handler would not be
	queries, connected := m.proj, m.store.Connected
	if m.Config.runs("api") {
		// Requests get a connection of their own: their round trips never queue behind
		// the projector's and the workers' traffic.
		if m.reqNC, err = nats.Connect(m.natsURL, append(m.natsOpts, nats.Name("syvault-api"))...); err != nil {
			return m.natsConnectError(err)
		}
		reqStore, err := jsstore.Open(ctx, m.reqNC, jsstore.Config{Replicas: m.Config.Replicas})
		if err != nil {
			return err
		}
		if queries, err = projections.Open(ctx, reqStore, m.Logger.With("component", "projections")); err != nil {
			return err
		}
		connected = reqStore.Connected
		if m.commands, err = command.New(ctx, command.Config{Store: reqStore, Projections: queries, Sealer: sealer, Preparer: m.workers,
			Logger: m.Logger, RequestTimeout: m.Config.RequestTimeout, Abandoned: obs.abandoned.Inc}); err != nil {
			return err
		}
		commands = m.commands
		// Behind a proxy that terminates TLS the requests are plain HTTP, but the browser's are not.
		https := m.Config.TLSCertFile != "" || slices.ContainsFunc(m.Config.PublicURLs, func(u string) bool { return strings.HasPrefix(u, "https:") })
		d, err := ui.New(ui.Config{Commands: m.commands, Queries: queries, Keys: m.tokens, SessionTTL: m.Config.TokenTTL,
			SecureCookies: https, Logger: m.Logger, Observer: obs})
		if err != nil {
			return err
		}
		dashboard = d
	}
	m.HTTP, err = syhttp.New(ctx, syhttp.Config{
		OpsOnly:   !m.Config.runs("api"),
		Metrics:   obs.handler(),
		Observer:  obs,
		Commands:  commands,
		Queries:   queries,
		UI:        dashboard,
		Connected: connected,
		Logger:    m.Logger,
		TokenKeys: m.tokens, TokenTTL: m.Config.TokenTTL, RequestTimeout: m.Config.RequestTimeout, PublicURLs: m.Config.PublicURLs, WildcardAudiences: m.Config.Dev,
		ReadTimeout: m.Config.httpReadTimeout,
		TLSCertFile: m.Config.TLSCertFile, TLSKeyFile: m.Config.TLSKeyFile, ClientRateLimit: m.Config.ClientRateLimit,
		Ready: map[string]syhttp.ReadyChecker{
			"event_store": m.whileConnected(func(ctx context.Context) error {
				_, err := m.store.Info(ctx)
				return err
			}),
			// Each fails at once while NATS is away rather than waiting out the check's
			// timeout: /readyz must say "not ready" promptly, not slowly.
			"projections": m.whileConnected(m.proj.Ping),
			"workers":     m.whileConnected(m.workersReady),
		},
	})
	if err != nil {
		return err
	}
	if err := m.HTTP.Listen(m.Config.Listen); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("--listen %s: the address is in use, by another syvault (a go tool task run?) or another server: "+
				"stop that process, or pass another address with --listen", m.Config.Listen)
		}
		return err
	}
	// Bootstrap before serving: once /readyz answers, admin-client.json is there.
	if m.Config.Dev && m.Config.runs("api") {
		if err := m.bootstrapAdmin(ctx, m.HTTP.PublicURL()); err != nil {
			return err
		}
	}
	m.HTTP.Serve()
	m.Logger.Info("syvault serving", "url", m.HTTP.URL(), "embedded_nats", m.ns != nil, "components", m.Config.Components)
	return nil
}

// openWorkers makes the database drivers and the workers that use them; obs may be nil.
func (m *Main) openWorkers(ctx context.Context, sealer *seal.Sealer, obs workers.Observer) error {
	m.drivers = map[events.Engine]driver.Driver{
		events.PostgreSQL: postgres.New(m.Logger.With("driver", "postgresql")),
		events.MySQL:      mysql.New(m.Logger.With("driver", "mysql")),
	}
	var err error
	if m.usernames, err = command.OpenUsernames(ctx, m.store); err != nil {
		return err
	}
	m.workers, err = workers.New(workers.Config{Store: m.store, Sealer: sealer, Drivers: m.drivers, Targets: m.proj, Logger: m.Logger,
		AckWait: m.Config.AckWait, Observer: obs, Usernames: m.usernames})
	return err
}

func (m *Main) goRun(name string, fn func() error) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := fn(); err != nil {
			m.Logger.Error("component stopped", "component", name, "err", err)
		}
	}()
}

// whileConnected runs check only while this process's connections to NATS are up.
func (m *Main) whileConnected(check func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		if !m.nc.IsConnected() {
			return errors.New("not connected to NATS")
		}
		// The API's requests have a connection of their own, which reconnects on its own
		// schedule after an outage: ready while it was still away, a create answered 503.
		if m.reqNC != nil && !m.reqNC.IsConnected() {
			return errors.New("the API's connection to NATS is not back yet")
		}
		return check(ctx)
	}
}

// workersReady passes while some process, this one or another, is pulling lease work.
func (m *Main) workersReady(ctx context.Context) error {
	if m.Config.runs("workers") {
		return nil
	}
	busy, err := m.store.ConsumerBusy(ctx, workers.LeaseConsumer)
	if err != nil {
		return err
	}
	if !busy {
		return errors.New("no worker process is consuming lease events")
	}
	return nil
}

// Close stops serving, lets requests and database work in flight finish, then stops NATS.
// Safe to call on a Main that failed to open, and more than once.
func (m *Main) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.close() })
	return m.closeErr
}

func (m *Main) close() error {
	m.closing.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var errs []error
	if m.HTTP != nil {
		errs = append(errs, m.HTTP.Close(ctx))
	}
	if m.cancel != nil {
		m.cancel()
	}
	if m.commands != nil {
		m.commands.Close()
	}
	m.wg.Wait()
	for _, d := range m.drivers {
		errs = append(errs, d.Close())
	}
	for _, nc := range []*nats.Conn{m.reqNC, m.nc} {
		if nc != nil {
			_ = nc.Drain()
			nc.Close()
		}
	}
	if m.ns != nil {
		m.ns.Shutdown()
		m.ns.WaitForShutdown()
	}
	if m.stopDebug != nil {
		m.stopDebug()
	}
	if m.dirLock != nil {
		errs = append(errs, m.dirLock.Close())
	}
	return errors.Join(errs...)
}

// bootstrapAdmin registers the first admin client and writes its credentials to
// DIR/admin-client.json, once: an existing file is left alone.
func (m *Main) bootstrapAdmin(ctx context.Context, serverURL string) error {
	path := filepath.Join(m.Config.DataDir, AdminClientFile)
	if _, err := os.Stat(path); err == nil {
		m.Logger.Info("admin client credentials", "path", path)
		return nil
	}
	data, id, err := m.registerAdmin(ctx, serverURL, firstAdminName)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, data); err != nil {
		return err
	}
	m.Logger.Warn("created the first admin client; its private key is in the file (mode 0600)", "path", path, "client_id", id)
	return nil
}

// firstAdminName is the name of the admin client --dev and init register.
const firstAdminName = "admin"

// registerAdmin registers a new admin client named name, which registers itself (nobody
// else is there to), and returns the content of its credentials file and its id.
func (m *Main) registerAdmin(ctx context.Context, serverURL, name string) (creds []byte, clientID string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, "", err
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, "", err
	}
	client := events.Client{ClientID: uuid.NewString(), Name: name, Role: events.RoleAdmin, CreatedAt: time.Now().UTC().Truncate(time.Second),
		PublicKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))}
	e := events.RegisterClient(client, client.ClientID, client.CreatedAt)
	seq, err := m.store.Append(ctx, events.ClientSubject(client.ClientID), e, 0)
	if err != nil {
		return nil, "", err
	}
	if err := m.proj.WaitClient(ctx, client.ClientID, seq); err != nil {
		if events.ErrorCode(err) != events.ETimeout {
			return nil, "", err
		}
		// The client is recorded: its credentials must not be lost to a slow read side
		// (a cluster still forming), since init refuses to make a second first admin.
		// Its first token may wait until the read side catches up.
		m.Logger.Warn("the admin client is recorded but the read side has not caught up yet; its first token may take a moment",
			"client_id", client.ClientID)
	}
	data, _ := json.MarshalIndent(AdminClient{Server: serverURL, ClientID: client.ClientID,
		PrivateKey: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))}, "", "  ")
	return append(data, '\n'), client.ClientID, nil
}

// Init prepares a real install: a master key file (unless one is given) and the first
// admin client, whose credentials go to --admin-client-file (default
// DIR/admin-client.json; "-" writes them to stdout and every note to stderr, so that
// `kubectl exec ... syvault init --admin-client-file - > admin-client.json` leaves
// nothing in the pod). The credentials name the first --public-url as the server. An
// existing credentials file is left alone; a store that has a client named "admin"
// already is refused, naming it, rather than given a second one.
func (m *Main) Init(ctx context.Context, stdout, stderr io.Writer) error {
	out, notes := m.Config.AdminClientFile, stdout
	if out == "-" {
		notes = stderr
	}
	keyPath := filepath.Join(m.Config.DataDir, "master.key")
	if m.Config.MasterKey == "" && m.Config.MasterKeyFile == "" {
		if err := os.MkdirAll(m.Config.DataDir, 0o700); err != nil {
			return dataDirError(m.Config.DataDir, err)
		}
		if _, err := os.Stat(keyPath); err == nil {
			return fmt.Errorf("%s exists already; refusing to replace a master key: to register the first admin client "+
				"with it, pass it with --master-key-file (or SYVAULT_MASTER_KEY), or choose another --data-dir", keyPath)
		}
		if err := writeFileAtomic(keyPath, []byte(seal.EncodeKey(seal.NewKey())+"\n")); err != nil {
			return err
		}
		m.Config.MasterKeyFile = keyPath
		fmt.Fprintf(notes, "master key written to %s: back it up and pass --master-key-file or SYVAULT_MASTER_KEY to every server\n", keyPath)
	}
	if out == "" {
		out = filepath.Join(m.Config.DataDir, AdminClientFile)
	}
	if out != "-" {
		if _, err := os.Stat(out); err == nil {
			fmt.Fprintf(notes, "admin client credentials exist already in %s; left alone\n", out)
			return nil
		}
	}
	if err := m.connect(ctx); err != nil {
		return err
	}
	defer m.Close()
	defer m.runProjections(ctx)()
	clients, err := m.proj.Clients(ctx)
	if err != nil {
		return err
	}
	for _, c := range clients {
		if strings.EqualFold(strings.TrimSpace(c.Name), firstAdminName) {
			return fmt.Errorf("this store has its first admin client already (client_id %s): init ran before; use the credentials "+
				"it wrote, or make another admin client with them (sy client create --role admin)", c.ClientID)
		}
	}
	return m.writeAdmin(ctx, firstAdminName, out, nil, stdout, notes)
}

// runProjections keeps the read side up to date while a one-off command (init, reseal,
// recover-admin) waits on it, until the returned stop.
func (m *Main) runProjections(ctx context.Context) (stop context.CancelFunc) {
	runCtx, cancel := context.WithCancel(ctx)
	m.cancel = cancel
	m.goRun("projections", func() error { return m.proj.Run(runCtx) })
	return cancel
}

// credentialsServer is the server an admin client's credentials name: the first
// --public-url.
func (m *Main) credentialsServer() string {
	if len(m.Config.PublicURLs) > 0 {
		return strings.TrimSuffix(m.Config.PublicURLs[0], "/")
	}
	return "http://127.0.0.1:8200"
}

// writeAdmin registers an admin client named name and writes its credentials to out
// ("-": stdout; f, when the caller made out already), naming the first --public-url as
// their server.
func (m *Main) writeAdmin(ctx context.Context, name, out string, f *os.File, stdout, notes io.Writer) error {
	url := m.credentialsServer()
	data, id, err := m.registerAdmin(ctx, url, name)
	if err != nil {
		return err
	}
	if out == "-" {
		if _, err := stdout.Write(data); err != nil {
			return err
		}
		fmt.Fprintf(notes, "admin client %s (%s) registered; its credentials (server %s) went to standard output: keep them as safely as the master key\n", id, name, url)
		return nil
	}
	if f != nil {
		if _, err = f.Write(data); err == nil {
			err = f.Close()
		}
		if err != nil {
			// Registered, but its key is lost with the file: say which client to remove.
			return fmt.Errorf("admin client %s is registered, but its credentials could not be written to %s (%v): remove it once you have an admin", id, out, err)
		}
	} else if err := writeFileAtomic(out, data); err != nil {
		return err
	}
	fmt.Fprintf(notes, "admin client %s (%s) written to %s (server %s)\n", id, name, out, url)
	return nil
}

// RecoverAdmin registers one more admin client, for a deployment whose admins can act no
// more (their keys lost, or each demoted or removed): it takes the master key, which must
// open the deployment's token-signing keys, and NATS, whose holder can register a client
// anyway (README, "Security model"), so it gives nobody a power they lacked. The client is
// named recovered-admin-<a random suffix>, and its registration is in the audit trail like
// any other; its credentials go to --admin-client-file, made before the client is
// registered and never over an existing file.
func (m *Main) RecoverAdmin(ctx context.Context, stdout, stderr io.Writer) (err error) {
	out := m.Config.AdminClientFile
	var f *os.File
	switch out {
	case "":
		return errors.New("--admin-client-file is required: where to write the new admin client's credentials (- for standard output)")
	case "-":
	default:
		if f, err = os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists already: choose another --admin-client-file, so that no credentials are overwritten", out)
		} else if err != nil {
			return fmt.Errorf("cannot write the credentials to %s: %w", out, err)
		}
		defer func() {
			if err != nil { // the file holds no credentials
				_ = f.Close()
				_ = os.Remove(out)
			}
		}()
	}
	defer m.Close()
	sealer, err := m.unsealAndConnect(ctx, false)
	if err != nil {
		return err
	}
	switch err := tokenkey.Check(ctx, m.store, sealer); {
	case errors.Is(err, tokenkey.ErrNone):
		return errors.New("this deployment has no token-signing key yet, so nothing tells whether this master key is its own: " +
			"no server has run on it; use the credentials init wrote, or start 'syvault serve' once with its master key")
	case err != nil:
		return fmt.Errorf("the master key given does not open this deployment's token-signing keys: %w", err)
	}
	defer m.runProjections(ctx)()
	notes := stdout
	if f == nil {
		notes = stderr
	}
	return m.writeAdmin(ctx, "recovered-admin-"+uuid.NewString()[:8], out, f, stdout, notes)
}

func (m *Main) openTokenKeys(ctx context.Context, sealer *seal.Sealer) (*tokenkey.Ring, error) {
	return tokenkey.Open(ctx, m.store, sealer, m.Logger.With("component", "token keys"))
}

// RotateTokenKey makes a new access-token signing key for the whole deployment; see
// tokenkey.Ring.Rotate.
func (m *Main) RotateTokenKey(ctx context.Context, stdout io.Writer) error {
	defer m.Close()
	sealer, err := m.unsealAndConnect(ctx, false)
	if err != nil {
		return err
	}
	ring, err := m.openTokenKeys(ctx, sealer)
	if err != nil {
		return err
	}
	r, err := ring.Rotate(ctx, m.Config.DropPrevious)
	if err != nil {
		return err
	}
	reason := "new signing key " + r.Current
	if len(r.Kept) > 0 {
		reason += "; still verifying " + strings.Join(r.Kept, ", ")
	}
	if len(r.Dropped) > 0 {
		reason += "; dropped " + strings.Join(r.Dropped, ", ")
	}
	if err := m.auditKeys(ctx, events.TokenKeyRotated, r.Current, reason); err != nil {
		return fmt.Errorf("the key was rotated, but not recorded in the audit: %w", err)
	}
	fmt.Fprintf(stdout, "new access-token signing key %s\n", r.Current)
	if len(r.Kept) > 0 {
		fmt.Fprintf(stdout, "still verifying tokens of the retired key(s) %s for up to %s\n", termtext.Printable(strings.Join(r.Kept, ", ")), tokenkey.Retention)
	}
	if len(r.Dropped) > 0 {
		fmt.Fprintf(stdout, "dropped key(s) %s: tokens they signed are refused from now on\n", termtext.Printable(strings.Join(r.Dropped, ", ")))
	}
	return nil
}

// auditKeys records an operation on the token keys; id makes a retried record land once.
func (m *Main) auditKeys(ctx context.Context, t events.Type, id, reason string) error {
	e := events.KeyOperation(t, id, reason, time.Now())
	_, err := m.store.AppendUnordered(ctx, events.KeysSubject("token"), e)
	return err
}

// RebuildProjections replays the events stream into fresh KV buckets.
func (m *Main) RebuildProjections(ctx context.Context, stdout io.Writer) error {
	if err := m.connect(ctx); err != nil {
		return err
	}
	defer m.Close()
	start := time.Now()
	n, err := projections.Rebuild(ctx, m.store, m.proj)
	if err != nil {
		return err
	}
	// While the lease index was refilled, the workers may have followed a removal through
	// against an index missing some of the target's leases: they follow every removal
	// through again (a few reads each; a lease revoked already is not revoked twice, and
	// the consumer hands on how far it got, so a removal it handled reaches no server).
	if err := m.store.RestartConsumer(ctx, workers.RemovalConsumer, 1, events.TargetSubjects); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rebuilt projections from %d events in %s\n", n, time.Since(start).Round(time.Millisecond))
	return nil
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q has no valid port", addr)
	}
	return host, port, nil
}

// parseKey parses a master key given in the environment variable env; the error names env
// (never the value) and says how to make a key.
func parseKey(env, value string) ([]byte, error) {
	k, err := seal.ParseKey(value)
	if err != nil {
		return nil, fmt.Errorf("%s: %w; 'openssl rand -hex 32' prints a valid one", env, err)
	}
	return k, nil
}

// loadKeyFile loads the master key in file, given with flag; the error names both and
// says how to make a key.
func loadKeyFile(flag, file string) ([]byte, error) {
	k, err := seal.LoadKeyFile(file)
	var pathErr *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s %s: no such file; 'syvault init --data-dir DIR' makes a master key in DIR/master.key "+
			"(or write 'openssl rand -hex 32' to a file only the server's user may read)", flag, file)
	case errors.As(err, &pathErr):
		return nil, fmt.Errorf("%s %s: %w", flag, file, pathErr.Err)
	case err != nil:
		return nil, fmt.Errorf("%s %s: %w; 'openssl rand -hex 32' prints a valid key", flag, file, err)
	}
	return k, nil
}

// dataDirError is a failure to use --data-dir dir.
func dataDirError(dir string, err error) error {
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		err = pathErr.Err
	}
	return fmt.Errorf("--data-dir %s: %w; choose a directory this user may create and write", dir, err)
}

// natsConnectError is a failure to connect to NATS, saying what to check.
func (m *Main) natsConnectError(err error) error {
	if m.Config.NATSURL == "" {
		return fmt.Errorf("connect to the embedded NATS: %w", err)
	}
	return fmt.Errorf("cannot connect to NATS at %s (--nats-url): %w; check that it runs and this host reaches it, "+
		"and the credential (--nats-creds) and TLS settings (--nats-ca, --nats-cert) it expects", redactURLs(m.Config.NATSURL), err)
}

// redactURLs masks the passwords in a comma list of URLs, for messages.
func redactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil {
			parts[i] = u.Redacted()
		} else {
			parts[i] = "(an unparsable URL)"
		}
	}
	return strings.Join(parts, ",")
}
