package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
)

// CreateUser creates req.Username as a LOGIN role with req.Password, VALID UNTIL
// req.ExpiresAt (infinity for the zero time), member of the target's group role. The
// user holds no privilege of its own; it inherits the group's. What it creates is its own
// until its lease ends, when the drop hands it to the group, which later leases of the
// target are members of too, never to the admin; a session that runs SET ROLE to the group
// first creates objects the group owns from the start.
//
// The user's sessions are not made to start as the group (ALTER ROLE ... SET role): that
// is a pg_db_role_setting row per user, and DROP ROLE reads that catalog whole (its
// DropSetting uses no index), so every revocation would cost in proportion to the number
// of active leases (on PostgreSQL 15 here, a DROP ROLE among 98,000 users took 2.5 ms with
// their settings and 1.3 ms without).
//
// The admin does not become a member of the user: a CREATEROLE admin needs no membership
// to create, alter or drop it, nor (with pg_signal_backend) to end its sessions, and on
// PostgreSQL 15 every membership the admin holds makes its privilege checks slower (the
// list is rebuilt, quadratically in its size, after each role change), which at tens of
// thousands of leases made every revocation take seconds.
//
// When the group is missing (Prepare never ran, or it was dropped) it is created from
// req.Grants first. When the user exists, it is taken to be this lease's from an earlier
// attempt: its password and expiry are set again, LOGIN restored and memberships ensured,
// and that is success. On any failure after the CREATE was sent the user is dropped again
// (with a context that outlives ctx), so no user of that name is left behind. Safe for
// concurrent use.
func (d *Driver) CreateUser(ctx context.Context, req driver.CreateUserRequest) error {
	err := driver.CreateOrUndo(ctx, d, req, d.logger, func() (bool, error) {
		sent, err := d.createUser(ctx, req)
		if !sent && connectionLost(err) {
			// A pooled connection the server or the network closed since (a restart of
			// the database): once more on a fresh one.
			return d.createUser(ctx, req)
		}
		return sent, err
	})
	return fail("postgres.CreateUser", err, events.EInternal, "Could not create the database user.", req.Conn.Password, req.Password)
}

// createUser does CreateUser's work; sent reports whether the CREATE ROLE went out, after
// which a user may exist however the call ended.
func (d *Driver) createUser(ctx context.Context, req driver.CreateUserRequest) (sent bool, err error) {
	group, err := groupName(req.RecordUID)
	if err != nil {
		return false, events.Wrap(err, events.EInternal, "The target's record uid cannot name a PostgreSQL role.")
	}
	if err := checkIdentifier(req.Username); err != nil {
		return false, events.Wrap(err, events.EInternal, "The username is not a valid PostgreSQL role name.")
	}
	password, err := passwordLiteral(req.Password, req.PasswordVerifier)
	if err != nil {
		return false, events.Wrap(err, events.EInternal, "The password cannot be stored in PostgreSQL.")
	}
	specs, err := parseGrants(req.Grants, req.Conn.Database)
	if err != nil {
		return false, events.Wrap(err, events.EInternal, "The lease's grants are invalid: "+err.Error()+".")
	}
	conn, err := d.acquire(ctx, req.Conn, req.Conn.Database)
	if err != nil {
		return false, err
	}
	defer conn.Release()
	// A statement sent and never answered (the connection cut, the call given up) may
	// still be running in its backend, which notices a closed connection only when it
	// next talks to it: a CREATE waiting on a lock commits after the undo's DROP found no
	// user to drop, and the user is left behind. So the backend is ended first, and the
	// undo comes after it is gone.
	pid := conn.Conn().PgConn().PID()
	defer func() {
		if sent && err != nil && sqlState(err) == "" {
			if serr := d.endBackend(context.WithoutCancel(ctx), req.Conn, pid); serr != nil {
				d.logger.Warn("could not end the admin session of an unanswered create", "user", req.Username, "pid", pid,
					"error", driver.Scrub(serr, req.Conn.Password, req.Password).Error())
			}
		}
	}()

	user, until, limit := ident(req.Username), validUntil(req.ExpiresAt), connectionLimit(req.ConnectionLimit)
	create := fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s VALID UNTIL %s CONNECTION LIMIT %d IN ROLE %s", user, password, until, limit, ident(group))
	_, err = conn.Exec(ctx, create)
	if err != nil && pgconn.SafeToRetry(err) {
		// pgx calls "conn closed" safe to retry both when a pooled connection was found
		// dead (a database restart: nothing was sent) and when the connection broke while
		// the answer was awaited (the statement went out and may still be running). Only
		// once that backend is gone is a second CREATE on a fresh connection safe; if it
		// cannot be ended, the outcome is unknown and the create is undone instead.
		if errors.Is(err, pgconn.ErrConnClosed) {
			if eerr := d.endBackend(context.WithoutCancel(ctx), req.Conn, pid); eerr != nil {
				return true, fmt.Errorf("create role: %w", err)
			}
		}
		return false, fmt.Errorf("create role: %w", err) // nothing is running any more: safe to try again
	}
	if sqlState(err) == stateUndefinedObject {
		// The only role the statement names besides the new one and the admin is the
		// group: it is missing (Prepare never ran, or it was dropped). Set it up from the
		// lease's grants and try once more. Not checking first saves a round trip on
		// every create.
		if _, err := d.ensureGroup(ctx, conn, req.Conn, group, specs, false); err != nil {
			return false, err
		}
		_, err = conn.Exec(ctx, create)
	}
	switch sqlState(err) {
	case "":
		if err != nil {
			return true, fmt.Errorf("create role: %w", err)
		}
		return true, nil
	case stateDuplicateObject, stateUniqueViolation:
		// Ours from an earlier attempt: set it up again in one implicit transaction.
		again := fmt.Sprintf("ALTER ROLE %s LOGIN PASSWORD %s VALID UNTIL %s CONNECTION LIMIT %d; GRANT %s TO %s",
			user, password, until, limit, ident(group), user)
		if _, err := conn.Exec(ctx, again); err != nil {
			return true, fmt.Errorf("reset existing role: %w", err)
		}
		return true, nil
	default:
		return true, fmt.Errorf("create role: %w", err)
	}
}

// endBackend terminates the admin's backend pid, on a connection of its own, and waits
// (up to driver.UndoTimeout) until it is gone. A role may always signal its own
// backends. A backend that is gone already is success.
func (d *Driver) endBackend(ctx context.Context, c driver.Conn, pid uint32) error {
	ctx, cancel := context.WithTimeout(ctx, driver.UndoTimeout)
	defer cancel()
	conn, err := d.acquire(ctx, c, c.Database)
	if err != nil {
		return err
	}
	defer conn.Release()
	for delay := 5 * time.Millisecond; ; delay = min(2*delay, 200*time.Millisecond) {
		var alive bool
		// Only a session of the admin's and SyVault's: once the backend is gone, its pid
		// may be another's.
		err := conn.QueryRow(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE pid = $1 AND usename = CURRENT_USER AND application_name = 'syvault'`, int64(pid)).Scan(&alive)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("end backend %d: %w", pid, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("end backend %d: still there: %w", pid, ctx.Err())
		case <-time.After(delay): // the backend exits shortly after the signal
		}
	}
}

// RenewUser sets the user's VALID UNTIL to req.ExpiresAt (infinity for the zero time).
// Idempotent. A user that does not exist is an EInternal error: there is nothing to
// renew, and pretending otherwise would hide a lost user.
func (d *Driver) RenewUser(ctx context.Context, req driver.RenewUserRequest) error {
	const op = "postgres.RenewUser"
	if err := checkIdentifier(req.Username); err != nil {
		return fail(op, err, events.EInternal, "The username is not a valid PostgreSQL role name.", req.Conn.Password)
	}
	// Renewals of one lease handled at once update the same catalog row, and PostgreSQL
	// fails one of two such updates ("tuple concurrently updated") rather than make one
	// wait. A process's own take turns (before a connection, which a wait would hold),
	// so only other processes' (and a drop's) can conflict, which the retry takes. (An
	// advisory lock would order the processes too, but any session of the database may
	// take one: a lease user could hold another lease's renewals off.)
	release, err := d.renewals.Take(ctx, req.Username)
	if err != nil {
		return fail(op, err, events.ETimeout, "Could not renew the database user: the renewal ended (its deadline, or a shutdown) while another renewal of it ran.", req.Conn.Password)
	}
	defer release()
	conn, err := d.acquire(ctx, req.Conn, req.Conn.Database)
	if err != nil {
		return fail(op, err, events.EInternal, "Could not connect to the target.", req.Conn.Password)
	}
	defer conn.Release()
	err = retry(ctx, func() error {
		_, err := conn.Exec(ctx, lockTimeout+"ALTER ROLE "+ident(req.Username)+" VALID UNTIL "+validUntil(req.ExpiresAt))
		return err
	})
	switch sqlState(err) {
	case stateUndefinedObject:
		return fail(op, err, events.EInternal, "The database user does not exist on the target.", req.Conn.Password)
	case stateLockNotAvail:
		return fail(op, err, events.EInternal,
			"Could not renew the database user: a transaction of its own that changed its password holds it; commit or roll it back.", req.Conn.Password)
	}
	if err != nil {
		return fail(op, err, events.EInternal, "Could not renew the database user.", req.Conn.Password)
	}
	return nil
}

// DropUser terminates every backend the user has, makes it unable to log in (NOLOGIN),
// rolls back its prepared transactions, hands whatever it owns to the target's group role
// and drops what remains of it (REASSIGN OWNED, DROP OWNED, only in the databases
// pg_shdepend ties it to, and only when it owns or is granted anything), terminates again
// any backend that was still authenticating, and drops the role. No wait for a lock
// lasts more than a few seconds (lockTimeout). Objects the user created are kept, owned
// by the group, so later leases of the target can use them; none ever becomes the
// admin's, which would make a SECURITY DEFINER function a lease planted run as the admin.
//
// The admin takes membership in the user only for the REASSIGN/DROP OWNED it needs it
// for, and the membership goes with the role. A user that does not exist is success. The
// sequence is retried a few times on the catalog conflicts PostgreSQL reports under
// concurrency (40P01, XX000, 55006). Safe for concurrent use.
func (d *Driver) DropUser(ctx context.Context, req driver.DropUserRequest) error {
	const op = "postgres.DropUser"
	if err := checkIdentifier(req.Username); err != nil {
		return fail(op, err, events.EInternal, "The username is not a valid PostgreSQL role name.", req.Conn.Password)
	}
	// A pooled connection the server has since closed (a restart, a dropped database)
	// fails on first use: then the drop is tried once more on a fresh one.
	err := d.dropWithConn(ctx, req)
	if connectionLost(err) {
		err = d.dropWithConn(ctx, req)
	}
	switch sqlState(err) {
	case stateDependentObjs:
		return fail(op, err, events.EInternal,
			"Could not drop the database user: it holds privileges or objects the admin cannot remove.", req.Conn.Password)
	case stateLockNotAvail:
		return fail(op, err, events.EInternal,
			"Could not drop the database user: another session holds a lock on something it owns; the revocation is retried.", req.Conn.Password)
	}
	if err != nil {
		return fail(op, err, events.EInternal, "Could not drop the database user.", req.Conn.Password)
	}
	return nil
}

// dropWithConn connects and runs the drop, retrying catalog conflicts.
func (d *Driver) dropWithConn(ctx context.Context, req driver.DropUserRequest) error {
	conn, err := d.acquire(ctx, req.Conn, req.Conn.Database)
	if sqlState(err) == stateInvalidCatalog {
		// The target's database is gone, but roles are cluster-wide and the user could
		// still log in elsewhere: drop it from the maintenance database.
		conn, err = d.acquire(ctx, req.Conn, maintenanceDB)
	}
	if err != nil {
		return err
	}
	defer conn.Release()
	return retry(ctx, func() error { return d.dropOnce(ctx, conn, req) })
}

// dropOnce is one attempt of DropUser; every step is idempotent so a retry may repeat it.
// Two round trips in the common case, each one implicit transaction: the first ends the
// sessions there are, refuses logins and learns where the user owns or was granted
// anything or left a prepared transaction; the second ends any session that began
// meanwhile (a login already past its check when the first committed) and drops the role.
func (d *Driver) dropOnce(ctx context.Context, conn *pgxpool.Conn, req driver.DropUserRequest) error {
	user := ident(req.Username)
	name, err := quoteLiteral(req.Username)
	if err != nil {
		return err
	}
	// The sessions end before NOLOGIN: a session that changed its own password in a
	// transaction it keeps open holds the role's row, and NOLOGIN would wait for it.
	first := lockTimeout + fmt.Sprintf(sessionsAndDependents, name, terminateWaitMillis) + "; ALTER ROLE " + user + " NOLOGIN"
	res, err := exec(ctx, conn, first)
	if sqlState(err) == stateLockNotAvail {
		// With its sessions gone, what holds the row is a prepared transaction the user
		// left (ALTER ROLE CURRENT_USER PASSWORD, then PREPARE TRANSACTION, as itself or
		// after SET ROLE to its group).
		if n, perr := d.rollbackPrepared(ctx, conn, req); perr != nil {
			return errors.Join(err, perr)
		} else if n > 0 {
			res, err = exec(ctx, conn, first)
		}
	}
	switch {
	case sqlState(err) == stateUndefinedObject:
		return nil // gone already, or dropped concurrently
	case err != nil:
		return fmt.Errorf("end sessions and refuse logins: %w", err)
	case len(res) != 3 || len(res[1].Rows) != 1:
		return nil // no such role between the two statements
	}
	row := res[1].Rows[0]
	oid64, err := strconv.ParseUint(string(row[0]), 10, 32)
	if err != nil {
		return fmt.Errorf("read the role's oid: %w", err)
	}
	oid := uint32(oid64)
	var dbs []string
	if err := json.Unmarshal(row[2], &dbs); err != nil {
		return fmt.Errorf("read the user's databases: %w", err)
	}
	if string(row[1]) != "0" {
		if err := terminate(ctx, conn, oid); err != nil {
			return err
		}
	}
	if dbs = homeFirst(dbs, conn.Conn().Config().Database); len(dbs) > 0 {
		if err := d.disown(ctx, conn, req, oid, dbs); err != nil {
			return err
		}
	}
	res, err = exec(ctx, conn, lockTimeout+fmt.Sprintf(terminateSessions, oid, terminateWaitMillis)+"; DROP ROLE IF EXISTS "+user)
	if err != nil {
		return fmt.Errorf("drop role: %w", err)
	}
	if len(res) > 1 && len(res[1].Rows) == 1 && string(res[1].Rows[0][0]) != "0" {
		// A backend slow to exit outlived the drop: wait for it, so a revocation only
		// ends once every session has.
		return terminate(ctx, conn, oid)
	}
	return nil
}

// sessionsAndDependents, given the role's name as a literal and the wait for each backend,
// answers the role's oid, how many of its backends did not exit when told to, and the
// databases (a JSON array) where it owns objects, is named in a privilege or has a
// prepared transaction, "" for a dependency on a shared object. MATERIALIZED so the
// volatile pg_terminate_backend is only ever called on the role's own backends, whatever
// order the planner picks for the quals.
const sessionsAndDependents = `WITH r AS MATERIALIZED (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %s),
	s AS MATERIALIZED (SELECT a.pid FROM pg_catalog.pg_stat_activity a, r WHERE a.usesysid = r.oid)
	SELECT r.oid,
		(SELECT pg_catalog.count(*) FILTER (WHERE NOT pg_catalog.pg_terminate_backend(s.pid, %d)) FROM s),
		` + dependentDatabases + `
	FROM r`

// dependentDatabases is the JSON array of the databases where role r owns objects, is
// named in a privilege or has a prepared transaction.
const dependentDatabases = `pg_catalog.array_to_json(ARRAY(SELECT COALESCE(d.datname, '') FROM pg_catalog.pg_shdepend sd
			LEFT JOIN pg_catalog.pg_database d ON d.oid = sd.dbid
			WHERE sd.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass AND sd.refobjid = r.oid
		UNION SELECT p.database FROM pg_catalog.pg_prepared_xacts p WHERE p.owner = pg_catalog.pg_get_userbyid(r.oid)))`

// terminateSessions, given a role's oid and the wait for each backend, ends its backends
// and answers how many did not exit in time.
const terminateSessions = `WITH s AS MATERIALIZED (
		SELECT a.pid FROM pg_catalog.pg_stat_activity a WHERE a.usesysid = %d)
		SELECT pg_catalog.count(*) FILTER (WHERE NOT pg_catalog.pg_terminate_backend(s.pid, %d)) FROM s`

// disown rolls back the user's prepared transactions, hands what the user owns in dbs to
// the target's group role and drops what is left of it (privileges granted to it). The
// group is the one the user is a member of (the request's record uid names it when the
// membership is gone); a group that no longer exists is made again, holding nothing:
// whatever a lease user made must have an owner that can log in as nobody and holds no
// more than the target's grants.
func (d *Driver) disown(ctx context.Context, conn *pgxpool.Conn, req driver.DropUserRequest, oid uint32, dbs []string) error {
	if _, err := d.rollbackPrepared(ctx, conn, req); err != nil {
		return err
	}
	group, err := userGroup(ctx, conn, oid, req.RecordUID)
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "CREATE ROLE "+ident(group)+" NOLOGIN"); err != nil && sqlState(err) != stateDuplicateObject && sqlState(err) != stateUniqueViolation {
		return fmt.Errorf("make the group role to own what the user created: %w", err)
	}
	user := ident(req.Username)
	if err := joinGroup(ctx, conn, group); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "GRANT "+user+" TO CURRENT_USER"); err != nil {
		switch sqlState(err) {
		case stateUndefinedObject:
			return nil // dropped concurrently
		case stateUniqueViolation:
			// Another drop of the same user (an admin's forced attempt beside the
			// worker's) granted the membership at the same moment: it is held.
		default:
			return fmt.Errorf("take membership in the user to reassign what it owns: %w", err)
		}
	}
	var shared sharers
	defer shared.leave(ctx, conn, d.logger)
	if err := shared.join(ctx, conn, sharedPrivileges, oid); err != nil {
		return err
	}
	for _, db := range dbs {
		err := d.inDatabase(ctx, req.Conn, db, conn, func(c *pgxpool.Conn) error {
			if err := shared.join(ctx, c, sharedPolicies, oid); err != nil {
				return err
			}
			handOver := "REASSIGN OWNED BY " + user + " TO " + ident(group) + "; DROP OWNED BY " + user
			_, err := c.Exec(ctx, lockTimeout+handOver)
			if sqlState(err) == stateInsufficient {
				err = handOverLendingCreate(ctx, c, group, handOver)
			}
			return err
		})
		switch sqlState(err) {
		case "":
			if err != nil {
				return fmt.Errorf("hand over what the user owns in %q: %w", db, err)
			}
		case stateInvalidCatalog: // the database is gone, and what the user had there with it
		case stateUndefinedObject:
			return nil // dropped concurrently
		default:
			return fmt.Errorf("hand over what the user owns in %q: %w", db, err)
		}
	}
	return nil
}

// sharers are the roles the admin took membership in for one drop, to take back what
// they shared with the user. Only the grantor may take a grant back, and only a table's
// owner may take a role out of its policy, so DROP OWNED, acting as the admin, left such
// a privilege or policy in place and DROP ROLE failed for as long as the sharing lease
// lived, and for good when another admin's target made it (its objects, and its grants
// with them, pass to a group that admin is not a member of). As a member of the owner,
// the admin acts as the owner. Only roles SyVault made, lease users and target groups:
// the admin takes no membership in an application's roles. The memberships are let go
// (leave) as the drop ends.
type sharers struct{ joined []string }

// joinable is true when c.relowner is a role SyVault made (a lease user or a target's
// group) that the admin is not a member of yet.
const joinable = `(` + leaseUserOwns + ` OR ` + groupOwns + `) AND NOT pg_catalog.pg_has_role(CURRENT_USER, c.relowner, 'USAGE')`

// sharedPrivileges lists, given the user's oid, the owners of objects on which the user
// holds a privilege or a default privilege: the ACL dependencies pg_shdepend records,
// joined to the owner dependency of the same object.
const sharedPrivileges = `SELECT DISTINCT pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(c.relowner)) FROM (
		SELECT w.refobjid FROM pg_catalog.pg_shdepend a JOIN pg_catalog.pg_shdepend w
			ON w.dbid = a.dbid AND w.classid = a.classid AND w.objid = a.objid AND w.deptype = 'o'
		WHERE a.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass AND a.refobjid = $1 AND a.deptype = 'a'
			AND w.refobjid <> $1) AS c(relowner)
	WHERE ` + joinable

// sharedPolicies lists, given the user's oid, the owners of the tables of the current
// database whose row-security policies name the user: a policy has no owner of its own.
const sharedPolicies = `SELECT DISTINCT pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(c.relowner))
	FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
	WHERE $1::pg_catalog.oid = ANY (p.polroles) AND c.relowner <> $1 AND ` + joinable

// join takes membership in the owners query lists for the user oid, on conn.
func (s *sharers) join(ctx context.Context, conn *pgxpool.Conn, query string, oid uint32) error {
	rows, err := conn.Query(ctx, query, oid)
	if err != nil {
		return fmt.Errorf("find the roles that shared with the user: %w", err)
	}
	owners, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("find the roles that shared with the user: %w", err)
	}
	for _, o := range owners {
		if slices.Contains(s.joined, o) {
			continue
		}
		_, err := conn.Exec(ctx, "GRANT "+o+" TO CURRENT_USER")
		switch sqlState(err) {
		case "":
			if err != nil {
				return fmt.Errorf("take membership in %s to take back what it shared with the user: %w", o, err)
			}
			s.joined = append(s.joined, o)
		case stateUndefinedObject:
			// That lease ended meanwhile, and what it shared passed to its group.
		case stateUniqueViolation:
			// Another drop took the same membership at the same moment; it lets it go
			// when it ends, and a DROP ROLE that fails then is retried.
		case stateInsufficient:
			// PostgreSQL 16 lets an admin take membership only in roles it made: the
			// DROP ROLE fails saying what holds it, and is retried.
		default:
			return fmt.Errorf("take membership in %s to take back what it shared with the user: %w", o, err)
		}
	}
	return nil
}

// leave ends the memberships join took, however the drop went. One that cannot be
// ended is logged and left: the admin gains by it only what it could have taken.
func (s *sharers) leave(ctx context.Context, conn *pgxpool.Conn, logger *slog.Logger) {
	if len(s.joined) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), driver.UndoTimeout)
	defer cancel()
	for _, o := range s.joined {
		if _, err := conn.Exec(ctx, "REVOKE "+o+" FROM CURRENT_USER"); err != nil && sqlState(err) != stateUndefinedObject {
			logger.WarnContext(ctx, "the admin kept a membership it took to revoke what a role shared with a lease user; end it with REVOKE "+o+" FROM <admin>",
				"role", o, "error", err.Error())
		}
	}
}

// handOverLendingCreate runs handOver (REASSIGN OWNED to the group, DROP OWNED) with
// CREATE lent to the group, in the same transaction, on each schema where it lacks it and
// the admin may grant it. PostgreSQL gives an object other than a table only to an owner
// that may create in its schema, and a PUT may have taken CREATE from the group after a
// lease made a function or a type with it: without the loan its revocation would fail at
// every attempt. No other session ever sees the loan.
func handOverLendingCreate(ctx context.Context, c *pgxpool.Conn, group, handOver string) error {
	rows, err := c.Query(ctx, `SELECT n.nspname FROM pg_catalog.pg_namespace n
		WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
			AND NOT pg_catalog.has_schema_privilege($1, n.oid, 'CREATE')
			AND pg_catalog.has_schema_privilege(CURRENT_USER, n.oid, 'CREATE WITH GRANT OPTION')`, group)
	if err != nil {
		return fmt.Errorf("find the schemas the group may not create in: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("find the schemas the group may not create in: %w", err)
	}
	if len(names) == 0 {
		return errors.New("the group may create in no schema the admin could lend it CREATE on")
	}
	schemas := make([]string, len(names))
	for i, n := range names {
		schemas[i] = ident(n)
	}
	list := strings.Join(schemas, ", ")
	_, err = c.Exec(ctx, lockTimeout+"GRANT CREATE ON SCHEMA "+list+" TO "+ident(group)+"; "+handOver+
		"; REVOKE CREATE ON SCHEMA "+list+" FROM "+ident(group))
	return err
}

// rollbackPrepared rolls back the user's prepared transactions, in each database where
// one was prepared, and returns how many it found. A prepared transaction outlives the
// sessions a revocation ends, keeps its locks (the user's role row, tables it owns, rows
// it wrote) and could be committed later; rolling it back is what ending a session does
// to an open transaction. PostgreSQL lets only its owner or a superuser end it, so the
// admin takes membership in the user (it goes with the role) and acts as the user.
//
// PostgreSQL records as the owner whoever the session was at PREPARE, so a user that
// ran SET ROLE to the target's group first leaves one owned by the group. Of those, the
// ones holding a lock on pg_authid (they changed a role: the user's own password, which
// holds its row against NOLOGIN and DROP ROLE) are rolled back too; an application's
// transaction has no business there. Others of the group's are left: they may be
// another lease's.
func (d *Driver) rollbackPrepared(ctx context.Context, conn *pgxpool.Conn, req driver.DropUserRequest) (int, error) {
	type prepared struct{ Database, GID, Owner string }
	var all []prepared
	rows, err := conn.Query(ctx, userPrepared, req.Username, groupPrefix)
	if err == nil {
		all, err = pgx.CollectRows(rows, pgx.RowToStructByPos[prepared])
	}
	switch {
	case sqlState(err) == stateUndefinedObject:
		return 0, nil // dropped concurrently
	case err != nil:
		return 0, fmt.Errorf("list the user's prepared transactions: %w", err)
	case len(all) == 0:
		return 0, nil
	}
	joined := map[string]bool{}
	for _, p := range all {
		if joined[p.Owner] {
			continue
		}
		// The membership in the user goes with the role; the group's the admin holds
		// already (joinGroup), and granting it again only warns.
		if _, err := conn.Exec(ctx, lockTimeout+"GRANT "+ident(p.Owner)+" TO CURRENT_USER"); err != nil {
			return 0, fmt.Errorf("take membership in %q to end its prepared transactions: %w", p.Owner, err)
		}
		joined[p.Owner] = true
	}
	for _, p := range all {
		gid, err := quoteLiteral(p.GID)
		if err != nil {
			return 0, err
		}
		err = d.inDatabase(ctx, req.Conn, p.Database, conn, func(c *pgxpool.Conn) error {
			if _, err := c.Exec(ctx, "SET ROLE "+ident(p.Owner)); err != nil {
				return err
			}
			_, err := c.Exec(ctx, "ROLLBACK PREPARED "+gid)
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), driver.ConnectTimeout)
			defer cancel()
			if _, rerr := c.Exec(rctx, "RESET ROLE"); rerr != nil {
				// A connection left acting as the user must not go back to the pool.
				_ = c.Conn().Close(rctx)
				return errors.Join(err, rerr)
			}
			return err
		})
		// A database or a transaction that is gone has nothing left to roll back.
		if state := sqlState(err); err != nil && state != stateInvalidCatalog && state != stateUndefinedObject {
			return 0, fmt.Errorf("roll back the user's prepared transaction in %q: %w", p.Database, err)
		}
	}
	return len(all), nil
}

// userPrepared lists, given a user's name and the group prefix, the database, gid and
// owner of the user's prepared transactions, and of those its group's that hold a lock
// on pg_authid. A prepared transaction's locks are those pg_locks shows with no pid under
// the virtual transaction that holds its xid.
const userPrepared = `SELECT p.database, p.gid, p.owner FROM pg_catalog.pg_prepared_xacts p
	WHERE p.owner = $1
		OR (pg_catalog.starts_with(p.owner, $2) AND pg_catalog.pg_has_role($1, p.owner, 'MEMBER')
			AND EXISTS (SELECT FROM pg_catalog.pg_locks x JOIN pg_catalog.pg_locks l ON l.virtualtransaction = x.virtualtransaction
				WHERE x.locktype = 'transactionid' AND x.transactionid = p.transaction AND x.pid IS NULL AND l.pid IS NULL
					AND l.locktype = 'relation' AND l.relation = 'pg_catalog.pg_authid'::pg_catalog.regclass))`

// userGroup returns the group role of a lease user: the syvault_ role it is a member of,
// or, without one, the group of recordUID.
func userGroup(ctx context.Context, q querier, user uint32, recordUID string) (string, error) {
	rows, err := q.Query(ctx, `SELECT g.rolname FROM pg_catalog.pg_auth_members m
		JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
		WHERE m.member = $1 AND pg_catalog.starts_with(g.rolname, $2)`, user, groupPrefix)
	if err != nil {
		return "", fmt.Errorf("find the user's group role: %w", err)
	}
	groups, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("find the user's group role: %w", err)
	}
	if len(groups) == 1 {
		return groups[0], nil
	}
	if recordUID != "" {
		return groupName(recordUID)
	}
	return "", fmt.Errorf("the user is a member of %d group roles and the request names no target", len(groups))
}

// homeFirst normalises the databases where a user owns objects or is named in a
// privilege: home stands for a dependency on a shared object ("", e.g. a privilege on a
// database) and comes first when it is one of them. Empty for a user that never created
// or was granted anything, which is the common case and needs no REASSIGN/DROP OWNED.
func homeFirst(dbs []string, home string) []string {
	for i, db := range dbs {
		if db == "" {
			dbs[i] = home
		}
	}
	slices.Sort(dbs)
	dbs = slices.Compact(dbs)
	if i := slices.Index(dbs, home); i > 0 {
		dbs[0], dbs[i] = dbs[i], dbs[0]
	}
	return dbs
}

// terminate ends every backend of the role and returns once none is left.
// pg_terminate_backend(pid, timeout) waits for each backend to exit; the loop covers a
// backend that was already gone (false with a warning) or still starting.
func terminate(ctx context.Context, conn *pgxpool.Conn, oid uint32) error {
	const attempts = 20
	query := fmt.Sprintf(terminateSessions, oid, terminateWaitMillis)
	for i := 1; ; i++ {
		var left int
		if err := conn.QueryRow(ctx, query).Scan(&left); err != nil {
			return fmt.Errorf("terminate sessions: %w", err)
		}
		if left == 0 {
			return nil
		}
		if i == attempts {
			return errors.New("terminate sessions: backends still running")
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("terminate sessions: %w", ctx.Err())
		case <-t.C:
		}
	}
}
