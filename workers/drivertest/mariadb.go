package drivertest

import (
	"database/sql"
)

// DropMarkerRoles drops, as root, the MariaDB marker roles admin made (MariaDB gives a
// role's creator the role with its admin option) and the lease users still holding them:
// users of leases a test left active, whose server stopped before their expiry. Tests
// call it before dropping an admin of their own, so the shared server keeps nothing of
// theirs. Errors are ignored: it is cleanup.
func DropMarkerRoles(root *sql.DB, admin string) {
	for _, role := range column(root, "SELECT DISTINCT Role FROM mysql.roles_mapping WHERE User = ? AND Role LIKE 'syvault\\_%'", admin) {
		for _, user := range column(root, "SELECT User FROM mysql.roles_mapping WHERE Role = ? AND User LIKE 'vf\\_tmp\\_%' AND Host = '%'", role) {
			_, _ = root.Exec("DROP USER IF EXISTS '" + user + "'@'%'") // names SyVault made: [a-z0-9_]
		}
		_, _ = root.Exec("DROP ROLE IF EXISTS `" + role + "`")
	}
}

// column returns the first column of every row of q, or nothing on error.
func column(db *sql.DB, q string, args ...any) []string {
	rows, err := db.Query(q, args...)
	if err != nil {
		return nil
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if rows.Scan(&s) == nil {
			out = append(out, s)
		}
	}
	return out
}
