package command

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
)

func TestService_UseLoginLink(t *testing.T) {
	ctx := context.Background()
	t.Run("once", func(t *testing.T) {
		s := mustService(t)
		code, exp, err := s.CreateLoginLink(ctx, "client-1", "K1")
		if err != nil {
			t.Fatal(err)
		}
		if until := time.Until(exp); until < 50*time.Second || until > LoginLinkTTL {
			t.Fatalf("expires in %v, want about %v", until, LoginLinkTTL)
		}
		if id, key, err := s.UseLoginLink(ctx, code); err != nil || id != "client-1" || key != "K1" {
			t.Fatalf("first use: %q, %v", id, err)
		}
		if _, _, err := s.UseLoginLink(ctx, code); events.ErrorCode(err) != events.EUnauthenticated {
			t.Fatalf("second use: %v, want unauthenticated", err)
		}
	})
	t.Run("one winner among concurrent uses", func(t *testing.T) {
		s := mustService(t)
		code, _, err := s.CreateLoginLink(ctx, "client-1", "K1")
		if err != nil {
			t.Fatal(err)
		}
		var wins atomic.Int32
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				if _, _, err := s.UseLoginLink(ctx, code); err == nil {
					wins.Add(1)
				} else if events.ErrorCode(err) != events.EUnauthenticated {
					t.Errorf("use: %v", err)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("%d uses succeeded, want exactly 1", wins.Load())
		}
	})
	t.Run("expired", func(t *testing.T) {
		s := mustService(t)
		code, _, err := s.CreateLoginLink(ctx, "client-1", "K1")
		if err != nil {
			t.Fatal(err)
		}
		s.logins.now = func() time.Time { return time.Now().Add(LoginLinkTTL + time.Second) }
		if _, _, err := s.UseLoginLink(ctx, code); events.ErrorCode(err) != events.EUnauthenticated {
			t.Fatalf("use after %v: %v, want unauthenticated", LoginLinkTTL, err)
		}
	})
	t.Run("unknown or malformed", func(t *testing.T) {
		s := mustService(t)
		for _, code := range []string{"", "nope", "a.b", "*", string(make([]byte, 100))} {
			if _, _, err := s.UseLoginLink(ctx, code); events.ErrorCode(err) != events.EUnauthenticated {
				t.Errorf("code %q: %v, want unauthenticated", code, err)
			}
		}
	})
	t.Run("only the hash is stored", func(t *testing.T) {
		s := mustService(t)
		code, _, err := s.CreateLoginLink(ctx, "client-1", "K1")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.logins.tickets.Take(ctx, code); ok {
			t.Fatal("the code itself is a key of the bucket")
		}
	})
}
