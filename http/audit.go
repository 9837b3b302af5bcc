package http

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/http/api"
)

// auditItemOf is one event as the audit shows it, built field by field from the event,
// so nothing an event carries for the workers (sealed passwords, target snapshots) can
// reach it.
func auditItemOf(seq uint64, e events.Event) api.AuditEvent {
	it := api.AuditEvent{Seq: seq, Time: e.Time, Type: string(e.Type), ClientID: e.ClientID, RecordUID: e.RecordUID, LeaseID: e.LeaseID,
		TTLSeconds: e.TTLSeconds, Outcome: e.Outcome, Reason: e.Reason, Action: e.Action}
	if !e.ExpiresAt.IsZero() {
		t := e.ExpiresAt
		it.ExpiresAt = &t
	}
	if e.Lease != nil {
		it.Username = e.Lease.Username
	}
	if e.Username != "" {
		it.Username = e.Username
	}
	if e.Client != nil {
		it.SubjectClientID = e.Client.ClientID
	}
	if e.Type == events.ClientRemoved {
		it.SubjectClientID = e.ClientID
	}
	return it
}

// audit replays the events stream oldest first.
func (s *Server) audit(c echo.Context) error {
	q := events.AuditQuery{Limit: 100}
	var err error
	for name, dst := range map[string]*string{"record_uid": &q.RecordUID, "lease_id": &q.LeaseID, "client_id": &q.ClientID} {
		if *dst, err = queryID(c, name); err != nil {
			return err
		}
	}
	for name, dst := range map[string]*time.Time{"since": &q.Since, "until": &q.Until} {
		if v := c.QueryParam(name); v != "" {
			if *dst, err = time.Parse(time.RFC3339, v); err != nil {
				return events.Errorf(events.EInvalid, "%s must be an RFC 3339 time, e.g. 2026-04-06T12:00:00Z.", name)
			}
		}
	}
	if v := c.QueryParam("limit"); v != "" {
		if q.Limit, err = strconv.Atoi(v); err != nil || q.Limit < 1 || q.Limit > 1000 {
			return events.Errorf(events.EInvalid, "limit must be an integer between 1 and 1000.")
		}
	}
	if v := c.QueryParam("cursor"); v != "" {
		if q.After, err = strconv.ParseUint(v, 10, 64); err != nil {
			return events.Errorf(events.EInvalid, "cursor must be a next_cursor from an earlier answer.")
		}
	}
	page, next, err := s.cfg.Queries.Audit(c.Request().Context(), q)
	if err != nil {
		return err
	}
	out := api.AuditPage{Data: make([]api.AuditEvent, 0, len(page))}
	for _, r := range page {
		out.Data = append(out.Data, auditItemOf(r.Seq, r.Event))
	}
	if next != 0 {
		out.NextCursor = strconv.FormatUint(next, 10)
	}
	return c.JSON(http.StatusOK, out)
}
