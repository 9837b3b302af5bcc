package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/internal/termtext"
)

func (a *app) dynamicCommand() *cobra.Command {
	return group("dynamic", "Dynamic database credentials",
		group("lease", "Create, list, renew and revoke leases (temporary database users)",
			a.leaseCreateCommand(), a.leaseListCommand(), a.leaseGetCommand(),
			a.leaseRenewCommand(), a.leaseRevokeCommand()),
		group("target", "Manage the databases leases are created on (admin)",
			a.targetCreateCommand(), a.targetListCommand(), a.targetGetCommand(),
			a.targetUpdateCommand(), a.targetDeleteCommand()),
	)
}

func (a *app) leaseCreateCommand() *cobra.Command {
	var recordUID, output string
	var ttl ttlValue
	format := newEnum("json", "json", "env")
	cmd := &cobra.Command{
		Use:   "create --record-uid UID --ttl SECONDS [--output FILE] [--format json|env]",
		Short: "Create a lease: a new database user with a random password",
		Long: `Create a lease on a target: the server creates a database user with the target's grants
and answers with its credentials once they work.

Without --output the credentials go to stdout: as JSON (--format json, the default), or as
shell export lines (--format env) of SY_LEASE_ID, SY_DB_USERNAME, SY_DB_PASSWORD,
SY_DB_CONNECTION_STRING and SY_LEASE_EXPIRES_AT:

  eval "$(sy dynamic lease create --record-uid 7Kj9mNpQ2xRs --ttl 1h --format env)"

With --output FILE they are written to FILE instead (mode 0600, atomically: readers never
see a partial file), and only a note without secrets goes to stderr. If FILE cannot be
written, the new lease is revoked again.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.newClient()
			if err != nil {
				return err
			}
			var file *atomicFile
			if output != "" {
				if file, err = createAtomic(output); err != nil {
					return err
				}
				defer file.abort()
			}
			lease, err := c.CreateLease(cmd.Context(), recordUID, int(ttl))
			if err != nil {
				return err
			}
			var buf bytes.Buffer
			if format.value == "env" {
				err = writeExports(&buf, leaseEnv(lease)...)
			} else {
				err = writeJSON(&buf, lease)
			}
			if err != nil {
				return err
			}
			if file == nil {
				_, err = a.stdout.Write(buf.Bytes())
				return err
			}
			if err := file.commit(buf.Bytes()); err != nil {
				return a.undelivered(cmd.Context(), c, lease, err)
			}
			fmt.Fprintf(a.stderr, "lease %s written to %s, expires %s\n", lease.LeaseID, output, formatTime(lease.ExpiresAt))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&recordUID, "record-uid", "", "record uid of the target to lease on")
	f.Var(&ttl, "ttl", "lease duration in seconds, or a duration like 1h (at most 86400 and the target's maximum)")
	f.StringVarP(&output, "output", "o", "", "write the credentials to this file (mode 0600, atomic) instead of stdout")
	f.Var(format, "format", "credentials format: json or env (shell export lines)")
	cmd.MarkFlagRequired("record-uid")
	cmd.MarkFlagRequired("ttl")
	return cmd
}

func (a *app) leaseListCommand() *cobra.Command {
	var opts client.ListLeasesOptions
	var all bool
	format := newEnum("table", "table", "json")
	cmd := &cobra.Command{
		Use:   "list [--record-uid UID] [--limit N] [--all] [--format table|json]",
		Short: "List active leases, oldest first",
		Long: `List active leases, oldest first: an app client sees its own, an admin all of them.
One page of at most --limit leases (server default 100) is shown; --all follows the pages to
the end, --cursor starts at a page a previous --format json answer named in next_cursor.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Limit < 0 {
				return usagef("--limit must not be negative")
			}
			c, err := a.newClient()
			if err != nil {
				return err
			}
			page, err := c.ListLeases(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if all {
				seen := map[string]bool{}
				for page.NextCursor != "" {
					if seen[page.NextCursor] {
						return fmt.Errorf("the server repeated the page cursor %q", page.NextCursor)
					}
					seen[page.NextCursor] = true
					o := opts
					o.Cursor = page.NextCursor
					next, err := c.ListLeases(cmd.Context(), o)
					if err != nil {
						return err
					}
					page.Data = append(page.Data, next.Data...)
					page.NextCursor = next.NextCursor
				}
			}
			if page.Data == nil {
				page.Data = []client.LeaseInfo{}
			}
			if format.value == "json" {
				return writeJSON(a.stdout, page)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "LEASE_ID\tRECORD_UID\tUSERNAME\tSTATUS\tCREATED_AT\tEXPIRES_AT")
			for _, l := range page.Data {
				status := l.Status
				if status == "" {
					status = "active" // lists show active leases only
				}
				tableRow(tw, l.LeaseID, l.RecordUID, l.Username, status, formatTime(l.CreatedAt), formatTime(l.ExpiresAt))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.NextCursor != "" {
				fmt.Fprintf(a.stderr, "more leases follow: use --all, or --cursor %s\n", page.NextCursor)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.RecordUID, "record-uid", "", "only leases on this target")
	f.IntVar(&opts.Limit, "limit", 0, "leases per page (server default 100, at most 1000)")
	f.StringVar(&opts.Cursor, "cursor", "", "start at this page cursor (next_cursor of a previous answer)")
	f.BoolVar(&all, "all", false, "follow next_cursor and list every page")
	f.Var(format, "format", "output format: table or json")
	return cmd
}

func (a *app) leaseGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get LEASE_ID",
		Short: "Show a lease, ended or not (never its password)",
		Args:  exactArgs("LEASE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.newClient()
			if err != nil {
				return err
			}
			l, err := c.GetLease(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return writeJSON(a.stdout, l)
		},
	}
}

func (a *app) leaseRenewCommand() *cobra.Command {
	var ttl ttlValue
	cmd := &cobra.Command{
		Use:   "renew LEASE_ID --ttl SECONDS",
		Short: "Extend a lease to now + --ttl (within its caps) and show it",
		Args:  exactArgs("LEASE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.newClient()
			if err != nil {
				return err
			}
			l, err := c.RenewLease(cmd.Context(), args[0], int(ttl))
			if err != nil {
				return err
			}
			return writeJSON(a.stdout, l)
		},
	}
	cmd.Flags().Var(&ttl, "ttl", "new remaining duration in seconds, or a duration like 1h")
	cmd.MarkFlagRequired("ttl")
	return cmd
}

func (a *app) leaseRevokeCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "revoke LEASE_ID [--force]",
		Short: "Revoke a lease: end its sessions and drop its database user",
		Long: `Revoke a lease: end its sessions and drop its database user. When the database cannot
be reached the revocation is recorded and retried until the user is dropped.

--force (admin only) is for a database gone for good: the server makes one drop attempt
of its own there and then (a database that is back gets its user dropped), and if it
fails gives the drop up: the lease ends (its status revoked, or expired, with
"abandoned": true) and is no longer retried. Its user may remain on the database (a
PostgreSQL one cannot log in past its expiry); if the database comes back while the
target is registered, 'syvault reconcile --apply' drops it.`,
		Args: exactArgs("LEASE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.newClient()
			if err != nil {
				return err
			}
			if force {
				l, err := c.ForceRevokeLease(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if l.Abandoned {
					fmt.Fprintf(a.stderr, "lease %s %s; its user %s was not dropped (the attempt failed) and may remain on the database\n", l.LeaseID, l.Status, l.Username)
				} else {
					fmt.Fprintf(a.stderr, "lease %s %s\n", l.LeaseID, l.Status)
				}
				return nil
			}
			if err := c.RevokeLease(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "lease %s revoked\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "give up a drop that cannot finish (a database gone for good; admin only)")
	return cmd
}

func (a *app) targetCreateCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "create -f target.json",
		Short: "Register a target from a JSON file (- for stdin) and show it",
		Long: `Register a target database from a JSON file (or stdin with -f -) with the fields of the
API: name, engine, host, port, database, admin_username, admin_password, tls_mode, grants,
max_ttl_seconds, connection_host, connection_port, connection_limit (sessions per lease
user). The server checks the admin login and
privileges first. The answer, with its record_uid, is printed as JSON without the admin
password; its warnings (what the database lets lease users do beyond the grants, such
as create objects in a schema every role may create in) also go to stderr.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := a.readTarget(file)
			if err != nil {
				return err
			}
			c, err := a.newClient()
			if err != nil {
				return err
			}
			created, err := c.CreateTarget(cmd.Context(), t)
			if err != nil {
				return err
			}
			created.AdminPassword = "" // never shown, whatever the server answered
			a.warn(created.Warnings)
			return writeJSON(a.stdout, created)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "target JSON file, or - for stdin")
	cmd.MarkFlagRequired("file")
	return cmd
}

func (a *app) targetUpdateCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "update RECORD_UID -f target.json",
		Short: "Replace a target's settings from a JSON file (- for stdin), e.g. a rotated admin password",
		Long: `Replace a target's settings with those of a JSON file (or stdin with -f -), with the same
fields as for create; the whole target is replaced (HTTP PUT), so give every field, not
only the changed ones. The server checks the new admin login and privileges first; the
record_uid and the existing leases stay (a record_uid, created_at and warnings in the
file, as "target get" and "create" print them, are ignored). The updated target is
printed as JSON without the admin password; its warnings also go to stderr. For example, after rotating the admin password in the database:

  sy dynamic target update 7Kj9mNpQ2xRs -f orders-pg.json`,
		Args: exactArgs("RECORD_UID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := a.readTarget(file)
			if err != nil {
				return err
			}
			// A file saved from "target get" names the target and its creation time; those
			// are not settings (the client leaves them out), but the uid must be this one.
			if t.RecordUID != "" && t.RecordUID != args[0] {
				return fmt.Errorf("the target file is for record_uid %s, not %s", t.RecordUID, args[0])
			}
			c, err := a.newClient()
			if err != nil {
				return err
			}
			updated, err := c.UpdateTarget(cmd.Context(), args[0], t)
			if err != nil {
				return err
			}
			updated.AdminPassword = ""
			a.warn(updated.Warnings)
			return writeJSON(a.stdout, updated)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "target JSON file, or - for stdin")
	cmd.MarkFlagRequired("file")
	return cmd
}

// warn puts each of a target's warnings on stderr too, where an operator piping the
// JSON into a file still sees them. They name schemas whoever may create one named:
// written so that no name can redraw the statement they give.
func (a *app) warn(warnings []string) {
	for _, w := range warnings {
		fmt.Fprintf(a.stderr, "sy: warning: %s\n", termtext.Printable(w))
	}
}

// targetFields names the fields of a target's JSON, for a file that has others.
var targetFields = func() string {
	var names []string
	t := reflect.TypeFor[client.Target]()
	for i := range t.NumField() {
		// warnings are an answer's, never a setting.
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" && name != "warnings" {
			names = append(names, name)
		}
	}
	return strings.Join(names, ", ") + "; see the README's Quickstart"
}()

// readTarget reads a target's JSON, refusing unknown fields so that a misspelt one is
// reported instead of silently dropped.
func (a *app) readTarget(name string) (client.Target, error) {
	var r io.Reader = a.stdin
	source := "stdin"
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return client.Target{}, fmt.Errorf("reading the target file %s (-f): %w", name, pathErrCause(err))
		}
		defer f.Close()
		r, source = f, name
	}
	if r == nil {
		return client.Target{}, fmt.Errorf("reading the target: no stdin")
	}
	dec := json.NewDecoder(io.LimitReader(r, 64<<10+1))
	dec.DisallowUnknownFields()
	var t client.Target
	if err := dec.Decode(&t); err != nil {
		return client.Target{}, fmt.Errorf("%s is not a target's JSON: %w (its fields: %s)", source, err, targetFields)
	}
	if dec.More() {
		return client.Target{}, fmt.Errorf("%s holds more than one JSON value", source)
	}
	return t, nil
}

func (a *app) targetListCommand() *cobra.Command {
	format := newEnum("table", "table", "json")
	cmd := &cobra.Command{
		Use:   "list [--format table|json]",
		Short: "List targets",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.newClient()
			if err != nil {
				return err
			}
			targets, err := c.ListTargets(cmd.Context())
			if err != nil {
				return err
			}
			if targets == nil {
				targets = []client.Target{}
			}
			for i := range targets {
				targets[i].AdminPassword = ""
			}
			if format.value == "json" {
				return writeJSON(a.stdout, map[string]any{"data": targets})
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "RECORD_UID\tNAME\tENGINE\tHOST\tPORT\tDATABASE\tMAX_TTL\tCREATED_AT")
			for _, t := range targets {
				tableRow(tw, t.RecordUID, t.Name, t.Engine, t.Host, strconv.Itoa(t.Port),
					t.Database, strconv.Itoa(t.MaxTTLSeconds), formatTime(t.CreatedAt))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().Var(format, "format", "output format: table or json")
	return cmd
}

func (a *app) targetGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get RECORD_UID",
		Short: "Show a target (never its admin password)",
		Args:  exactArgs("RECORD_UID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.newClient()
			if err != nil {
				return err
			}
			t, err := c.GetTarget(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			t.AdminPassword = ""
			return writeJSON(a.stdout, t)
		},
	}
}

func (a *app) targetDeleteCommand() *cobra.Command {
	var revokeLeases, force bool
	cmd := &cobra.Command{
		Use:   "delete RECORD_UID [--revoke-leases [--force]]",
		Short: "Remove a target; refused while it has active leases unless --revoke-leases",
		Long: `Remove a target. While it has active leases it is refused, unless --revoke-leases, which
revokes them first and removes nothing if a revocation cannot finish. With --force too,
for a target whose database is gone for good, the revocations that cannot finish are
given up (see 'sy dynamic lease revoke --force'): their users may remain there.`,
		Args: exactArgs("RECORD_UID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.newClient()
			if err != nil {
				return err
			}
			switch {
			case force && !revokeLeases:
				return fmt.Errorf("--force gives up the revocations --revoke-leases cannot finish; pass both")
			case force:
				err = c.ForceDeleteTarget(cmd.Context(), args[0])
			default:
				err = c.DeleteTarget(cmd.Context(), args[0], revokeLeases)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "target %s deleted\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&revokeLeases, "revoke-leases", false, "revoke the target's active leases first")
	cmd.Flags().BoolVar(&force, "force", false, "with --revoke-leases: give up the revocations that cannot finish (a database gone for good)")
	return cmd
}
