package events

import (
	"encoding/json"
	"fmt"
	"time"
)

// Type names an event. The names are the audit log's vocabulary and never change.
type Type string

// Event types.
const (
	TargetRegistered Type = "target.registered"
	TargetRemoved    Type = "target.removed"
	TargetUpdated    Type = "target.updated"  // re-verified with new settings, e.g. a rotated admin password
	TargetResealed   Type = "target.resealed" // the same settings, the admin password sealed under a new master key

	LeaseRequested Type = "lease.requested"
	LeaseActivated Type = "lease.activated"
	LeaseFailed    Type = "lease.failed"
	LeaseRenewed   Type = "lease.renewed"
	LeaseRevoked   Type = "lease.revoked" // revocation requested; the user is dropped next
	LeaseExpired   Type = "lease.expired" // expiry reached; the user is dropped next
	LeaseDropped   Type = "lease.dropped" // the user's sessions are gone and the user dropped
	// LeaseAbandoned: an admin gave up dropping a revoking lease's user (its database gone
	// for good); the lease ends, and the user may remain until `syvault reconcile` finds it.
	LeaseAbandoned Type = "lease.abandoned"
)

// Outcomes recorded on events.
const (
	OutcomeOK = "ok"
)

// Event is one entry of the events stream. Only the fields that apply to a type are set.
// No field ever holds a secret in plaintext: passwords travel sealed (see package seal).
type Event struct {
	Type Type `json:"type"`
	// ID is the dedupe id, published as Nats-Msg-Id, so a retried append is stored once.
	ID string `json:"id"`
	// Prev is the stream sequence of the event before this one on its subject when it was
	// appended (0 for the first), set by ordered appends: each aggregate's events form a
	// chain a reader can follow, or check, without searching.
	Prev uint64 `json:"prev,omitempty"`
	// Base, on lease.renewed, is the sequence of the lease's last event before it that is
	// not a renewal. A renewal supersedes the renewals between (each sets the whole expiry
	// and TTL), so a fold read backwards steps from the last renewal straight to Base: a
	// lease's read costs the same after its thousandth renewal as after its first, where
	// an app client renewing in a loop otherwise made every decision on its lease slower.
	// 0 (written by an earlier version) means follow Prev.
	Base      uint64    `json:"base,omitempty"`
	Time      time.Time `json:"time"`
	ClientID  string    `json:"client_id,omitempty"`
	RecordUID string    `json:"record_uid,omitempty"`
	LeaseID   string    `json:"lease_id,omitempty"`
	// TTLSeconds is the requested TTL on lease.requested and lease.renewed.
	TTLSeconds int `json:"ttl_seconds,omitempty"`
	// ExpiresAt is the lease's expiry on requested and renewed, and on lease.expired the
	// expiry the firing schedule was armed for.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Outcome is "ok" or an error code.
	Outcome string `json:"outcome,omitempty"`
	// Reason says, without secrets, why an operation failed, or why SyVault revoked a
	// lease (ReasonTargetRemoved).
	Reason string `json:"reason,omitempty"`
	// Action names what a refused request tried (access.denied only), e.g. "lease.revoke".
	Action string `json:"action,omitempty"`
	// Username is the database user an orphan.dropped or lease.abandoned event is about
	// (the latter's may remain on the database).
	Username string `json:"username,omitempty"`

	Lease  *LeaseSpec `json:"lease,omitempty"`
	Client *Client    `json:"client,omitempty"`
	Target *Target    `json:"target,omitempty"`
}

// LeaseSpec is what lease.requested carries so that creating and dropping the user never
// depend on anything but the stream.
type LeaseSpec struct {
	Username string `json:"username"`
	// SealedPassword is the lease password sealed under the master key.
	SealedPassword []byte `json:"sealed_password"`
	// SealedVerifier is the password's verifier prepared ahead (PostgreSQL's
	// SCRAM-SHA-256), sealed under the master key with VerifierAAD; absent when the
	// worker computes it.
	SealedVerifier []byte `json:"sealed_verifier,omitempty"`
	// Deadline is when the requester stops waiting: a worker that sees the request later
	// records it as failed instead of creating a user nobody will receive.
	Deadline time.Time `json:"deadline"`
	// Target is the target as it was when the lease was requested.
	Target Target `json:"target"`
}

// VerifierAAD is what a lease's sealed verifier is bound to, so it can be opened for
// that lease and as a verifier only.
func VerifierAAD(leaseID string) string { return leaseID + "/verifier" }

// Target is a database SyVault creates users in.
type Target struct {
	RecordUID     string `json:"record_uid"`
	Name          string `json:"name"`
	Engine        Engine `json:"engine"`
	Host          string `json:"host"`
	Port          int    `json:"port"`
	Database      string `json:"database"`
	AdminUsername string `json:"admin_username"`
	// SealedAdminPassword is the admin password sealed under the master key.
	SealedAdminPassword []byte  `json:"sealed_admin_password,omitempty"`
	TLSMode             TLSMode `json:"tls_mode"`
	Grants              []Grant `json:"grants"`
	MaxTTLSeconds       int     `json:"max_ttl_seconds"`
	// CACert is an optional PEM bundle the admin connection verifies the server with
	// (tls_mode verify-full); public data, not a secret.
	CACert         string `json:"ca_cert,omitempty"`
	ConnectionHost string `json:"connection_host,omitempty"`
	ConnectionPort int    `json:"connection_port,omitempty"`
	// ConnectionLimit caps the sessions each lease user may hold at once (0: none): one
	// lease can then not take every connection the database server has, its admin's
	// included, which would stop every revocation on that server.
	ConnectionLimit int       `json:"connection_limit,omitempty"`
	CreatedAt       time.Time `json:"created_at"`
	// Warnings are what the target's database let a lease user do beyond its grants, set
	// only on the target a registration or update returns: never recorded or projected,
	// as the database may change after.
	Warnings []string `json:"-"`
}

// Grant is a set of privileges on a database (and, for PostgreSQL, a schema). No tables
// means every table of the schema (PostgreSQL) or database (MySQL).
type Grant struct {
	Database   string   `json:"database"`
	Schema     string   `json:"schema,omitempty"`
	Tables     []string `json:"tables,omitempty"`
	Privileges []string `json:"privileges"`
}

// Engine is a database engine.
type Engine string

// Engines SyVault supports.
const (
	PostgreSQL Engine = "postgresql"
	MySQL      Engine = "mysql"
)

// TLSMode says how SyVault secures its admin connection to a target.
type TLSMode string

// TLS modes.
const (
	TLSDisable    TLSMode = "disable"
	TLSRequire    TLSMode = "require"
	TLSVerifyFull TLSMode = "verify-full"
)

// Encode returns the event's stream payload.
func (e Event) Encode() []byte {
	b, err := json.Marshal(e)
	if err != nil {
		// Every field is a plain value; a failure here is a programming error.
		panic(fmt.Sprintf("events: encode %s: %v", e.Type, err))
	}
	return b
}

// Decode parses a stream payload.
func Decode(data []byte) (Event, error) {
	var e Event
	if err := Unmarshal(data, &e); err != nil {
		return Event{}, fmt.Errorf("events: decode: %w", err)
	}
	if e.Type == "" {
		return Event{}, fmt.Errorf("events: decode: no type")
	}
	return e, nil
}
