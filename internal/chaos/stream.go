package chaos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
)

// History is one lease's events, in stream order, as the events stream holds them.
type History struct {
	Events []events.Event
	Seqs   []uint64
}

// Fold is the lease the history makes.
func (h *History) Fold() events.Lease { return events.Fold(h.Events, h.Seqs) }

// streamReader keeps every lease's history, reading the events stream from where it
// stopped the last time: the stream only grows.
type streamReader struct {
	js        jetstream.JetStream
	next      uint64
	histories map[string]*History
	targets   map[string]events.Type // record uid → its last event's type
}

func newStreamReader(js jetstream.JetStream) *streamReader {
	return &streamReader{js: js, next: 1, histories: map[string]*History{}, targets: map[string]events.Type{}}
}

// catchUp reads the lease and target events appended since the last call, up to the stream's last
// sequence when it starts.
func (s *streamReader) catchUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	st, err := s.js.Stream(ctx, events.EventsStream)
	if err != nil {
		return fmt.Errorf("events stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("events stream: %w", err)
	}
	last := info.State.LastSeq
	if last < s.next {
		return nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.LeaseSubjects, events.TargetSubjects}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: s.next})
	if err != nil {
		return fmt.Errorf("events stream: %w", err)
	}
	for s.next <= last {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("events stream: %w", err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			md, err := msg.Metadata()
			if err != nil {
				return err
			}
			e, err := events.Decode(msg.Data())
			if err != nil {
				return fmt.Errorf("events stream seq %d: %w", md.Sequence.Stream, err)
			}
			id := events.IDFromSubject(msg.Subject())
			s.next = md.Sequence.Stream + 1
			if strings.HasPrefix(msg.Subject(), events.TargetSubject("")) {
				s.targets[id] = e.Type
				continue
			}
			h := s.histories[id]
			if h == nil {
				h = &History{}
				s.histories[id] = h
			}
			h.Events, h.Seqs = append(h.Events, e), append(h.Seqs, md.Sequence.Stream)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("events stream: %w", err)
		}
		if got == 0 {
			// No lease or target event left up to last: what remains are other aggregates' events.
			break
		}
	}
	return nil
}
