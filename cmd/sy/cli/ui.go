package cli

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func (a *app) uiCommand() *cobra.Command {
	var noBrowser bool
	cmd := &cobra.Command{
		Use:   "ui [--no-browser]",
		Short: "Open the dashboard in a browser with a one-time login link (admin)",
		Long: `Open the server's dashboard (/ui/) in a browser, logged in as this client, without
giving the browser the private key: sy asks the server for a one-time login link, valid
for about a minute, and opens it. The browser trades it for a session cookie that lasts
as long as an access token (the server's --token-ttl); run sy ui again after that.

The browser is $BROWSER when set, else the system's opener (xdg-open, open). With
--no-browser the link is printed on stdout instead, e.g. to open it on this machine by
hand; it works once, so do not paste it anywhere else.

The opener gets the link as an argument, which other users of a shared machine can read
in its command line (/proc) until the browser has used it; there, mount /proc with
hidepid=2, or use --no-browser and paste the link into a browser already running.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.newClient()
			if err != nil {
				return err
			}
			link, err := c.CreateLoginLink(cmd.Context())
			if err != nil {
				return err
			}
			// The server this client reached is the one a browser here reaches too.
			url := strings.TrimSuffix(a.server, "/") + link.Path
			until := link.ExpiresAt.Local().Format(time.TimeOnly)
			if noBrowser {
				fmt.Fprintf(a.stderr, "one-time login link, valid until %s:\n", until)
				_, err := fmt.Fprintln(a.stdout, url)
				return err
			}
			if err := a.openBrowser(cmd.Context(), url); err != nil {
				fmt.Fprintf(a.stderr, "could not open a browser (%v); open this one-time link, valid until %s:\n", err, until)
				_, err := fmt.Fprintln(a.stdout, url)
				return err
			}
			fmt.Fprintf(a.stderr, "opened the dashboard in a browser (the link works once, until %s)\n", until)
			return nil
		},
	}
	cmd.Flags().BoolVar(&noBrowser, "no-browser", false, "print the one-time login link instead of opening a browser")
	return cmd
}

// openBrowser opens url with $BROWSER or the system's opener and waits for it to hand
// the URL over (openers return once the browser has it).
func (a *app) openBrowser(ctx context.Context, url string) error {
	name, args := "xdg-open", []string{url}
	switch {
	case a.getenv("BROWSER") != "":
		name = a.getenv("BROWSER")
	case runtime.GOOS == "darwin":
		name = "open"
	case runtime.GOOS == "windows":
		name, args = "rundll32", []string{"url.dll,FileProtocolHandler", url}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).Run()
}
