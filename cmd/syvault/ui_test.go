package main

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/syvault/syvault/cmd/sy/cli"
	syhttp "github.com/syvault/syvault/http"
	"github.com/syvault/syvault/http/client"
)

// uiFixture is a server with a target, leases on it, an app client, and a way to log a
// browser in.
type uiFixture struct {
	t      *testing.T
	srv    *testServer
	eng    engine
	admin  *client.Client
	sy     syRunner
	target *client.Target
	leases []*client.Lease
	// secrets that no page or answer of the dashboard may hold.
	secrets map[string]string
}

func newUIFixture(t *testing.T) *uiFixture {
	t.Helper()
	eng := postgresEngine(t)
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	tg := eng.target(t)
	f := &uiFixture{t: t, srv: srv, eng: eng, admin: admin, target: mustRegister(t, admin, tg),
		sy:      syRunner{t, map[string]string{cli.EnvCredentialsFile: filepath.Join(srv.Dir, AdminClientFile)}},
		secrets: map[string]string{"the target's admin password": tg.AdminPassword}}
	ac := srv.adminClient(t)
	f.secrets["the admin's private key"] = pemBody(ac.PrivateKey)
	tok, err := admin.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.secrets["the admin's access token"] = tok
	for range 2 {
		l := mustLease(t, admin, f.target.RecordUID, 900)
		f.leases = append(f.leases, l)
		f.secrets["lease password of "+l.Username] = l.Password
	}
	return f
}

// pemBody is the base64 inside a PEM block, the part a leak would show.
func pemBody(p string) string {
	lines := strings.Split(strings.TrimSpace(p), "\n")
	return strings.Join(lines[1:len(lines)-1], "")
}

// loginLink runs `sy ui --no-browser` and returns the link it prints.
func (f *uiFixture) loginLink() string {
	f.t.Helper()
	out := strings.TrimSpace(f.sy.ok("ui", "--no-browser"))
	if !strings.HasPrefix(out, f.srv.HTTP.URL()+syhttp.UIPath+"/login#code=") || strings.Contains(out, "\n") {
		f.t.Fatalf("sy ui --no-browser printed %q, want one login link", out)
	}
	return out
}

// mustNotLeak fails if body holds any secret of the fixture.
func (f *uiFixture) mustNotLeak(what string, body []byte) {
	f.t.Helper()
	for name, s := range f.secrets {
		if s != "" && strings.Contains(string(body), s) {
			f.t.Errorf("%s holds %s", what, name)
		}
	}
}

// browser is an HTTP client with a cookie jar, standing in for a browser where the test
// looks at raw answers (headers, statuses).
type browser struct {
	t   *testing.T
	c   *http.Client
	f   *uiFixture
	url string
}

func (f *uiFixture) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: f.t, f: f, url: f.srv.HTTP.URL(), c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

// do sends a request and checks the headers every dashboard answer carries, and that it
// holds no secret.
func (b *browser) do(req *http.Request) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		b.t.Fatal(err)
	}
	what := req.Method + " " + req.URL.Path
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'self'"} {
		if !strings.Contains(csp, want) {
			b.t.Errorf("%s: Content-Security-Policy %q lacks %q", what, csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		b.t.Errorf("%s: Content-Security-Policy %q allows something unsafe", what, csp)
	}
	for h, want := range map[string]string{"X-Frame-Options": "DENY", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
		if got := resp.Header.Get(h); got != want {
			b.t.Errorf("%s: %s = %q, want %q", what, h, got, want)
		}
	}
	b.f.mustNotLeak(what, data)
	for _, c := range resp.Cookies() {
		b.f.mustNotLeak(what+" cookie", []byte(c.Value))
	}
	return resp, string(data)
}

func (b *browser) get(path string) (*http.Response, string) {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.abs(path), nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

func (b *browser) post(path string, form url.Values, header ...string) (*http.Response, string) {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.abs(path), strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return b.do(req)
}

func (b *browser) abs(path string) string {
	if strings.HasPrefix(path, "http") {
		return path
	}
	return b.url + path
}

// follow does what a browser does with a login link: it opens the page, which sets no
// cookie, and sends its form with the code the link holds after its "#" (the page's
// script does that), returning the form's answer.
func (b *browser) follow(link string) (*http.Response, string) {
	b.t.Helper()
	resp, body := b.get(link)
	mustPage(b.t, "the login link's page", resp, body, http.StatusOK, `action="/ui/login"`)
	if len(resp.Cookies()) != 0 {
		b.t.Fatal("opening a login link set a cookie")
	}
	return b.post("/ui/login", url.Values{"code": {codeOf(b.t, link)}}, "Sec-Fetch-Site", "same-origin")
}

// codeOf is the code a login link holds after its "#".
func codeOf(t *testing.T, link string) string {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	q, err := url.ParseQuery(u.Fragment)
	if err != nil || q.Get("code") == "" || u.RawQuery != "" {
		t.Fatalf("the login link %q holds no code after its #, or has a query", link)
	}
	return q.Get("code")
}

// login opens a fresh login link and returns the session cookie it set.
func (b *browser) login() *http.Cookie {
	b.t.Helper()
	resp, _ := b.follow(b.f.loginLink())
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("login link: status %d", resp.StatusCode)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "syvault_session" {
			return c
		}
	}
	b.t.Fatal("the login link set no session cookie")
	return nil
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf returns the anti-forgery token a page's forms carry.
func (b *browser) csrf(page string) string {
	b.t.Helper()
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		b.t.Fatal("the page has no form with an anti-forgery token")
	}
	return m[1]
}

func mustPage(t *testing.T, what string, resp *http.Response, body string, status int, mention string) {
	t.Helper()
	if resp.StatusCode != status || !strings.Contains(body, mention) {
		t.Fatalf("%s: status %d, want %d with %q in:\n%s", what, resp.StatusCode, status, mention, body)
	}
}

// TestUI_Security: the dashboard's session, CSRF, headers and refusals, over raw HTTP.
func TestUI_Security(t *testing.T) {
	f := newUIFixture(t)
	ctx := context.Background()
	lease := f.leases[0]
	b := f.browser()

	t.Run("no session", func(t *testing.T) {
		for _, p := range []string{"/ui/", "/ui/leases", "/ui/leases/" + lease.LeaseID, "/ui/audit", "/ui/activity"} {
			resp, body := b.get(p)
			mustPage(t, p, resp, body, http.StatusUnauthorized, "sy ui")
		}
		resp, body := b.post("/ui/leases/"+lease.LeaseID+"/revoke", url.Values{"csrf": {"x"}})
		mustPage(t, "revoke", resp, body, http.StatusUnauthorized, "sy ui")
	})

	link := f.loginLink()
	var cookie *http.Cookie
	t.Run("login link", func(t *testing.T) {
		// Opening the link spends nothing (a link previewer or a mail scanner fetching it
		// left its owner a used link), however often.
		for range 2 {
			resp, body := f.browser().get(link)
			mustPage(t, "the link opened by another", resp, body, http.StatusOK, `name="code" value=""`)
		}
		// Only the login page's own form logs in: another site's would log its visitor in
		// as the link's client (so would its script, sent to the page by another site: it
		// then waits for a click under a warning). Refused so, the code is not spent.
		resp, body := f.browser().post("/ui/login", url.Values{"code": {codeOf(t, link)}}, "Sec-Fetch-Site", "cross-site")
		mustPage(t, "the code sent from another site", resp, body, http.StatusForbidden, "another site")
		resp, body = f.browser().post("/ui/login", url.Values{"code": {codeOf(t, link)}}, "Origin", "https://elsewhere.example")
		mustPage(t, "the code sent from another origin by an older browser", resp, body, http.StatusForbidden, "another site")
		req, _ := http.NewRequest(http.MethodGet, link, nil)
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		resp, body = f.browser().do(req)
		mustPage(t, "the link opened from another site", resp, body, http.StatusOK, "opened from another site")
		if strings.Contains(body, "data-auto") {
			t.Error("the page of a link another site sent the browser to logs in by itself")
		}
		req.Header.Set("Sec-Fetch-Site", "none")
		if resp, body = f.browser().do(req); !strings.Contains(body, "data-auto") {
			t.Errorf("the page of a link opened from nowhere else waits for a click (status %d)", resp.StatusCode)
		}
		resp, body = b.follow(link)
		mustPage(t, "login", resp, body, http.StatusOK, "logged in as <strong>")
		for _, c := range resp.Cookies() {
			if c.Name == "syvault_session" {
				cookie = c
			}
		}
		if cookie == nil {
			t.Fatal("no session cookie")
		}
		raw := resp.Header.Get("Set-Cookie")
		if !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/ui" || cookie.Secure {
			t.Errorf("cookie %q: want HttpOnly, SameSite=Strict, Path=/ui, not Secure over plain HTTP", raw)
		}
		if left := time.Until(cookie.Expires); left < 14*time.Minute || left > 15*time.Minute+time.Second {
			t.Errorf("cookie expires in %v, want the access token's 15m", left)
		}
		// The link works once.
		resp, body = f.browser().follow(link)
		mustPage(t, "the link again", resp, body, http.StatusUnauthorized, "already used")
		if len(resp.Cookies()) != 0 {
			t.Error("a used link set a cookie")
		}
		resp, body = f.browser().post("/ui/login", url.Values{"code": {strings.Repeat("A", 26)}})
		mustPage(t, "an unknown code", resp, body, http.StatusUnauthorized, "sy ui")
		resp, body = f.browser().post("/ui/login", nil)
		mustPage(t, "no code", resp, body, http.StatusBadRequest, "no code")
		// A link giving its code in the query (as before) opens the same form, filled in.
		resp, body = f.browser().get("/ui/login?code=" + strings.Repeat("A", 26))
		mustPage(t, "a code in the query", resp, body, http.StatusOK, `name="code" value="`+strings.Repeat("A", 26)+`"`)
	})

	resp, page := b.get("/ui/leases")
	mustPage(t, "leases", resp, page, http.StatusOK, lease.Username)
	csrf := b.csrf(page)
	revoke := "/ui/leases/" + lease.LeaseID + "/revoke"
	stillActive := func(what string) {
		t.Helper()
		l, err := f.admin.GetLease(ctx, lease.LeaseID)
		if err != nil || l.Status != "active" || l.ExpiresAt != lease.ExpiresAt {
			t.Fatalf("after %s: lease %+v, %v; want it active and unchanged", what, l, err)
		}
	}

	t.Run("csrf", func(t *testing.T) {
		resp, body := b.post(revoke, nil)
		mustPage(t, "no token", resp, body, http.StatusForbidden, "reload the page")
		resp, body = b.post(revoke, url.Values{"csrf": {csrf + "x"}})
		mustPage(t, "a wrong token", resp, body, http.StatusForbidden, "reload the page")
		resp, body = b.post(revoke, url.Values{"csrf": {csrf}}, "Sec-Fetch-Site", "cross-site")
		mustPage(t, "from another site", resp, body, http.StatusForbidden, "another site")
		// Another session's token is no good either.
		other := f.browser()
		other.login()
		resp, body = other.post(revoke, url.Values{"csrf": {csrf}})
		mustPage(t, "another session's token", resp, body, http.StatusForbidden, "reload the page")
		stillActive("forged revocations")
	})

	t.Run("bad input", func(t *testing.T) {
		renew := "/ui/leases/" + lease.LeaseID + "/renew"
		for _, tc := range []struct {
			name, path string
			form       url.Values
			status     int
			mention    string
		}{
			{"ttl not a number", renew, url.Values{"ttl_seconds": {"soon"}}, http.StatusBadRequest, "ttl_seconds"},
			{"ttl zero", renew, url.Values{"ttl_seconds": {"0"}}, http.StatusBadRequest, "ttl_seconds"},
			{"ttl too long", renew, url.Values{"ttl_seconds": {"86401"}}, http.StatusBadRequest, "ttl_seconds"},
			{"unknown lease", "/ui/leases/0193f5c2-0000-7000-8000-000000000000/revoke", nil, http.StatusNotFound, "No lease"},
			{"wildcard id", "/ui/leases/%2A/revoke", nil, http.StatusNotFound, "No lease"},
			{"too large", renew, url.Values{"ttl_seconds": {"60"}, "pad": {strings.Repeat("x", syhttp.MaxBodyBytes)}}, http.StatusRequestEntityTooLarge, "larger"},
		} {
			form := url.Values{"csrf": {csrf}}
			for k, v := range tc.form {
				form[k] = v
			}
			resp, body := b.post(tc.path, form)
			mustPage(t, tc.name, resp, body, tc.status, tc.mention)
		}
		for _, p := range []string{"/ui/leases?status=expired", "/ui/leases?expiring=soon", "/ui/leases?limit=0", "/ui/leases?record_uid=a.b",
			"/ui/leases?cursor=x", "/ui/audit?since=yesterday", "/ui/audit?lease_id=*", "/ui/activity?hours=48"} {
			resp, body := b.get(p)
			mustPage(t, p, resp, body, http.StatusBadRequest, "must")
		}
		resp, body := b.get("/ui/nowhere")
		mustPage(t, "unknown page", resp, body, http.StatusNotFound, "no such page")
		stillActive("bad input")
	})

	t.Run("pages", func(t *testing.T) {
		for p, want := range map[string]string{
			"/ui/": f.target.Name, "/ui/leases?record_uid=" + f.target.RecordUID: lease.Username,
			"/ui/leases/" + lease.LeaseID: "lease.activated", "/ui/audit": "lease.requested", "/ui/activity": "<svg",
			"/ui/audit/events?cursor=0&since=": `"events"`, "/ui/static/app.css": "--brand", "/ui/static/audit.js": "textContent",
		} {
			resp, body := b.get(p)
			mustPage(t, p, resp, body, http.StatusOK, want)
		}
	})

	t.Run("renew", func(t *testing.T) {
		resp, body := b.post("/ui/leases/"+lease.LeaseID+"/renew", url.Values{"csrf": {csrf}, "ttl_seconds": {"1800"}})
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/leases/"+lease.LeaseID+"?done=renewed" {
			t.Fatalf("renew: %d %s %s", resp.StatusCode, resp.Header.Get("Location"), body)
		}
		l, err := f.admin.GetLease(ctx, lease.LeaseID)
		if err != nil || !l.ExpiresAt.After(lease.ExpiresAt) || l.TTLSeconds != 1800 {
			t.Fatalf("after renewing: %+v, %v", l, err)
		}
	})

	t.Run("session is no bearer token, nor a token a session", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, f.srv.HTTP.URL()+"/api/sm/v1/dynamic/leases", nil)
		req.Header.Set("Authorization", "Bearer "+cookie.Value)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("the session cookie as a bearer token: %d", resp.StatusCode)
		}
		tok := f.secrets["the admin's access token"]
		for name, c := range map[string]*http.Cookie{
			"an access token": {Name: "syvault_session", Value: tok},
			"an expired session": {Name: "syvault_session", Value: func() string {
				raw, _, err := syhttp.NewSession(f.srv.tokens, f.srv.adminClient(t).ClientID, "", -2*time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				return raw
			}()},
		} {
			req, _ := http.NewRequest(http.MethodGet, f.srv.HTTP.URL()+"/ui/", nil)
			req.AddCookie(c)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, body := f.browser().do(req)
			mustPage(t, name, resp, body, http.StatusUnauthorized, "sy ui")
		}
	})

	t.Run("app client", func(t *testing.T) {
		pub, priv := mustKeyPair(t)
		ac, err := f.admin.CreateClient(ctx, client.AppClient{Name: "ui-app", PublicKey: pub, Role: "app", AllowedRecords: []string{f.target.RecordUID}})
		if err != nil {
			t.Fatal(err)
		}
		app, err := client.New(f.srv.HTTP.URL(), ac.ClientID, priv)
		if err != nil {
			t.Fatal(err)
		}
		_, err = app.CreateLoginLink(ctx)
		mustCode(t, err, http.StatusForbidden, "forbidden")
		tok, err := app.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodGet, f.srv.HTTP.URL()+"/ui/", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, body := f.browser().do(req)
		mustPage(t, "an app client's bearer token", resp, body, http.StatusUnauthorized, "sy ui")
		// Even a session signed for it (it cannot get one) opens nothing.
		raw, _, err := syhttp.NewSession(f.srv.tokens, ac.ClientID, "", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"/ui/", "/ui/leases", "/ui/audit", "/ui/audit/events"} {
			req, _ = http.NewRequest(http.MethodGet, f.srv.HTTP.URL()+p, nil)
			req.AddCookie(&http.Cookie{Name: "syvault_session", Value: raw})
			resp, body = f.browser().do(req)
			mustPage(t, "an app client's session on "+p, resp, body, http.StatusForbidden, "admin clients only")
		}
	})

	t.Run("a new key ends the sessions and the login links had with the old one", func(t *testing.T) {
		pub, priv := mustKeyPair(t)
		ac, err := f.admin.CreateClient(ctx, client.AppClient{Name: "ui-admin-2", PublicKey: pub, Role: "admin"})
		if err != nil {
			t.Fatal(err)
		}
		second, err := client.New(f.srv.HTTP.URL(), ac.ClientID, priv)
		if err != nil {
			t.Fatal(err)
		}
		used, err := second.CreateLoginLink(ctx)
		if err != nil {
			t.Fatal(err)
		}
		unused, err := second.CreateLoginLink(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b2 := f.browser()
		resp, body := b2.follow(used.URL)
		mustPage(t, "login", resp, body, http.StatusOK, "logged in")
		resp, body = b2.get("/ui/")
		mustPage(t, "the second admin's session", resp, body, http.StatusOK, "")
		newPub, _ := mustKeyPair(t)
		if _, err := f.admin.UpdateClient(ctx, ac.ClientID, client.AppClient{Name: ac.Name, PublicKey: newPub, Role: "admin"}); err != nil {
			t.Fatal(err)
		}
		resp, body = b2.get("/ui/")
		mustPage(t, "the session had with the old key", resp, body, http.StatusUnauthorized, "sy ui")
		resp, body = f.browser().follow(unused.URL)
		mustPage(t, "a login link made with the old key", resp, body, http.StatusUnauthorized, "sy ui")
	})

	t.Run("revoke", func(t *testing.T) {
		resp, body := b.post(revoke, url.Values{"csrf": {csrf}})
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("revoke: %d %s", resp.StatusCode, body)
		}
		mustBeGone(t, f.eng, lease.Username, 0)
		resp, body = b.get(resp.Header.Get("Location"))
		mustPage(t, "the revoked lease", resp, body, http.StatusOK, "lease.dropped")
		resp, body = b.post(revoke, url.Values{"csrf": {csrf}})
		mustPage(t, "revoking again", resp, body, http.StatusNotFound, "already ended")
	})

	// Logging out only removed the cookie from the browser: a copy taken before (a
	// stolen cookie) was accepted until it expired. It ends the session now.
	t.Run("logout", func(t *testing.T) {
		home, _ := url.Parse(b.abs("/ui/"))
		kept := b.c.Jar.Cookies(home)
		resp, body := b.post("/ui/logout", url.Values{"csrf": {csrf}})
		mustPage(t, "logout", resp, body, http.StatusOK, "Logged out")
		resp, body = b.get("/ui/")
		mustPage(t, "after logout", resp, body, http.StatusUnauthorized, "sy ui")
		req, _ := http.NewRequest(http.MethodGet, home.String(), nil)
		for _, c := range kept {
			req.AddCookie(c)
		}
		resp, body = f.browser().do(req)
		mustPage(t, "the session's cookie kept from before the logout", resp, body, http.StatusUnauthorized, "logged out")
	})
}
