package workers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/workers/driver"
)

// Reconciliation compares the users a target's database holds with the store. A user is
// looked up by name in the usernames bucket, where every lease reserves its name before its
// request is appended and keeps it until its user is dropped (25 h at most, longer than a
// lease lives, when the drop is not seen through), and the lease it names is
// read from the stream: so a user whose lease is pending, active or revoking is always
// found, whatever the projections' lag, since its user cannot exist before its request.
// What is left, a user of the target's marker whose name no lease holds or whose lease
// has ended, was left behind: by a lost or restored data directory, or a drop that
// never happened. Such an orphan is dropped exactly as a revocation drops (sessions
// ended first) and the drop recorded as an orphan.dropped event. Users without the
// marker are never dropped: they are reported when an ended lease of this target still
// holds the name, and otherwise counted as not SyVault's.

// NameHolder tells which lease reserved a username, and lists the names reserved:
// *jsstore.Names of the usernames bucket.
type NameHolder interface {
	Holder(ctx context.Context, name string) (jsstore.Holding, bool, error)
	List(ctx context.Context) ([]string, error)
}

// LeaseLister lists active and revoking leases: the projections. Reconciliation uses it
// to pass over the users of live leases without a look-up each; whatever it misses (a
// lease it has not caught up with) is looked up.
type LeaseLister interface {
	ActiveLeases(ctx context.Context, q events.LeaseQuery) (page []events.Lease, next string, err error)
}

// ReconcileOptions say how far reconciliation goes.
type ReconcileOptions struct {
	// Names is where lease usernames are reserved. Required.
	Names NameHolder
	// Leases, optional, saves a look-up per user of a live lease.
	Leases LeaseLister
	// Apply drops the orphans; without it nothing changes.
	Apply bool
	// Unmarked also looks at users with a lease user's name and no marker.
	Unmarked bool
	// Actor is the client on whose behalf drops are recorded (empty: SyVault itself).
	Actor string
}

// Verdicts of a user.
const (
	// VerdictOrphan: marked as the target's, and no live lease accounts for it.
	VerdictOrphan = "orphan"
	// VerdictUnverified: an ended lease of this target used the name, but the user
	// carries no marker, so it is reported and left alone.
	VerdictUnverified = "unverified"
)

// Finding is one user reconciliation reports.
type Finding struct {
	Username string `json:"username"`
	Verdict  string `json:"verdict"`
	// LeaseID and LeaseStatus are the lease that last used the name, if known.
	LeaseID     string        `json:"lease_id,omitempty"`
	LeaseStatus events.Status `json:"lease_status,omitempty"`
	Reason      string        `json:"reason"`
	// Dropped says the user was dropped (with Apply); Error why a drop failed.
	Dropped bool   `json:"dropped"`
	Error   string `json:"error,omitempty"`
}

// TargetReport is the outcome of reconciling one target.
type TargetReport struct {
	RecordUID string        `json:"record_uid"`
	Name      string        `json:"name"`
	Engine    events.Engine `json:"engine"`
	// Marked counts the users carrying the target's marker; Live those a pending,
	// active or revoking lease accounts for.
	Marked int `json:"marked_users"`
	Live   int `json:"live_users"`
	// Foreign counts users named like lease users, carrying no marker, that no lease of
	// this target used (with Unmarked only): not SyVault's as far as it can tell.
	Foreign  int       `json:"foreign_users"`
	Findings []Finding `json:"findings"`
	// Error says why the target could not be reconciled.
	Error string `json:"error,omitempty"`
}

// Reconcile reconciles target t, dropping its orphans when opts.Apply. A failure to list
// the users is returned (and set in the report); a failed drop is reported in its finding
// and joined into the error, the other users still handled.
func (w *Workers) Reconcile(ctx context.Context, t events.Target, opts ReconcileOptions) (TargetReport, error) {
	rep := TargetReport{RecordUID: t.RecordUID, Name: t.Name, Engine: t.Engine, Findings: []Finding{}}
	err := w.reconcile(ctx, t, opts, &rep)
	if err != nil && rep.Error == "" {
		rep.Error = events.ErrorMessage(err)
	}
	return rep, err
}

func (w *Workers) reconcile(ctx context.Context, t events.Target, opts ReconcileOptions, rep *TargetReport) error {
	if opts.Names == nil {
		return errors.New("workers.Reconcile: Names is required")
	}
	target, conn, err := w.conn(ctx, t)
	if err != nil {
		return err
	}
	opCtx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	users, err := w.driver(target).ListUsers(opCtx, driver.ListUsersRequest{Conn: conn, RecordUID: target.RecordUID, Unmarked: opts.Unmarked})
	cancel()
	if err != nil {
		return fmt.Errorf("list users of %s: %w", t.RecordUID, err)
	}
	sort.Slice(users, func(i, j int) bool { return users[i].Username < users[j].Username })
	listed, err := liveUsernames(ctx, opts.Leases, target.RecordUID)
	if err != nil {
		return err
	}
	var reserved map[string]bool // read once, when an unmarked user needs it
	var errs []error
	for _, u := range users {
		if u.Marked {
			rep.Marked++
		}
		if listed[u.Username] {
			rep.Live++
			continue
		}
		if !u.Marked {
			// Most such users on a busy server are nobody's that SyVault knows (other
			// deployments, tests, hand-made): one listing of the reserved names spares a
			// look-up for each.
			if reserved == nil {
				if reserved, err = reservedNames(ctx, opts.Names); err != nil {
					return err
				}
			}
			if !reserved[u.Username] {
				rep.Foreign++
				continue
			}
		}
		f, live, err := w.judge(ctx, target.RecordUID, u, opts.Names)
		switch {
		case err != nil:
			return err // the store did not answer: judging on would drop what it could not see
		case live:
			rep.Live++
			continue
		case f == nil:
			rep.Foreign++
			continue
		}
		if opts.Apply && f.Verdict == VerdictOrphan {
			if err := w.dropOrphan(ctx, target, conn, *f, opts); err != nil {
				f.Error = events.ErrorMessage(err)
				errs = append(errs, fmt.Errorf("drop %s: %w", f.Username, err))
			} else {
				f.Dropped = true
			}
		}
		rep.Findings = append(rep.Findings, *f)
	}
	return errors.Join(errs...)
}

// judge decides on one listed user: live (a lease that has not ended accounts for it),
// a finding, or neither (an unmarked user no lease of this target used).
func (w *Workers) judge(ctx context.Context, recordUID string, u driver.ListedUser, names NameHolder) (f *Finding, live bool, err error) {
	h, held, err := names.Holder(ctx, u.Username)
	if err != nil {
		return nil, false, err
	}
	var l events.Lease
	found := false
	if held {
		l, err = w.cfg.Store.LoadLease(ctx, string(h.Value))
		switch {
		case err == nil:
			found = true
		case events.ErrorCode(err) != events.ENotFound:
			return nil, false, err
		}
	}
	if found && !l.Status.Ended() {
		return nil, true, nil
	}
	f = &Finding{Username: u.Username, Verdict: VerdictOrphan}
	if found {
		f.LeaseID, f.LeaseStatus = l.ID, l.Status
	}
	switch {
	case !u.Marked && (!found || l.RecordUID != recordUID):
		return nil, false, nil
	case !u.Marked:
		f.Verdict = VerdictUnverified
		f.Reason = fmt.Sprintf("%s carries no marker of this target (made before markers?), and its lease %s has ended (%s); left alone: drop it by hand if it is SyVault's",
			u.Username, l.ID, l.Status)
	case found:
		f.Reason = fmt.Sprintf("%s outlived its lease %s, which has ended (%s)", u.Username, l.ID, l.Status)
	case held:
		f.LeaseID = string(h.Value)
		f.Reason = fmt.Sprintf("%s was reserved by lease %s, which is not in the store", u.Username, f.LeaseID)
	default:
		f.Reason = fmt.Sprintf("%s: no lease of the store holds this name (a lease holds its name until its user is dropped, %s at most)", u.Username, usernameHold)
	}
	return f, false, nil
}

// usernameHold is how long the usernames bucket remembers a name (see internal/command).
const usernameHold = events.MaxTTL + time.Hour

// dropOrphan drops one orphan as a revocation drops a user, then records it. The name is
// looked up once more first, so a lease that took it since is never robbed of its user.
func (w *Workers) dropOrphan(ctx context.Context, t events.Target, conn driver.Conn, f Finding, opts ReconcileOptions) error {
	if _, live, err := w.judge(ctx, t.RecordUID, driver.ListedUser{Username: f.Username, Marked: true}, opts.Names); err != nil || live {
		if err == nil {
			err = events.Errorf(events.EConflict, "A lease took the name %s meanwhile; it was left alone.", f.Username)
		}
		return err
	}
	opCtx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	defer cancel()
	if err := w.driver(t).DropUser(opCtx, driver.DropUserRequest{Conn: conn, RecordUID: t.RecordUID, Username: f.Username, Grants: t.Grants}); err != nil {
		return err
	}
	e := events.DropOrphan(events.Orphan{RecordUID: t.RecordUID, Username: f.Username, LeaseID: f.LeaseID, Reason: f.Reason}, opts.Actor, time.Now())
	if _, err := w.cfg.Store.AppendUnordered(ctx, events.OrphanSubject(t.RecordUID), e); err != nil {
		return fmt.Errorf("the user was dropped, but the drop was not recorded: %w", err)
	}
	w.log.Info("orphaned user dropped", "record_uid", t.RecordUID, "username", f.Username, "lease_id", f.LeaseID)
	return nil
}

// liveUsernames returns the usernames of the target's active and revoking leases, as the
// projections know them (nothing without a lister).
func liveUsernames(ctx context.Context, leases LeaseLister, recordUID string) (map[string]bool, error) {
	out := map[string]bool{}
	if leases == nil {
		return out, nil
	}
	cursor := ""
	for {
		page, next, err := leases.ActiveLeases(ctx, events.LeaseQuery{RecordUID: recordUID, Limit: 1000, Cursor: cursor})
		if err != nil {
			return nil, err
		}
		for _, l := range page {
			out[l.Username] = true
		}
		if next == "" {
			return out, nil
		}
		cursor = next
	}
}

func reservedNames(ctx context.Context, names NameHolder) (map[string]bool, error) {
	list, err := names.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(list))
	for _, n := range list {
		out[n] = true
	}
	return out, nil
}
