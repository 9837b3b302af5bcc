package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/syvault/syvault/http/client"
)

// TestClients_AdminsTakingEachOtherAwayKeepOne: two admins demoting (or removing) each
// other at the same moment. Each may change any client but itself, so each request on
// its own is allowed; both together would leave neither an admin, and a deployment whose
// last two admins did so none at all (no way back but the data directory's bootstrap).
// One of the two changes wins; the other is refused, its actor no longer an admin.
func TestClients_AdminsTakingEachOtherAwayKeepOne(t *testing.T) {
	ctx := context.Background()
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	for round := range 8 {
		remove := round%2 == 1
		var ids [2]string
		var as [2]*client.Client
		for i := range as {
			pub, priv := mustKeyPair(t)
			made, err := admin.CreateClient(ctx, client.AppClient{Name: fmt.Sprintf("ops-%d-%d", round, i), Role: "admin", PublicKey: pub})
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = made.ClientID
			if as[i], err = client.New(srv.HTTP.URL(), made.ClientID, priv); err != nil {
				t.Fatal(err)
			}
			mustToken(t, as[i]) // signed in before the race, as admins at work are
		}
		var bodies [2]client.AppClient
		for i, id := range ids {
			c, err := admin.GetClient(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			bodies[i] = client.AppClient{Name: c.Name, Role: "app", PublicKey: c.PublicKey}
		}
		var wg sync.WaitGroup
		var errs [2]error
		start := make(chan struct{})
		for i := range as {
			wg.Go(func() {
				<-start
				if remove {
					errs[i] = as[i].DeleteClient(ctx, ids[1-i])
				} else {
					_, errs[i] = as[i].UpdateClient(ctx, ids[1-i], bodies[1-i])
				}
			})
		}
		close(start)
		wg.Wait()
		admins := 0
		for _, id := range ids {
			if c, err := admin.GetClient(ctx, id); err == nil && c.Role == "admin" {
				admins++
			}
		}
		if admins != 1 {
			t.Fatalf("round %d (remove %v): %d of the two are admins after each took the other away (errors %v, %v); want one",
				round, remove, admins, errs[0], errs[1])
		}
		for _, err := range errs {
			switch {
			case err == nil:
			case remove && isStatus(err, 401): // its actor removed, and its token with it
			default:
				mustCode(t, err, 403, "forbidden")
			}
		}
	}
}

func isStatus(err error, status int) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Status == status
}
