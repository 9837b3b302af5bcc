// Package client is the Go client of the SyVault API, used by the sy CLI and the
// end-to-end tests. It signs client assertions with the client's Ed25519 key, caches the
// access token and refreshes it before it expires. A Client is safe for concurrent use.
package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/syvault/syvault/http/api"
)

// Error is an error answer from the server.
type Error struct {
	Status  int
	Code    string `json:"error"`
	Message string `json:"message"`
	// RetryAfter is how long the server said to wait before asking again (its
	// Retry-After, e.g. with 429 rate_limited); 0 when it said nothing.
	RetryAfter time.Duration `json:"-"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d): %s", e.Code, e.Status, e.Message) }

// Client talks to one SyVault server as one client.
type Client struct {
	server   string
	clientID string
	key      ed25519.PrivateKey
	http     *http.Client

	mu      sync.Mutex
	tok     string
	expires time.Time
}

// New returns a client for server (scheme://host[:port]) authenticating as clientID with
// an Ed25519 private key in PKCS#8 PEM form.
func New(server, clientID, privateKeyPEM string) (*Client, error) {
	key, err := ParsePrivateKey(privateKeyPEM)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: server must be an http(s) URL like https://vault.example.com, got %q", server)
	}
	return &Client{server: strings.TrimSuffix(server, "/"), clientID: clientID, key: key,
		http: &http.Client{Timeout: 60 * time.Second, CheckRedirect: noRedirects}}, nil
}

// SetHTTPClient replaces the HTTP client, e.g. to trust a private CA. Call it before use.
// A copy of h is used, following no redirect whatever h's CheckRedirect.
func (c *Client) SetHTTPClient(h *http.Client) {
	hc := *h
	hc.CheckRedirect = noRedirects
	c.http = &hc
}

// noRedirects has a redirect answered as it is. Go's client follows one with the
// request's body, to the same host over plain HTTP or on another port with the bearer
// token too, and the token request's body is a signed assertion good for minutes; the
// API never redirects.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// ParsePrivateKey parses an Ed25519 private key in PKCS#8 PEM form.
func ParsePrivateKey(pemText string) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("client: private key must be a PEM 'PRIVATE KEY' (PKCS#8) block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("client: private key could not be parsed")
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("client: private key must be an Ed25519 key")
	}
	return key, nil
}

// Assertion returns a fresh client assertion for the token endpoint.
func (c *Client) Assertion() (string, error) {
	now := time.Now()
	claims := jwt.RegisteredClaims{
		Issuer: c.clientID, Subject: c.clientID, Audience: jwt.ClaimStrings{c.server},
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(2 * time.Minute)), ID: uuid.NewString(),
	}
	return jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(c.key)
}

// TokenResponse is the token endpoint's answer.
type TokenResponse = api.TokenResponse

// Token returns a valid access token, fetching a new one when the cached one is within a
// minute of expiring.
func (c *Client) Token(ctx context.Context) (string, error) {
	tok, _, err := c.token(ctx)
	return tok, err
}

// token is Token, also telling whether the token was fetched just now.
func (c *Client) token(ctx context.Context) (tok string, fresh bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tok != "" && time.Until(c.expires) > time.Minute {
		return c.tok, false, nil
	}
	assertion, err := c.Assertion()
	if err != nil {
		return "", false, err
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.server+"/api/sm/v1/auth/token", strings.NewReader(form.Encode()))
	if err != nil {
		return "", false, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var tr TokenResponse
	if _, err := c.send(req, &tr); err != nil {
		return "", false, err
	}
	c.tok, c.expires = tr.AccessToken, time.Now().Add(time.Duration(tr.ExpiresIn)*time.Second)
	return c.tok, true, nil
}

// forget drops tok from the cache unless another request replaced it already.
func (c *Client) forget(tok string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tok == tok {
		c.tok = ""
	}
}

// Do sends an authenticated request with a JSON body (nil for none) and decodes a JSON
// answer into out (nil to discard). Error answers come back as *Error.
//
// A cached token the server refuses (401: it was signed by a key since dropped, say) is
// forgotten and the request sent once more with a new one; a 401 means the server did
// nothing, so the retry cannot do a thing twice.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	_, err := c.do(ctx, method, path, nil, body, out)
	return err
}

// do is Do with headers: header is added to the request, and the answer's headers are
// returned (nil when no answer came).
func (c *Client) do(ctx context.Context, method, path string, header http.Header, body, out any) (http.Header, error) {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	for retried := false; ; retried = true {
		tok, fresh, err := c.token(ctx)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, method, c.server+path, bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		for k, v := range header {
			req.Header[k] = v
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		got, err := c.send(req, out)
		var e *Error
		if !retried && !fresh && errors.As(err, &e) && e.Status == http.StatusUnauthorized {
			c.forget(tok)
			continue
		}
		return got, err
	}
}

func (c *Client) send(req *http.Request, out any) (http.Header, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return nil, fmt.Errorf("client: %s %s: the server's address answered with a redirect (HTTP %d), which is not followed: "+
			"a redirect would carry the token or the client assertion elsewhere; use the API's own address", req.Method, req.URL.Path, resp.StatusCode)
	}
	if resp.StatusCode >= 400 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Code == "" {
			e.Code, e.Message = "http_error", http.StatusText(resp.StatusCode)
		}
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
			e.RetryAfter = time.Duration(min(secs, 3600)) * time.Second
		}
		return resp.Header, e
	}
	if out == nil || len(data) == 0 {
		return resp.Header, nil
	}
	return resp.Header, json.Unmarshal(data, out)
}
