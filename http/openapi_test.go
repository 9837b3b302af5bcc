package http

import (
	"context"
	nethttp "net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"github.com/syvault/syvault/events"
)

// unused stands in for the command and query sides where no request reaches them: the
// route table alone is under test. Every method refuses.
type unused struct{ Commands }

var errUnused = events.Errorf(events.EInternal, "not in this test")

func (unused) Lease(context.Context, string) (events.Lease, error) { return events.Lease{}, errUnused }
func (unused) ActiveLeases(context.Context, events.LeaseQuery) ([]events.Lease, string, error) {
	return nil, "", errUnused
}
func (unused) Target(context.Context, string) (events.Target, error) {
	return events.Target{}, errUnused
}
func (unused) Targets(context.Context) ([]events.Target, error) { return nil, errUnused }
func (unused) Client(context.Context, string) (events.Client, error) {
	return events.Client{}, errUnused
}
func (unused) Clients(context.Context) ([]events.Client, error) { return nil, errUnused }
func (unused) TargetVersion(context.Context, string) (events.Target, uint64, error) {
	return events.Target{}, 0, errUnused
}
func (unused) ClientVersion(context.Context, string) (events.Client, uint64, error) {
	return events.Client{}, 0, errUnused
}
func (unused) Audit(context.Context, events.AuditQuery) ([]events.Recorded, uint64, error) {
	return nil, 0, errUnused
}

// mustTestServer builds the API's routes with nothing behind them.
func mustTestServer(t *testing.T) *Server {
	t.Helper()
	s, err := New(context.Background(), Config{Commands: unused{}, Queries: unused{}, Connected: func() bool { return true },
		TokenKeys: testKeys, Metrics: nethttp.HandlerFunc(func(nethttp.ResponseWriter, *nethttp.Request) {})})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// loadOpenAPI parses and validates the embedded document.
func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPI)
	if err != nil {
		t.Fatalf("openapi.json does not load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI 3 document: %v", err)
	}
	return doc
}

// TestOpenAPI_Valid: the served document is a valid OpenAPI 3.0 document with the
// shared pieces the API relies on.
func TestOpenAPI_Valid(t *testing.T) {
	doc := loadOpenAPI(t)
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi = %q, want 3.0.3", doc.OpenAPI)
	}
	if len(doc.Servers) != 1 || doc.Servers[0].URL != "http://127.0.0.1:8200" {
		t.Errorf("servers = %v, want http://127.0.0.1:8200", doc.Servers)
	}
	if doc.Components == nil || doc.Components.Schemas["Error"] == nil {
		t.Fatal("components.schemas.Error is missing")
	}
	errSchema := doc.Components.Schemas["Error"].Value
	for _, f := range []string{"error", "message"} {
		if !slices.Contains(errSchema.Required, f) {
			t.Errorf("Error schema does not require %q", f)
		}
	}
	bearer := doc.Components.SecuritySchemes["bearerAuth"]
	if bearer == nil || bearer.Value.Type != "http" || !strings.EqualFold(bearer.Value.Scheme, "bearer") {
		t.Fatalf("securitySchemes.bearerAuth must be an http bearer scheme, got %+v", bearer)
	}
	public := map[string]bool{
		"GET /healthz": true, "GET /readyz": true, "GET /metrics": true,
		"GET " + BasePath + "/openapi.json": true, "POST " + BasePath + "/auth/token": true,
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			key := method + " " + path
			sec := doc.Security
			if op.Security != nil {
				sec = *op.Security
			}
			needsBearer := slices.ContainsFunc(sec, func(r openapi3.SecurityRequirement) bool { _, ok := r["bearerAuth"]; return ok })
			if public[key] && len(sec) != 0 {
				t.Errorf("%s is public but the document asks for %v", key, sec)
			}
			if !public[key] && (!needsBearer || len(sec) != 1) {
				t.Errorf("%s must require bearerAuth (and only it), the document says %v", key, sec)
			}
			if op.OperationID == "" {
				t.Errorf("%s has no operationId", key)
			}
			for code, resp := range op.Responses.Map() {
				if code[0] != '4' && code[0] != '5' || key == "GET /readyz" {
					continue
				}
				ct := resp.Value.Content.Get("application/json")
				if ct == nil || ct.Schema == nil || ct.Schema.Ref != "#/components/schemas/Error" {
					t.Errorf("%s %s: an error answer must be the shared Error schema", key, code)
				}
			}
		}
	}
}

var echoParam = regexp.MustCompile(`:([A-Za-z0-9_]+)`)

// TestOpenAPI_MatchesRoutes: every route the server registers is documented, and every
// documented operation is a route.
func TestOpenAPI_MatchesRoutes(t *testing.T) {
	doc := loadOpenAPI(t)
	s := mustTestServer(t)

	routes := map[string]bool{}
	for _, r := range s.echo.Routes() {
		if r.Method == echo.RouteNotFound {
			continue // echo's catch-all routes for group middleware
		}
		routes[r.Method+" "+echoParam.ReplaceAllString(r.Path, "{$1}")] = true
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented[method+" "+path] = true
		}
	}
	if len(routes) == 0 {
		t.Fatal("the server registers no routes")
	}
	for r := range routes {
		if !documented[r] {
			t.Errorf("route %s has no operation in openapi.json", r)
		}
	}
	for d := range documented {
		if !routes[d] {
			t.Errorf("openapi.json documents %s, which is no route of the server", d)
		}
	}
	t.Logf("%d routes, %d documented operations", len(routes), len(documented))
}
