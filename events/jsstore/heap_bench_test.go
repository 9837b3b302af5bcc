package jsstore_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore/jstest"
)

// BenchmarkAuditArchiveShape measures a layout considered for bounding the audit log's
// cost (README "Sizing"), not the one in use: the events stream keeps a subject per lease
// for good, and NATS holds state for each in memory and rebuilds it at every start. The
// benchmark fills the events stream with 100,000 leases (four events each, like a lease's
// life; without message ids, whose dedupe state lasts only the duplicate window),
// restarts, and reads the heap; then sources it into an
// archive stream whose subject transform folds the lease subjects into 256 partitions,
// drops the events stream (as if every ended lease had left it), restarts, and reads the
// heap again. The heap is read in the benchmark's process, which is NATS's. Run with -benchtime 1x.
func BenchmarkAuditArchiveShape(b *testing.B) {
	const leases = 100000
	ctx := context.Background()
	for b.Loop() {
		dir := b.TempDir()
		srv := jstest.MustServer(b, dir)
		srv.MustStore(b) // the events stream as SyVault configures it
		base := settledHeap()
		js, _ := jetstream.New(srv.MustConnect(b))
		payload := make([]byte, 300)
		for range leases {
			subj := events.LeaseSubject(uuid.NewString())
			for range 4 {
				if _, err := js.PublishAsync(subj, payload); err != nil {
					b.Fatal(err)
				}
			}
		}
		<-js.PublishAsyncComplete()
		b.ReportMetric((settledHeap()-base)/leases, "heap-B/lease-events-written")

		srv, took := restart(b, srv)
		b.ReportMetric(float64(took.Milliseconds()), "restart-ms-events")
		b.ReportMetric((settledHeap()-base)/leases, "heap-B/lease-events-restarted")

		js, _ = jetstream.New(srv.MustConnect(b))
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SYVAULT_ARCHIVE", Storage: jetstream.FileStorage,
			Sources: []*jetstream.StreamSource{{Name: events.EventsStream, SubjectTransforms: []jetstream.SubjectTransformConfig{
				{Source: events.LeaseSubjects, Destination: "syvault.archive.lease.{{partition(256,1)}}"}}}}}); err != nil {
			b.Fatal(err)
		}
		archive, _ := js.Stream(ctx, "SYVAULT_ARCHIVE")
		for deadline := time.Now().Add(5 * time.Minute); ; {
			info, err := archive.Info(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if info.State.Msgs == 4*leases {
				b.ReportMetric(float64(info.State.NumSubjects), "archive-subjects")
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("the archive holds %d of %d messages", info.State.Msgs, 4*leases)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := js.DeleteStream(ctx, events.EventsStream); err != nil {
			b.Fatal(err)
		}
		_, took = restart(b, srv)
		b.ReportMetric(float64(took.Milliseconds()), "restart-ms-archive")
		b.ReportMetric((settledHeap()-base)/leases, "heap-B/lease-archive")
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkNamesHeld: what a held username costs NATS (README "Sizing": every lease holds
// its name for 25 hours from its creation, so with churn the names of a day's leases are
// held, not only the active ones'). 100,000 names reserved with their lease ids, the heap
// of NATS's process as written and after a restart. Run with -benchtime 1x.
func BenchmarkNamesHeld(b *testing.B) {
	const held = 100000
	ctx := context.Background()
	for b.Loop() {
		srv := jstest.MustServer(b, "")
		s := srv.MustStore(b)
		names, err := s.OpenNames(ctx, "SYVAULT_USERNAMES", "", 25*time.Hour, 0)
		if err != nil {
			b.Fatal(err)
		}
		base := settledHeap()
		for i := range held {
			if ok, err := names.Reserve(ctx, fmt.Sprintf("vf_tmp_%08x", i), []byte(uuid.NewString()), 0); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
		b.ReportMetric((settledHeap()-base)/held, "heap-B/name-written")
		_, _ = restart(b, srv)
		b.ReportMetric((settledHeap()-base)/held, "heap-B/name-restarted")
	}
	b.ReportMetric(0, "ns/op")
}

// restart stops srv and starts it again on its store, returning how long the start took
// (JetStream recovers its streams before the server accepts connections).
func restart(b *testing.B, srv *jstest.Server) (*jstest.Server, time.Duration) {
	srv.NS.Shutdown()
	srv.NS.WaitForShutdown()
	start := time.Now()
	srv = jstest.MustServer(b, srv.Dir)
	return srv, time.Since(start)
}

// settledHeap is the heap in use once NATS's caches of recently written blocks have gone
// (they expire within seconds) and the collector has run.
func settledHeap() float64 {
	time.Sleep(3 * time.Second)
	var m runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return float64(m.HeapInuse)
}
