package http

import (
	"context"
	"log/slog"
	"net/http"
	"testing"

	"github.com/syvault/syvault/events/jsstore/jstest"
	"github.com/syvault/syvault/internal/seal"
	"github.com/syvault/syvault/projections"
)

// mustTestServer builds the API on an embedded JetStream, with no database behind it.
func mustTestServer(t *testing.T) *Server {
	t.Helper()
	ctx := context.Background()
	store := jstest.MustStore(t)
	proj, err := projections.Open(ctx, store, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := seal.New(seal.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, Config{
		Store: store, Projections: proj, Sealer: sealer, Preparer: nopPreparer{},
		TokenKeys: testKeys,
		Metrics:   http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Two leases never get one username, even when the draw repeats: the second lease draws
// again and the reservation names the lease that holds it.
func TestReserveUsername_NeverTwice(t *testing.T) {
	s := mustTestServer(t)
	draws := []string{"vf_tmp_aaaaaaaa", "vf_tmp_aaaaaaaa", "vf_tmp_bbbbbbbb"}
	s.newUsername = func() string { d := draws[0]; draws = draws[1:]; return d }
	ctx := context.Background()
	first, err := s.reserveUsername(ctx, "lease-1")
	if err != nil || first != "vf_tmp_aaaaaaaa" {
		t.Fatalf("first lease: %q, %v", first, err)
	}
	second, err := s.reserveUsername(ctx, "lease-2")
	if err != nil || second != "vf_tmp_bbbbbbbb" {
		t.Fatalf("second lease, whose first draw was taken: %q, %v", second, err)
	}
	e, err := s.usernames.Get(ctx, first)
	if err != nil || string(e.Value()) != "lease-1" {
		t.Fatalf("reservation of %s: %v", first, err)
	}
	// Draws that keep finding taken names give up rather than loop.
	s.newUsername = func() string { return first }
	if _, err := s.reserveUsername(ctx, "lease-3"); err == nil {
		t.Fatal("reserved a taken name")
	}
}
