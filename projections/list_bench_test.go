package projections_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/syvault/syvault/events"
)

// BenchmarkActiveLeases_AClientsFew: the list an app client with three leases among
// 2,000 asks for, a page of up to 100, and the last page of an admin's paging (a page
// not full). Each reads the index once and the three (or 50) records once. Beside them,
// the count of the client's entries that a capped client's create reads.
func BenchmarkActiveLeases_AClientsFew(b *testing.B) {
	ctx := context.Background()
	store, p := mustProjections(b)
	lonely := uuid.NewString()
	const n = 2000
	for i := range n {
		id := uuid.Must(uuid.NewV7()).String()
		client := fmt.Sprintf("c%d", i%7)
		if i%700 == 350 {
			client = lonely
		}
		now := time.Now()
		req := events.RequestLease(events.LeaseRequest{LeaseID: id, ClientID: client, Target: events.Target{RecordUID: "T1"},
			TTLSeconds: 3600, Username: "vf_tmp_" + id[:8], SealedPassword: []byte("sealed"), Now: now, Deadline: now})
		l := events.Fold([]events.Event{req}, []uint64{1})
		act, _ := l.Activate(now)
		evs := []events.Event{req, act}
		seqs := appendAll(b, store, evs...)
		for j, e := range evs {
			if err := p.Apply(ctx, e, seqs[j]); err != nil {
				b.Fatal(err)
			}
		}
	}
	// The cursor of the admin's last page, of 50 leases.
	var last string
	for _, limit := range []int{1000, n - 1050} {
		_, next, err := p.ActiveLeases(ctx, events.LeaseQuery{Cursor: last, Limit: limit})
		if err != nil || next == "" {
			b.Fatalf("cursor %q, %v", next, err)
		}
		last = next
	}
	// What a create of a client with max_leases adds below its cap: the count of its
	// entries.
	b.Run("client's-count", func(b *testing.B) {
		for b.Loop() {
			if n, err := p.IndexedCount(ctx, lonely); err != nil || n != 3 {
				b.Fatalf("count %d, %v", n, err)
			}
		}
	})
	for _, q := range []struct {
		name string
		q    events.LeaseQuery
	}{
		{"client's-own-3", events.LeaseQuery{ClientID: lonely, Limit: 100}},
		{"admin's-last-page-of-50", events.LeaseQuery{Cursor: last, Limit: 100}},
	} {
		b.Run(q.name, func(b *testing.B) {
			for b.Loop() {
				if _, _, err := p.ActiveLeases(ctx, q.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
