package jsstore

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// AmendBucket brings an existing bucket's stream to what amend makes of its
// configuration, for what a KV bucket's own settings do not say (Bucket uses a bucket as
// it finds it). The stream is updated only when amend changes something, so a process
// start costs one read once a bucket is as wanted.
func (s *Store) AmendBucket(ctx context.Context, bucket string, amend func(*jetstream.StreamConfig)) error {
	st, err := s.js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return unavailable(fmt.Errorf("jsstore.AmendBucket(%s): %w", bucket, err))
	}
	have := st.CachedInfo().Config
	want := have
	if have.RePublish != nil {
		rp := *have.RePublish
		want.RePublish = &rp
	}
	amend(&want)
	if reflect.DeepEqual(have, want) {
		return nil
	}
	if _, err := s.js.UpdateStream(ctx, want); err != nil {
		return unavailable(fmt.Errorf("jsstore.AmendBucket(%s): %w", bucket, err))
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
