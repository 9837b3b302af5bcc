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

// BenchmarkLoadLeaseAfterRenewals reads a lease that has been renewed n times, as every
// renewal, revocation and expiry of it does before deciding: the last renewal, the
// activation and the request, however many renewals came between.
func BenchmarkLoadLeaseAfterRenewals(b *testing.B) {
	ctx := context.Background()
	s := jstest.MustServer(b, "").MustStore(b)
	now := time.Now().UTC()
	for _, n := range []int{1, 1000, 3000} {
		id := fmt.Sprintf("R%d", n)
		subj := events.LeaseSubject(id)
		seq, err := s.Append(ctx, subj, events.Event{Type: events.LeaseRequested, ID: id + ".requested", LeaseID: id, Time: now,
			ExpiresAt: now.Add(time.Hour), Lease: &events.LeaseSpec{Username: "vf_tmp_bbbbbbbb"}}, 0)
		if err != nil {
			b.Fatal(err)
		}
		if seq, err = s.Append(ctx, subj, events.Event{Type: events.LeaseActivated, ID: id + ".activated", LeaseID: id, Time: now}, seq); err != nil {
			b.Fatal(err)
		}
		base := seq
		for i := range n {
			e := events.Event{Type: events.LeaseRenewed, ID: fmt.Sprintf("%s.renewed.%d", id, i), LeaseID: id, Time: now,
				Base: base, TTLSeconds: 3600, ExpiresAt: now.Add(time.Hour)}
			if seq, err = s.Append(ctx, subj, e, seq); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("renewals=%d", n), func(b *testing.B) {
			for b.Loop() {
				if l, err := s.LoadLease(ctx, id); err != nil || l.Seq != seq {
					b.Fatal(l, err)
				}
			}
		})
	}
}
