package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
)

// CreateUser creates req.Username@'%' identified by req.Password, gives it the target's
// marker role (see mark) and grants it exactly req.Grants (on db.* when a grant lists no
// tables, else on each table). When the user
// exists it is taken to be this lease's from an earlier attempt: its password is set
// again, the account unlocked, all its privileges revoked and the grants given anew, and
// that is success. On any failure after the CREATE USER was sent the user is dropped again
// (with a context that outlives ctx), so no user of that name is left behind. MySQL has no
// database-side expiry: ExpiresAt is not used. Safe for concurrent use.
func (d *Driver) CreateUser(ctx context.Context, req driver.CreateUserRequest) error {
	err := driver.CreateOrUndo(ctx, d, req, d.logger, func() (bool, error) { return d.createUser(ctx, req) })
	return fail("mysql.CreateUser", err, events.EInternal, "Could not create the database user.", req.Conn.Password, req.Password)
}

// createUser does CreateUser's work; sent reports whether CREATE USER went out, after
// which a user may exist however the call ended. The connection is released on return,
// before any cleanup takes another.
func (d *Driver) createUser(ctx context.Context, req driver.CreateUserRequest) (sent bool, err error) {
	acct, err := account(req.Username)
	if err != nil {
		return false, events.Wrap(err, events.EInternal, "The username is not a valid MySQL user name.")
	}
	password, err := quoteString(req.Password)
	if err != nil {
		return false, events.Wrap(err, events.EInternal, "The password cannot be written as a MySQL string literal.")
	}
	specs, err := parseGrants(req.Grants, req.Conn.Database)
	if err != nil {
		return false, events.Wrap(err, events.EInternal, "The lease's grants are invalid: "+err.Error()+".")
	}
	conn, err := d.connect(ctx, req.Conn)
	if err != nil {
		return false, err
	}
	defer conn.Close()

	// MAX_USER_CONNECTIONS 0 is MySQL's "no limit of its own".
	limit := fmt.Sprintf(" WITH MAX_USER_CONNECTIONS %d", max(req.ConnectionLimit, 0))
	_, err = conn.ExecContext(ctx, accountWait+"CREATE USER "+acct+" IDENTIFIED BY "+password+limit)
	if errNumber(err) == errCannotUser {
		// Ours from an earlier attempt: reset it to exactly this lease's state.
		if _, err := conn.ExecContext(ctx, accountWait+"ALTER USER "+acct+" IDENTIFIED BY "+password+limit+" ACCOUNT UNLOCK"); err != nil {
			return true, createWaited(fmt.Errorf("reset existing user: %w", err))
		}
		if _, err := conn.ExecContext(ctx, "REVOKE ALL PRIVILEGES, GRANT OPTION FROM "+acct); err != nil {
			return true, fmt.Errorf("revoke existing user's privileges: %w", err)
		}
	} else if err != nil {
		return true, createWaited(fmt.Errorf("create user: %w", err))
	}
	if _, err := d.mark(ctx, conn, req.RecordUID, acct); err != nil {
		return true, err
	}
	return true, applyGrants(ctx, conn, acct, specs)
}

// createWaited names what a create's account statement that accountWait stopped waited
// for: the lease fails within seconds, rather than at its deadline blaming the connection.
func createWaited(err error) error {
	if errNumber(err) != errStatementTimeout {
		return err
	}
	return events.Wrap(err, events.ETargetUnavailable, "Could not create the database user: "+accountWaitReason+" Try again once it is released.")
}

// applyGrants grants every spec to acct; the error is an ETargetUnverified *events.Error
// naming the grant, unless the target became unavailable.
func applyGrants(ctx context.Context, conn *sql.Conn, acct string, specs []grantSpec) error {
	for i, s := range specs {
		for _, stmt := range s.statements(acct) {
			if _, err := conn.ExecContext(ctx, stmt); err != nil {
				if unavailable(err) || userGone(err) {
					return fmt.Errorf("grant %d: %w", i+1, err)
				}
				return events.Wrap(err, events.ETargetUnverified,
					fmt.Sprintf("Cannot apply %s: %s.", s.describe(i), grantFailure(err)))
			}
		}
	}
	return nil
}

// RenewUser returns nil: MySQL and MariaDB have no database-side expiry for an account
// (MySQL's PASSWORD EXPIRE forces a password change, it does not refuse the login), so the
// lease's expiry is enforced by DropUser alone. It opens no connection.
func (d *Driver) RenewUser(ctx context.Context, req driver.RenewUserRequest) error {
	return nil
}

// DropUser locks the account (ACCOUNT LOCK refuses new logins), kills every session of
// the user listed in information_schema.PROCESSLIST and waits until none is left, drops
// the user, and kills once more any session that was still authenticating; the server's
// sweep (sweep.go) ends a session a DEFINER routine hid meanwhile. MySQL users own no
// objects, so nothing else blocks the drop. A user that does not exist is success (its
// leftover sessions, if any, are still killed). Safe for concurrent use.
func (d *Driver) DropUser(ctx context.Context, req driver.DropUserRequest) error {
	const op = "mysql.DropUser"
	acct, err := account(req.Username)
	if err != nil {
		return fail(op, err, events.EInternal, "The username is not a valid MySQL user name.", req.Conn.Password)
	}
	conn, err := d.connect(ctx, req.Conn)
	if err != nil {
		return fail(op, err, events.EInternal, "Could not connect to the target.", req.Conn.Password)
	}
	defer conn.Close()
	_, err = conn.ExecContext(ctx, accountWait+"ALTER USER "+acct+" ACCOUNT LOCK")
	if errNumber(err) == errStatementTimeout {
		return lockWaited(ctx, conn, req, err)
	}
	if err != nil && errNumber(err) != errCannotUser {
		return fail(op, fmt.Errorf("lock account: %w", err), events.EInternal, "Could not lock the database user.", req.Conn.Password)
	}
	if err := killSessions(ctx, conn, req.Username); err != nil {
		return fail(op, err, events.EInternal, "Could not end the database user's sessions.", req.Conn.Password)
	}
	// Not bounded like the lock: DROP USER rewrites the privilege tables (Aria, not
	// transactional) and must not be stopped halfway; by now the account is locked and
	// its sessions are ended, so a wait here leaves the user nothing to use.
	if _, err := conn.ExecContext(ctx, "DROP USER IF EXISTS "+acct); err != nil {
		return fail(op, fmt.Errorf("drop user: %w", err), events.EInternal, "Could not drop the database user.", req.Conn.Password)
	}
	d.sweepAfterDrop(req.Conn)
	if err := killSessions(ctx, conn, req.Username); err != nil {
		return fail(op, err, events.EInternal, "Could not end the database user's sessions.", req.Conn.Password)
	}
	return nil
}

// lockWaited answers a drop whose ACCOUNT LOCK accountWait stopped. The sessions are not
// the lock's to wait for: ending them now keeps the revoked user from working through a
// backup that may run for hours (it may log in again until the account can be locked).
// The code is ETargetUnavailable, as for a database that does not let a drop finish: the
// revocation's answer says it is recorded and retried. A failure to end the sessions is
// told, not wrapped, so that its own code does not replace the lock's.
func lockWaited(ctx context.Context, conn *sql.Conn, req driver.DropUserRequest, err error) error {
	sessions := " Its sessions were ended."
	if kerr := killSessions(ctx, conn, req.Username); kerr != nil {
		err = fmt.Errorf("%w; ending its sessions: %v", err, kerr)
		sessions = " Ending its sessions failed as well."
	}
	return fail("mysql.DropUser", fmt.Errorf("lock account: %w", err), events.ETargetUnavailable,
		"Could not lock the database user: "+accountWaitReason+sessions, req.Conn.Password)
}

// killSessions kills every session of user and returns once PROCESSLIST lists none but
// those it killed that are going: KILL only flags a thread, which then takes a moment to
// go, or as long as the rollback of its open transaction takes (a lease decides how
// large that is), listed as Killed meanwhile; such a thread runs nothing more. Killed
// alone proves nothing: MariaDB lists a session so once any KILL reached it, and a lease
// may send KILL QUERY to its own idle session, which stays open. A thread that ended in
// between (unknown thread) is fine. Any other failure of a KILL but a refusal is looked
// at again at the next listing, within the same budget: what counts is that the
// sessions go, and failing the whole drop on the first such error answers a revocation
// with an error for something the next round may settle.
func killSessions(ctx context.Context, conn *sql.Conn, user string) error {
	const attempts = 100
	var killErr error         // the last KILL that failed for another reason than a refusal
	sent := map[uint64]bool{} // sessions this call ended with KILL CONNECTION
	for i := 1; ; i++ {
		sessions, err := listSessions(ctx, conn, user)
		if err != nil {
			return err
		}
		var left []uint64
		for _, s := range sessions {
			if !sent[s.id] || !s.killed {
				left = append(left, s.id)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if i == attempts {
			if killErr != nil {
				return fmt.Errorf("kill sessions: %d still running: %w", len(left), killErr)
			}
			return fmt.Errorf("kill sessions: %d still running", len(left))
		}
		for _, id := range left {
			if sent[id] {
				continue // killed; not listed as such yet
			}
			ended, retry, err := killSession(ctx, conn, id)
			if err != nil {
				return err
			}
			if ended {
				sent[id] = true
			} else {
				killErr = retry
			}
		}
		if err := pause(ctx, 20*time.Millisecond); err != nil {
			return fmt.Errorf("kill sessions: %w", err)
		}
	}
}

// killSession sends KILL CONNECTION to session id. ended reports that the session is
// ending or gone; retry is a failure the caller may look at again; err is one no retry
// will mend (a refusal, an unreachable target).
func killSession(ctx context.Context, conn *sql.Conn, id uint64) (ended bool, retry, err error) {
	_, err = conn.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id))
	switch {
	case err == nil || errNumber(err) == errNoSuchThread:
		return true, nil, nil
	case errNumber(err) == errKillDenied || errNumber(err) == errSpecificAccess:
		return false, nil, events.Wrap(err, events.ETargetUnverified,
			"The admin may not kill other users' sessions: grant it CONNECTION ADMIN (MySQL 8: CONNECTION_ADMIN) or SUPER.")
	case unavailable(err):
		return false, nil, fmt.Errorf("kill session %d: %w", id, err)
	}
	return false, fmt.Errorf("kill session %d: %w", id, err), nil
}

// endSession ends session id and returns once PROCESSLIST no longer lists it: a KILL
// only flags a thread, which finishes or aborts the statement it runs before it goes.
func endSession(ctx context.Context, conn *sql.Conn, id uint64) error {
	if _, _, err := killSession(ctx, conn, id); err != nil {
		return err
	}
	for {
		var n int
		if err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", id).Scan(&n); err != nil {
			return fmt.Errorf("look for session %d: %w", id, err)
		}
		if n == 0 {
			return nil
		}
		if err := pause(ctx, 20*time.Millisecond); err != nil {
			return fmt.Errorf("wait for session %d to end: %w", id, err)
		}
	}
}

// session is a PROCESSLIST row: its id, and whether it is listed as Killed.
type session struct {
	id     uint64
	killed bool
}

// listSessions lists the sessions PROCESSLIST shows under user.
func listSessions(ctx context.Context, conn *sql.Conn, user string) ([]session, error) {
	rows, err := conn.QueryContext(ctx, "SELECT ID, COMMAND = 'Killed' FROM information_schema.PROCESSLIST WHERE USER = ?", user)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	defer rows.Close()
	var out []session
	for rows.Next() {
		var s session
		if err := rows.Scan(&s.id, &s.killed); err != nil {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return out, nil
}

func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

var _ driver.UserGranter = (*Driver)(nil)

// UpdateUser gives an existing user exactly req.Grants: all its privileges are revoked
// and the grants applied again, so that a target's narrowed grants reach a lease already
// active. The admin cannot read another account's privileges (that takes SELECT on the
// mysql database), so it cannot revoke only the difference: a statement the user runs in
// the millisecond between the two may be refused once. A user that does not exist is
// success.
func (d *Driver) UpdateUser(ctx context.Context, req driver.UpdateUserRequest) error {
	const op = "mysql.UpdateUser"
	acct, err := account(req.Username)
	if err != nil {
		return fail(op, err, events.EInternal, "The username is not a valid MySQL user name.", req.Conn.Password)
	}
	specs, err := parseGrants(req.Grants, req.Conn.Database)
	if err != nil {
		return fail(op, err, events.ETargetUnverified, "The target's grants are invalid: "+err.Error()+".", req.Conn.Password)
	}
	conn, err := d.connect(ctx, req.Conn)
	if err != nil {
		return fail(op, err, events.EInternal, "Could not connect to the target.", req.Conn.Password)
	}
	defer conn.Close()
	// Granting first also tells whether the user exists: GRANT to a missing user fails
	// (grantOnly: it never creates one). A user dropped at any step since is success too:
	// its revocation overtook the regrant. Not every failure says so (MariaDB's REVOKE
	// answers 1269, MySQL 8's GRANT of a role 3523, as for a missing role): a look-up of
	// the account decides those.
	dropped := func(err error) bool {
		if userGone(err) {
			return true
		}
		gone, lerr := missingAccounts(ctx, conn, []string{req.Username})
		return lerr == nil && len(gone) == 1
	}
	if err := applyGrants(ctx, conn, acct, specs); err != nil {
		if dropped(err) {
			return nil
		}
		return fail(op, err, events.EInternal, "Could not grant the database user its new privileges.", req.Conn.Password)
	}
	if _, err := conn.ExecContext(ctx, "REVOKE ALL PRIVILEGES, GRANT OPTION FROM "+acct); err != nil {
		if dropped(err) {
			return nil
		}
		return fail(op, fmt.Errorf("revoke: %w", err), events.EInternal, "Could not revoke what the target no longer grants.", req.Conn.Password)
	}
	if err := applyGrants(ctx, conn, acct, specs); err != nil {
		if dropped(err) {
			return nil
		}
		return fail(op, err, events.EInternal, "Could not grant the database user its new privileges.", req.Conn.Password)
	}
	// REVOKE ALL took the marker role too.
	if _, err := d.mark(ctx, conn, req.RecordUID, acct); err != nil {
		if dropped(err) {
			return nil
		}
		return fail(op, err, events.EInternal, "Could not mark the database user as its target's.", req.Conn.Password)
	}
	return nil
}

// userGone reports whether a GRANT failed because its user does not exist (dropped
// meanwhile): MariaDB's 1133, MySQL 8's 1410.
func userGone(err error) bool {
	n := errNumber(err)
	return n == errNoSuchUser || n == errCantCreateUser
}
