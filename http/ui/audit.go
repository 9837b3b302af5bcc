package ui

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/syvault/syvault/events"
)

// pollBatch bounds the events one poll of the following audit page reads, whatever its
// filters: the cursor moves past every event read, matching or not, so each poll costs
// at most this many and a quiet filter never rescans the stream.
const pollBatch = 200

// auditFilter is the audit page's query string: the API's filters, with since and until
// also taking a duration back from now (1h, 30m).
type auditFilter struct {
	Since, Until, RecordUID, LeaseID, ClientID, Cursor string
	Limit                                              int
	q                                                  events.AuditQuery
}

func parseAuditFilter(v url.Values, now time.Time) (auditFilter, error) {
	f := auditFilter{Since: v.Get("since"), Until: v.Get("until"), Cursor: v.Get("cursor")}
	var err error
	for name, dst := range map[string]*string{"record_uid": &f.RecordUID, "lease_id": &f.LeaseID, "client_id": &f.ClientID} {
		if *dst, err = queryID(v, name); err != nil {
			return f, err
		}
	}
	if f.Since == "" && f.Cursor == "" && !v.Has("since") {
		f.Since = "1h" // a first look shows the last hour, not the deployment's whole history
	}
	for name, p := range map[string]struct {
		text string
		dst  *time.Time
	}{"since": {f.Since, &f.q.Since}, "until": {f.Until, &f.q.Until}} {
		if p.text == "" {
			continue
		}
		if d, err := time.ParseDuration(p.text); err == nil && d > 0 {
			*p.dst = now.Add(-d)
		} else if *p.dst, err = time.Parse(time.RFC3339, p.text); err != nil {
			return f, events.Errorf(events.EInvalid, "%s must be a duration back from now (30m, 2h) or an RFC 3339 time (2026-04-06T12:00:00Z).", name)
		}
	}
	if f.Limit, err = parseLimit(v, 100); err != nil {
		return f, err
	}
	if f.Cursor != "" {
		if f.q.After, err = strconv.ParseUint(f.Cursor, 10, 64); err != nil {
			return f, events.Errorf(events.EInvalid, "cursor must be one the audit's Next link gave.")
		}
	}
	f.q.RecordUID, f.q.LeaseID, f.q.ClientID, f.q.Limit = f.RecordUID, f.LeaseID, f.ClientID, f.Limit
	return f, nil
}

// with returns the filter's query string with cursor in place of its own.
func (f auditFilter) with(cursor string) string {
	v := encodeQuery(map[string]string{"since": f.Since, "until": f.Until, "record_uid": f.RecordUID, "lease_id": f.LeaseID,
		"client_id": f.ClientID, "cursor": cursor}, f.Limit, 100)
	if f.Since == "" {
		v.Set("since", "") // explicitly none, not the first look's default
	}
	return v.Encode()
}

type auditData struct {
	Filter auditFilter
	Dir    directory
	Rows   []eventRow
	Next   string // the next page's query string
	// Follow is the query string the page's script polls with for new events, set once
	// the page reaches the stream's end.
	Follow string
}

func (h *Handler) audit(w http.ResponseWriter, r *http.Request, s session) error {
	f, err := parseAuditFilter(r.URL.Query(), time.Now())
	if err != nil {
		return err
	}
	ctx := r.Context()
	d, err := h.directory(ctx)
	if err != nil {
		return err
	}
	page, next, err := h.cfg.Queries.Audit(ctx, f.q)
	if err != nil {
		return err
	}
	data := auditData{Filter: f, Dir: d}
	for _, rec := range page {
		data.Rows = append(data.Rows, d.eventRow(rec))
	}
	if next != 0 {
		data.Next = f.with(strconv.FormatUint(next, 10))
	} else {
		// The end: follow from the stream's last event.
		last, _, err := h.cfg.Queries.Recent(ctx, time.Time{}, 1)
		if err != nil {
			return err
		}
		tail := f.q.After
		if len(page) > 0 {
			tail = page[len(page)-1].Seq
		}
		if len(last) > 0 {
			tail = max(tail, last[0].Seq)
		}
		data.Follow = f.with(strconv.FormatUint(tail, 10))
	}
	h.render(w, http.StatusOK, "audit", view{Title: "Audit", Nav: "audit", Me: &s.Client, CSRF: s.CSRF, Data: data})
	return nil
}

// polledEvent is an audit row as the following page's script adds it.
type polledEvent struct {
	Seq     uint64 `json:"seq"`
	Time    string `json:"time"`
	Type    string `json:"type"`
	Actor   string `json:"actor"`
	Target  string `json:"target"`
	LeaseID string `json:"lease_id"`
	Details string `json:"details"`
	Failed  bool   `json:"failed"`
}

type pollAnswer struct {
	Events []polledEvent `json:"events"`
	// Cursor is where the next poll starts: past every event read, matching or not.
	Cursor string `json:"cursor"`
	// More says the batch was full: poll again at once.
	More bool `json:"more"`
}

// auditEvents answers the following audit page's polls: the events after the cursor
// that pass the page's filters, reading at most pollBatch events.
func (h *Handler) auditEvents(r *http.Request) (any, error) {
	f, err := parseAuditFilter(r.URL.Query(), time.Now())
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	batch, next, err := h.cfg.Queries.Audit(ctx, events.AuditQuery{After: f.q.After, Limit: pollBatch})
	if err != nil {
		return nil, err
	}
	out := pollAnswer{Events: []polledEvent{}, Cursor: f.Cursor, More: next != 0}
	if len(batch) == 0 {
		return out, nil
	}
	d, err := h.directory(ctx)
	if err != nil {
		return nil, err
	}
	for _, rec := range batch {
		if !f.q.Matches(rec.Event) {
			continue
		}
		row := d.eventRow(rec)
		out.Events = append(out.Events, polledEvent{Seq: row.Seq, Time: when(row.Time), Type: row.Type, Actor: row.Actor,
			Target: row.TargetName, LeaseID: row.LeaseID, Details: row.Details, Failed: row.Failed})
	}
	out.Cursor = strconv.FormatUint(batch[len(batch)-1].Seq, 10)
	return out, nil
}
