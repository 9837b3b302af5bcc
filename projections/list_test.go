package projections_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/syvault/syvault/events"
)

// TestActiveLeases_CostIsThePage: a page of the list reads the page's leases plus at
// most one to know whether more follow, whatever the number of active leases and
// whichever filter (none, a target, a client with three leases among hundreds). Paging
// visits every active lease once, oldest first, and skips ended ones.
func TestActiveLeases_CostIsThePage(t *testing.T) {
	ctx := context.Background()
	store, p := mustProjections(t)
	const n = 300
	var ids []string
	lonely := uuid.NewString() // the client with three leases among all the others
	for i := range n {
		id := uuid.Must(uuid.NewV7()).String()
		client, uid := fmt.Sprintf("c%d", i%7), fmt.Sprintf("T%d", i%5)
		if i%100 == 50 {
			client = lonely
		}
		now := time.Now()
		req := events.RequestLease(events.LeaseRequest{LeaseID: id, ClientID: client, Target: events.Target{RecordUID: uid},
			TTLSeconds: 3600, Username: "vf_tmp_" + id[:8], SealedPassword: []byte("sealed"), Now: now, Deadline: now})
		l := events.Fold([]events.Event{req}, []uint64{1})
		act, _ := l.Activate(now)
		evs := []events.Event{req, act}
		if i%10 == 9 { // every tenth lease ended since
			rev, _ := (events.Lease{ID: id, RecordUID: uid, Status: events.StatusActive}).Revoke("admin", now)
			evs = append(evs, *rev, events.Event{Type: events.LeaseDropped, ID: id + ".dropped", LeaseID: id, RecordUID: uid, Time: now})
		} else {
			ids = append(ids, id)
		}
		seqs := appendAll(t, store, evs...)
		for j, e := range evs {
			if err := p.Apply(ctx, e, seqs[j]); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, q := range []events.LeaseQuery{{Limit: 10}, {RecordUID: "T3", Limit: 10}, {ClientID: lonely, Limit: 10}, {ClientID: lonely, RecordUID: "T0", Limit: 2}} {
		before := p.RecordReads()
		page, _, err := p.ActiveLeases(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if reads := p.RecordReads() - before; reads > int64(len(page))+1 {
			t.Errorf("%+v: a page of %d read %d lease records", q, len(page), reads)
		}
		if q.ClientID == lonely && len(page) != min(3, q.Limit) && q.RecordUID == "" {
			t.Errorf("the lonely client's leases: %d, want 3", len(page))
		}
	}
	// Paging: every active lease once, in order.
	var seen []string
	q := events.LeaseQuery{Limit: 37}
	for pages := 0; ; pages++ {
		page, next, err := p.ActiveLeases(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range page {
			seen = append(seen, l.ID)
		}
		if next == "" {
			break
		}
		if pages > n {
			t.Fatal("paging does not end")
		}
		q.Cursor = next
	}
	if fmt.Sprint(seen) != fmt.Sprint(ids) {
		t.Fatalf("paging saw %d leases, want the %d active ones in order", len(seen), len(ids))
	}
	counts, err := p.ActiveByTarget(ctx)
	if err != nil || counts["T0"]+counts["T1"]+counts["T2"]+counts["T3"]+counts["T4"] != len(ids) {
		t.Fatalf("counts %v (%v), want %d in all", counts, err, len(ids))
	}
}
