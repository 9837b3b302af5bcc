package postgres_test

import (
	"sync"
	"testing"
	"time"

	"github.com/syvault/syvault/workers/driver"
)

// Renewals of one lease handled at once (a worker's goroutines, or processes) each send
// ALTER ROLE … VALID UNTIL for the same role, and PostgreSQL fails one of two concurrent
// updates of a catalog row ("tuple concurrently updated"): a renewal the database was
// about to take answered its caller with an error. A process's renewals of one role take
// turns; other processes' and a drop's still conflict now and then, and are retried, as
// the drops' and grants' conflicts are (not what this test covers).
func TestDriver_ConcurrentRenewalsOfOneUser(t *testing.T) {
	_, s, d, admin, uid := setUp(t)
	ctx := t.Context()
	if err := d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: s.Grants}); err != nil {
		t.Fatal(err)
	}
	l := newLease(t, d, admin, uid, s.Grants)
	// A target's workers run four at a time in a process, a lease's events may come to
	// more than one of them: eight here. With the retry alone a few of these failed on a
	// loaded machine (2–4 of 400 with the CPUs kept busy).
	const goroutines, each = 8, 50
	errs := make(chan error, goroutines*each)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				errs <- d.RenewUser(ctx, driver.RenewUserRequest{Conn: admin, Username: l.user,
					ExpiresAt: time.Now().Add(time.Hour + time.Duration(g*each+i)*time.Second)})
			}
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	var first error
	for err := range errs {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d concurrent renewals failed, the first: %v", failed, goroutines*each, first)
	}
}
