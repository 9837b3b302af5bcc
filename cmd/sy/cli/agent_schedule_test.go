package cli

import (
	"fmt"
	"testing"
	"time"
)

func TestRenewalDelay(t *testing.T) {
	tests := []struct {
		name   string
		left   time.Duration
		jitter float64
		want   time.Duration
	}{
		{name: "two thirds", left: 3 * time.Hour, jitter: 0, want: 2 * time.Hour},
		{name: "jitter takes up to a tenth off", left: 3 * time.Hour, jitter: 0.5, want: 2*time.Hour - 9*time.Minute},
		{name: "short lease", left: 3 * time.Second, jitter: 0, want: 2 * time.Second},
		{name: "expired", left: -time.Second, jitter: 0.3, want: 0},
		{name: "nothing left", left: 0, jitter: 0, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := renewalDelay(tt.left, tt.jitter); (got - tt.want).Abs() > time.Microsecond {
				t.Errorf("renewalDelay(%v, %v) = %v, want %v", tt.left, tt.jitter, got, tt.want)
			}
		})
	}
	for _, j := range []float64{0, 0.25, 0.5, 0.999} {
		left := time.Hour
		if d := renewalDelay(left, j); d > left*2/3 || d < left*56/100 {
			t.Errorf("renewalDelay(1h, %v) = %v, want between 56%% and 67%% of the time left", j, d)
		}
	}
}

func TestRenewalCapped(t *testing.T) {
	e := time.Date(2026, 4, 6, 13, 0, 0, 0, time.UTC)
	tests := []struct {
		name          string
		before, after time.Time
		elapsed       time.Duration
		want          bool
	}{
		{name: "moved as far as the time passed", before: e, after: e.Add(40 * time.Minute), elapsed: 40 * time.Minute},
		{name: "moved further (request latency)", before: e, after: e.Add(41 * time.Minute), elapsed: 40 * time.Minute},
		{name: "a truncated second short", before: e, after: e.Add(40*time.Minute - 999*time.Millisecond), elapsed: 40 * time.Minute},
		{name: "a whole second short", before: e, after: e.Add(40*time.Minute - time.Second), elapsed: 40 * time.Minute, want: true},
		{name: "held at the cap", before: e, after: e, elapsed: 40 * time.Minute, want: true},
		{name: "moved, but to the cap", before: e, after: e.Add(20 * time.Minute), elapsed: 40 * time.Minute, want: true},
		{name: "short lease moved", before: e, after: e.Add(2 * time.Second), elapsed: 2600 * time.Millisecond},
		{name: "short lease held", before: e, after: e, elapsed: 2 * time.Second, want: true},
		{name: "renewed at once", before: e, after: e, elapsed: 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := renewalCapped(tt.before, tt.after, tt.elapsed); got != tt.want {
				t.Errorf("renewalCapped(+%v, %v) = %v, want %v", tt.after.Sub(tt.before), tt.elapsed, got, tt.want)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	tests := []struct {
		name     string
		failures int
		left     time.Duration
		jitter   float64
		want     time.Duration
	}{
		{name: "first retry", failures: 1, jitter: 0.5, want: 500 * time.Millisecond},
		{name: "doubles", failures: 2, jitter: 0.5, want: time.Second},
		{name: "doubles again", failures: 4, jitter: 0.5, want: 4 * time.Second},
		{name: "at most 30 s", failures: 50, jitter: 0.5, want: 30 * time.Second},
		{name: "jitter low", failures: 1, jitter: 0, want: 400 * time.Millisecond},
		{name: "jitter high", failures: 50, jitter: 1, want: 36 * time.Second},
		{name: "half the credentials' time left", failures: 50, left: 10 * time.Second, jitter: 0.5, want: 5 * time.Second},
		{name: "a quarter second at least", failures: 50, left: 400 * time.Millisecond, jitter: 0.5, want: 250 * time.Millisecond},
		{name: "never past the expiry", failures: 50, left: 100 * time.Millisecond, jitter: 0.5, want: 100 * time.Millisecond},
		{name: "backoff shorter than the time left", failures: 1, left: time.Hour, jitter: 0.5, want: 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryDelay(tt.failures, tt.left, tt.jitter); got != tt.want {
				t.Errorf("retryDelay(%d, %v, %v) = %v, want %v", tt.failures, tt.left, tt.jitter, got, tt.want)
			}
		})
	}
}

// simulateToCap plays the agent's schedule against a server that behaves as the API
// says: created_at and expires_at in whole seconds, a renewal giving now + ttl but never
// past created_at + limit, each call taking latency. It returns the renewals made before
// one showed the cap, and the time the lease then had left (when the rotation starts).
func simulateToCap(t *testing.T, ttl, limit, phase, latency time.Duration, jitter float64) (renewals int, left time.Duration) {
	t.Helper()
	start := time.Date(2026, 4, 6, 12, 0, 0, 0, time.UTC).Add(phase)
	created := start.Truncate(time.Second)
	capAt := created.Add(min(limit, 24*time.Hour))
	exp := created.Add(ttl)
	answered := start.Add(latency)
	for ; renewals < 1000; renewals++ {
		sent := answered.Add(renewalDelay(exp.Sub(answered), jitter))
		if !sent.Before(exp) {
			t.Fatalf("renewal %d sent at %v, after the lease expired at %v", renewals+1, sent, exp)
		}
		next := sent.Add(latency / 2).Add(ttl).Truncate(time.Second)
		if next.After(capAt) {
			next = capAt
		}
		recv := sent.Add(latency)
		if renewalCapped(exp, next, sent.Sub(answered)) {
			if !next.Equal(capAt) {
				t.Fatalf("renewal %d taken for capped at %v, the cap is %v", renewals+1, next, capAt)
			}
			return renewals, next.Sub(recv)
		}
		exp, answered = next, recv
	}
	t.Fatal("no renewal showed the cap")
	return 0, 0
}

// TestSchedule_RenewThenRotate: whatever the phase of the second the lease was created
// in, the latency and the jitter, the agent renews while renewing helps, sees the cap
// only when it is there, and starts the rotation with at least a third of a lease
// (less the server's rounding) left: the room --grace must fit in.
func TestSchedule_RenewThenRotate(t *testing.T) {
	tests := []struct {
		ttl, limit  time.Duration
		minRenewals int
	}{
		{ttl: 4 * time.Second, limit: 6 * time.Second, minRenewals: 1},
		{ttl: 3 * time.Second, limit: 6 * time.Second, minRenewals: 1},
		{ttl: 15 * time.Second, limit: time.Minute, minRenewals: 3},
		{ttl: time.Hour, limit: 24 * time.Hour, minRenewals: 30},
		{ttl: time.Hour, limit: 2 * time.Hour, minRenewals: 1},
		{ttl: 24 * time.Hour, limit: 24 * time.Hour},
		{ttl: 10 * time.Minute, limit: 10 * time.Minute},
	}
	for _, tt := range tests {
		for _, phase := range []time.Duration{0, 300 * time.Millisecond, 950 * time.Millisecond} {
			for _, latency := range []time.Duration{time.Millisecond, 80 * time.Millisecond} {
				for _, jitter := range []float64{0, 0.5, 0.99} {
					name := fmt.Sprintf("ttl %v limit %v phase %v latency %v jitter %v", tt.ttl, tt.limit, phase, latency, jitter)
					t.Run(name, func(t *testing.T) {
						renewals, left := simulateToCap(t, tt.ttl, tt.limit, phase, latency, jitter)
						if renewals < tt.minRenewals {
							t.Errorf("%d renewals before the cap, want at least %d", renewals, tt.minRenewals)
						}
						if floor := (tt.ttl - 2*time.Second) / 3; left < floor {
							t.Errorf("the rotation starts with %v left, want at least %v", left, floor)
						}
					})
				}
			}
		}
	}
}
