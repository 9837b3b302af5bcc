package jsstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore/jstest"
)

// TestReplay_SurvivesItsConsumerVanishing: the ordered consumer a replay reads through
// is an R1 consumer in memory, so a restart of the NATS node that holds it takes it away
// mid-replay. The replay goes on from the last message it delivered, and delivers each
// message once. (`syvault rebuild-projections` failed three times in a row after NATS
// node restarts in a chaos run: "nats: no responders available for request".)
func TestReplay_SurvivesItsConsumerVanishing(t *testing.T) {
	ctx := context.Background()
	srv := jstest.MustServer(t, "")
	s := srv.MustStore(t)
	stream := srv.MustStream(t, events.EventsStream)

	a, b := events.LeaseSubject("A"), events.LeaseSubject("B")
	var want []uint64
	var prev uint64
	for i := range 5 {
		seq, err := s.Append(ctx, a, ev(events.LeaseRequested, "a"+string(rune('0'+i))), prev)
		if err != nil {
			t.Fatal(err)
		}
		want, prev = append(want, seq), seq
	}
	// The last message matches no filter: the pull waits for more when the consumer goes.
	if _, err := s.Append(ctx, b, ev(events.LeaseRequested, "b"), 0); err != nil {
		t.Fatal(err)
	}

	deleted := 0
	var got []uint64
	err := s.Replay(ctx, 1, []string{a}, func(msg jetstream.Msg) error {
		md, err := msg.Metadata()
		if err != nil {
			return err
		}
		got = append(got, md.Sequence.Stream)
		if len(got) == 2 {
			for name := range stream.ListConsumers(ctx).Info() {
				if name.Config.Durable == "" {
					// One listed may be gone already (the ordered consumer replaced it).
					if err := stream.DeleteConsumer(ctx, name.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
						t.Fatal(err)
					}
					deleted++
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Replay after its consumer was deleted: %v", err)
	}
	if deleted == 0 {
		t.Fatal("the test deleted no ordered consumer")
	}
	if len(got) != len(want) {
		t.Fatalf("replayed %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("replayed %v, want %v", got, want)
		}
	}
}
