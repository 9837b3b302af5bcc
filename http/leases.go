package http

import (
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/http/api"
)

type leaseRequest struct {
	RecordUID  *string `json:"record_uid"`
	TTLSeconds *int    `json:"ttl_seconds"`
}

// itemOf is a lease as lists and gets show it.
func itemOf(l events.Lease) api.LeaseInfo {
	return api.LeaseInfo{LeaseID: l.ID, RecordUID: l.RecordUID, Username: l.Username, CreatedAt: l.CreatedAt,
		ExpiresAt: l.ExpiresAt, Status: string(l.Status), EndedAt: l.EndedAt, ClientID: l.ClientID, TTLSeconds: l.TTLSeconds,
		Abandoned: l.Abandoned}
}

func (s *Server) createLease(c echo.Context) error {
	if err := s.limitClient(c, "create"); err != nil {
		return err
	}
	var req leaseRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	switch {
	case req.RecordUID == nil || *req.RecordUID == "":
		return events.Errorf(events.EInvalid, "record_uid is required.")
	case !events.ValidID(*req.RecordUID):
		// Before the authorization, which records a refusal with the record uid asked for.
		return events.Errorf(events.EInvalid, "record_uid must be an id as the API returns it (letters, digits, - and _).")
	case req.TTLSeconds == nil:
		return events.Errorf(events.EInvalid, "ttl_seconds is required.")
	}
	if err := events.ValidTTL(*req.TTLSeconds, events.MaxTTLSeconds); err != nil {
		return err
	}
	if err := s.allow(c, actLeaseCreate, resource{RecordUID: *req.RecordUID}); err != nil {
		return err
	}
	start := time.Now()
	cr, err := s.cfg.Commands.CreateLease(c.Request().Context(), clientOf(c), *req.RecordUID, *req.TTLSeconds)
	s.cfg.Observer.LeaseCreated(*req.RecordUID, outcomeOf(err), time.Since(start))
	if err != nil {
		return err
	}
	l, t := cr.Lease, cr.Target
	host, port := t.ConnectionAddress()
	return c.JSON(http.StatusCreated, api.Lease{
		LeaseID: l.ID, Username: l.Username, Password: cr.Password,
		ConnectionString: connectionString(t.Engine, host, port, t.Database, l.Username, cr.Password),
		ExpiresAt:        l.ExpiresAt, RecordUID: l.RecordUID, CreatedAt: l.CreatedAt,
		Engine: string(t.Engine), Host: host, Port: port, Database: t.Database,
	})
}

func outcomeOf(err error) string {
	if err == nil {
		return events.OutcomeOK
	}
	return string(events.ErrorCode(err))
}

// connectionString is a URI that libpq and MySQL clients accept, with the password
// percent-encoded.
func connectionString(engine events.Engine, host string, port int, database, user, password string) string {
	scheme := "postgresql"
	if engine == events.MySQL {
		scheme = "mysql"
	}
	u := url.URL{Scheme: scheme, User: url.UserPassword(user, password), Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: "/" + database}
	return u.String()
}

func (s *Server) listLeases(c echo.Context) error {
	recordUID, err := queryID(c, "record_uid")
	if err != nil {
		return err
	}
	q := events.LeaseQuery{RecordUID: recordUID, Cursor: c.QueryParam("cursor"), Limit: 100}
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return events.Errorf(events.EInvalid, "limit must be an integer between 1 and 1000.")
		}
		q.Limit = n
	}
	if err := s.allow(c, actLeaseList, resource{}); err != nil {
		return err
	}
	if client := clientOf(c); client.Role != events.RoleAdmin {
		q.ClientID = client.ClientID
	}
	page, next, err := s.cfg.Queries.ActiveLeases(c.Request().Context(), q)
	if err != nil {
		return err
	}
	out := api.LeasePage{Data: make([]api.LeaseInfo, 0, len(page)), NextCursor: next}
	for _, l := range page {
		out.Data = append(out.Data, itemOf(l))
	}
	return c.JSON(http.StatusOK, out)
}

// authorizedLease loads a lease from the projection and checks act on it.
func (s *Server) authorizedLease(c echo.Context, act action) (events.Lease, error) {
	id := c.Param("id")
	l, err := s.cfg.Queries.Lease(c.Request().Context(), id)
	if err != nil {
		return l, err
	}
	return l, s.allow(c, act, resource{RecordUID: l.RecordUID, LeaseID: l.ID, Owner: l.ClientID})
}

func (s *Server) getLease(c echo.Context) error {
	l, err := s.authorizedLease(c, actLeaseRead)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, itemOf(l))
}

// revokeLease records the revocation first, then waits for the workers to drop the user.
// Whatever the answer, the revocation is recorded and retried until the user is gone;
// unless an admin forces it (?force=true), for a database gone for good: a drop that
// cannot finish is then given up, and the answer is the lease as it ended.
func (s *Server) revokeLease(c echo.Context) error {
	force, err := boolQuery(c, "force")
	if err != nil {
		return err
	}
	act := actLeaseRevoke
	if force {
		act = actLeaseAbandon
	}
	if _, err := s.authorizedLease(c, act); err != nil {
		// Nothing is recorded yet: a store that did not answer in time is a 503 (try
		// again), never the 504 that tells the client its revocation is under way.
		if events.ErrorCode(err) == events.ETimeout {
			return events.Wrap(err, events.EUnavailable, "The event store did not answer in time and the revocation is not recorded; try again shortly.")
		}
		return err
	}
	start := time.Now()
	if force {
		l, err := s.cfg.Commands.AbandonLease(c.Request().Context(), c.Param("id"), clientOf(c).ClientID)
		outcome := outcomeOf(err)
		if l.Abandoned {
			outcome = "abandoned" // counted apart: its user may remain on the database
		}
		s.cfg.Observer.LeaseRevoked(outcome, time.Since(start))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, itemOf(l))
	}
	err = s.cfg.Commands.RevokeLease(c.Request().Context(), c.Param("id"), clientOf(c).ClientID)
	s.cfg.Observer.LeaseRevoked(outcomeOf(err), time.Since(start))
	if err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// boolQuery reads the query parameter name: absent or "false" is false, "true" true,
// anything else a 400 naming it.
func boolQuery(c echo.Context, name string) (bool, error) {
	switch c.QueryParam(name) {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, events.Errorf(events.EInvalid, "%s must be true or false.", name)
}

type renewRequest struct {
	TTLSeconds *int `json:"ttl_seconds"`
}

func (s *Server) renewLease(c echo.Context) error {
	if err := s.limitClient(c, "renew"); err != nil {
		return err
	}
	var req renewRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.TTLSeconds == nil {
		return events.Errorf(events.EInvalid, "ttl_seconds is required.")
	}
	if err := events.ValidTTL(*req.TTLSeconds, events.MaxTTLSeconds); err != nil {
		return err
	}
	if _, err := s.authorizedLease(c, actLeaseRenew); err != nil {
		return err
	}
	l, err := s.cfg.Commands.RenewLease(c.Request().Context(), c.Param("id"), clientOf(c), *req.TTLSeconds)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, itemOf(l))
}
