package mysql

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/syvault/syvault/events"
)

var (
	errNUL       = errors.New("string holds a NUL byte")
	errBackslash = errors.New("string holds a backslash")
)

// quoteString returns s as a single-quoted string literal for the statements that take
// no placeholders (CREATE/ALTER USER ... IDENTIFIED BY). Single quotes are doubled, which
// means one quote whatever the sql_mode. A backslash is refused rather than escaped: it is
// an escape character unless sql_mode has NO_BACKSLASH_ESCAPES, and the driver cannot
// know a pooled session's mode without asking it each time. NUL is refused too.
func quoteString(s string) (string, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return "", errNUL
	}
	if strings.IndexByte(s, '\\') >= 0 {
		return "", errBackslash
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'", nil
}

// quoteIdent returns name as a backtick-quoted identifier, backticks doubled.
func quoteIdent(name string) string {
	return "`" + strings.ReplaceAll(name, "`", "``") + "`"
}

// dbPattern quotes a database name for a database-level grant (ON db.*), where _ and %
// are wildcards: escaped, the grant covers that database only.
func dbPattern(name string) string { return quoteIdent(escapePattern(name)) }

// escapePattern escapes the wildcards of a database-level grant's pattern.
func escapePattern(name string) string {
	return strings.NewReplacer(`\`, `\\`, `_`, `\_`, `%`, `\%`).Replace(name)
}

// account returns 'user'@'%'.
func account(user string) (string, error) {
	if user == "" {
		return "", errors.New("empty username")
	}
	if len([]rune(user)) > maxUsername {
		return "", fmt.Errorf("username longer than %d characters", maxUsername)
	}
	q, err := quoteString(user)
	if err != nil {
		return "", fmt.Errorf("username: %w", err)
	}
	return q + "@'%'", nil
}

// privileges a grant may name are events.MySQLPrivileges; they are spliced into GRANT as
// keywords, so nothing else may pass. Database- and table-level privileges only, and none
// that makes a DEFINER object: a target registered before those were refused fails its
// creates with a message saying to update it, rather than leaving objects that break when
// their lease user is dropped (or, on MySQL 8, stop the drop).

// grantSpec is a validated grant.
type grantSpec struct {
	database   string
	tables     []string
	privileges string
}

// parseGrants validates the grants, defaulting the database to defaultDB. Grant.Schema
// is ignored: in MySQL a schema is a database.
func parseGrants(grants []events.Grant, defaultDB string) ([]grantSpec, error) {
	if len(grants) == 0 {
		return nil, errors.New("no grants")
	}
	specs := make([]grantSpec, len(grants))
	for i, g := range grants {
		if sys, ok := events.SystemGrant(g); ok {
			return nil, fmt.Errorf("grant %d: names or matches the system database %q, which no lease may be granted", i+1, sys)
		}
		s := grantSpec{database: g.Database, tables: g.Tables}
		if s.database == "" {
			s.database = defaultDB
		}
		if s.database == "" {
			return nil, fmt.Errorf("grant %d: no database", i+1)
		}
		for _, name := range append([]string{s.database}, s.tables...) {
			if name == "" || strings.IndexByte(name, 0) >= 0 || len([]rune(name)) > 64 {
				return nil, fmt.Errorf("grant %d: invalid name %q", i+1, name)
			}
		}
		if len(g.Privileges) == 0 {
			return nil, fmt.Errorf("grant %d: no privileges", i+1)
		}
		privs := make([]string, len(g.Privileges))
		for j, p := range g.Privileges {
			p = strings.ToUpper(strings.Join(strings.Fields(p), " "))
			if !slices.Contains(events.MySQLPrivileges, p) {
				return nil, fmt.Errorf("grant %d: %q is not a privilege SyVault grants on MySQL (update the target)", i+1, p)
			}
			privs[j] = p
		}
		s.privileges = strings.Join(privs, ", ")
		specs[i] = s
	}
	return specs, nil
}

// grantOnly prefixes every GRANT to a lease account. MariaDB's GRANT creates a missing
// account, with no password, unless sql_mode holds NO_AUTO_CREATE_USER, which a server
// configured for older applications (an empty sql_mode) lacks: a GRANT racing the account's
// drop (a PUT's regrant, a create its revocation overtook) would bring the user back,
// passwordless, under a name its former holder knows. MySQL 8 never creates an account
// so, and reads the MariaDB-only comment as a comment.
const grantOnly = "/*M! SET STATEMENT sql_mode = 'NO_AUTO_CREATE_USER' FOR */ "

// accountWait bounds, on MariaDB, the statements that make or lock a lease's account:
// CREATE USER (and the reset of one an earlier attempt left) and ALTER USER … ACCOUNT
// LOCK. They wait, ignoring lock_wait_timeout, for a global read lock (FLUSH TABLES WITH
// READ LOCK, as mysqldump --lock-all-tables and older backup tools take it) for as long
// as it is held: a revocation waiting so ended no session, and it and a create failed at
// their deadline blaming the connection. Each changes one row, so a stop is a stop
// before any change or after all of it. MySQL reads the comment as a comment (its
// max_execution_time bounds only SELECTs).
const accountWait = "/*M! SET STATEMENT max_statement_time = 2 FOR */ "

// accountWaitReason is what a statement accountWait stopped was most likely waiting for:
// MariaDB does not tell, and nothing else such a statement waits on is held long.
const accountWaitReason = "MariaDB stopped the account statement after 2 s waiting, most likely for a global read lock " +
	"(FLUSH TABLES WITH READ LOCK, which mysqldump --lock-all-tables and some backup tools take)."

// statements returns the GRANTs giving acct this grant: one per table, or one on the
// whole database.
func (s grantSpec) statements(acct string) []string {
	if len(s.tables) == 0 {
		return []string{fmt.Sprintf(grantOnly+"GRANT %s ON %s.* TO %s", s.privileges, dbPattern(s.database), acct)}
	}
	out := make([]string, len(s.tables))
	for i, t := range s.tables {
		out[i] = fmt.Sprintf(grantOnly+"GRANT %s ON %s.%s TO %s", s.privileges, quoteIdent(s.database), quoteIdent(t), acct)
	}
	return out
}

// describe names the grant in messages a user sees.
func (s grantSpec) describe(i int) string {
	if len(s.tables) == 0 {
		return fmt.Sprintf("grant %d (%s on %s.*)", i+1, s.privileges, s.database)
	}
	return fmt.Sprintf("grant %d (%s on %s.{%s})", i+1, s.privileges, s.database, strings.Join(s.tables, ","))
}

// grantFailure says in a few words why a GRANT failed.
func grantFailure(err error) string {
	switch errNumber(err) {
	case errNoSuchTable:
		return "a table does not exist"
	case errBadDB:
		return "the database does not exist"
	case errDBAccessDenied, errTableAccessDenied, errSpecificAccess, errCantCreateUser:
		return "the admin may not grant these privileges (it must hold them WITH GRANT OPTION)"
	}
	return "the admin could not apply it"
}
