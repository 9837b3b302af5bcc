package workers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/workers/driver"
)

// instrumented wraps a driver once: every error it returns is scrubbed of the secrets of
// the request that caused it, message and cause alike, every call is timed for metrics,
// and no call reaches an account that is not a lease user's (leaseUser).
// Drivers promise never to put a secret in an error; this is the layer that does not rely
// on the promise.
type instrumented struct {
	d      driver.Driver
	engine events.Engine
	obs    Observer
}

var (
	_ driver.Driver      = instrumented{}
	_ driver.UserGranter = instrumented{}
	_ driver.UserLister  = instrumented{}
)

func (i instrumented) done(op string, start time.Time, err error, secrets ...string) error {
	if err == nil {
		i.obs.DriverCall(i.engine, op, time.Since(start), "")
		return nil
	}
	i.obs.DriverCall(i.engine, op, time.Since(start), events.ErrorCode(err))
	cause := err
	if ee, ok := err.(*events.Error); ok {
		cause = ee.Err // its code and message are the new error's: said once
	}
	return &events.Error{Code: events.ErrorCode(err), Message: driver.Scrub(errors.New(events.ErrorMessage(err)), secrets...).Error(),
		Err: driver.Scrub(cause, secrets...)}
}

func (i instrumented) Prepare(ctx context.Context, req driver.PrepareRequest) error {
	start := time.Now()
	return i.done("prepare", start, i.d.Prepare(ctx, req), req.Conn.Password)
}

func (i instrumented) CreateUser(ctx context.Context, req driver.CreateUserRequest) error {
	if err := leaseUser(req.Username); err != nil {
		return err
	}
	start := time.Now()
	return i.done("create_user", start, i.d.CreateUser(ctx, req), req.Conn.Password, req.Password)
}

func (i instrumented) RenewUser(ctx context.Context, req driver.RenewUserRequest) error {
	if err := leaseUser(req.Username); err != nil {
		return err
	}
	start := time.Now()
	return i.done("renew_user", start, i.d.RenewUser(ctx, req), req.Conn.Password)
}

func (i instrumented) DropUser(ctx context.Context, req driver.DropUserRequest) error {
	if leaseUser(req.Username) != nil {
		return nil // never made, so nothing to drop
	}
	start := time.Now()
	return i.done("drop_user", start, i.d.DropUser(ctx, req), req.Conn.Password)
}

func (i instrumented) RemoveTarget(ctx context.Context, req driver.RemoveTargetRequest) error {
	start := time.Now()
	return i.done("remove_target", start, i.d.RemoveTarget(ctx, req), req.Conn.Password)
}

// batches reports whether the driver drops users in batches (see driver.BatchDropper).
func (i instrumented) batches() bool {
	_, ok := i.d.(driver.BatchDropper)
	return ok
}

// DropUsers drops a batch through a driver.BatchDropper (see batches), timed as one
// call; each error is scrubbed like DropUser's.
func (i instrumented) DropUsers(ctx context.Context, reqs []driver.DropUserRequest) []error {
	start := time.Now()
	var ours []driver.DropUserRequest // never made, so nothing to drop: the others
	var at []int
	for k, r := range reqs {
		if leaseUser(r.Username) == nil {
			ours, at = append(ours, r), append(at, k)
		}
	}
	errs := make([]error, len(reqs))
	if len(ours) > 0 {
		got := i.d.(driver.BatchDropper).DropUsers(ctx, ours)
		for n := range ours {
			err := errors.New("the driver answered a batch drop with the wrong number of results")
			if len(got) == len(ours) {
				err = got[n]
			}
			errs[at[n]] = err
		}
	}
	failed := 0
	for k, err := range errs {
		if err != nil {
			failed++
			errs[k] = i.done("drop_user", start, err, reqs[k].Conn.Password)
		}
	}
	if failed == 0 {
		i.obs.DriverCall(i.engine, "drop_users", time.Since(start), "")
	}
	return errs
}

// UpdateUser passes through to drivers that grant per user; for the others there is
// nothing to update (see driver.UserGranter).
func (i instrumented) UpdateUser(ctx context.Context, req driver.UpdateUserRequest) error {
	g, ok := i.d.(driver.UserGranter)
	if !ok {
		return nil
	}
	if leaseUser(req.Username) != nil {
		return nil // never made, so nothing to regrant (a PUT is not held up by it)
	}
	start := time.Now()
	return i.done("update_user", start, g.UpdateUser(ctx, req), req.Conn.Password)
}

// ListUsers passes through to drivers that list their users; for the others it fails
// with EInternal, since reconciliation cannot see that engine's users.
func (i instrumented) ListUsers(ctx context.Context, req driver.ListUsersRequest) ([]driver.ListedUser, error) {
	l, ok := i.d.(driver.UserLister)
	if !ok {
		return nil, events.Errorf(events.EInternal, "The %s driver cannot list its users.", i.engine)
	}
	start := time.Now()
	users, err := l.ListUsers(ctx, req)
	return users, i.done("list_users", start, err, req.Conn.Password)
}

func (i instrumented) Close() error { return i.d.Close() }

// leaseUser refuses a username not shaped as the lease usernames SyVault makes. A lease's
// username comes from its events, which whoever can write to NATS can forge: through the
// admin, a create, renewal, regrant or drop of another name would reach any account the
// admin may change (an application's own role, the admin itself). SyVault made no user of
// another shape, so a drop of one has nothing to do.
func leaseUser(name string) error {
	if driver.IsLeaseUsername(name) {
		return nil
	}
	return &events.Error{Code: events.EInternal, Err: jsstore.ErrPermanent,
		Message: fmt.Sprintf("%q is not a lease username; SyVault changes no other account.", name)}
}
