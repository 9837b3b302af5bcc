package api

import "time"

// LoginLink is a one-time link that logs a browser into the dashboard as the client that
// asked for it. URL is on the server's first public URL; Path is the same link for a
// client that knows a better address of the server (the one it reached it by).
type LoginLink struct {
	URL       string    `json:"url"`
	Path      string    `json:"path"`
	ExpiresAt time.Time `json:"expires_at"`
}
