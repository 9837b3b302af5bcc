package http

import (
	"context"
	nethttp "net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/syvault/syvault/events"
)

// slowLeases is a read side whose lease lookups time out, behind an admin client.
type slowLeases struct{ unused }

func (slowLeases) Client(_ context.Context, id string) (events.Client, error) {
	return events.Client{ClientID: id, Name: "admin", Role: events.RoleAdmin}, nil
}

func (slowLeases) Lease(context.Context, string) (events.Lease, error) {
	return events.Lease{}, events.StoreUnavailable(context.DeadlineExceeded)
}

// TestRevoke_LookupTimeoutIsNotAccepted: when the lease cannot be looked up in time,
// nothing is recorded, so the answer is 503 (try again), not the 504 that a client takes
// for "the revocation is recorded and goes on". A chaos run saw a revoke answered 504 for
// a lease whose revocation was never recorded.
func TestRevoke_LookupTimeoutIsNotAccepted(t *testing.T) {
	rec := revokeAsAdmin(t, slowLeases{})
	if rec.Code != nethttp.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("revoke with the lookup timing out = %d %s (Retry-After %q); want 503 with Retry-After", rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
}

// slowClients is a read side whose client lookups time out.
type slowClients struct{ unused }

func (slowClients) Client(context.Context, string) (events.Client, error) {
	return events.Client{}, events.StoreUnavailable(context.DeadlineExceeded)
}

// TestAuthenticate_LookupTimeoutIsNotAccepted: a request whose token's client cannot be
// looked up in time did nothing: 503 with Retry-After, not 504 (which, for a revoke,
// says the revocation is recorded). The chaos run's long run saw four revokes answered
// 504 this way, their leases then ending by expiry.
func TestAuthenticate_LookupTimeoutIsNotAccepted(t *testing.T) {
	rec := revokeAsAdmin(t, slowClients{})
	if rec.Code != nethttp.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("revoke with the client lookup timing out = %d %s; want 503 with Retry-After", rec.Code, rec.Body)
	}
}

// revokeAsAdmin sends one revoke, with a valid token of client c1, to a server whose read
// side is queries, and returns the answer.
func revokeAsAdmin(t *testing.T, queries Queries) *httptest.ResponseRecorder {
	t.Helper()
	s, err := New(context.Background(), Config{Commands: unused{}, Queries: queries, Connected: func() bool { return true },
		TokenKeys: testKeys, Metrics: nethttp.HandlerFunc(func(nethttp.ResponseWriter, *nethttp.Request) {})})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := signToken(testKeys, jwt.RegisteredClaims{Issuer: tokenIssuer, Subject: "c1", Audience: jwt.ClaimStrings{tokenIssuer},
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(nethttp.MethodDelete, "/api/sm/v1/dynamic/leases/L1", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	rec := httptest.NewRecorder()
	s.echo.ServeHTTP(rec, req)
	return rec
}
