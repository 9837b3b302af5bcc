package mysql

import (
	"context"
	"database/sql"
)

// GrantListing gives grantee, run as a server admin on root, the reads ListUsers needs:
// SELECT on the role grants (MariaDB's mysql.roles_mapping, or MySQL 8's
// mysql.role_edges) and on the account names of mysql.user (no password hashes).
// Deployments run the same statements by hand; tests and the README's setup use this.
func GrantListing(ctx context.Context, root *sql.DB, grantee string) error {
	_, err := root.ExecContext(ctx, "GRANT SELECT ON mysql.roles_mapping TO "+grantee)
	if errNumber(err) == errNoSuchTable {
		_, err = root.ExecContext(ctx, "GRANT SELECT ON mysql.role_edges TO "+grantee)
	}
	if err != nil {
		return err
	}
	_, err = root.ExecContext(ctx, "GRANT SELECT (User, Host) ON mysql.user TO "+grantee)
	return err
}
