// Package http is SyVault's HTTP API on Echo. Handlers only translate: they decode and
// validate requests, call the command and query sides, and encode answers. Error codes
// become statuses in one table (statusOf), and every error answer is the same JSON shape.
package http

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/syvault/syvault/events"
)

// BasePath prefixes every API route.
const BasePath = "/api/sm/v1"

// MaxBodyBytes is the largest request body accepted.
const MaxBodyBytes = 64 << 10

// Commands change state; *command.Service implements them. Each returns an
// *events.Error the error table maps to a status.
type Commands interface {
	CreateLease(ctx context.Context, client events.Client, recordUID string, ttlSeconds int) (events.Credentials, error)
	RevokeLease(ctx context.Context, id, actor string) error
	AbandonLease(ctx context.Context, id, actor string) (events.Lease, error)
	RenewLease(ctx context.Context, id string, client events.Client, ttlSeconds int) (events.Lease, error)
	RegisterTarget(ctx context.Context, t events.Target, adminPassword, actor string) (events.Target, error)
	UpdateTarget(ctx context.Context, uid string, t events.Target, adminPassword, actor string, ifMatch []uint64) (events.Target, uint64, error)
	RemoveTarget(ctx context.Context, uid string, revokeLeases, abandon bool, actor string) error
	RegisterClient(ctx context.Context, c events.Client, actor string) (events.Client, error)
	UpdateClient(ctx context.Context, id string, c events.Client, actor string, ifMatch []uint64) (events.Client, uint64, error)
	RemoveClient(ctx context.Context, id, actor string) error
	RecordDenied(ctx context.Context, client events.Client, action, recordUID, leaseID string, cause error)
	UseAssertion(ctx context.Context, clientID, jti string, until time.Time) error
	RefuseReplay(ctx context.Context, clientID, jti string) error
	CreateLoginLink(ctx context.Context, clientID, key string) (code string, expiresAt time.Time, err error)
}

// Queries read state; *projections.Projections implements them.
type Queries interface {
	Lease(ctx context.Context, id string) (events.Lease, error)
	ActiveLeases(ctx context.Context, q events.LeaseQuery) ([]events.Lease, string, error)
	Target(ctx context.Context, uid string) (events.Target, error)
	// TargetVersion and ClientVersion also answer the version an update's If-Match names.
	TargetVersion(ctx context.Context, uid string) (events.Target, uint64, error)
	Targets(ctx context.Context) ([]events.Target, error)
	Client(ctx context.Context, id string) (events.Client, error)
	ClientVersion(ctx context.Context, id string) (events.Client, uint64, error)
	Clients(ctx context.Context) ([]events.Client, error)
	Audit(ctx context.Context, q events.AuditQuery) ([]events.Recorded, uint64, error)
}

// ReadyChecker reports whether a part of the service can do its work.
type ReadyChecker func(ctx context.Context) error

// Config wires the server.
type Config struct {
	Commands Commands
	Queries  Queries
	// Connected reports whether the event store (NATS) can be reached right now: while it
	// cannot, every API request answers 503 at once.
	Connected func() bool
	Logger    *slog.Logger
	// TokenKeys sign and verify access tokens; every process of one deployment shares them.
	TokenKeys TokenKeys
	// TokenTTL is the access tokens' lifetime. Default 15 minutes.
	TokenTTL time.Duration
	// RequestTimeout bounds how long a lease create or revoke waits for the workers.
	// Default 20 s.
	RequestTimeout time.Duration
	// PublicURLs are the addresses clients reach this server by (scheme://host[:port]):
	// the only audiences a client assertion may name. The request's own Host header never
	// counts, or an assertion made for any other server could be replayed here. Empty:
	// derived by Listen from the address it binds (a specific address names itself, a
	// loopback one also as localhost); an address that binds every interface names no
	// one, so Listen then fails, unless WildcardAudiences.
	PublicURLs []string
	// WildcardAudiences lets a server bound to every interface without PublicURLs accept
	// its loopback URLs and the machine's host name: for development only.
	WildcardAudiences bool
	// ReadTimeout bounds reading a whole request, body included, so a client trickling
	// bytes cannot hold a connection. Default 30 s.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its headers to the end of its
	// answer. Default RequestTimeout + 30 s: a create or revoke waits up to
	// RequestTimeout for the workers, then settles the lease before it answers.
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a kept-alive connection waits for its next request.
	// Default 2 minutes.
	IdleTimeout time.Duration
	// Ready lists the readiness checks behind /readyz.
	Ready map[string]ReadyChecker
	// TLSCertFile and TLSKeyFile, when set, make the server speak HTTPS only.
	TLSCertFile, TLSKeyFile string
	// Metrics serves /metrics (Prometheus text format) when set.
	Metrics http.Handler
	// Observer is told the outcome of lease creates and revokes. Optional.
	Observer Observer
	// ClientRateLimit bounds each app client's tokens, lease creates and renewals in
	// this process, per second (in bursts of twice that, at least two); 0: no limit.
	ClientRateLimit float64
	// OpsOnly serves only /healthz, /readyz and /metrics: for processes that run workers
	// but no API, so they can still be probed and scraped.
	OpsOnly bool
	// UI, when set, answers every path under UIPath (the dashboard, package http/ui);
	// without it those paths are unknown routes.
	UI http.Handler
}

// UIPath prefixes the dashboard's pages; the login links the API hands out point there.
const UIPath = "/ui"

// Observer records what the API did, for metrics. Implementations must be safe for
// concurrent use and must not block.
type Observer interface {
	// LeaseCreated is called once per lease request with its outcome ("ok" or an error
	// code) and how long the caller waited.
	LeaseCreated(recordUID, outcome string, took time.Duration)
	// LeaseRevoked is called once per revoke request, likewise.
	LeaseRevoked(outcome string, took time.Duration)
	// RateLimited is called for each request refused by the client rate limit, with
	// what it asked for ("token", "create" or "renew"), and for each refused mutation it
	// leaves out of the audit trail ("denied").
	RateLimited(action string)
}

type nopObserver struct{}

func (nopObserver) LeaseCreated(string, string, time.Duration) {}
func (nopObserver) LeaseRevoked(string, time.Duration)         {}
func (nopObserver) RateLimited(string)                         {}

// Server is the HTTP API. It is safe for concurrent use.
type Server struct {
	cfg  Config
	echo *echo.Echo
	log  *slog.Logger
	auth *authenticator
	srv  *http.Server
	ln   net.Listener
	// audiences are the public URLs a client assertion may name, fixed by Listen.
	audiences []string
	limits    *clientLimits // nil: no client rate limit
	denials   *clientLimits // the recorded refusals' bound without one
}

// MaxHeaderBytes caps a request's header block.
const MaxHeaderBytes = 32 << 10

// New builds the server and its routes; Open starts listening.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Connected == nil || (!cfg.OpsOnly && (cfg.Commands == nil || cfg.Queries == nil || cfg.TokenKeys == nil)) {
		return nil, errors.New("http.New: Connected, Commands, Queries and TokenKeys are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = 15 * time.Minute
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 20 * time.Second
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = cfg.RequestTimeout + 30*time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	s := &Server{cfg: cfg, echo: echo.New(), log: cfg.Logger.With("component", "http"), limits: newClientLimits(cfg.ClientRateLimit), denials: newDenialLimits()}
	e := s.echo
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true, LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
		s.log.Error("panic in handler", "path", c.Path(), "err", err, "stack", string(stack))
		return err
	}}))
	e.Pre(noStore)
	e.Use(middleware.BodyLimit(fmt.Sprintf("%dB", MaxBodyBytes)))
	e.Use(s.accessLog)

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	if cfg.Metrics != nil {
		e.GET("/metrics", echo.WrapHandler(cfg.Metrics))
	}
	if cfg.OpsOnly {
		return s, nil
	}
	s.auth = &authenticator{cfg: cfg}
	e.GET(BasePath+"/openapi.json", s.openAPI)
	api := e.Group(BasePath, s.requireStore)
	api.POST("/auth/token", s.token)
	authed := api.Group("", s.authenticate, checkPathIDs)
	authed.POST("/dynamic/lease", s.createLease)
	authed.GET("/dynamic/leases", s.listLeases)
	authed.GET("/dynamic/leases/:id", s.getLease)
	authed.DELETE("/dynamic/leases/:id", s.revokeLease)
	authed.POST("/dynamic/leases/:id/renew", s.renewLease)
	authed.POST("/dynamic/targets", s.createTarget, s.require(actTargetManage))
	authed.GET("/dynamic/targets", s.listTargets, s.require(actTargetRead))
	authed.GET("/dynamic/targets/:uid", s.getTarget, s.require(actTargetRead))
	authed.PUT("/dynamic/targets/:uid", s.updateTarget, s.require(actTargetManage))
	authed.DELETE("/dynamic/targets/:uid", s.deleteTarget, s.require(actTargetManage))
	authed.POST("/clients", s.createClient, s.require(actClientManage))
	authed.GET("/clients", s.listClients, s.require(actClientRead))
	authed.GET("/clients/:client_id", s.getClient, s.require(actClientRead))
	authed.PUT("/clients/:client_id", s.updateClient, s.require(actClientManage))
	authed.DELETE("/clients/:client_id", s.deleteClient, s.require(actClientManage))
	authed.GET("/audit", s.audit, s.require(actAuditRead))
	authed.POST("/ui/login-links", s.createLoginLink, s.require(actUILogin))
	e.Pre(newMethods(e).pre)
	return s, nil
}

// Open listens on addr ("127.0.0.1:0" picks a free port) and serves in the background.
func (s *Server) Open(addr string) error {
	if err := s.Listen(addr); err != nil {
		return err
	}
	s.Serve()
	return nil
}

// Listen binds addr without serving yet, so the caller can learn URL first and finish
// setting up before the first request is answered.
func (s *Server) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("http.Listen(%s): %w", addr, err)
	}
	if s.audiences, err = audiences(s.cfg, ln.Addr()); err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: s.cfg.ReadTimeout,
		WriteTimeout: s.cfg.WriteTimeout, IdleTimeout: s.cfg.IdleTimeout, MaxHeaderBytes: MaxHeaderBytes}
	if s.cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCertFile, s.cfg.TLSKeyFile)
		if err != nil {
			ln.Close()
			return fmt.Errorf("the TLS certificate and key (--tls-cert %s, --tls-key %s): %w", s.cfg.TLSCertFile, s.cfg.TLSKeyFile, err)
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	// Set together, and only once listening: Close relies on both or neither.
	s.srv, s.ln = srv, ln
	return nil
}

// handler sends the dashboard's paths to Config.UI, when set, and the rest to the API.
func (s *Server) handler() http.Handler {
	if s.cfg.UI == nil {
		return s.echo
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == UIPath || strings.HasPrefix(r.URL.Path, UIPath+"/") {
			s.cfg.UI.ServeHTTP(w, r)
			return
		}
		s.echo.ServeHTTP(w, r)
	})
}

// Serve answers requests on the listener Listen bound, in the background.
func (s *Server) Serve() {
	go func() {
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	}()
}

// Addr is the address the server listens on, once open.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is the address the server answers on, once open (on loopback when it binds every
// interface).
func (s *Server) URL() string {
	addr := s.ln.Addr().String()
	if tcp, ok := s.ln.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
		addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(tcp.Port))
	}
	return s.scheme() + "://" + addr
}

// PublicURL is the first URL clients are told to reach the server by, once open.
func (s *Server) PublicURL() string { return s.audiences[0] }

func (s *Server) scheme() string {
	if s.cfg.TLSCertFile != "" {
		return "https"
	}
	return "http"
}

// audiences returns cfg.PublicURLs, or the URLs derived from the bound address; see
// Config.PublicURLs.
func audiences(cfg Config, bound net.Addr) ([]string, error) {
	if len(cfg.PublicURLs) > 0 {
		out := make([]string, len(cfg.PublicURLs))
		for i, u := range cfg.PublicURLs {
			out[i] = strings.TrimSuffix(u, "/")
		}
		return out, nil
	}
	scheme := "http"
	if cfg.TLSCertFile != "" {
		scheme = "https"
	}
	tcp, ok := bound.(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("http.Listen: cannot derive a public URL from %s; set one", bound)
	}
	port := strconv.Itoa(tcp.Port)
	url := func(host string) string { return scheme + "://" + net.JoinHostPort(host, port) }
	switch {
	case tcp.IP.IsUnspecified() && !cfg.WildcardAudiences:
		return nil, fmt.Errorf("listening on every interface (%s): set --public-url to the URL clients use to reach this server "+
			"(e.g. https://vault.example.com), the only audience their client assertions may name", bound)
	case tcp.IP.IsUnspecified():
		out := []string{url("127.0.0.1"), url("localhost"), url("::1")}
		if host, err := os.Hostname(); err == nil && host != "" {
			out = append(out, url(host))
		}
		return out, nil
	case tcp.IP.IsLoopback():
		return []string{url(tcp.IP.String()), url("localhost")}, nil
	}
	return []string{url(tcp.IP.String())}, nil
}

// Close stops accepting requests and waits for those in flight, up to ctx.
func (s *Server) Close(ctx context.Context) error {
	if s.srv == nil {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	_ = s.ln.Close() // in case Serve never ran
	return err
}

// checkPathIDs answers 404 for a path id that no record, lease or client can have (a NATS
// wildcard such as * or >, a dot), before it reaches a subject or a KV key.
func checkPathIDs(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		for i, name := range c.ParamNames() {
			if v := c.ParamValues()[i]; !events.ValidID(v) {
				return events.Errorf(events.ENotFound, "No %s %q.", strings.ReplaceAll(name, "_", " "), v)
			}
		}
		return next(c)
	}
}

// noStore marks every API answer, refusals of a method or a body included, not to be
// stored by a cache on the way: a lease's holds its password, a token answer the token,
// and the others what only their client may read. (The dashboard sets its own.)
func noStore(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if p := c.Request().URL.Path; p == BasePath || strings.HasPrefix(p, BasePath+"/") {
			c.Response().Header().Set("Cache-Control", "no-store")
		}
		return next(c)
	}
}

// queryID returns the query parameter name, refusing a value no id can have.
func queryID(c echo.Context, name string) (string, error) {
	v := c.QueryParam(name)
	if v != "" && !events.ValidID(v) {
		return "", events.Errorf(events.EInvalid, "%s must be an id as the API returns it (letters, digits, - and _).", name)
	}
	return v, nil
}

// requireStore answers 503 at once while the connection to NATS is down, rather than
// letting each request wait out its timeout against a store that cannot answer.
func (s *Server) requireStore(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !s.cfg.Connected() {
			return events.Errorf(events.EUnavailable, "The event store is unavailable; try again shortly.")
		}
		return next(c)
	}
}

// accessLog writes the one log line of a request: method, route, status, time and, for
// a refusal, its code (and, for a server error, the error, which holds no secret: the
// drivers' errors are scrubbed before they get here).
func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		// The path template, never the query string: cursors and ids only, but keep the
		// habit of not logging request data.
		attrs := []any{"method", c.Request().Method, "route", c.Path(), "status", c.Response().Status,
			"took", time.Since(start).Round(time.Microsecond)}
		switch status := c.Response().Status; {
		case status >= 500:
			s.log.Error("request", append(attrs, "code", events.ErrorCode(err), "err", err)...)
		case status >= 400:
			s.log.Info("request", append(attrs, "code", events.ErrorCode(err))...)
		default:
			s.log.Info("request", attrs...)
		}
		return nil
	}
}

// apiError is the body of every error answer.
type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// statuses is the one place error codes become HTTP statuses; any other code is a 500.
var statuses = map[events.Code]int{
	events.EInvalid:            http.StatusBadRequest,
	events.EInvalidTTL:         http.StatusBadRequest,
	events.EUnauthenticated:    http.StatusUnauthorized,
	events.EForbidden:          http.StatusForbidden,
	events.ENotFound:           http.StatusNotFound,
	events.EConflict:           http.StatusConflict,
	events.EPreconditionFailed: http.StatusPreconditionFailed,
	events.ETooLarge:           http.StatusRequestEntityTooLarge,
	events.ETooManyLeases:      http.StatusTooManyRequests,
	events.ERateLimited:        http.StatusTooManyRequests,
	events.EMethodNotAllowed:   http.StatusMethodNotAllowed,
	events.ETargetUnverified:   http.StatusUnprocessableEntity,
	events.ETargetUnavailable:  http.StatusBadGateway,
	events.EUnavailable:        http.StatusServiceUnavailable,
	events.ETimeout:            http.StatusGatewayTimeout,
}

func statusOf(code events.Code) int {
	if s, ok := statuses[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var he *echo.HTTPError
	var body apiError
	status := 0
	switch {
	case errors.As(err, &he):
		status = he.Code
		switch he.Code {
		case http.StatusNotFound:
			body = apiError{string(events.ENotFound), "No such endpoint; see " + BasePath + "/openapi.json."}
		case http.StatusMethodNotAllowed:
			body = apiError{"method_not_allowed", "This endpoint does not accept that HTTP method."}
		case http.StatusRequestEntityTooLarge:
			body = apiError{string(events.ETooLarge), fmt.Sprintf("The request body is larger than %d KiB.", MaxBodyBytes>>10)}
		case http.StatusUnsupportedMediaType:
			body = apiError{string(events.EInvalid), "Send the body as application/json."}
		default:
			status = http.StatusInternalServerError
			body = apiError{string(events.EInternal), events.ErrorMessage(nil)}
		}
	default:
		code := events.ErrorCode(err)
		body = apiError{string(code), events.ErrorMessage(err)}
		if code == events.ETimeout && !s.cfg.Connected() {
			// A wait that ran out because NATS went away is the store's unavailability,
			// whatever step noticed it first.
			code = events.EUnavailable
			body = apiError{string(code), "The event store is unavailable; try again shortly."}
		}
		status = statusOf(code)
	}
	if status == http.StatusServiceUnavailable {
		c.Response().Header().Set("Retry-After", "1")
	}
	if status == http.StatusUnauthorized {
		// RFC 6750: a 401 names the scheme to authenticate with.
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="syvault"`)
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	_ = c.JSON(status, body)
}
