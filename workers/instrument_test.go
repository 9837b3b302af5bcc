package workers

import (
	"context"
	"errors"
	"testing"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
)

// batchDriver answers a batch drop with results, recording the names it was asked for.
type batchDriver struct {
	driver.Driver
	asked   []string
	results func(n int) []error
}

func (b *batchDriver) DropUsers(_ context.Context, reqs []driver.DropUserRequest) []error {
	for _, r := range reqs {
		b.asked = append(b.asked, r.Username)
	}
	return b.results(len(reqs))
}

// TestInstrumented_BatchDropReachesLeaseUsersOnly: a batch with names that are not lease
// users' (forged) asks the driver for the lease users alone, and each answer goes back to
// its own request; a driver answering the wrong number of results fails them all, never
// reports a drop it did not make.
func TestInstrumented_BatchDropReachesLeaseUsersOnly(t *testing.T) {
	reqs := []driver.DropUserRequest{{Username: "app_owner"}, {Username: "vf_tmp_aaaaaaaa"}, {Username: "postgres"}, {Username: "vf_tmp_bbbbbbbb"}}
	d := &batchDriver{results: func(n int) []error {
		errs := make([]error, n)
		errs[1] = context.DeadlineExceeded // the second lease user's
		return errs
	}}
	errs := instrumented{d: d, obs: nopObserver{}}.DropUsers(t.Context(), reqs)
	if got := d.asked; len(got) != 2 || got[0] != "vf_tmp_aaaaaaaa" || got[1] != "vf_tmp_bbbbbbbb" {
		t.Fatalf("the driver was asked to drop %v", got)
	}
	if errs[0] != nil || errs[1] != nil || errs[2] != nil || errs[3] == nil {
		t.Fatalf("results %v; want only vf_tmp_bbbbbbbb's failure", errs)
	}

	d = &batchDriver{results: func(n int) []error { return make([]error, n-1) }}
	errs = instrumented{d: d, obs: nopObserver{}}.DropUsers(t.Context(), reqs)
	if errs[1] == nil || errs[3] == nil {
		t.Fatalf("results %v of a driver answering one result short; want both lease users' failed", errs)
	}
}

// failingRemoval fails every removal with err.
type failingRemoval struct {
	driver.Driver
	err error
}

func (f failingRemoval) RemoveTarget(context.Context, driver.RemoveTargetRequest) error { return f.err }

// TestInstrumented_ADriversErrorSaysItsMessageOnce: the error the workers log and return
// keeps the driver's code and message and says them once, its secrets scrubbed.
func TestInstrumented_ADriversErrorSaysItsMessageOnce(t *testing.T) {
	cause := errors.New("postgres.RemoveTarget: connect as admin with password hunter2")
	err := instrumented{d: failingRemoval{err: events.Wrap(cause, events.EInternal, "Could not connect to the target.")}, obs: nopObserver{}}.
		RemoveTarget(t.Context(), driver.RemoveTargetRequest{Conn: driver.Conn{Password: "hunter2"}})
	want := "internal: Could not connect to the target.: postgres.RemoveTarget: connect as admin with password [redacted]"
	if err == nil || err.Error() != want || events.ErrorCode(err) != events.EInternal {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}
