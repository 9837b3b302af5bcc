package ui

import (
	"context"
	"fmt"
	"html/template"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/syvault/syvault/events"
	syhttp "github.com/syvault/syvault/http"
	"github.com/syvault/syvault/http/api"
)

var funcs = template.FuncMap{
	"when":    when,
	"rel":     relative,
	"short":   short,
	"seconds": func(n int) string { return compact(time.Duration(n) * time.Second) },
	"path":    func() string { return syhttp.UIPath },
	// rowArgs hands a lease row and the session's anti-forgery token to the row template.
	"rowArgs":     func(r leaseRow, csrf string) rowArgs { return rowArgs{Row: r, CSRF: csrf} },
	"hourChoices": func() []int { return []int{1, 3, 6, 12, 24} },
}

type rowArgs struct {
	Row  leaseRow
	CSRF string
}

func when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// relative says how far t is from now: "in 4m10s", "2h ago".
func relative(t time.Time) string {
	d := time.Until(t).Round(time.Second)
	switch {
	case d == 0:
		return "now"
	case d > 0:
		return "in " + compact(d)
	}
	return compact(-d) + " ago"
}

// compact writes a duration without zero units: 2h, 1h30m, 45s.
func compact(d time.Duration) string {
	if d < time.Second {
		return "0s"
	}
	s := d.Round(time.Second).String()
	for _, z := range []string{"m0s", "h0m"} {
		if strings.HasSuffix(s, z) {
			s = strings.TrimSuffix(s, z[1:])
		}
	}
	return s
}

// short abbreviates an id for a table, to its last 8 characters: lease ids are UUIDv7,
// whose first ones are a time that leases made together share. The full id is in the
// link and the title.
func short(id string) string {
	if len(id) > 8 {
		return id[len(id)-8:]
	}
	return id
}

// directory names targets and clients for the tables.
type directory struct {
	Targets []events.Target
	Clients []events.Client
	targets map[string]events.Target
	clients map[string]events.Client
}

func (h *Handler) directory(ctx context.Context) (directory, error) {
	ts, err := h.cfg.Queries.Targets(ctx)
	if err != nil {
		return directory{}, err
	}
	cs, err := h.cfg.Queries.Clients(ctx)
	if err != nil {
		return directory{}, err
	}
	d := directory{Targets: ts, Clients: cs, targets: map[string]events.Target{}, clients: map[string]events.Client{}}
	for _, t := range ts {
		d.targets[t.RecordUID] = t
	}
	for _, c := range cs {
		d.clients[c.ClientID] = c
	}
	return d, nil
}

func (d directory) targetName(uid string) string {
	if t, ok := d.targets[uid]; ok {
		return t.Name
	}
	return uid
}

func (d directory) clientName(id string) string {
	if c, ok := d.clients[id]; ok {
		return c.Name
	}
	return short(id)
}

// leaseRow is a lease as the tables show it: field by field, so that nothing a lease
// carries for the workers can reach a page.
type leaseRow struct {
	ID, RecordUID, TargetName, ClientID, ClientName, Username, Status string
	TTLSeconds                                                        int
	CreatedAt, ExpiresAt                                              time.Time
	EndedAt                                                           *time.Time
	Ended, Abandoned                                                  bool
}

func (d directory) leaseRow(l events.Lease) leaseRow {
	return leaseRow{ID: l.ID, RecordUID: l.RecordUID, TargetName: d.targetName(l.RecordUID), ClientID: l.ClientID,
		ClientName: d.clientName(l.ClientID), Username: l.Username, Status: string(l.Status), TTLSeconds: l.TTLSeconds,
		CreatedAt: l.CreatedAt, ExpiresAt: l.ExpiresAt, EndedAt: l.EndedAt, Ended: l.Status.Ended(), Abandoned: l.Abandoned}
}

// eventRow is an audit event as the tables show it, built from what the API's audit
// shows (never a secret).
type eventRow struct {
	api.AuditEvent
	Actor, TargetName, Details string
	Failed                     bool
}

func (d directory) eventRow(r events.Recorded) eventRow {
	e := syhttp.AuditEventOf(r)
	// A drop's outcome is how the lease ended; a drop given up (whose outcome is that
	// too) is shown as failed: its user may remain.
	dropped := e.Type == string(events.LeaseDropped)
	row := eventRow{AuditEvent: e, TargetName: d.targetName(e.RecordUID), Failed: !dropped && e.Outcome != "" && e.Outcome != events.OutcomeOK}
	if e.ClientID != "" {
		row.Actor = d.clientName(e.ClientID)
	}
	if e.RecordUID == "" {
		row.TargetName = ""
	}
	var details []string
	add := func(format string, args ...any) { details = append(details, fmt.Sprintf(format, args...)) }
	if e.Username != "" {
		add("user %s", e.Username)
	}
	if e.TTLSeconds != 0 {
		add("ttl %s", compact(time.Duration(e.TTLSeconds)*time.Second))
	}
	if e.ExpiresAt != nil {
		add("expires %s", when(*e.ExpiresAt))
	}
	if e.Action != "" {
		add("tried %s", e.Action)
	}
	if e.SubjectClientID != "" {
		add("client %s", d.clientName(e.SubjectClientID))
	}
	if row.Failed || dropped && e.Outcome != "" {
		add("%s", e.Outcome)
	}
	if e.Reason != "" {
		add("%s", e.Reason)
	}
	row.Details = strings.Join(details, "; ")
	return row
}

// encodeQuery is the query string of a page's filters: the values that are set, and the
// limit when it is not the page's default.
func encodeQuery(values map[string]string, limit, defaultLimit int) url.Values {
	v := url.Values{}
	for k, x := range values {
		if x != "" {
			v.Set(k, x)
		}
	}
	if limit != defaultLimit {
		v.Set("limit", strconv.Itoa(limit))
	}
	return v
}

// parseLimit reads a page's ?limit=, as the API takes it: 1 to 1000, def when absent.
func parseLimit(v url.Values, def int) (int, error) {
	s := v.Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 1000 {
		return 0, events.Errorf(events.EInvalid, "limit must be an integer between 1 and 1000.")
	}
	return n, nil
}
