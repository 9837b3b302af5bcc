package workers_test

import (
	"context"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers"
	"github.com/syvault/syvault/workers/driver"
)

// TestWorkers_ReconcileEndedLease: a marked user whose lease has ended (revoked here,
// its user made again by a worker that had died mid-create) is an orphan naming that
// lease; the user of a pending lease is live and stays, dry run or not.
func TestWorkers_ReconcileEndedLease(t *testing.T) {
	f := mustFixture(t)
	ctx := context.Background()
	names, err := f.store.OpenNames(ctx, "TEST_USERNAMES", "lease usernames", time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	live, liveUser := f.request(t)
	ended, endedUser := f.request(t)
	for id, u := range map[string]string{live: liveUser, ended: endedUser} {
		if ok, err := names.Reserve(ctx, u, []byte(id), 0); err != nil || !ok {
			t.Fatalf("reserve %s: %v %v", u, ok, err)
		}
		t.Cleanup(func() {
			_ = f.driver.DropUser(context.Background(), driver.DropUserRequest{Conn: driver.Conn{PoolKey: "crash", Host: "127.0.0.1",
				Port: 5432, Database: f.target.Database, Username: "postgres", TLSMode: events.TLSDisable}, RecordUID: f.target.RecordUID, Username: u})
		})
	}
	f.revoke(t, ended)
	if err := f.deliver(t, ended, 1); err != nil {
		t.Fatal(err)
	}
	if l, err := f.store.LoadLease(ctx, ended); err != nil || l.Status != events.StatusRevoked {
		t.Fatalf("lease %s = %+v, %v; want revoked", ended, l, err)
	}
	f.createAsDeadWorker(t, live, liveUser)
	f.createAsDeadWorker(t, ended, endedUser)

	for _, apply := range []bool{false, true} {
		rep, err := f.w.Reconcile(ctx, f.target, workers.ReconcileOptions{Names: names, Apply: apply})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Marked != 2 || rep.Live != 1 || len(rep.Findings) != 1 {
			t.Fatalf("apply=%v: report %+v; want 2 marked, 1 live, 1 finding", apply, rep)
		}
		got := rep.Findings[0]
		if got.Username != endedUser || got.Verdict != workers.VerdictOrphan || got.LeaseID != ended ||
			got.LeaseStatus != events.StatusRevoked || got.Dropped != apply {
			t.Fatalf("apply=%v: finding %+v; want %s, an orphan of revoked lease %s, dropped %v", apply, got, endedUser, ended, apply)
		}
		if f.userExists(t, endedUser) == apply {
			t.Fatalf("apply=%v: %s exists %v", apply, endedUser, !apply)
		}
		if !f.userExists(t, liveUser) {
			t.Fatalf("apply=%v: the pending lease's user %s was dropped", apply, liveUser)
		}
	}
}
