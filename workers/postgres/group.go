package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
)

// Prepare verifies that the admin may create roles (superuser or CREATEROLE) and end other
// roles' sessions (superuser or pg_signal_backend), creates the target's group role
// syvault_<RecordUID> if it is missing, makes the admin a member of it, and sets its
// privileges to exactly req.Grants: in each database involved, in one transaction, every
// privilege the group holds on an object it does not own is revoked and the grants are
// applied again (CONNECT on the database, USAGE and optionally CREATE on the schema, the
// privileges on the listed tables, or on all tables of the schema plus default privileges
// for tables the admin creates later). A narrowed target therefore takes effect at once
// for every lease, active or new, since they hold nothing but the group's privileges.
// Each grant is then checked with has_*_privilege, because GRANT only warns when the admin
// lacks the grant option. Idempotent and safe for concurrent use.
//
// The admin's membership in the group (one per target, not per lease) is what lets a
// revocation hand objects a lease user created to the group rather than to the admin.
//
// A missing right or a grant that cannot be applied fails with ETargetUnverified and a
// message naming it; so does an unreachable target or a refused admin login, with a
// message saying what to check.
func (d *Driver) Prepare(ctx context.Context, req driver.PrepareRequest) error {
	const op = "postgres.Prepare"
	secret := req.Conn.Password
	group, err := groupName(req.RecordUID)
	if err != nil {
		return fail(op, err, events.EInternal, "The target's record uid cannot name a PostgreSQL role.", secret)
	}
	specs, err := parseGrants(req.Grants, req.Conn.Database)
	if err != nil {
		return fail(op, err, events.ETargetUnverified, "The target's grants are invalid: "+err.Error()+".", secret)
	}
	created, cut, err := d.prepare(ctx, req.Conn, group, specs)
	if err != nil {
		// One deadline for the whole clean-up, which outlives ctx: a cancelled
		// registration must not leave the group either.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), driver.UndoTimeout)
		defer cancel()
		// A statement whose answer was cut off may still be running in its session (pgx
		// sends no cancel), and would commit after the undo, or an update's set-back,
		// looked: a CREATE ROLE would stay, a GRANT add what no record names. Those
		// sessions end first.
		var applied appliedError
		partly := errors.As(err, &applied)
		for _, pid := range append(applied.cut, cut) {
			if pid == 0 {
				continue
			}
			if eerr := d.endBackend(uctx, req.Conn, pid); eerr != nil {
				d.logger.WarnContext(ctx, "could not end the admin session of a cancelled change of the target", "pid", pid,
					"error", driver.Scrub(eerr, secret).Error())
			}
		}
		if created && req.New {
			d.undoGroup(uctx, req)
		}
		// An update that made the group again (it had gone) changed the database too.
		if partly || created && !req.New {
			return driver.PartlyApplied(failVerify(op, err, req.Conn))
		}
		return failVerify(op, err, req.Conn)
	}
	d.logger.DebugContext(ctx, "target prepared", "group", group, "grants", len(specs))
	if req.Advise != nil {
		d.advise(ctx, req, specs)
	}
	return nil
}

// advise tells req.Advise of each database where every role may create objects in a
// schema (PUBLIC's CREATE: PostgreSQL 14's default on public, which clusters upgraded from
// it keep), among the target's own database, those its grants name, and template1, which
// the databases made later copy. There a lease user can leave what no grant names, a
// function or operator shadowing a built-in one for the roles that search the schema
// first, and at revocation it is the group's, not gone. It never refuses the target; a
// database it could not look at is advised too, so that no advice never reads as a clean
// bill when the look failed (a pooler or pg_hba.conf admitting the admin elsewhere only).
func (d *Driver) advise(ctx context.Context, req driver.PrepareRequest, specs []grantSpec) {
	// Advice only: a slow database does not hold the registration's answer for long.
	ctx, cancel := context.WithTimeout(ctx, adviseWithin)
	defer cancel()
	dbs := []string{req.Conn.Database}
	for _, s := range specs {
		if !slices.Contains(dbs, s.database) {
			dbs = append(dbs, s.database)
		}
	}
	for _, db := range dbs {
		if err := d.inDatabase(ctx, req.Conn, db, nil, func(c *pgxpool.Conn) error {
			return adviseOn(ctx, c.Conn(), req.Advise)
		}); err != nil {
			d.notChecked(ctx, req, db, err)
		}
	}
	if !slices.Contains(dbs, templateDB) {
		if err := d.adviseOnce(ctx, req); err != nil {
			d.notChecked(ctx, req, templateDB, err)
		}
	}
}

// adviseWithin bounds advise's looks, together.
const adviseWithin = 5 * time.Second

// notChecked advises, and logs, that database db could not be looked at, and how to.
func (d *Driver) notChecked(ctx context.Context, req driver.PrepareRequest, db string, err error) {
	reason := driver.Scrub(err, req.Conn.Password).Error()
	d.logger.WarnContext(ctx, "could not check where every role may create on the target", "record_uid", req.RecordUID,
		"database", db, "error", reason)
	req.Advise(fmt.Sprintf("Could not check whether every role may create objects in a schema of the database %s (%s); "+
		"look there: SELECT nspname FROM pg_catalog.pg_namespace WHERE pg_catalog.has_schema_privilege('public', oid, 'CREATE').",
		ident(db), reason))
}

// templateDB is the database CREATE DATABASE copies unless told otherwise.
const templateDB = "template1"

// adviseOnce advises on template1 through a connection of its own, closed at once: one
// a pool kept idle would make every CREATE DATABASE copying template1 fail. A template1
// that takes no connection, or not the admin's, is one a lease user cannot reach either
// (PUBLIC's CONNECT taken away): not looked at.
func (d *Driver) adviseOnce(ctx context.Context, req driver.PrepareRequest) error {
	cfg, err := poolConfig(req.Conn, templateDB)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	switch state := sqlState(err); {
	case state == stateInsufficient, state == stateInvalidCatalog, state == stateNoConnections:
		return nil
	case err != nil:
		return fmt.Errorf("connect to database %q: %w", templateDB, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return adviseOn(ctx, conn, req.Advise)
}

// adviseAtMost is how many schemas one piece of advice names; past it, the statement
// given takes the right away in them all.
const adviseAtMost = 20

// adviseOn tells advise of the schemas of conn's database where PUBLIC may create.
func adviseOn(ctx context.Context, conn *pgx.Conn, advise func(string)) error {
	rows, err := conn.Query(ctx, `SELECT pg_catalog.current_database(), n.nspname, pg_catalog.count(*) OVER ()
		FROM pg_catalog.pg_namespace n WHERE pg_catalog.has_schema_privilege('public', n.oid, 'CREATE') ORDER BY 2 LIMIT $1`, adviseAtMost)
	if err != nil {
		return fmt.Errorf("list the schemas every role may create in: %w", err)
	}
	var db string
	var schemas []string
	var all int
	for rows.Next() {
		var schema string
		if err := rows.Scan(&db, &schema, &all); err != nil {
			return err
		}
		schemas = append(schemas, ident(schema))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list the schemas every role may create in: %w", err)
	}
	if len(schemas) == 0 {
		return nil
	}
	word, names := "schema", strings.Join(schemas, ", ")
	if len(schemas) > 1 {
		word = "schemas"
	}
	revoke := "REVOKE CREATE ON SCHEMA " + names + " FROM PUBLIC"
	if all > len(schemas) {
		names += fmt.Sprintf(" and %d more", all-len(schemas))
		revoke = `SELECT pg_catalog.format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', nspname) FROM pg_catalog.pg_namespace ` +
			`WHERE pg_catalog.has_schema_privilege('public', oid, 'CREATE') \gexec (in psql)`
	}
	advise(fmt.Sprintf("Every role, lease users included, may create objects in %s %s of the database %s (PUBLIC "+
		"holds CREATE there, as PostgreSQL 14 and older give it on public): a lease user can leave there what no grant "+
		"names, such as a function shadowing a built-in one for other roles, kept at its revocation, owned by the "+
		"target's group. To take it away, in that database: %s.", word, names, ident(db), revoke))
	return nil
}

// prepare checks the admin's rights and sets group up, reporting whether it created the
// group (also when it fails after that), and, when its connection broke while it waited
// for an answer, that connection's backend pid (cut).
func (d *Driver) prepare(ctx context.Context, c driver.Conn, group string, specs []grantSpec) (created bool, cut uint32, err error) {
	conn, err := d.acquire(ctx, c, c.Database)
	if err != nil {
		return false, 0, err
	}
	defer conn.Release()
	if err := d.checkAdmin(ctx, conn, c, specs); err != nil {
		return false, 0, err
	}
	created, err = d.ensureGroup(ctx, conn, c, group, specs, true)
	if err != nil && conn.Conn().PgConn().IsClosed() {
		cut = conn.Conn().PgConn().PID()
	}
	return created, cut, err
}

// undoGroup removes the group a refused registration's Prepare created (with the grants
// it was given before the refusal), so that a registration retried until its settings
// are right leaves no role per attempt, nor a membership of the admin's in each. Only a
// registration's: no lease can be in the group of a target not recorded. A failure is
// logged.
func (d *Driver) undoGroup(cctx context.Context, req driver.PrepareRequest) {
	remove := driver.RemoveTargetRequest{Conn: req.Conn, RecordUID: req.RecordUID, Grants: req.Grants}
	// The refused Prepare's grants may still be committing on the server (a cancelled
	// statement's session ends on its own time), after the removal read what the group
	// holds: its DROP ROLE then finds them, and RemoveTarget tries again.
	if err := d.RemoveTarget(cctx, remove); err != nil {
		d.logger.WarnContext(cctx, "removing the group of a refused registration failed", "record_uid", req.RecordUID,
			"error", driver.Scrub(err, req.Conn.Password).Error())
	}
}

// RemoveTarget revokes every privilege the target's group role holds and drops it. A
// group that owns objects (what lease users created, e.g. tables of a migration) is kept,
// holding no privilege and unable to log in: dropping it would destroy those objects, and
// handing them to the admin would let code a lease user wrote run as the admin. The
// operator decides (REASSIGN OWNED BY the group TO a role of their choosing). For a
// target being removed (see driver.Driver); a group that does not exist is success.
//
// A removal's request and the workers' follow-through of it remove the group at about the
// same time, as may two processes: run together, one of two fails on a catalog conflict
// ("tuple concurrently updated") or finds the role gone under a statement. So removals
// take turns in this process, and one that meets another process's is tried again, up
// to seven times (about 1.3 s in all), until it finds the role gone. (Not an advisory
// lock: any session of the database, a lease user's too, could hold it.) So is one
// whose DROP ROLE finds something made since it looked (see dependedMeanwhile).
func (d *Driver) RemoveTarget(ctx context.Context, req driver.RemoveTargetRequest) error {
	const op = "postgres.RemoveTarget"
	group, err := groupName(req.RecordUID)
	if err != nil {
		return fail(op, err, events.EInternal, "The target's record uid cannot name a PostgreSQL role.", req.Conn.Password)
	}
	release, err := d.removals.Take(ctx, group)
	if err != nil { // the context's end, not the target's: no connection was tried
		return events.Wrap(fmt.Errorf("%s: %w", op, err), events.ETimeout, "Could not remove the target's group role: the removal ended while another removal of it ran.")
	}
	defer release()
	raced := func(err error) bool {
		var late dependedMeanwhile
		return retryable(err) || sqlState(err) == stateUndefinedObject || errors.As(err, &late)
	}
	err = retryWhile(ctx, 7, raced, func() error { return d.removeGroup(ctx, req, group) })
	var late dependedMeanwhile
	if errors.As(err, &late) && ctx.Err() == nil { // the mark is this retry's; callers see the driver's error
		return late.error
	}
	return err
}

// removeGroup is one attempt of RemoveTarget's, on group.
func (d *Driver) removeGroup(ctx context.Context, req driver.RemoveTargetRequest, group string) error {
	const op = "postgres.RemoveTarget"
	conn, err := d.acquire(ctx, req.Conn, req.Conn.Database)
	if sqlState(err) == stateInvalidCatalog {
		conn, err = d.acquire(ctx, req.Conn, maintenanceDB)
	}
	if err != nil {
		return fail(op, err, events.EInternal, "Could not connect to the target.", req.Conn.Password)
	}
	defer conn.Release()
	oid, ok, err := roleOID(ctx, conn, group)
	if err != nil || !ok {
		return fail(op, err, events.EInternal, "Could not look up the target's group role.", req.Conn.Password)
	}
	if _, err := conn.Exec(ctx, lockTimeout+"ALTER ROLE "+ident(group)+" NOLOGIN"); err != nil {
		return failRemoval(op, err, "Could not lock the target's group role.", req.Conn.Password)
	}
	dbs, err := aclDatabases(ctx, conn, oid, conn.Conn().Config().Database)
	if err != nil {
		return failRemoval(op, err, "Could not list the group role's privileges.", req.Conn.Password)
	}
	for _, db := range dbs {
		err := d.inDatabase(ctx, req.Conn, db, conn, func(c *pgxpool.Conn) error {
			revokes, err := revokeStatements(ctx, c, oid, group)
			if err != nil || revokes == "" {
				return err
			}
			return retry(ctx, func() error { _, err := c.Exec(ctx, lockTimeout+revokes); return err })
		})
		if err != nil && sqlState(err) != stateInvalidCatalog {
			return failRemoval(op, err, "Could not revoke the group role's privileges.", req.Conn.Password)
		}
	}
	if _, err := revokeDatabases(ctx, conn, oid, group, nil); err != nil {
		return failRemoval(op, err, "Could not revoke the group role's privileges.", req.Conn.Password)
	}
	kept, err := d.keptAsOwner(ctx, conn, group, oid)
	if err != nil {
		return failRemoval(op, err, "Could not check what the group role owns.", req.Conn.Password)
	}
	if kept {
		return nil
	}
	if _, err := conn.Exec(ctx, lockTimeout+"DROP ROLE IF EXISTS "+ident(group)); err != nil {
		failed := failRemoval(op, err, "Could not drop the target's group role.", req.Conn.Password)
		if sqlState(err) == stateDependentObjs {
			// Marked outside the scrubbed error, which may have lost its chain.
			return dependedMeanwhile{failed}
		}
		return failed
	}
	return nil
}

// dependedMeanwhile is a DROP ROLE of a group that something came to depend on after its
// removal looked: an object a lease, acting as the group, created while the DROP waited
// for its transaction; a grant an admin statement cut off committed late. The next
// attempt revokes the group's privileges again and keeps it as the object's owner, or
// drops it. (A lease user's grant of its own object to the group is not the admin's to
// revoke: those attempts fail the same, and it goes with that lease's drop.)
type dependedMeanwhile struct{ error }

func (e dependedMeanwhile) Unwrap() error { return e.error }

// keptAsOwner reports whether group (of oid) owns objects, which lease users created:
// it is then kept, holding no privilege and unable to log in.
func (d *Driver) keptAsOwner(ctx context.Context, conn *pgxpool.Conn, group string, oid uint32) (bool, error) {
	var owned int
	if err := conn.QueryRow(ctx, `SELECT pg_catalog.count(*) FROM pg_catalog.pg_shdepend
		WHERE refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass AND refobjid = $1 AND deptype = 'o'`, oid).Scan(&owned); err != nil {
		return false, err
	}
	if owned > 0 {
		d.logger.WarnContext(ctx, "kept the target's group role: it owns objects lease users created; it holds no privilege and cannot log in",
			"group", group, "objects", owned)
	}
	return owned > 0, nil
}

// appliedError is grantGroup's failure after it changed, or may have changed, the
// group's privileges; cut names the backends (in databases other than the target's own)
// whose statement went unanswered.
type appliedError struct {
	error
	cut []uint32
}

func (e appliedError) Unwrap() error { return e.error }

// mayHaveRun reports whether err is a statement's that was sent and never answered (a
// cancelled request, a cut connection): the server may run it to its commit after the
// client has stopped waiting, pgx sending no cancel. pgx calls "conn closed" safe to
// retry also when the connection broke while the answer was awaited (see CreateUser):
// that counts too.
func mayHaveRun(err error) bool {
	var ce *pgconn.ConnectError
	if err == nil || sqlState(err) != "" || errors.As(err, &ce) {
		return false
	}
	return !pgconn.SafeToRetry(err) || errors.Is(err, pgconn.ErrConnClosed)
}

// failRemoval answers a removal's statement that failed. One another session's lock
// (waited for 2 s: lockTimeout) or a catalog conflict kept from finishing (past the
// retries) is ETargetUnavailable, as for a database that does not answer or one whose
// backup holds account changes (MariaDB's global read lock): it passes by itself, and a
// removal nothing records again (the undo of a registration not recorded, a removed
// target's setup made again) is tried again only for what may pass. After a cut, the cut
// session's statement may still hold what the next attempt needs. (XX000 is PostgreSQL's
// "tuple concurrently updated" under concurrent catalog changes, and any other internal
// error too: those are tried again as well, within the same bounds.)
func failRemoval(op string, err error, msg, password string) error {
	switch {
	case sqlState(err) == stateLockNotAvail || sqlState(err) == stateDeadlock:
		return fail(op, err, events.ETargetUnavailable, msg+" Another session holds a lock on it.", password)
	case retryable(err):
		return fail(op, err, events.ETargetUnavailable, msg+" The database could not change it now; it may pass.", password)
	}
	return fail(op, err, events.EInternal, msg, password)
}

// parseGrants validates every grant; the error names the grant at fault.
func parseGrants(grants []events.Grant, defaultDB string) ([]grantSpec, error) {
	if len(grants) == 0 {
		return nil, errors.New("no grants")
	}
	specs := make([]grantSpec, len(grants))
	for i, g := range grants {
		s, err := parseGrant(g, defaultDB)
		if err != nil {
			return nil, fmt.Errorf("grant %d: %w", i+1, err)
		}
		specs[i] = s
	}
	return specs, nil
}

// checkAdmin returns one ETargetUnverified *events.Error listing every right the
// connected role lacks, so an operator fixes them all at once: CREATEROLE, membership in
// pg_signal_backend, and for each grant the right to give it (CONNECT on the database,
// USAGE, and CREATE where asked, on the schema, each table privilege, all WITH GRANT
// OPTION or as owner), and any database, schema or table that does not exist.
func (d *Driver) checkAdmin(ctx context.Context, held *pgxpool.Conn, c driver.Conn, specs []grantSpec) error {
	var (
		name                      string
		super, createRole, signal bool
	)
	err := held.QueryRow(ctx, `SELECT r.rolname, r.rolsuper, r.rolcreaterole,
		pg_catalog.pg_has_role(r.oid, 'pg_signal_backend', 'USAGE')
		FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER`).Scan(&name, &super, &createRole, &signal)
	if err != nil {
		return fmt.Errorf("check admin rights: %w", err)
	}
	var missing []string
	if !super && !createRole {
		missing = append(missing, "CREATEROLE (ALTER ROLE "+ident(name)+" CREATEROLE)")
	}
	if !super && !signal {
		missing = append(missing, "membership in pg_signal_backend (GRANT pg_signal_backend TO "+ident(name)+")")
	}
	for i, s := range specs {
		err := d.inDatabase(ctx, c, s.database, held, func(conn *pgxpool.Conn) error {
			m, err := grantRights(ctx, conn, s)
			if len(m) > 0 {
				missing = append(missing, fmt.Sprintf("for %s: %s", s.describe(i), strings.Join(m, ", ")))
			}
			return err
		})
		switch {
		case sqlState(err) == stateInvalidCatalog:
			missing = append(missing, fmt.Sprintf("for %s: the database %q does not exist", s.describe(i), s.database))
		case sqlState(err) == stateInsufficient:
			missing = append(missing, fmt.Sprintf("for %s: CONNECT on the database %q", s.describe(i), s.database))
		case err != nil:
			return err
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return events.Errorf(events.ETargetUnverified, "The admin role %q lacks: %s. See the README's \"Preparing a target\".",
		name, strings.Join(missing, "; "))
}

// grantRights lists what the connected role lacks to give s, or what s names that does
// not exist, in the connected database.
func grantRights(ctx context.Context, conn *pgxpool.Conn, s grantSpec) ([]string, error) {
	var missing []string
	var dbOK, schemaExists, usageOK, createOK bool
	err := conn.QueryRow(ctx, `SELECT pg_catalog.has_database_privilege(CURRENT_USER, pg_catalog.current_database(), 'CONNECT WITH GRANT OPTION'),
		EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n WHERE n.nspname = $1)`, s.schema).Scan(&dbOK, &schemaExists)
	if err != nil {
		return nil, fmt.Errorf("check admin rights: %w", err)
	}
	if !dbOK {
		missing = append(missing, "CONNECT on the database WITH GRANT OPTION (or own it)")
	}
	if !schemaExists {
		return append(missing, fmt.Sprintf("the schema %q does not exist", s.schema)), nil
	}
	if err := conn.QueryRow(ctx, `SELECT pg_catalog.has_schema_privilege(CURRENT_USER, $1, 'USAGE WITH GRANT OPTION'),
		pg_catalog.has_schema_privilege(CURRENT_USER, $1, 'CREATE WITH GRANT OPTION')`, s.schema).Scan(&usageOK, &createOK); err != nil {
		return nil, fmt.Errorf("check admin rights: %w", err)
	}
	if !usageOK {
		missing = append(missing, "USAGE on the schema WITH GRANT OPTION (or own it)")
	}
	if s.create && !createOK {
		missing = append(missing, "CREATE on the schema WITH GRANT OPTION (or own it)")
	}
	if len(s.check) == 0 {
		return missing, nil
	}
	query := `SELECT c.relname, p FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace, pg_catalog.unnest($2::text[]) p
		WHERE n.nspname = $1 AND ` + schemaGrantCovers + `
		AND NOT pg_catalog.has_table_privilege(CURRENT_USER, c.oid, p || ' WITH GRANT OPTION')
		ORDER BY 1, 2 LIMIT 12`
	args := []any{s.schema, s.check}
	if len(s.tables) > 0 {
		var absent []string
		rows, err := conn.Query(ctx, `SELECT t FROM pg_catalog.unnest($2::text[]) t WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
			JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = t)`, s.schema, s.tables)
		if err == nil {
			absent, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			return nil, fmt.Errorf("check admin rights: %w", err)
		}
		for _, t := range absent {
			missing = append(missing, fmt.Sprintf("the table %q does not exist", t))
		}
		query = `SELECT c.relname, p FROM pg_catalog.pg_class c
			JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace, pg_catalog.unnest($2::text[]) p
			WHERE n.nspname = $1 AND c.relname = ANY($3)
			AND NOT pg_catalog.has_table_privilege(CURRENT_USER, c.oid, p || ' WITH GRANT OPTION')
			ORDER BY 1, 2 LIMIT 12`
		args = append(args, s.tables)
	}
	rows, err := conn.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("check admin rights: %w", err)
	}
	for rows.Next() {
		var table, priv string
		if err := rows.Scan(&table, &priv); err != nil {
			rows.Close()
			return nil, fmt.Errorf("check admin rights: %w", err)
		}
		missing = append(missing, priv+" on "+table+" WITH GRANT OPTION (or own it)")
	}
	return missing, rows.Err()
}

// ensureGroup creates group if it is missing, makes the admin its member, and gives it
// exactly the grants of specs; when the group exists it does so only if refresh is set.
// held is a connection to c.Database, reused for work in that database. It reports
// whether its own CREATE ROLE made the group (or may have: it went unanswered), also
// when it fails after that. Errors carry an *events.Error: ETargetUnverified for a grant
// the admin cannot apply.
func (d *Driver) ensureGroup(ctx context.Context, held *pgxpool.Conn, c driver.Conn, group string, specs []grantSpec, refresh bool) (created bool, err error) {
	lock := d.groupLock(c.PoolKey, group)
	lock.Lock()
	defer lock.Unlock()

	oid, ok, err := roleOID(ctx, held, group)
	if err != nil {
		return false, err
	}
	if ok && !refresh {
		return false, nil
	}
	if !ok {
		_, err := held.Exec(ctx, "CREATE ROLE "+ident(group)+" NOLOGIN")
		switch state := sqlState(err); {
		case err == nil:
			created = true
		case state == "": // unanswered (a cancelled context): it may have been made
			return true, fmt.Errorf("create group role: %w", err)
		case state == stateDuplicateObject, state == stateUniqueViolation:
			// Another process won the race.
		case state == stateInsufficient:
			return false, events.Wrap(err, events.ETargetUnverified, "The admin may not create roles: give it CREATEROLE.")
		default:
			return false, fmt.Errorf("create group role: %w", err)
		}
		if oid, ok, err = roleOID(ctx, held, group); err != nil {
			return created, err
		} else if !ok {
			return created, fmt.Errorf("group role %q vanished after it was created", group)
		}
	}
	return created, d.grantGroup(ctx, held, c, group, oid, specs)
}

// grantGroup makes the admin a member of group (of oid) and gives it exactly the grants
// of specs, for ensureGroup. A failure after it changed, or may have changed, the
// group's privileges in some database is an appliedError.
func (d *Driver) grantGroup(ctx context.Context, held *pgxpool.Conn, c driver.Conn, group string, oid uint32, specs []grantSpec) (err error) {
	applied := false
	var cut []uint32
	defer func() {
		if err != nil && applied {
			err = appliedError{err, cut}
		}
	}()
	if err := joinGroup(ctx, held, group); err != nil {
		return err
	}
	// Every database where the group holds something, or is to: each gets its revokes
	// and grants in one transaction, so leases never see a moment without their grants.
	dbs, err := aclDatabases(ctx, held, oid, c.Database)
	if err != nil {
		return err
	}
	granted := map[string]bool{}
	for _, s := range specs {
		granted[s.database] = true
		dbs = append(dbs, s.database)
	}
	slices.Sort(dbs)
	dbs = slices.Compact(dbs)
	revoked, err := revokeDatabases(ctx, held, oid, group, granted)
	applied = revoked
	if err != nil {
		return err
	}
	for _, db := range dbs {
		err := d.inDatabase(ctx, c, db, held, func(conn *pgxpool.Conn) error {
			stmts, err := revokeStatements(ctx, conn, oid, group)
			if err != nil {
				return err
			}
			for _, s := range specs {
				if s.database != db {
					continue
				}
				var tables []string
				if len(s.tables) == 0 {
					if tables, err = schemaTables(ctx, conn, s.schema); err != nil {
						return err
					}
				}
				stmts += s.statements(group, tables)
			}
			if stmts == "" {
				return nil
			}
			if err := retry(ctx, func() error { _, err := conn.Exec(ctx, lockTimeout+stmts); return err }); err != nil {
				if mayHaveRun(err) {
					applied = true
					if conn != held { // held's is the caller's to end
						cut = append(cut, conn.Conn().PgConn().PID())
					}
				}
				return err
			}
			applied = true // committed: what follows only checks it
			for i, s := range specs {
				if s.database != db {
					continue
				}
				if err := verifyGrant(ctx, conn, oid, s, i); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			var ee *events.Error
			state := sqlState(err)
			if errors.As(err, &ee) || (unavailable(err) && state != stateInvalidCatalog && state != stateInsufficient) {
				return err
			}
			if !granted[db] && state == stateInvalidCatalog {
				continue // a database the group is leaving is gone, and its privileges with it
			}
			i := slices.IndexFunc(specs, func(s grantSpec) bool { return s.database == db })
			if i < 0 && state == stateLockNotAvail {
				return events.Wrap(err, events.ETargetUnverified,
					fmt.Sprintf("Cannot revoke the target's privileges in database %q: %s.", db, grantFailure(err)))
			}
			if i < 0 {
				return fmt.Errorf("revoke the group's privileges in %q: %w", db, err)
			}
			return events.Wrap(err, events.ETargetUnverified,
				fmt.Sprintf("Cannot apply %s: %s.", specs[i].describe(i), grantFailure(err)))
		}
	}
	return nil
}

// notLeaseOwned is true of a pg_class row c not owned by an active lease user (a role
// without CREATEROLE that is a member of a target's group). Such a table is its lease's
// until the revocation hands it to the group: a schema-wide grant leaves it out, since
// the admin has no right on it to grant, nor to revoke what its owner shared; a PUT that
// touched it would fail for as long as the lease lives.
const notLeaseOwned = `NOT ` + leaseUserOwns

// groupOwns is true when c.relowner is a target's group role.
const groupOwns = `EXISTS (SELECT FROM pg_catalog.pg_roles g WHERE g.oid = c.relowner
		AND pg_catalog.starts_with(g.rolname, '` + groupPrefix + `') AND NOT g.rolcanlogin AND NOT g.rolcreaterole AND NOT g.rolsuper)`

// leaseUserOwns is true when c.relowner is an active lease user: a role without
// CREATEROLE that is a member of a target's group.
const leaseUserOwns = `EXISTS (SELECT FROM pg_catalog.pg_auth_members m
		JOIN pg_catalog.pg_roles o ON o.oid = m.member JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
		WHERE m.member = c.relowner AND NOT o.rolcreaterole AND pg_catalog.starts_with(g.rolname, '` + groupPrefix + `'))`

// schemaGrantCovers is true of a pg_class row c that a grant naming no tables covers in
// its schema: what GRANT ON ALL TABLES IN SCHEMA would (tables, partitioned tables,
// views, materialized views, foreign tables), but lease users'. The grant, the check of
// the admin's rights and the check of the group's all select with it.
const schemaGrantCovers = `c.relkind IN ('r', 'p', 'v', 'm', 'f') AND ` + notLeaseOwned

// schemaTables lists, quoted, the tables of schema that a schema-wide grant covers.
func schemaTables(ctx context.Context, q querier, schema string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND `+schemaGrantCovers+` ORDER BY 1`, schema)
	if err != nil {
		return nil, fmt.Errorf("list the schema's tables: %w", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list the schema's tables: %w", err)
	}
	return tables, nil
}

// joinGroup makes the admin a member of the group. GRANT of a membership the admin
// already has only warns, so this is idempotent.
func joinGroup(ctx context.Context, q querier, group string) error {
	_, err := q.Exec(ctx, "GRANT "+ident(group)+" TO CURRENT_USER")
	if sqlState(err) == stateInsufficient {
		return events.Wrap(err, events.ETargetUnverified, "The admin may not join the target's group role: give it CREATEROLE.")
	}
	if err != nil {
		return fmt.Errorf("join group role: %w", err)
	}
	return nil
}

// aclDatabases lists home and every database where role appears in an access control list
// or a default privilege: where there may be privileges of role to revoke.
func aclDatabases(ctx context.Context, q querier, role uint32, home string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT d.datname FROM pg_catalog.pg_shdepend s
		JOIN pg_catalog.pg_database d ON d.oid = s.dbid
		WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass AND s.refobjid = $1 AND s.deptype = 'a'`, role)
	if err != nil {
		return nil, fmt.Errorf("list the databases of the role's privileges: %w", err)
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list the databases of the role's privileges: %w", err)
	}
	return append(dbs, home), nil
}

// revokeDatabases revokes role's privileges on every database not in keep, and says
// whether it did, or may have (a statement whose answer was lost). Database privileges
// are cluster-wide, so one connection does it.
func revokeDatabases(ctx context.Context, q querier, role uint32, name string, keep map[string]bool) (revoked bool, err error) {
	rows, err := q.Query(ctx, `SELECT d.datname FROM pg_catalog.pg_database d
		WHERE EXISTS (SELECT 1 FROM pg_catalog.aclexplode(d.datacl) a WHERE a.grantee = $1)`, role)
	if err != nil {
		return false, fmt.Errorf("list the role's databases: %w", err)
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return false, fmt.Errorf("list the role's databases: %w", err)
	}
	for _, db := range dbs {
		if keep[db] {
			continue
		}
		if _, err := q.Exec(ctx, lockTimeout+"REVOKE ALL ON DATABASE "+ident(db)+" FROM "+ident(name)); err != nil {
			return revoked || mayHaveRun(err), fmt.Errorf("revoke the role's privileges on database %q: %w", db, err)
		}
		revoked = true
	}
	return revoked, nil
}

// revokeStatements returns the statements that take from role (named name) every
// privilege it holds in the connected database on an object it does not own: tables,
// views, sequences, schemas, and the admin's default privileges for it. What the role owns
// is left alone: those are the objects lease users created, and their owner keeps them.
// So are what active lease users own and shared with the role: the admin may not revoke
// their grants, and those objects become the role's when their lease ends.
func revokeStatements(ctx context.Context, q querier, role uint32, name string) (string, error) {
	rows, err := q.Query(ctx, `SELECT 'rel', n.nspname, c.relname, c.relkind::text
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relowner <> $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND `+notLeaseOwned+`
		AND EXISTS (SELECT 1 FROM pg_catalog.aclexplode(c.relacl) a WHERE a.grantee = $1)
		UNION ALL
		SELECT 'schema', n.nspname, '', '' FROM pg_catalog.pg_namespace n
		WHERE n.nspowner <> $1 AND EXISTS (SELECT 1 FROM pg_catalog.aclexplode(n.nspacl) a WHERE a.grantee = $1)
		UNION ALL
		SELECT 'default', COALESCE(n.nspname, ''), d.defaclobjtype::text, '' FROM pg_catalog.pg_default_acl d
		LEFT JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace
		WHERE d.defaclrole = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER)
		AND EXISTS (SELECT 1 FROM pg_catalog.aclexplode(d.defaclacl) a WHERE a.grantee = $1)`, role)
	if err != nil {
		return "", fmt.Errorf("list the role's privileges: %w", err)
	}
	defer rows.Close()
	var b strings.Builder
	g := ident(name)
	for rows.Next() {
		var kind, schema, obj, sub string
		if err := rows.Scan(&kind, &schema, &obj, &sub); err != nil {
			return "", fmt.Errorf("list the role's privileges: %w", err)
		}
		switch kind {
		case "rel":
			what := "TABLE"
			if sub == "S" {
				what = "SEQUENCE"
			}
			fmt.Fprintf(&b, "REVOKE ALL ON %s %s FROM %s;\n", what, ident(schema, obj), g)
		case "schema":
			fmt.Fprintf(&b, "REVOKE ALL ON SCHEMA %s FROM %s;\n", ident(schema), g)
		case "default":
			objects, ok := defaultACLObjects[obj]
			if !ok {
				continue
			}
			in := ""
			if schema != "" {
				in = " IN SCHEMA " + ident(schema)
			}
			fmt.Fprintf(&b, "ALTER DEFAULT PRIVILEGES%s REVOKE ALL ON %s FROM %s;\n", in, objects, g)
		}
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("list the role's privileges: %w", err)
	}
	return b.String(), nil
}

// defaultACLObjects names pg_default_acl.defaclobjtype in ALTER DEFAULT PRIVILEGES.
var defaultACLObjects = map[string]string{"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}

// grantFailure says in a few words why a GRANT failed.
func grantFailure(err error) string {
	switch sqlState(err) {
	case stateUndefinedTable:
		return "a table does not exist"
	case stateInvalidSchema:
		return "the schema does not exist"
	case stateInvalidCatalog:
		return "the database does not exist"
	case stateInsufficient:
		var ce *pgconn.ConnectError
		if errors.As(err, &ce) {
			return "the admin may not connect to the database"
		}
		return "the admin may not grant these privileges (it must own the tables or hold the privileges WITH GRANT OPTION)"
	case stateLockNotAvail:
		return "another transaction holds one of its tables (a migration's TRUNCATE, ALTER TABLE or CREATE INDEX); try again once it ends"
	}
	return "the admin could not apply it"
}

// verifyGrant checks that the group holds every privilege of s, since GRANT by a role
// without the grant option only warns. It returns an ETargetUnverified *events.Error
// listing what is missing.
func verifyGrant(ctx context.Context, conn *pgxpool.Conn, group uint32, s grantSpec, i int) error {
	var connect, usage, create bool
	err := conn.QueryRow(ctx, `SELECT pg_catalog.has_database_privilege($1::oid, $2, 'CONNECT'),
		pg_catalog.has_schema_privilege($1::oid, $3, 'USAGE'), pg_catalog.has_schema_privilege($1::oid, $3, 'CREATE')`,
		group, s.database, s.schema).Scan(&connect, &usage, &create)
	if err != nil {
		return fmt.Errorf("check grant %d: %w", i+1, err)
	}
	var missing []string
	if !connect {
		missing = append(missing, "CONNECT on the database")
	}
	if !usage {
		missing = append(missing, "USAGE on the schema")
	}
	if s.create && !create {
		missing = append(missing, "CREATE on the schema")
	}
	query := `SELECT c.relname, p FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace, pg_catalog.unnest($2::text[]) p
		WHERE n.nspname = $3 AND ` + schemaGrantCovers + `
		AND NOT pg_catalog.has_table_privilege($1::oid, c.oid, p)
		ORDER BY 1, 2 LIMIT 6`
	args := []any{group, s.check, s.schema}
	if len(s.tables) > 0 {
		query = `SELECT t, p FROM pg_catalog.unnest($4::text[]) t, pg_catalog.unnest($2::text[]) p
			WHERE NOT pg_catalog.has_table_privilege($1::oid, pg_catalog.format('%I.%I', $3::text, t), p)
			ORDER BY 1, 2 LIMIT 6`
		args = append(args, s.tables)
	}
	rows, err := conn.Query(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("check grant %d: %w", i+1, err)
	}
	for rows.Next() {
		var table, priv string
		if err := rows.Scan(&table, &priv); err != nil {
			rows.Close()
			return fmt.Errorf("check grant %d: %w", i+1, err)
		}
		missing = append(missing, priv+" on "+table)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check grant %d: %w", i+1, err)
	}
	if len(missing) == 0 {
		return nil
	}
	return events.Errorf(events.ETargetUnverified,
		"Cannot apply %s: the admin may not grant %s (it must own the tables and schema or hold the privileges WITH GRANT OPTION).",
		s.describe(i), strings.Join(missing, ", "))
}

// inDatabase runs fn on an admin connection to database: held when it is c's own
// database, otherwise one acquired and released around fn. An operation therefore holds
// at most one connection besides the one to c.Database, which every operation takes
// first, so pools of 4 cannot deadlock each other.
func (d *Driver) inDatabase(ctx context.Context, c driver.Conn, database string, held *pgxpool.Conn, fn func(*pgxpool.Conn) error) error {
	if database == c.Database && held != nil {
		return fn(held)
	}
	conn, err := d.acquire(ctx, c, database)
	if err != nil {
		return err
	}
	defer conn.Release()
	return fn(conn)
}
