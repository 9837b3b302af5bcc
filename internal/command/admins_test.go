package command

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/syvault/syvault/events"
)

// The admins' guard: a change that takes an admin away waits while another holds it,
// takes over one left by a process that died holding it once its bound has passed, is
// refused when its own actor is no longer an admin, and leaves the guard free after.
func TestGuardAdmins(t *testing.T) {
	ctx := context.Background()
	s := mustService(t)
	admin, app := registered(t, s, events.RoleAdmin).ClientID, registered(t, s, events.RoleApp).ClientID
	free := func() {
		t.Helper()
		if h, held, err := s.names.Holder(ctx, adminsGuard); err != nil || held {
			t.Fatalf("the guard is held (%q, %v) after its change", h.Value, err)
		}
	}

	_, release, err := s.guardAdmins(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, _, err := s.guardAdmins(short, admin); events.ErrorCode(err) != events.EConflict {
		t.Fatalf("a second change while the first holds the guard: %v, want a conflict once its deadline passed", err)
	}
	release()
	free()

	if _, _, err := s.guardAdmins(ctx, app); events.ErrorCode(err) != events.EForbidden {
		t.Fatalf("a change by a client that is no admin: %v, want forbidden", err)
	}
	free()

	// A guard left by a process that died holding it is taken over once it has stood
	// unchanged for the bound, by this process's clock.
	if ok, err := s.names.Reserve(ctx, adminsGuard, []byte("a process that died"), 0); err != nil || !ok {
		t.Fatalf("Reserve = %v, %v", ok, err)
	}
	old := adminsGuardBound
	adminsGuardBound = 200 * time.Millisecond
	t.Cleanup(func() { adminsGuardBound = old })
	guarded, release, err := s.guardAdmins(ctx, admin)
	if err != nil {
		t.Fatalf("a guard left behind was not taken over: %v", err)
	}
	if _, ok := guarded.Deadline(); !ok {
		t.Error("the guarded change has no deadline: it could outlast the bound and overlap the next")
	}
	// A holder that outlived the bound, overtaken, leaves its successor's guard alone.
	_, next, err := s.guardAdmins(ctx, admin)
	if err != nil {
		t.Fatalf("a guard held past its bound was not taken over: %v", err)
	}
	release()
	if h, held, err := s.names.Holder(ctx, adminsGuard); err != nil || !held {
		t.Fatalf("the overtaken holder's release freed its successor's guard (%q, %v, %v)", h.Value, held, err)
	}
	next()
	free()
}

// A deletion decides on the client as it read it, and is recorded only after the event
// it read: a promotion between the two (an app client made an admin meanwhile) refuses
// it, rather than remove an admin without the admins' guard.
func TestRemoveClient_PromotedMeanwhile(t *testing.T) {
	ctx := context.Background()
	s := mustService(t)
	actor, target := registered(t, s, events.RoleAdmin), registered(t, s, events.RoleApp)
	afterRemovalRead = func(id string) {
		promoted := target
		promoted.Role = events.RoleAdmin
		_, last, err := s.cfg.Store.LoadClient(ctx, id)
		if err == nil {
			_, err = s.cfg.Store.Append(ctx, events.ClientSubject(id), events.UpdateClient(promoted, actor.ClientID, last, time.Now()), last)
		}
		if err != nil {
			t.Errorf("the promotion: %v", err)
		}
	}
	t.Cleanup(func() { afterRemovalRead = func(string) {} })
	if err := s.RemoveClient(ctx, target.ClientID, actor.ClientID); events.ErrorCode(err) != events.EConflict {
		t.Fatalf("a deletion of a client promoted meanwhile: %v, want a conflict", err)
	}
	if c, _, err := s.cfg.Store.LoadClient(ctx, target.ClientID); err != nil || c.Role != events.RoleAdmin {
		t.Fatalf("the promoted client: %+v, %v; want it kept, an admin", c, err)
	}
}

// registered records a client of role in s's stream, as its registration would.
func registered(t *testing.T, s *Service, role string) events.Client {
	t.Helper()
	c := events.Client{ClientID: uuid.NewString(), Name: "c-" + uuid.NewString()[:8], Role: role}
	if _, err := s.cfg.Store.Append(context.Background(), events.ClientSubject(c.ClientID), events.RegisterClient(c, "test", time.Now()), 0); err != nil {
		t.Fatal(err)
	}
	return c
}
