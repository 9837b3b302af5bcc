package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers"
)

// CreateUser creates req.Username as a LOGIN role with req.Password, VALID UNTIL
// req.ExpiresAt (infinity for the zero time), member of the target's group role, with
// the admin as its member WITH ADMIN OPTION: in PostgreSQL 15 a CREATEROLE admin is not
// otherwise a member of the roles it creates, and without membership it could neither end
// the user's sessions nor REASSIGN/DROP OWNED BY it. The user holds no privilege of its
// own; it inherits the group's.
//
// When the group is missing (Prepare never ran, or it was dropped) it is created from
// req.Grants first. When the user exists, it is taken to be this lease's from an earlier
// attempt: its password and expiry are set again, LOGIN restored and memberships ensured,
// and that is success. On any failure after the CREATE was sent the user is dropped again
// (with a context that outlives ctx), so no user of that name is left behind. Safe for
// concurrent use.
func (d *Driver) CreateUser(ctx context.Context, req workers.CreateUserRequest) error {
	err := workers.CreateOrUndo(ctx, d, req, d.logger, func() (bool, error) { return d.createUser(ctx, req) })
	if err == nil {
		return nil
	}
	return fail("postgres.CreateUser", err, events.EInternal, "Could not create the database user.", req.Conn.Password, req.Password)
}

// createUser does CreateUser's work; sent reports whether the CREATE ROLE went out, after
// which a user may exist however the call ended.
func (d *Driver) createUser(ctx context.Context, req workers.CreateUserRequest) (sent bool, err error) {
	group, err := groupName(req.RecordUID)
	if err != nil {
		return false, events.Wrap(err, events.EInternal, "The target's record uid cannot name a PostgreSQL role.")
	}
	if err := checkIdentifier(req.Username); err != nil {
		return false, events.Wrap(err, events.EInternal, "The username is not a valid PostgreSQL role name.")
	}
	password, err := passwordLiteral(req.Password)
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

	user, until := ident(req.Username), validUntil(req.ExpiresAt)
	create := fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s VALID UNTIL %s IN ROLE %s ADMIN CURRENT_USER",
		user, password, until, ident(group))
	_, err = conn.Exec(ctx, create)
	if sqlState(err) == stateUndefinedObject {
		// The only role the statement names besides the new one and the admin is the
		// group: it is missing (Prepare never ran, or it was dropped). Set it up from the
		// lease's grants and try once more. Not checking first saves a round trip on
		// every create.
		if err := d.ensureGroup(ctx, conn, req.Conn, group, specs, false); err != nil {
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
		again := fmt.Sprintf("ALTER ROLE %s LOGIN PASSWORD %s VALID UNTIL %s; GRANT %s TO %s; GRANT %s TO CURRENT_USER WITH ADMIN OPTION",
			user, password, until, ident(group), user, user)
		if _, err := conn.Exec(ctx, again); err != nil {
			return true, fmt.Errorf("reset existing role: %w", err)
		}
		return true, nil
	default:
		return true, fmt.Errorf("create role: %w", err)
	}
}

// RenewUser sets the user's VALID UNTIL to req.ExpiresAt (infinity for the zero time).
// Idempotent. A user that does not exist is an EInternal error: there is nothing to
// renew, and pretending otherwise would hide a lost user.
func (d *Driver) RenewUser(ctx context.Context, req workers.RenewUserRequest) error {
	const op = "postgres.RenewUser"
	if err := checkIdentifier(req.Username); err != nil {
		return fail(op, err, events.EInternal, "The username is not a valid PostgreSQL role name.", req.Conn.Password)
	}
	conn, err := d.acquire(ctx, req.Conn, req.Conn.Database)
	if err != nil {
		return fail(op, err, events.EInternal, "Could not connect to the target.", req.Conn.Password)
	}
	defer conn.Release()
	_, err = conn.Exec(ctx, "ALTER ROLE "+ident(req.Username)+" VALID UNTIL "+validUntil(req.ExpiresAt))
	if sqlState(err) == stateUndefinedObject {
		return fail(op, err, events.EInternal, "The database user does not exist on the target.", req.Conn.Password)
	}
	if err != nil {
		return fail(op, err, events.EInternal, "Could not renew the database user.", req.Conn.Password)
	}
	return nil
}

// DropUser makes the user unable to log in (NOLOGIN), terminates every backend it has,
// then, in each database where it may own objects or hold privileges (Conn.Database, the
// grants' databases and those pg_shdepend names), reassigns what it owns to the admin and
// drops what remains (REASSIGN OWNED, DROP OWNED), terminates again any backend that was
// still authenticating, and drops the role. Objects the user created are kept, owned by
// the admin.
//
// A user that does not exist is success. The sequence is retried a few times on the
// catalog conflicts PostgreSQL reports under concurrency (40P01, XX000, 55006). If a
// privilege granted to the user by a role other than the admin remains, the drop fails
// (2BP01): the admin cannot revoke it. Safe for concurrent use.
func (d *Driver) DropUser(ctx context.Context, req workers.DropUserRequest) error {
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
	if sqlState(err) == stateDependentObjs {
		return fail(op, err, events.EInternal,
			"Could not drop the database user: it holds privileges or objects the admin cannot remove.", req.Conn.Password)
	}
	if err != nil {
		return fail(op, err, events.EInternal, "Could not drop the database user.", req.Conn.Password)
	}
	return nil
}

// dropWithConn connects and runs the drop, retrying catalog conflicts.
func (d *Driver) dropWithConn(ctx context.Context, req workers.DropUserRequest) error {
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
func (d *Driver) dropOnce(ctx context.Context, conn *pgxpool.Conn, req workers.DropUserRequest) error {
	user := ident(req.Username)
	oid, ok, err := roleOID(ctx, conn, req.Username)
	if err != nil || !ok {
		return err
	}
	if _, err := conn.Exec(ctx, "ALTER ROLE "+user+" NOLOGIN"); err != nil {
		if sqlState(err) == stateUndefinedObject {
			return nil // dropped concurrently
		}
		return fmt.Errorf("refuse logins: %w", err)
	}
	if err := terminate(ctx, conn, oid); err != nil {
		return err
	}
	dbs, err := userDatabases(ctx, conn, oid, req)
	if err != nil {
		return err
	}
	for _, db := range dbs {
		err := d.inDatabase(ctx, req.Conn, db, conn, func(c *pgxpool.Conn) error {
			_, err := c.Exec(ctx, "REASSIGN OWNED BY "+user+" TO CURRENT_USER; DROP OWNED BY "+user)
			return err
		})
		switch sqlState(err) {
		case "":
			if err != nil {
				return fmt.Errorf("remove what the user owns in %q: %w", db, err)
			}
		case stateInvalidCatalog: // the database is gone, and what the user had there with it
		case stateUndefinedObject:
			return nil // dropped concurrently
		default:
			return fmt.Errorf("remove what the user owns in %q: %w", db, err)
		}
	}
	if err := terminate(ctx, conn, oid); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+user); err != nil {
		return fmt.Errorf("drop role: %w", err)
	}
	return nil
}

// userDatabases lists, c.Database first, the databases where the user may own objects or
// hold privileges: the target's, the grants', and every database pg_shdepend ties to it.
func userDatabases(ctx context.Context, conn *pgxpool.Conn, oid uint32, req workers.DropUserRequest) ([]string, error) {
	var others []string
	for _, g := range req.Grants {
		if g.Database != "" {
			others = append(others, g.Database)
		}
	}
	rows, err := conn.Query(ctx, `SELECT DISTINCT d.datname FROM pg_catalog.pg_shdepend s
		JOIN pg_catalog.pg_database d ON d.oid = s.dbid
		WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = $1`, oid)
	if err != nil {
		return nil, fmt.Errorf("list the user's databases: %w", err)
	}
	for rows.Next() {
		var db string
		if err := rows.Scan(&db); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list the user's databases: %w", err)
		}
		others = append(others, db)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list the user's databases: %w", err)
	}
	slices.Sort(others)
	others = slices.Compact(others)
	others = slices.DeleteFunc(others, func(db string) bool { return db == req.Conn.Database })
	return append([]string{req.Conn.Database}, others...), nil
}

// terminate ends every backend of the role and returns once none is left.
// pg_terminate_backend(pid, timeout) waits for each backend to exit; the loop covers a
// backend that was already gone (false with a warning) or still starting.
func terminate(ctx context.Context, conn *pgxpool.Conn, oid uint32) error {
	const attempts = 20
	// MATERIALIZED so the volatile pg_terminate_backend is only ever called on the role's
	// own backends, whatever order the planner picks for the quals.
	const query = `WITH s AS MATERIALIZED (
		SELECT pid FROM pg_catalog.pg_stat_activity WHERE usesysid = $1)
		SELECT count(*) FILTER (WHERE NOT pg_catalog.pg_terminate_backend(pid, $2)) FROM s`
	for i := 1; ; i++ {
		var left int
		if err := conn.QueryRow(ctx, query, oid, int64(terminateWaitMillis)).Scan(&left); err != nil {
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
