package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
)

// Lease users are marked as SyVault's by a role of their target, syvault_<record uid>,
// which holds no privilege: a lease user gains nothing by it (SET ROLE to it enables
// nothing), and only an account holding the role's ADMIN OPTION (the admin that created
// it, on MariaDB) or ROLE_ADMIN may give it. So a user holding the role was made by
// SyVault's admin for that target, whatever its name; the vf_tmp_ prefix alone would
// also match users SyVault never made. MariaDB 10.11 has no account comments or
// attributes, and a name carrying a MAC would not fit the API's 8 random characters
// with room for enough of either.

// markerPrefix prefixes a target's marker role.
const markerPrefix = "syvault_"

// markerRole returns the quoted marker role of recordUID.
func markerRole(recordUID string) (string, error) {
	if recordUID == "" || strings.ContainsAny(recordUID, "`'\\\x00") || len(markerPrefix+recordUID) > maxUsername {
		return "", fmt.Errorf("record uid %q cannot name a marker role", recordUID)
	}
	return quoteIdent(markerPrefix + recordUID), nil
}

// mark gives acct the marker role of recordUID, creating the role when it is missing.
// An admin that may not give it (MySQL 8 without ROLE_ADMIN or the role's ADMIN OPTION,
// or a role another account created) leaves the user unmarked, with a warning: the lease
// works as before, and reconciliation reports such a user instead of dropping it.
// A request naming no target leaves the user unmarked. Idempotent.
//
// It reports whether its own CREATE ROLE made the role (or may have: it went unanswered),
// also when it fails after that.
func (d *Driver) mark(ctx context.Context, conn *sql.Conn, recordUID, acct string) (created bool, err error) {
	if recordUID == "" {
		return false, nil
	}
	role, err := markerRole(recordUID)
	if err != nil {
		return false, err
	}
	_, err = conn.ExecContext(ctx, grantOnly+"GRANT "+role+" TO "+acct)
	if n := errNumber(err); n == errInvalidRole || n == errUnknownRole {
		_, cerr := conn.ExecContext(ctx, "CREATE ROLE "+role)
		switch n := errNumber(cerr); {
		case cerr == nil:
			created = true
		case n == 0: // no answer (a cancelled context): it may have been made
			return true, fmt.Errorf("create marker role: %w", cerr)
		case n != errCannotUser: // errCannotUser: made meanwhile by another create
			return false, fmt.Errorf("create marker role: %w", cerr)
		}
		_, err = conn.ExecContext(ctx, grantOnly+"GRANT "+role+" TO "+acct)
	}
	switch errNumber(err) {
	case 0:
		if err != nil {
			return created, fmt.Errorf("grant marker role: %w", err)
		}
		return created, nil
	case errRoleDenied, errSpecificAccess, errDBAccessDenied:
		d.warnUnmarked(ctx, recordUID)
		return created, nil
	}
	return created, fmt.Errorf("grant marker role: %w", err)
}

// warnUnmarked logs, once per target and driver, that its users go unmarked.
func (d *Driver) warnUnmarked(ctx context.Context, recordUID string) {
	if _, warned := d.unmarked.LoadOrStore(recordUID, true); warned {
		return
	}
	d.logger.WarnContext(ctx, "the admin may not give lease users the target's marker role; they are created unmarked, "+
		"and reconciliation will report rather than drop them if they are left behind (MySQL 8: GRANT ROLE_ADMIN to the admin)",
		slog.String("role", markerPrefix+recordUID))
}

// ListUsers lists the users holding the target's marker role, and with req.Unmarked
// also the users with a lease user's name holding no SyVault marker at all. The admin
// needs SELECT on mysql.roles_mapping (MariaDB) or mysql.role_edges (MySQL 8), and for
// unmarked users SELECT (User, Host) on mysql.user: account names only, no password
// hashes. Without them it fails with ETargetUnverified naming the GRANT.
func (d *Driver) ListUsers(ctx context.Context, req driver.ListUsersRequest) ([]driver.ListedUser, error) {
	const op = "mysql.ListUsers"
	if _, err := markerRole(req.RecordUID); err != nil {
		return nil, fail(op, err, events.EInternal, "The target's record uid cannot name a marker role.", req.Conn.Password)
	}
	conn, err := d.connect(ctx, req.Conn)
	if err != nil {
		return nil, fail(op, err, events.EInternal, "Could not connect to the target.", req.Conn.Password)
	}
	defer conn.Close()
	var admin string
	if err := conn.QueryRowContext(ctx, "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)").Scan(&admin); err != nil {
		return nil, fail(op, err, events.EInternal, "Could not read the admin's name.", req.Conn.Password)
	}
	marked, err := markedUsers(ctx, conn)
	if err != nil {
		return nil, fail(op, err, events.EInternal, "Could not list the target's users.", req.Conn.Password)
	}
	var out []driver.ListedUser
	for _, m := range marked {
		if m.role == markerPrefix+req.RecordUID && m.user != admin && driver.IsLeaseUsername(m.user) {
			out = append(out, driver.ListedUser{Username: m.user, Marked: true})
		}
	}
	if !req.Unmarked {
		return out, nil
	}
	holders := map[string]bool{}
	for _, m := range marked {
		holders[m.user] = true
	}
	names, err := query[string](ctx, conn, "SELECT User FROM mysql.user WHERE User LIKE 'vf!_tmp!_%' ESCAPE '!' AND Host = '%'")
	if err != nil {
		return nil, fail(op, readDenied(err, "SELECT (User, Host) ON mysql.user"), events.EInternal, "Could not list the server's users.", req.Conn.Password)
	}
	for _, n := range names {
		if !holders[n] && n != admin && driver.IsLeaseUsername(n) {
			out = append(out, driver.ListedUser{Username: n})
		}
	}
	return out, nil
}

type roleGrant struct{ user, role string }

// markedUsers lists every grant of a SyVault marker role to an account @'%' without the
// ADMIN OPTION (which only the admin holds), from MariaDB's mysql.roles_mapping or, where
// that table does not exist, MySQL 8's mysql.role_edges.
func markedUsers(ctx context.Context, conn *sql.Conn) ([]roleGrant, error) {
	rows, err := conn.QueryContext(ctx, `SELECT User, Role FROM mysql.roles_mapping
		WHERE Role LIKE 'syvault!_%' ESCAPE '!' AND Host = '%' AND Admin_option <> 'Y'`)
	if errNumber(err) == errNoSuchTable {
		rows, err = conn.QueryContext(ctx, `SELECT TO_USER, FROM_USER FROM mysql.role_edges
			WHERE FROM_USER LIKE 'syvault!_%' ESCAPE '!' AND TO_HOST = '%' AND WITH_ADMIN_OPTION <> 'Y'`)
	}
	if err != nil {
		return nil, readDenied(err, "SELECT ON mysql.roles_mapping (MySQL 8: mysql.role_edges)")
	}
	defer rows.Close()
	var out []roleGrant
	for rows.Next() {
		var g roleGrant
		if err := rows.Scan(&g.user, &g.role); err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// readDenied turns a refused read of the mysql schema into an ETargetUnverified error
// naming the grant that allows it.
func readDenied(err error, grant string) error {
	switch errNumber(err) {
	case errTableAccessDenied, errColumnAccess, errDBAccessDenied:
		return events.Wrap(err, events.ETargetUnverified,
			"The admin may not list the server's users; as a server admin, run: GRANT "+grant+" TO the admin.")
	}
	return err
}

// query returns the single column of every row.
func query[T any](ctx context.Context, conn *sql.Conn, q string, args ...any) ([]T, error) {
	rows, err := conn.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var v T
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
