package cli

import (
	"time"
)

// The timing of sy agent: when to renew, how to tell that a renewal hit the lease's cap,
// and how long to wait after a failure. These are pure functions of their arguments
// (randomness comes in as jitter in [0, 1)), so that the tests can pin them down.

const (
	// retryFirst and retryMax bound the backoff between failed attempts: the first retry
	// comes soon (a server restart takes seconds), later ones no more often than this.
	retryFirst = 500 * time.Millisecond
	retryMax   = 30 * time.Second
	// retryMin keeps the attempts made just before the credentials expire apart.
	retryMin = 250 * time.Millisecond
	// serverTimeResolution is the precision of the server's expires_at (whole seconds).
	serverTimeResolution = time.Second
)

// renewalDelay is how long to wait before renewing a lease with left to live: two thirds
// of it, less up to a tenth of it at random, so that agents started together (a scaled-up
// Deployment) do not renew together. What remains, a third or more, is the time a
// rotation starts with when the renewal shows that the lease is at its cap.
func renewalDelay(left time.Duration, jitter float64) time.Duration {
	if left <= 0 {
		return 0
	}
	return time.Duration(float64(left) * (2.0/3 - jitter/10))
}

// renewalCapped reports whether a renewal came back short: the server moved expires_at
// from before to after, and a renewal that nothing capped would have moved it by at
// least elapsed, the time between the previous answer about the lease and this request,
// less the second the server truncates to. A shorter move means the server held it at
// the lease's cap (24 h from created_at, or the target's or client's max_ttl_seconds),
// so no later renewal can move it further and the lease must be replaced.
//
// Only local durations and the server's own times are compared, so a clock that differs
// from the server's changes nothing.
func renewalCapped(before, after time.Time, elapsed time.Duration) bool {
	return after.Sub(before) <= elapsed-serverTimeResolution
}

// retryDelay is how long to wait before the next attempt after failures consecutive
// failed ones: 0.5 s doubling up to 30 s, give or take a fifth at random. While
// credentials are held that expire in left, it is at most half of that (and at least
// a quarter second, but never past the expiry), so that the last attempts come before
// they expire; left <= 0 means none are held.
func retryDelay(failures int, left time.Duration, jitter float64) time.Duration {
	d := retryFirst
	for i := 1; i < failures && d < retryMax; i++ {
		d *= 2
	}
	d = min(d, retryMax)
	d = time.Duration(float64(d) * (0.8 + 0.4*jitter))
	if left > 0 {
		d = min(d, max(left/2, retryMin), left)
	}
	return d
}
