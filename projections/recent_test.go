package projections_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/syvault/syvault/events"
)

func TestProjections_Recent(t *testing.T) {
	ctx := context.Background()
	store, p := mustProjections(t)
	if evs, truncated, err := p.Recent(ctx, time.Now().Add(-time.Hour), 10); err != nil || len(evs) != 0 || truncated {
		t.Fatalf("empty stream: %d events, truncated %v, %v", len(evs), truncated, err)
	}
	before := time.Now()
	var seqs []uint64
	for range 5 {
		seqs = append(seqs, appendAll(t, store, requested(uuid.NewString(), "uid1"))...)
	}
	t.Run("all since", func(t *testing.T) {
		evs, truncated, err := p.Recent(ctx, before.Add(-time.Second), 10)
		if err != nil || len(evs) != 5 || truncated || evs[0].Seq != seqs[0] || evs[4].Seq != seqs[4] || evs[0].Event.Type != events.LeaseRequested {
			t.Fatalf("%d events, truncated %v, %v", len(evs), truncated, err)
		}
	})
	t.Run("the last ones when more", func(t *testing.T) {
		evs, truncated, err := p.Recent(ctx, before.Add(-time.Second), 3)
		if err != nil || len(evs) != 3 || !truncated || evs[0].Seq != seqs[2] || evs[2].Seq != seqs[4] {
			t.Fatalf("%d events, truncated %v, %v", len(evs), truncated, err)
		}
	})
	t.Run("none after the last", func(t *testing.T) {
		evs, _, err := p.Recent(ctx, time.Now().Add(time.Minute), 3)
		if err != nil || len(evs) != 0 {
			t.Fatalf("%d events, %v", len(evs), err)
		}
	})
}
