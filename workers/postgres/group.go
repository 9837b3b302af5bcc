package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers"
)

// Prepare verifies that the admin may create roles (superuser or CREATEROLE) and end other
// roles' sessions (superuser or pg_signal_backend), creates the target's group role
// syvault_<RecordUID> if it is missing, and (re)applies every grant to it: CONNECT on the
// database, USAGE on the schema, the privileges on the listed tables (or on all tables of
// the schema, plus default privileges for tables the admin creates later). Each grant is
// then checked with has_table_privilege, because GRANT only warns when the admin lacks the
// grant option. It is idempotent and safe for concurrent use.
//
// A missing right or a grant that cannot be applied fails with ETargetUnverified and a
// message naming it; grants applied before the failing one stay on the group, which is
// harmless since the group cannot log in. An unreachable target or a refused admin login
// fails with ETargetUnavailable.
func (d *Driver) Prepare(ctx context.Context, req workers.PrepareRequest) error {
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
	conn, err := d.acquire(ctx, req.Conn, req.Conn.Database)
	if err != nil {
		return fail(op, err, events.EInternal, "Could not connect to the target.", secret)
	}
	defer conn.Release()
	if err := checkAdmin(ctx, conn); err != nil {
		return fail(op, err, events.EInternal, "Could not check the admin's rights.", secret)
	}
	if err := d.ensureGroup(ctx, conn, req.Conn, group, specs, true); err != nil {
		return fail(op, err, events.EInternal, "Could not set up the target's group role.", secret)
	}
	d.logger.DebugContext(ctx, "target prepared", "group", group, "grants", len(specs))
	return nil
}

// RemoveTarget drops the target's group role the way DropUser drops a user: what it owns
// and every privilege it holds (default privileges included) go with DROP OWNED in each
// granted database, then the role. Called once the target's leases have ended; a group
// that does not exist is success.
func (d *Driver) RemoveTarget(ctx context.Context, req workers.RemoveTargetRequest) error {
	group, err := groupName(req.RecordUID)
	if err != nil {
		return fail("postgres.RemoveTarget", err, events.EInternal, "The target's record uid cannot name a PostgreSQL role.", req.Conn.Password)
	}
	return d.DropUser(ctx, workers.DropUserRequest{Conn: req.Conn, Username: group, Grants: req.Grants})
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

// checkAdmin returns an ETargetUnverified *events.Error when the connected role lacks a
// right the driver needs.
func checkAdmin(ctx context.Context, q querier) error {
	var (
		name                      string
		super, createRole, signal bool
	)
	err := q.QueryRow(ctx, `SELECT rolname, rolsuper, rolcreaterole,
		pg_catalog.pg_has_role(oid, 'pg_signal_backend', 'USAGE')
		FROM pg_catalog.pg_roles WHERE rolname = current_user`).Scan(&name, &super, &createRole, &signal)
	if err != nil {
		return fmt.Errorf("check admin rights: %w", err)
	}
	switch {
	case super:
		return nil
	case !createRole:
		return events.Errorf(events.ETargetUnverified,
			"The admin role %q may not create roles: give it CREATEROLE (ALTER ROLE ... CREATEROLE).", name)
	case !signal:
		return events.Errorf(events.ETargetUnverified,
			"The admin role %q may not end other roles' sessions: GRANT pg_signal_backend TO it.", name)
	}
	return nil
}

// ensureGroup creates group if it is missing and applies the grants to it; when the group
// exists it reapplies them only if refresh is set. held is a connection to c.Database,
// reused for grants in that database. Errors carry an *events.Error: ETargetUnverified for
// a grant the admin cannot apply.
func (d *Driver) ensureGroup(ctx context.Context, held *pgxpool.Conn, c workers.Conn, group string, specs []grantSpec, refresh bool) error {
	lock := d.groupLock(c.PoolKey, group)
	lock.Lock()
	defer lock.Unlock()

	oid, ok, err := roleOID(ctx, held, group)
	if err != nil {
		return err
	}
	if ok && !refresh {
		return nil
	}
	if !ok {
		_, err := held.Exec(ctx, "CREATE ROLE "+ident(group)+" NOLOGIN")
		switch state := sqlState(err); {
		case err == nil, state == stateDuplicateObject, state == stateUniqueViolation:
			// Created, or another process won the race.
		case state == stateInsufficient:
			return events.Wrap(err, events.ETargetUnverified, "The admin may not create roles: give it CREATEROLE.")
		default:
			return fmt.Errorf("create group role: %w", err)
		}
		if oid, ok, err = roleOID(ctx, held, group); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("group role %q vanished after it was created", group)
		}
	}
	for i, s := range specs {
		err := d.inDatabase(ctx, c, s.database, held, func(conn *pgxpool.Conn) error {
			err := retry(ctx, func() error {
				_, err := conn.Exec(ctx, s.statements(group))
				return err
			})
			if err != nil {
				return err
			}
			return verifyGrant(ctx, conn, oid, s, i)
		})
		if err != nil {
			var ee *events.Error
			state := sqlState(err)
			if errors.As(err, &ee) || (unavailable(err) && state != stateInvalidCatalog && state != stateInsufficient) {
				return err
			}
			return events.Wrap(err, events.ETargetUnverified,
				fmt.Sprintf("Cannot apply %s: %s.", s.describe(i), grantFailure(err)))
		}
	}
	return nil
}

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
	}
	return "the admin could not apply it"
}

// verifyGrant checks that the group holds every privilege of s, since GRANT by a role
// without the grant option only warns. It returns an ETargetUnverified *events.Error
// listing what is missing.
func verifyGrant(ctx context.Context, conn *pgxpool.Conn, group uint32, s grantSpec, i int) error {
	var connect, usage bool
	err := conn.QueryRow(ctx, `SELECT pg_catalog.has_database_privilege($1::oid, $2, 'CONNECT'),
		pg_catalog.has_schema_privilege($1::oid, $3, 'USAGE')`, group, s.database, s.schema).Scan(&connect, &usage)
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
	query := `SELECT c.relname, p FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace, unnest($2::text[]) p
		WHERE n.nspname = $3 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
		AND NOT pg_catalog.has_table_privilege($1::oid, c.oid, p)
		ORDER BY 1, 2 LIMIT 6`
	args := []any{group, s.check, s.schema}
	if len(s.tables) > 0 {
		query = `SELECT t, p FROM unnest($4::text[]) t, unnest($2::text[]) p
			WHERE NOT pg_catalog.has_table_privilege($1::oid, format('%I.%I', $3::text, t), p)
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
		"Cannot apply %s: the admin may not grant %s (it must own the tables or hold the privileges WITH GRANT OPTION).",
		s.describe(i), strings.Join(missing, ", "))
}

// inDatabase runs fn on an admin connection to database: held when it is c's own
// database, otherwise one acquired and released around fn. An operation therefore holds
// at most one connection besides the one to c.Database, which every operation takes
// first, so pools of 4 cannot deadlock each other.
func (d *Driver) inDatabase(ctx context.Context, c workers.Conn, database string, held *pgxpool.Conn, fn func(*pgxpool.Conn) error) error {
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
