package projections_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/events/jsstore/jstest"
	"github.com/syvault/syvault/projections"
)

// TestActiveLeases_CostIsThePage: a page of the list reads the page's leases plus at
// most one to know whether more follow, whatever the number of active leases and
// whichever filter (none, a target, a client with three leases among hundreds), and
// reads the index once, without the entries' headers. Paging visits every active lease
// once, oldest first, and skips ended ones.
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
	exact := p.ExactPages()
	for _, q := range []events.LeaseQuery{{Limit: 10}, {RecordUID: "T3", Limit: 10}, {ClientID: lonely, Limit: 10}, {ClientID: lonely, RecordUID: "T0", Limit: 2}} {
		before, indexBefore := p.RecordReads(), p.IndexReads()
		page, _, err := p.ActiveLeases(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if reads := p.RecordReads() - before; reads > int64(len(page))+1 {
			t.Errorf("%+v: a page of %d read %d lease records", q, len(page), reads)
		}
		if reads := p.IndexReads() - indexBefore; reads != 1 {
			t.Errorf("%+v: a page of %d read the index %d times", q, len(page), reads)
		}
		if q.ClientID == lonely && len(page) != min(3, q.Limit) && q.RecordUID == "" {
			t.Errorf("the lonely client's leases: %d, want 3", len(page))
		}
	}
	// Paging: every active lease once, in order.
	seen := listAll(t, p, events.LeaseQuery{Limit: 37}, n)
	if fmt.Sprint(seen) != fmt.Sprint(ids) {
		t.Fatalf("paging saw %d leases, want the %d active ones in order", len(seen), len(ids))
	}
	if n := p.ExactPages() - exact; n != 0 {
		t.Errorf("%d pages of an index with no stale entry were read again with their sequences", n)
	}
	counts, err := p.ActiveByTarget(ctx)
	if err != nil || counts["T0"]+counts["T1"]+counts["T2"]+counts["T3"]+counts["T4"] != len(ids) {
		t.Fatalf("counts %v (%v), want %d in all", counts, err, len(ids))
	}
}

// TestActiveLeases_OneEntryPerLease: two projectors applying the same activations at
// once (two processes, a redelivery) leave one index entry per lease, and an entry left
// over by a projector that died between adding it and recording it is skipped by the
// list and removed, so the counts come right again. The entries carry no headers: a
// stored one makes the server rebuild every entry's headers on each page read.
func TestActiveLeases_OneEntryPerLease(t *testing.T) {
	ctx := context.Background()
	srv := jstest.MustServer(t, "")
	store := srv.MustStore(t)
	var ps [2]*projections.Projections
	for i := range ps {
		p, err := projections.Open(ctx, store, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		ps[i] = p
	}
	const n = 20
	var ids []string
	for range n {
		id := uuid.Must(uuid.NewV7()).String()
		ids = append(ids, id)
		evs := []events.Event{requested(id, "R1"), {Type: events.LeaseActivated, LeaseID: id}}
		seqs := appendAll(t, store, evs...)
		var wg sync.WaitGroup
		errs := make([]error, len(ps))
		for i, p := range ps {
			wg.Go(func() { errs[i] = p.Apply(ctx, evs[1], seqs[1]) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	}
	// Counted both ways: from the stream's per-subject state, and by a one-entry read
	// whose end-of-batch counts the rest (what a capped client's create asks).
	counted := func() int {
		t.Helper()
		counts, err := store.IndexCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		one, err := store.IndexCount(ctx, jsstore.IndexFilter{RecordUID: "R1"})
		if err != nil || one != counts["R1"] {
			t.Fatalf("the index holds %d entries of R1, and a one-entry read counts %d (%v)", counts["R1"], one, err)
		}
		return counts["R1"]
	}
	if got := counted(); got != n {
		t.Errorf("index entries after the concurrent activations: %d, want %d", got, n)
	}
	// A leftover: the entry a projector added for the first lease before it died. Listed
	// through pages of every size, so that it is met on the page of its lease's entry
	// and on a page of its own; each list removes what it meets.
	for _, limit := range []int{100, 3, 1} {
		if _, err := store.IndexAdd(ctx, "R1", "", ids[limit%n]); err != nil {
			t.Fatal(err)
		}
		exact := ps[0].ExactPages()
		got := listAll(t, ps[0], events.LeaseQuery{Limit: limit}, len(ids))
		if fmt.Sprint(got) != fmt.Sprint(ids) {
			t.Fatalf("pages of %d listed %v\nwant %v", limit, got, ids)
		}
		if ps[0].ExactPages() == exact {
			t.Errorf("pages of %d: the page with the leftover was not read with its sequences", limit)
		}
		if got := counted(); got != n {
			t.Errorf("index entries after a list by pages of %d: %d, want %d", limit, got, n)
		}
	}
	// A leftover before its lease's entry, another lease's entry between them: a
	// projector died after adding it, and the activation was projected again later. The
	// lease is listed once, where its record says, and the other lease too.
	for _, limit := range []int{100, 3, 1} {
		late, between := uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String()
		lateEvs := []events.Event{requested(late, "R1"), {Type: events.LeaseActivated, LeaseID: late}}
		lateSeqs := appendAll(t, store, lateEvs...)
		if _, err := store.IndexAdd(ctx, "R1", "", late); err != nil {
			t.Fatal(err)
		}
		evs := []events.Event{requested(between, "R1"), {Type: events.LeaseActivated, LeaseID: between}}
		seqs := appendAll(t, store, evs...)
		if err := ps[1].Apply(ctx, evs[1], seqs[1]); err != nil {
			t.Fatal(err)
		}
		if err := ps[1].Apply(ctx, lateEvs[1], lateSeqs[1]); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, between, late)
		got := listAll(t, ps[0], events.LeaseQuery{Limit: limit}, len(ids))
		if fmt.Sprint(got) != fmt.Sprint(ids) {
			t.Fatalf("pages of %d with a leftover before its lease's entry listed %v\nwant %v", limit, got, ids)
		}
		if got := counted(); got != len(ids) {
			t.Errorf("index entries after a list by pages of %d: %d, want %d", limit, got, len(ids))
		}
	}
	index := srv.MustStream(t, jsstore.IndexStream)
	info, err := index.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := index.GetMsg(ctx, info.State.FirstSeq)
	if err != nil {
		t.Fatal(err)
	}
	if id := msg.Header.Get(jetstream.MsgIDHeader); id != "" {
		t.Errorf("an index entry carries a message id: %q", id)
	}
}

// listAll pages through the list q selects, by q.Limit, and returns the lease ids in the
// order listed; it fails when the pages do not end within maxPages.
func listAll(t *testing.T, p *projections.Projections, q events.LeaseQuery, maxPages int) []string {
	t.Helper()
	var ids []string
	for pages := 0; ; pages++ {
		page, next, err := p.ActiveLeases(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range page {
			ids = append(ids, l.ID)
		}
		if next == "" {
			return ids
		}
		if pages > maxPages {
			t.Fatalf("paging %+v does not end", q)
		}
		q.Cursor = next
	}
}
