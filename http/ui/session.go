package ui

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/syvault/syvault/events"
	syhttp "github.com/syvault/syvault/http"
)

// cookieName is the session cookie. Its path is the dashboard's, so API requests never
// carry it.
const cookieName = "syvault_session"

// session is the client behind a request, with its anti-forgery token.
type session struct {
	Client events.Client
	CSRF   string
	id     string // the signed session's, for logging out
}

func unauthenticated(msg string) error { return events.Errorf(events.EUnauthenticated, "%s", msg) }

// sessionOf returns the request's session: EUnauthenticated without a valid one or when
// its client was removed, EForbidden for a client that is not an admin.
func (h *Handler) sessionOf(r *http.Request) (session, error) {
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" {
		return session{}, unauthenticated("You are not logged in to the dashboard: run 'sy ui' to open it with a one-time login link.")
	}
	s, err := syhttp.ParseSession(r.Context(), c.Value, h.cfg.Keys)
	if err != nil {
		return session{}, err
	}
	ended, err := h.cfg.Commands.SessionEnded(r.Context(), s.ClientID, s.ID)
	if err != nil {
		return session{}, err
	}
	if ended {
		return session{}, unauthenticated("This dashboard session was logged out; run 'sy ui' to log in again.")
	}
	client, err := h.cfg.Queries.Client(r.Context(), s.ClientID)
	if events.ErrorCode(err) == events.ENotFound {
		return session{}, unauthenticated("The session's client no longer exists; log in again with another admin client.")
	}
	if err != nil {
		return session{}, err
	}
	if !client.HoldsKey(s.Key) {
		return session{}, unauthenticated("The session was opened with a key its client no longer has; run 'sy ui' with the current key.")
	}
	if client.Role != events.RoleAdmin {
		return session{}, events.Errorf(events.EForbidden, "The dashboard is for admin clients only.")
	}
	return session{Client: client, CSRF: s.CSRF, id: s.ID}, nil
}

// authed admits requests with an admin session. Every request that changes state must
// also carry the session's anti-forgery token in its form, and must not come from
// another site: a page elsewhere cannot read the token, so it cannot make the browser
// revoke a lease.
func (h *Handler) authed(fn func(http.ResponseWriter, *http.Request, session) error) http.Handler {
	return h.handle(func(w http.ResponseWriter, r *http.Request) error {
		s, err := h.sessionOf(r)
		if err != nil {
			if events.ErrorCode(err) == events.EUnauthenticated {
				h.clearCookie(w, r)
			}
			return err
		}
		if r.Method == http.MethodPost {
			if err := checkForm(r, s); err != nil {
				return err
			}
		}
		return fn(w, r, s)
	})
}

// authedJSON is authed for the endpoints the page's script polls: errors are the API's
// JSON shape.
func (h *Handler) authedJSON(fn func(*http.Request) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out, err := func() (any, error) {
			if _, err := h.sessionOf(r); err != nil {
				return nil, err
			}
			return fn(r)
		}()
		status := http.StatusOK
		if err != nil {
			code := events.ErrorCode(err)
			status = syhttp.StatusOf(code)
			out = map[string]string{"error": string(code), "message": events.ErrorMessage(err)}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(out)
	})
}

func checkForm(r *http.Request, s session) error {
	if err := readForm(r); err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(s.CSRF)) != 1 {
		return events.Errorf(events.EForbidden, "The form is stale or did not come from this dashboard; reload the page and try again.")
	}
	return nil
}

// readForm reads a form sent from one of the dashboard's own pages: a browser names
// another site's in Sec-Fetch-Site, and one too old to send that names its origin.
// Requests with neither (not a browser's) are let through.
func readForm(r *http.Request) error {
	site := r.Header.Get("Sec-Fetch-Site")
	if site == "" && r.Header.Get("Origin") != "" && !sameOrigin(r) {
		site = "cross-site"
	}
	if site != "" && site != "same-origin" {
		return events.Errorf(events.EForbidden, "This request came from another site; use the dashboard's own buttons.")
	}
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return events.Errorf(events.EInvalid, "The form could not be read.")
	}
	return nil
}

// sameOrigin reports whether the request's Origin header names this server as the
// browser reached it.
func sameOrigin(r *http.Request) bool {
	u, err := url.Parse(r.Header.Get("Origin"))
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// loginPage is where a login link leads: a form that spends the link's code when sent,
// its script filling it from the link (the code follows the "#", which reaches no server
// or proxy log). Opening the link spends nothing, so a fetcher that runs no script (a
// chat's link previewer, most mail scanners) leaves it for its owner. The script sends
// the form by itself only for a link the browser says no other site sent it to
// (Sec-Fetch-Site: none): another site could send its visitors to a link of its own
// making, and log them in as its client unawares; that login, and one from a browser too
// old to say, waits for a click under a warning.
//
// A code in the query is a link an older server process made during a rolling upgrade
// (links live a minute): the form is filled with it.
func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) error {
	site := r.Header.Get("Sec-Fetch-Site")
	h.render(w, http.StatusOK, "login", view{Title: "Log in", Data: loginForm{Code: r.URL.Query().Get("code"), Auto: site == "none"}})
	return nil
}

// loginForm is what the login page's form holds, and whether its script sends it.
type loginForm struct {
	Code string
	Auto bool
}

// login trades a one-time login link's code for a session cookie. The form must come
// from the login page (readForm), not from a form of another site's.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) error {
	if err := readForm(r); err != nil {
		return err
	}
	code := r.PostForm.Get("code")
	if code == "" {
		return events.Errorf(events.EInvalid, "The login form came with no code: the link has none, or the page's script did not run "+
			"(logging in needs JavaScript); run 'sy ui' for a new link.")
	}
	clientID, key, err := h.cfg.Commands.UseLoginLink(r.Context(), code)
	if err != nil {
		return err
	}
	client, err := h.cfg.Queries.Client(r.Context(), clientID)
	if err != nil {
		return err
	}
	if !client.HoldsKey(key) {
		return unauthenticated("This login link was made with a key its client no longer has; run 'sy ui' with the current key.")
	}
	if client.Role != events.RoleAdmin {
		return events.Errorf(events.EForbidden, "The dashboard is for admin clients only.")
	}
	raw, s, err := syhttp.NewSession(h.cfg.Keys, clientID, events.KeyFingerprint(client.PublicKey), h.cfg.SessionTTL)
	if err != nil {
		return err
	}
	http.SetCookie(w, h.cookie(r, raw, s.ExpiresAt))
	h.log.Info("dashboard session opened", "client_id", clientID, "expires_at", s.ExpiresAt)
	// A page rather than a redirect, saying who is logged in and until when before it
	// moves on to the overview (a stranger's link shows its client's name).
	h.render(w, http.StatusOK, "loggedin", view{Title: "Logged in", Me: &client, Data: s.ExpiresAt})
	return nil
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request, s session) error {
	// Ended for every process, not only cleared from this browser: a copy of the cookie
	// taken before would otherwise work until it expires.
	if err := h.cfg.Commands.EndSession(r.Context(), s.Client.ClientID, s.id); err != nil {
		return err
	}
	h.clearCookie(w, r)
	h.render(w, http.StatusOK, "message", view{Title: "Logged out", Data: message{Status: http.StatusOK, Heading: "Logged out",
		Text: "The session is ended, and its cookie gone from this browser.", Login: true}})
	return nil
}

func (h *Handler) cookie(r *http.Request, value string, expires time.Time) *http.Cookie {
	return &http.Cookie{Name: cookieName, Value: value, Path: syhttp.UIPath, Expires: expires, MaxAge: max(int(time.Until(expires).Seconds()), 1),
		HttpOnly: true, Secure: h.cfg.SecureCookies || r.TLS != nil, SameSite: http.SameSiteStrictMode}
}

func (h *Handler) clearCookie(w http.ResponseWriter, r *http.Request) {
	if _, err := r.Cookie(cookieName); err != nil {
		return
	}
	c := h.cookie(r, "", time.Unix(0, 0))
	c.MaxAge = -1
	http.SetCookie(w, c)
}
