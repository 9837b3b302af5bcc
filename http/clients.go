package http

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/http/api"
)

func clientViewOf(c events.Client) api.Client {
	allowed := c.AllowedRecords
	if allowed == nil {
		allowed = []string{}
	}
	return api.Client{ClientID: c.ClientID, Name: c.Name, Role: c.Role, AllowedRecords: allowed,
		MaxTTLSeconds: c.MaxTTLSeconds, MaxLeases: c.MaxLeases, PublicKey: c.PublicKey, CreatedAt: c.CreatedAt}
}

// createClient registers an application or operator by its Ed25519 public key. The
// server never sees the private key.
func (s *Server) createClient(c echo.Context) error {
	cl, err := clientFromRequest(c)
	if err != nil {
		return err
	}
	if cl, err = s.cfg.Commands.RegisterClient(c.Request().Context(), cl, clientOf(c).ClientID); err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, clientViewOf(cl))
}

// updateClient replaces a client with the request's settings, as a registration states
// them; its client_id and created_at stay. With If-Match, only while the client is at
// a version it names.
func (s *Server) updateClient(c echo.Context) error {
	match, err := ifMatch(c)
	if err != nil {
		return err
	}
	cl, err := clientFromRequest(c)
	if err != nil {
		return err
	}
	cl, version, err := s.cfg.Commands.UpdateClient(c.Request().Context(), c.Param("client_id"), cl, clientOf(c).ClientID, match)
	if err != nil {
		return err
	}
	setVersion(c, version)
	return c.JSON(http.StatusOK, clientViewOf(cl))
}

// clientFromRequest decodes and checks a client's settings as a registration or an
// update sends them.
func clientFromRequest(c echo.Context) (events.Client, error) {
	var req api.Client
	if err := decodeJSON(c, &req); err != nil {
		return events.Client{}, err
	}
	req.Name = strings.TrimSpace(req.Name)
	switch {
	case req.ClientID != "" || !req.CreatedAt.IsZero():
		return events.Client{}, events.Errorf(events.EInvalid, "client_id and created_at are the server's to set; leave them out.")
	case req.Name == "" || len(req.Name) > events.MaxClientNameLength:
		return events.Client{}, events.Errorf(events.EInvalid, "name is required and must be at most %d characters.", events.MaxClientNameLength)
	case req.Role != events.RoleAdmin && req.Role != events.RoleApp:
		return events.Client{}, events.Errorf(events.EInvalid, "role must be %q or %q.", events.RoleAdmin, events.RoleApp)
	case req.MaxTTLSeconds < 0 || req.MaxTTLSeconds > events.MaxTTLSeconds:
		return events.Client{}, events.Errorf(events.EInvalidTTL, "max_ttl_seconds must be between 1 and %d (or omitted).", events.MaxTTLSeconds)
	case req.MaxLeases < 0 || req.MaxLeases > events.MaxClientLeases:
		return events.Client{}, events.Errorf(events.EInvalid, "max_leases must be between 1 and %d (or omitted).", events.MaxClientLeases)
	case len(req.AllowedRecords) > 1000:
		return events.Client{}, events.Errorf(events.EInvalid, "allowed_records may list at most 1000 records.")
	}
	for _, uid := range req.AllowedRecords {
		if !events.ValidID(uid) {
			return events.Client{}, events.Errorf(events.EInvalid, "allowed_records must list record_uids as the API returns them (letters, digits, - and _).")
		}
	}
	if _, err := ParsePublicKey(req.PublicKey); err != nil {
		return events.Client{}, err
	}
	return events.Client{Name: req.Name, PublicKey: req.PublicKey, Role: req.Role, AllowedRecords: req.AllowedRecords,
		MaxTTLSeconds: req.MaxTTLSeconds, MaxLeases: req.MaxLeases}, nil
}

func (s *Server) listClients(c echo.Context) error {
	cs, err := s.cfg.Queries.Clients(c.Request().Context())
	if err != nil {
		return err
	}
	out := struct {
		Data []api.Client `json:"data"`
	}{Data: make([]api.Client, 0, len(cs))}
	for _, cl := range cs {
		out.Data = append(out.Data, clientViewOf(cl))
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) getClient(c echo.Context) error {
	cl, version, err := s.cfg.Queries.ClientVersion(c.Request().Context(), c.Param("client_id"))
	if err != nil {
		return err
	}
	setVersion(c, version)
	return c.JSON(http.StatusOK, clientViewOf(cl))
}

// deleteClient removes a client: its tokens stop working at once (every request looks
// the client up), and its active leases keep their expiry.
func (s *Server) deleteClient(c echo.Context) error {
	if err := s.cfg.Commands.RemoveClient(c.Request().Context(), c.Param("client_id"), clientOf(c).ClientID); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
