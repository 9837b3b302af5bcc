package jsstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore/jstest"
)

// TestSizes: the events stream's subjects count the leases ever made (what sizes NATS's
// memory and start), another application's stream on the same account is left out, and
// a scrape is one request whatever the number of leases.
func TestSizes(t *testing.T) {
	ctx := context.Background()
	srv := jstest.MustServer(t, "")
	s, nc := srv.MustStoreConn(t)
	js, err := jetstream.New(srv.MustConnect(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER_APP", Subjects: []string{"other.>"}}); err != nil {
		t.Fatal(err)
	}
	const leases = 50
	for i := range leases {
		id := fmt.Sprintf("L%d", i)
		e := events.Event{Type: events.LeaseRequested, ID: id + ".requested", LeaseID: id}
		if _, err := s.Append(ctx, events.LeaseSubject(id), e, 0); err != nil {
			t.Fatal(err)
		}
	}

	before := nc.Stats().OutMsgs
	sizes, err := s.Sizes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := nc.Stats().OutMsgs - before; n != 1 {
		t.Errorf("Sizes sent %d messages, want 1", n)
	}
	got := map[string]uint64{}
	for _, sz := range sizes {
		got[sz.Name] = sz.Subjects
		if sz.Name == events.EventsStream && (sz.Messages != leases || sz.Bytes == 0) {
			t.Errorf("events stream: %d messages, %d bytes; want %d and some", sz.Messages, sz.Bytes, leases)
		}
	}
	if got[events.EventsStream] != leases {
		t.Errorf("events stream subjects = %d, want %d", got[events.EventsStream], leases)
	}
	if _, ok := got["OTHER_APP"]; ok {
		t.Error("another application's stream is reported")
	}
	if _, ok := got[events.SchedulesStream]; !ok {
		t.Errorf("the schedules stream is missing from %v", got)
	}
}

// BenchmarkSizes: a scrape's store request at 1,000 and at 100,000 lease subjects in the
// events stream (see README "Metrics": it must not grow with the leases).
func BenchmarkSizes(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{1000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			srv := jstest.MustServer(b, "")
			s := srv.MustStore(b)
			js, err := jetstream.New(srv.MustConnect(b))
			if err != nil {
				b.Fatal(err)
			}
			for i := range n {
				if _, err := js.PublishAsync(events.LeaseSubject(fmt.Sprint("L", i)), []byte(`{}`)); err != nil {
					b.Fatal(err)
				}
			}
			<-js.PublishAsyncComplete()
			sizes, err := s.Sizes(ctx)
			if err != nil {
				b.Fatal(err)
			}
			for _, sz := range sizes {
				if sz.Name == events.EventsStream && sz.Subjects != uint64(n) {
					b.Fatalf("%d subjects, want %d", sz.Subjects, n)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.Sizes(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestNames_ForgetLeavesNothing: a forgotten name is free again and its bucket keeps no
// subject for it, where a released one keeps its marker's.
func TestNames_ForgetLeavesNothing(t *testing.T) {
	ctx := context.Background()
	s := jstest.MustStore(t)
	names, err := s.OpenNames(ctx, "SYVAULT_NAMES_TEST", "", time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"released", "forgotten"} {
		if ok, err := names.Reserve(ctx, n, []byte("L"), 0); err != nil || !ok {
			t.Fatal(ok, err)
		}
	}
	if err := names.Release(ctx, "released"); err != nil {
		t.Fatal(err)
	}
	if err := names.Forget(ctx, "forgotten"); err != nil {
		t.Fatal(err)
	}
	if err := names.Forget(ctx, "never-reserved"); err != nil {
		t.Fatalf("forgetting a name not reserved: %v", err)
	}
	if _, held, err := names.Holder(ctx, "forgotten"); err != nil || held {
		t.Fatalf("forgotten name: held %v, %v", held, err)
	}
	subjects := map[string]uint64{}
	sizes, err := s.Sizes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sz := range sizes {
		subjects[sz.Name] = sz.Subjects
	}
	if n := subjects["KV_SYVAULT_NAMES_TEST"]; n != 1 {
		t.Errorf("the bucket keeps %d subjects, want 1 (the released name's marker)", n)
	}
	if ok, err := names.Reserve(ctx, "forgotten", []byte("M"), 0); err != nil || !ok {
		t.Fatalf("a forgotten name cannot be reserved again: %v, %v", ok, err)
	}
}
