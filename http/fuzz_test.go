package http

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/http/api"
)

const testAud = "https://vault.example.com"

func mustKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func assertion(t testing.TB, priv ed25519.PrivateKey, alg jwt.SigningMethod, mutate func(*jwt.RegisteredClaims)) string {
	now := time.Now()
	c := jwt.RegisteredClaims{Issuer: "c1", Subject: "c1", Audience: jwt.ClaimStrings{testAud}, IssuedAt: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(2 * time.Minute)), ID: "jti-1"}
	if mutate != nil {
		mutate(&c)
	}
	s, err := jwt.NewWithClaims(alg, c).SignedString(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseAssertion(t *testing.T) {
	pub, priv := mustKey(t)
	_, other := mustKey(t)
	keyFor := func(iss string) (ed25519.PublicKey, error) {
		if iss != "c1" {
			return nil, events.Errorf(events.ENotFound, "no client")
		}
		return pub, nil
	}
	ok := func(name, a string) {
		t.Run(name, func(t *testing.T) {
			if _, err := parseAssertion(a, []string{testAud}, time.Now(), keyFor); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
	refused := func(name, a string) {
		t.Run(name, func(t *testing.T) {
			_, err := parseAssertion(a, []string{testAud}, time.Now(), keyFor)
			if events.ErrorCode(err) != events.EUnauthenticated {
				t.Fatalf("err = %v, want unauthenticated", err)
			}
		})
	}
	ok("EdDSA", assertion(t, priv, jwt.SigningMethodEdDSA, nil))
	ok("Ed25519 (RFC 9864)", assertion(t, priv, ed25519Alg{jwt.SigningMethodEdDSA}, nil))
	refused("signed by another key", assertion(t, other, jwt.SigningMethodEdDSA, nil))
	refused("wrong aud", assertion(t, priv, jwt.SigningMethodEdDSA, func(c *jwt.RegisteredClaims) { c.Audience = jwt.ClaimStrings{"https://evil.example"} }))
	refused("no aud", assertion(t, priv, jwt.SigningMethodEdDSA, func(c *jwt.RegisteredClaims) { c.Audience = nil }))
	refused("exp too far ahead", assertion(t, priv, jwt.SigningMethodEdDSA, func(c *jwt.RegisteredClaims) {
		c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(time.Hour))
	}))
	refused("expired", assertion(t, priv, jwt.SigningMethodEdDSA, func(c *jwt.RegisteredClaims) {
		c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))
	}))
	refused("no exp", assertion(t, priv, jwt.SigningMethodEdDSA, func(c *jwt.RegisteredClaims) { c.ExpiresAt = nil }))
	refused("no jti", assertion(t, priv, jwt.SigningMethodEdDSA, func(c *jwt.RegisteredClaims) { c.ID = "" }))
	refused("sub is not iss", assertion(t, priv, jwt.SigningMethodEdDSA, func(c *jwt.RegisteredClaims) { c.Subject = "admin" }))
	refused("unknown client", assertion(t, priv, jwt.SigningMethodEdDSA, func(c *jwt.RegisteredClaims) { c.Issuer, c.Subject = "c2", "c2" }))
	good := strings.Split(assertion(t, priv, jwt.SigningMethodEdDSA, nil), ".")
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	refused("alg none", none+"."+good[1]+".")
	hs := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	refused("alg HS256 with the public key as secret", hs+"."+good[1]+"."+good[2])
}

// staticKeys is a TokenKeys of one key; err, when set, stands for a bucket that cannot
// be read.
type staticKeys struct {
	kid string
	key []byte
	err error
}

func (k staticKeys) Signing() (string, []byte) { return k.kid, k.key }

func (k staticKeys) Verifying(_ context.Context, kid string) ([]byte, error) {
	switch {
	case k.err != nil:
		return nil, k.err
	case kid != k.kid:
		return nil, events.Errorf(events.EUnauthenticated, "unknown key")
	}
	return k.key, nil
}

var testKeys = staticKeys{kid: "k1", key: []byte("0123456789abcdef0123456789abcdef")}

func TestParseAccessToken(t *testing.T) {
	ctx := context.Background()
	key := testKeys.key
	signKid := func(kid string, k []byte, m jwt.SigningMethod, c jwt.RegisteredClaims) string {
		tok := jwt.NewWithClaims(m, c)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	sign := func(k []byte, m jwt.SigningMethod, c jwt.RegisteredClaims) string {
		return signKid(testKeys.kid, k, m, c)
	}
	valid := jwt.RegisteredClaims{Issuer: tokenIssuer, Subject: "c1", Audience: jwt.ClaimStrings{tokenIssuer}, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Minute))}
	if claims, err := parseAccessToken(ctx, sign(key, jwt.SigningMethodHS256, valid), testKeys); err != nil || claims.Subject != "c1" {
		t.Fatalf("valid token: %q %v", claims.Subject, err)
	}
	// A token that may be valid is not called invalid because the keys cannot be read.
	down := staticKeys{err: errors.New("nats: timeout")}
	if _, err := parseAccessToken(ctx, sign(key, jwt.SigningMethodHS256, valid), down); events.ErrorCode(err) != events.EUnavailable {
		t.Errorf("keys unreadable: err = %v, want unavailable", err)
	}
	expired := valid
	expired.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))
	otherIss := valid
	otherIss.Issuer = "someone"
	for name, tok := range map[string]string{
		"other key":  sign([]byte("ffffffffffffffffffffffffffffffff"), jwt.SigningMethodHS256, valid),
		"no kid":     signKid("", key, jwt.SigningMethodHS256, valid),
		"other kid":  signKid("k2", key, jwt.SigningMethodHS256, valid),
		"expired":    sign(key, jwt.SigningMethodHS256, expired),
		"other iss":  sign(key, jwt.SigningMethodHS256, otherIss),
		"HS512":      sign(key, jwt.SigningMethodHS512, valid),
		"empty":      "",
		"not a JWT":  "abc",
		"three dots": "...",
	} {
		if _, err := parseAccessToken(ctx, tok, testKeys); events.ErrorCode(err) != events.EUnauthenticated {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// The fuzzers run briefly in CI (see the Taskfile's fuzz task): no input may panic, and
// whatever is accepted must satisfy the checks the handlers rely on.

func FuzzDecodeLeaseRequest(f *testing.F) {
	for _, s := range []string{`{"record_uid":"7Kj9mNpQ2xRs","ttl_seconds":3600}`, `{}`, `[]`, `null`, `{"ttl_seconds":1e400}`,
		`{"record_uid":"\u0000","ttl_seconds":-1}`, `{"a":1} {}`, "\xff\xfe"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req leaseRequest
		err := decodeBody(body, &req)
		if err != nil {
			if events.ErrorCode(err) != events.EInvalid || events.ErrorMessage(err) == "" {
				t.Fatalf("decode error %v is not a clear invalid_request", err)
			}
			return
		}
		if req.TTLSeconds != nil {
			_ = events.ValidTTL(*req.TTLSeconds, events.MaxTTLSeconds)
		}
	})
}

func FuzzDecodeTarget(f *testing.F) {
	for _, s := range []string{
		`{"name":"a","engine":"postgresql","host":"h","port":5432,"database":"d","admin_username":"u","admin_password":"p","grants":[{"database":"d","schema":"public","privileges":["SELECT"]}]}`,
		`{"name":"a","engine":"mysql","host":"h","port":3306,"database":"d","admin_username":"u","admin_password":"p","grants":[{"database":"d","tables":["t"],"privileges":["select","create view"]}]}`,
		`{"grants":[{"privileges":[""]}]}`, `{"port":"x"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req api.Target
		if err := decodeBody(body, &req); err != nil {
			return
		}
		tg, err := targetOf(req)
		if err != nil {
			if c := events.ErrorCode(err); c != events.EInvalid && c != events.EInvalidTTL {
				t.Fatalf("validation error with code %s", c)
			}
			return
		}
		allowed := events.PostgreSQLPrivileges
		if tg.Engine == events.MySQL {
			allowed = events.MySQLPrivileges
		}
		for _, g := range tg.Grants {
			for _, p := range g.Privileges {
				if !contains(allowed, p) {
					t.Fatalf("accepted privilege %q outside the allow-list", p)
				}
			}
		}
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func FuzzParseTokens(f *testing.F) {
	pub, priv := mustKey(f)
	f.Add(assertion(f, priv, jwt.SigningMethodEdDSA, nil))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Add("")
	valid := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Issuer: tokenIssuer, Subject: "c1", Audience: jwt.ClaimStrings{tokenIssuer},
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))})
	valid.Header["kid"] = testKeys.kid
	if s, err := valid.SignedString(testKeys.key); err == nil {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		claims, err := parseAssertion(raw, []string{testAud}, time.Now(), func(string) (ed25519.PublicKey, error) { return pub, nil })
		if err == nil && (claims.Subject != claims.Issuer || claims.ID == "") {
			t.Fatalf("accepted an assertion breaking the rules: %+v", claims)
		}
		if claims, err := parseAccessToken(context.Background(), raw, testKeys); err == nil && claims.Subject == "" {
			t.Fatal("accepted an access token without a subject")
		}
	})
}
