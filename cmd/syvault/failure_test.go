package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/syvault/syvault/http/client"
)

// TestRevoke_TargetDown: a revocation whose target is down answers 502 at once, shows
// revoking, survives a restart of SyVault, and drops the user once the target is back.
func TestRevoke_TargetDown(t *testing.T) {
	for name, mk := range engines(t) {
		t.Run(name, func(t *testing.T) {
			eng := mk(t)
			ctx := context.Background()
			dir := t.TempDir()
			srv := mustServer(t, dir, nil)
			admin := srv.admin(t)
			target, px := proxiedTarget(t, admin, eng)
			lease := mustLease(t, admin, target.RecordUID, 3600)

			px.Down()
			start := time.Now()
			err := admin.RevokeLease(ctx, lease.LeaseID)
			if ce, ok := err.(*client.Error); !ok || ce.Status != 502 {
				t.Log(srv.Log.String())
			}
			mustCode(t, err, 502, "target_unavailable")
			t.Logf("revoke with the target down answered in %v", time.Since(start).Round(time.Millisecond))
			got, err := admin.GetLease(ctx, lease.LeaseID)
			if err != nil || got.Status != "revoking" {
				t.Fatalf("lease = %+v, %v; want revoking", got, err)
			}
			_, err = admin.CreateLease(ctx, target.RecordUID, 60)
			mustCode(t, err, 502, "target_unavailable")

			// SyVault restarts while the target is still down: nothing is lost.
			if err := srv.Close(); err != nil {
				t.Fatal(err)
			}
			srv = mustServer(t, dir, nil)
			admin = srv.admin(t)
			if ok, _ := eng.userExists(ctx, lease.Username); !ok {
				t.Fatal("user gone although the target was down the whole time")
			}
			px.up()
			mustBeGone(t, eng, lease.Username, 30*time.Second)
			eventually(t, 5*time.Second, "lease shows revoked", func() (bool, error) {
				got, err := admin.GetLease(ctx, lease.LeaseID)
				return err == nil && got.Status == "revoked", err
			})
			page, err := admin.ListLeases(ctx, client.ListLeasesOptions{})
			if err != nil || len(page.Data) != 0 {
				t.Fatalf("failed create or revoked lease still listed: %+v %v", page, err)
			}
		})
	}
}

// TestRevoke_TargetDatabaseDropped: roles are cluster-wide, so a lease user outlives its
// target's database and could still log in elsewhere; revoking it must still drop it.
func TestRevoke_TargetDatabaseDropped(t *testing.T) {
	for name, mk := range engines(t) {
		t.Run(name, func(t *testing.T) {
			eng := mk(t)
			ctx := context.Background()
			dir := t.TempDir()
			srv := mustServer(t, dir, nil)
			admin := srv.admin(t)
			tg := eng.target(t)
			target := mustRegister(t, admin, tg)
			lease := mustLease(t, admin, target.RecordUID, 600)
			drop := "DROP DATABASE " + tg.Database
			if name == "postgresql" {
				drop += " WITH (FORCE)"
			}
			if err := eng.admin(ctx, drop); err != nil {
				t.Fatal(err)
			}
			if name == "postgresql" {
				// The user still logs in to another database.
				sess, err := eng.login(ctx, strings.Replace(lease.ConnectionString, "/"+tg.Database, "/postgres", 1))
				if err != nil {
					t.Fatalf("expected the orphaned user to log in elsewhere: %v", err)
				}
				sess.Close()
			}
			// A restarted SyVault has no pooled connection that predates the drop.
			if err := srv.Close(); err != nil {
				t.Fatal(err)
			}
			srv = mustServer(t, dir, nil)
			admin = srv.admin(t)
			if err := admin.RevokeLease(ctx, lease.LeaseID); err != nil {
				t.Fatalf("revoke after the target's database was dropped: %v\n%s", err, srv.Log.String())
			}
			mustBeGone(t, eng, lease.Username, 0)
		})
	}
}

// TestCreate_ConnectionCutAfterTheSQL: the target's connection breaks after the database
// created the user and before the driver heard so. The create answers 502, the lease
// fails, and the user, which cannot be dropped while the target is unreachable, is dropped
// once it is back, with no request from anyone.
func TestCreate_ConnectionCutAfterTheSQL(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	target, px := proxiedTarget(t, admin, eng)
	members := groupMembers(t, target.RecordUID)

	px.SetReplyDelay(400 * time.Millisecond) // the user exists well before the driver hears so
	created := make(chan error, 1)
	go func() {
		_, err := admin.CreateLease(ctx, target.RecordUID, 600)
		created <- err
	}()
	user := awaitLeaseUser(t, eng, members)
	px.Down()
	px.SetReplyDelay(0)
	mustCode(t, <-created, 502, "target_unavailable")
	mustSettleFailed(t, admin, target.RecordUID)
	if exists, err := eng.userExists(ctx, user); err != nil || !exists {
		t.Fatalf("the user is gone with the target unreachable (%v): nothing was tested", err)
	}

	px.up()
	mustBeGone(t, eng, user, 30*time.Second)
}

// TestRenew_TargetDown: a renewal answers once the database holds the new expiry. With
// the target down, PostgreSQL's VALID UNTIL cannot move, so the answer is 502 saying the
// renewal stands; it is retried and reaches the database once the target is back.
// MariaDB keeps no expiry on the user, so there the renewal answers 200 regardless.
func TestRenew_TargetDown(t *testing.T) {
	for name, mk := range engines(t) {
		t.Run(name, func(t *testing.T) {
			eng := mk(t)
			ctx := context.Background()
			srv := mustServer(t, t.TempDir(), nil)
			admin := srv.admin(t)
			target, px := proxiedTarget(t, admin, eng)
			lease := mustLease(t, admin, target.RecordUID, 600)
			// The server's own cleanup comes after the proxy's is closed: revoke here,
			// with the target back (Up refuses when it already is), whatever failed.
			t.Cleanup(func() {
				_ = px.Up()
				if err := admin.RevokeLease(ctx, lease.LeaseID); err != nil {
					t.Errorf("revoke at cleanup: %v", err)
				}
			})

			px.Down()
			renewed, err := admin.RenewLease(ctx, lease.LeaseID, 3600)
			if name != "postgresql" {
				if err != nil || !renewed.ExpiresAt.After(lease.ExpiresAt) {
					t.Fatalf("renew = %+v, %v; want the new expiry", renewed, err)
				}
				return
			}
			mustCode(t, err, 502, "target_unavailable")
			mustMention(t, err, "renewal is recorded")
			got, err := admin.GetLease(ctx, lease.LeaseID)
			if err != nil || got.Status != "active" || !got.ExpiresAt.After(lease.ExpiresAt.Add(time.Minute)) {
				t.Fatalf("lease = %+v, %v; want active with the renewed expiry", got, err)
			}
			if until := pgValidUntil(t, lease.Username); until.Sub(lease.ExpiresAt).Abs() > time.Second {
				t.Fatalf("VALID UNTIL %v moved although the target was down (expires_at was %v)", until, lease.ExpiresAt)
			}

			px.up()
			eventually(t, 30*time.Second, "the recorded renewal reaches VALID UNTIL", func() (bool, error) {
				until := pgValidUntil(t, lease.Username)
				return until.Sub(got.ExpiresAt).Abs() <= time.Second, fmt.Errorf("VALID UNTIL %v, expires_at %v", until, got.ExpiresAt)
			})
			// With the target up, the answer itself stands for the database's expiry.
			again, err := admin.RenewLease(ctx, lease.LeaseID, 1800)
			if err != nil {
				t.Fatal(err)
			}
			if until := pgValidUntil(t, lease.Username); until.Sub(again.ExpiresAt).Abs() > time.Second {
				t.Fatalf("VALID UNTIL %v right after the renewal answered, expires_at %v", until, again.ExpiresAt)
			}
		})
	}
}
