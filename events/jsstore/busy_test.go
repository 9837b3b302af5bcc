package jsstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestPublishExpecting_RetriesABusySubject: the refusal a replicated stream gives while
// the subject's previous message is still being applied (err code 10164) is tried again
// until the publish lands; a real mismatch (10071) is returned at once; a subject busy
// for good gives up after about a second, and at once when the caller's context ends.
// TestWatch_AReadAfterUntilSeesTheRecord's cluster case met the busy refusal in CI (an
// append of the activation right after the request's ack, taken for a conflict), and in
// three of six runs with six copies of it at once on two cores.
func TestPublishExpecting_RetriesABusySubject(t *testing.T) {
	ctx := context.Background()
	busy := &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant, Description: "wrong last sequence"}
	mismatch := &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence, Description: "wrong last sequence: 7"}
	refusing := func(refusals int, refusal error) (func() (*jetstream.PubAck, error), *int) {
		calls := 0
		return func() (*jetstream.PubAck, error) {
			calls++
			if calls <= refusals {
				return nil, refusal
			}
			return &jetstream.PubAck{Sequence: 42}, nil
		}, &calls
	}

	publish, calls := refusing(3, busy)
	if ack, err := publishExpecting(ctx, publish); err != nil || ack.Sequence != 42 || *calls != 4 {
		t.Fatalf("busy three times: ack %v, err %v after %d calls; want the fourth to land", ack, err, *calls)
	}
	publish, calls = refusing(1, mismatch)
	if _, err := publishExpecting(ctx, publish); !errors.Is(err, mismatch) || *calls != 1 {
		t.Fatalf("a real mismatch: err %v after %d calls; want it at once", err, *calls)
	}
	publish, calls = refusing(1<<30, busy)
	start := time.Now()
	if _, err := publishExpecting(ctx, publish); !errors.Is(err, busy) {
		t.Fatalf("busy for good: err %v", err)
	}
	if took := time.Since(start); took < time.Second || *calls < 10 {
		t.Fatalf("busy for good: gave up after %v and %d calls; want about a second of tries", took, *calls)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	publish, calls = refusing(1<<30, busy)
	if _, err := publishExpecting(cctx, publish); !errors.Is(err, busy) || *calls != 1 {
		t.Fatalf("context ended: err %v after %d calls; want the refusal at once", err, *calls)
	}
}
