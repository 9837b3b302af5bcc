// Command syvault is the SyVault server: it parses flags and environment variables into a
// Config and wires the event store, projections, workers and HTTP API together. Main does
// the wiring so that tests run exactly what production runs, on port 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/internal/tokenkey"
	"github.com/syvault/syvault/projections"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "syvault:", err)
		os.Exit(1)
	}
}

const usage = `SyVault: dynamic database credentials.

Usage:
  syvault serve [--dev] [--data-dir DIR] [--listen HOST:PORT] [--nats-url URL] [--components api,workers]
  syvault init --data-dir DIR [--admin-client-file FILE|-] [--public-url URL]
                                         make a master key (unless given) and the first admin client
  syvault rebuild-projections [--data-dir DIR] [--nats-url URL]
  syvault rotate-token-key [--drop-previous] [--data-dir DIR] [--nats-url URL]
  syvault reseal --previous-master-key-file F [--data-dir DIR] [--nats-url URL]
                                         reseal every kept secret under a new master key
  syvault reconcile [--target UID] [--apply] [--format text|json] [--data-dir DIR] [--nats-url URL]
                                         find (and with --apply drop) database users no lease accounts for
  syvault recover-admin --admin-client-file FILE|- [--data-dir DIR] [--nats-url URL] [--public-url URL]
                                         register one more admin client, with the master key,
                                         when no admin can act (keys lost, or each demoted)
  syvault nats-credential --out DIR      make the nkey a NATS server admits SyVault by
  syvault version

Run 'syvault <command> --help' for a command's flags. Every flag can also be set by an
environment variable: --nats-url is SYVAULT_NATS_URL, --master-key-file is
SYVAULT_MASTER_KEY_FILE, and so on; SYVAULT_MASTER_KEY holds the key itself.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given: 'syvault serve --dev' starts a development server; the usage above lists every command")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve", "init", "recover-admin", "rebuild-projections", "rotate-token-key", "reseal", "nats-credential", "reconcile":
	case "version":
		fmt.Fprintln(stdout, "syvault", version)
		return nil
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q: the usage above lists every command", cmd)
	}
	cfg, err := parseFlags(cmd, args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	logger := newLogger(stderr, cfg.LogLevel)
	m := NewMain(cfg, logger)
	switch cmd {
	case "init":
		return m.Init(ctx, stdout, stderr)
	case "recover-admin":
		return m.RecoverAdmin(ctx, stdout, stderr)
	case "rebuild-projections":
		return m.RebuildProjections(ctx, stdout)
	case "rotate-token-key":
		return m.RotateTokenKey(ctx, stdout)
	case "reseal":
		return m.Reseal(ctx, stdout)
	case "reconcile":
		return m.Reconcile(ctx, stdout)
	case "nats-credential":
		return NATSCredential(cfg.Out, stdout)
	}
	if cfg.MemoryLimit != "" {
		applyMemoryLimit(cfg.MemoryLimit, logger)
	}
	if cfg.Dev {
		// A development server stops with whatever started it.
		var stop context.CancelFunc
		ctx, stop = context.WithCancel(ctx)
		defer stop()
		watchAncestors(ctx, func(reason string) {
			logger.Info("stopping: " + reason)
			stop()
		})
	}
	if m, err = openWaiting(ctx, m, logger); err != nil {
		return err
	}
	// A connection closed for good ends the run too (see natsClosed), unless a stop was
	// asked for meanwhile.
	var lost error
	select {
	case <-ctx.Done():
	case lost = <-m.lost:
		if ctx.Err() != nil {
			lost = nil
		} else {
			logger.Info("stopping, for a supervisor to start this process again")
		}
	}
	logger.Info("shutting down: draining requests and workers")
	start := time.Now()
	err = m.Close()
	logger.Info("stopped", "took", time.Since(start).Round(time.Millisecond))
	return errors.Join(lost, err)
}

// openWaiting opens m, and while an external NATS is reached but JetStream does not
// answer in time or says it is temporarily unavailable (a cluster electing its leaders,
// or without a quorum), opens it anew after a pause (jsstore.Backoff, up to 30 s) rather than
// exit: a supervisor's back-off would stretch a short election into minutes down. What
// will not pass by itself (NATS refusing the connection or the credential, JetStream
// off, a wrong key) exits at once. A stop asked for meanwhile is no failure.
func openWaiting(ctx context.Context, m *Main, logger *slog.Logger) (*Main, error) {
	for attempt := uint64(1); ; attempt++ {
		err := m.Open(ctx)
		if err == nil {
			return m, nil
		}
		if startMayPass(err) {
			err = m.deniedByNATS(err)
		}
		err = errors.Join(err, m.closedForGood()) // the reason behind a bare "connection closed"
		_ = m.Close()
		if ctx.Err() != nil {
			return m, nil
		}
		// The embedded server is this process's own: opened anew, it would only start over.
		if !startMayPass(err) || m.Config.NATSURL == "" {
			return m, err
		}
		pause := jsstore.Backoff(attempt, 30*time.Second)
		logger.Warn("the event store did not answer at start; trying again", "attempt", attempt, "in", pause.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return m, nil
		case <-time.After(pause):
		}
		m = NewMain(m.Config, logger)
	}
}

// startMayPass reports whether a start's failure is JetStream not answering in time, or
// answering that it is temporarily unavailable (10008: no leader, no quorum), whichever
// layer saw it, and not a permission NATS denied (see deniedByNATS).
func startMayPass(err error) bool {
	var api *jetstream.APIError
	return !errors.Is(err, nats.ErrPermissionViolation) && (events.ErrorCode(err) == events.ETimeout || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrTimeout) || errors.As(err, &api) && api.ErrorCode == jsUnavailable)
}

// deniedByNATS adds to a start's failure to hear from JetStream in time the permission
// NATS denied one of this process's requests meanwhile (see natsError): a request
// denied is answered only by an asynchronous error and times out, which waited out
// would never pass.
func (m *Main) deniedByNATS(err error) error {
	if denied := m.denied.Load(); denied != nil {
		return fmt.Errorf("NATS denied this process's user a subject it needs (SyVault's user needs every right in a NATS account of its own: README, \"Security model\"): %w (%w)", *denied, err)
	}
	return err
}

// jsUnavailable is JetStream's "JetStream system temporarily unavailable".
const jsUnavailable jetstream.ErrorCode = 10008

var version = "dev"

// Config is everything the server is told from outside.
type Config struct {
	Dev           bool
	DataDir       string
	Listen        string
	NATSURL       string
	NATSListen    string
	NATSCreds     string
	NATSCA        string
	NATSCert      string
	NATSKey       string
	Components    []string
	MasterKeyFile string
	MasterKey     string // from SYVAULT_MASTER_KEY only, never a flag (flags show in ps)
	// The master key being replaced, while its secrets are resealed under the new one.
	PreviousMasterKeyFile string
	PreviousMasterKey     string // from SYVAULT_PREVIOUS_MASTER_KEY only
	Replicas              int
	RequestTimeout        time.Duration
	// ClientRateLimit bounds each app client's tokens, lease creates and renewals per
	// second in each API process; 0: none.
	ClientRateLimit float64
	PublicURLs      []string
	LogLevel        string
	DebugListen     string
	// AckWait is how long a worker may hold a lease event before another takes it over.
	AckWait     time.Duration
	TokenTTL    time.Duration
	TLSCertFile string
	TLSKeyFile  string
	// DropPrevious makes rotate-token-key drop the old keys at once instead of retiring them.
	DropPrevious bool
	// Out is where nats-credential writes.
	Out string
	// ReconcileInterval, when not zero, has serve reconcile every target that often,
	// dropping orphaned users.
	ReconcileInterval time.Duration
	// EndedLeaseRetention is how long an ended lease's record stays in the lease bucket
	// (0: projections.EndedLeaseRetention).
	EndedLeaseRetention time.Duration
	// ReconcileTarget limits reconcile to one target; Apply makes it drop orphans;
	// Format is its output, text or json.
	ReconcileTarget string
	Apply           bool
	Format          string
	// MemoryLimit is serve's --memory-limit: auto, off or a size (see memoryLimit);
	// empty leaves the process's limit as it is.
	MemoryLimit string
	// AdminClientFile is where init writes the first admin client's credentials; "-" is
	// standard output.
	AdminClientFile string
	// httpReadTimeout overrides the HTTP server's read timeout (tests only).
	httpReadTimeout time.Duration
}

func parseFlags(cmd string, args []string, stderr io.Writer) (Config, error) {
	var cfg Config
	var components, publicURLs string
	fs := flag.NewFlagSet("syvault "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.DataDir, "data-dir", "./data", "directory for the embedded NATS store, the dev master key and admin-client.json")
	fs.StringVar(&cfg.NATSURL, "nats-url", "", "join an existing NATS (cluster) instead of running an embedded server")
	fs.StringVar(&cfg.NATSCreds, "nats-creds", "", "NATS credentials for --nats-url: a .creds file (user JWT and seed) or an nkey seed file, such as DATA_DIR/"+NATSClientSeedFile+" of a server started with --nats-listen")
	fs.StringVar(&cfg.NATSCA, "nats-ca", "", "PEM file of the CA(s) that sign the NATS servers' certificates (TLS for --nats-url)")
	fs.StringVar(&cfg.NATSCert, "nats-cert", "", "PEM client certificate for NATS servers that verify clients; with --nats-key")
	fs.StringVar(&cfg.NATSKey, "nats-key", "", "PEM private key of --nats-cert")
	fs.StringVar(&cfg.MasterKeyFile, "master-key-file", "", "file holding the 64-hex-digit master key (or set SYVAULT_MASTER_KEY)")
	fs.IntVar(&cfg.Replicas, "replicas", 1, "replicas of streams, consumers and buckets (3 on a NATS cluster)")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&cfg.DebugListen, "debug-listen", "", "serve Go's profiler (/debug/pprof/) on this loopback address, e.g. 127.0.0.1:6060; off by default")
	fs.DurationVar(&cfg.AckWait, "ack-wait", 2*time.Minute, "how long a worker may hold a lease event before another process takes it over")
	if cmd == "serve" {
		fs.BoolVar(&cfg.Dev, "dev", false, "development mode: generate a master key and an admin client in --data-dir")
		fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8200", "HTTP listen address")
		fs.StringVar(&components, "components", "all", "what this process runs: all, or a comma list of api and workers")
		fs.StringVar(&cfg.NATSListen, "nats-listen", "", "also expose the embedded NATS on this address (e.g. 127.0.0.1:4222) so more syvault processes can join it; it admits only the nkey it writes to DATA_DIR/"+NATSClientSeedFile)
		fs.DurationVar(&cfg.RequestTimeout, "request-timeout", 20*time.Second, "how long a lease create or revoke waits for the database work")
		fs.DurationVar(&cfg.TokenTTL, "token-ttl", 15*time.Minute, "lifetime of the access tokens the server issues")
		fs.Float64Var(&cfg.ClientRateLimit, "client-rate-limit", 0, "tokens, lease creates and renewals each app client may ask this process for per second, in bursts of twice that, at least two (more answer 429 rate_limited with Retry-After; admins are not limited); 0 (the default) no limit")
		fs.StringVar(&cfg.TLSCertFile, "tls-cert", "", "PEM certificate (chain) for HTTPS; with --tls-key")
		fs.StringVar(&cfg.TLSKeyFile, "tls-key", "", "PEM private key for HTTPS; with --tls-cert")
		fs.DurationVar(&cfg.ReconcileInterval, "reconcile-interval", 0, "reconcile every target this often (e.g. 1h), dropping database users no lease accounts for, as 'syvault reconcile --apply' does; 0 (the default) never")
		fs.StringVar(&cfg.MemoryLimit, "memory-limit", "auto", "soft limit on this process's memory for Go's collector, which collects sooner as the process nears it: auto (90% of the container's memory limit when it has one, unless GOMEMLIMIT is set), off (GOMEMLIMIT alone, if set), or a size in binary units such as 240MiB or 1.5GiB (over GOMEMLIMIT)")
		fs.StringVar(&publicURLs, "public-url", "", "comma list of URLs clients reach this server by, the only audiences client assertions may name; default: derived from --listen (required when it binds every interface, outside --dev)")
	}
	if cmd == "serve" || cmd == "rebuild-projections" {
		fs.DurationVar(&cfg.EndedLeaseRetention, "ended-lease-retention", projections.EndedLeaseRetention,
			"how long an ended lease's record stays in the lease bucket, between 1m and 720h; a GET of an older ended lease is answered from its events. Shorter keeps less in NATS's memory when many short leases are made")
	}
	if cmd == "serve" || cmd == "rotate-token-key" || cmd == "reseal" {
		fs.StringVar(&cfg.PreviousMasterKeyFile, "previous-master-key-file", "", "while the master key changes: the key being replaced, still used to open what it sealed until 'syvault reseal' has run (or set SYVAULT_PREVIOUS_MASTER_KEY)")
	}
	if cmd == "init" {
		fs.StringVar(&cfg.AdminClientFile, "admin-client-file", "", "where to write the first admin client's credentials (default DATA_DIR/"+AdminClientFile+"); - writes them to standard output, e.g. through kubectl exec")
	}
	if cmd == "recover-admin" {
		fs.StringVar(&cfg.AdminClientFile, "admin-client-file", "", "where to write the new admin client's credentials (required; a file that does not exist yet); - writes them to standard output, e.g. through kubectl exec")
	}
	if cmd == "init" || cmd == "recover-admin" {
		fs.StringVar(&publicURLs, "public-url", "", "the URL clients reach the server by, written into the credentials as their server (default http://127.0.0.1:8200)")
	}
	if cmd == "nats-credential" {
		fs.StringVar(&cfg.Out, "out", "nats-credential", "directory to write nkey-seed, nkey-public and nats-auth.conf to")
	}
	if cmd == "reconcile" {
		fs.StringVar(&cfg.ReconcileTarget, "target", "", "reconcile only the target with this record uid (default: every target)")
		fs.BoolVar(&cfg.Apply, "apply", false, "drop the orphaned users found, each recorded in the audit trail (default: a dry run that changes nothing)")
		fs.StringVar(&cfg.Format, "format", "text", "output: text or json")
	}
	if cmd == "rotate-token-key" {
		fs.BoolVar(&cfg.DropPrevious, "drop-previous", false, "refuse every token issued so far, at once (for a key that may have leaked); otherwise the old key keeps verifying until its tokens expire")
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q: 'syvault %s' takes flags only, all of them before any other word (see 'syvault %s --help')",
			fs.Arg(0), cmd, cmd)
	}
	// Environment variables fill what the command line left unset.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		env := "SYVAULT_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && !set[f.Name] {
			if err := fs.Set(f.Name, v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%s=%q is not a valid --%s (%s), such as its default %q", env, v, f.Name, f.Usage, f.DefValue)
			}
		}
	})
	if envErr != nil {
		return cfg, envErr
	}
	cfg.MasterKey = os.Getenv("SYVAULT_MASTER_KEY")
	cfg.PreviousMasterKey = os.Getenv("SYVAULT_PREVIOUS_MASTER_KEY")
	cfg.Components = splitList(components)
	cfg.PublicURLs = splitList(publicURLs)
	for _, c := range cfg.Components {
		if c != "all" && c != "api" && c != "workers" {
			return cfg, fmt.Errorf("--components: unknown component %q (want all, api, workers)", c)
		}
	}
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		return cfg, errors.New("--tls-cert and --tls-key go together")
	}
	if cmd == "serve" {
		if _, err := parseMemoryLimit(cfg.MemoryLimit); err != nil {
			return cfg, err
		}
	}
	if cmd == "serve" && (cfg.TokenTTL < time.Minute || cfg.TokenTTL > tokenkey.MaxTokenTTL) {
		return cfg, errors.New("--token-ttl must be between 1m and 24h")
	}
	if cmd == "reconcile" && cfg.Format != "text" && cfg.Format != "json" {
		return cfg, fmt.Errorf("--format must be text or json, not %q", cfg.Format)
	}
	if cfg.ReconcileInterval < 0 || cfg.ReconcileInterval > 0 && cfg.ReconcileInterval < time.Second {
		return cfg, errors.New("--reconcile-interval must be 0 (off) or at least 1s")
	}
	if cfg.EndedLeaseRetention != 0 && (cfg.EndedLeaseRetention < time.Minute || cfg.EndedLeaseRetention > 720*time.Hour) {
		return cfg, errors.New("--ended-lease-retention must be between 1m and 720h")
	}
	if r := cfg.ClientRateLimit; r != 0 && (r < 0.001 || r > 100000 || math.IsNaN(r)) {
		return cfg, errors.New("--client-rate-limit must be 0 (no limit) or a rate per second from 0.001 to 100000, e.g. 20 or 0.5")
	}
	if cfg.Replicas < 1 || cfg.Replicas > 5 {
		return cfg, errors.New("--replicas must be between 1 and 5")
	}
	return cfg, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (c Config) runs(component string) bool {
	for _, x := range c.Components {
		if x == "all" || x == component {
			return true
		}
	}
	return len(c.Components) == 0
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}
