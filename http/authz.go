package http

import (
	"context"
	"slices"

	"github.com/labstack/echo/v4"

	"github.com/syvault/syvault/events"
)

// action is something a client may be allowed to do.
type action string

// The actions. Mutations are audited when refused.
const (
	actLeaseCreate  action = "lease.create"
	actLeaseList    action = "lease.list"
	actLeaseRead    action = "lease.read"
	actLeaseRevoke  action = "lease.revoke"
	actLeaseAbandon action = "lease.abandon" // a revocation given up (?force=true)
	actLeaseRenew   action = "lease.renew"
	actTargetRead   action = "target.read"
	actTargetManage action = "target.manage"
	actClientRead   action = "client.read"
	actClientManage action = "client.manage"
	actAuditRead    action = "audit.read"
	actUILogin      action = "ui.login"
)

func (a action) mutation() bool {
	switch a {
	case actLeaseCreate, actLeaseRevoke, actLeaseAbandon, actLeaseRenew, actTargetManage, actClientManage, actUILogin:
		return true
	}
	return false
}

// resource is what an action is on: a target's record uid, or a lease (its id and the
// client that owns it). Empty for collection-wide actions.
type resource struct {
	RecordUID string
	LeaseID   string
	Owner     string
}

// authorize is SyVault's whole authorization policy, in one place:
//
//   - admin clients may do everything;
//   - app clients may create leases on the records in their allowed_records (403
//     otherwise), and list, read, renew and revoke their own leases only: another
//     client's lease answers 404, exactly as an unknown id, so lease ids cannot be probed;
//     a renewal also needs the lease's record still in allowed_records (403), so a record
//     taken from a client gives it no more time there;
//   - only admins may give up a revocation (?force=true): it may leave a user on the
//     database, so its owner may not (403 on its own lease, 404 on another's);
//   - app clients may not touch targets, clients or the audit (403).
//
// TTL caps (the client's max_ttl_seconds) are checked where the TTL is known.
func authorize(c events.Client, act action, res resource) error {
	if c.Role == events.RoleAdmin {
		return nil
	}
	if c.Role != events.RoleApp {
		return events.Errorf(events.EForbidden, "This client has no role that allows anything.")
	}
	switch act {
	case actLeaseList:
		return nil // the list is filtered to the client's own leases
	case actLeaseCreate:
		if slices.Contains(c.AllowedRecords, res.RecordUID) {
			return nil
		}
		return events.Errorf(events.EForbidden, "This client may not lease record %q.", res.RecordUID)
	case actLeaseRead, actLeaseRevoke, actLeaseRenew, actLeaseAbandon:
		if res.Owner != c.ClientID {
			return events.Errorf(events.ENotFound, "No lease with id %q.", res.LeaseID)
		}
		if act == actLeaseAbandon {
			return events.Errorf(events.EForbidden, "Only admin clients may give up a revocation (force); revoke the lease without it, and it is retried until its user is dropped.")
		}
		if act == actLeaseRenew && !slices.Contains(c.AllowedRecords, res.RecordUID) {
			return events.Errorf(events.EForbidden, "This client may no longer lease record %q, so its lease there cannot be renewed; "+
				"it ends at its expires_at, or revoke it.", res.RecordUID)
		}
		return nil
	}
	return events.Errorf(events.EForbidden, "Only admin clients may do this.")
}

// allow checks act on res for the request's client. A refused mutation is recorded in
// the audit trail before the refusal is returned (for an app client, within a rate; see
// recordsDenial).
func (s *Server) allow(c echo.Context, act action, res resource) error {
	client := clientOf(c)
	err := authorize(client, act, res)
	if err != nil && act.mutation() && s.recordsDenial(c, client) {
		s.recordDenied(c.Request().Context(), client, act, res, err)
	}
	return err
}

// require is route middleware for actions on no particular resource.
func (s *Server) require(act action) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := s.allow(c, act, resource{RecordUID: c.Param("uid")}); err != nil {
				return err
			}
			return next(c)
		}
	}
}

func (s *Server) recordDenied(ctx context.Context, client events.Client, act action, res resource, cause error) {
	s.cfg.Commands.RecordDenied(ctx, client, string(act), res.RecordUID, res.LeaseID, cause)
}
