package ui

import (
	"testing"
	"time"

	"github.com/syvault/syvault/events"
)

func TestNewWindow(t *testing.T) {
	end := time.Date(2026, 4, 6, 12, 30, 20, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		hours int
		bin   time.Duration
		n     int
	}{
		{"per minute", 3, time.Minute, 180},
		{"six hours still per minute", 6, time.Minute, 360},
		{"a day in 4-minute bins", 24, 4 * time.Minute, 360},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWindow(end, tc.hours)
			if w.bin != tc.bin || w.n != tc.n || !w.end.After(end) || w.end.Sub(w.start) != time.Duration(tc.n)*tc.bin {
				t.Fatalf("%+v", w)
			}
			if w.index(end) != w.n-1 || w.index(w.start) != 0 || w.index(w.end) != -1 || w.index(w.start.Add(-time.Second)) != -1 {
				t.Fatal("index: the current time is not in the last bin, or the window's edges are wrong")
			}
		})
	}
}

// The listed line is worked backwards from the current count: before a lease was
// created there was one fewer, before one was dropped one more.
func TestActivityOf(t *testing.T) {
	w := newWindow(time.Date(2026, 4, 6, 12, 0, 30, 0, time.UTC), 1)
	at := func(minute int) time.Time { return w.start.Add(time.Duration(minute)*time.Minute + time.Second) }
	ev := func(typ events.Type, uid string, minute int) events.Recorded {
		return events.Recorded{Event: events.Event{Type: typ, RecordUID: uid, Time: at(minute)}}
	}
	got := activityOf([]events.Recorded{
		ev(events.LeaseActivated, "a", 10), ev(events.LeaseActivated, "a", 10), ev(events.LeaseDropped, "a", 20),
		ev(events.LeaseRequested, "a", 30), ev(events.LeaseActivated, "b", 59),
		{Event: events.Event{Type: events.LeaseActivated, RecordUID: "a", Time: w.start.Add(-time.Minute)}}, // before the window
	}, w, map[string]int{"a": 3, "b": 1, "c": 5})
	a := got["a"]
	if a.Created[10] != 2 || a.Dropped[20] != 1 || a.Active[59] != 3 || a.Active[20] != 3 || a.Active[19] != 4 || a.Active[10] != 4 || a.Active[9] != 2 {
		t.Fatalf("a: created %v dropped %v active %v", a.Created, a.Dropped, a.Active)
	}
	if b := got["b"]; b.Active[59] != 1 || b.Active[58] != 0 {
		t.Fatalf("b: active %v", b.Active)
	}
	if c := got["c"]; c.Active[0] != 5 || c.Active[59] != 5 {
		t.Fatalf("c, a quiet target: active %v", c.Active)
	}
	ch := drawChart("a", "A", a, w)
	if ch.Now != 3 || ch.Created != 2 || ch.Dropped != 1 || ch.MaxActive != 4 || len(ch.Bars) != 2 || len(ch.Ticks) == 0 {
		t.Fatalf("chart: %+v", ch)
	}
}
