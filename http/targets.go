package http

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/projections"
)

// targetRequest is a target as clients submit it: the domain fields plus the plaintext
// admin password, which is sealed before anything is stored.
type targetRequest struct {
	Name           string         `json:"name"`
	Engine         events.Engine  `json:"engine"`
	Host           string         `json:"host"`
	Port           int            `json:"port"`
	Database       string         `json:"database"`
	AdminUsername  string         `json:"admin_username"`
	AdminPassword  string         `json:"admin_password"`
	TLSMode        events.TLSMode `json:"tls_mode"`
	CACert         string         `json:"ca_cert"`
	Grants         []events.Grant `json:"grants"`
	MaxTTLSeconds  int            `json:"max_ttl_seconds"`
	ConnectionHost string         `json:"connection_host"`
	ConnectionPort int            `json:"connection_port"`
}

// updateTarget replaces a target's settings, e.g. to rotate its admin password. The new
// settings are verified like a new target's. Leases issued before keep their grants and
// are revoked with the new admin credentials.
func (s *Server) updateTarget(c echo.Context) error {
	ctx := c.Request().Context()
	uid := c.Param("uid")
	cur, err := s.cfg.Projections.Target(ctx, uid)
	if err != nil {
		return err
	}
	var req targetRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	t, err := req.target()
	if err != nil {
		return err
	}
	if t.Engine != cur.Engine {
		return events.Errorf(events.EInvalid, "engine cannot change; register a new target instead.")
	}
	t.RecordUID, t.CreatedAt = uid, cur.CreatedAt
	if err := s.cfg.Preparer.Prepare(ctx, t, req.AdminPassword); err != nil {
		s.log.Warn("target update refused", "record_uid", uid, "host", t.Host, "err", err)
		return err
	}
	t.SealedAdminPassword = s.cfg.Sealer.Seal([]byte(req.AdminPassword), []byte(uid))
	last, err := s.cfg.Store.LastSeq(ctx, events.TargetSubject(uid))
	if err != nil {
		return err
	}
	e := events.Event{Type: events.TargetUpdated, ID: uid + ".updated." + strconv.FormatUint(last, 10), Time: time.Now().UTC(),
		ClientID: clientOf(c).ClientID, RecordUID: uid, Outcome: events.OutcomeOK, Target: &t}
	seq, err := s.cfg.Store.Append(ctx, events.TargetSubject(uid), e, last)
	if errors.Is(err, jsstore.ErrConflict) {
		return events.Errorf(events.EConflict, "The target changed while this update was verified; send it again.")
	}
	if err != nil {
		return err
	}
	if err := s.cfg.Projections.Wait(ctx, "target", uid, seq); err != nil {
		return err
	}
	if s.cfg.Preparer.GrantsPerUser(t.Engine) {
		if err := s.regrantLeases(ctx, t); err != nil {
			return err
		}
	}
	s.log.Info("target updated", "record_uid", uid)
	return c.JSON(http.StatusOK, viewOf(t))
}

// regrantLeases gives every active lease of t exactly t's grants, a few at a time, so
// that after an update answers no lease holds what the target no longer grants. A lease
// activated while this runs follows the new grants by itself (the worker checks). The
// update is recorded either way: sent again, it tries again.
func (s *Server) regrantLeases(ctx context.Context, t events.Target) error {
	var failed, total int
	q := projections.LeaseQuery{RecordUID: t.RecordUID, Limit: 1000}
	for {
		page, next, err := s.cfg.Projections.ActiveLeases(ctx, q)
		if err != nil {
			return err
		}
		total += len(page)
		sem := make(chan struct{}, 4)
		errs := make(chan error, len(page))
		for _, l := range page {
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				errs <- s.cfg.Preparer.Regrant(ctx, t, l.Username)
			}()
		}
		for range page {
			if err := <-errs; err != nil {
				failed++
				s.log.Warn("could not give a lease its target's new grants", "record_uid", t.RecordUID, "err", err)
			}
		}
		if next == "" {
			break
		}
		q.Cursor = next
	}
	if failed > 0 {
		return events.Errorf(events.ETargetUnavailable,
			"The target was updated, but %d of its %d active leases could not be given the new grants; send the update again.", failed, total)
	}
	return nil
}

// target turns a request into a normalized target, without record uid or time.
func (req targetRequest) target() (events.Target, error) {
	t := events.Target{Name: req.Name, Engine: req.Engine, Host: req.Host, Port: req.Port, Database: req.Database,
		AdminUsername: req.AdminUsername, TLSMode: req.TLSMode, CACert: req.CACert, Grants: req.Grants, MaxTTLSeconds: req.MaxTTLSeconds,
		ConnectionHost: req.ConnectionHost, ConnectionPort: req.ConnectionPort}
	if err := events.NormalizeTarget(&t); err != nil {
		return t, err
	}
	if req.AdminPassword == "" || len(req.AdminPassword) > 1024 {
		return t, events.Errorf(events.EInvalid, "admin_password is required (at most 1024 characters).")
	}
	return t, nil
}

// targetView is a target as the API shows it: never the admin password, sealed or not.
type targetView struct {
	RecordUID      string         `json:"record_uid"`
	Name           string         `json:"name"`
	Engine         events.Engine  `json:"engine"`
	Host           string         `json:"host"`
	Port           int            `json:"port"`
	Database       string         `json:"database"`
	AdminUsername  string         `json:"admin_username"`
	TLSMode        events.TLSMode `json:"tls_mode"`
	CACert         string         `json:"ca_cert,omitempty"`
	Grants         []events.Grant `json:"grants"`
	MaxTTLSeconds  int            `json:"max_ttl_seconds"`
	ConnectionHost string         `json:"connection_host,omitempty"`
	ConnectionPort int            `json:"connection_port,omitempty"`
	CreatedAt      time.Time      `json:"created_at"`
}

func viewOf(t events.Target) targetView {
	return targetView{RecordUID: t.RecordUID, Name: t.Name, Engine: t.Engine, Host: t.Host, Port: t.Port,
		Database: t.Database, AdminUsername: t.AdminUsername, TLSMode: t.TLSMode, CACert: t.CACert, Grants: t.Grants,
		MaxTTLSeconds: t.MaxTTLSeconds, ConnectionHost: t.ConnectionHost, ConnectionPort: t.ConnectionPort, CreatedAt: t.CreatedAt}
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NewRecordUID returns a 12-character base62 record uid.
func NewRecordUID() string { return randomString(base62, 12) }

func (s *Server) createTarget(c echo.Context) error {
	var req targetRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	t, err := req.target()
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	t.RecordUID = NewRecordUID()
	now := time.Now().UTC()
	t.CreatedAt = now.Truncate(time.Second)
	if err := s.cfg.Preparer.Prepare(ctx, t, req.AdminPassword); err != nil {
		s.log.Warn("target refused", "record_uid", t.RecordUID, "host", t.Host, "err", err)
		return err
	}
	t.SealedAdminPassword = s.cfg.Sealer.Seal([]byte(req.AdminPassword), []byte(t.RecordUID))
	e := events.Event{Type: events.TargetRegistered, ID: t.RecordUID + ".registered", Time: now,
		ClientID: clientOf(c).ClientID, RecordUID: t.RecordUID, Outcome: events.OutcomeOK, Target: &t}
	seq, err := s.cfg.Store.Append(ctx, events.TargetSubject(t.RecordUID), e, 0)
	if err != nil {
		return err
	}
	if err := s.cfg.Projections.Wait(ctx, "target", t.RecordUID, seq); err != nil {
		return err
	}
	s.log.Info("target registered", "record_uid", t.RecordUID, "engine", t.Engine, "host", t.Host)
	return c.JSON(http.StatusCreated, viewOf(t))
}

func (s *Server) listTargets(c echo.Context) error {
	ts, err := s.cfg.Projections.Targets(c.Request().Context())
	if err != nil {
		return err
	}
	out := struct {
		Data []targetView `json:"data"`
	}{Data: make([]targetView, 0, len(ts))}
	for _, t := range ts {
		out.Data = append(out.Data, viewOf(t))
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) getTarget(c echo.Context) error {
	t, err := s.cfg.Projections.Target(c.Request().Context(), c.Param("uid"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, viewOf(t))
}

// deleteTarget removes a target. While it has active leases it refuses, unless
// ?revoke_leases=true, which revokes them first (and removes nothing if any revocation
// does not finish).
func (s *Server) deleteTarget(c echo.Context) error {
	ctx := c.Request().Context()
	uid := c.Param("uid")
	target, err := s.cfg.Projections.Target(ctx, uid)
	if err != nil {
		return err
	}
	revoke := false
	switch c.QueryParam("revoke_leases") {
	case "", "false":
	case "true":
		revoke = true
	default:
		return events.Errorf(events.EInvalid, "revoke_leases must be true or false.")
	}
	for {
		page, _, err := s.cfg.Projections.ActiveLeases(ctx, projections.LeaseQuery{RecordUID: uid, Limit: 100})
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		if !revoke {
			return events.Errorf(events.EConflict, "The target has %s active lease(s); revoke them first or pass ?revoke_leases=true.", countOf(page))
		}
		if err := s.revokeAll(ctx, page, clientOf(c).ClientID); err != nil {
			return err
		}
	}
	// Every lease has ended: remove what the target's users shared. A failure leaves only
	// a role that cannot log in, so it is logged and the removal goes on.
	if err := s.cfg.Preparer.RemoveTarget(ctx, target); err != nil {
		s.log.Warn("could not remove the target's shared setup from the database", "record_uid", uid, "err", err)
	}
	// As for clients, a removal needs no ordering condition (an update racing it carries
	// one); its dedupe id makes a retried removal land once.
	e := events.Event{Type: events.TargetRemoved, ID: uid + ".removed", Time: time.Now().UTC(),
		ClientID: clientOf(c).ClientID, RecordUID: uid, Outcome: events.OutcomeOK}
	seq, err := s.cfg.Store.AppendUnordered(ctx, events.TargetSubject(uid), e)
	if err != nil {
		return err
	}
	if err := s.cfg.Projections.Wait(ctx, "target", uid, seq); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func countOf(page []events.Lease) string {
	if len(page) >= 100 {
		return "100 or more"
	}
	return strconv.Itoa(len(page))
}

// revokeAll revokes leases a few at a time; the first failure is returned after all
// were tried, and every revocation stays recorded either way.
func (s *Server) revokeAll(ctx context.Context, leases []events.Lease, actor string) error {
	sem := make(chan struct{}, 8)
	errs := make(chan error, len(leases))
	for _, l := range leases {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			err := s.revoke(ctx, l.ID, actor)
			if events.ErrorCode(err) == events.ENotFound {
				err = nil
			}
			errs <- err
		}()
	}
	var first error
	for range leases {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
