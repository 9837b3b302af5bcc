package client

import (
	"context"
	"net/http"

	"github.com/syvault/syvault/http/api"
)

// LoginLink is a one-time dashboard login link.
type LoginLink = api.LoginLink

// CreateLoginLink asks for a one-time link that logs a browser into the dashboard as
// this client (admin only). It works once, within about a minute.
func (c *Client) CreateLoginLink(ctx context.Context) (*LoginLink, error) {
	var l LoginLink
	err := c.Do(ctx, http.MethodPost, base+"/ui/login-links", nil, &l)
	return &l, err
}
