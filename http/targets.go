package http

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/syvault/syvault/events"
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

// updateTarget replaces a target's settings, e.g. to rotate its admin password.
func (s *Server) updateTarget(c echo.Context) error {
	var req targetRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	t, err := req.target()
	if err != nil {
		return err
	}
	t, err = s.cfg.Commands.UpdateTarget(c.Request().Context(), c.Param("uid"), t, req.AdminPassword, clientOf(c).ClientID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, viewOf(t))
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

func (s *Server) createTarget(c echo.Context) error {
	var req targetRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	t, err := req.target()
	if err != nil {
		return err
	}
	t, err = s.cfg.Commands.RegisterTarget(c.Request().Context(), t, req.AdminPassword, clientOf(c).ClientID)
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
		Data []targetView `json:"data"`
	}{Data: make([]targetView, 0, len(ts))}
	for _, t := range ts {
		out.Data = append(out.Data, viewOf(t))
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) getTarget(c echo.Context) error {
	t, err := s.cfg.Queries.Target(c.Request().Context(), c.Param("uid"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, viewOf(t))
}

// deleteTarget removes a target. While it has active leases it refuses, unless
// ?revoke_leases=true, which revokes them first (and removes nothing if any revocation
// does not finish).
func (s *Server) deleteTarget(c echo.Context) error {
	revoke := false
	switch c.QueryParam("revoke_leases") {
	case "", "false":
	case "true":
		revoke = true
	default:
		return events.Errorf(events.EInvalid, "revoke_leases must be true or false.")
	}
	if err := s.cfg.Commands.RemoveTarget(c.Request().Context(), c.Param("uid"), revoke, clientOf(c).ClientID); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
