// Package api holds the JSON shapes of SyVault's HTTP API, shared by the server (package
// http) and the Go client (package http/client), so the two cannot drift apart. It
// imports nothing of SyVault.
package api

import "time"

// Lease is a lease's credentials as a create answers them: the product document's five
// fields first.
type Lease struct {
	LeaseID          string    `json:"lease_id"`
	Username         string    `json:"username"`
	Password         string    `json:"password"`
	ConnectionString string    `json:"connection_string"`
	ExpiresAt        time.Time `json:"expires_at"`
	RecordUID        string    `json:"record_uid"`
	CreatedAt        time.Time `json:"created_at"`
	Engine           string    `json:"engine"`
	Host             string    `json:"host"`
	Port             int       `json:"port"`
	Database         string    `json:"database"`
}

// LeaseInfo is a lease as lists and gets show it (never its password).
type LeaseInfo struct {
	LeaseID    string     `json:"lease_id"`
	RecordUID  string     `json:"record_uid"`
	Username   string     `json:"username"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  time.Time  `json:"expires_at"`
	Status     string     `json:"status"`
	EndedAt    *time.Time `json:"ended_at,omitempty"`
	ClientID   string     `json:"client_id,omitempty"`
	TTLSeconds int        `json:"ttl_seconds"`
	// Abandoned says an admin gave up dropping the user (a forced revocation): it may
	// still be on the database.
	Abandoned bool `json:"abandoned,omitempty"`
}

// LeasePage is one page of active leases; NextCursor is set when there are more.
type LeasePage struct {
	Data       []LeaseInfo `json:"data"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

// Grant is a set of privileges on a database (and, for PostgreSQL, a schema).
type Grant struct {
	Database   string   `json:"database"`
	Schema     string   `json:"schema,omitempty"`
	Tables     []string `json:"tables,omitempty"`
	Privileges []string `json:"privileges"`
}

// Target is a target as clients submit it (with AdminPassword) and as the API shows it
// (with RecordUID and CreatedAt, never the admin password).
type Target struct {
	RecordUID      string  `json:"record_uid,omitempty"`
	Name           string  `json:"name"`
	Engine         string  `json:"engine"`
	Host           string  `json:"host"`
	Port           int     `json:"port"`
	Database       string  `json:"database"`
	AdminUsername  string  `json:"admin_username"`
	AdminPassword  string  `json:"admin_password,omitempty"`
	TLSMode        string  `json:"tls_mode,omitempty"`
	CACert         string  `json:"ca_cert,omitempty"`
	Grants         []Grant `json:"grants"`
	MaxTTLSeconds  int     `json:"max_ttl_seconds,omitempty"`
	ConnectionHost string  `json:"connection_host,omitempty"`
	ConnectionPort int     `json:"connection_port,omitempty"`
	// ConnectionLimit caps each lease user's concurrent sessions; absent or 0: no limit.
	ConnectionLimit int       `json:"connection_limit,omitempty"`
	CreatedAt       time.Time `json:"created_at,omitzero"`
	// Warnings, only in the answer to a registration or update, are what the target's
	// database lets a lease user do beyond the grants, for the operator to take away.
	Warnings []string `json:"warnings,omitempty"`
	// Version is the ETag a GET or PUT answered with (not part of the body): a client's
	// update sends it as If-Match, so it is made only if nobody changed the target since.
	Version string `json:"-"`
}

// Client is an API client as registered (by its public key) and shown.
type Client struct {
	ClientID       string    `json:"client_id,omitempty"`
	Name           string    `json:"name"`
	PublicKey      string    `json:"public_key"`
	Role           string    `json:"role"`
	AllowedRecords []string  `json:"allowed_records"`
	MaxTTLSeconds  int       `json:"max_ttl_seconds,omitempty"`
	MaxLeases      int       `json:"max_leases,omitempty"` // leases holding a database user at once; absent or 0: no cap
	CreatedAt      time.Time `json:"created_at,omitzero"`
	// Version is the ETag a GET or PUT answered with, as for Target.
	Version string `json:"-"`
}

// AuditEvent is one entry of the audit trail: who did what, on which record and lease,
// with which TTL and outcome; never a secret.
type AuditEvent struct {
	Seq             uint64     `json:"seq"`
	Time            time.Time  `json:"time"`
	Type            string     `json:"type"`
	ClientID        string     `json:"client_id,omitempty"`
	RecordUID       string     `json:"record_uid,omitempty"`
	LeaseID         string     `json:"lease_id,omitempty"`
	TTLSeconds      int        `json:"ttl_seconds,omitempty"`
	ExpiresAt       *time.Time `json:"expires_at,omitempty"`
	Username        string     `json:"username,omitempty"`
	Outcome         string     `json:"outcome,omitempty"`
	Reason          string     `json:"reason,omitempty"`
	Action          string     `json:"action,omitempty"`
	SubjectClientID string     `json:"subject_client_id,omitempty"` // the client a client event is about
}

// AuditPage is one page of the audit trail; NextCursor is set when there may be more.
type AuditPage struct {
	Data       []AuditEvent `json:"data"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

// TokenResponse is the token endpoint's answer.
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
}
