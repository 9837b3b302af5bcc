package postgres

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestTurns: one holder of a key at a time, a waiter leaves when its context ends, other
// keys do not wait, and a key nobody holds takes no memory (there may be one per lease).
func TestTurns(t *testing.T) {
	var tu turns
	ctx := t.Context()
	release, err := tu.take(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	other, err := tu.take(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	other()
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := tu.take(short, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second take of a held key: %v, want it to wait until its deadline", err)
	}
	got := make(chan func())
	go func() {
		r, err := tu.take(ctx, "a")
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	release()
	release() // again: must not end the next holder's turn
	if r := <-got; r != nil {
		r()
	}
	tu.mu.Lock()
	defer tu.mu.Unlock()
	if len(tu.m) != 0 {
		t.Fatalf("%d keys kept after every turn ended", len(tu.m))
	}
}
