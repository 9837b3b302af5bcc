package cli

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/http/client"
)

func (a *app) clientCommand() *cobra.Command {
	return group("client", "Register, change, list and remove the clients that may use the server (admin)",
		a.clientCreateCommand(), a.clientUpdateCommand(), a.clientListCommand(), a.clientDeleteCommand())
}

// clientFlags are a client's settings as create and update take them, and the output
// format.
type clientFlags struct {
	name, keyFile string
	allow         []string
	maxTTL        ttlValue
	maxLeases     int
	role, format  *enumValue
}

// newClientFlags adds the flags to cmd; an update's say what they change, and 0 removes
// a cap.
func newClientFlags(cmd *cobra.Command, update bool) *clientFlags {
	cf := &clientFlags{role: newEnum("app", "app", "admin"), format: newEnum("json", "json", "table")}
	help := map[string]string{
		"name":            "the client's name, e.g. the application's",
		"public-key-file": "the client's Ed25519 public key, PKIX PEM (client.pub.pem from sy keygen)",
		"role":            "app (leases on --allow targets only) or admin",
		"allow":           "record uid of a target the client may lease on; repeat it or separate uids with commas",
		"max-ttl":         "longest lease the client may hold, in seconds or a duration like 1h (default: the target's)",
		"max-leases":      "most leases the client may hold at once (default: no cap)",
	}
	if update {
		help["name"], help["public-key-file"] = "a new name", "a new Ed25519 public key, PKIX PEM; ends the tokens had with the old one"
		help["allow"] += ", replacing the list"
		help["max-ttl"] = "longest lease the client may hold, in seconds or a duration like 1h; 0: the target's"
		help["max-leases"] = "most leases the client may hold at once; 0: no cap"
	}
	f := cmd.Flags()
	f.StringVar(&cf.name, "name", "", help["name"])
	f.StringVar(&cf.keyFile, "public-key-file", "", help["public-key-file"])
	f.Var(cf.role, "role", help["role"])
	f.StringSliceVar(&cf.allow, "allow", nil, help["allow"])
	f.Var(&cf.maxTTL, "max-ttl", help["max-ttl"])
	f.IntVar(&cf.maxLeases, "max-leases", 0, help["max-leases"])
	f.Var(cf.format, "format", "output format: json or table")
	return cf
}

// print writes the client as --format asks.
func (cf *clientFlags) print(w io.Writer, c *client.AppClient) error {
	if cf.format.value == "table" {
		return writeClientTable(w, []client.AppClient{*c})
	}
	return writeJSON(w, c)
}

func (a *app) clientCreateCommand() *cobra.Command {
	var cf *clientFlags
	cmd := &cobra.Command{
		Use:   "create --name NAME --public-key-file FILE [--role app|admin] --allow UID [--allow UID2 ...] [--max-ttl N] [--max-leases N]",
		Short: "Register a client by its Ed25519 public key and show it with its client_id",
		Long: `Register a client by its Ed25519 public key (the client.pub.pem that sy keygen writes; the
private key never leaves its owner, and a private key file is refused here).

An app client (--role app, the default) may lease only the targets named with --allow,
which may be repeated or given a comma-separated list, for at most --max-ttl (seconds, or
a duration like 1h; default: no limit beyond the target's). --max-leases caps how many of
its leases may hold a database user at once (active, or revoking until the user is
dropped); one more is refused with 429 too_many_leases (default: no cap). An admin client
(--role admin) manages targets and clients and sees every lease. sy client update changes
these later, keeping the client_id.

The new client is printed as JSON (the default), with the client_id it authenticates
with, or as a table with --format table:

  sy keygen --out billing.pem
  sy client create --name billing --public-key-file billing.pub.pem --allow 7Kj9mNpQ2xRs --max-ttl 1h --max-leases 50`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			allowed := splitList(cf.allow)
			if cmd.Flags().Changed("max-leases") && (cf.maxLeases < 1 || cf.maxLeases > events.MaxClientLeases) {
				return usagef("--max-leases must be between 1 and %d, or left out for no cap", events.MaxClientLeases)
			}
			if cf.role.value == "app" && len(allowed) == 0 {
				return usagef("an app client needs --allow with the record uid(s) of the targets it may lease")
			}
			publicKey, err := readPublicKey(cf.keyFile)
			if err != nil {
				return err
			}
			c, err := a.newClient()
			if err != nil {
				return err
			}
			created, err := c.CreateClient(cmd.Context(), client.AppClient{
				Name: cf.name, PublicKey: publicKey, Role: cf.role.value, AllowedRecords: allowed, MaxTTLSeconds: int(cf.maxTTL),
				MaxLeases: cf.maxLeases,
			})
			if err != nil {
				return err
			}
			return cf.print(a.stdout, created)
		},
	}
	cf = newClientFlags(cmd, false)
	cmd.MarkFlagRequired("name")
	cmd.MarkFlagRequired("public-key-file")
	return cmd
}

// updateAttempts bounds how often an update made from a read is made again because the
// thing changed in between: more would mean admins (or scripts) fighting over it.
const updateAttempts = 3

func (a *app) clientUpdateCommand() *cobra.Command {
	var cf *clientFlags
	cmd := &cobra.Command{
		Use:   "update CLIENT_ID [--name NAME] [--public-key-file FILE] [--role app|admin] [--allow UID ...] [--max-ttl N] [--max-leases N]",
		Short: "Change a client's name, key, role, allowed targets or caps, keeping its client_id",
		Long: `Change what the flags given say and keep the rest: the client keeps its client_id, so
the application needs no new configuration unless its key changes.

--allow replaces the list of targets the client may lease (repeat it, or separate uids
with commas); on a target taken away the client can neither lease nor renew, and its
leases there end at their expiry (or revoke them). --max-ttl 0 and --max-leases 0 remove
those caps. A new --public-key-file ends every access token had with the old key: the
application must sign with the new private key from then on. The update is made on the
version read: should another admin change the client in between, the flags are applied
to what it then holds, not to the older read.

  sy client update 5b2e8f41-0c7d-4a93-b6e2-222222222222 --allow 7Kj9mNpQ2xRs,Other0000000 --max-leases 100`,
		Args: exactArgs("CLIENT_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			changed := cmd.Flags().Changed
			if cf.maxLeases < 0 || cf.maxLeases > events.MaxClientLeases || cf.maxTTL < 0 {
				return usagef("--max-ttl takes a positive number of seconds and --max-leases one up to %d, or 0 for no cap", events.MaxClientLeases)
			}
			var key string
			if changed("public-key-file") {
				var err error
				if key, err = readPublicKey(cf.keyFile); err != nil {
					return err
				}
			}
			c, err := a.newClient()
			if err != nil {
				return err
			}
			// The update is sent on the version read (If-Match): should another admin
			// change the client in between, the flags are applied again to what it then
			// holds, rather than the read's other settings undoing that change.
			for attempt := 1; ; attempt++ {
				cur, err := c.GetClient(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				next := *cur // with its version; the client leaves its id and creation time out
				if changed("name") {
					next.Name = cf.name
				}
				if changed("public-key-file") {
					next.PublicKey = key
				}
				if changed("role") {
					next.Role = cf.role.value
				}
				if changed("allow") {
					next.AllowedRecords = splitList(cf.allow)
				}
				if changed("max-ttl") {
					next.MaxTTLSeconds = int(cf.maxTTL)
				}
				if changed("max-leases") {
					next.MaxLeases = cf.maxLeases
				}
				updated, err := c.UpdateClient(cmd.Context(), args[0], next)
				var e *client.Error
				switch {
				case errors.As(err, &e) && e.Status == http.StatusPreconditionFailed && attempt < updateAttempts:
					// A little longer each time, jittered, so that two commands fighting
					// over one client fall out of step.
					select {
					case <-cmd.Context().Done():
						return cmd.Context().Err()
					case <-time.After(time.Duration(attempt)*100*time.Millisecond + rand.N(100*time.Millisecond)):
					}
					continue
				case errors.As(err, &e) && e.Status == http.StatusPreconditionFailed:
					return fmt.Errorf("client %s changed between each of %d reads and their updates (another admin or script is changing it); run the command again", args[0], attempt)
				case err != nil:
					return err
				}
				return cf.print(a.stdout, updated)
			}
		},
	}
	cf = newClientFlags(cmd, true)
	return cmd
}

// splitList flattens repeated and comma-separated values, trimming blanks and dropping
// empty and repeated entries.
func splitList(values []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range values {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if s != "" && !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return out
}

// readPublicKey reads an Ed25519 public key PEM file and returns its PEM block. A private
// key is refused before anything is sent, so that a mix-up of client.pem and
// client.pub.pem cannot hand the secret to the server.
func readPublicKey(name string) (string, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("reading the public key file %s (--public-key-file): %w; sy keygen --out client.pem writes client.pub.pem",
			name, pathErrCause(err))
	}
	block, _ := pem.Decode(data)
	switch {
	case block == nil:
		return "", fmt.Errorf("%s is not a PEM public key; pass the .pub.pem file sy keygen wrote", name)
	case strings.Contains(block.Type, "PRIVATE KEY"):
		return "", fmt.Errorf("%s holds a private key, which must stay with its owner; pass the public key, the .pub.pem file sy keygen wrote", name)
	case block.Type != "PUBLIC KEY":
		return "", fmt.Errorf("%s holds a PEM %q block, not a PUBLIC KEY; pass the .pub.pem file sy keygen wrote", name, block.Type)
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("%s is not a valid public key: %w", name, err)
	}
	if _, ok := key.(ed25519.PublicKey); !ok {
		return "", fmt.Errorf("%s is not an Ed25519 public key; make a key pair with sy keygen", name)
	}
	return string(pem.EncodeToMemory(block)), nil
}

func (a *app) clientListCommand() *cobra.Command {
	format := newEnum("table", "table", "json")
	cmd := &cobra.Command{
		Use:   "list [--format table|json]",
		Short: "List the registered clients",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.newClient()
			if err != nil {
				return err
			}
			clients, err := c.ListClients(cmd.Context())
			if err != nil {
				return err
			}
			if clients == nil {
				clients = []client.AppClient{}
			}
			if format.value == "json" {
				return writeJSON(a.stdout, map[string]any{"data": clients})
			}
			return writeClientTable(a.stdout, clients)
		},
	}
	cmd.Flags().Var(format, "format", "output format: table or json")
	return cmd
}

func writeClientTable(w io.Writer, clients []client.AppClient) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT_ID\tNAME\tROLE\tALLOWED\tMAX_TTL\tMAX_LEASES\tCREATED_AT")
	for _, c := range clients {
		allowed := strings.Join(c.AllowedRecords, ",")
		if allowed == "" {
			allowed = "-"
		}
		tableRow(tw, c.ClientID, c.Name, c.Role, allowed, orDash(c.MaxTTLSeconds), orDash(c.MaxLeases), formatTime(c.CreatedAt))
	}
	return tw.Flush()
}

// orDash shows a cap of 0, which means none, as "-".
func orDash(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func (a *app) clientDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete CLIENT_ID",
		Short: "Remove a client: its tokens stop working at once (its leases keep their expiry)",
		Args:  exactArgs("CLIENT_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.newClient()
			if err != nil {
				return err
			}
			if err := c.DeleteClient(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "client %s deleted\n", args[0])
			return nil
		},
	}
}
