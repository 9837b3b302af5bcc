package cli

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/syvault/syvault/http/client"
)

const (
	// agentOpTimeout bounds one call to the server; a little above the server's own
	// request timeout (20 s by default), which bounds the database work of a create.
	agentOpTimeout = 25 * time.Second
	// defaultGrace is --grace unless a tenth of --ttl is shorter.
	defaultGrace = 30 * time.Second
	// signalLag bounds the wait for a signal that cancelled the context to reach sy
	// agent's own channel too; it takes microseconds.
	signalLag = 100 * time.Millisecond
)

// agentAPI is what sy agent asks of the server.
type agentAPI interface {
	CreateLease(ctx context.Context, recordUID string, ttlSeconds int) (*client.Lease, error)
	RenewLease(ctx context.Context, id string, ttlSeconds int) (*client.LeaseInfo, error)
	RevokeLease(ctx context.Context, id string) error
}

var _ agentAPI = (*client.Client)(nil)

// agentOptions are sy agent's flags, checked.
type agentOptions struct {
	recordUID  string
	ttl        int // seconds
	files      leaseFiles
	grace      time.Duration
	keepOnExit bool
	once       bool
	argv       []string  // the --exec application
	signal     os.Signal // sent on rotation; nil restarts an --exec application instead
	pidFile    string
}

func (a *app) agentCommand() *cobra.Command {
	var o agentOptions
	var ttl ttlValue
	var templates []string
	var execApp bool
	var sigFlag string
	cmd := &cobra.Command{
		Use:   "agent --record-uid UID --ttl SECONDS [--output FILE] [--template IN:OUT]... [--exec -- CMD ARGS... | --pid-file FILE --signal SIG] [--once]",
		Short: "Keep a lease's credentials fresh for a long-running application: renew, rotate, revoke",
		Long: `Keep a lease's credentials fresh for a long-running application.

sy agent obtains a lease on --record-uid for --ttl and writes it to --output (the JSON of
"sy dynamic lease create --output") and to each --template IN:OUT, every file with mode 0600
and atomically, so that a reader never sees a partial file. Then it:

  - renews the lease at about two thirds of its remaining time (with jitter), and writes
    the files again with the new expires_at;
  - when a renewal comes back short, because the server holds expires_at at the lease's
    cap (24 h from created_at, or the target's or client's max_ttl_seconds), obtains a
    new lease at once, writes it, tells the application, waits --grace, then revokes the
    old lease;
  - when the server cannot be reached, retries with backoff and keeps the credentials it
    holds while they are valid; once they have expired and no new lease can be had, it
    stops the application and exits 1;
  - when the server's client rate limit refuses a lease it needs (the first, also with
    --once, or one replacing a lease that ended), asks again when the server says;
  - on SIGTERM or SIGINT, passes the signal on to the --exec application and waits for it
    to exit, revokes its lease (unless --keep-on-exit), and exits 0.

How the application learns of new credentials:
  --exec -- CMD ARGS...         sy agent runs the application with SY_LEASE_ID, SY_DB_USERNAME,
                                SY_DB_PASSWORD, SY_DB_CONNECTION_STRING and SY_LEASE_EXPIRES_AT
                                in its environment (the names of --format env; SY_PRIVATE_KEY,
                                SY_PRIVATE_KEY_FILE and SY_CREDENTIALS_FILE are left out) and restarts it with the new ones, or sends it
                                --signal instead (it then reads the files: its environment
                                keeps the first credentials). When it exits by itself, sy
                                agent revokes the lease and exits with its status.
  --pid-file FILE --signal SIG  sy agent sends SIG to the process whose id FILE holds.
  neither                       the application reads the files again by itself, e.g. when
                                a login is refused or expires_at draws near.

A template (Go text/template) sees the lease: {{.LeaseID}} {{.Username}} {{.Password}}
{{.ConnectionString}} {{.ExpiresAt}} {{.CreatedAt}} {{.RecordUID}} {{.Engine}} {{.Host}}
{{.Port}} {{.Database}}, and two functions: shellquote quotes for a shell or env file,
pgpass escapes a .pgpass field. For example:

  {{.ConnectionString}}                                    a DSN (URI) for libpq, psql
  export PGPASSWORD={{shellquote .Password}}               an env file
  {{pgpass .Host}}:{{.Port}}:{{pgpass .Database}}:{{pgpass .Username}}:{{pgpass .Password}}
  jdbc.url=jdbc:postgresql://{{.Host}}:{{.Port}}/{{.Database}}   JDBC properties

--once obtains one lease, writes the files and exits, like "sy dynamic lease create
--output" (for an init container).

The log is one line per event on stderr, key=value: lease obtained, renewed, rotated,
revoked, retrying; it never holds a password, connection string or token.

  sy agent --record-uid 7Kj9mNpQ2xRs --ttl 1h --output /shared/db-creds.json
  sy agent --record-uid 7Kj9mNpQ2xRs --ttl 1h --grace 1m --exec -- ./myapp --port 8080`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(cmd, args, int(ttl), templates, execApp, sigFlag); err != nil {
				return err
			}
			// Whatever the mode: an application beside the agent (--output, --pid-file)
			// usually runs as the same user too, and could read SY_PRIVATE_KEY from
			// /proc/<agent>/environ. Only an application the agent starts itself is
			// sure to, so only --exec refuses to go on without it (a sandbox may deny it).
			if err := hideFromChildren(); err != nil {
				if execApp {
					return fmt.Errorf("hiding the private key from the application: %w", err)
				}
				slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)).Warn("could not hide the private key from this user's other processes", "err", err)
			}
			for _, v := range templates {
				in, out, _ := splitTemplateFlag(v) // checked above
				t, err := loadTemplate(in, out)
				if err != nil {
					return err
				}
				o.files.templates = append(o.files.templates, t)
			}
			c, err := a.newClient()
			if err != nil {
				return err
			}
			if err := o.files.check(); err != nil {
				return err
			}
			return a.runAgent(cmd.Context(), c, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.recordUID, "record-uid", "", "record uid of the target to lease on")
	f.Var(&ttl, "ttl", "lease duration in seconds, or a duration like 1h (at most 86400 and the target's maximum); each renewal asks for it again")
	f.StringVarP(&o.files.output, "output", "o", "", "write the lease to this file as JSON (mode 0600, atomic), as sy dynamic lease create --output does")
	f.StringArrayVar(&templates, "template", nil, "render the text/template file IN over the lease into OUT (mode 0600, atomic); IN:OUT, repeatable")
	f.BoolVar(&execApp, "exec", false, "run the application given after -- with the credentials in its environment, and restart (or --signal) it on rotation")
	f.StringVar(&sigFlag, "signal", "", "on rotation send this signal (e.g. SIGHUP) to the --exec application instead of restarting it, or to the --pid-file process")
	f.StringVar(&o.pidFile, "pid-file", "", "on rotation send --signal to the process whose id this file holds")
	f.DurationVar(&o.grace, "grace", defaultGrace, "how long the old lease stays valid after a rotation before it is revoked; a tenth of --ttl if that is shorter")
	f.BoolVar(&o.keepOnExit, "keep-on-exit", false, "on SIGTERM/SIGINT leave the lease to expire instead of revoking it")
	f.BoolVar(&o.once, "once", false, "obtain one lease, write the files and exit (like sy dynamic lease create --output)")
	cmd.MarkFlagRequired("record-uid")
	cmd.MarkFlagRequired("ttl")
	cmd.MarkFlagsMutuallyExclusive("exec", "pid-file")
	for _, other := range []string{"exec", "pid-file", "signal", "grace", "keep-on-exit"} {
		cmd.MarkFlagsMutuallyExclusive("once", other)
	}
	return cmd
}

// check completes o from the flags that need checking and reports the first usage error.
func (o *agentOptions) check(cmd *cobra.Command, args []string, ttl int, templates []string, execApp bool, sigFlag string) error {
	o.ttl = ttl
	if ttl < 1 {
		return usagef("--ttl must be at least 1 second")
	}
	dash := cmd.ArgsLenAtDash()
	switch {
	case execApp && (dash != 0 || len(args) == 0):
		return usagef("--exec needs the application after --, as in: sy agent ... --exec -- ./myapp --port 8080")
	case !execApp && len(args) > 0:
		return usagef("unexpected argument %q (an application to run goes after --exec --)", args[0])
	case execApp:
		o.argv = args
	}
	for _, v := range templates {
		if _, _, err := splitTemplateFlag(v); err != nil {
			return err
		}
	}
	if sigFlag != "" {
		sig, err := parseSignal(sigFlag)
		if err != nil {
			return usagef("%v", err)
		}
		o.signal = sig
		if !execApp && o.pidFile == "" {
			return usagef("--signal goes with --exec or --pid-file: it names the signal to send on rotation")
		}
	}
	if o.pidFile != "" && o.signal == nil {
		return usagef("--pid-file needs --signal, the signal to send that process on rotation")
	}
	if o.pidFile != "" {
		if err := checkPIDFile(o.pidFile); err != nil {
			return usagef("%v", err)
		}
	}
	if o.files.output == "" && len(templates) == 0 && !execApp {
		if o.once {
			return usagef("--once needs --output or --template: somewhere to write the lease")
		}
		return usagef("give --output, --template or --exec: somewhere for the credentials to go")
	}
	lifetime := time.Duration(ttl) * time.Second
	if !cmd.Flags().Changed("grace") {
		o.grace = min(defaultGrace, lifetime/10)
	}
	switch {
	case o.grace < 0:
		return usagef("--grace must not be negative")
	case !o.once && o.grace >= lifetime/3:
		return usagef("--grace %v must be shorter than a third of --ttl (%v): a rotation may start with only that much of the old lease left", o.grace, lifetime/3)
	}
	return nil
}

// runAgent runs sy agent with checked options until it is stopped or fails.
func (a *app) runAgent(ctx context.Context, api agentAPI, o agentOptions) error {
	// The signal itself, not only the cancelled context, so that the --exec application
	// gets the one sy agent got, and a second one can hurry it.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	g := &agent{
		app: a, api: api, o: o, sigs: sigs, jitter: rand.Float64,
		log: slog.New(slog.NewTextHandler(a.stderr, nil)),
	}
	if len(o.argv) > 0 {
		g.child = &child{argv: o.argv, stdin: a.stdin, stdout: a.stdout, stderr: a.stderr}
	}
	return g.run(ctx)
}
