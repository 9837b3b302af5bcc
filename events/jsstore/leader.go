package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
)

// What a decision is made on is read from the stream's leader. The streams allow direct
// gets (AllowDirect), which nats.go uses for every GetMsg and GetLastMsgForSubject once
// it sees the setting, and which any replica answers, the followers included: a follower
// lagging behind the leader (just after a failover, or while it catches up from a
// restart) answers with a history that misses the latest events. A revoke decided on
// such a history loses the race with the event it did not see and is dropped as a
// conflict nobody retries, or folds a lease as still active. The JetStream API's own
// message get (STREAM.MSG.GET) is answered by the leader alone, which has every
// acknowledged message.
//
// It goes through the server's JetStream API queue and answers in JSON, though: about
// twice the time of a direct get (BenchmarkLoadLease: 154–245 µs against 81–106 µs for a
// three-event history), paid several times per create and revoke. Where the stream has a
// single copy, its one server answers both, so the direct get is as current as the
// leader's and is used instead (see singleCopy).

// msgGetRequest is the STREAM.MSG.GET request.
type msgGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
}

// msgGetResponse is its answer.
type msgGetResponse struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrorCode   int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error,omitempty"`
	Message *struct {
		Subject  string    `json:"subject"`
		Sequence uint64    `json:"seq"`
		Header   []byte    `json:"hdrs,omitempty"`
		Data     []byte    `json:"data,omitempty"`
		Time     time.Time `json:"time"`
	} `json:"message,omitempty"`
}

// singleCopy reports whether st can have only the one copy that answers every read: it
// was created with one replica, and the server this connection is on is standalone (no
// cluster name: no routes, no gateways), where JetStream refuses more than one replica,
// so no other process can have scaled it up since. Asked at each read, since a reconnect
// may land on another server.
func (s *Store) singleCopy(st jetstream.Stream) bool {
	return s.standalone() && st.CachedInfo().Config.Replicas <= 1
}

// standalone reports whether this connection's server is standalone, where every stream
// has one copy.
func (s *Store) standalone() bool { return !s.leaderReads && s.nc.ConnectedClusterName() == "" }

// CurrentRecord returns key's value in kv with every write acknowledged so far: read
// from the bucket's leader on a cluster, where a follower answering a direct get may not
// have the write a caller was just answered on (a lease's GET right after its create);
// by a direct get on a standalone server, whose one copy answers both. It returns
// jetstream.ErrKeyNotFound when the key has no value (never written, deleted, purged or
// expired) and jetstream.ErrInvalidKey for a key that is not one.
func (s *Store) CurrentRecord(ctx context.Context, kv jetstream.KeyValue, key string) ([]byte, error) {
	value, _, err := s.CurrentEntry(ctx, kv, key)
	return value, err
}

// CurrentEntry is CurrentRecord with the value's revision, for a write conditional on
// it: one decided on a lagging follower's revision is refused, and again each time it is
// read there, until the follower catches up.
func (s *Store) CurrentEntry(ctx context.Context, kv jetstream.KeyValue, key string) (value []byte, revision uint64, err error) {
	if TooLong(key) {
		return nil, 0, jetstream.ErrKeyNotFound
	}
	if s.standalone() {
		e, err := kv.Get(ctx, key)
		if err != nil {
			return nil, 0, err
		}
		return e.Value(), e.Revision(), nil
	}
	if !validKey(key) {
		return nil, 0, jetstream.ErrInvalidKey
	}
	h, held, err := s.lastRecord(ctx, kv, key)
	switch {
	case err != nil:
		return nil, 0, err
	case !held:
		return nil, 0, jetstream.ErrKeyNotFound
	}
	return h.Value, h.Revision, nil
}

// lastRecord reads key's last record in kv from the bucket's leader; held is false when
// it has none.
func (s *Store) lastRecord(ctx context.Context, kv jetstream.KeyValue, key string) (h Holding, held bool, err error) {
	bucket := kv.Bucket()
	msg, err := s.leaderGet(ctx, "KV_"+bucket, msgGetRequest{LastFor: "$KV." + bucket + "." + key})
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return Holding{}, false, nil
	case err != nil:
		return Holding{}, false, err
	}
	// A delete, a purge, or the marker JetStream leaves when a record's TTL ran out.
	if op := msg.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" || msg.Header.Get("Nats-Marker-Reason") != "" {
		return Holding{}, false, nil
	}
	return Holding{Value: msg.Data, Since: msg.Time, Revision: msg.Sequence}, true, nil
}

// validKey reports whether key is a KV key, as nats.go checks its own reads' keys: a
// wildcard in a leader read's last_by_subj would read another key's record.
func validKey(key string) bool {
	if key == "" || key[0] == '.' || key[len(key)-1] == '.' {
		return false
	}
	for _, c := range key {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-/_=.", c)) {
			return false
		}
	}
	return true
}

// leaderGet reads one message of stream through its leader (or the stream's one copy). It returns
// jetstream.ErrMsgNotFound when there is no such message.
func (s *Store) leaderGet(ctx context.Context, stream string, req msgGetRequest) (*jetstream.RawStreamMsg, error) {
	if TooLong(req.LastFor) || TooLong(req.NextFor) {
		return nil, jetstream.ErrMsgNotFound
	}
	if stream == events.EventsStream && s.singleCopy(s.events) {
		switch {
		case req.LastFor != "":
			return s.events.GetLastMsgForSubject(ctx, req.LastFor)
		case req.NextFor != "":
			return s.events.GetMsg(ctx, req.Seq, jetstream.WithGetMsgSubject(req.NextFor))
		}
		return s.events.GetMsg(ctx, req.Seq)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	reply, err := s.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, body)
	if err != nil {
		return nil, err
	}
	var resp msgGetResponse
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("message get on %s: %w", stream, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == int(jetstream.JSErrCodeMessageNotFound) {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, fmt.Errorf("message get on %s: %s (%d)", stream, resp.Error.Description, resp.Error.ErrorCode)
	}
	if resp.Message == nil {
		return nil, jetstream.ErrInvalidJetStreamResponse
	}
	m := resp.Message
	var hdr nats.Header
	if len(m.Header) > 0 {
		if hdr, err = nats.DecodeHeadersMsg(m.Header); err != nil {
			return nil, err
		}
	}
	return &jetstream.RawStreamMsg{Subject: m.Subject, Sequence: m.Sequence, Header: hdr, Data: m.Data, Time: m.Time}, nil
}

// maxSubject bounds the subjects and keys the store's reads and watches put on NATS's
// protocol line, the paths a caller's id reaches. No id SyVault makes comes near it (at
// most 64 characters), and NATS closes for good a connection that sends a line over its
// limit (4 KiB), whichever caller let a string that long through.
const maxSubject = 512

// TooLong reports whether subject (or a key) is longer than any SyVault makes: such a
// one names nothing.
func TooLong(subject string) bool { return len(subject) > maxSubject }
