package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/http/client"
)

// The loop of sy agent: renew, rotate, retry, revoke, and stop.

// agent is one run of sy agent. Everything happens on one goroutine.
type agent struct {
	app    *app
	api    agentAPI
	o      agentOptions
	log    *slog.Logger
	sigs   <-chan os.Signal
	child  *child // nil without --exec
	jitter func() float64

	cur      *heldLease   // the lease whose credentials the application uses
	retiring []*heldLease // leases a rotation replaced, to revoke after --grace
}

// heldLease is a lease sy agent holds and what it knows about it.
type heldLease struct {
	lease    *client.Lease
	answered time.Time // when the last answer about it (create or renewal) came
	next     time.Time // when to act on it next: renew or replace it, or revoke it if retiring
	failures int       // failed attempts in a row
	replace  bool      // renewing is of no more use: at its cap, or ended
	ended    bool      // the server said it has ended
}

// usable reports whether its credentials still work at now, as far as sy agent knows.
func (h *heldLease) usable(now time.Time) bool {
	return !h.ended && now.Before(h.lease.ExpiresAt)
}

func (g *agent) run(ctx context.Context) error {
	l, err := g.obtain(ctx)
	l, err = g.waitOut(ctx, "obtain", l, err)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before there was anything to clean up
		}
		return err
	}
	g.hold(l)
	if g.o.once {
		return nil
	}
	if g.child != nil {
		if err := g.child.start(l); err != nil {
			return g.fail(ctx, err)
		}
		g.log.Info("application started", "pid", g.child.pid())
	}
	for {
		timer := time.NewTimer(time.Until(g.wakeAt()))
		select {
		case sig := <-g.sigs:
			timer.Stop()
			return g.shutdown(ctx, sig)
		case <-ctx.Done():
			timer.Stop()
			return g.shutdown(ctx, g.received())
		case <-g.childExited():
			timer.Stop()
			return g.applicationExited(ctx)
		case <-timer.C:
		}
		if err := g.tick(ctx); err != nil {
			return g.fail(ctx, err)
		}
	}
}

// received is the signal that cancelled the context. The runtime hands a signal to
// main's signal.NotifyContext and to g.sigs one after the other, in no set order, so it
// may reach g.sigs a moment later; taken from there, it is not mistaken for a second
// signal. SIGTERM when none comes: the caller of Main cancelled the context itself.
func (g *agent) received() os.Signal {
	t := time.NewTimer(signalLag)
	defer t.Stop()
	select {
	case s := <-g.sigs:
		return s
	case <-t.C:
		return stopSignal
	}
}

func (g *agent) childExited() <-chan struct{} {
	if g.child == nil {
		return nil
	}
	return g.child.exited()
}

// wakeAt is when the next thing is due: renewing the lease or revoking a replaced one.
func (g *agent) wakeAt() time.Time {
	at := g.cur.next
	for _, r := range g.retiring {
		if r.next.Before(at) {
			at = r.next
		}
	}
	return at
}

// opContext is the context of one call to the server. A signal does not cut a call
// short: sy agent finishes it, so that it knows of every lease it has to clean up.
func opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), agentOpTimeout)
}

func (g *agent) describe(err error) string { return g.app.describe(context.Background(), err) }

// tick does what is due.
func (g *agent) tick(ctx context.Context) error {
	now := time.Now()
	kept := g.retiring[:0]
	for _, r := range g.retiring {
		if now.Before(r.next) || g.revokeRetiring(ctx, r) {
			kept = append(kept, r)
		}
	}
	g.retiring = kept
	if now.Before(g.cur.next) {
		return nil
	}
	return g.refresh(ctx)
}

// obtain creates a lease and writes its files. A lease whose files cannot be written is
// revoked again.
func (g *agent) obtain(ctx context.Context) (*client.Lease, error) {
	octx, cancel := opContext(ctx)
	defer cancel()
	l, err := g.api.CreateLease(octx, g.o.recordUID, g.o.ttl)
	if err != nil {
		return nil, err
	}
	g.log.Info("lease obtained", "lease_id", l.LeaseID, "username", l.Username, "expires_at", formatTime(l.ExpiresAt))
	if err := g.o.files.write(l); err != nil {
		return nil, g.app.undelivered(octx, g.api, l, err)
	}
	if paths := g.o.files.paths(); len(paths) > 0 {
		g.log.Info("credentials written", "lease_id", l.LeaseID, "files", strings.Join(paths, ","))
	}
	return l, nil
}

// waitOut asks for a lease again, when the server says, while its client rate limit
// refuses one (l, err: the first answer), rather than failing: a fleet starting at once,
// or rotating at once after its leases were revoked, would otherwise have its sidecars
// exit and be restarted by Kubernetes with ever longer delays.
func (g *agent) waitOut(ctx context.Context, op string, l *client.Lease, err error) (*client.Lease, error) {
	for wait, limited := rateLimited(err); limited && ctx.Err() == nil; wait, limited = rateLimited(err) {
		wait += time.Duration(g.jitter() * float64(time.Second)) // out of step with the rest of the fleet
		g.log.Warn("rate limited; asking again", "op", op, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
		case <-time.After(wait):
			l, err = g.obtain(ctx)
		}
	}
	return l, err
}

// rateLimited says whether err is the server's client rate limit, and how long it said
// to wait (at least a second).
func rateLimited(err error) (time.Duration, bool) {
	var e *client.Error
	if !errors.As(err, &e) || e.Code != string(events.ERateLimited) {
		return 0, false
	}
	return max(e.RetryAfter, time.Second), true
}

// hold makes l the current lease and schedules its first renewal.
func (g *agent) hold(l *client.Lease) {
	now := time.Now()
	g.cur = &heldLease{lease: l, answered: now, next: now.Add(renewalDelay(l.ExpiresAt.Sub(now), g.jitter()))}
}

// refresh renews the current lease, or replaces it when renewing is of no more use.
func (g *agent) refresh(ctx context.Context) error {
	cur := g.cur
	if cur.replace || !cur.usable(time.Now()) {
		return g.rotate(ctx)
	}
	octx, cancel := opContext(ctx)
	defer cancel()
	sent := time.Now()
	info, err := g.api.RenewLease(octx, cur.lease.LeaseID, g.o.ttl)
	now := time.Now()
	var apiErr *client.Error
	switch {
	case err == nil:
		capped := renewalCapped(cur.lease.ExpiresAt, info.ExpiresAt, sent.Sub(cur.answered))
		cur.lease.ExpiresAt = info.ExpiresAt
		cur.answered, cur.failures = now, 0
		g.log.Info("lease renewed", "lease_id", cur.lease.LeaseID, "expires_at", formatTime(info.ExpiresAt), "at_cap", capped)
		if err := g.o.files.write(cur.lease); err != nil {
			// The credentials themselves are unchanged: only expires_at in the files is old.
			g.log.Warn("files not updated", "lease_id", cur.lease.LeaseID, "error", g.describe(err))
		}
		if capped {
			cur.replace = true
			return g.rotate(ctx)
		}
		cur.next = now.Add(renewalDelay(info.ExpiresAt.Sub(now), g.jitter()))
	case errors.As(err, &apiErr) && (apiErr.Status == http.StatusNotFound || apiErr.Status == http.StatusConflict):
		// Revoked by someone else, or expired: its credentials work no more.
		cur.replace, cur.ended = true, true
		g.log.Warn("lease ended", "lease_id", cur.lease.LeaseID, "error", g.describe(err))
		return g.rotate(ctx)
	default:
		g.retry(cur, "renew", err)
	}
	return nil
}

// rotate replaces the current lease with a new one: writes it, tells the application,
// and leaves the old one to be revoked after --grace. If no new lease can be had it
// retries later while the current credentials work, and fails once they do not.
func (g *agent) rotate(ctx context.Context) error {
	old := g.cur
	l, err := g.obtain(ctx)
	if old.ended || !old.usable(time.Now()) { // nothing to fall back on meanwhile
		l, err = g.waitOut(ctx, "rotate", l, err)
	}
	now := time.Now()
	if err != nil {
		switch {
		case old.ended:
			return fmt.Errorf("lease %s has ended and no new lease could be had: %s", old.lease.LeaseID, g.describe(err))
		case !old.usable(now):
			return fmt.Errorf("lease %s expired at %s and no new lease could be had: %s", old.lease.LeaseID, formatTime(old.lease.ExpiresAt), g.describe(err))
		}
		g.retry(old, "rotate", err)
		return nil
	}
	g.hold(l)
	g.log.Info("lease rotated", "old_lease_id", old.lease.LeaseID, "lease_id", l.LeaseID, "grace", g.o.grace)
	if err := g.notify(l); err != nil {
		return err
	}
	if old.usable(now) {
		old.next, old.failures = now.Add(g.o.grace), 0
		g.retiring = append(g.retiring, old)
	}
	return nil
}

// retry schedules another attempt at op on h after a failure, and says so. A refusal by
// the client rate limit is asked again when the server said (plus up to a second, out of
// step with the rest of the fleet): an earlier attempt would likely be refused too, each
// refusal one more look-up of the client on the server. But never later than half the
// credentials' time left, the backoff's own cap: a wait to just before the expiry would
// leave no room for another attempt should that one fail (another API process, with an
// allowance of its own, may take one).
func (g *agent) retry(h *heldLease, op string, err error) {
	h.failures++
	now := time.Now()
	left := h.lease.ExpiresAt.Sub(now)
	d := retryDelay(h.failures, left, g.jitter())
	if wait, limited := rateLimited(err); limited && left > 0 {
		wait += time.Duration(g.jitter() * float64(time.Second))
		d = max(d, min(wait, left/2))
	}
	h.next = now.Add(d)
	g.log.Warn("retrying", "op", op, "lease_id", h.lease.LeaseID, "attempt", h.failures, "retry_in", d.Round(time.Millisecond),
		"credentials_valid_until", formatTime(h.lease.ExpiresAt), "error", g.describe(err))
}

// notify tells the application that new credentials are in place.
func (g *agent) notify(l *client.Lease) error {
	switch {
	case g.child != nil && g.o.signal == nil:
		old := g.child.pid()
		g.child.stop(stopSignal, childStopTimeout)
		if err := g.child.start(l); err != nil {
			return err
		}
		g.log.Info("application restarted", "old_pid", old, "pid", g.child.pid())
	case g.child != nil:
		if err := g.child.signal(g.o.signal); err != nil {
			g.log.Warn("application not signalled", "signal", signalName(g.o.signal), "pid", g.child.pid(), "error", err)
			return nil
		}
		g.log.Info("application signalled", "signal", signalName(g.o.signal), "pid", g.child.pid())
	case g.o.pidFile != "":
		pid, err := signalPIDFile(g.o.pidFile, g.o.signal)
		if err != nil {
			// It may be restarting, and then reads the new files anyway.
			g.log.Warn("application not signalled", "signal", signalName(g.o.signal), "pid_file", g.o.pidFile, "error", err)
			return nil
		}
		g.log.Info("application signalled", "signal", signalName(g.o.signal), "pid", pid)
	}
	return nil
}

// revokeRetiring revokes a replaced lease whose grace period is over, and reports
// whether it must be kept for another attempt.
func (g *agent) revokeRetiring(ctx context.Context, r *heldLease) (keep bool) {
	err := g.revoke(ctx, r)
	if err == nil || !r.usable(time.Now()) {
		return false // done, or it has expired by itself meanwhile
	}
	g.retry(r, "revoke", err)
	return true
}

// revoke revokes h. It is settled (nil) once the lease is revoked, has ended already,
// or the server has recorded the revocation and finishes it when the database answers
// (502, 504); otherwise the error says why not.
func (g *agent) revoke(ctx context.Context, h *heldLease) error {
	octx, cancel := opContext(ctx)
	defer cancel()
	id := h.lease.LeaseID
	err := g.api.RevokeLease(octx, id)
	var apiErr *client.Error
	switch {
	case err == nil:
		g.log.Info("lease revoked", "lease_id", id)
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
		g.log.Info("lease already ended", "lease_id", id)
	case errors.As(err, &apiErr) && (apiErr.Status == http.StatusBadGateway || apiErr.Status == http.StatusGatewayTimeout):
		g.log.Warn("lease revocation recorded, the server finishes it when the database answers", "lease_id", id, "error", g.describe(err))
	default:
		return err
	}
	return nil
}

// release revokes the leases sy agent still holds, the current one unless keepCurrent,
// when it stops. Leases that have expired or ended are left alone.
func (g *agent) release(ctx context.Context, keepCurrent bool) error {
	leases := g.retiring
	if keepCurrent {
		g.log.Info("lease kept", "lease_id", g.cur.lease.LeaseID, "expires_at", formatTime(g.cur.lease.ExpiresAt))
	} else {
		leases = append(leases, g.cur)
	}
	var errs []error
	for _, h := range leases {
		if !h.usable(time.Now()) {
			continue
		}
		if err := g.revoke(ctx, h); err != nil {
			errs = append(errs, fmt.Errorf("lease %s could not be revoked (%s); it expires at %s",
				h.lease.LeaseID, g.describe(err), formatTime(h.lease.ExpiresAt)))
		}
	}
	return errors.Join(errs...)
}

// shutdown passes sig on to the application, waits for it, and releases the leases.
func (g *agent) shutdown(ctx context.Context, sig os.Signal) error {
	g.log.Info("stopping", "signal", signalName(sig))
	if g.child != nil {
		if err := g.child.signal(sig); err != nil {
			g.log.Warn("application not signalled", "pid", g.child.pid(), "error", err)
		}
		g.awaitChild()
	}
	return g.release(ctx, g.o.keepOnExit)
}

// awaitChild waits for the application to exit; another signal kills it.
func (g *agent) awaitChild() {
	for {
		select {
		case <-g.child.exited():
			status, _ := g.child.status()
			g.log.Info("application exited", "status", status)
			return
		case sig := <-g.sigs:
			g.log.Warn("killing the application", "signal", signalName(sig), "pid", g.child.pid())
			_ = g.child.signal(os.Kill)
		}
	}
}

// applicationExited ends sy agent after the --exec application exited by itself, with
// its exit status.
func (g *agent) applicationExited(ctx context.Context) error {
	status, code := g.child.status()
	g.log.Info("application exited", "status", status)
	if err := g.release(ctx, g.o.keepOnExit); err != nil {
		return err
	}
	if code != ExitOK {
		return &exitError{code: code, msg: "the application exited with " + status}
	}
	return nil
}

// fail ends sy agent after err: the application is stopped, since its credentials no
// longer work (or it could not be started), and what sy agent holds is released.
func (g *agent) fail(ctx context.Context, err error) error {
	g.log.Error("giving up", "error", g.describe(err))
	if g.child != nil && g.child.cmd != nil {
		g.child.stop(stopSignal, childStopTimeout)
		status, _ := g.child.status()
		g.log.Info("application stopped", "status", status)
	}
	return errors.Join(err, g.release(ctx, false))
}
