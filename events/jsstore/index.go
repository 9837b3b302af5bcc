package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
)

// IndexStream holds one message per listed lease (active or revoking), on the subject
// syvault.active.<record uid>.<client id>, whose body is the lease id. Its sequence
// order is the order leases became active, so a page of the list is a read from a
// sequence for as many messages as the page holds, whatever the number of leases; a
// filter by target or client is a subject filter the server applies. Ending a lease
// deletes its message, leaving no marker behind to skip.
const IndexStream = "SYVAULT_ACTIVE"

const indexPrefix = "syvault.active."

// IndexEntry is one listed lease: where it stands in the index, and its id.
type IndexEntry struct {
	Seq     uint64
	LeaseID string
}

// IndexFilter selects a part of the index; empty fields match everything.
type IndexFilter struct{ RecordUID, ClientID string }

func (f IndexFilter) subject() string {
	uid, client := f.RecordUID, f.ClientID
	if uid == "" {
		uid = "*"
	}
	if client == "" {
		client = "*"
	}
	return indexPrefix + uid + "." + client
}

// batch is the batched direct get of up to n entries matching f after the sequence after.
func (f IndexFilter) batch(after uint64, n int) map[string]any {
	return map[string]any{"seq": after + 1, "next_by_subj": f.subject(), "batch": n}
}

func (s *Store) openIndex(ctx context.Context) (jetstream.Stream, error) {
	return ensureStream(ctx, s.js, jetstream.StreamConfig{
		Name:        IndexStream,
		Description: "SyVault's listed leases, one message each, in the order they became active",
		Subjects:    []string{indexPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Replicas,
		Duplicates:  s.cfg.DuplicateWindow,
		AllowDirect: true,
	})
}

// IndexAdd lists a lease and returns where it stands. Each call adds an entry: the
// entries carry no message id, because a stored header makes the server rebuild every
// entry's headers on each read of a page (a page of 101 entries took 1.4 ms instead of
// 1.0). An entry added twice (a projector that died between adding it and recording it)
// is told apart by the lease record, which names one entry; lists skip and remove the
// other.
func (s *Store) IndexAdd(ctx context.Context, recordUID, clientID, leaseID string) (uint64, error) {
	if clientID == "" {
		clientID = "_"
	}
	ack, err := s.js.Publish(ctx, IndexFilter{RecordUID: recordUID, ClientID: clientID}.subject(), []byte(leaseID))
	if err != nil {
		return 0, unavailable(fmt.Errorf("jsstore.IndexAdd(%s): %w", leaseID, err))
	}
	return ack.Sequence, nil
}

// IndexRemove unlists the lease standing at seq; one already gone is success.
func (s *Store) IndexRemove(ctx context.Context, seq uint64) error {
	err := s.index.DeleteMsg(ctx, seq)
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeMessageNotFound {
			return unavailable(fmt.Errorf("jsstore.IndexRemove(%d): %w", seq, err))
		}
	}
	return nil
}

// IndexPage returns up to n entries of the index matching f that stand after the
// sequence after, in order, in one request; more says whether any follow.
func (s *Store) IndexPage(ctx context.Context, f IndexFilter, after uint64, n int) (page []IndexEntry, more bool, err error) {
	msgs, end, err := s.directBatch(ctx, IndexStream, f.batch(after, n))
	if err != nil {
		return nil, false, err
	}
	for _, m := range msgs {
		seq, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		page = append(page, IndexEntry{Seq: seq, LeaseID: string(m.Data)})
	}
	return page, end.pending > 0, nil
}

// LeaderIndexPage is IndexPage read from the index's leader, an entry per request: it
// misses no entry acknowledged before it began, where IndexPage's direct gets may be
// answered by a replica behind the leader. For a check that no entry is left, which
// reads a few; not for pages of a list.
func (s *Store) LeaderIndexPage(ctx context.Context, f IndexFilter, after uint64, n int) ([]IndexEntry, error) {
	var page []IndexEntry
	for len(page) < n {
		msg, err := s.leaderGet(ctx, IndexStream, msgGetRequest{Seq: after + 1, NextFor: f.subject()})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, unavailable(fmt.Errorf("jsstore.LeaderIndexPage: %w", err))
		}
		page = append(page, IndexEntry{Seq: msg.Sequence, LeaseID: string(msg.Data)})
		after = msg.Sequence
	}
	return page, nil
}

// RevokeIndexed records, on behalf of actor, the revocation for its target's removal of
// every lease of target recordUID that the index's leader lists and that has not ended
// nor is being revoked already, and says how many it recorded, and how many of the
// target's listed leases are left to drop for the removal (those, and any revoked for it
// before, whose revokers remove the target's setup again after the drop): for a target
// that is removed, once every event before its removal is applied (then the index holds
// each lease that was active at the removal). The revocations are recorded, not waited
// for: the revoker drops each user, retried until it is gone. An entry that names no
// lease of that target (a lease with no history, with a history SyVault did not write, or
// of another target: entries anyone who can write to NATS could add) is passed over, so
// it cannot hold the others up or reach another target's lease. A recordUID that is not
// one subject token is refused: as a filter, "" or "*" would match every target.
func (s *Store) RevokeIndexed(ctx context.Context, recordUID, actor string) (revoked, pending int, err error) {
	if !events.OneToken(recordUID) {
		return 0, 0, &events.Error{Code: events.EInternal, Err: ErrPermanent, Message: "No target was named whose leases to revoke."}
	}
	var after uint64
	for {
		page, err := s.LeaderIndexPage(ctx, IndexFilter{RecordUID: recordUID}, after, 100)
		if err != nil || len(page) == 0 {
			return revoked, pending, err
		}
		// An entry added twice (see IndexAdd) names a lease being revoked the second time.
		for _, en := range page {
			recorded, open, err := s.RevokeForRemoval(ctx, en.LeaseID, recordUID, actor)
			switch {
			case errors.Is(err, ErrPermanent) || events.ErrorCode(err) == events.ENotFound:
			case err != nil:
				return revoked, pending, err
			case recorded:
				revoked++
			}
			if open {
				pending++
			}
		}
		after = page[len(page)-1].Seq
	}
}

// RevokeForRemoval records the revocation of lease id of target recordUID, on behalf of
// actor, for the target's removal (events.Lease.RevokeForRemoval), unless it has ended, is
// being revoked already or is another target's; recorded says it did, and open that the
// lease is the target's, its user not dropped yet, and revoked for the removal (now or
// before). A lease revoked otherwise is not open: its revoker may have read the target
// before the removal, and then removes nothing after its drop.
func (s *Store) RevokeForRemoval(ctx context.Context, id, recordUID, actor string) (recorded, open bool, err error) {
	_, seq, err := s.DecideLease(ctx, id, func(l events.Lease) (*events.Event, error) {
		open = false // as the last read finds it
		if l.Status.Ended() || l.RecordUID != recordUID {
			return nil, nil
		}
		open = l.Status != events.StatusRevoking || l.ForRemoval
		return l.RevokeForRemoval(actor, time.Now())
	})
	return seq != 0, open && err == nil, err
}

// IndexIDs is IndexPage without each entry's sequence, only the last one's: the request
// asks for no headers, which spares the server writing six per entry and the client
// parsing them (101 entries: 0.50 ms against 1.02, BENCHMARKS.md).
//
// more is whether the batch came back full: without headers the server does not count
// down the entries it sends, so the end of the batch says how many matched from after
// (or, when the stream moved meanwhile, how many follow the batch), not how many follow.
// A batch cut short by the end of the matches is the only short one (a page is far
// below the server's limit on a batch's bytes).
func (s *Store) IndexIDs(ctx context.Context, f IndexFilter, after uint64, n int) (ids []string, last uint64, more bool, err error) {
	req := f.batch(after, n)
	req["no_hdr"] = true
	msgs, end, err := s.directBatch(ctx, IndexStream, req)
	if err != nil {
		return nil, 0, false, err
	}
	for _, m := range msgs {
		ids = append(ids, string(m.Data))
	}
	return ids, end.last, len(ids) == n, nil
}

// IndexCounts counts the listed leases of each target, from the index's per-subject
// state: its cost grows with the number of target and client pairs, not of leases.
func (s *Store) IndexCounts(ctx context.Context) (map[string]int, error) {
	info, err := s.index.Info(ctx, jetstream.WithSubjectFilter(indexPrefix+">"))
	if err != nil {
		return nil, unavailable(fmt.Errorf("jsstore.IndexCounts: %w", err))
	}
	counts := map[string]int{}
	for subj, n := range info.State.Subjects {
		rest := subj[len(indexPrefix):]
		for i := 0; i < len(rest); i++ {
			if rest[i] == '.' {
				counts[rest[:i]] += int(n)
				break
			}
		}
	}
	return counts, nil
}

// IndexCount counts the entries f matches with a batched direct get of one entry: the
// server counts the rest for the end of the batch from its per-subject state, so the
// count costs one request whatever the number of entries, and any copy of the stream
// answers it, off the JetStream API's queue. The entry comes with its headers, without
// which the server would not count it off the rest (see IndexIDs).
func (s *Store) IndexCount(ctx context.Context, f IndexFilter) (int, error) {
	msgs, end, err := s.directBatch(ctx, IndexStream, f.batch(0, 1))
	if err != nil {
		return 0, err
	}
	return len(msgs) + int(end.pending), nil
}

// IndexReset empties the index, for rebuilding it. The stream is made anew rather than
// purged: a purge keeps the duplicate window, which would answer a lease listed again by
// the rebuild with the sequence of its purged entry if entries had message ids (those of
// older versions did).
func (s *Store) IndexReset(ctx context.Context) error {
	if err := s.js.DeleteStream(ctx, IndexStream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return unavailable(fmt.Errorf("jsstore.IndexReset: %w", err))
	}
	index, err := s.openIndex(ctx)
	if err != nil {
		return unavailable(fmt.Errorf("jsstore.IndexReset: %w", err))
	}
	s.index = index
	return nil
}

// LastOf returns, for each of subjects of the stream, the body of its last message (a
// subject with none is absent from the map), in one request: a batched direct get.
func (s *Store) LastOf(ctx context.Context, stream string, subjects []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(subjects))
	if len(subjects) == 0 {
		return out, nil
	}
	msgs, _, err := s.directBatch(ctx, stream, map[string]any{"multi_last": subjects, "batch": len(subjects)})
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		out[m.Header.Get(jetstream.SubjectHeader)] = m.Data
	}
	return out, nil
}

// batchEnd is what a batch's end-of-batch marker says: how many more messages matched
// than were sent, and the sequence of the last one sent.
type batchEnd struct{ pending, last uint64 }

// directBatch sends a batched direct get to stream and collects the messages up to the
// end-of-batch marker. No match is an empty answer.
func (s *Store) directBatch(ctx context.Context, stream string, req map[string]any) (msgs []*nats.Msg, end batchEnd, err error) {
	data, err := json.Marshal(req)
	if err != nil {
		return nil, end, err
	}
	// A channel sized for the batch: a plain synchronous subscription would allocate
	// room for 65,536 messages on every call.
	size := 2
	if n, ok := req["batch"].(int); ok {
		size += n
	}
	inbox, ch := s.nc.NewRespInbox(), make(chan *nats.Msg, size)
	sub, err := s.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, end, unavailable(fmt.Errorf("jsstore.directBatch(%s): %w", stream, err))
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := s.nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, data); err != nil {
		return nil, end, unavailable(fmt.Errorf("jsstore.directBatch(%s): %w", stream, err))
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return nil, end, unavailable(fmt.Errorf("jsstore.directBatch(%s): %w", stream, ctx.Err()))
		}
		switch status := m.Header.Get("Status"); status {
		case "":
			msgs = append(msgs, m)
			continue
		case "204": // end of batch
			end.pending, _ = strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
			end.last, _ = strconv.ParseUint(m.Header.Get(jetstream.LastSequenceHeader), 10, 64)
			return msgs, end, nil
		case "404": // nothing matched
			return msgs, end, nil
		default:
			return nil, end, unavailable(fmt.Errorf("jsstore.directBatch(%s): status %s %s", stream, status, m.Header.Get("Description")))
		}
	}
}
