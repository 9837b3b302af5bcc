package ui

import (
	"net/http"
	"strconv"
	"time"

	"github.com/syvault/syvault/events"
)

// maxBins is how many bars a chart has at most: a window longer than maxBins minutes is
// drawn in bins of several minutes.
const maxBins = 360

// window is the span a chart covers, cut into n bins of bin each, ending at end.
type window struct {
	start, end time.Time
	bin        time.Duration
	n          int
}

func newWindow(end time.Time, hours int) window {
	bin := time.Duration((hours*60+maxBins-1)/maxBins) * time.Minute
	end = end.Truncate(bin).Add(bin) // the current bin, whole
	n := int(time.Duration(hours) * time.Hour / bin)
	return window{start: end.Add(-time.Duration(n) * bin), end: end, bin: bin, n: n}
}

// index is the bin t falls in, or -1 outside the window.
func (w window) index(t time.Time) int {
	if t.Before(w.start) || !t.Before(w.end) {
		return -1
	}
	return int(t.Sub(w.start) / w.bin)
}

// series is one target's activity per bin: leases created (activated), dropped (revoked
// or expired: their user gone, or its drop given up), and listed at the end of each bin.
type series struct {
	Created, Dropped, Active []int
}

// activityOf counts each target's creates and drops per bin from its events, then
// works the number of listed leases backwards from the current ones: at the end of a
// bin there were as many as now, less those created since, plus those dropped since.
// A lease revoked before it was activated is listed while revoking yet was never
// created; the rare few make the line slightly low for as long as they last.
func activityOf(evs []events.Recorded, w window, current map[string]int) map[string]*series {
	out := map[string]*series{}
	get := func(uid string) *series {
		s, ok := out[uid]
		if !ok {
			s = &series{Created: make([]int, w.n), Dropped: make([]int, w.n), Active: make([]int, w.n)}
			out[uid] = s
		}
		return s
	}
	for uid := range current {
		get(uid)
	}
	for _, rec := range evs {
		e := rec.Event
		i := w.index(e.Time)
		if i < 0 || e.RecordUID == "" {
			continue
		}
		switch e.Type {
		case events.LeaseActivated:
			get(e.RecordUID).Created[i]++
		case events.LeaseDropped, events.LeaseAbandoned: // an abandoned lease left the active ones too
			get(e.RecordUID).Dropped[i]++
		}
	}
	for uid, s := range out {
		n := current[uid]
		for i := w.n - 1; i >= 0; i-- {
			s.Active[i] = max(n, 0)
			n += s.Dropped[i] - s.Created[i]
		}
	}
	return out
}

type activityData struct {
	Hours     int
	RecordUID string
	Dir       directory
	Charts    []chart
	Bin       string
	Read      int
	Truncated bool
	From, To  time.Time
	MaxRead   int
}

func (h *Handler) activity(w http.ResponseWriter, r *http.Request, s session) error {
	v := r.URL.Query()
	hours := 3
	if x := v.Get("hours"); x != "" {
		var err error
		if hours, err = strconv.Atoi(x); err != nil || hours < 1 || hours > 24 {
			return events.Errorf(events.EInvalid, "hours must be an integer between 1 and 24.")
		}
	}
	uid, err := queryID(v, "record_uid")
	if err != nil {
		return err
	}
	ctx := r.Context()
	d, err := h.directory(ctx)
	if err != nil {
		return err
	}
	win := newWindow(time.Now(), hours)
	recent, truncated, err := h.cfg.Queries.Recent(ctx, win.start, maxRecent)
	if err != nil {
		return err
	}
	current, err := h.cfg.Queries.ActiveByTarget(ctx)
	if err != nil {
		return err
	}
	data := activityData{Hours: hours, RecordUID: uid, Dir: d, Bin: compact(win.bin), Read: len(recent), Truncated: truncated,
		To: win.end, MaxRead: maxRecent}
	if truncated && len(recent) > 0 {
		// Bins before the first event read would show creates and drops missing.
		first := recent[0].Event.Time.Truncate(win.bin).Add(win.bin)
		win.n -= int(first.Sub(win.start) / win.bin)
		win.start = first
	}
	data.From = win.start
	all := activityOf(recent, win, current)
	for _, t := range d.Targets {
		if uid != "" && t.RecordUID != uid {
			continue
		}
		sr, ok := all[t.RecordUID]
		if !ok {
			sr = &series{Created: make([]int, win.n), Dropped: make([]int, win.n), Active: make([]int, win.n)}
		}
		data.Charts = append(data.Charts, drawChart(t.RecordUID, t.Name, sr, win))
	}
	h.render(w, http.StatusOK, "activity", view{Title: "Activity", Nav: "activity", Me: &s.Client, CSRF: s.CSRF, Data: data})
	return nil
}
