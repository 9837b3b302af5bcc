// Package cli is the sy command-line client of SyVault. Main runs one command line with
// everything it touches injected (arguments, environment, standard streams), so tests and
// the server's end-to-end tests run commands in-process with a fake environment.
//
// Every HTTP call goes through package http/client. Errors are reported as exactly one
// line on stderr, "sy: <message>"; the exit status is 0 on success, 1 on a runtime error
// and 2 on a usage error (unknown command or flag, bad flag value, missing argument or
// required flag).
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/internal/termtext"
)

// Exit statuses returned by Main.
const (
	ExitOK    = 0 // the command succeeded
	ExitError = 1 // the command failed at run time (server error, unreachable server, I/O)
	ExitUsage = 2 // the command line is wrong: unknown command or flag, missing argument
)

// Main runs sy with args (without the program name) and returns the exit status. getenv
// reads the environment (os.Getenv in production); stdin, stdout and stderr are the
// standard streams. Data (tokens, leases, tables) goes to stdout; notes and the single
// error line go to stderr. Main keeps no global state, so concurrent calls are safe.
func Main(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	if args == nil {
		args = []string{} // cobra falls back to os.Args on nil
	}
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	a := &app{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "sy: %s (see '%s --help')\n", oneLine(ue.msg), cmd.CommandPath())
		return ExitUsage
	}
	var ee *exitError
	if errors.As(err, &ee) {
		fmt.Fprintf(stderr, "sy: %s\n", oneLine(ee.msg))
		return ee.code
	}
	fmt.Fprintf(stderr, "sy: %s\n", oneLine(a.describe(ctx, err)))
	return ExitError
}

// app holds what every command shares: the injected environment and the global flags.
type app struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	flags credentialFlags
	// server is the server URL in use, once a client was made, and where it came from
	// (a flag, a variable or a credentials file), for error messages.
	server, serverSource string
}

// usageError is a wrong command line: Main prints it with a pointer to --help and exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitError ends sy with its own exit status, such as that of the application sy agent
// ran, after its message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "sy",
		Short: "SyVault command-line client: dynamic database credentials",
		Long: `sy asks a SyVault server for short-lived database credentials (leases) and manages
the targets they are created on.

Credentials (flags override environment variables, which override a credentials file):
  --server            SY_SERVER            server URL, e.g. https://vault.example.com
  --client-id         SY_CLIENT_ID         the client's id
  --private-key-file  SY_PRIVATE_KEY_FILE  the client's Ed25519 private key (PKCS#8 PEM);
                      SY_PRIVATE_KEY       or the PEM text itself
  --credentials-file  SY_CREDENTIALS_FILE  a JSON file {"server", "client_id", "private_key"},
                                           like the admin-client.json the server writes

Errors are one line on stderr; the exit status is 1 for a failure, 2 for a usage error.`,
		Version:       versionString(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          groupArgs,
		RunE:          groupRun,
		// Flags and arguments are checked here so that a missing required flag is a usage
		// error (exit 2) like an unknown one, not a runtime failure.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := cmd.ValidateRequiredFlags(); err != nil {
				return &usageError{msg: err.Error()}
			}
			if err := cmd.ValidateFlagGroups(); err != nil {
				return &usageError{msg: err.Error()}
			}
			return nil
		},
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &usageError{msg: err.Error()}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.flags.server, "server", "", "server URL (env SY_SERVER)")
	pf.StringVar(&a.flags.clientID, "client-id", "", "client id (env SY_CLIENT_ID)")
	pf.StringVar(&a.flags.privateKeyFile, "private-key-file", "", "Ed25519 private key file, PKCS#8 PEM (env SY_PRIVATE_KEY_FILE, or the PEM itself in SY_PRIVATE_KEY)")
	pf.StringVar(&a.flags.credentialsFile, "credentials-file", "", "JSON credentials file with server, client_id and private_key (env SY_CREDENTIALS_FILE)")

	root.AddCommand(a.authCommand(), a.keygenCommand(), a.dynamicCommand(), a.agentCommand(), a.clientCommand(),
		a.auditCommand(), a.uiCommand(), a.versionCommand())
	return root
}

// groupArgs and groupRun make a command that only groups subcommands answer an unknown
// subcommand with a usage error, and a bare invocation with its help.
func groupArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	// cobra sets its default distance only on its own path to suggestions, not this one.
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
	}
	return &usageError{msg: msg}
}

func groupRun(cmd *cobra.Command, _ []string) error { return cmd.Help() }

func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Args: groupArgs, RunE: groupRun}
	cmd.AddCommand(subs...)
	return cmd
}

// exactArgs accepts exactly one positional argument per name, reporting a usage error
// that names what is missing or extra.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return usagef("missing argument %s", names[len(args)])
		case len(args) > len(names):
			return usagef("unexpected argument %q", args[len(names)])
		}
		return nil
	}
}

// describe turns an error into the message of the single error line: the server's code
// and message for an API error, one short sentence for a network failure.
func (a *app) describe(ctx context.Context, err error) string {
	var apiErr *client.Error
	var urlErr *url.Error
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	server := a.server
	if server == "" {
		server = "the server"
	}
	switch {
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.As(err, &apiErr):
		if apiErr.Code == "http_error" {
			return fmt.Sprintf("%s answered HTTP %d (%s); is it a SyVault server's URL%s?", server, apiErr.Status, http.StatusText(apiErr.Status), a.fromSource())
		}
		return fmt.Sprintf("%s: %s", apiErr.Code, apiErr.Message)
	case errors.As(err, &urlErr):
		if urlErr.Timeout() {
			return fmt.Sprintf("no answer from %s in time", server)
		}
		return fmt.Sprintf("cannot reach %s: %v; is the server running there, and is that its URL%s?", server, urlErr.Err, a.fromSource())
	case errors.As(err, &syntaxErr), errors.As(err, &typeErr):
		return fmt.Sprintf("the answer of %s is not SyVault API JSON (is the server URL right?): %v", server, err)
	}
	return err.Error()
}

// fromSource says where the server URL came from, for messages: " (from --server)".
func (a *app) fromSource() string {
	if a.serverSource == "" {
		return ""
	}
	return " (from " + a.serverSource + ")"
}

// oneLine folds a message onto a single line, shown as written (the server's messages
// quote what others chose).
func oneLine(s string) string {
	return termtext.Printable(strings.TrimSpace(strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)))
}
