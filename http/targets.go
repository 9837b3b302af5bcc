package http

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/http/api"
)

// updateTarget replaces a target's settings, e.g. to rotate its admin password; with
// If-Match, only while the target is at a version it names.
func (s *Server) updateTarget(c echo.Context) error {
	match, err := ifMatch(c)
	if err != nil {
		return err
	}
	t, password, err := decodeTarget(c)
	if err != nil {
		return err
	}
	t, version, err := s.cfg.Commands.UpdateTarget(c.Request().Context(), c.Param("uid"), t, password, clientOf(c).ClientID, match)
	if err != nil {
		return err
	}
	setVersion(c, version)
	return c.JSON(http.StatusOK, viewOf(t))
}

// decodeTarget reads a target from the request body: normalized, and its admin password.
func decodeTarget(c echo.Context) (events.Target, string, error) {
	var req api.Target
	if err := decodeJSON(c, &req); err != nil {
		return events.Target{}, "", err
	}
	t, err := targetOf(req)
	return t, req.AdminPassword, err
}

// targetOf turns a request into a normalized target, without record uid or time. Its
// warnings, if any (a client sending back a saved answer), are the server's to say and
// are left out.
func targetOf(req api.Target) (events.Target, error) {
	if req.RecordUID != "" || !req.CreatedAt.IsZero() {
		return events.Target{}, events.Errorf(events.EInvalid, "record_uid and created_at are the server's to set; leave them out.")
	}
	t := events.Target{Name: req.Name, Engine: events.Engine(req.Engine), Host: req.Host, Port: req.Port, Database: req.Database,
		AdminUsername: req.AdminUsername, TLSMode: events.TLSMode(req.TLSMode), CACert: req.CACert, MaxTTLSeconds: req.MaxTTLSeconds,
		ConnectionHost: req.ConnectionHost, ConnectionPort: req.ConnectionPort, ConnectionLimit: req.ConnectionLimit}
	for _, g := range req.Grants {
		t.Grants = append(t.Grants, events.Grant(g))
	}
	if err := events.NormalizeTarget(&t); err != nil {
		return t, err
	}
	if req.AdminPassword == "" || len(req.AdminPassword) > 1024 {
		return t, events.Errorf(events.EInvalid, "admin_password is required (at most 1024 characters).")
	}
	return t, nil
}

// viewOf is a target as the API shows it: never the admin password, sealed or not.
func viewOf(t events.Target) api.Target {
	v := api.Target{RecordUID: t.RecordUID, Name: t.Name, Engine: string(t.Engine), Host: t.Host, Port: t.Port,
		Database: t.Database, AdminUsername: t.AdminUsername, TLSMode: string(t.TLSMode), CACert: t.CACert, Grants: make([]api.Grant, len(t.Grants)),
		MaxTTLSeconds: t.MaxTTLSeconds, ConnectionHost: t.ConnectionHost, ConnectionPort: t.ConnectionPort,
		ConnectionLimit: t.ConnectionLimit, CreatedAt: t.CreatedAt, Warnings: t.Warnings}
	for i, g := range t.Grants {
		v.Grants[i] = api.Grant(g)
	}
	return v
}

func (s *Server) createTarget(c echo.Context) error {
	t, password, err := decodeTarget(c)
	if err != nil {
		return err
	}
	t, err = s.cfg.Commands.RegisterTarget(c.Request().Context(), t, password, clientOf(c).ClientID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, viewOf(t))
}

func (s *Server) listTargets(c echo.Context) error {
	ts, err := s.cfg.Queries.Targets(c.Request().Context())
	if err != nil {
		return err
	}
	out := struct {
		Data []api.Target `json:"data"`
	}{Data: make([]api.Target, 0, len(ts))}
	for _, t := range ts {
		out.Data = append(out.Data, viewOf(t))
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) getTarget(c echo.Context) error {
	t, version, err := s.cfg.Queries.TargetVersion(c.Request().Context(), c.Param("uid"))
	if err != nil {
		return err
	}
	setVersion(c, version)
	return c.JSON(http.StatusOK, viewOf(t))
}

// deleteTarget removes a target. While it has active leases it refuses, unless
// ?revoke_leases=true, which revokes them first (and removes nothing if any revocation
// does not finish); with &force=true too, a revocation that cannot finish is given up,
// for a target whose database is gone for good.
func (s *Server) deleteTarget(c echo.Context) error {
	revoke, err := boolQuery(c, "revoke_leases")
	if err != nil {
		return err
	}
	force, err := boolQuery(c, "force")
	if err != nil {
		return err
	}
	if force && !revoke {
		return events.Errorf(events.EInvalid, "force gives up the revocations revoke_leases=true cannot finish; pass both.")
	}
	if err := s.cfg.Commands.RemoveTarget(c.Request().Context(), c.Param("uid"), revoke, force, clientOf(c).ClientID); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
