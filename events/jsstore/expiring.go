package jsstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// AllowExpiringRecords lets records of bucket be written with a time to live of their
// own (JetStream's per-message TTL, NATS 2.11 and later; the expiry schedules already
// need 2.12). Once set it stays: a stream cannot take it back.
func (s *Store) AllowExpiringRecords(ctx context.Context, bucket string) error {
	st, err := s.js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return unavailable(fmt.Errorf("jsstore.AllowExpiringRecords(%s): %w", bucket, err))
	}
	cfg := st.CachedInfo().Config
	if cfg.AllowMsgTTL {
		return nil
	}
	cfg.AllowMsgTTL = true
	if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
		return unavailable(fmt.Errorf("jsstore.AllowExpiringRecords(%s): %w", bucket, err))
	}
	return nil
}

// PutExpiring writes value as key's record in bucket on condition that the key's last
// revision is rev (0: that it has none), like KeyValue.Update and Create, and has
// JetStream remove it ttl (at least a second) later, leaving no marker: the key then
// costs the bucket nothing. A failed condition is jetstream.ErrKeyExists.
func (s *Store) PutExpiring(ctx context.Context, bucket, key string, value []byte, rev uint64, ttl time.Duration) (uint64, error) {
	msg := &nats.Msg{Subject: "$KV." + bucket + "." + key, Data: value, Header: nats.Header{}}
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(max(ttl, time.Second)))
	if wrongLastSequence(err) {
		return 0, jetstream.ErrKeyExists
	}
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// wrongLastSequence reports whether a publish was refused because its subject's last
// sequence was not the one expected.
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
