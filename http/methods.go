package http

import (
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/syvault/syvault/events"
)

// methods answers a known path asked with a method it does not take: 405 with Allow,
// before authentication (which methods a path takes is in the public OpenAPI document
// anyway). The route table is read once, after every route is added.
type methods struct {
	routes []route
}

type route struct {
	segments []string // ":x" matches any one segment
	allow    []string
}

func newMethods(e *echo.Echo) *methods {
	m := &methods{}
	byPath := map[string][]string{}
	for _, r := range e.Routes() {
		if r.Method == echo.RouteNotFound || strings.HasSuffix(r.Path, "*") || r.Method == "" {
			continue
		}
		if !slices.Contains(byPath[r.Path], r.Method) {
			byPath[r.Path] = append(byPath[r.Path], r.Method)
		}
	}
	for p, allow := range byPath {
		slices.Sort(allow)
		m.routes = append(m.routes, route{segments: strings.Split(strings.TrimPrefix(p, "/"), "/"), allow: allow})
	}
	return m
}

// allowed returns the methods the request's path takes, or nil for an unknown path.
func (m *methods) allowed(path string) []string {
	// Only the leading slash goes: with a trailing one a path is another (unknown) path.
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	var best []string
	exact := -1
	for _, r := range m.routes {
		if len(r.segments) != len(parts) {
			continue
		}
		literal, ok := 0, true
		for i, s := range r.segments {
			switch {
			case strings.HasPrefix(s, ":"):
			case s == parts[i]:
				literal++
			default:
				ok = false
			}
		}
		// A literal route (/dynamic/lease) wins over one with a parameter.
		if ok && literal > exact {
			best, exact = r.allow, literal
		}
	}
	return best
}

// pre is the Echo pre-middleware that answers 405.
func (m *methods) pre(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		allow := m.allowed(r.URL.Path)
		if allow == nil || slices.Contains(allow, r.Method) || r.Method == http.MethodOptions {
			return next(c)
		}
		c.Response().Header().Set(echo.HeaderAllow, strings.Join(allow, ", "))
		return events.Errorf(events.EMethodNotAllowed, "%s does not take %s; it takes %s.", r.URL.Path, r.Method, strings.Join(allow, ", "))
	}
}
