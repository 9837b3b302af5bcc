package events

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/pem"
	"time"
)

// Client event types.
const (
	ClientRegistered Type = "client.registered"
	ClientUpdated    Type = "client.updated" // replaced by an admin: its name, key, role or limits
	ClientRemoved    Type = "client.removed"
)

// Client roles.
const (
	RoleAdmin = "admin"
	RoleApp   = "app"
)

// Client is an application or operator that authenticates with an Ed25519 key.
type Client struct {
	ClientID       string    `json:"client_id"`
	Name           string    `json:"name"`
	PublicKey      string    `json:"public_key"` // PKIX PEM; never the private key
	Role           string    `json:"role"`
	AllowedRecords []string  `json:"allowed_records,omitempty"`
	MaxTTLSeconds  int       `json:"max_ttl_seconds,omitempty"`
	MaxLeases      int       `json:"max_leases,omitempty"` // leases holding a database user at once (active or revoking); 0: no cap
	CreatedAt      time.Time `json:"created_at"`
}

// KeyFingerprint names a client's public key (PKIX PEM) by its DER bytes, however the PEM
// is laid out: an access token carries the fingerprint of the key it was had with, so
// that a new key ends the tokens of the old one. Empty for text that holds no PEM block.
func KeyFingerprint(publicKeyPEM string) string {
	b, _ := pem.Decode([]byte(publicKeyPEM))
	if b == nil {
		return ""
	}
	sum := sha256.Sum256(b.Bytes)
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

// HoldsKey reports whether a credential had with the key of this fingerprint (an access
// token, a dashboard session, a login link) still stands for the client: its key is that
// one, or the credential names none (issued before credentials named their key; it
// stands until it expires).
func (c Client) HoldsKey(fingerprint string) bool {
	return fingerprint == "" || fingerprint == KeyFingerprint(c.PublicKey)
}

// MaxClientLeases bounds a client's max_leases.
const MaxClientLeases = 10_000

const clientPrefix = "syvault.client."

// ClientSubjects filters the events stream to client events.
const ClientSubjects = clientPrefix + "*"

// ClientSubject holds every event of one client.
func ClientSubject(clientID string) string { return clientPrefix + clientID }

// AccessDenied records a refused request worth auditing: a mutation an authenticated
// client was not allowed (leasing a record it is not granted, touching another client's
// lease, an admin action by an app client).
const AccessDenied Type = "access.denied"

const accessPrefix = "syvault.access."

// AccessSubjects filters the events stream to refused requests.
const AccessSubjects = accessPrefix + "*"

// AccessSubject holds the refused requests of one client.
func AccessSubject(clientID string) string { return accessPrefix + clientID }

// Operations on the deployment's keys, made with the syvault command rather than the
// API: they are audited like everything else, naming key ids, never keys.
const (
	TokenKeyRotated   Type = "token_key.rotated"   // Reason: the new key id and what became of the old ones
	TokenKeysResealed Type = "token_keys.resealed" // sealed under a new master key
)

const keysPrefix = "syvault.keys."

// KeysSubjects filters the events stream to operations on keys.
const KeysSubjects = keysPrefix + "*"

// KeysSubject holds the operations on one set of keys, e.g. "token".
func KeysSubject(name string) string { return keysPrefix + name }

// MaxClientNameLength bounds a client's name.
const MaxClientNameLength = 128
