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

// clientLimits bounds how fast each app client may ask this process for lease creates
// and renewals: each makes a database user or statement, appends an event the audit log
// keeps for good and takes a turn of its target's workers, so one client in a loop would
// otherwise slow every other client of the target and grow the store without bound.
// Admins are not limited. A token bucket per client; nil when the server sets no limit.
type clientLimits struct {
	every rate.Limit
	burst int

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	swept    time.Time
}

// newClientLimits allows perSecond requests a second to each client, in bursts of up to
// twice that (at least one); nil (no limit) for perSecond <= 0.
func newClientLimits(perSecond float64) *clientLimits {
	if perSecond <= 0 {
		return nil
	}
	return &clientLimits{every: rate.Limit(perSecond), burst: max(1, int(math.Ceil(2*perSecond))), limiters: map[string]*rate.Limiter{}}
}

// take spends one of client's requests, or tells how long until it has one.
func (l *clientLimits) take(client string, now time.Time) (wait time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		// A full bucket is what a new one would be: forget it, so the map holds only
		// the clients that asked lately.
		for id, lim := range l.limiters {
			if lim.TokensAt(now) >= float64(l.burst) {
				delete(l.limiters, id)
			}
		}
		l.swept = now
	}
	lim := l.limiters[client]
	if lim == nil {
		lim = rate.NewLimiter(l.every, l.burst)
		l.limiters[client] = lim
	}
	if lim.AllowN(now, 1) {
		return 0, true
	}
	need := 1 - lim.TokensAt(now)
	return time.Duration(need / float64(l.every) * float64(time.Second)), false
}

// limitClient refuses an app client's request past its rate (429 rate_limited, with
// Retry-After), before anything is read or recorded for it: a refusal costs the store
// nothing, so a client hammering the API cannot grow the audit log either.
func (s *Server) limitClient(c echo.Context, action string) error {
	client := clientOf(c)
	if s.limits == nil || client.Role == events.RoleAdmin {
		return nil
	}
	wait, ok := s.limits.take(client.ClientID, time.Now())
	if ok {
		return nil
	}
	s.cfg.Observer.RateLimited(action)
	secs := max(1, int(math.Ceil(wait.Seconds())))
	c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
	return events.Errorf(events.ERateLimited, "This client asks for lease creates and renewals faster than the server allows (%s a second, in bursts of %d); retry after %d s.",
		strconv.FormatFloat(float64(s.limits.every), 'g', -1, 64), s.limits.burst, secs)
}
