package events

import "time"

// Client event types.
const (
	ClientRegistered Type = "client.registered"
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
	CreatedAt      time.Time `json:"created_at"`
}

const clientPrefix = "syvault.client."

// ClientSubjects filters the events stream to client events.
const ClientSubjects = clientPrefix + "*"

// ClientSubject holds every event of one client.
func ClientSubject(clientID string) string { return clientPrefix + clientID }
