package http

import (
	"context"
	"net/http"
	"sort"
	"time"

	"github.com/labstack/echo/v4"
)

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 only while every readiness check passes: the event store, the
// projections, and at least one worker somewhere.
func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 3*time.Second)
	defer cancel()
	checks := map[string]string{}
	ok := true
	names := make([]string, 0, len(s.cfg.Ready))
	for n := range s.cfg.Ready {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := s.cfg.Ready[n](ctx); err != nil {
			checks[n] = "failing"
			ok = false
			s.log.Warn("readiness check failing", "check", n, "err", err)
		} else {
			checks[n] = "ok"
		}
	}
	if !ok {
		c.Response().Header().Set("Retry-After", "1") // as every 503 of the API says
		return c.JSON(http.StatusServiceUnavailable, map[string]any{"error": "unavailable", "message": "The server is not ready; see checks.", "checks": checks})
	}
	return c.JSON(http.StatusOK, map[string]any{"status": "ready", "checks": checks})
}
