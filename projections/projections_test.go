package projections_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore/jstest"
	"github.com/syvault/syvault/projections"
)

func mustProjections(t *testing.T) *projections.Projections {
	t.Helper()
	p, err := projections.Open(context.Background(), jstest.MustStore(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func requested(id, uid string) events.Event {
	now := time.Now().UTC()
	return events.Event{Type: events.LeaseRequested, ID: id + ".r", LeaseID: id, RecordUID: uid, Time: now,
		ExpiresAt: now.Add(time.Hour), Lease: &events.LeaseSpec{Username: "vf_tmp_" + id[:8]}}
}

func TestProjections_Apply(t *testing.T) {
	ctx := context.Background()
	p := mustProjections(t)
	id := uuid.Must(uuid.NewV7()).String()
	apply := func(e events.Event, seq uint64) {
		t.Helper()
		if err := p.Apply(ctx, e, seq); err != nil {
			t.Fatal(err)
		}
	}
	apply(requested(id, "R1"), 1)
	apply(events.Event{Type: events.LeaseActivated, LeaseID: id}, 2)
	t.Run("active lease is listed", func(t *testing.T) {
		page, _, err := p.ActiveLeases(ctx, projections.LeaseQuery{Limit: 10})
		if err != nil || len(page) != 1 || page[0].ID != id {
			t.Fatalf("page = %+v, %v", page, err)
		}
	})
	t.Run("a redelivered older event changes nothing", func(t *testing.T) {
		apply(events.Event{Type: events.LeaseRevoked, LeaseID: id}, 3)
		apply(events.Event{Type: events.LeaseDropped, LeaseID: id, Time: time.Now()}, 4)
		apply(events.Event{Type: events.LeaseActivated, LeaseID: id}, 2)
		apply(requested(id, "R1"), 1)
		l, err := p.Lease(ctx, id)
		if err != nil || l.Status != events.StatusRevoked || l.Seq != 4 {
			t.Fatalf("lease = %+v, %v", l, err)
		}
	})
	t.Run("ended lease leaves the list", func(t *testing.T) {
		page, _, err := p.ActiveLeases(ctx, projections.LeaseQuery{Limit: 10})
		if err != nil || len(page) != 0 {
			t.Fatalf("page = %+v, %v", page, err)
		}
	})
	t.Run("projection holds no sealed password", func(t *testing.T) {
		l, _ := p.Lease(ctx, id)
		if l.Spec != nil {
			t.Fatal("lease spec (sealed secrets) reached the projection")
		}
	})
}

func TestProjections_ActiveLeases(t *testing.T) {
	ctx := context.Background()
	p := mustProjections(t)
	var ids []string
	for i := range 7 {
		id := uuid.Must(uuid.NewV7()).String()
		ids = append(ids, id)
		uid := "R1"
		if i%2 == 1 {
			uid = "R2"
		}
		seq := uint64(2*i + 1)
		if err := p.Apply(ctx, requested(id, uid), seq); err != nil {
			t.Fatal(err)
		}
		if err := p.Apply(ctx, events.Event{Type: events.LeaseActivated, LeaseID: id}, seq+1); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("pages oldest first", func(t *testing.T) {
		var got []string
		cursor := ""
		for pages := 0; ; pages++ {
			page, next, err := p.ActiveLeases(ctx, projections.LeaseQuery{Limit: 3, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range page {
				got = append(got, l.ID)
			}
			if next == "" {
				break
			}
			if pages > 5 {
				t.Fatal("pagination does not end")
			}
			cursor = next
		}
		if fmt.Sprint(got) != fmt.Sprint(ids) {
			t.Fatalf("got %v\nwant %v", got, ids)
		}
	})
	t.Run("filters by target", func(t *testing.T) {
		page, _, err := p.ActiveLeases(ctx, projections.LeaseQuery{RecordUID: "R2", Limit: 100})
		if err != nil || len(page) != 3 {
			t.Fatalf("page = %d, %v", len(page), err)
		}
		for _, l := range page {
			if l.RecordUID != "R2" {
				t.Fatalf("lease of %s listed", l.RecordUID)
			}
		}
	})
}
