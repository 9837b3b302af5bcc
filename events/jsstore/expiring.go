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
	ack, err := publishExpecting(ctx, func() (*jetstream.PubAck, error) {
		return s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(max(ttl, time.Second)))
	})
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

// subjectBusy reports a refusal of a publish with an expected last sequence that says
// nothing of the subject's last sequence: a replicated stream's leader refuses it (err
// code 10164, where a real mismatch is 10071) while an earlier message to the subject
// is still being applied. nats-server acknowledges a message before it clears that
// mark, so a publisher following its own acknowledged append (the projector writing a
// lease's record twice; a worker activating the lease whose request it was just
// delivered) met it on a cluster and took it for a conflict: the worker then dropped the
// user it had just made and the create failed.
func subjectBusy(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// publishExpecting runs publish, a publish with an expected last sequence, again while
// the subject is busy (see subjectBusy), for up to about a second: longer, another
// writer's message holds it, and the caller's conflict handling takes over.
func publishExpecting(ctx context.Context, publish func() (*jetstream.PubAck, error)) (*jetstream.PubAck, error) {
	wait := 500 * time.Microsecond
	for deadline := time.Now().Add(time.Second); ; {
		ack, err := publish()
		if !subjectBusy(err) || time.Now().After(deadline) {
			return ack, err
		}
		select {
		case <-ctx.Done():
			return ack, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}
