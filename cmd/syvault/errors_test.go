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
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	syhttp "github.com/syvault/syvault/http"
	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/internal/seal"
)

// raw sends a request with a raw body and token and returns status and decoded error.
func raw(t *testing.T, srv *testServer, method, path, token, contentType string, body []byte) (int, map[string]any) {
	t.Helper()
	resp, out := send(t, srv, method, path, token, contentType, body)
	return resp.StatusCode, out
}

// rawResponse sends a request without a body and returns the response (its body read)
// and its decoded error.
func rawResponse(t *testing.T, srv *testServer, method, path, token string) (*http.Response, map[string]any) {
	t.Helper()
	return send(t, srv, method, path, token, "", nil)
}

func send(t *testing.T, srv *testServer, method, path, token, contentType string, body []byte) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, srv.HTTP.URL()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(data) > 0 {
		if err := json.Unmarshal(data, &out); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %q", method, path, data)
		}
	}
	return resp, out
}

// registerClient appends a client the way client management does, for tests that need
// an app client before the clients API exists.
func registerClient(t *testing.T, srv *testServer, role string, allowed []string, maxTTL int) *client.Client {
	t.Helper()
	ctx := context.Background()
	pubDERPEM, privDERPEM := mustKeyPair(t)
	c := events.Client{ClientID: uuid.NewString(), Name: "app", Role: role, AllowedRecords: allowed, MaxTTLSeconds: maxTTL,
		PublicKey: pubDERPEM, CreatedAt: time.Now().UTC()}
	seq, err := srv.store.Append(ctx, events.ClientSubject(c.ClientID), events.RegisterClient(c, c.ClientID, c.CreatedAt), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.proj.WaitClient(ctx, c.ClientID, seq); err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(srv.HTTP.URL(), c.ClientID, privDERPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// TestErrors walks API.md's error table: each row, each answer a JSON error with a
// stable code and a message, and nothing changed by a refused request.
func TestErrors(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	tg := eng.target(t)
	tg.MaxTTLSeconds = 600
	target := mustRegister(t, admin, tg)
	token, err := admin.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leasePath := syhttp.BasePath + "/dynamic/lease"
	lease := func(body string) (int, map[string]any) {
		return raw(t, srv, "POST", leasePath, token, "application/json", []byte(body))
	}
	uid := target.RecordUID

	t.Run("400 invalid_request", func(t *testing.T) {
		for name, body := range map[string]string{
			"malformed JSON":     `{"record_uid": "` + uid + `", "ttl_seconds": 60`,
			"not an object":      `[1, 2]`,
			"unknown field":      `{"record_uid": "` + uid + `", "ttl_seconds": 60, "role": "admin"}`,
			"missing record_uid": `{"ttl_seconds": 60}`,
			// Refused before the authorization records a refusal naming it in the audit log.
			"record_uid with a terminal escape": `{"record_uid": "x\u001b[2K\u001b[1A", "ttl_seconds": 60}`,
			"missing ttl":                       `{"record_uid": "` + uid + `"}`,
			"ttl as a string":                   `{"record_uid": "` + uid + `", "ttl_seconds": "60"}`,
			"ttl as a float":                    `{"record_uid": "` + uid + `", "ttl_seconds": 60.5}`,
			"trailing data":                     `{"record_uid": "` + uid + `", "ttl_seconds": 60} {}`,
			"empty body":                        ``,
			"null":                              `null`,
		} {
			t.Run(name, func(t *testing.T) {
				status, body := lease(body)
				if status != 400 || body["error"] != "invalid_request" || body["message"] == "" {
					t.Fatalf("%d %v", status, body)
				}
			})
		}
		status, body := raw(t, srv, "POST", leasePath, token, "text/plain", []byte(`{"record_uid": "`+uid+`", "ttl_seconds": 60}`))
		if status != 400 || body["error"] != "invalid_request" {
			t.Fatalf("wrong content type: %d %v", status, body)
		}
		status, body = raw(t, srv, "GET", syhttp.BasePath+"/dynamic/leases?limit=0", token, "", nil)
		if status != 400 || body["error"] != "invalid_request" {
			t.Fatalf("limit=0: %d %v", status, body)
		}
	})
	t.Run("400 invalid_ttl", func(t *testing.T) {
		for _, ttl := range []string{"0", "-1", "86401", "601"} {
			status, body := lease(`{"record_uid": "` + uid + `", "ttl_seconds": ` + ttl + `}`)
			if status != 400 || body["error"] != "invalid_ttl" || body["message"] == "" {
				t.Fatalf("ttl %s: %d %v", ttl, status, body)
			}
		}
	})
	t.Run("401 unauthenticated", func(t *testing.T) {
		data, _ := os.ReadFile(filepath.Join(srv.Dir, AdminClientFile))
		var ac AdminClient
		_ = json.Unmarshal(data, &ac)
		claims := func(exp time.Time) jwt.RegisteredClaims {
			return jwt.RegisteredClaims{Issuer: "syvault", Subject: ac.ClientID, Audience: jwt.ClaimStrings{"syvault"}, ExpiresAt: jwt.NewNumericDate(exp)}
		}
		kid, _ := srv.tokens.Signing()
		// A well-formed token for the real admin, signed with key under the key id kid.
		sign := func(kid string, key []byte, exp time.Time) string {
			tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(exp))
			if kid != "" {
				tok.Header["kid"] = kid
			}
			s, err := tok.SignedString(key)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		ctoken := func(exp time.Time) string { return srv.forgeToken(t, claims(exp)) }
		if status, _ := raw(t, srv, "GET", syhttp.BasePath+"/dynamic/leases", ctoken(time.Now().Add(time.Minute)), "", nil); status != 200 {
			t.Fatalf("control: a valid token got %d", status)
		}
		for name, tok := range map[string]string{
			"no token":              "",
			"garbage":               "not.a.token",
			"expired":               ctoken(time.Now().Add(-time.Hour)),
			"signed by another key": sign(kid, seal.NewKey(), time.Now().Add(time.Minute)),
			"unknown key id":        sign("0123456789abcdef", seal.NewKey(), time.Now().Add(time.Minute)),
			"no key id":             sign("", seal.NewKey(), time.Now().Add(time.Minute)),
			"alg none":              "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + strings.Split(ctoken(time.Now().Add(time.Minute)), ".")[1] + ".",
		} {
			status, body := raw(t, srv, "GET", syhttp.BasePath+"/dynamic/leases", tok, "", nil)
			if status != 401 || body["error"] != "unauthenticated" || body["message"] == "" {
				t.Fatalf("%s: %d %v", name, status, body)
			}
		}
	})
	t.Run("401 token endpoint", func(t *testing.T) {
		assertion, err := admin.Assertion()
		if err != nil {
			t.Fatal(err)
		}
		form := func(a string) []byte {
			return []byte(url.Values{"grant_type": {"client_credentials"},
				"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {a}}.Encode())
		}
		path := syhttp.BasePath + "/auth/token"
		if status, _ := raw(t, srv, "POST", path, "", "application/x-www-form-urlencoded", form(assertion)); status != 200 {
			t.Fatalf("first use of an assertion: %d", status)
		}
		if status, body := raw(t, srv, "POST", path, "", "application/x-www-form-urlencoded", form(assertion)); status != 401 || body["error"] != "unauthenticated" {
			t.Fatalf("replayed jti: %d %v", status, body)
		}
		if status, body := raw(t, srv, "POST", path, "", "application/x-www-form-urlencoded", []byte("grant_type=password")); status != 400 || body["error"] != "invalid_request" {
			t.Fatalf("wrong grant: %d %v", status, body)
		}
	})
	t.Run("403 forbidden", func(t *testing.T) {
		app := registerClient(t, srv, events.RoleApp, []string{"AAAAAAAAAAAA"}, 0)
		_, err := app.ListTargets(ctx)
		mustCode(t, err, 403, "forbidden")
		_, err = app.CreateLease(ctx, uid, 60)
		mustCode(t, err, 403, "forbidden")
	})
	t.Run("404 not_found", func(t *testing.T) {
		_, err := admin.CreateLease(ctx, "NoSuchRecord", 60)
		mustCode(t, err, 404, "not_found")
		_, err = admin.GetLease(ctx, uuid.NewString())
		mustCode(t, err, 404, "not_found")
		mustCode(t, admin.RevokeLease(ctx, uuid.NewString()), 404, "not_found")
		mustCode(t, admin.RevokeLease(ctx, "not a uuid"), 404, "not_found")
		_, err = admin.GetTarget(ctx, "NoSuchRecord")
		mustCode(t, err, 404, "not_found")
		if status, body := raw(t, srv, "GET", "/api/sm/v1/nope", token, "", nil); status != 404 || body["error"] != "not_found" {
			t.Fatalf("unknown route: %d %v", status, body)
		}
	})
	t.Run("413 too_large", func(t *testing.T) {
		big := `{"record_uid": "` + uid + `", "ttl_seconds": 60, "x": "` + strings.Repeat("a", 70<<10) + `"}`
		status, body := lease(big)
		if status != 413 || body["error"] != "too_large" || body["message"] == "" {
			t.Fatalf("%d %v", status, body)
		}
		// Chunked, with no Content-Length: refused while the body is read.
		req, err := http.NewRequest("POST", srv.HTTP.URL()+leasePath, io.MultiReader(strings.NewReader(big)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var chunked map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&chunked)
		if resp.StatusCode != 413 || req.ContentLength != 0 || chunked["error"] != "too_large" {
			t.Fatalf("chunked: %d %v (content length %d)", resp.StatusCode, chunked, req.ContentLength)
		}
	})
	t.Run("422 target_unverified", func(t *testing.T) {
		bad := eng.target(t)
		bad.Grants[0].Tables = []string{"no_such_table"}
		_, err := admin.CreateTarget(ctx, bad)
		mustCode(t, err, 422, "target_unverified")
	})
	// Registration is where an operator learns what is wrong with a target: every
	// verification failure is a 422 whose message names what to fix.
	t.Run("422 target_unverified: nothing listens at the address", func(t *testing.T) {
		bad := eng.target(t)
		bad.Port = 1
		_, err := admin.CreateTarget(ctx, bad)
		mustCode(t, err, 422, "target_unverified")
		mustMention(t, err, "port")
	})
	t.Run("422 target_unverified: the admin login is refused", func(t *testing.T) {
		// MariaDB checks passwords; the local PostgreSQL trusts local logins.
		bad := mysqlEngine(t).target(t)
		bad.AdminPassword = "wrong-" + randomSecret()
		_, err := admin.CreateTarget(ctx, bad)
		mustCode(t, err, 422, "target_unverified")
		mustMention(t, err, "admin_password")
	})
	t.Run("422 target_unverified: the host does not resolve", func(t *testing.T) {
		bad := eng.target(t)
		bad.Host = "no-such-host.invalid"
		_, err := admin.CreateTarget(ctx, bad)
		mustCode(t, err, 422, "target_unverified")
		mustMention(t, err, "host")
	})
	t.Run("405 method_not_allowed, with Allow, before authentication", func(t *testing.T) {
		for _, tc := range []struct{ method, path, allow string }{
			{"DELETE", leasePath, "POST"},
			{"POST", syhttp.BasePath + "/dynamic/leases", "GET"},
			{"PATCH", syhttp.BasePath + "/dynamic/leases/" + uuid.NewString(), "DELETE, GET"},
			{"PUT", syhttp.BasePath + "/dynamic/targets", "GET, POST"},
		} {
			for _, tok := range []string{"", token} {
				resp, body := rawResponse(t, srv, tc.method, tc.path, tok)
				if resp.StatusCode != 405 || body["error"] != "method_not_allowed" || resp.Header.Get("Allow") != tc.allow {
					t.Fatalf("%s %s: %d Allow=%q %v; want 405 Allow=%q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Allow"), body, tc.allow)
				}
				mustMention(t, errorOf(body), tc.allow)
			}
		}
	})
	t.Run("401 names its scheme", func(t *testing.T) {
		for _, tok := range []string{"", "not-a-token"} {
			resp, body := rawResponse(t, srv, "GET", syhttp.BasePath+"/dynamic/leases", tok)
			if resp.StatusCode != 401 || body["error"] != "unauthenticated" || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
				t.Fatalf("%d WWW-Authenticate=%q %v", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
			}
		}
	})
	t.Run("409 conflict: a name in use", func(t *testing.T) {
		dup := eng.target(t)
		dup.Name = "  " + strings.ToUpper(target.Name) + " "
		_, err := admin.CreateTarget(ctx, dup)
		mustCode(t, err, 409, "conflict")
		mustMention(t, err, target.RecordUID)
		other := mustRegister(t, admin, eng.target(t))
		otherUID := other.RecordUID
		other.Name, other.RecordUID, other.CreatedAt = target.Name, "", time.Time{}
		_, err = admin.UpdateTarget(ctx, otherUID, withPassword(*other, dup.AdminPassword))
		mustCode(t, err, 409, "conflict")
		mustMention(t, err, target.RecordUID)
		if err := admin.DeleteTarget(ctx, otherUID, false); err != nil {
			t.Fatal(err)
		}
		pub, _ := mustKeyPair(t)
		_, err = admin.CreateClient(ctx, client.AppClient{Name: "Admin", PublicKey: pub, Role: events.RoleAdmin})
		mustCode(t, err, 409, "conflict")
		mustMention(t, err, srv.adminClient(t).ClientID)
	})
	t.Run("422 target_unverified: every missing admin right named at once", func(t *testing.T) {
		for _, tc := range []struct {
			eng  engine
			want []string
		}{
			{eng, []string{"CREATEROLE", "pg_signal_backend", "USAGE on the schema", "SELECT on granted"}},
			{mysqlEngine(t), []string{"CREATE USER", "PROCESS", "CONNECTION ADMIN", "WITH GRANT OPTION", "GRANT "}},
		} {
			bad := tc.eng.target(t)
			bad.AdminUsername, bad.AdminPassword = bareAdmin(t, tc.eng)
			_, err := admin.CreateTarget(ctx, bad)
			mustCode(t, err, 422, "target_unverified")
			for _, w := range tc.want {
				mustMention(t, err, w)
			}
			if strings.Contains(err.Error(), bad.AdminPassword) {
				t.Fatalf("the refusal holds the admin password: %v", err)
			}
		}
	})
	t.Run("refused requests changed nothing", func(t *testing.T) {
		page, err := admin.ListLeases(ctx, client.ListLeasesOptions{})
		if err != nil || len(page.Data) != 0 {
			t.Fatalf("leases: %+v %v", page, err)
		}
		ts, err := admin.ListTargets(ctx)
		if err != nil || len(ts) != 1 {
			t.Fatalf("targets: %d %v", len(ts), err)
		}
		// The admin client, the target, the app client, and the app client's refused lease
		// request (audited): nothing else was recorded.
		var types []string
		err = srv.store.Replay(ctx, 1, nil, func(m jetstream.Msg) error {
			e, err := events.Decode(m.Data())
			types = append(types, string(e.Type))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		// The other target of the 409 test came and went.
		if got := strings.Join(types, " "); got != "client.registered target.registered client.registered access.denied target.registered target.removed" {
			t.Fatalf("events recorded: %s", got)
		}
	})
	t.Run("503 unavailable", func(t *testing.T) {
		srv.ns.Shutdown()
		status, body := raw(t, srv, "GET", syhttp.BasePath+"/dynamic/leases", token, "", nil)
		if status != 503 || body["error"] != "unavailable" || body["message"] == "" {
			t.Fatalf("%d %v", status, body)
		}
		if status, _ := raw(t, srv, "GET", "/readyz", "", "", nil); status != 503 {
			t.Fatalf("readyz with the event store down: %d", status)
		}
		if status, _ := raw(t, srv, "GET", "/healthz", "", "", nil); status != 200 {
			t.Fatalf("healthz with the event store down: %d", status)
		}
	})
}

// errorOf turns a decoded error body into an error for mustMention.
func errorOf(body map[string]any) error {
	msg, _ := body["message"].(string)
	code, _ := body["error"].(string)
	return &client.Error{Code: code, Message: msg}
}

// withPassword is t with its admin password set, as an update needs one.
func withPassword(t client.Target, pw string) client.Target {
	t.AdminPassword = pw
	return t
}

// bareAdmin creates a login with no right beyond logging in, on eng.
func bareAdmin(t *testing.T, eng engine) (user, password string) {
	t.Helper()
	user, password = "sv_bare_"+strings.ToLower(randomSecret()[:8]), "bare-"+randomSecret()
	stmt, drop := "CREATE ROLE "+user+" LOGIN PASSWORD '"+password+"'", "DROP ROLE IF EXISTS "+user
	if eng.name == "mysql" {
		stmt, drop = "CREATE USER '"+user+"'@'%' IDENTIFIED BY '"+password+"'", "DROP USER IF EXISTS '"+user+"'@'%'"
	}
	if err := eng.admin(context.Background(), stmt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.admin(context.Background(), drop) })
	return user, password
}
