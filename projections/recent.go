package projections

import (
	"context"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
)

// Recent returns the events stored since since, oldest first, reading at most limit of
// them: when more were stored since then, it returns the last limit and truncated is
// true. It costs one look at the stream's state, one read to find where since falls,
// and the events returned; undecodable events are skipped.
func (p *Projections) Recent(ctx context.Context, since time.Time, limit int) (evs []events.Recorded, truncated bool, err error) {
	info, err := p.store.Info(ctx)
	if err != nil {
		return nil, false, err
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 || info.State.LastTime.Before(since) || limit < 1 {
		return nil, false, nil
	}
	var first uint64
	err = p.store.Scan(ctx, jsstore.ScanOptions{Since: since}, func(seq uint64, _ time.Time, _ []byte, _ bool) bool {
		first = seq
		return true
	})
	if err != nil || first == 0 {
		return nil, false, err
	}
	after := first - 1
	if last > uint64(limit) && last-uint64(limit) > after {
		after, truncated = last-uint64(limit), true
	}
	err = p.store.Scan(ctx, jsstore.ScanOptions{After: after}, func(seq uint64, _ time.Time, data []byte, _ bool) bool {
		if e, err := events.Decode(data); err == nil {
			evs = append(evs, events.Recorded{Seq: seq, Event: e})
		}
		return seq >= last // what was appended since the look at the state is the next call's
	})
	return evs, truncated, err
}
