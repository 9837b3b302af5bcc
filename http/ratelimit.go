package http

import (
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/syvault/syvault/events"
)

// clientLimits bounds how fast each app client may ask this process for tokens, lease
// creates and renewals, and how many of its refused mutations are recorded: each create
// or renewal makes a database user or statement, takes a turn of its target's workers and
// appends an event the audit log keeps for good, as each recorded refusal does, and each
// token stores its assertion's id for minutes, so one client in a loop would otherwise
// slow every other client of the target and grow the store without bound. Admins are
// not limited. A token bucket per client; nil when the server sets no limit.
type clientLimits struct {
	every rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	*rate.Limiter
	warned [2]time.Time // when a refusal of each kind of this client was last logged
}

// refusal is what a refusal of take's is for, each logged once a minute on its own: a
// client's 429s must not hide that its denials go unrecorded, nor the other way round.
type refusal int

const (
	limited    refusal = iota // a request answered 429
	unrecorded                // a denial not recorded in the audit trail
)

// newClientLimits allows perSecond requests a second to each client, in bursts of up to
// twice that, and at least two (a token and the request it is for); nil (no limit) for
// perSecond <= 0.
func newClientLimits(perSecond float64) *clientLimits {
	if perSecond <= 0 {
		return nil
	}
	return &clientLimits{every: rate.Limit(perSecond), burst: max(2, int(math.Ceil(2*perSecond))), buckets: map[string]*bucket{}}
}

// newDenialLimits bounds the refused mutations recorded for each app client when the
// server sets no client rate limit: one every ten seconds, in bursts of ten. Past that
// they are refused just the same and counted, not recorded: a client looping on a
// refused request would otherwise grow the audit log, which nothing may trim, by
// thousands of events a second, until its disk was full and no revocation could be
// recorded.
func newDenialLimits() *clientLimits {
	return &clientLimits{every: 0.1, burst: 10, buckets: map[string]*bucket{}}
}

// take spends one of client's requests, or tells how long until it has one and whether
// this refusal is the first of its kind for the client in a minute (worth a log line;
// the rest are counted only, so that a client hammering the API cannot flood the log
// either).
func (l *clientLimits) take(client string, kind refusal, now time.Time) (wait time.Duration, ok, first bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		// A full bucket is what a new one would be: forget it, so the map holds only
		// the clients that asked lately.
		for id, b := range l.buckets {
			if b.TokensAt(now) >= float64(l.burst) {
				delete(l.buckets, id)
			}
		}
		l.swept = now
	}
	b := l.buckets[client]
	if b == nil {
		b = &bucket{Limiter: rate.NewLimiter(l.every, l.burst)}
		l.buckets[client] = b
	}
	if b.AllowN(now, 1) {
		return 0, true, false
	}
	if first = now.Sub(b.warned[kind]) >= time.Minute; first {
		b.warned[kind] = now
	}
	need := 1 - b.TokensAt(now)
	return time.Duration(need / float64(l.every) * float64(time.Second)), false, first
}

// limitClient refuses an app client's request past its rate (429 rate_limited, with
// Retry-After) before its lease or target is read and before anything is recorded: a
// refusal costs the store only the token's client look-up every request makes.
func (s *Server) limitClient(c echo.Context, action string) error {
	return s.limit(c, clientOf(c), action)
}

// limit is limitClient for client, who may not be the request's authenticated client
// yet (a token request).
func (s *Server) limit(c echo.Context, client events.Client, action string) error {
	if s.limits == nil || client.Role == events.RoleAdmin {
		return nil
	}
	wait, ok, first := s.limits.take(client.ClientID, limited, time.Now())
	if ok {
		c.Set(chargedKey, true) // its refusal, if it is refused, is recorded without a second charge
		return nil
	}
	s.cfg.Observer.RateLimited(action)
	secs := max(1, int(math.Ceil(wait.Seconds())))
	if first {
		s.log.Warn("a client asks faster than --client-rate-limit; its requests are refused (429) until it slows down",
			"client_id", client.ClientID, "action", action, "retry_after_seconds", secs)
	}
	c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
	return events.Errorf(events.ERateLimited, "This client asks for tokens, lease creates and renewals faster than the server allows (%s a second, in bursts of %d); retry after %d s.",
		strconv.FormatFloat(float64(s.limits.every), 'g', -1, 64), s.limits.burst, secs)
}

// chargedKey marks a request limitClient let through: it has paid its share already.
const chargedKey = "syvault.rate-charged"

// recordsDenial says whether an app client's refused mutation is to be recorded in the
// audit trail: past its rate (--client-rate-limit, or without one newDenialLimits') it
// is refused just the same, but only counted (as "denied" in
// syvault_rate_limited_total), so refusals cannot grow the audit log without bound. A
// lease create or renewal refused by authorization paid at limitClient and is recorded.
func (s *Server) recordsDenial(c echo.Context, client events.Client) bool {
	if client.Role == events.RoleAdmin || c.Get(chargedKey) != nil {
		return true
	}
	limits := s.limits
	if limits == nil {
		limits = s.denials
	}
	_, ok, first := limits.take(client.ClientID, unrecorded, time.Now())
	if ok {
		return true
	}
	if first {
		s.log.Warn("a client's refused requests come faster than they are recorded; the rest are refused and counted, not recorded",
			"client_id", client.ClientID)
	}
	s.cfg.Observer.RateLimited("denied")
	return false
}
