package jsstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
)

// Handler processes one event, stored at stream sequence seq. Returning nil acks it.
// Returning an error naks it with a delay that grows with the delivery count, and it is
// redelivered, without limit, until it succeeds. Returning an error wrapping ErrPermanent
// terminates it instead: for events no retry can help. An undecodable message never
// reaches a handler: it is terminated and logged.
type Handler func(ctx context.Context, e events.Event, seq uint64) error

// ErrPermanent marks a handler error that no redelivery can fix.
var ErrPermanent = errors.New("permanent failure")

// ErrBusy marks a handler that declines a message for now because what it needs is at
// capacity (its target's slots): the message is redelivered shortly, not counted as a
// failure in the log, and the handler's slot goes to other work meanwhile.
var ErrBusy = errors.New("busy")

// busyDelay is how soon a declined message comes back.
const busyDelay = 200 * time.Millisecond

// ConsumeConfig describes one durable consumer shared by every process that runs it.
type ConsumeConfig struct {
	// Stream is events.EventsStream or events.SchedulesStream.
	Stream  string
	Durable string
	Filters []string
	// Concurrency bounds the messages one process handles at once. Default 16.
	Concurrency int
	// AckWait is how long a message may be in a handler before it is redelivered
	// elsewhere. Default 2 minutes.
	AckWait time.Duration
	// MaxAckPending bounds messages delivered but not yet acked across all processes,
	// including those waiting to be retried. Default 100000, so a target that is down
	// for long does not stall the others.
	MaxAckPending int
	// MaxBackoff caps the retry delay. Default 30 seconds.
	MaxBackoff time.Duration
	Logger     *slog.Logger
}

// Consume runs h on the durable consumer until ctx ends, then stops fetching and waits
// for handlers in flight to finish (they get a fresh context of their own, so a drain
// lets an operation complete rather than cutting it mid-way). The consumer is created
// when missing, starting from the stream's first message. When the server ends the
// consumption while ctx lasts (the consumer was deleted: `rebuild-projections` restarts
// the projector's and the removals' consumers, or an operator removed one), it is opened
// again as it then stands and consumed on: otherwise the process would serve on with
// nothing consumed until it restarted.
func (s *Store) Consume(ctx context.Context, cfg ConsumeConfig, h Handler) error {
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 16
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 2 * time.Minute
	}
	if cfg.MaxAckPending == 0 {
		cfg.MaxAckPending = 100000
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	stream, err := s.stream(cfg.Stream)
	if err != nil {
		return err
	}
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	delay := reconsumeDelay
	for opened := 0; ; opened++ {
		if s.nc.IsClosed() {
			return unavailable(fmt.Errorf("jsstore.Consume(%s): the connection to NATS is closed", cfg.Durable))
		}
		cc, err := s.consumeOnce(ctx, stream, cfg, func(msg jetstream.Msg) {
			wg.Add(1) // before the wait for a slot, which a Wait must not overtake
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				s.handle(cfg, h, msg)
			}()
		})
		switch {
		case ctx.Err() != nil:
			if cc != nil {
				s.stopConsuming(cc)
			}
			return nil // stopped: nothing failed
		case err != nil && opened == 0:
			return unavailable(fmt.Errorf("jsstore.Consume(%s): %w", cfg.Durable, err))
		case err != nil:
			cfg.Logger.Warn("could not consume again; trying again", "consumer", cfg.Durable, "retry_in", delay, "err", err)
		default:
			select {
			case <-ctx.Done():
				s.stopConsuming(cc)
				return nil
			case <-cc.Closed():
			}
			if s.nc.IsClosed() {
				continue // said at the top
			}
			cfg.Logger.Warn("the server ended the consumption (the consumer was deleted or restarted); consuming it again", "consumer", cfg.Durable)
			delay = reconsumeDelay
		}
		// A restart deletes the consumer and creates it anew at once: opened in between,
		// it would be made again from the stream's start.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, cfg.MaxBackoff)
	}
}

// reconsumeDelay is how long Consume waits before it opens again a consumer whose
// consumption the server ended; failures to open it wait longer each time.
const reconsumeDelay = time.Second

// consumeOnce opens cfg's durable consumer on stream (creating it when missing) and
// starts consuming it with fn.
func (s *Store) consumeOnce(ctx context.Context, stream jetstream.Stream, cfg ConsumeConfig, fn jetstream.MessageHandler) (jetstream.ConsumeContext, error) {
	cons, err := ensureConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		FilterSubjects: cfg.Filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.AckWait,
		MaxDeliver:     -1,
		MaxAckPending:  cfg.MaxAckPending,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		Replicas:       s.cfg.Replicas,
	})
	if err != nil {
		return nil, err
	}
	return cons.Consume(fn, jetstream.PullMaxMessages(cfg.Concurrency), jetstream.ConsumeErrHandler(func(cc jetstream.ConsumeContext, err error) {
		// The server tells of a consumer's deletion only to fetches waiting at it: one
		// deleted while none of this process's waited (every message in hand, a
		// reconnect) leaves later fetches unanswered (no responders, missed
		// heartbeats). Then the consumer is looked up, and found missing twice, two
		// seconds apart (a consumer moving between servers may be missing for a
		// moment), the consumption is ended, to be opened again.
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoHeartbeat) {
			return
		}
		go func() {
			for i := range 2 {
				if i > 0 {
					time.Sleep(missingRecheck) // outside any request's path; bounded
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := stream.Consumer(ctx, cfg.Durable)
				cancel()
				if !errors.Is(err, jetstream.ErrConsumerNotFound) {
					return
				}
			}
			cc.Drain()
		}()
	}))
}

// missingRecheck is how long a consumer found missing is given to be found again before
// its consumption is ended.
const missingRecheck = 2 * time.Second

// stopConsuming stops fetching, and waits a little for the fetching to end.
func (s *Store) stopConsuming(cc jetstream.ConsumeContext) {
	// Draining asks the server to stop delivering; with the connection gone there is no
	// one to ask, and the wait that matters is for the handlers in flight.
	if s.nc.IsConnected() {
		cc.Drain()
	} else {
		cc.Stop()
	}
	select {
	case <-cc.Closed():
	case <-time.After(5 * time.Second):
	}
}

func (s *Store) handle(cfg ConsumeConfig, h Handler, msg jetstream.Msg) {
	// The handler's context is not the consumer's: shutting down must not abort an
	// operation half-way through a database.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.AckWait*9/10)
	defer cancel()
	err := decodeAndHandle(ctx, h, msg)
	switch {
	case err == nil:
		if aerr := msg.Ack(); aerr != nil {
			cfg.Logger.Warn("ack failed; the message will be redelivered", "consumer", cfg.Durable, "subject", msg.Subject(), "err", aerr)
		}
	case errors.Is(err, ErrBusy):
		_ = msg.NakWithDelay(busyDelay)
	case errors.Is(err, ErrPermanent):
		cfg.Logger.Error("message dropped: it can never be processed", "consumer", cfg.Durable, "subject", msg.Subject(), "err", err)
		_ = msg.Term()
	default:
		n := uint64(1)
		if md, merr := msg.Metadata(); merr == nil {
			n = md.NumDelivered
		}
		delay := Backoff(n, cfg.MaxBackoff)
		cfg.Logger.Warn("message will be retried", "consumer", cfg.Durable, "subject", msg.Subject(), "attempt", n, "retry_in", delay.Round(time.Millisecond), "err", err)
		_ = msg.NakWithDelay(delay)
	}
}

func decodeAndHandle(ctx context.Context, h Handler, msg jetstream.Msg) error {
	e, err := events.Decode(msg.Data())
	if err != nil {
		return fmt.Errorf("%w: %v", ErrPermanent, err)
	}
	md, err := msg.Metadata()
	if err != nil {
		return err
	}
	return h(ctx, e, md.Sequence.Stream)
}

// Backoff is the delay before attempt n+1: 500 ms doubling up to max, with ±20 % jitter
// so that many retries against one target do not arrive in lockstep.
func Backoff(n uint64, max time.Duration) time.Duration {
	d := 500 * time.Millisecond
	for i := uint64(1); i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// ensureConsumer opens the durable consumer, creating it when missing. An existing one
// keeps its position and delivery policy; the settings SyVault manages (ack wait, max ack
// pending) are updated when they differ, so changing --ack-wait takes effect, and only
// then, for the reason ensureStream gives.
func ensureConsumer(ctx context.Context, stream jetstream.Stream, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := stream.Consumer(ctx, cfg.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		c, err = stream.CreateConsumer(ctx, cfg)
		if errors.Is(err, jetstream.ErrConsumerExists) {
			return stream.Consumer(ctx, cfg.Durable)
		}
		return c, err
	}
	if err != nil {
		return nil, err
	}
	have := c.CachedInfo().Config
	if have.AckWait == cfg.AckWait && have.MaxAckPending == cfg.MaxAckPending {
		return c, nil
	}
	have.AckWait, have.MaxAckPending = cfg.AckWait, cfg.MaxAckPending
	return stream.UpdateConsumer(ctx, have)
}

// Replay calls fn for every message of the events stream matching filters, from sequence
// start to the stream's last sequence at the time of the call, in order, each once. It
// reads through an ordered consumer and creates no durable state.
func (s *Store) Replay(ctx context.Context, start uint64, filters []string, fn func(jetstream.Msg) error) error {
	info, err := s.events.Info(ctx)
	if err != nil {
		return unavailable(fmt.Errorf("jsstore.Replay: %w", err))
	}
	last := info.State.LastSeq
	if last < start || info.State.Msgs == 0 {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy}
	if start > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	cons, err := s.events.OrderedConsumer(ctx, cfg)
	if err != nil {
		return unavailable(fmt.Errorf("jsstore.Replay: %w", err))
	}
	// The ordered consumer is an R1 consumer in memory: a restart of the node holding it,
	// or a pull sent before its interest reached the client's node, fails one fetch. The
	// next fetch recreates it from the last message delivered, so a failure is retried
	// with a backoff, and only failures in a row without progress give up.
	var delivered uint64
	failures, pause := 0, replayRetryPause
	for {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(time.Second))
		n := 0
		if err == nil {
			for msg := range batch.Messages() {
				md, merr := msg.Metadata()
				if merr != nil {
					return fmt.Errorf("jsstore.Replay: %w", merr)
				}
				if md.Sequence.Stream <= delivered {
					continue
				}
				n++
				delivered = md.Sequence.Stream
				if err := fn(msg); err != nil {
					return err
				}
				if delivered >= last {
					return nil
				}
			}
			if berr := batch.Error(); berr != nil && !errors.Is(berr, jetstream.ErrNoMessages) {
				err = berr
			}
		}
		if err == nil {
			if n == 0 {
				// The filter matched nothing further up to last.
				return nil
			}
			continue
		}
		if n > 0 {
			failures, pause = 0, replayRetryPause
		}
		if failures++; failures > replayRetries || ctx.Err() != nil {
			return unavailable(fmt.Errorf("jsstore.Replay, after sequence %d: %w", delivered, err))
		}
		select {
		case <-ctx.Done():
			return unavailable(fmt.Errorf("jsstore.Replay, after sequence %d: %w", delivered, ctx.Err()))
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// A replay gives up after replayRetries failed fetches in a row, about 20 s of pauses.
const (
	replayRetries    = 8
	replayRetryPause = 100 * time.Millisecond
)

// ConsumerBusy reports whether some process is pulling from, or holds unacknowledged
// messages of, the durable consumer of the events stream: whether anyone does its work.
func (s *Store) ConsumerBusy(ctx context.Context, durable string) (bool, error) {
	c, err := s.events.Consumer(ctx, durable)
	if err != nil {
		return false, unavailable(fmt.Errorf("jsstore.ConsumerBusy(%s): %w", durable, err))
	}
	info, err := c.Info(ctx)
	if err != nil {
		return false, unavailable(fmt.Errorf("jsstore.ConsumerBusy(%s): %w", durable, err))
	}
	return info.NumWaiting > 0 || info.NumAckPending > 0, nil
}

// AckFloor returns the stream sequence up to which every message of the events stream
// the durable consumer was given has been acknowledged (its ack floor): for the
// projector, every event up to it is applied or given up on as one that never can be
// (undecodable, or a history SyVault did not write), whatever the order its handlers ran
// in and whichever process ran them.
func (s *Store) AckFloor(ctx context.Context, durable string) (uint64, error) {
	c, err := s.events.Consumer(ctx, durable)
	if err != nil {
		return 0, unavailable(fmt.Errorf("jsstore.AckFloor(%s): %w", durable, err))
	}
	return c.CachedInfo().AckFloor.Stream, nil
}

// Origin is where a durable consumer of the events stream began: when it was made and,
// when RestartConsumer made it in place of another, how far that one (and those before
// it) had got: every event up to HandledThrough was handled, or passed over by its
// start, once already, so it comes again as a replay.
type Origin struct {
	Created        time.Time
	Restarted      bool
	HandledThrough uint64
}

// handledThroughKey is the consumer metadata RestartConsumer hands a predecessor's ack
// floor on in. A consumer update keeps it (ensureConsumer updates the config it read).
const handledThroughKey = "syvault_handled_through"

// ConsumerOrigin returns where the durable consumer of the events stream began.
func (s *Store) ConsumerOrigin(ctx context.Context, durable string) (Origin, error) {
	c, err := s.events.Consumer(ctx, durable)
	if err != nil {
		return Origin{}, unavailable(fmt.Errorf("jsstore.ConsumerOrigin(%s): %w", durable, err))
	}
	info := c.CachedInfo()
	through, restarted := handedOn(info.Config)
	return Origin{Created: info.Created, Restarted: restarted, HandledThrough: through}, nil
}

// handedOn returns the ack floor RestartConsumer handed consumer cfg on, if any.
func handedOn(cfg jetstream.ConsumerConfig) (through uint64, ok bool) {
	n, err := strconv.ParseUint(cfg.Metadata[handledThroughKey], 10, 64)
	return n, err == nil
}

// RestartConsumer deletes the durable consumer of the events stream and creates it anew
// to deliver the events on filters (all when none) from sequence from on: for rebuilding
// what it feeds, or following it through again. It keeps the ack wait and the bound on
// pending acks the processes consuming it set, as they go on consuming it.
func (s *Store) RestartConsumer(ctx context.Context, durable string, from uint64, filters ...string) error {
	cfg := jetstream.ConsumerConfig{
		Durable:        durable,
		FilterSubjects: filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		MaxDeliver:     -1,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
		Replicas:       s.cfg.Replicas,
	}
	c, err := s.events.Consumer(ctx, durable)
	switch {
	case err == nil:
		info := c.CachedInfo()
		cfg.AckWait, cfg.MaxAckPending = info.Config.AckWait, info.Config.MaxAckPending
		through := info.AckFloor.Stream
		if prev, ok := handedOn(info.Config); ok && prev > through {
			through = prev // restarted again before it got as far
		}
		cfg.Metadata = map[string]string{handledThroughKey: strconv.FormatUint(through, 10)}
		err = s.events.DeleteConsumer(ctx, durable)
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		err = nil
	}
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return unavailable(fmt.Errorf("jsstore.RestartConsumer(%s): %w", durable, err))
	}
	// A process opening the consumer between the delete and the create makes it again
	// from the stream's start: deleted again, and made as asked. And the server may
	// still be removing the deleted consumer's files when the new one writes its own
	// there (a 500 naming a rename, one restart in a few hundred here): after a pause,
	// deleted and made again too.
	for tries := 1; ; tries++ {
		_, err = s.events.CreateConsumer(ctx, cfg)
		var api *jetstream.APIError
		serverFault := errors.As(err, &api) && api.Code >= 500
		if !errors.Is(err, jetstream.ErrConsumerExists) && !serverFault || tries == 5 {
			break
		}
		if serverFault {
			select {
			case <-ctx.Done():
				return unavailable(fmt.Errorf("jsstore.RestartConsumer(%s): %w", durable, errors.Join(err, ctx.Err())))
			case <-time.After(time.Duration(tries) * 20 * time.Millisecond):
			}
		}
		if err = s.events.DeleteConsumer(ctx, durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			break
		}
	}
	if err != nil {
		return unavailable(fmt.Errorf("jsstore.RestartConsumer(%s): %w", durable, err))
	}
	return nil
}

// ScanOptions selects the events Scan reads.
type ScanOptions struct {
	// After is the sequence to read after; Since the time to start from when After is 0.
	After uint64
	Since time.Time
	// Subject restricts the scan to one subject (a lease's), when set.
	Subject string
}

// Scan calls fn for the events stream's messages selected by o, in order, up to the last
// one on o.Subject (or in the stream) at the time of the call, which fn is told of, until
// fn says stop.
func (s *Store) Scan(ctx context.Context, o ScanOptions, fn func(seq uint64, stored time.Time, data []byte, last bool) (stop bool)) error {
	var last uint64
	if o.Subject != "" {
		l, err := s.LastSeq(ctx, o.Subject)
		if err != nil {
			return err
		}
		last = l
	} else {
		info, err := s.events.Info(ctx)
		if err != nil {
			return unavailable(fmt.Errorf("jsstore.Scan: %w", err))
		}
		if info.State.Msgs == 0 {
			return nil
		}
		last = info.State.LastSeq
	}
	if last == 0 || o.After >= last {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	switch {
	case o.After > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, o.After+1
	case !o.Since.IsZero():
		since := o.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	if o.Subject != "" {
		cfg.FilterSubjects = []string{o.Subject}
	}
	cons, err := s.events.OrderedConsumer(ctx, cfg)
	if err != nil {
		return unavailable(fmt.Errorf("jsstore.Scan: %w", err))
	}
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			return unavailable(fmt.Errorf("jsstore.Scan: %w", err))
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			md, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("jsstore.Scan: %w", err)
			}
			if fn(md.Sequence.Stream, md.Timestamp, msg.Data(), md.Sequence.Stream >= last) || md.Sequence.Stream >= last {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return unavailable(fmt.Errorf("jsstore.Scan: %w", err))
		}
		if n == 0 {
			return nil // the filter matches nothing further
		}
	}
}
