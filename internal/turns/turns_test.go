package turns

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A second caller of a held key waits until the holder releases it, callers of other keys
// do not; a caller that gives up while waiting, or has given up already, gets nothing and
// leaves nothing behind; a key nobody holds takes no memory (there may be one per lease).
func TestTake(t *testing.T) {
	var k Keys
	ctx := t.Context()
	release, err := k.Take(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	other, err := k.Take(ctx, "b") // another key is not held by a's holder
	if err != nil {
		t.Fatal(err)
	}
	other()

	waiting, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() { _, err := k.Take(waiting, "a"); gaveUp <- err }()
	poll(t, func() bool { return k.Users("a") == 2 })
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("a waiter whose context ended: %v", err)
	}

	got := make(chan func(), 1)
	go func() {
		r, err := k.Take(ctx, "a")
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	poll(t, func() bool { return k.Users("a") == 2 })
	select {
	case <-got:
		t.Fatal("two callers held one key")
	default:
	}
	release()
	release() // a second release does nothing
	second := <-got
	if n := k.Users("a"); n != 1 {
		t.Fatalf("%d users after the first holder left, want 1", n)
	}
	second()
	// A caller whose context has ended does not get even a free key.
	for range 20 {
		if _, err := k.Take(waiting, "a"); !errors.Is(err, context.Canceled) {
			t.Fatalf("a caller whose context had ended took a free key: %v", err)
		}
	}
	if len(k.m) != 0 {
		t.Fatalf("%d keys kept after every holder left", len(k.m))
	}
}

func poll(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}
