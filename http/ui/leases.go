package ui

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/syvault/syvault/events"
	syhttp "github.com/syvault/syvault/http"
)

// leaseScan bounds the leases one view of the list reads: a filter the list cannot
// apply itself (status, expiry) may have to skip many to fill a page, and a page is
// answered with what was found and a cursor to go on from instead.
const leaseScan = 5000

// leaseFilter is the list's query string: the API's filters (target, client, cursor,
// limit) and the dashboard's own (status, expiring within).
type leaseFilter struct {
	RecordUID, ClientID, Status, Expiring, Cursor string
	Limit                                         int
	within                                        time.Duration
}

// queryID returns the query parameter name, refusing a value no id can have.
func queryID(v url.Values, name string) (string, error) {
	id := v.Get(name)
	if id != "" && !events.ValidID(id) {
		return "", events.Errorf(events.EInvalid, "%s must be an id as the API shows it (letters, digits, - and _).", name)
	}
	return id, nil
}

func parseLeaseFilter(v url.Values) (leaseFilter, error) {
	f := leaseFilter{Status: v.Get("status"), Expiring: v.Get("expiring"), Cursor: v.Get("cursor")}
	var err error
	if f.RecordUID, err = queryID(v, "record_uid"); err != nil {
		return f, err
	}
	if f.ClientID, err = queryID(v, "client_id"); err != nil {
		return f, err
	}
	switch events.Status(f.Status) {
	case "", events.StatusActive, events.StatusRevoking:
	default:
		return f, events.Errorf(events.EInvalid, "status must be active or revoking: the list holds the leases whose user exists.")
	}
	if f.Expiring != "" {
		if f.within, err = time.ParseDuration(f.Expiring); err != nil || f.within <= 0 || f.within > events.MaxTTL {
			return f, events.Errorf(events.EInvalid, "expiring must be a duration up to 24h, such as 15m or 2h.")
		}
	}
	if f.Limit, err = parseLimit(v, 50); err != nil {
		return f, err
	}
	if f.Cursor != "" {
		if _, err := strconv.ParseUint(f.Cursor, 10, 64); err != nil {
			return f, events.Errorf(events.EInvalid, "cursor must be one the list's Next link gave.")
		}
	}
	return f, nil
}

func (f leaseFilter) match(l events.Lease, now time.Time) bool {
	return (f.Status == "" || string(l.Status) == f.Status) && (f.within == 0 || l.ExpiresAt.Before(now.Add(f.within)))
}

// with returns the filter's query string with cursor in place of its own.
func (f leaseFilter) with(cursor string) string {
	return encodeQuery(map[string]string{"record_uid": f.RecordUID, "client_id": f.ClientID, "status": f.Status, "expiring": f.Expiring,
		"cursor": cursor}, f.Limit, 50).Encode()
}

type leasesData struct {
	Filter  leaseFilter
	Dir     directory
	Rows    []leaseRow
	Next    string // the next page's query string, empty on the last page
	Scanned int
	Partial bool // the page stopped at leaseScan leases, not full
}

func (h *Handler) leases(w http.ResponseWriter, r *http.Request, s session) error {
	f, err := parseLeaseFilter(r.URL.Query())
	if err != nil {
		return err
	}
	ctx := r.Context()
	d, err := h.directory(ctx)
	if err != nil {
		return err
	}
	data := leasesData{Filter: f, Dir: d}
	now := time.Now()
	q := events.LeaseQuery{RecordUID: f.RecordUID, ClientID: f.ClientID, Cursor: f.Cursor}
	for len(data.Rows) < f.Limit && data.Scanned < leaseScan {
		// Each page read is used whole, so its cursor is exactly where this view ends.
		q.Limit = min(f.Limit-len(data.Rows), leaseScan-data.Scanned)
		page, next, err := h.cfg.Queries.ActiveLeases(ctx, q)
		if err != nil {
			return err
		}
		data.Scanned += len(page)
		for _, l := range page {
			if f.match(l, now) {
				data.Rows = append(data.Rows, d.leaseRow(l))
			}
		}
		q.Cursor = next
		if next == "" {
			break
		}
	}
	if q.Cursor != "" {
		data.Next = f.with(q.Cursor)
		data.Partial = len(data.Rows) < f.Limit
	}
	h.render(w, http.StatusOK, "leases", view{Title: "Leases", Nav: "leases", Me: &s.Client, CSRF: s.CSRF, Data: data})
	return nil
}

type leaseData struct {
	Lease   leaseRow
	History []eventRow
	Done    string
}

// done are the notices a lease page shows after an action.
var done = map[string]string{
	"revoked": "Revoked: the user's sessions are ended and the user is dropped.",
	"renewed": "Renewed: the new expiry is below.",
}

func leaseID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !events.ValidID(id) {
		return "", events.Errorf(events.ENotFound, "No lease with id %q.", id)
	}
	return id, nil
}

func (h *Handler) lease(w http.ResponseWriter, r *http.Request, s session) error {
	id, err := leaseID(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	l, err := h.cfg.Queries.Lease(ctx, id)
	if err != nil {
		return err
	}
	d, err := h.directory(ctx)
	if err != nil {
		return err
	}
	// A lease has a handful of events; the query reads its subject alone.
	history, _, err := h.cfg.Queries.Audit(ctx, events.AuditQuery{LeaseID: id, Limit: 1000})
	if err != nil {
		return err
	}
	data := leaseData{Lease: d.leaseRow(l), Done: done[r.URL.Query().Get("done")]}
	for _, rec := range history {
		data.History = append(data.History, d.eventRow(rec))
	}
	h.render(w, http.StatusOK, "lease", view{Title: "Lease " + short(id), Nav: "leases", Me: &s.Client, CSRF: s.CSRF, Data: data})
	return nil
}

// revoke revokes a lease and shows it once its user is dropped. When the database
// cannot be reached the error page says so; the revocation is recorded and goes on.
func (h *Handler) revoke(w http.ResponseWriter, r *http.Request, s session) error {
	id, err := leaseID(r)
	if err != nil {
		return err
	}
	start := time.Now()
	err = h.cfg.Commands.RevokeLease(r.Context(), id, s.Client.ClientID)
	if h.cfg.Observer != nil {
		outcome := events.OutcomeOK
		if err != nil {
			outcome = string(events.ErrorCode(err))
		}
		h.cfg.Observer.LeaseRevoked(outcome, time.Since(start))
	}
	if err != nil {
		return err
	}
	h.log.Info("lease revoked from the dashboard", "lease_id", id, "client_id", s.Client.ClientID)
	http.Redirect(w, r, syhttp.UIPath+"/leases/"+id+"?done=revoked", http.StatusSeeOther)
	return nil
}

func (h *Handler) renew(w http.ResponseWriter, r *http.Request, s session) error {
	id, err := leaseID(r)
	if err != nil {
		return err
	}
	ttl, err := strconv.Atoi(r.PostForm.Get("ttl_seconds"))
	if err != nil {
		return events.Errorf(events.EInvalid, "ttl_seconds must be a whole number of seconds.")
	}
	if err := events.ValidTTL(ttl, events.MaxTTLSeconds); err != nil {
		return err
	}
	if _, err := h.cfg.Commands.RenewLease(r.Context(), id, s.Client, ttl); err != nil {
		return err
	}
	http.Redirect(w, r, syhttp.UIPath+"/leases/"+id+"?done=renewed", http.StatusSeeOther)
	return nil
}
