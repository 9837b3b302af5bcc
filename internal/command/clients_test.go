package command

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/events/jsstore/jstest"
)

// TestRegisterClient_NotRecordedLeavesItsNameFree: a client's registration whose append
// was refused (here the events stream full, as an account out of storage refuses it)
// kept its name reserved for a client id nothing records: every registration of that
// name was refused as "being registered right now" for two minutes. A registration
// JetStream refused frees its name at once, as a target's does.
func TestRegisterClient_NotRecordedLeavesItsNameFree(t *testing.T) {
	s, setRoom := serviceWithRoom(t)
	setRoom(0)
	c := events.Client{Name: "billing", Role: events.RoleApp}
	if _, err := s.RegisterClient(t.Context(), c, ""); err == nil {
		t.Fatal("a client registered with its stream refusing every append")
	}
	setRoom(-1)
	if _, err := s.RegisterClient(context.Background(), c, ""); err != nil {
		t.Fatalf("the registration sent again once the stream had room: %v; want it made, its name free", err)
	}
}

// A client's rename the stream refused frees the new name at once, and the client keeps
// its old one.
func TestUpdateClient_ARenameNotRecordedLeavesItsNameFree(t *testing.T) {
	s, setRoom := serviceWithRoom(t)
	c, err := s.RegisterClient(t.Context(), events.Client{Name: "billing", Role: events.RoleApp}, "")
	if err != nil {
		t.Fatal(err)
	}
	setRoom(0)
	renamed := c
	renamed.Name = "ledger"
	if _, _, err := s.UpdateClient(t.Context(), c.ClientID, renamed, "", nil); err == nil {
		t.Fatal("a client renamed with its stream refusing every append")
	}
	setRoom(-1)
	if _, err := s.RegisterClient(t.Context(), events.Client{Name: "ledger", Role: events.RoleApp}, ""); err != nil {
		t.Errorf("another client named as the refused rename: %v; want it registered", err)
	}
	if _, err := s.RegisterClient(t.Context(), events.Client{Name: "billing", Role: events.RoleApp}, ""); events.ErrorCode(err) != events.EConflict {
		t.Errorf("another client named as the client still is: %v; want a conflict", err)
	}
}

// serviceWithRoom is a service on a server of its own, one client recorded (a limit of
// no events is no limit), and a function that lets its events stream hold room more
// events than it holds then (-1: no limit), refusing any beyond.
func serviceWithRoom(t *testing.T) (*Service, func(room int64)) {
	t.Helper()
	srv := jstest.MustServer(t, "")
	s := newService(t, srv.MustStore(t), &recorder{})
	if _, err := s.RegisterClient(t.Context(), events.Client{Name: "orders", Role: events.RoleApp}, ""); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(srv.MustConnect(t))
	if err != nil {
		t.Fatal(err)
	}
	return s, func(room int64) {
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
}

// What frees a name at once (the append surely stored nothing), and what does not (it
// may land after any look at the stream).
func TestRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"a conflict", jsstore.ErrConflict, true},
		{"the stream full", events.StoreUnavailable(fmt.Errorf("jsstore.Append: %w", &jetstream.APIError{ErrorCode: 10077, Code: 503})), true},
		{"no stream", events.StoreUnavailable(fmt.Errorf("jsstore.Append: %w", jetstream.ErrNoStreamResponse)), true},
		{"a timeout", events.StoreUnavailable(fmt.Errorf("jsstore.Append: %w", context.DeadlineExceeded)), false},
		{"NATS's timeout", events.StoreUnavailable(fmt.Errorf("jsstore.Append: %w", nats.ErrTimeout)), false},
		{"a lost connection", events.StoreUnavailable(fmt.Errorf("jsstore.Append: %w", nats.ErrConnectionClosed)), false},
	} {
		if got := refused(tc.err); got != tc.want {
			t.Errorf("%s: %v; want %v", tc.name, got, tc.want)
		}
	}
}

// An id longer than NATS takes on its protocol line (4 KiB), reaching the store below the
// HTTP layer's checks, made NATS close the connection for good. The store refuses such
// a subject or key as naming nothing, and answers as before.
func TestStore_AnIDTooLongForNATSNamesNothing(t *testing.T) {
	s, _ := serviceWithRoom(t)
	long := strings.Repeat("A", 5000)
	if _, _, err := s.UpdateClient(t.Context(), long, events.Client{Name: "x", Role: events.RoleApp}, "", nil); events.ErrorCode(err) != events.ENotFound {
		t.Errorf("an update of client %.8s…: %v; want not found", long, err)
	}
	if err := s.RevokeLease(t.Context(), long, ""); events.ErrorCode(err) != events.ENotFound {
		t.Errorf("a revocation of lease %.8s…: %v; want not found", long, err)
	}
	if _, err := s.RegisterClient(t.Context(), events.Client{Name: "after", Role: events.RoleApp}, ""); err != nil {
		t.Fatalf("a registration after the long ids: %v; want the store answering", err)
	}
}
