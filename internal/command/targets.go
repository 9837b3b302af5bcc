package command

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/workers/driver"
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NewRecordUID returns a 12-character base62 record uid.
func NewRecordUID() string { return randomString(base62, 12) }

// RegisterTarget verifies t (normalized by the caller) with its admin password, seals
// the password and records the target on behalf of actor. Verification failures are
// ETargetUnverified with what to fix.
func (s *Service) RegisterTarget(ctx context.Context, t events.Target, adminPassword, actor string) (events.Target, error) {
	t.RecordUID = NewRecordUID()
	now := time.Now()
	t.CreatedAt = now.UTC().Truncate(time.Second)
	if err := s.uniqueTargetName(ctx, t); err != nil {
		return t, err
	}
	var err error
	if t.Warnings, err = s.cfg.Preparer.Prepare(ctx, t, adminPassword, true); err != nil {
		s.releaseName(ctx, "target", t.Name, t.RecordUID)
		s.log.Warn("target refused", "record_uid", t.RecordUID, "host", t.Host, "err", err)
		return t, err
	}
	t.SealedAdminPassword = s.cfg.Sealer.Seal([]byte(adminPassword), t.AdminPasswordAAD())
	seq, err := s.cfg.Store.Append(ctx, events.TargetSubject(t.RecordUID), events.RegisterTarget(t, actor, now), 0)
	if err != nil {
		// What Prepare made goes, or a registration retried through a store outage would
		// leave a role (and, on PostgreSQL, an admin membership) per attempt; unless the
		// append landed unanswered (its uid is new: nothing else writes there), for a
		// lease made on the target would lose its grants with them. Should the store not
		// say, they go too: the target's next lease makes them again, as for a target
		// whose group an operator dropped.
		var known bool
		if seq, known = s.registrationLanded(ctx, events.TargetSubject(t.RecordUID), err); seq == 0 {
			// Freed first, when surely not recorded: sent again meanwhile, it is not its
			// own rival (its undo touches only this record uid's setup). Unsure, the
			// name is kept until its reservation lapses (registrationBound).
			if known {
				s.releaseName(ctx, "target", t.Name, t.RecordUID)
			}
			if uerr := s.cfg.Preparer.Unprepare(ctx, t, adminPassword); uerr != nil {
				s.log.Warn("removing what a target not recorded set up failed", "record_uid", t.RecordUID, "err", uerr)
			}
			return t, err
		}
		s.log.Warn("a target's registration was recorded unanswered", "record_uid", t.RecordUID, "err", err)
	}
	if err := s.cfg.Projections.WaitTarget(ctx, t.RecordUID, seq); err != nil {
		return t, err
	}
	s.log.Info("target registered", "record_uid", t.RecordUID, "engine", t.Engine, "host", t.Host)
	s.logWarnings(t)
	return t, nil
}

// logWarnings logs what t's database lets lease users do beyond t's grants, once t is
// recorded: a registration or update not recorded warns of nothing.
func (s *Service) logWarnings(t events.Target) {
	for _, w := range t.Warnings {
		s.log.Warn("the target's database lets lease users do more than its grants", "record_uid", t.RecordUID, "warning", w)
	}
}

// UpdateTarget replaces target uid's settings with t, e.g. to rotate its admin password,
// verified like a new target's. Leases issued before keep being revoked with the new
// admin credentials; when it answers, no active lease holds anything the new grants do
// not (engines whose users hold their own grants get them given anew).
//
// With ifMatch (the versions an If-Match header names) the update is made only if one
// of them is the target's version before and after its verification (else
// EPreconditionFailed). It returns the target's new version.
func (s *Service) UpdateTarget(ctx context.Context, uid string, t events.Target, adminPassword, actor string, ifMatch []uint64) (events.Target, uint64, error) {
	release, err := s.targetTurn(ctx, uid)
	if err != nil {
		return t, 0, err
	}
	defer release()
	// The target and its version as the stream's leader holds them (a lagging read side
	// could miss a removal, and the update would bring the target back), read before the
	// database is changed: an update or removal recorded between, by another process,
	// then refuses this one's write and the database is set back to it. Read after, this
	// update would be recorded over one whose grants the database kept.
	cur, last, err := s.cfg.Projections.TargetVersion(ctx, uid)
	if err != nil {
		return t, 0, err
	}
	if len(ifMatch) > 0 { // refused before the target's database is asked anything
		if err := matchVersion("target", ifMatch, last); err != nil {
			return t, 0, err
		}
	}
	if t.Engine != cur.Engine {
		return t, 0, events.Errorf(events.EInvalid, "engine cannot change; register a new target instead.")
	}
	t.RecordUID, t.CreatedAt = uid, cur.CreatedAt
	// A new name is held for the target until the update is recorded, and freed when it
	// is surely not: held by a target that exists, it would be refused to every other
	// for good. One the target bears by then (another request's rename) stays.
	renamed := nameKey("target", cur.Name) != nameKey("target", t.Name)
	var failed error // of the append; none when refused before it
	nameSettled := !renamed
	if err := s.uniqueTargetName(ctx, t); err != nil {
		return t, 0, err
	}
	defer func() {
		if !nameSettled {
			s.renameFailed(ctx, "target", t.Name, uid, failed, s.targetName)
		}
	}()
	if t.Warnings, err = s.cfg.Preparer.Prepare(ctx, t, adminPassword, false); err != nil {
		s.log.Warn("target update refused", "record_uid", uid, "host", t.Host, "err", err)
		if errors.Is(err, driver.ErrPartlyApplied) { // some of its databases set, or maybe
			s.restoreTarget(ctx, t, adminPassword)
		}
		return t, 0, err
	}
	t.SealedAdminPassword = s.cfg.Sealer.Seal([]byte(adminPassword), t.AdminPasswordAAD())
	seq, err := s.appendUpdate(ctx, t, actor, last, len(ifMatch) == 0)
	if errors.Is(err, jsstore.ErrConflict) {
		s.restoreTarget(ctx, t, adminPassword)
		return t, 0, changedMeanwhile("target", ifMatch)
	}
	if err != nil {
		failed = err
		return t, 0, err
	}
	nameSettled = true
	if renamed {
		// Freed once recorded, not once the read side shows it: a read side slow to
		// show the update would keep the old name from every other target.
		s.releaseName(ctx, "target", cur.Name, uid)
	}
	if err := s.cfg.Projections.WaitTarget(ctx, uid, seq); err != nil {
		return t, 0, err
	}
	if s.cfg.Preparer.GrantsPerUser(t.Engine) {
		if err := s.regrantLeases(ctx, t); err != nil {
			return t, 0, err
		}
	}
	s.log.Info("target updated", "record_uid", uid)
	s.logWarnings(t)
	return t, seq, nil
}

// appendUpdate records update t after the target's event last. When any version will do
// (no If-Match), reseals recorded meanwhile (syvault reseal: the same settings, the
// password sealed under a new key) do not refuse it: they changed nothing on the
// database, so the update is recorded after them (up to three times).
func (s *Service) appendUpdate(ctx context.Context, t events.Target, actor string, last uint64, anyVersion bool) (uint64, error) {
	subject := events.TargetSubject(t.RecordUID)
	sent := map[string]bool{}
	for tries := 1; ; tries++ {
		e := events.UpdateTarget(t, actor, last, time.Now())
		sent[e.ID] = true
		seq, err := s.cfg.Store.Append(ctx, subject, e, last)
		if !errors.Is(err, jsstore.ErrConflict) || !anyVersion || tries == 3 {
			return seq, err
		}
		evs, seqs, herr := s.cfg.Store.History(ctx, subject)
		if herr != nil || len(seqs) == 0 {
			return seq, err
		}
		for i, e := range evs {
			switch {
			case seqs[i] <= last:
			case sent[e.ID]: // an earlier try landed unanswered, before the reseal
				return seqs[i], nil
			case e.Type != events.TargetResealed:
				return seq, err
			}
		}
		last = seqs[len(seqs)-1]
	}
}

// restoreTarget sets target t's database back to the target as recorded, after an
// update whose verification (with adminPassword) gave the group its grants was refused:
// at its write, another process having recorded an update first, whose grants this
// one's verification may have overwritten; or by the database partway, some of the
// target's databases set. Either leaves leases with grants no recorded setting names.
// (This process makes no other change of the target meanwhile: targetTurn.) It
// reads the target as its events stand on the stream's leader and prepares it again,
// and again while another update lands meanwhile (a few times). Engines whose users hold
// their own grants are changed only after the record, so have no grants to set back.
//
// A target another process removed meanwhile may have had its setup (the PostgreSQL
// group, the MySQL marker role) made again by this update's verification, after the
// removal dropped it, or by a restore here: that is removed again, with the password
// the verification used and each re-prepared target's own.
//
// Best effort, logged: the target's next update sets its grants too. (An update whose
// write failed for the store's outage is not set back: the store, which says what is
// recorded, is what does not answer; it answers 503 and is sent again.)
func (s *Service) restoreTarget(ctx context.Context, t events.Target, adminPassword string) {
	uid := t.RecordUID
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout)
	defer cancel()
	err := func() error {
		var reprepared []events.Target
		for range 3 {
			cur, version, err := s.cfg.Projections.TargetVersion(ctx, uid)
			if events.ErrorCode(err) == events.ENotFound {
				errs := []error{s.cfg.Preparer.Unprepare(ctx, t, adminPassword)}
				for _, r := range reprepared {
					errs = append(errs, s.cfg.Preparer.RemoveTarget(ctx, r))
				}
				return errors.Join(errs...)
			}
			if err != nil || s.cfg.Preparer.GrantsPerUser(t.Engine) {
				return err
			}
			// Reprepare goes by the read side's record, as every worker call does.
			if err := s.cfg.Projections.WaitTarget(ctx, uid, version); err != nil {
				return err
			}
			reprepared = append(reprepared, cur)
			if err := s.cfg.Preparer.Reprepare(ctx, cur); err != nil {
				return err
			}
			last, err := s.cfg.Store.LastSeq(ctx, events.TargetSubject(uid))
			if err != nil || last == version {
				return err
			}
		}
		return errors.New("the target kept changing")
	}()
	if err != nil {
		s.log.Warn("could not set a target's database back to its recorded settings after a refused update; its next update will",
			"record_uid", uid, "err", err)
	}
}

// regrantLeases gives every active lease of t exactly t's grants, a few at a time, so
// that after an update answers no lease holds what the target no longer grants. A lease
// activated while this runs follows the new grants by itself (the worker checks). The
// update is recorded either way: sent again, it tries again.
func (s *Service) regrantLeases(ctx context.Context, t events.Target) error {
	var failed, total int
	q := events.LeaseQuery{RecordUID: t.RecordUID, Limit: 1000}
	for {
		page, next, err := s.cfg.Projections.ActiveLeases(ctx, q)
		if err != nil {
			return err
		}
		total += len(page)
		errs := forEach(page, 4, func(l events.Lease) error { return s.cfg.Preparer.Regrant(ctx, t, l.Username) })
		for _, err := range errs {
			if err != nil {
				failed++
				s.log.Warn("could not give a lease its target's new grants", "record_uid", t.RecordUID, "err", err)
			}
		}
		if next == "" {
			break
		}
		q.Cursor = next
	}
	if failed > 0 {
		return events.Errorf(events.ETargetUnavailable,
			"The target was updated, but %d of its %d active leases could not be given the new grants; send the update again.", failed, total)
	}
	return nil
}

// forEach runs fn on every lease, n at a time, and returns their errors in order.
func forEach(leases []events.Lease, n int, fn func(events.Lease) error) []error {
	sem := make(chan struct{}, n)
	errs := make([]error, len(leases))
	done := make(chan struct{})
	for i, l := range leases {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; done <- struct{}{} }()
			errs[i] = fn(l)
		}()
	}
	for range leases {
		<-done
	}
	return errs
}

// RemoveTarget removes target uid on behalf of actor. While it has active leases it
// refuses (EConflict), unless revokeLeases, which revokes them first and removes nothing
// if any revocation does not finish; with abandon too, a revocation that cannot finish
// is given up (AbandonLease: for a target whose database is gone for good). Other
// processes that keep updating it meanwhile refuse it too (EConflict, nothing removed).
func (s *Service) RemoveTarget(ctx context.Context, uid string, revokeLeases, abandon bool, actor string) error {
	if _, err := s.cfg.Projections.Target(ctx, uid); err != nil {
		return err
	}
	var down *serversDown
	if abandon {
		down = &serversDown{}
	}
	ended := map[string]bool{} // by this removal: a read side behind may list them again
	for stale := 0; ; {
		page, _, err := s.cfg.Projections.ActiveLeases(ctx, events.LeaseQuery{RecordUID: uid, Limit: 100})
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		if !revokeLeases {
			return events.Errorf(events.EConflict, "The target has %s active lease(s); revoke them first or pass ?revoke_leases=true.", countOf(page))
		}
		page = slices.DeleteFunc(page, func(l events.Lease) bool { return ended[l.ID] })
		if len(page) == 0 {
			// Every lease listed was ended here: the read side is behind (or an older
			// process applied an event it does not know). Asked again for a while, not
			// without pause.
			if stale++; stale > staleLists {
				return events.Errorf(events.EUnavailable, "The read side still lists leases of the target that have ended; nothing was removed; "+
					"send the removal again shortly (should it answer this again once every server runs this version, run syvault rebuild-projections).")
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(staleListPause):
			}
			continue
		}
		stale = 0
		atOnce := 8
		if abandon {
			atOnce = driver.MaxAdminConns // as many as the target's admin connections
		}
		errs := forEach(page, atOnce, func(l events.Lease) error {
			var err error
			if abandon {
				_, err = s.abandon(ctx, l.ID, actor, down)
			} else {
				err = s.RevokeLease(ctx, l.ID, actor)
			}
			if events.ErrorCode(err) != events.ENotFound {
				return err
			}
			return nil
		})
		for _, l := range page {
			ended[l.ID] = true
		}
		for _, err := range errs {
			if err != nil {
				return err // the first failure says what to fix; every revocation stays recorded
			}
		}
	}
	release, err := s.targetTurn(ctx, uid)
	if err != nil {
		return err
	}
	defer release()
	// Every lease has ended. The removal is recorded on condition that the target is as
	// read from the stream's leader; an update another process records between the read
	// and the write refuses it, and it reads again (three times, then 409 with nothing
	// removed). Only then does what the target's users shared go, for the settings
	// recorded last (removeSetup): an update another process verifies meanwhile is
	// refused at its write and removes what its verification made (restoreTarget).
	var target events.Target
	var seq uint64
	for tries := 1; ; tries++ {
		var version uint64
		target, version, err = s.cfg.Projections.TargetVersion(ctx, uid)
		if tries > 1 && events.ErrorCode(err) == events.ENotFound {
			return nil // another process removed it meanwhile, its setup with it
		}
		if err != nil {
			return err
		}
		seq, err = s.cfg.Store.Append(ctx, events.TargetSubject(uid), events.RemoveTarget(uid, actor, time.Now()), version)
		if err == nil {
			break
		}
		if errors.Is(err, jsstore.ErrConflict) {
			if tries == 3 {
				return events.Errorf(events.EConflict, "The target kept changing while it was being removed; nothing was removed; send the removal again.")
			}
			continue
		}
		// Unanswered, it may have landed: then nothing would end what the removal
		// leaves, as a removal sent again finds no target.
		if at := s.removedAt(ctx, uid); at != 0 {
			_ = s.afterRemoval(ctx, target, at, actor)
		}
		return err
	}
	if err := s.afterRemoval(ctx, target, seq, actor); err != nil {
		return err
	}
	// Every event up to the removal is applied by now (unless that wait failed, which
	// answers above): the record shows it, or a copy of it behind soon will.
	if err := s.cfg.Projections.WaitTarget(ctx, uid, seq); err != nil {
		return err
	}
	s.releaseName(ctx, "target", target.Name, uid)
	return nil
}

// A removal whose read side keeps listing leases it ended asks again staleLists times,
// staleListPause apart, before it answers 503.
const (
	staleLists     = 50
	staleListPause = 100 * time.Millisecond
)

// afterRemoval ends what target t's removal, recorded at stream sequence removal, leaves
// behind, even once ctx is done: a removal sent again finds no target, so nothing else
// would in this request. First the leases that became active while the removal was under
// way (see revokeActivatedMeanwhile), then what the target's users shared, whether or not
// those revocations could be recorded. Each within half a request timeout: after its turn
// on the target, a removal still takes at most a request timeout, as when it dropped the
// setup alone. What cannot be checked in time the workers check, from the stream, until
// it is done (they follow every removal through: see workers.RemovalConsumer).
func (s *Service) afterRemoval(ctx context.Context, t events.Target, removal uint64, actor string) error {
	defer s.removeSetup(ctx, t)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout/2)
	defer cancel()
	if err := s.revokeActivatedMeanwhile(ctx, t.RecordUID, removal, actor); err != nil {
		s.log.Warn("could not check the removed target for leases activated during its removal in time; the workers check once the read side has the removal",
			"record_uid", t.RecordUID, "err", err)
		return events.Wrap(err, events.ETimeout, "The target is removed, but its leases could not all be checked for, or revoked, in time "+
			"(one may have been activated while it was being removed); SyVault revokes any such lease once its read side has caught up. "+
			"To see them, list the leases with its record_uid.")
	}
	return nil
}

// revokeActivatedMeanwhile revokes the leases of target uid activated while its removal,
// recorded at stream sequence removal, was under way: the list made before the removal
// showed none, but a lease activated after that list (or missing from it, read from a
// copy behind) and before the removal was made with the target's settings and would
// outlive it. Once every event up to the removal is applied, the index's leader holds an
// entry for each such lease; they are revoked whatever revoke_leases said (their target
// is gone). A lease activated after the removal is its worker's to revoke: it reads the
// target after each create.
func (s *Service) revokeActivatedMeanwhile(ctx context.Context, uid string, removal uint64, actor string) error {
	if err := s.cfg.Projections.WaitApplied(ctx, removal); err != nil {
		return err
	}
	revoked, _, err := s.cfg.Store.RevokeIndexed(ctx, uid, actor)
	if revoked > 0 {
		s.log.Warn("revoked the leases of a removed target activated during its removal", "record_uid", uid, "leases", revoked)
	}
	return err
}

// removedAt returns the stream sequence of target uid's removal (0 when it is not
// removed, or that cannot be told), asking the stream's leader even once ctx is done.
func (s *Service) removedAt(ctx context.Context, uid string) uint64 {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout)
	defer cancel()
	if _, _, err := s.cfg.Projections.TargetVersion(ctx, uid); events.ErrorCode(err) != events.ENotFound {
		return 0
	}
	at, _ := s.cfg.Store.LastSeq(ctx, events.TargetSubject(uid))
	return at
}

// removeSetup removes what the users of target t, whose removal is recorded, shared,
// even once ctx is done: a removal sent again finds no target, so nothing else would. A
// failure leaves only a role that cannot log in; it is logged.
func (s *Service) removeSetup(ctx context.Context, t events.Target) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout/2)
	defer cancel()
	if err := s.cfg.Preparer.RemoveTarget(ctx, t); err != nil {
		s.log.Warn("could not remove the target's shared setup from the database", "record_uid", t.RecordUID, "err", err)
	}
}

// targetTurn waits until no other update or removal of target uid is being made in this
// process. Two changes of one target's database at a time could leave it with the
// grants of the one not recorded: one update's verification between another's and that
// one's write, or a refused update setting the database back while the next is verified,
// or the group a removal dropped made again. Another process's changes are not waited
// for; a refused write sets the database back to what is recorded (restoreTarget).
func (s *Service) targetTurn(ctx context.Context, uid string) (release func(), err error) {
	wait, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	release, err = s.targetTurns.Take(wait, uid)
	if err != nil && ctx.Err() != nil { // the caller left
		return nil, events.Wrap(err, events.ETimeout, "The request ended before the target could be changed; nothing was changed.")
	}
	if err != nil {
		return nil, events.Wrap(err, events.ETimeout, "Another change of this target is still being made; try again shortly.")
	}
	return release, nil
}

// uniqueTargetName claims t's name for it. Targets registered before names were
// reserved are found in the read side too.
func (s *Service) uniqueTargetName(ctx context.Context, t events.Target) error {
	ts, err := s.cfg.Projections.Targets(ctx)
	if err != nil {
		return err
	}
	for _, o := range ts {
		if o.RecordUID != t.RecordUID && nameKey("target", o.Name) == nameKey("target", t.Name) {
			return events.Errorf(events.EConflict, "A target named %q exists already (record_uid %s); choose another name, or update that one.",
				t.Name, o.RecordUID)
		}
	}
	return s.claimName(ctx, "target", t.Name, t.RecordUID, s.targetName)
}

func countOf(page []events.Lease) string {
	if len(page) >= 100 {
		return "100 or more"
	}
	return strconv.Itoa(len(page))
}
