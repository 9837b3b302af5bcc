package http

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/syvault/syvault/events"
)

// Sessions and access tokens are signed by the same keys; neither passes for the other.
func TestParseSession(t *testing.T) {
	ctx := context.Background()
	raw, s, err := NewSession(testKeys, "client-1", "K1", 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("ok", func(t *testing.T) {
		got, err := ParseSession(ctx, raw, testKeys)
		if err != nil || got != s || len(s.CSRF) < 20 {
			t.Fatalf("%+v, %v; want %+v", got, err, s)
		}
	})
	t.Run("no bearer token", func(t *testing.T) {
		if _, err := parseAccessToken(ctx, raw, testKeys); events.ErrorCode(err) != events.EUnauthenticated {
			t.Fatalf("a session passed as an access token: %v", err)
		}
	})
	access, err := signToken(testKeys, jwt.RegisteredClaims{Issuer: tokenIssuer, Subject: "client-1", Audience: jwt.ClaimStrings{tokenIssuer},
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Minute))})
	if err != nil {
		t.Fatal(err)
	}
	expired, err := signToken(testKeys, sessionClaims{CSRF: "x", RegisteredClaims: jwt.RegisteredClaims{Issuer: tokenIssuer, Subject: "client-1",
		Audience: jwt.ClaimStrings{SessionAudience}, ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Hour))}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, raw string }{
		{"an access token", access}, {"expired", expired}, {"garbage", "a.b.c"}, {"empty", ""},
		{"another key", func() string {
			r, _, _ := NewSession(staticKeys{kid: "k1", key: []byte("another key, same kid..........")}, "c", "", time.Minute)
			return r
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseSession(ctx, tc.raw, testKeys); events.ErrorCode(err) != events.EUnauthenticated {
				t.Fatalf("err = %v, want unauthenticated", err)
			}
		})
	}
	t.Run("keys unreadable", func(t *testing.T) {
		keys := testKeys
		keys.err = errors.New("nats down")
		if _, err := ParseSession(ctx, raw, keys); events.ErrorCode(err) != events.EUnavailable {
			t.Fatalf("err = %v, want unavailable", err)
		}
	})
}
