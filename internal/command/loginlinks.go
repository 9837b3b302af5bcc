package command

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
)

// LoginLinksBucket holds the dashboard's one-time login codes, under their SHA-256 only:
// whoever reads the bucket learns no code it could use.
const LoginLinksBucket = "SYVAULT_UI_LOGINS"

// LoginLinkTTL is how long a login link works: long enough to open it from a terminal,
// short enough that one left in a scrollback is worthless.
const LoginLinkTTL = 60 * time.Second

// loginLinks hands out and takes back the codes of dashboard login links.
type loginLinks struct {
	tickets *jsstore.Tickets
	ttl     time.Duration
	now     func() time.Time
}

// loginTicket is what a code stands for. The expiry is checked on use too, since the
// bucket drops entries only on its own schedule.
type loginTicket struct {
	ClientID  string    `json:"client_id"`
	Key       string    `json:"ckf,omitempty"` // the fingerprint of the client's key the link was had with
	ExpiresAt time.Time `json:"expires_at"`
}

func openLoginLinks(ctx context.Context, store *jsstore.Store) (*loginLinks, error) {
	t, err := store.OpenTickets(ctx, LoginLinksBucket, "One-time dashboard login codes (by hash), until they are used or expire", LoginLinkTTL)
	if err != nil {
		return nil, err
	}
	return &loginLinks{tickets: t, ttl: LoginLinkTTL, now: time.Now}, nil
}

func loginKey(code string) string {
	sum := sha256.Sum256([]byte(code))
	return hex.EncodeToString(sum[:])
}

// CreateLoginLink makes a one-time login code for the client clientID (authorized by the
// caller) and the fingerprint of the key its caller was had with: the dashboard trades it
// for a session once, within LoginLinkTTL, while the client still has that key. The code
// has 130 random bits.
func (s *Service) CreateLoginLink(ctx context.Context, clientID, key string) (code string, expiresAt time.Time, err error) {
	code = rand.Text()
	expiresAt = s.logins.now().Add(s.logins.ttl).UTC().Truncate(time.Second)
	value, err := json.Marshal(loginTicket{ClientID: clientID, Key: key, ExpiresAt: expiresAt})
	if err != nil {
		return "", time.Time{}, err
	}
	if err := s.logins.tickets.Put(ctx, loginKey(code), value); err != nil {
		return "", time.Time{}, err
	}
	s.log.Info("dashboard login link issued", "client_id", clientID, "expires_at", expiresAt)
	return code, expiresAt, nil
}

// UseLoginLink trades a login code for the id of the client it was made for and the
// fingerprint of the key it was had with, once across every process. An unknown, expired
// or already used code is EUnauthenticated.
func (s *Service) UseLoginLink(ctx context.Context, code string) (clientID, key string, err error) {
	refused := events.Errorf(events.EUnauthenticated, "This login link is unknown, expired or already used; run 'sy ui' for a new one.")
	if code == "" || len(code) > 64 {
		return "", "", refused
	}
	value, ok, err := s.logins.tickets.Take(ctx, loginKey(code))
	if err != nil {
		return "", "", err
	}
	var t loginTicket
	if !ok || json.Unmarshal(value, &t) != nil || !s.logins.now().Before(t.ExpiresAt) {
		return "", "", refused
	}
	s.log.Info("dashboard login link used", "client_id", t.ClientID)
	return t.ClientID, t.Key, nil
}

// EndedSessionsBucket holds the dashboard sessions logged out, under a hash of their
// client and id, until they would have expired: a session is a signed token every
// process accepts on its own, so logging out of one takes a record every process reads.
const EndedSessionsBucket = "SYVAULT_UI_ENDED"

// endedHold outlasts the longest session (an access token's longest lifetime) and a
// clock's drift, counted from the logout.
const endedHold = 24*time.Hour + 2*time.Minute

// EndSession records the dashboard session sessionID of clientID as logged out, for
// longer than it can live (the bucket's hold, not a time of its own: no marker is left
// when it goes): no process accepts it again, a copy of its cookie taken before
// included.
func (s *Service) EndSession(ctx context.Context, clientID, sessionID string) error {
	_, err := s.ended.Reserve(ctx, clientKey(clientID, sessionID), nil, 0) // ended already: as good
	return err
}

// SessionEnded reports whether the dashboard session sessionID of clientID was logged
// out, as the bucket's leader holds it: a logout holds at once in every process, where a
// copy that trails the leader could still let the session in.
func (s *Service) SessionEnded(ctx context.Context, clientID, sessionID string) (bool, error) {
	_, ended, err := s.ended.Holder(ctx, clientKey(clientID, sessionID))
	return ended, err
}
