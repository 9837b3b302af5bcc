// Package ui is SyVault's dashboard for admin clients: server-rendered pages
// (html/template) whose stylesheet and two small scripts are embedded in the binary, so
// `syvault serve` serves it with no build step and no file to deploy. Like package http
// it only translates: a handler reads the request, checks the session, calls one method
// of the command or query side, and renders; it reaches NATS through nothing else.
//
// A browser never holds a private key or an access token: `sy ui` asks the API for a
// one-time login link, and the page it opens trades the link's code for an HttpOnly,
// SameSite=Strict session cookie signed by the deployment's token keys for the
// dashboard's audience alone. Every response forbids framing, caching and any script or
// style but the embedded ones; every form that changes state carries the session's
// anti-forgery token.
package ui

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/syvault/syvault/events"
	syhttp "github.com/syvault/syvault/http"
)

// Commands are the changes the dashboard makes; *command.Service implements them.
type Commands interface {
	RevokeLease(ctx context.Context, id, actor string) error
	RenewLease(ctx context.Context, id string, client events.Client, ttlSeconds int) (events.Lease, error)
	UseLoginLink(ctx context.Context, code string) (clientID, key string, err error)
	EndSession(ctx context.Context, clientID, sessionID string) error
	SessionEnded(ctx context.Context, clientID, sessionID string) (bool, error)
}

// Queries are what the dashboard reads; *projections.Projections implements them.
type Queries interface {
	Lease(ctx context.Context, id string) (events.Lease, error)
	ActiveLeases(ctx context.Context, q events.LeaseQuery) ([]events.Lease, string, error)
	Targets(ctx context.Context) ([]events.Target, error)
	Client(ctx context.Context, id string) (events.Client, error)
	Clients(ctx context.Context) ([]events.Client, error)
	Audit(ctx context.Context, q events.AuditQuery) ([]events.Recorded, uint64, error)
	// ActiveByTarget counts the listed (active and revoking) leases of each target.
	ActiveByTarget(ctx context.Context) (map[string]int, error)
	// Recent returns the events since a time, at most limit of them (the last ones).
	Recent(ctx context.Context, since time.Time, limit int) ([]events.Recorded, bool, error)
}

// Observer is told the outcome of the revocations the dashboard asks for, for metrics.
type Observer interface {
	LeaseRevoked(outcome string, took time.Duration)
}

// Config wires the dashboard. Commands, Queries and Keys are required.
type Config struct {
	Commands Commands
	Queries  Queries
	// Keys sign and verify sessions: the deployment's token keys, so that every process
	// accepts every other's sessions.
	Keys syhttp.TokenKeys
	// SessionTTL is how long a session lasts: the access tokens' lifetime. Default 15 min.
	SessionTTL time.Duration
	// SecureCookies marks the session cookie Secure even on a plain-HTTP request (a
	// server behind a proxy that terminates TLS); a TLS request always gets Secure.
	SecureCookies bool
	Logger        *slog.Logger
	Observer      Observer
}

//go:embed templates static
var assets embed.FS

// Handler serves the dashboard under syhttp.UIPath. It is safe for concurrent use.
type Handler struct {
	cfg    Config
	log    *slog.Logger
	mux    *http.ServeMux
	pages  map[string]*template.Template
	static http.Handler
}

var _ http.Handler = (*Handler)(nil)

// New parses the templates and builds the routes.
func New(cfg Config) (*Handler, error) {
	if cfg.Commands == nil || cfg.Queries == nil || cfg.Keys == nil {
		return nil, errors.New("ui.New: Commands, Queries and Keys are required")
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 15 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, log: cfg.Logger.With("component", "ui"), mux: http.NewServeMux(), pages: map[string]*template.Template{}}
	for _, name := range []string{"overview", "leases", "lease", "audit", "activity", "message", "login", "loggedin"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/partials.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("ui.New: template %s: %w", name, err)
		}
		h.pages[name] = t
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, err
	}
	h.static = http.StripPrefix(syhttp.UIPath+"/static/", http.FileServerFS(static))

	p := syhttp.UIPath
	h.mux.Handle("GET "+p, http.RedirectHandler(p+"/", http.StatusSeeOther))
	h.mux.Handle("GET "+p+"/static/", h.static)
	h.mux.Handle("GET "+p+"/login", h.handle(h.loginPage))
	h.mux.Handle("POST "+p+"/login", h.handle(h.login))
	h.mux.Handle("POST "+p+"/logout", h.authed(h.logout))
	h.mux.Handle("GET "+p+"/{$}", h.authed(h.overview))
	h.mux.Handle("GET "+p+"/leases", h.authed(h.leases))
	h.mux.Handle("GET "+p+"/leases/{id}", h.authed(h.lease))
	h.mux.Handle("POST "+p+"/leases/{id}/revoke", h.authed(h.revoke))
	h.mux.Handle("POST "+p+"/leases/{id}/renew", h.authed(h.renew))
	h.mux.Handle("GET "+p+"/audit", h.authed(h.audit))
	h.mux.Handle("GET "+p+"/audit/events", h.authedJSON(h.auditEvents))
	h.mux.Handle("GET "+p+"/activity", h.authed(h.activity))
	h.mux.Handle(p+"/", h.handle(func(http.ResponseWriter, *http.Request) error {
		return events.Errorf(events.ENotFound, "There is no such page in the dashboard.")
	}))
	return h, nil
}

// maxFormBytes bounds a form's body, like the API's bodies.
const maxFormBytes = syhttp.MaxBodyBytes

// contentSecurityPolicy allows the embedded stylesheet and script and nothing else: no
// inline script or style, no framing, forms and fetches to this server only.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// ServeHTTP answers one dashboard request with the security headers every answer carries.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", contentSecurityPolicy)
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	defer func() {
		if v := recover(); v != nil {
			h.log.Error("panic in dashboard handler", "path", r.URL.Path, "err", v)
			h.fail(w, r, fmt.Errorf("panic: %v", v))
		}
	}()
	start := time.Now()
	rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	h.mux.ServeHTTP(rw, r)
	// The path alone: query strings hold filters and, on /login, a legacy link's code.
	h.log.Info("request", "method", r.Method, "path", r.URL.Path, "status", rw.status, "took", time.Since(start).Round(time.Microsecond))
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// handle turns a handler that returns an error into one that renders it as a page.
func (h *Handler) handle(fn func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			h.fail(w, r, err)
		}
	})
}

// view is what every page template gets: the page's own data in Data.
type view struct {
	Title string
	Nav   string // the menu entry to highlight
	Me    *events.Client
	CSRF  string
	Data  any
}

// render writes page name with status.
func (h *Handler) render(w http.ResponseWriter, status int, name string, v view) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := h.pages[name].ExecuteTemplate(w, "layout", v); err != nil {
		h.log.Error("render", "page", name, "err", err)
	}
}

// message is the data of the message page: errors, the log-in hint, the log-out notice.
type message struct {
	Status  int
	Heading string
	Text    string
	Login   bool // say how to log in
}

// fail renders err as a page with the status its code maps to, the same as the API's;
// its message is the one an API client would read, never an internal detail.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := events.ErrorCode(err)
	status := syhttp.StatusOf(code)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		status, code = http.StatusRequestEntityTooLarge, events.ETooLarge
		err = events.Errorf(code, "The form is larger than %d KiB.", maxFormBytes>>10)
	}
	if status >= 500 {
		h.log.Error("dashboard request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	m := message{Status: status, Heading: http.StatusText(status), Text: events.ErrorMessage(err), Login: code == events.EUnauthenticated}
	if m.Login {
		m.Heading = "Log in with sy ui"
	}
	h.render(w, status, "message", view{Title: m.Heading, Data: m})
}
