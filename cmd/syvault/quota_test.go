package main

import (
	"context"
	"sync"
	"testing"

	"github.com/syvault/syvault/http/client"
)

// TestClients_MaxLeases: a client's max_leases bounds the database users its leases hold
// at once. A burst of creates past it gets exactly the cap; each refusal is 429
// too_many_leases and changes nothing (no event, no user); a slot is free again as soon
// as a revoke of one of its leases has answered, and an index entry a crash left behind
// for an ended lease takes none.
func TestClients_MaxLeases(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	srv := mustServer(t, "", nil)
	admin := srv.admin(t)
	target := mustTarget(t, admin, eng)

	pub, priv := mustKeyPair(t)
	_, err := admin.CreateClient(ctx, client.AppClient{Name: "bad-cap", Role: "app", AllowedRecords: []string{target.RecordUID},
		MaxLeases: -1, PublicKey: pub})
	mustCode(t, err, 400, "invalid_request")
	mustMention(t, err, "max_leases")
	ac, err := admin.CreateClient(ctx, client.AppClient{Name: "capped", Role: "app", AllowedRecords: []string{target.RecordUID},
		MaxLeases: 3, PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	if ac.MaxLeases != 3 {
		t.Fatalf("the new client shows max_leases %d, want 3", ac.MaxLeases)
	}
	clients, err := admin.ListClients(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		if c.Name == "bad-cap" || (c.ClientID == ac.ClientID && c.MaxLeases != 3) {
			t.Fatalf("clients after a refused and a capped registration: %+v", clients)
		}
	}
	app, err := client.New(srv.HTTP.URL(), ac.ClientID, priv)
	if err != nil {
		t.Fatal(err)
	}

	// Eight at once against a cap of three: three users, five refusals.
	var (
		mu       sync.Mutex
		made     []*client.Lease
		refusals []error
		wg       sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			l, err := app.CreateLease(ctx, target.RecordUID, 300)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refusals = append(refusals, err)
				return
			}
			made = append(made, l)
		})
	}
	wg.Wait()
	if len(made) != 3 {
		t.Fatalf("%d leases made by 8 creates against max_leases 3 (refusals: %v)", len(made), refusals)
	}
	for _, err := range refusals {
		mustCode(t, err, 429, "too_many_leases")
		mustMention(t, err, "max_leases")
	}
	requested := func() int {
		t.Helper()
		page, err := admin.Audit(ctx, client.AuditOptions{ClientID: ac.ClientID, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range page.Data {
			if e.Type == "lease.requested" {
				n++
			}
		}
		return n
	}
	if n := requested(); n != 3 {
		t.Fatalf("%d lease requests recorded, want the 3 admitted only", n)
	}
	page, err := app.ListLeases(ctx, client.ListLeasesOptions{})
	if err != nil || len(page.Data) != 3 {
		t.Fatalf("the client lists %+v (%v), want its 3 leases", page, err)
	}

	// A revoke that has answered frees its slot for the very next create.
	for i := range 5 {
		if err := app.RevokeLease(ctx, made[0].LeaseID); err != nil {
			t.Fatal(err)
		}
		mustBeGone(t, eng, made[0].Username, 0)
		made[0] = mustLease(t, app, target.RecordUID, 300)
		_, err := app.CreateLease(ctx, target.RecordUID, 300)
		mustCode(t, err, 429, "too_many_leases")
		if n := requested(); n != 4+i {
			t.Fatalf("round %d: %d lease requests recorded, want %d", i, n, 4+i)
		}
	}

	// A projector that died between recording a lease's end and unlisting it leaves its
	// index entry behind: the index then counts one lease more than exist.
	ended := made[0]
	if err := app.RevokeLease(ctx, ended.LeaseID); err != nil {
		t.Fatal(err)
	}
	if _, err := jetStream(t, srv.Main).Publish(ctx, "syvault.active."+target.RecordUID+"."+ac.ClientID, []byte(ended.LeaseID)); err != nil {
		t.Fatal(err)
	}
	made[0] = mustLease(t, app, target.RecordUID, 300)
	_, err = app.CreateLease(ctx, target.RecordUID, 300)
	mustCode(t, err, 429, "too_many_leases")
	for _, l := range made {
		if err := app.RevokeLease(ctx, l.LeaseID); err != nil {
			t.Fatal(err)
		}
	}
}
