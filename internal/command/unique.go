package command

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
)

// NamesBucket holds the names of targets and clients, each reserved for the record uid or
// client id that bears it, so two targets (or two clients) never share a name, across
// every process. A reservation whose holder does not bear the name (a process that died
// before recording its target, a rename that could not tell whether it landed) is taken
// over in time (see claimName). It also holds the admins' guard (adminsGuard).
const NamesBucket = "SYVAULT_NAMES"

// nameKey is a name's key: names are compared without regard to case or surrounding
// space, and hashed, since they may hold characters no KV key takes.
func nameKey(kind, name string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(name))))
	return kind + "." + hex.EncodeToString(sum[:])
}

// claimName reserves name of kind ("target" or "client") for id. It fails with EConflict
// naming the holder when another target or client bears it, as the stream's leader
// shows (load reads what a holder id bears now). A reservation is taken over once it has
// stood for registrationBound without its holder bearing the name: a registration that
// never completed, a rename that was refused or landed unanswered (its request could not
// tell which, so kept both names), a target or client since removed. Younger, it may
// be a registration or rename under way, which keeps it.
func (s *Service) claimName(ctx context.Context, kind, name, id string, load func(ctx context.Context, id string) (string, error)) error {
	key := nameKey(kind, name)
	for range 3 {
		ok, err := s.names.Reserve(ctx, key, []byte(id), 0)
		if err != nil || ok {
			return err
		}
		h, held, err := s.names.Holder(ctx, key)
		switch {
		case err != nil:
			return err
		case !held:
			continue // released meanwhile: try again
		case string(h.Value) == id && time.Since(h.Since) < registrationBound:
			return nil
		case string(h.Value) == id:
			// Its own, from before (a rename back to a name it kept): stamped anew, or
			// another claim could take it over while this request runs.
			if ok, err := s.names.Take(ctx, key, h, []byte(id)); err != nil || ok {
				return err
			}
			continue
		}
		borne, err := s.borne(ctx, kind, name, string(h.Value), load)
		switch {
		case err != nil:
			return err
		case borne:
			field := map[string]string{"target": "record_uid", "client": "client_id"}[kind]
			return events.Errorf(events.EConflict, "A %s named %q exists already (%s %s); choose another name, or update that one.",
				kind, strings.TrimSpace(name), field, h.Value)
		case time.Since(h.Since) < registrationBound:
			// Another registration or rename to this name is under way (its target is
			// being prepared): whichever is first keeps the name.
			return events.Errorf(events.EConflict, "A %s named %q is being registered right now; choose another name, or try again in a minute.",
				kind, strings.TrimSpace(name))
		}
		// Left behind: take it, unless another request takes it first.
		if ok, err := s.names.Take(ctx, key, h, []byte(id)); err != nil || ok {
			return err
		}
	}
	return events.Errorf(events.EConflict, "The %s name %q is being claimed concurrently; try again.", kind, name)
}

// registrationBound is longer than any registration or update takes from its claim to
// its append (Prepare runs under the workers' operation timeout, 30 s, the append under
// NATS's). A reservation's time is the NATS server's, read by this process's clock: the
// two are to agree within a fraction of it (NTP).
var registrationBound = 2 * time.Minute

// releaseName frees name of kind when id holds it. Its callers know the name is not, or
// no longer, id's to keep, so it runs whatever the request's context: a name left held
// by a target or client that exists is refused to every other for good.
func (s *Service) releaseName(ctx context.Context, kind, name, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	key := nameKey(kind, name)
	h, held, err := s.names.Holder(ctx, key)
	if err == nil && held && string(h.Value) == id {
		err = s.names.ReleaseHeld(ctx, key, h) // not a successor's, taken over meanwhile
	}
	if err != nil {
		s.log.Warn("could not release a name", "kind", kind, "id", id, "err", err)
	}
}

// renameFailed frees name, the new name of a rename of target or client id that failed
// (failed: its append's error; nil when refused before it), when the rename surely
// stored nothing (see refused) and id does not bear the name by then (another
// request's rename). Unsure, the name is kept: held by a target or client that bears
// another, it is taken over in time (claimName).
func (s *Service) renameFailed(ctx context.Context, kind, name, id string, failed error, load func(context.Context, string) (string, error)) {
	if failed != nil && !refused(failed) {
		return
	}
	if !s.bears(ctx, kind, name, id, load) {
		s.releaseName(ctx, kind, name, id)
	}
}

// refused reports whether an append's failure is JetStream's answer that it stored
// nothing: a conflict, an error in its acknowledgement (a stream full, an account out of
// storage, no leader), or no stream to take it. A timeout, a cancelled request or a lost
// connection is not: the message may still be on its way, or stored by a leader whose
// followers have not acknowledged it yet, and land after any look at the stream.
func refused(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, jsstore.ErrConflict) || errors.As(err, &api) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrNoResponders)
}

// bears reports whether the stream's leader shows name borne by target or client id
// (load reads the name it bears as recorded now): the holder of a name another claims,
// or a rename another request recorded, which a rename that failed must not free. One
// removed bears nothing; a read that fails otherwise says yes: the name is kept.
func (s *Service) bears(ctx context.Context, kind, name, id string, load func(context.Context, string) (string, error)) bool {
	borne, err := s.borne(ctx, kind, name, id, load)
	return err != nil || borne
}

// borne is bears with the failure to read said.
func (s *Service) borne(ctx context.Context, kind, name, id string, load func(context.Context, string) (string, error)) (bool, error) {
	read, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout/4)
	defer cancel()
	cur, err := load(read, id)
	if events.ErrorCode(err) == events.ENotFound {
		return false, nil
	}
	return err == nil && nameKey(kind, cur) == nameKey(kind, name), err
}

// registrationLanded says where a registration's append to subject, a new uid's,
// answered with failed, landed: 0 with known when it surely did not (refused); else
// the sequence the stream's leader shows, 0 when it shows none or cannot say, which is
// not knowing (a timed-out append may land after the look).
func (s *Service) registrationLanded(ctx context.Context, subject string, failed error) (seq uint64, known bool) {
	if refused(failed) {
		return 0, true
	}
	seq, _ = s.leaderLast(ctx, subject)
	return seq, false
}

// leaderLast asks the stream's leader for subject's last sequence after an append
// answered with an error, whatever the request's context, within a quarter of the
// request timeout.
func (s *Service) leaderLast(ctx context.Context, subject string) (uint64, error) {
	check, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout/4)
	defer cancel()
	return s.cfg.Store.LastSeq(check, subject)
}

// targetName and clientName read the name target uid, or client id, bears as the stream's
// leader holds it.
func (s *Service) targetName(ctx context.Context, uid string) (string, error) {
	t, _, err := s.cfg.Store.LoadTarget(ctx, uid)
	return t.Name, err
}

func (s *Service) clientName(ctx context.Context, id string) (string, error) {
	c, _, err := s.cfg.Store.LoadClient(ctx, id)
	return c.Name, err
}
