package main

import (
	"context"
	"sync"
	"testing"

	"github.com/syvault/syvault/http/client"
)

// TestLease_ReadRightAfterTheAnswer: a GET made right after a create, a renewal or a
// revoke answered shows what the answer said. The answers waited for the record's write
// as published rather than as stored, and a GET right after a create could still find
// the lease pending.
func TestLease_ReadRightAfterTheAnswer(t *testing.T) {
	eng := mysqlEngine(t)
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	target := mustTarget(t, admin, eng)
	var wg sync.WaitGroup
	for range 8 { // eight clients at once, as a busy deployment's
		wg.Go(func() { readsAfterAnswers(t, admin, target.RecordUID) })
	}
	wg.Wait()
}

func readsAfterAnswers(t *testing.T, admin *client.Client, recordUID string) {
	ctx := context.Background()
	for i := range 25 {
		l, err := admin.CreateLease(ctx, recordUID, 3600)
		if err != nil {
			t.Error(err)
			return
		}
		if got, err := admin.GetLease(ctx, l.LeaseID); err != nil || got.Status != "active" {
			t.Errorf("lease %d: GET right after its create answered: %+v, %v", i, got, err)
			return
		}
		renewed, err := admin.RenewLease(ctx, l.LeaseID, 7200)
		if err != nil {
			t.Error(err)
			return
		}
		if got, err := admin.GetLease(ctx, l.LeaseID); err != nil || !got.ExpiresAt.Equal(renewed.ExpiresAt) {
			t.Errorf("lease %d: GET right after its renewal answered: %+v, %v; want expires_at %v", i, got, err, renewed.ExpiresAt)
			return
		}
		if err := admin.RevokeLease(ctx, l.LeaseID); err != nil {
			t.Error(err)
			return
		}
		if got, err := admin.GetLease(ctx, l.LeaseID); err != nil || got.Status != "revoked" {
			t.Errorf("lease %d: GET right after its revoke answered: %+v, %v", i, got, err)
			return
		}
	}
}
