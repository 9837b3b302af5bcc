package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/google/uuid"

	syhttp "github.com/syvault/syvault/http"
	"github.com/syvault/syvault/http/client"
)

// oaRequest is what the document must say about a request the test sends.
type oaRequest int

const (
	oaValid   oaRequest = iota // the document accepts the request
	oaInvalid                  // the document refuses it too (the server answers 4xx)
)

// oaChecker sends raw requests to a server and validates each request and each answer
// against the OpenAPI document the server serves.
type oaChecker struct {
	t         *testing.T
	base      string
	doc       *openapi3.T
	router    routers.Router
	opts      *openapi3filter.Options
	exercised map[string]bool // operationId → seen
	ifMatch   string          // sent as If-Match when set
}

func newOAChecker(t *testing.T, base string) *oaChecker {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(syhttp.OpenAPI)
	if err != nil {
		t.Fatalf("openapi.json does not load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is invalid: %v", err)
	}
	// The document names the default address; this server listens elsewhere.
	doc.Servers = openapi3.Servers{{URL: base}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	opts := &openapi3filter.Options{
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		IncludeResponseStatus: true, // an undocumented status is a failure
		SkipSettingDefaults:   true,
		MultiError:            true,
		SchemaValidationOptions: []openapi3.SchemaValidationOption{
			openapi3.WithStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC9562)),
		},
	}
	return &oaChecker{t: t, base: base, doc: doc, router: router, opts: opts, exercised: map[string]bool{}}
}

// call sends one request, checks the document's verdict on it (want), sends it, checks
// the status is status, validates the answer against the operation and returns its body.
func (v *oaChecker) call(method, path, token, contentType string, body []byte, want oaRequest, status int) []byte {
	v.t.Helper()
	ctx := context.Background()
	newReq := func() *http.Request {
		req, err := http.NewRequestWithContext(ctx, method, v.base+path, bytes.NewReader(body))
		if err != nil {
			v.t.Fatal(err)
		}
		if body == nil {
			req.Body, req.GetBody, req.ContentLength = http.NoBody, nil, 0
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if v.ifMatch != "" {
			req.Header.Set("If-Match", v.ifMatch)
		}
		return req
	}

	// The request, as the document sees it.
	vreq := newReq()
	route, params, err := v.router.FindRoute(vreq)
	if err != nil {
		v.t.Fatalf("%s %s: no operation in openapi.json: %v", method, path, err)
	}
	op := route.Operation.OperationID
	v.exercised[op] = true
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route, Options: v.opts}
	reqErr := openapi3filter.ValidateRequest(ctx, in)
	switch {
	case want == oaValid && reqErr != nil:
		v.t.Errorf("%s (%s %s): the document refuses a request the server accepts: %v", op, method, path, reqErr)
	case want == oaInvalid && reqErr == nil:
		v.t.Errorf("%s (%s %s): the document accepts a request the server refuses", op, method, path)
	}

	// The answer.
	resp, err := http.DefaultClient.Do(newReq())
	if err != nil {
		v.t.Fatalf("%s (%s %s): %v", op, method, path, err)
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		v.t.Fatalf("%s (%s %s): reading the answer: %v", op, method, path, err)
	}
	if resp.StatusCode != status {
		v.t.Fatalf("%s (%s %s): status %d, want %d: %s", op, method, path, resp.StatusCode, status, data)
	}
	if resp.StatusCode == http.StatusNoContent && len(data) != 0 {
		v.t.Errorf("%s (%s %s): 204 with a body: %q", op, method, path, data)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: v.opts}
	out.SetBodyBytes(data)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		v.t.Errorf("%s (%s %s): the %d answer does not match openapi.json: %v\nbody: %s", op, method, path, resp.StatusCode, err, data)
	}
	return data
}

// json sends a JSON body (nil for none) and decodes a JSON answer into out (nil: ignore).
func (v *oaChecker) json(method, path, token string, in any, want oaRequest, status int, out any) {
	v.t.Helper()
	var body []byte
	ct := ""
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			v.t.Fatal(err)
		}
		ct = "application/json"
	}
	data := v.call(method, path, token, ct, body, want, status)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			v.t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
}

// token gets an access token for c through the token endpoint.
func (v *oaChecker) token(c *client.Client) string {
	v.t.Helper()
	form := v.assertionForm(c)
	var tr client.TokenResponse
	if err := json.Unmarshal(v.call(http.MethodPost, "/api/sm/v1/auth/token", "", "application/x-www-form-urlencoded",
		[]byte(form.Encode()), oaValid, http.StatusOK), &tr); err != nil {
		v.t.Fatal(err)
	}
	if tr.AccessToken == "" {
		v.t.Fatal("token endpoint answered no access_token")
	}
	return tr.AccessToken
}

func (v *oaChecker) assertionForm(c *client.Client) url.Values {
	v.t.Helper()
	a, err := c.Assertion()
	if err != nil {
		v.t.Fatal(err)
	}
	return url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {a},
	}
}

// TestOpenAPI_Conformance runs a real session against a real server and a local
// PostgreSQL through raw HTTP and validates every request and every answer, success and
// error, against the OpenAPI document the server serves.
func TestOpenAPI_Conformance(t *testing.T) {
	eng := postgresEngine(t)
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	v := newOAChecker(t, srv.HTTP.URL())
	ctx := context.Background()

	// Operations.
	v.call(http.MethodGet, "/healthz", "", "", nil, oaValid, http.StatusOK)
	v.call(http.MethodGet, "/readyz", "", "", nil, oaValid, http.StatusOK)
	if served := v.call(http.MethodGet, "/api/sm/v1/openapi.json", "", "", nil, oaValid, http.StatusOK); !bytes.Equal(served, syhttp.OpenAPI) {
		t.Error("GET /api/sm/v1/openapi.json does not serve the embedded document")
	}
	v.call(http.MethodGet, "/metrics", "", "", nil, oaValid, http.StatusOK)

	// Tokens: a fresh assertion works once; its replay is refused.
	form := v.assertionForm(admin)
	var tr client.TokenResponse
	if err := json.Unmarshal(v.call(http.MethodPost, "/api/sm/v1/auth/token", "", "application/x-www-form-urlencoded",
		[]byte(form.Encode()), oaValid, http.StatusOK), &tr); err != nil {
		t.Fatal(err)
	}
	tok := tr.AccessToken
	v.call(http.MethodPost, "/api/sm/v1/auth/token", "", "application/x-www-form-urlencoded", []byte(form.Encode()), oaValid, http.StatusUnauthorized)
	bad := url.Values{"grant_type": {"password"}, "client_assertion_type": form["client_assertion_type"], "client_assertion": {"x"}}
	v.call(http.MethodPost, "/api/sm/v1/auth/token", "", "application/x-www-form-urlencoded", []byte(bad.Encode()), oaInvalid, http.StatusBadRequest)

	// Targets.
	tg := eng.target(t)
	var target client.Target
	v.json(http.MethodPost, "/api/sm/v1/dynamic/targets", tok, tg, oaValid, http.StatusCreated, &target)
	uid := target.RecordUID
	var targets struct{ Data []client.Target }
	v.json(http.MethodGet, "/api/sm/v1/dynamic/targets", tok, nil, oaValid, http.StatusOK, &targets)
	if !slices.ContainsFunc(targets.Data, func(x client.Target) bool { return x.RecordUID == uid }) {
		t.Errorf("target %s not listed", uid)
	}
	v.json(http.MethodGet, "/api/sm/v1/dynamic/targets/"+uid, tok, nil, oaValid, http.StatusOK, nil)
	tg.MaxTTLSeconds = 7200
	v.json(http.MethodPut, "/api/sm/v1/dynamic/targets/"+uid, tok, tg, oaValid, http.StatusOK, nil)
	v.json(http.MethodGet, "/api/sm/v1/dynamic/targets/NoSuchTarget", tok, nil, oaValid, http.StatusNotFound, nil)

	// 422: a grant on a table that does not exist.
	missing := eng.target(t)
	missing.Grants[0].Tables = []string{"no_such_table"}
	v.json(http.MethodPost, "/api/sm/v1/dynamic/targets", tok, missing, oaValid, http.StatusUnprocessableEntity, nil)
	// 400: an engine the document does not know either.
	wrong := missing
	wrong.Engine = "oracle"
	v.json(http.MethodPost, "/api/sm/v1/dynamic/targets", tok, wrong, oaInvalid, http.StatusBadRequest, nil)

	// Leases.
	var lease client.Lease
	v.json(http.MethodPost, "/api/sm/v1/dynamic/lease", tok, map[string]any{"record_uid": uid, "ttl_seconds": 600}, oaValid, http.StatusCreated, &lease)
	revoked := false
	t.Cleanup(func() {
		if !revoked && lease.LeaseID != "" {
			if err := admin.RevokeLease(ctx, lease.LeaseID); err != nil {
				t.Errorf("cleanup: revoke %s: %v", lease.LeaseID, err)
			}
		}
	})
	var page client.LeasePage
	v.json(http.MethodGet, "/api/sm/v1/dynamic/leases?record_uid="+uid+"&limit=10", tok, nil, oaValid, http.StatusOK, &page)
	if !slices.ContainsFunc(page.Data, func(l client.LeaseInfo) bool { return l.LeaseID == lease.LeaseID }) {
		t.Errorf("lease %s not listed", lease.LeaseID)
	}
	v.json(http.MethodGet, "/api/sm/v1/dynamic/leases", tok, nil, oaValid, http.StatusOK, nil)
	v.json(http.MethodGet, "/api/sm/v1/dynamic/leases?limit=0", tok, nil, oaInvalid, http.StatusBadRequest, nil)
	var info client.LeaseInfo
	v.json(http.MethodGet, "/api/sm/v1/dynamic/leases/"+lease.LeaseID, tok, nil, oaValid, http.StatusOK, &info)
	if info.Status != "active" {
		t.Errorf("lease status %q, want active", info.Status)
	}
	v.json(http.MethodPost, "/api/sm/v1/dynamic/leases/"+lease.LeaseID+"/renew", tok, map[string]any{"ttl_seconds": 900}, oaValid, http.StatusOK, nil)
	v.json(http.MethodPost, "/api/sm/v1/dynamic/leases/"+lease.LeaseID+"/renew", tok, map[string]any{"ttl_seconds": 0}, oaInvalid, http.StatusBadRequest, nil)
	v.json(http.MethodPost, "/api/sm/v1/dynamic/lease", tok, map[string]any{"record_uid": uid, "ttl_seconds": 86401}, oaInvalid, http.StatusBadRequest, nil)
	v.json(http.MethodPost, "/api/sm/v1/dynamic/lease", tok, map[string]any{"record_uid": "NoSuchTarget", "ttl_seconds": 60}, oaValid, http.StatusNotFound, nil)

	// Clients.
	pubDERPEM, privDERPEM := mustKeyPair(t)
	var app client.AppClient
	v.json(http.MethodPost, "/api/sm/v1/clients", tok, map[string]any{"name": "openapi-app", "role": "app", "allowed_records": []string{uid},
		"max_ttl_seconds": 600, "max_leases": 1, "public_key": pubDERPEM}, oaValid, http.StatusCreated, &app)
	v.json(http.MethodPost, "/api/sm/v1/clients", tok, map[string]any{"name": "x", "role": "root", "public_key": "x"}, oaInvalid, http.StatusBadRequest, nil)
	v.json(http.MethodGet, "/api/sm/v1/clients", tok, nil, oaValid, http.StatusOK, nil)
	v.json(http.MethodGet, "/api/sm/v1/clients/"+app.ClientID, tok, nil, oaValid, http.StatusOK, nil)
	v.json(http.MethodPut, "/api/sm/v1/clients/"+app.ClientID, tok, map[string]any{"name": "openapi-app", "role": "app", "allowed_records": []string{uid},
		"max_ttl_seconds": 900, "max_leases": 1, "public_key": pubDERPEM}, oaValid, http.StatusOK, &app)
	v.json(http.MethodPut, "/api/sm/v1/clients/"+app.ClientID, tok, map[string]any{"name": "openapi-app", "role": "app", "max_leases": -1,
		"public_key": pubDERPEM}, oaInvalid, http.StatusBadRequest, nil)
	// 412: an update on a version the client has moved on from.
	v.ifMatch = `"1"`
	v.json(http.MethodPut, "/api/sm/v1/clients/"+app.ClientID, tok, map[string]any{"name": "openapi-app", "role": "app", "allowed_records": []string{uid},
		"max_ttl_seconds": 900, "max_leases": 1, "public_key": pubDERPEM}, oaValid, http.StatusPreconditionFailed, nil)
	v.ifMatch = ""
	appClient, err := client.New(srv.HTTP.URL(), app.ClientID, privDERPEM)
	if err != nil {
		t.Fatal(err)
	}
	appTok := v.token(appClient)
	// 403: an app client on the admin API; 404: another client's lease.
	v.json(http.MethodGet, "/api/sm/v1/dynamic/targets", appTok, nil, oaValid, http.StatusForbidden, nil)
	v.json(http.MethodGet, "/api/sm/v1/clients", appTok, nil, oaValid, http.StatusForbidden, nil)
	v.json(http.MethodGet, "/api/sm/v1/audit", appTok, nil, oaValid, http.StatusForbidden, nil)
	v.json(http.MethodGet, "/api/sm/v1/dynamic/leases/"+lease.LeaseID, appTok, nil, oaValid, http.StatusNotFound, nil)
	v.json(http.MethodGet, "/api/sm/v1/dynamic/leases", appTok, nil, oaValid, http.StatusOK, nil)
	// 429: one lease past the client's max_leases (its lease goes with the target).
	v.json(http.MethodPost, "/api/sm/v1/dynamic/lease", appTok, map[string]any{"record_uid": uid, "ttl_seconds": 600}, oaValid, http.StatusCreated, nil)
	v.json(http.MethodPost, "/api/sm/v1/dynamic/lease", appTok, map[string]any{"record_uid": uid, "ttl_seconds": 600}, oaValid, http.StatusTooManyRequests, nil)
	// Dashboard login links: an admin's, never an app client's.
	var link client.LoginLink
	v.json(http.MethodPost, "/api/sm/v1/ui/login-links", tok, nil, oaValid, http.StatusCreated, &link)
	if !strings.HasPrefix(link.URL, srv.HTTP.PublicURL()+"/ui/login#code=") || !strings.HasSuffix(link.URL, link.Path) {
		t.Errorf("login link %+v", link)
	}
	v.json(http.MethodPost, "/api/sm/v1/ui/login-links", appTok, nil, oaValid, http.StatusForbidden, nil)

	// Error answers.
	v.call(http.MethodPost, "/api/sm/v1/dynamic/lease", tok, "application/json", []byte(`{"record_uid": "`+uid+`", `), oaInvalid, http.StatusBadRequest)
	v.json(http.MethodPost, "/api/sm/v1/dynamic/lease", tok, map[string]any{"record_uid": uid, "ttl_seconds": 60, "extra": 1}, oaInvalid, http.StatusBadRequest, nil)
	v.json(http.MethodGet, "/api/sm/v1/dynamic/leases", "", nil, oaValid, http.StatusUnauthorized, nil)
	v.json(http.MethodGet, "/api/sm/v1/dynamic/leases", "not-a-token", nil, oaValid, http.StatusUnauthorized, nil)
	unknown := uuid.Must(uuid.NewV7()).String()
	v.json(http.MethodGet, "/api/sm/v1/dynamic/leases/"+unknown, tok, nil, oaValid, http.StatusNotFound, nil)
	v.json(http.MethodDelete, "/api/sm/v1/dynamic/leases/"+unknown, tok, nil, oaValid, http.StatusNotFound, nil)
	v.json(http.MethodPost, "/api/sm/v1/dynamic/leases/"+unknown+"/renew", tok, map[string]any{"ttl_seconds": 60}, oaValid, http.StatusNotFound, nil)
	// Over 64 KiB, the body is refused as too large before the record uid is read.
	big := []byte(`{"record_uid": "` + strings.Repeat("a", syhttp.MaxBodyBytes+1024) + `", "ttl_seconds": 60}`)
	v.call(http.MethodPost, "/api/sm/v1/dynamic/lease", tok, "application/json", big, oaInvalid, http.StatusRequestEntityTooLarge)
	// 409: a target with an active lease.
	v.json(http.MethodDelete, "/api/sm/v1/dynamic/targets/"+uid, tok, nil, oaValid, http.StatusConflict, nil)
	v.json(http.MethodDelete, "/api/sm/v1/dynamic/targets/"+uid+"?revoke_leases=maybe", tok, nil, oaInvalid, http.StatusBadRequest, nil)
	v.json(http.MethodDelete, "/api/sm/v1/dynamic/targets/"+uid+"?force=true", tok, nil, oaValid, http.StatusBadRequest, nil)
	v.json(http.MethodDelete, "/api/sm/v1/dynamic/leases/"+unknown+"?force=maybe", tok, nil, oaInvalid, http.StatusBadRequest, nil)
	// A forced revocation whose drop finishes answers the lease as it ended, not abandoned.
	forced := mustLease(t, admin, uid, 60)
	var ended client.LeaseInfo
	v.json(http.MethodDelete, "/api/sm/v1/dynamic/leases/"+forced.LeaseID+"?force=true", tok, nil, oaValid, http.StatusOK, &ended)
	if ended.Status != "revoked" || ended.Abandoned || ended.EndedAt == nil {
		t.Errorf("a forced revocation that dropped its user answered %+v", ended)
	}

	// Audit.
	since := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	var audit struct {
		Data []map[string]any `json:"data"`
	}
	v.json(http.MethodGet, "/api/sm/v1/audit?since="+since+"&record_uid="+uid+"&limit=1000", tok, nil, oaValid, http.StatusOK, &audit)
	if len(audit.Data) == 0 {
		t.Error("the audit shows no event of the target")
	}
	v.json(http.MethodGet, "/api/sm/v1/audit?limit=2", tok, nil, oaValid, http.StatusOK, nil)
	v.json(http.MethodGet, "/api/sm/v1/audit?lease_id="+lease.LeaseID, tok, nil, oaValid, http.StatusOK, nil)
	v.json(http.MethodGet, "/api/sm/v1/audit?since=yesterday", tok, nil, oaInvalid, http.StatusBadRequest, nil)

	// Revoke, then the lease shows its end, a second revoke is 404, and the target goes.
	v.json(http.MethodDelete, "/api/sm/v1/dynamic/leases/"+lease.LeaseID, tok, nil, oaValid, http.StatusNoContent, nil)
	revoked = true
	v.json(http.MethodGet, "/api/sm/v1/dynamic/leases/"+lease.LeaseID, tok, nil, oaValid, http.StatusOK, &info)
	if info.Status != "revoked" || info.EndedAt == nil {
		t.Errorf("after revoke: status %q, ended_at %v; want revoked with ended_at", info.Status, info.EndedAt)
	}
	v.json(http.MethodDelete, "/api/sm/v1/dynamic/leases/"+lease.LeaseID, tok, nil, oaValid, http.StatusNotFound, nil)
	v.json(http.MethodDelete, "/api/sm/v1/dynamic/targets/"+uid+"?revoke_leases=true", tok, nil, oaValid, http.StatusNoContent, nil)

	// Deleting clients: not oneself (409); another one, once.
	data, err := os.ReadFile(filepath.Join(srv.Dir, AdminClientFile))
	if err != nil {
		t.Fatal(err)
	}
	var ac AdminClient
	if err := json.Unmarshal(data, &ac); err != nil {
		t.Fatal(err)
	}
	v.json(http.MethodDelete, "/api/sm/v1/clients/"+ac.ClientID, tok, nil, oaValid, http.StatusConflict, nil)
	v.json(http.MethodDelete, "/api/sm/v1/clients/"+app.ClientID, tok, nil, oaValid, http.StatusNoContent, nil)
	v.json(http.MethodGet, "/api/sm/v1/clients/"+app.ClientID, tok, nil, oaValid, http.StatusNotFound, nil)
	v.json(http.MethodGet, "/api/sm/v1/dynamic/leases", appTok, nil, oaValid, http.StatusUnauthorized, nil)

	// Every documented operation was exercised.
	for path, item := range v.doc.Paths.Map() {
		for method, op := range item.Operations() {
			if !v.exercised[op.OperationID] {
				t.Errorf("%s %s (%s) is documented but this test never calls it", method, path, op.OperationID)
			}
		}
	}
}

// TestOpenAPI_NotReady: a process without workers, and no other one pulling lease work,
// answers /readyz with 503 and its checks, as the document says.
func TestOpenAPI_NotReady(t *testing.T) {
	srv := mustServer(t, "", func(c *Config) { c.Components = []string{"api"} })
	v := newOAChecker(t, srv.HTTP.URL())
	var body struct {
		Error  string            `json:"error"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal(v.call(http.MethodGet, "/readyz", "", "", nil, oaValid, http.StatusServiceUnavailable), &body); err != nil {
		t.Fatal(err)
	}
	if body.Error != "unavailable" || body.Checks["workers"] != "failing" {
		t.Errorf("readyz: %+v, want unavailable with workers failing", body)
	}
}
