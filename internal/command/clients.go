package command

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
)

// RegisterClient records a new client (validated by the caller) on behalf of actor: it
// gets its client id here, and each of its allowed records must name a target.
func (s *Service) RegisterClient(ctx context.Context, c events.Client, actor string) (events.Client, error) {
	allowed, err := s.allowedRecords(ctx, c.AllowedRecords)
	if err != nil {
		return c, err
	}
	now := time.Now()
	c.ClientID, c.AllowedRecords, c.CreatedAt = uuid.NewString(), allowed, now.UTC().Truncate(time.Second)
	if err := s.uniqueClientName(ctx, c); err != nil {
		return c, err
	}
	seq, err := s.cfg.Store.Append(ctx, events.ClientSubject(c.ClientID), events.RegisterClient(c, actor, now), 0)
	if err != nil {
		landed, known := s.registrationLanded(ctx, events.ClientSubject(c.ClientID), err)
		if landed == 0 {
			// Refused by JetStream, its name is free at once, as a target's: the
			// request sent again (a new client id) is not refused as its own rival.
			if known {
				s.releaseName(ctx, "client", c.Name, c.ClientID)
			}
			return c, err
		}
		s.log.Warn("a client's registration was recorded unanswered", "client_id", c.ClientID, "err", err)
		seq = landed
	}
	if err := s.cfg.Projections.WaitClient(ctx, c.ClientID, seq); err != nil {
		return c, err
	}
	s.log.Info("client registered", "client_id", c.ClientID, "role", c.Role)
	return c, nil
}

// allowedRecords returns uids without repeats, once each names a target.
func (s *Service) allowedRecords(ctx context.Context, uids []string) ([]string, error) {
	seen := map[string]bool{}
	var allowed []string
	for _, uid := range uids {
		if seen[uid] {
			continue
		}
		seen[uid] = true
		if _, err := s.cfg.Projections.Target(ctx, uid); err != nil {
			return nil, err
		}
		allowed = append(allowed, uid)
	}
	return allowed, nil
}

// uniqueClientName claims c's name for c, unless another client holds it.
func (s *Service) uniqueClientName(ctx context.Context, c events.Client) error {
	cs, err := s.cfg.Projections.Clients(ctx)
	if err != nil {
		return err
	}
	for _, o := range cs {
		if o.ClientID != c.ClientID && nameKey("client", o.Name) == nameKey("client", c.Name) {
			return events.Errorf(events.EConflict, "A client named %q exists already (client_id %s); choose another name.", c.Name, o.ClientID)
		}
	}
	return s.claimName(ctx, "client", c.Name, c.ClientID, s.clientName)
}

// UpdateClient replaces client id with c (validated by the caller) on behalf of actor,
// and answers once every later request sees it: a record no longer in its
// allowed_records can be neither leased nor renewed, and new caps apply to the next
// create or renewal (its leases keep their expiry). A new public key also ends the
// access tokens, dashboard sessions and login links had with the old one (each names
// the key it was had with). A client cannot change its own role (EConflict), and a
// demotion of an admin holds the admins' guard (see guardAdmins).
//
// With ifMatch (the versions an If-Match header names) the update is made only if one
// of them is still the client's version (else EPreconditionFailed), so an update made
// from a client as read cannot undo another admin's made since. It returns the client's
// new version.
func (s *Service) UpdateClient(ctx context.Context, id string, c events.Client, actor string, ifMatch []uint64) (events.Client, uint64, error) {
	cur, last, err := s.cfg.Store.LoadClient(ctx, id)
	if err != nil {
		return c, 0, err
	}
	if err := matchVersion("client", ifMatch, last); err != nil {
		return c, 0, err
	}
	if id == actor && c.Role != cur.Role {
		return c, 0, events.Errorf(events.EConflict, "A client cannot change its own role; use another admin client.")
	}
	if cur.Role == events.RoleAdmin && c.Role != events.RoleAdmin {
		var release func()
		if ctx, release, err = s.guardAdmins(ctx, actor); err != nil {
			return c, 0, err
		}
		defer release()
	}
	if c.AllowedRecords, err = s.allowedRecords(ctx, c.AllowedRecords); err != nil {
		return c, 0, err
	}
	now := time.Now()
	c.ClientID, c.CreatedAt = id, cur.CreatedAt
	renamed := nameKey("client", cur.Name) != nameKey("client", c.Name)
	if err := s.uniqueClientName(ctx, c); err != nil {
		return c, 0, err
	}
	seq, err := s.cfg.Store.Append(ctx, events.ClientSubject(id), events.UpdateClient(c, actor, last, now), last)
	if err != nil && renamed {
		s.renameFailed(ctx, "client", c.Name, id, err, s.clientName)
	}
	if errors.Is(err, jsstore.ErrConflict) {
		return c, 0, changedMeanwhile("client", ifMatch)
	}
	if err != nil {
		return c, 0, err
	}
	if renamed { // recorded: the old name is free, whatever the wait below says
		s.releaseName(ctx, "client", cur.Name, id)
	}
	if err := s.cfg.Projections.WaitClient(ctx, id, seq); err != nil {
		return c, 0, err
	}
	s.log.Info("client updated", "client_id", id, "role", c.Role, "key_changed", events.KeyFingerprint(c.PublicKey) != events.KeyFingerprint(cur.PublicKey))
	return c, seq, nil
}

// matchVersion refuses a change sent with If-Match versions none of which is last, the
// version of the target or client (what) now: the change was made from a state that has
// moved on. No versions: no condition.
func matchVersion(what string, ifMatch []uint64, last uint64) error {
	if len(ifMatch) == 0 || (last != 0 && slices.Contains(ifMatch, last)) {
		return nil
	}
	return versionMoved(what)
}

func versionMoved(what string) error {
	return events.Errorf(events.EPreconditionFailed,
		"The %s changed since the version this request names (If-Match); read it again and make the change from what it holds now.", what)
}

// changedMeanwhile is the answer to an update whose append found that the target or
// client (what) had moved on since it was read: with If-Match, the request's version is
// no longer current (EPreconditionFailed); without, it may simply be sent again.
func changedMeanwhile(what string, ifMatch []uint64) error {
	if len(ifMatch) > 0 {
		return versionMoved(what)
	}
	return events.Errorf(events.EConflict, "The %s changed while this update was made; send it again.", what)
}

// RemoveClient removes client id on behalf of actor: its tokens stop working at once
// (every request looks the client up), and its active leases keep their expiry. A client
// cannot remove itself (EConflict), and a removal of an admin holds the admins' guard
// (see guardAdmins).
func (s *Service) RemoveClient(ctx context.Context, id, actor string) error {
	if id == actor {
		return events.Errorf(events.EConflict, "A client cannot delete itself; use another admin client.")
	}
	cl, err := s.cfg.Projections.Client(ctx, id)
	if err != nil {
		return err
	}
	// Its role as the stream has it, the projection's may be behind a promotion; and the
	// removal is appended only after the event that role was read from, so that a
	// promotion meanwhile cannot make it the removal of an admin without the guard.
	cur, last, err := s.cfg.Store.LoadClient(ctx, id)
	if err != nil {
		return err
	}
	afterRemovalRead(id)
	if cur.Role == events.RoleAdmin {
		var release func()
		if ctx, release, err = s.guardAdmins(ctx, actor); err != nil {
			return err
		}
		defer release()
	}
	seq, err := s.cfg.Store.Append(ctx, events.ClientSubject(id), events.RemoveClient(id, actor, time.Now()), last)
	if errors.Is(err, jsstore.ErrConflict) {
		return events.Errorf(events.EConflict, "The client changed while it was being deleted; send the request again.")
	}
	if err != nil {
		return err
	}
	if err := s.cfg.Projections.WaitClient(ctx, id, seq); err != nil {
		return err
	}
	s.releaseName(ctx, "client", cl.Name, id)
	s.log.Info("client removed", "client_id", id)
	return nil
}

// afterRemovalRead runs between a removal's read of the client and its append: a test's
// way in, to change the client there.
var afterRemovalRead = func(clientID string) {}

// RecordDenied records in the audit trail a mutation client was refused (what it tried,
// on what, and why). A failure to record is logged, not returned: the refusal stands.
func (s *Service) RecordDenied(ctx context.Context, client events.Client, action, recordUID, leaseID string, cause error) {
	e := events.Denied(client.ClientID, action, recordUID, leaseID, cause, time.Now())
	if _, err := s.cfg.Store.AppendUnordered(ctx, events.AccessSubject(client.ClientID), e); err != nil {
		s.log.Warn("could not record a refused request in the audit trail", "client_id", client.ClientID, "action", action, "err", err)
	}
}
