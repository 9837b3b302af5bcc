package http

import (
	"testing"
	"time"
)

// TestClientLimits: a client may spend its burst at once, then one request per refill;
// a refusal says how long until the next is allowed, and is logged once a minute for each
// kind of refusal; clients do not share a bucket; and
// a bucket full again is forgotten, so the limits hold only the clients that asked lately.
func TestClientLimits(t *testing.T) {
	if newClientLimits(0) != nil {
		t.Fatal("a rate of 0 must mean no limit")
	}
	l := newClientLimits(2) // bursts of 4
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for i := range 4 {
		if _, ok, _ := l.take("a", limited, t0); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	wait, ok, first := l.take("a", limited, t0)
	if ok || !first || wait <= 0 || wait > 500*time.Millisecond {
		t.Fatalf("the fifth request: allowed %v, wait %v, first %v; want refused for at most 0.5 s, the first refusal", ok, wait, first)
	}
	if _, _, first := l.take("a", limited, t0); first {
		t.Fatal("a second refusal within the minute is to be counted only, not logged")
	}
	// Its denials going unrecorded are logged once a minute too, whatever its 429s: one
	// logged line did hide the other.
	if _, _, first := l.take("a", unrecorded, t0); !first {
		t.Fatal("the first unrecorded denial after a logged 429 was not to be logged")
	}
	if _, _, first := l.take("a", unrecorded, t0); first {
		t.Fatal("a second unrecorded denial within the minute is to be counted only, not logged")
	}
	if _, ok, _ := l.take("b", limited, t0); !ok {
		t.Fatal("another client's request was refused")
	}
	if _, ok, _ := l.take("a", limited, t0.Add(wait)); !ok {
		t.Fatalf("refused again after the %v it was told to wait", wait)
	}
	if _, ok, _ := l.take("a", limited, t0.Add(wait)); ok {
		t.Fatal("two requests allowed for one refill")
	}
	l.take("c", limited, t0.Add(2*time.Minute)) // a while later: a and b are full again
	if _, kept := l.buckets["a"]; kept || len(l.buckets) != 1 {
		t.Fatalf("buckets kept after a quiet minute: %d", len(l.buckets))
	}
	if slow := newClientLimits(0.1); slow.burst != 2 {
		t.Fatalf("a rate of 0.1 a second: bursts of %d, want 2 (a token and a request)", slow.burst)
	}
}
