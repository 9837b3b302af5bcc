package http

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/http/api"
)

// Client assertions and access tokens.
const (
	grantClientCredentials = "client_credentials"
	assertionTypeJWTBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	maxAssertionLifetime   = 5 * time.Minute
	clockSkew              = 30 * time.Second
	tokenIssuer            = "syvault"
)

// RFC 9864 names the fully specified Ed25519 algorithm "Ed25519"; clients may use it or
// the older "EdDSA". Both verify the same way.
func init() {
	jwt.RegisterSigningMethod("Ed25519", func() jwt.SigningMethod { return ed25519Alg{jwt.SigningMethodEdDSA} })
}

type ed25519Alg struct{ *jwt.SigningMethodEd25519 }

func (ed25519Alg) Alg() string { return "Ed25519" }

// TokenKeys holds the keys of access tokens: one signs new tokens, and each key still
// retained verifies the tokens that name it by kid. Verifying fails with an
// EUnauthenticated error for a kid the deployment does not hold; any other error means
// the keys could not be read. *tokenkey.Ring is the implementation.
type TokenKeys interface {
	Signing() (kid string, key []byte)
	Verifying(ctx context.Context, kid string) ([]byte, error)
}

type authenticator struct{ cfg Config }

func unauthenticated(format string, args ...any) error {
	return events.Errorf(events.EUnauthenticated, format, args...)
}

// token implements the OAuth 2.0 client credentials grant with a JWT client assertion
// (RFC 7523): the client proves it holds its private key; the answer is a bearer token.
func (s *Server) token(c echo.Context) error {
	r := c.Request()
	if !strings.HasPrefix(r.Header.Get(echo.HeaderContentType), echo.MIMEApplicationForm) {
		return events.Errorf(events.EInvalid, "Send the token request form-encoded (application/x-www-form-urlencoded).")
	}
	if err := r.ParseForm(); err != nil {
		return events.Errorf(events.EInvalid, "The token request form could not be parsed.")
	}
	if g := r.PostForm.Get("grant_type"); g != grantClientCredentials {
		return events.Errorf(events.EInvalid, "grant_type must be %q.", grantClientCredentials)
	}
	if t := r.PostForm.Get("client_assertion_type"); t != assertionTypeJWTBearer {
		return events.Errorf(events.EInvalid, "client_assertion_type must be %q.", assertionTypeJWTBearer)
	}
	assertion := r.PostForm.Get("client_assertion")
	if assertion == "" {
		return events.Errorf(events.EInvalid, "client_assertion is required.")
	}
	client, err := s.auth.verifyAssertion(r.Context(), assertion, s.audiences, func(client events.Client, jti string) error {
		if s.limits == nil || client.Role == events.RoleAdmin {
			return nil // nothing to charge
		}
		// A replay is refused before the charge: whoever replays a captured assertion
		// would otherwise spend its client's allowance.
		if err := s.cfg.Commands.RefuseReplay(r.Context(), client.ClientID, jti); err != nil {
			return err
		}
		// Before the assertion's id is stored: each one is an entry NATS keeps for
		// minutes, so an app client minting tokens in a loop would otherwise grow it.
		return s.limit(c, client, "token")
	})
	if err != nil {
		return err
	}
	now := time.Now()
	claims := accessClaims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer:    tokenIssuer,
		Subject:   client.ClientID,
		Audience:  jwt.ClaimStrings{tokenIssuer},
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(s.cfg.TokenTTL)),
		ID:        uuid.NewString(),
	}, Key: events.KeyFingerprint(client.PublicKey)}
	signed, err := signToken(s.cfg.TokenKeys, claims)
	if err != nil {
		return err
	}
	s.log.Info("token issued", "client_id", client.ClientID)
	return c.JSON(http.StatusOK, api.TokenResponse{AccessToken: signed, TokenType: "Bearer", ExpiresIn: int(s.cfg.TokenTTL.Seconds())})
}

// verifyAssertion checks a client assertion and, once admit lets its client through,
// records its id so that it cannot be replayed.
func (a *authenticator) verifyAssertion(ctx context.Context, assertion string, audiences []string, admit func(client events.Client, jti string) error) (events.Client, error) {
	var client events.Client
	claims, err := parseAssertion(assertion, audiences, time.Now(), func(iss string) (ed25519.PublicKey, error) {
		c, err := a.cfg.Queries.Client(ctx, iss)
		if err != nil {
			return nil, err
		}
		client = c
		return ParsePublicKey(c.PublicKey)
	})
	if err != nil {
		return client, err
	}
	if err := admit(client, claims.ID); err != nil {
		return client, err
	}
	return client, a.cfg.Commands.UseAssertion(ctx, client.ClientID, claims.ID, claims.ExpiresAt.Add(clockSkew))
}

// parseAssertion checks a client assertion's signature (with the key keyFor returns for
// its issuer) and claims, everything but jti replay. Errors are EUnauthenticated, except
// when the key lookup fails for want of the event store.
func parseAssertion(assertion string, audiences []string, now time.Time, keyFor func(iss string) (ed25519.PublicKey, error)) (*jwt.RegisteredClaims, error) {
	claims := &jwt.RegisteredClaims{}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{"EdDSA", "Ed25519"}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(clockSkew),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	var lookupErr error
	_, err := parser.ParseWithClaims(assertion, claims, func(t *jwt.Token) (any, error) {
		iss, _ := t.Claims.GetIssuer()
		if iss == "" {
			return nil, errors.New("no iss")
		}
		k, err := keyFor(iss)
		lookupErr = err
		return k, err
	})
	if err != nil {
		if code := events.ErrorCode(lookupErr); code == events.EUnavailable || code == events.ETimeout {
			return nil, lookupErr
		}
		return nil, unauthenticated("The client assertion is invalid, expired, or signed by a key this server does not know: " +
			"check the client id and its private key (a deleted client's are refused) and this machine's clock.")
	}
	switch {
	case claims.Subject != claims.Issuer:
		return nil, unauthenticated("The client assertion's sub must equal its iss (the client_id).")
	case len(audiences) == 0 || !slices.ContainsFunc(audiences, func(aud string) bool {
		return slices.Contains(claims.Audience, strings.TrimSuffix(aud, "/")) || slices.Contains(claims.Audience, strings.TrimSuffix(aud, "/")+"/")
	}):
		return nil, unauthenticated("The client assertion's aud must be this server's URL (%s).", strings.Join(audiences, " or "))
	case claims.ExpiresAt.After(now.Add(maxAssertionLifetime + clockSkew)):
		return nil, unauthenticated("The client assertion's exp must be at most 5 minutes ahead.")
	case claims.ID == "" || len(claims.ID) > 256:
		return nil, unauthenticated("The client assertion needs a unique jti.")
	}
	return claims, nil
}

// parseAccessToken checks an access token this deployment issued, with the key its kid
// names, and returns its client id.
func parseAccessToken(ctx context.Context, raw string, keys TokenKeys) (accessClaims, error) {
	claims := accessClaims{}
	err := verifyToken(ctx, raw, keys, tokenIssuer, &claims)
	if events.ErrorCode(err) == events.EUnavailable {
		return claims, err
	}
	if err != nil || claims.Subject == "" {
		return claims, unauthenticated("The access token is invalid or expired; get a new one.")
	}
	return claims, nil
}

// accessClaims are an access token's claims: Key is the fingerprint of the client's
// public key the token was had with (events.KeyFingerprint), so a token outlives no
// change of key. Tokens issued before tokens carried it have none and are taken as
// they were, until they expire.
type accessClaims struct {
	jwt.RegisteredClaims
	Key string `json:"ckf,omitempty"`
}

// signToken signs claims with the deployment's current token key, naming it by kid.
func signToken(keys TokenKeys, claims jwt.Claims) (string, error) {
	kid, key := keys.Signing()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	tok.Header["kid"] = kid
	signed, err := tok.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return signed, nil
}

// verifyToken checks a token signToken made for audience into claims. It fails with
// EUnavailable when the keys cannot be read (the token may be fine), with another error
// when the token is not valid.
func verifyToken(ctx context.Context, raw string, keys TokenKeys, audience string, claims jwt.Claims) error {
	var keyErr error
	_, err := jwt.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, unauthenticated("The token names no signing key.")
		}
		k, err := keys.Verifying(ctx, kid)
		keyErr = err
		return k, err
	},
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithIssuer(tokenIssuer), jwt.WithAudience(audience),
		jwt.WithExpirationRequired(), jwt.WithLeeway(clockSkew))
	if keyErr != nil && events.ErrorCode(keyErr) != events.EUnauthenticated {
		return events.Wrap(keyErr, events.EUnavailable, "The token keys cannot be read just now; try again shortly.")
	}
	return err
}

// authenticate admits requests carrying a valid access token of a client that still
// exists, and puts that client in the context.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		// The scheme name is case-insensitive (RFC 7235, 2.1).
		scheme, raw, ok := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
		raw = strings.TrimSpace(raw)
		if !ok || !strings.EqualFold(scheme, "Bearer") || raw == "" {
			return unauthenticated("Send an access token in the Authorization header as: Bearer TOKEN (get one from %s/auth/token).", BasePath)
		}
		claims, err := parseAccessToken(c.Request().Context(), raw, s.cfg.TokenKeys)
		if err != nil {
			return err
		}
		client, err := s.cfg.Queries.Client(c.Request().Context(), claims.Subject)
		if events.ErrorCode(err) == events.ENotFound {
			return unauthenticated("The access token's client no longer exists.")
		}
		if events.ErrorCode(err) == events.ETimeout {
			// Nothing was done: a 503 (try again), never the 504 a revoke answers once its
			// revocation is recorded and under way.
			return events.Wrap(err, events.EUnavailable, "The event store did not answer in time to check the access token's client; try again shortly.")
		}
		if err != nil {
			return err
		}
		if !client.HoldsKey(claims.Key) {
			return unauthenticated("The access token was had with a key its client no longer has; get a new one with the client's current key.")
		}
		c.Set("client", client)
		return next(c)
	}
}

func clientOf(c echo.Context) events.Client {
	cl, _ := c.Get("client").(events.Client)
	return cl
}

// ParsePublicKey parses an Ed25519 public key in PKIX PEM form.
func ParsePublicKey(pemText string) (ed25519.PublicKey, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, events.Errorf(events.EInvalid, "public_key must be a PEM 'PUBLIC KEY' block.")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, events.Errorf(events.EInvalid, "public_key could not be parsed.")
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, events.Errorf(events.EInvalid, "public_key must be an Ed25519 key.")
	}
	return pub, nil
}
