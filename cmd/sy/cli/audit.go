package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/internal/termtext"
)

func (a *app) auditCommand() *cobra.Command {
	var since, until timeFlag
	var opts client.AuditOptions
	var follow bool
	poll := time.Second
	format := newEnum("table", "table", "json")
	cmd := &cobra.Command{
		Use:   "audit [--since 1h|TIME] [--until 1h|TIME] [--record-uid X] [--lease-id X] [--client-id X] [--follow] [--format table|json]",
		Short: "Show the audit trail, oldest first; --follow keeps printing new events (admin)",
		Long: `Show the audit trail, oldest first: every target and client change and every lease's
request, activation, failure, renewal, revocation, expiry and drop, and the key
operations, with its time, acting client, record uid, lease id, TTL, outcome and reason
(never a secret). All matching events are
shown, however many requests that takes (--limit is the number of events per request).

--since and --until take a duration back from now (30m, 1h, 7d) or an RFC 3339 time
(2026-04-06T12:00:00Z). --record-uid, --lease-id and --client-id keep only the events of
that target, lease or acting client. Here --client-id is such a filter: the credentials'
client id comes from SY_CLIENT_ID or the credentials file.

--format table (the default) prints aligned columns; --format json prints one JSON object
per line (JSON Lines), for jq and log pipelines. --follow keeps running after the events
so far and prints new ones as they happen, until interrupted (Ctrl-C), which exits 0:

  sy audit --since 1h --follow --format json | jq -c 'select(.outcome != "ok")'`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Limit < 0 {
				return usagef("--limit must not be negative")
			}
			if poll <= 0 {
				return usagef("--poll-interval must be positive")
			}
			now := time.Now()
			opts.Since, opts.Until = since.at(now), until.at(now)
			if !opts.Since.IsZero() && !opts.Until.IsZero() && opts.Until.Before(opts.Since) {
				return usagef("--until (%s) is before --since (%s)", formatTime(opts.Until), formatTime(opts.Since))
			}
			a.flags.clientIDShadowed = true
			c, err := a.newClient()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			p := newAuditPrinter(a.stdout, format.value == "json")
			var after uint64
			err = catchUpAudit(ctx, c, opts, &after, p)
			if err == nil {
				err = p.flushHeader() // a table shows its header even without events
			}
			if !follow {
				return err
			}
			for {
				if err != nil {
					if ctx.Err() != nil {
						return nil // interrupted while asking: following ends normally
					}
					return err
				}
				timer := time.NewTimer(poll)
				select {
				case <-ctx.Done():
					timer.Stop()
					return nil
				case <-timer.C:
				}
				err = catchUpAudit(ctx, c, opts, &after, p)
			}
		},
	}
	f := cmd.Flags()
	f.Var(&since, "since", "only events from then on: a duration back from now (1h, 7d) or an RFC 3339 time")
	f.Var(&until, "until", "only events up to then: a duration back from now or an RFC 3339 time")
	f.StringVar(&opts.RecordUID, "record-uid", "", "only events about this target")
	f.StringVar(&opts.LeaseID, "lease-id", "", "only events about this lease")
	f.StringVar(&opts.ClientID, "client-id", "", "only events by (or about) this client; not the credentials' client id here")
	f.IntVar(&opts.Limit, "limit", 0, "events per request (server default 100, at most 1000); all pages are shown")
	f.BoolVar(&follow, "follow", false, "keep running and print new events as they happen, until interrupted")
	f.Var(format, "format", "output format: table or json (one object per line)")
	f.DurationVar(&poll, "poll-interval", time.Second, "how often --follow asks for new events")
	f.MarkHidden("poll-interval")
	cmd.MarkFlagsMutuallyExclusive("follow", "until")
	return cmd
}

// catchUpAudit prints the events after *after that match opts, page by page, and leaves
// in *after the sequence number to continue from: the last event printed, or further on
// when the server's next_cursor skipped events the filters left out. With *after zero it
// starts where opts.Since says, or at the beginning.
func catchUpAudit(ctx context.Context, c *client.Client, opts client.AuditOptions, after *uint64, p *auditPrinter) error {
	for {
		from := *after
		o := opts
		if from > 0 {
			o.Cursor = strconv.FormatUint(from, 10)
		}
		page, err := c.Audit(ctx, o)
		if err != nil {
			return err
		}
		for _, ev := range page.Data {
			if from > 0 && ev.Seq <= from {
				continue // already printed
			}
			if err := p.print(ev); err != nil {
				return err
			}
			*after = max(*after, ev.Seq)
		}
		if page.NextCursor == "" {
			return nil
		}
		next, err := strconv.ParseUint(page.NextCursor, 10, 64)
		if err != nil {
			return fmt.Errorf("the server's next_cursor %q is not an event sequence number", page.NextCursor)
		}
		if next <= from {
			return fmt.Errorf("the server repeated the page cursor %q", page.NextCursor)
		}
		*after = max(*after, next)
	}
}

// auditPrinter writes events as they come: fixed-width table rows (so that rows printed
// later by --follow line up with the first ones) or JSON Lines.
type auditPrinter struct {
	w      io.Writer
	json   bool
	header bool // the table header was written
}

func newAuditPrinter(w io.Writer, jsonLines bool) *auditPrinter {
	return &auditPrinter{w: w, json: jsonLines}
}

// auditColumns are the table's columns and their minimum widths: times are RFC 3339 UTC,
// client and lease ids UUIDs, record uids 12 characters, the longest outcome
// "target_unavailable"; the reason, last, takes what it needs.
var auditColumns = []struct {
	name  string
	width int
}{
	{"SEQ", 6}, {"TIME", 20}, {"TYPE", 17}, {"CLIENT_ID", 36}, {"RECORD_UID", 12}, {"LEASE_ID", 36}, {"TTL", 5}, {"OUTCOME", 18},
	{"REASON", 0},
}

func (p *auditPrinter) print(ev client.AuditEvent) error {
	if p.json {
		data, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		_, err = p.w.Write(append(data, '\n'))
		return err
	}
	var b strings.Builder
	p.writeHeader(&b)
	ttl := "-"
	if ev.TTLSeconds != 0 {
		ttl = strconv.Itoa(ev.TTLSeconds)
	}
	p.row(&b, []string{strconv.FormatUint(ev.Seq, 10), formatTime(ev.Time), dash(ev.Type), dash(ev.ClientID),
		dash(ev.RecordUID), dash(ev.LeaseID), ttl, dash(ev.Outcome), dash(ev.Reason)})
	_, err := io.WriteString(p.w, b.String())
	return err
}

// writeHeader adds the table header to b unless it was written already.
func (p *auditPrinter) writeHeader(b *strings.Builder) {
	if p.json || p.header {
		return
	}
	names := make([]string, len(auditColumns))
	for i, c := range auditColumns {
		names[i] = c.name
	}
	p.row(b, names)
	p.header = true
}

// flushHeader writes the table header if no event did yet.
func (p *auditPrinter) flushHeader() error {
	var b strings.Builder
	p.writeHeader(&b)
	_, err := io.WriteString(p.w, b.String())
	return err
}

func (p *auditPrinter) row(b *strings.Builder, cells []string) {
	for i, cell := range cells {
		cell = termtext.Printable(cell)
		if i == len(cells)-1 {
			b.WriteString(cell)
			break
		}
		fmt.Fprintf(b, "%-*s  ", auditColumns[i].width, cell)
	}
	b.WriteByte('\n')
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// timeFlag is a point in time given as a duration back from now ("1h", "30m", "7d") or as
// an RFC 3339 time.
type timeFlag struct {
	raw string
	ago time.Duration
	abs time.Time
}

func (t *timeFlag) String() string { return t.raw }
func (t *timeFlag) Type() string   { return "duration|time" }
func (t *timeFlag) Set(s string) error {
	if abs, err := time.Parse(time.RFC3339, s); err == nil {
		*t = timeFlag{raw: s, abs: abs}
		return nil
	}
	ago, err := time.ParseDuration(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, derr := strconv.Atoi(days)
		ago, err = time.Duration(n)*24*time.Hour, derr
	}
	if err != nil || ago < 0 {
		return errors.New("must be a duration back from now like 30m, 1h or 7d, or an RFC 3339 time like 2026-04-06T12:00:00Z")
	}
	*t = timeFlag{raw: s, ago: ago}
	return nil
}

// at is the time the flag means at now; zero when the flag was not given.
func (t *timeFlag) at(now time.Time) time.Time {
	switch {
	case t.raw == "":
		return time.Time{}
	case !t.abs.IsZero():
		return t.abs
	}
	return now.Add(-t.ago)
}
