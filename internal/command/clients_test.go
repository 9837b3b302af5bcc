package command

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore/jstest"
)

// TestRegisterClient_NotRecordedLeavesItsNameFree: a client's registration whose append
// was refused (here the events stream full, as an account out of storage refuses it)
// kept its name reserved for a client id nothing records: every registration of that
// name was refused as "being registered right now" for two minutes. A registration the
// stream's leader shows did not land frees its name at once, as a target's does.
func TestRegisterClient_NotRecordedLeavesItsNameFree(t *testing.T) {
	srv := jstest.MustServer(t, "")
	s := newService(t, srv.MustStore(t), &recorder{})
	js, err := jetstream.New(srv.MustConnect(t))
	if err != nil {
		t.Fatal(err)
	}
	// setLimit lets the events stream hold room more events than it holds now (-1: no limit).
	setLimit := func(room int64) {
		t.Helper()
		st, err := js.Stream(t.Context(), events.EventsStream)
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		cfg.MaxMsgs, cfg.Discard = -1, jetstream.DiscardNew
		if room >= 0 {
			cfg.MaxMsgs = int64(st.CachedInfo().State.Msgs) + room
		}
		if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	// One event at least: a limit of none is no limit.
	if _, err := s.RegisterClient(t.Context(), events.Client{Name: "orders", Role: events.RoleApp}, ""); err != nil {
		t.Fatal(err)
	}
	setLimit(0)
	c := events.Client{Name: "billing", Role: events.RoleApp}
	if _, err := s.RegisterClient(t.Context(), c, ""); err == nil {
		t.Fatal("a client registered with its stream refusing every append")
	}
	setLimit(-1)
	got, err := s.RegisterClient(context.Background(), c, "")
	if err != nil {
		t.Fatalf("the registration sent again once the stream had room: %v; want it made, its name free", err)
	}
	if got.Name != "billing" {
		t.Fatalf("registered %+v", got)
	}
}
