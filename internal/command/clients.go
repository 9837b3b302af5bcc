package command

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/syvault/syvault/events"
)

// RegisterClient records a new client (validated by the caller) on behalf of actor: it
// gets its client id here, and each of its allowed records must name a target.
func (s *Service) RegisterClient(ctx context.Context, c events.Client, actor string) (events.Client, error) {
	seen := map[string]bool{}
	var allowed []string
	for _, uid := range c.AllowedRecords {
		if seen[uid] {
			continue
		}
		seen[uid] = true
		if _, err := s.cfg.Projections.Target(ctx, uid); err != nil {
			return c, err
		}
		allowed = append(allowed, uid)
	}
	now := time.Now()
	c.ClientID, c.AllowedRecords, c.CreatedAt = uuid.NewString(), allowed, now.UTC().Truncate(time.Second)
	cs, err := s.cfg.Projections.Clients(ctx)
	if err != nil {
		return c, err
	}
	for _, o := range cs {
		if nameKey("client", o.Name) == nameKey("client", c.Name) {
			return c, events.Errorf(events.EConflict, "A client named %q exists already (client_id %s); choose another name.", c.Name, o.ClientID)
		}
	}
	if err := s.claimName(ctx, "client", c.Name, c.ClientID, s.clientExists); err != nil {
		return c, err
	}
	seq, err := s.cfg.Store.Append(ctx, events.ClientSubject(c.ClientID), events.RegisterClient(c, actor, now), 0)
	if err != nil {
		return c, err
	}
	if err := s.cfg.Projections.WaitClient(ctx, c.ClientID, seq); err != nil {
		return c, err
	}
	s.log.Info("client registered", "client_id", c.ClientID, "role", c.Role)
	return c, nil
}

// RemoveClient removes client id on behalf of actor: its tokens stop working at once
// (every request looks the client up), and its active leases keep their expiry. A client
// cannot remove itself (EConflict).
func (s *Service) RemoveClient(ctx context.Context, id, actor string) error {
	if id == actor {
		return events.Errorf(events.EConflict, "A client cannot delete itself; use another admin client.")
	}
	cl, err := s.cfg.Projections.Client(ctx, id)
	if err != nil {
		return err
	}
	seq, err := s.cfg.Store.AppendUnordered(ctx, events.ClientSubject(id), events.RemoveClient(id, actor, time.Now()))
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

// RecordDenied records in the audit trail a mutation client was refused (what it tried,
// on what, and why). A failure to record is logged, not returned: the refusal stands.
func (s *Service) RecordDenied(ctx context.Context, client events.Client, action, recordUID, leaseID string, cause error) {
	e := events.Denied(client.ClientID, action, recordUID, leaseID, cause, time.Now())
	if _, err := s.cfg.Store.AppendUnordered(ctx, events.AccessSubject(client.ClientID), e); err != nil {
		s.log.Warn("could not record a refused request in the audit trail", "client_id", client.ClientID, "action", action, "err", err)
	}
}
