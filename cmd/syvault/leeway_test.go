package main

import (
	"net/url"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	syhttp "github.com/syvault/syvault/http"
	"github.com/syvault/syvault/http/client"
)

// TestAuth_ClockLeeway: the README's 30 s clock leeway, at its edges. An access token is
// accepted 20 s past its exp and refused 40 s past it; a client assertion is accepted
// with an iat 20 s ahead of the server's clock or an exp 20 s past, and refused at 40 s.
func TestAuth_ClockLeeway(t *testing.T) {
	srv := mustServer(t, "", nil)
	ac := srv.adminClient(t)
	now := time.Now()

	for _, tc := range []struct {
		past time.Duration
		want int
	}{{20 * time.Second, 200}, {40 * time.Second, 401}} {
		tok := srv.forgeToken(t, jwt.RegisteredClaims{Issuer: "syvault", Subject: ac.ClientID,
			Audience: jwt.ClaimStrings{"syvault"}, ExpiresAt: jwt.NewNumericDate(now.Add(-tc.past))})
		if status, body := raw(t, srv, "GET", syhttp.BasePath+"/dynamic/leases", tok, "", nil); status != tc.want {
			t.Errorf("access token %v past its exp: %d %v, want %d", tc.past, status, body, tc.want)
		}
	}

	assertion := func(iat, exp time.Time) []byte {
		return []byte(tokenForm(signedAssertion(t, ac, srv.HTTP.URL(), iat, exp)).Encode())
	}
	for _, tc := range []struct {
		name     string
		iat, exp time.Time
		want     int
	}{
		{"iat 20 s ahead", now.Add(20 * time.Second), now.Add(2 * time.Minute), 200},
		{"iat 40 s ahead", now.Add(40 * time.Second), now.Add(2 * time.Minute), 401},
		{"exp 20 s past", now.Add(-time.Minute), now.Add(-20 * time.Second), 200},
		{"exp 40 s past", now.Add(-time.Minute), now.Add(-40 * time.Second), 401},
	} {
		status, body := raw(t, srv, "POST", syhttp.BasePath+"/auth/token", "", "application/x-www-form-urlencoded", assertion(tc.iat, tc.exp))
		if status != tc.want {
			t.Errorf("client assertion with %s: %d %v, want %d", tc.name, status, body, tc.want)
		}
	}
}

// signedAssertion is a client assertion of ac for the audience aud, issued at iat and
// expiring at exp, with a fresh jti.
func signedAssertion(t testing.TB, ac AdminClient, aud string, iat, exp time.Time) string {
	t.Helper()
	key, err := client.ParsePrivateKey(ac.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.RegisteredClaims{Issuer: ac.ClientID, Subject: ac.ClientID,
		Audience: jwt.ClaimStrings{aud}, IssuedAt: jwt.NewNumericDate(iat), ExpiresAt: jwt.NewNumericDate(exp),
		ID: uuid.NewString()}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// tokenForm is the form of a token request carrying assertion.
func tokenForm(assertion string) url.Values {
	return url.Values{"grant_type": {"client_credentials"}, "client_assertion": {assertion},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}}
}
