package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/syvault/syvault/http/client"
)

// TestOutage_TargetDown: with a target's database gone (nothing accepts connections), a
// lease create answers 502 at once rather than at the request timeout; with it hung
// (connections accepted, never answered, as a paused process), the create answers a
// clean 502 or 504 by the request timeout. Either way the lease ends failed, and no user
// is left once the database is back, although a hung database may run the CREATE it was
// sent when it resumes.
func TestOutage_TargetDown(t *testing.T) {
	const requestTimeout = 20 * time.Second
	for name, mk := range engines(t) {
		for _, mode := range []string{"refused", "hung"} {
			t.Run(name+"/"+mode, func(t *testing.T) {
				eng := mk(t)
				ctx := context.Background()
				srv := mustServer(t, "", func(c *Config) { c.RequestTimeout = requestTimeout })
				admin := srv.admin(t)
				target, px := proxiedTarget(t, admin, eng)
				t.Cleanup(px.Thaw)
				warm := mustLease(t, admin, target.RecordUID, 60) // the admin pool holds connections now

				if mode == "refused" {
					px.Down()
				} else {
					px.Freeze()
				}
				start := time.Now()
				_, err := admin.CreateLease(ctx, target.RecordUID, 60)
				took := time.Since(start)
				t.Logf("create with the target %s answered in %v: %v", mode, took.Round(time.Millisecond), err)
				if mode == "refused" {
					mustCode(t, err, 502, "target_unavailable")
					if took > requestTimeout/4 {
						t.Errorf("the create took %v to fail; want well within the %v request timeout", took, requestTimeout)
					}
				} else if ce, ok := err.(*client.Error); !ok || (ce.Status != 502 && ce.Status != 504) || took > requestTimeout+2*time.Second {
					t.Errorf("create on a hung target: %v after %v; want 502 or 504 by the request timeout", err, took)
				}

				failed, failure := failedLease(t, admin, target.RecordUID, start)
				if mode == "refused" && failure.Outcome != "target_unavailable" {
					t.Errorf("the lease failed with %s (%s); want target_unavailable", failure.Outcome, failure.Reason)
				}
				if mode == "refused" {
					px.up()
				} else {
					px.Thaw()
				}
				mustBeGone(t, eng, failed.Username, 60*time.Second)
				if err := admin.RevokeLease(ctx, warm.LeaseID); err != nil {
					t.Fatal(err)
				}
				again := mustLease(t, admin, target.RecordUID, 60) // recovered by itself
				if err := admin.RevokeLease(ctx, again.LeaseID); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// failedLease returns the request of the lease requested on uid since the time given,
// and its lease.failed event, once the lease shows failed.
func failedLease(t *testing.T, admin *client.Client, uid string, since time.Time) (req, failed client.AuditEvent) {
	t.Helper()
	ctx := context.Background()
	eventually(t, 10*time.Second, "the failed create's lease ends failed", func() (bool, error) {
		page, err := admin.Audit(ctx, client.AuditOptions{RecordUID: uid, Since: since.Add(-time.Second), Limit: 1000})
		if err != nil {
			return false, err
		}
		req, failed = client.AuditEvent{}, client.AuditEvent{}
		for _, e := range page.Data {
			switch {
			case e.Type == "lease.requested" && !e.Time.Before(since):
				req = e
			case e.Type == "lease.failed" && e.LeaseID == req.LeaseID && req.LeaseID != "":
				failed = e
			}
		}
		return failed.LeaseID != "", nil
	})
	l, err := admin.GetLease(ctx, req.LeaseID)
	if err != nil || l.Status != "failed" {
		t.Fatalf("lease %s = %+v, %v; want failed", req.LeaseID, l, err)
	}
	return req, failed
}

// TestOutage_TargetRestarted: after the database restarts, the admin connections pooled
// before it are dead; the next create still succeeds, on a fresh connection.
func TestOutage_TargetRestarted(t *testing.T) {
	for name, mk := range engines(t) {
		t.Run(name, func(t *testing.T) {
			eng := mk(t)
			srv := mustServer(t, "", nil)
			admin := srv.admin(t)
			target, px := proxiedTarget(t, admin, eng)
			first := mustLease(t, admin, target.RecordUID, 60)
			px.Down() // every pooled connection is cut
			px.up()
			second := mustLease(t, admin, target.RecordUID, 60)
			for _, l := range []*client.Lease{first, second} {
				if err := admin.RevokeLease(context.Background(), l.LeaseID); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestOutage_ExpiredWhileCreating: a create whose lease's expiry passes while its
// database hangs answers that the expiry came first (504 timeout), not that the lease
// was revoked (it answered 409 "revoked before it was created", which a chaos run's
// short-TTL creates met); the lease ends expired and leaves no user once the database
// is back.
func TestOutage_ExpiredWhileCreating(t *testing.T) {
	eng := mysqlEngine(t)
	ctx := context.Background()
	srv := mustServer(t, "", func(c *Config) { c.RequestTimeout = 20 * time.Second })
	admin := srv.admin(t)
	target, px := proxiedTarget(t, admin, eng)
	t.Cleanup(px.Thaw)
	warm := mustLease(t, admin, target.RecordUID, 60) // the admin pool holds connections now
	px.Freeze()
	start := time.Now()
	_, err := admin.CreateLease(ctx, target.RecordUID, 2)
	mustCode(t, err, 504, "timeout")
	if ce := err.(*client.Error); !strings.Contains(ce.Message, "expiry passed") {
		t.Errorf("message %q does not say the expiry came first", ce.Message)
	}
	px.Thaw()
	var expired *client.LeaseInfo
	eventually(t, 30*time.Second, "the lease ends expired", func() (bool, error) {
		page, err := admin.Audit(ctx, client.AuditOptions{RecordUID: target.RecordUID, Since: start.Add(-time.Second), Limit: 100})
		if err != nil {
			return false, err
		}
		for _, e := range page.Data {
			if e.Type == "lease.requested" && e.LeaseID != warm.LeaseID {
				if expired, err = admin.GetLease(ctx, e.LeaseID); err != nil {
					return false, err
				}
				return expired.Status == "expired", nil
			}
		}
		return false, nil
	})
	mustBeGone(t, eng, expired.Username, 30*time.Second)
}
