package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
)

var _ driver.UserLister = (*Driver)(nil)

// ListUsers lists the lease users of a target: the members of its group role
// syvault_<record uid> that have a lease user's name. Membership is the marker: only an
// admin of the group (SyVault's admin, or a superuser) can make a role a member. The
// admin is a member of every group but never listed, nor is anything else that is not
// named like a lease user (a role an operator added to the group keeps it). With
// req.Unmarked it adds the roles named like lease users that are members of no
// syvault_ group at all. Roles are cluster-wide, so this reads pg_roles and
// pg_auth_members, which every role may read: it needs no right beyond login.
func (d *Driver) ListUsers(ctx context.Context, req driver.ListUsersRequest) ([]driver.ListedUser, error) {
	const op = "postgres.ListUsers"
	group, err := groupName(req.RecordUID)
	if err != nil {
		return nil, fail(op, err, events.EInternal, "The target's record uid cannot name a PostgreSQL role.", req.Conn.Password)
	}
	conn, err := d.acquire(ctx, req.Conn, req.Conn.Database)
	if sqlState(err) == stateInvalidCatalog {
		conn, err = d.acquire(ctx, req.Conn, maintenanceDB)
	}
	if err != nil {
		return nil, fail(op, err, events.EInternal, "Could not connect to the target.", req.Conn.Password)
	}
	defer conn.Release()
	// The admin's own memberships (in every group, and the passing one in a user during
	// a drop's REASSIGN OWNED) never make it a lease user: it is left out by name.
	rows, err := conn.Query(ctx, `SELECT u.rolname, true FROM pg_catalog.pg_auth_members m
		JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
		JOIN pg_catalog.pg_roles u ON u.oid = m.member
		WHERE g.rolname = $1 AND u.rolname <> CURRENT_USER AND NOT u.rolsuper
		UNION ALL
		SELECT u.rolname, false FROM pg_catalog.pg_roles u
		WHERE $2 AND pg_catalog.starts_with(u.rolname, 'vf_tmp_') AND u.rolname <> CURRENT_USER AND NOT u.rolsuper
		AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
			WHERE m.member = u.oid AND pg_catalog.starts_with(g.rolname, $3))`, group, req.Unmarked, groupPrefix)
	if err != nil {
		return nil, fail(op, fmt.Errorf("list users: %w", err), events.EInternal, "Could not list the target's users.", req.Conn.Password)
	}
	users, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (driver.ListedUser, error) {
		var u driver.ListedUser
		return u, r.Scan(&u.Username, &u.Marked)
	})
	if err != nil {
		return nil, fail(op, fmt.Errorf("list users: %w", err), events.EInternal, "Could not list the target's users.", req.Conn.Password)
	}
	out := users[:0]
	for _, u := range users {
		if driver.IsLeaseUsername(u.Username) {
			out = append(out, u)
		}
	}
	return out, nil
}
