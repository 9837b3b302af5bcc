package jsstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/events/jsstore/jstest"
)

// BenchmarkLoadLease reads a three-event lease history (request, activation,
// revocation) from a stream holding 10,000 leases, on a standalone server: by direct
// gets, as the store does there, and through the leader's API, as it does on a cluster.
func BenchmarkLoadLease(b *testing.B) {
	ctx := context.Background()
	srv := jstest.MustServer(b, "")
	s := srv.MustStore(b)
	const n = 10000
	ids := make([]string, n)
	for i := range n {
		id := fmt.Sprintf("L%d", i)
		ids[i] = id
		subj := events.LeaseSubject(id)
		var prev uint64
		for _, typ := range []events.Type{events.LeaseRequested, events.LeaseActivated, events.LeaseRevoked} {
			seq, err := s.Append(ctx, subj, events.Event{Type: typ, ID: id + "." + string(typ), LeaseID: id, Time: time.Now().UTC()}, prev)
			if err != nil {
				b.Fatal(err)
			}
			prev = seq
		}
	}
	read := func(b *testing.B) {
		for i := range b.N {
			l, err := s.LoadLease(ctx, ids[i%n])
			if err != nil || l.Seq == 0 {
				b.Fatal(l, err)
			}
		}
	}
	b.Run("direct", read)
	jsstore.ReadFromLeader(s)
	b.Run("leader", read)
}
