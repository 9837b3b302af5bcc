package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/syvault/syvault/events"
)

// adminRights returns one ETargetUnverified *events.Error listing every right the admin
// lacks, read from information_schema (which shows an account its own privileges), so an
// operator fixes them all at once rather than one refusal at a time: CREATE USER and
// PROCESS, CONNECTION ADMIN or SUPER, and each grant's privileges WITH GRANT OPTION. The
// probe in Prepare stays the proof; this only makes the first answer complete.
func adminRights(ctx context.Context, conn *sql.Conn, specs []grantSpec) error {
	var who string
	if err := conn.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&who); err != nil {
		return fmt.Errorf("check admin rights: %w", err)
	}
	user, host, _ := strings.Cut(who, "@")
	grantee := "'" + user + "'@'" + host + "'"
	global, err := privilegeSet(ctx, conn, "SELECT PRIVILEGE_TYPE, IS_GRANTABLE, '' FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ?", grantee)
	if err != nil {
		return err
	}
	var missing []string
	for _, p := range []string{"CREATE USER", "PROCESS"} {
		if _, ok := global[p]; !ok {
			missing = append(missing, p+" ON *.*")
		}
	}
	// MariaDB names the privilege CONNECTION ADMIN; MySQL 8 lists the dynamic privilege
	// CONNECTION_ADMIN, and its GRANT wants that spelling too.
	connectionAdmin := "CONNECTION ADMIN"
	var version string
	if err := conn.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err == nil && !strings.Contains(strings.ToLower(version), "mariadb") {
		connectionAdmin = "CONNECTION_ADMIN"
	}
	_, admin := global["CONNECTION ADMIN"]
	if _, ok := global["CONNECTION_ADMIN"]; ok {
		admin = true
	}
	_, super := global["SUPER"]
	if !admin && !super {
		missing = append(missing, "CONNECTION ADMIN (MySQL 8: CONNECTION_ADMIN) or SUPER ON *.*")
	}
	// Reconciliation lists who holds the target's marker role and which accounts look like
	// lease users: reads of the role grants and of account names, never password hashes.
	roleGrants := "mysql.roles_mapping"
	if connectionAdmin == "CONNECTION_ADMIN" {
		roleGrants = "mysql.role_edges"
	}
	var reads []string
	for _, r := range []struct{ probe, grant string }{
		{"SELECT 1 FROM " + roleGrants + " LIMIT 0", "SELECT ON " + roleGrants},
		{"SELECT User, Host FROM mysql.user LIMIT 0", "SELECT (User, Host) ON mysql.user"},
	} {
		rows, err := conn.QueryContext(ctx, r.probe)
		if err == nil {
			rows.Close()
			continue
		}
		if n := errNumber(err); n != errTableAccessDenied && n != errColumnAccess && n != errDBAccessDenied {
			return fmt.Errorf("check admin rights: %w", err)
		}
		missing = append(missing, r.grant+" (to list the users SyVault made, for reconciliation)")
		reads = append(reads, "GRANT "+r.grant+" TO "+grantee)
	}
	schema, err := privilegeSet(ctx, conn, "SELECT PRIVILEGE_TYPE, IS_GRANTABLE, TABLE_SCHEMA FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = ?", grantee)
	if err != nil {
		return err
	}
	table, err := privilegeSet(ctx, conn, "SELECT PRIVILEGE_TYPE, IS_GRANTABLE, CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE = ?", grantee)
	if err != nil {
		return err
	}
	grantable := func(priv, db, tbl string) bool {
		if global[priv] != nil && global[priv][""] {
			return true
		}
		for _, d := range []string{db, escapePattern(db)} {
			if schema[priv] != nil && schema[priv][d] {
				return true
			}
		}
		return tbl != "" && table[priv] != nil && table[priv][db+"."+tbl]
	}
	var statements []string
	for i, s := range specs {
		var lacking []string
		for _, p := range strings.Split(s.privileges, ", ") {
			ok := len(s.tables) > 0
			for _, t := range s.tables {
				ok = ok && grantable(p, s.database, t)
			}
			if len(s.tables) == 0 {
				ok = grantable(p, s.database, "")
			}
			if !ok {
				lacking = append(lacking, p)
			}
		}
		if len(lacking) > 0 {
			missing = append(missing, fmt.Sprintf("%s WITH GRANT OPTION for %s", strings.Join(lacking, ", "), s.describe(i)))
			statements = append(statements, fmt.Sprintf("GRANT %s ON %s.* TO %s WITH GRANT OPTION", strings.Join(lacking, ", "), dbPattern(s.database), grantee))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	var globals []string
	for _, p := range []string{"CREATE USER", "PROCESS", connectionAdmin} {
		if _, ok := global[p]; !ok && !(p == connectionAdmin && (admin || super)) {
			globals = append(globals, p)
		}
	}
	if len(globals) > 0 {
		statements = append([]string{fmt.Sprintf("GRANT %s ON *.* TO %s", strings.Join(globals, ", "), grantee)}, statements...)
	}
	statements = append(statements, reads...)
	return events.Errorf(events.ETargetUnverified, "The admin %s lacks: %s. As a server admin, run: %s. See the README's \"Preparing a target\".",
		grantee, strings.Join(missing, "; "), strings.Join(statements, "; "))
}

// privilegeSet reads (privilege, grantable, object) rows into privilege -> object ->
// grantable.
func privilegeSet(ctx context.Context, conn *sql.Conn, query, grantee string) (map[string]map[string]bool, error) {
	rows, err := conn.QueryContext(ctx, query, grantee)
	if err != nil {
		return nil, fmt.Errorf("check admin rights: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]bool{}
	for rows.Next() {
		var priv, grantable, object string
		if err := rows.Scan(&priv, &grantable, &object); err != nil {
			return nil, fmt.Errorf("check admin rights: %w", err)
		}
		if out[priv] == nil {
			out[priv] = map[string]bool{}
		}
		out[priv][object] = out[priv][object] || grantable == "YES"
	}
	return out, rows.Err()
}
