package http

import (
	"context"
	"crypto/rand"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/syvault/syvault/events"
)

// SessionAudience is the audience of the dashboard's session tokens. It differs from the
// access tokens' own, so neither kind passes for the other: a session cookie is no
// bearer token for the API, and an access token opens no dashboard session.
const SessionAudience = "syvault-ui"

// Session is what a dashboard session carries.
type Session struct {
	// ID tells the session from the client's others: logging out ends this one alone.
	ID       string
	ClientID string
	// Key is the fingerprint of the client's key the session was had with
	// (events.KeyFingerprint): a session outlives no change of the client's key.
	Key string
	// CSRF is the session's anti-forgery token: a form that changes state must carry it.
	CSRF      string
	ExpiresAt time.Time
}

type sessionClaims struct {
	jwt.RegisteredClaims
	CSRF string `json:"csrf"`
	Key  string `json:"ckf,omitempty"`
}

// NewSession signs a dashboard session of clientID, had with its key of fingerprint key,
// lasting ttl (the access tokens' lifetime) with the deployment's current token key, so
// that every process accepts it.
func NewSession(keys TokenKeys, clientID, key string, ttl time.Duration) (string, Session, error) {
	now := time.Now()
	s := Session{ID: uuid.NewString(), ClientID: clientID, Key: key, CSRF: rand.Text(), ExpiresAt: now.Add(ttl).Truncate(time.Second)}
	raw, err := signToken(keys, sessionClaims{CSRF: s.CSRF, Key: key, RegisteredClaims: jwt.RegisteredClaims{
		Issuer: tokenIssuer, Subject: clientID, Audience: jwt.ClaimStrings{SessionAudience},
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(s.ExpiresAt), ID: s.ID,
	}})
	return raw, s, err
}

// ParseSession checks a session NewSession made. It fails with EUnauthenticated when the
// session is not one, or has expired, and with EUnavailable when the keys cannot be read.
// Whether its client still exists is the caller's to check.
func ParseSession(ctx context.Context, raw string, keys TokenKeys) (Session, error) {
	var c sessionClaims
	err := verifyToken(ctx, raw, keys, SessionAudience, &c)
	if events.ErrorCode(err) == events.EUnavailable {
		return Session{}, err
	}
	if err != nil || c.Subject == "" || c.CSRF == "" || c.ID == "" {
		return Session{}, unauthenticated("The dashboard session is invalid or has expired; run 'sy ui' to log in again.")
	}
	return Session{ID: c.ID, ClientID: c.Subject, Key: c.Key, CSRF: c.CSRF, ExpiresAt: c.ExpiresAt.Time}, nil
}
