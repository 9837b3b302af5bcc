package http

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
)

// auditItem is one event as the audit shows it: who, what, on which record and lease,
// with which TTL and outcome. It is built field by field from the event, so nothing an
// event carries for the workers (sealed passwords, target snapshots) can reach it.
type auditItem struct {
	Seq        uint64     `json:"seq"`
	Time       time.Time  `json:"time"`
	Type       string     `json:"type"`
	ClientID   string     `json:"client_id,omitempty"`
	RecordUID  string     `json:"record_uid,omitempty"`
	LeaseID    string     `json:"lease_id,omitempty"`
	TTLSeconds int        `json:"ttl_seconds,omitempty"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	Username   string     `json:"username,omitempty"`
	Outcome    string     `json:"outcome,omitempty"`
	Reason     string     `json:"reason,omitempty"`
	Action     string     `json:"action,omitempty"`
	Subject    string     `json:"subject_client_id,omitempty"` // the client a client event is about
}

func auditItemOf(seq uint64, e events.Event) auditItem {
	it := auditItem{Seq: seq, Time: e.Time, Type: string(e.Type), ClientID: e.ClientID, RecordUID: e.RecordUID, LeaseID: e.LeaseID,
		TTLSeconds: e.TTLSeconds, Outcome: e.Outcome, Reason: e.Reason, Action: e.Action}
	if !e.ExpiresAt.IsZero() {
		t := e.ExpiresAt
		it.ExpiresAt = &t
	}
	if e.Lease != nil {
		it.Username = e.Lease.Username
	}
	if e.Client != nil {
		it.Subject = e.Client.ClientID
	}
	if e.Type == events.ClientRemoved {
		it.Subject = e.ClientID
	}
	return it
}

// auditQuery filters the audit replay.
type auditQuery struct {
	since, until                 time.Time
	recordUID, leaseID, clientID string
	after                        uint64
	limit                        int
}

// untilSlack is how far past until the scan reads, for events stamped before they were
// stored.
const untilSlack = time.Minute

// maxAuditScan bounds the events one audit request reads, so a narrow filter over a long
// stream answers with a cursor to continue from instead of scanning it all at once.
const maxAuditScan = 100000

// audit replays the events stream oldest first.
func (s *Server) audit(c echo.Context) error {
	q := auditQuery{limit: 100}
	var err error
	for name, dst := range map[string]*string{"record_uid": &q.recordUID, "lease_id": &q.leaseID, "client_id": &q.clientID} {
		if *dst, err = queryID(c, name); err != nil {
			return err
		}
	}
	for name, dst := range map[string]*time.Time{"since": &q.since, "until": &q.until} {
		if v := c.QueryParam(name); v != "" {
			if *dst, err = time.Parse(time.RFC3339, v); err != nil {
				return events.Errorf(events.EInvalid, "%s must be an RFC 3339 time, e.g. 2026-04-06T12:00:00Z.", name)
			}
		}
	}
	if v := c.QueryParam("limit"); v != "" {
		if q.limit, err = strconv.Atoi(v); err != nil || q.limit < 1 || q.limit > 1000 {
			return events.Errorf(events.EInvalid, "limit must be an integer between 1 and 1000.")
		}
	}
	if v := c.QueryParam("cursor"); v != "" {
		if q.after, err = strconv.ParseUint(v, 10, 64); err != nil {
			return events.Errorf(events.EInvalid, "cursor must be a next_cursor from an earlier answer.")
		}
	}
	items, next, err := s.replayAudit(c.Request().Context(), q)
	if err != nil {
		return err
	}
	out := struct {
		Data       []auditItem `json:"data"`
		NextCursor string      `json:"next_cursor,omitempty"`
	}{Data: items}
	if next != 0 {
		out.NextCursor = strconv.FormatUint(next, 10)
	}
	return c.JSON(http.StatusOK, out)
}

// replayAudit reads matching events after q.after. next is the cursor to continue from
// when there may be more, 0 when the stream's end was reached.
func (s *Server) replayAudit(ctx context.Context, q auditQuery) ([]auditItem, uint64, error) {
	info, err := s.cfg.Store.Info(ctx)
	if err != nil {
		return nil, 0, err
	}
	last := info.State.LastSeq
	if q.leaseID != "" {
		// Stop at the lease's own last event rather than wait for more at the stream's end.
		if last, err = s.cfg.Store.LastSeq(ctx, events.LeaseSubject(q.leaseID)); err != nil {
			return nil, 0, err
		}
	}
	items := make([]auditItem, 0, min(q.limit, 100))
	if info.State.Msgs == 0 || q.after >= last {
		return items, 0, nil
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	switch {
	case q.after > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, q.after+1
	case !q.since.IsZero():
		since := q.since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	if q.leaseID != "" {
		cfg.FilterSubjects = []string{events.LeaseSubject(q.leaseID)}
	}
	cons, err := s.cfg.Store.Events().OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, 0, events.Wrap(err, events.EUnavailable, "The event store is unavailable; try again shortly.")
	}
	scanned := 0
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			return nil, 0, events.Wrap(err, events.EUnavailable, "The event store is unavailable; try again shortly.")
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			scanned++
			md, err := msg.Metadata()
			if err != nil {
				return nil, 0, err
			}
			seq := md.Sequence.Stream
			e, derr := events.Decode(msg.Data())
			if derr == nil && q.matches(e) {
				items = append(items, auditItemOf(seq, e))
			}
			// Events are filtered on their own time, stamped before the append: it never
			// follows the time the stream stored them at, and concurrent appends may be
			// stored out of time order, so stop only once storage is well past until.
			if !q.until.IsZero() && md.Timestamp.After(q.until.Add(untilSlack)) {
				return items, 0, nil
			}
			if seq >= last {
				return items, 0, nil
			}
			if len(items) == q.limit || scanned >= maxAuditScan {
				return items, seq, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, 0, events.Wrap(err, events.EUnavailable, "The event store is unavailable; try again shortly.")
		}
		if n == 0 {
			return items, 0, nil // the filter matches nothing further
		}
	}
}

func (q auditQuery) matches(e events.Event) bool {
	switch {
	case !q.since.IsZero() && e.Time.Before(q.since):
		return false
	case !q.until.IsZero() && e.Time.After(q.until):
		return false
	case q.recordUID != "" && e.RecordUID != q.recordUID:
		return false
	case q.leaseID != "" && e.LeaseID != q.leaseID:
		return false
	case q.clientID != "" && e.ClientID != q.clientID && (e.Client == nil || e.Client.ClientID != q.clientID):
		return false
	}
	return true
}
