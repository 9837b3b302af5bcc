package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/syvault/syvault/http/client"
)

// TestOutage_ARevocationGivenUp: a target's database gone for good left its leases
// revoking without end: each drop retried for ever, pending in /metrics, holding its
// client's max_leases slot and its target from removal. An admin may now give such a
// drop up (force), once an attempt of its own fails: the lease ends, abandoned in its
// answer and the audit trail (which names the user), counted apart, and is no longer
// tried; its owner may not, nor may another client probe it. A revoking lease whose
// database is back is dropped, not given up. Once the database is back, reconciliation
// drops the user left. A target whose leases cannot be revoked is removed the same way,
// its users left on the database.
func TestOutage_ARevocationGivenUp(t *testing.T) {
	for name, mk := range engines(t) {
		t.Run(name, func(t *testing.T) {
			eng := mk(t)
			ctx := context.Background()
			srv := mustServer(t, "", func(c *Config) { c.RequestTimeout = 5 * time.Second; c.ReconcileInterval = time.Second })
			admin := srv.admin(t)
			adminID := srv.adminClient(t).ClientID
			target, px := proxiedTarget(t, admin, eng)
			t.Cleanup(px.Thaw)
			app, _ := newAppClient(t, srv, admin, "app", []string{target.RecordUID})
			owned := mustLease(t, app, target.RecordUID, 600)
			other := mustLease(t, admin, target.RecordUID, 600)
			t.Cleanup(func() { // left on the database by the target's removal below
				stmt := "DROP ROLE IF EXISTS " + other.Username
				if name == "mysql" {
					stmt = "DROP USER IF EXISTS '" + other.Username + "'@'%'"
				}
				if err := eng.admin(context.Background(), stmt); err != nil {
					t.Errorf("drop the user the removal left: %v", err)
				}
			})

			px.Down()
			mustCode(t, app.RevokeLease(ctx, owned.LeaseID), 502, "target_unavailable")
			_, err := app.ForceRevokeLease(ctx, owned.LeaseID)
			mustCode(t, err, 403, "forbidden")
			_, err = app.ForceRevokeLease(ctx, other.LeaseID)
			mustCode(t, err, 404, "not_found") // another client's lease, as an unknown id
			if l, err := admin.GetLease(ctx, owned.LeaseID); err != nil || l.Status != "revoking" {
				t.Fatalf("after its owner's forced revocation: %+v, %v; want it revoking still", l, err)
			}
			eventually(t, 10*time.Second, "the failed drop pending in /metrics", func() (bool, error) {
				return strings.Contains(scrape(t, srv), "syvault_revocations_pending_retry 1"), nil
			})

			ended, err := admin.ForceRevokeLease(ctx, owned.LeaseID)
			if err != nil || !ended.Abandoned || ended.Status != "revoked" || ended.EndedAt == nil {
				t.Fatalf("an admin's forced revocation: %+v, %v; want it revoked and abandoned", ended, err)
			}
			if l, err := admin.GetLease(ctx, owned.LeaseID); err != nil || !l.Abandoned || l.Status != "revoked" {
				t.Fatalf("the lease read after: %+v, %v", l, err)
			}
			_, err = admin.ForceRevokeLease(ctx, owned.LeaseID)
			mustCode(t, err, 404, "not_found")
			page, err := admin.Audit(ctx, client.AuditOptions{LeaseID: owned.LeaseID})
			if err != nil {
				t.Fatal(err)
			}
			var given client.AuditEvent
			for _, e := range page.Data {
				if e.Type == "lease.abandoned" {
					given = e
				}
			}
			if given.ClientID != adminID || given.Username != owned.Username || !strings.Contains(given.Reason, "syvault reconcile") {
				t.Fatalf("the audit trail's lease.abandoned: %+v; want the admin's, naming the user and reconcile", given)
			}
			eventually(t, time.Minute, "the given-up drop no longer pending, nor tried, and counted apart", func() (bool, error) {
				m := scrape(t, srv)
				return strings.Contains(m, "syvault_revocations_pending_retry 0") &&
					strings.Contains(m, `syvault_lease_revokes_total{outcome="abandoned"} 1`) &&
					strings.Contains(m, "syvault_revocations_abandoned_total 1"), nil
			})

			// With the database back, the user the lease left is an orphan: dropped.
			px.up()
			mustBeGone(t, eng, owned.Username, time.Minute)

			// A lease whose revocation failed while the database was away, forced once it
			// is back: dropped by the forced attempt, not given up.
			back := mustLease(t, admin, target.RecordUID, 600)
			px.Down()
			mustCode(t, admin.RevokeLease(ctx, back.LeaseID), 502, "target_unavailable")
			px.up()
			l, err := admin.ForceRevokeLease(ctx, back.LeaseID)
			if ce, ok := err.(*client.Error); ok && ce.Status == 404 {
				l, err = admin.GetLease(ctx, back.LeaseID) // the workers' retry dropped it first
			}
			if err != nil || l.Abandoned || l.Status != "revoked" {
				t.Fatalf("a forced revocation with the database back: %+v, %v; want it dropped", l, err)
			}
			mustBeGone(t, eng, back.Username, 0)

			// A target whose leases cannot be revoked: refused without force, removed with
			// it, its lease given up.
			px.Down()
			mustCode(t, admin.DeleteTarget(ctx, target.RecordUID, true), 502, "target_unavailable")
			if err := admin.ForceDeleteTarget(ctx, target.RecordUID); err != nil {
				t.Fatalf("the forced removal: %v", err)
			}
			if _, err := admin.GetTarget(ctx, target.RecordUID); err == nil {
				t.Fatal("the target is still there")
			}
			if l, err := admin.GetLease(ctx, other.LeaseID); err != nil || !l.Abandoned {
				t.Fatalf("the removed target's lease: %+v, %v; want it abandoned", l, err)
			}
			px.up()
			if left, err := eng.userExists(ctx, other.Username); err != nil || !left {
				t.Fatalf("the removed target's abandoned user exists: %v, %v; want it left", left, err)
			}
		})
	}
}
