package http

import (
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/http/api"
)

// createLoginLink hands an admin client a one-time link into the dashboard, so that a
// browser gets a session without ever holding the client's private key or a token.
func (s *Server) createLoginLink(c echo.Context) error {
	client := clientOf(c)
	code, expiresAt, err := s.cfg.Commands.CreateLoginLink(c.Request().Context(), client.ClientID, events.KeyFingerprint(client.PublicKey))
	if err != nil {
		return err
	}
	// The code after "#": a browser sends it to no server, so no proxy's access log keeps
	// it, and opening the page spends nothing: a fetcher that runs no script leaves it
	// unused (see ui.loginPage).
	path := UIPath + "/login#" + url.Values{"code": {code}}.Encode()
	return c.JSON(http.StatusCreated, api.LoginLink{URL: s.PublicURL() + path, Path: path, ExpiresAt: expiresAt})
}
