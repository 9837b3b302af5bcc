package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
)

// DropUsers drops the users of reqs (all of one target, as one Conn) in three round
// trips and two transactions for the lot: it looks them up; it ends their sessions,
// refuses their logins and learns which own or were granted anything or left a prepared
// transaction; it ends any session begun meanwhile and drops them with one DROP ROLE. A
// user that owns something, or whose sessions do not end at once, takes DropUser's path
// on its own; so does the whole batch when a step of it fails, so a failure costs time,
// never a drop.
func (d *Driver) DropUsers(ctx context.Context, reqs []driver.DropUserRequest) []error {
	errs := make([]error, len(reqs))
	if len(reqs) < 2 {
		for i, r := range reqs {
			errs[i] = d.DropUser(ctx, r)
		}
		return errs
	}
	var batch []int // indexes into reqs
	for i, r := range reqs {
		if err := checkIdentifier(r.Username); err != nil {
			errs[i] = fail("postgres.DropUsers", err, events.EInternal, "The username is not a valid PostgreSQL role name.", r.Conn.Password)
			continue
		}
		batch = append(batch, i)
	}
	alone, err := d.dropBatch(ctx, reqs, batch)
	if err != nil {
		alone = batch // start over, one by one: every step is idempotent
	}
	for _, i := range alone {
		errs[i] = d.DropUser(ctx, reqs[i])
	}
	return errs
}

// dropBatch drops the users reqs[batch] that it can drop together and returns the
// indexes of those left for DropUser.
func (d *Driver) dropBatch(ctx context.Context, reqs []driver.DropUserRequest, batch []int) (alone []int, err error) {
	first := reqs[batch[0]].Conn
	conn, err := d.acquire(ctx, first, first.Database)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	names := make([]string, len(batch))
	for j, i := range batch {
		names[j] = reqs[i].Username
	}
	rows, err := conn.Query(ctx, "SELECT r.rolname, r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = ANY($1)", names)
	if err != nil {
		return nil, fmt.Errorf("look up the users: %w", err)
	}
	type role struct {
		name string
		oid  uint32
	}
	existing, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (r role, err error) {
		err = row.Scan(&r.name, &r.oid)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("look up the users: %w", err)
	}
	if len(existing) == 0 {
		return nil, nil // all gone already
	}
	// A name twice in one batch (a call whose waiter gave up, still pending, and its
	// redelivery's) is answered for each: every call for a user left to DropUser goes
	// there, so none is told a failed drop succeeded.
	index := map[string][]int{}
	for j, i := range batch {
		index[names[j]] = append(index[names[j]], i)
	}
	// The sessions end before NOLOGIN, as in dropOnce; a role row held by a prepared
	// transaction times the lot out and sends every user to DropUser.
	oids := make([]string, len(existing))
	for k, r := range existing {
		oids[k] = strconv.FormatUint(uint64(r.oid), 10)
	}
	set := "'{" + strings.Join(oids, ",") + "}'::pg_catalog.oid[]"
	var sql strings.Builder
	sql.WriteString(lockTimeout + fmt.Sprintf(batchSessionsAndDependents, set, terminateWaitMillis))
	for _, r := range existing {
		sql.WriteString("; ALTER ROLE " + ident(r.name) + " NOLOGIN")
	}
	res, err := exec(ctx, conn, sql.String())
	if err != nil {
		return nil, fmt.Errorf("end sessions and refuse logins: %w", err)
	}
	byOID := map[string]role{}
	for k, r := range existing {
		byOID[oids[k]] = r
	}
	var drop []role
	for _, row := range res[1].Rows {
		r, ok := byOID[string(row[0])]
		var dbs []string
		if !ok || json.Unmarshal(row[2], &dbs) != nil {
			return nil, fmt.Errorf("unexpected row for role %q", row[0])
		}
		if string(row[1]) != "0" || len(dbs) > 0 {
			alone = append(alone, index[r.name]...)
			continue
		}
		drop = append(drop, r)
	}
	if len(drop) == 0 {
		return alone, nil
	}
	idents, dropOIDs := make([]string, len(drop)), make([]string, len(drop))
	for k, r := range drop {
		idents[k], dropOIDs[k] = ident(r.name), strconv.FormatUint(uint64(r.oid), 10)
	}
	set = "'{" + strings.Join(dropOIDs, ",") + "}'::pg_catalog.oid[]"
	res, err = exec(ctx, conn, lockTimeout+fmt.Sprintf(batchTerminate, set, terminateWaitMillis)+"; DROP ROLE IF EXISTS "+strings.Join(idents, ", "))
	if err != nil {
		return nil, fmt.Errorf("drop roles: %w", err)
	}
	for _, row := range res[1].Rows {
		// A backend slow to exit outlived the drop: wait for it, or leave the user to
		// DropUser (which finds the role gone and waits for its backends too).
		r := byOID[string(row[0])]
		if err := terminate(ctx, conn, r.oid); err != nil {
			alone = append(alone, index[r.name]...)
		}
	}
	return alone, nil
}

// exec runs sql, statements separated by semicolons, in one round trip and one implicit
// transaction, and returns each statement's result.
func exec(ctx context.Context, conn *pgxpool.Conn, sql string) ([]*pgconn.Result, error) {
	res, err := conn.Conn().PgConn().Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(res) == 0 {
		return nil, errors.New("no result")
	}
	return res, nil
}

// batchSessionsAndDependents is sessionsAndDependents for a set of roles (an oid[]
// literal): a row per role with its oid, its backends that did not exit when told to,
// and the databases where it owns or was granted anything or has a prepared transaction.
const batchSessionsAndDependents = `WITH r AS MATERIALIZED (SELECT pg_catalog.unnest(%[1]s) AS oid),
	s AS MATERIALIZED (SELECT a.pid, a.usesysid FROM pg_catalog.pg_stat_activity a WHERE a.usesysid = ANY(%[1]s))
	SELECT r.oid,
		(SELECT pg_catalog.count(*) FILTER (WHERE NOT pg_catalog.pg_terminate_backend(s.pid, %[2]d)) FROM s WHERE s.usesysid = r.oid),
		` + dependentDatabases + `
	FROM r`

// batchTerminate ends the backends of a set of roles and answers the oids of those with
// a backend that did not exit in time.
const batchTerminate = `WITH s AS MATERIALIZED (
		SELECT a.pid, a.usesysid FROM pg_catalog.pg_stat_activity a WHERE a.usesysid = ANY(%s))
		SELECT s.usesysid FROM s WHERE NOT pg_catalog.pg_terminate_backend(s.pid, %d) GROUP BY s.usesysid`
