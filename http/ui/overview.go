package ui

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/syvault/syvault/events"
)

const (
	// countScan bounds the leases the overview reads to tell revoking ones from active
	// ones; past it the counts are shown as bounds. The total per target is exact.
	countScan = 5000
	// failureLookback is how far back the overview looks for each target's last failure.
	failureLookback = 24 * time.Hour
	// maxRecent bounds the events one page reads from the stream (overview, activity).
	maxRecent = 20000
)

// targetRow is one target on the overview.
type targetRow struct {
	RecordUID, Name, Engine, Address, Database string
	Active, Revoking                           int
	// Approx says the active count is at most, the revoking one at least, what is shown.
	Approx  bool
	Failure *eventRow
}

type overviewData struct {
	Targets            []targetRow
	Leases, Clients    int
	Lookback           string
	FailuresIncomplete bool // the lookback held more events than were read
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request, s session) error {
	ctx := r.Context()
	d, err := h.directory(ctx)
	if err != nil {
		return err
	}
	listed, err := h.cfg.Queries.ActiveByTarget(ctx)
	if err != nil {
		return err
	}
	revoking, complete, err := h.countRevoking(ctx)
	if err != nil {
		return err
	}
	recent, truncated, err := h.cfg.Queries.Recent(ctx, time.Now().Add(-failureLookback), maxRecent)
	if err != nil {
		return err
	}
	failures := map[string]eventRow{}
	for _, rec := range recent {
		if rec.Event.Type == events.LeaseFailed {
			failures[rec.Event.RecordUID] = d.eventRow(rec)
		}
	}
	data := overviewData{Clients: len(d.Clients), Lookback: compact(failureLookback), FailuresIncomplete: truncated}
	for _, t := range d.Targets {
		row := targetRow{RecordUID: t.RecordUID, Name: t.Name, Engine: string(t.Engine), Database: t.Database,
			Address: net.JoinHostPort(t.Host, strconv.Itoa(t.Port)), Revoking: revoking[t.RecordUID], Approx: !complete}
		row.Active = max(listed[t.RecordUID]-row.Revoking, 0)
		if f, ok := failures[t.RecordUID]; ok {
			row.Failure = &f
		}
		data.Leases += listed[t.RecordUID]
		data.Targets = append(data.Targets, row)
	}
	h.render(w, http.StatusOK, "overview", view{Title: "Overview", Nav: "overview", Me: &s.Client, CSRF: s.CSRF, Data: data})
	return nil
}

// countRevoking counts the revoking leases of each target, reading the list of active
// leases up to countScan of them; complete says whether it read them all.
func (h *Handler) countRevoking(ctx context.Context) (map[string]int, bool, error) {
	counts := map[string]int{}
	q := events.LeaseQuery{Limit: 1000}
	for read := 0; read < countScan; {
		page, next, err := h.cfg.Queries.ActiveLeases(ctx, q)
		if err != nil {
			return nil, false, err
		}
		for _, l := range page {
			if l.Status == events.StatusRevoking {
				counts[l.RecordUID]++
			}
		}
		read += len(page)
		if next == "" {
			return counts, true, nil
		}
		q.Cursor = next
	}
	return counts, false, nil
}
