package client_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/syvault/syvault/http/client"
)

// TestClient_FollowsNoRedirect: a redirect (a misconfigured proxy, a hostile answer)
// carried the token request's body, a signed client assertion good for minutes, or a
// request with its bearer token, to the address it named.
func TestClient_FollowsNoRedirect(t *testing.T) {
	var reached atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"t","token_type":"Bearer","expires_in":900}`))
	}))
	defer elsewhere.Close()
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redirecting.Close()

	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(redirecting.URL, "c9a1b2d3-4e5f-6789-abcd-ef0123456789", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	if err != nil {
		t.Fatal(err)
	}
	for _, hc := range []*http.Client{nil, {}} {
		if hc != nil {
			c.SetHTTPClient(hc)
		}
		if _, err := c.ListTargets(t.Context()); err == nil || !strings.Contains(err.Error(), "redirect") {
			t.Fatalf("ListTargets through a redirect = %v, want a refusal naming it", err)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("the redirect's address got %d requests", n)
	}
}
