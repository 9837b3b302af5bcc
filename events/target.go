package events

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Privileges each engine lets a target grant. Anything outside these lists is refused at
// registration, so a target can never hand out ownership, role or server administration.
//
// PostgreSQL's CREATE is CREATE on the grant's schema (for migrations run with lease
// credentials); every other PostgreSQL privilege is a table privilege. What a lease user
// creates belongs to the target's group role, never to the admin.
//
// PostgreSQL leaves out TRIGGER: a trigger a lease user attaches to a table it does not
// own runs its function as whoever writes to that table (its owner, a DBA, the admin),
// and it stays on the table after the lease ends, since a trigger belongs to its table.
//
// MySQL leaves out what makes DEFINER objects (CREATE VIEW, TRIGGER, CREATE ROUTINE,
// EVENT): such an object names the lease user as its definer, so it breaks once the user
// is dropped (MariaDB) or makes DROP USER fail (MySQL 8), a revocation that never ends.
var (
	PostgreSQLPrivileges = []string{"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "CREATE"}
	MySQLPrivileges      = []string{"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "INDEX", "ALTER",
		"SHOW VIEW", "EXECUTE", "LOCK TABLES", "CREATE TEMPORARY TABLES", "REFERENCES"}
	// definerPrivileges are refused on MySQL with a message saying why.
	definerPrivileges = []string{"CREATE VIEW", "TRIGGER", "CREATE ROUTINE", "ALTER ROUTINE", "EVENT"}
)

// SystemDatabases are the databases and schemas a grant may never name, on either engine:
// write access to them is administration of the server (a MySQL lease granted INSERT on
// mysql could make itself a second account that outlives its revocation).
var SystemDatabases = []string{"mysql", "information_schema", "performance_schema", "sys", "pg_catalog", "pg_toast"}

// templateDatabases are PostgreSQL's templates. A lease has no business there, and the
// admin sessions SyVault keeps open in a target's databases would make every CREATE
// DATABASE copying one fail.
var templateDatabases = []string{"template0", "template1"}

// systemName reports whether name is, or as a MySQL database pattern (_ and % are
// wildcards in a database-level GRANT) could match, a system database or schema, and
// which one. PostgreSQL reserves every schema name starting with pg_.
func systemName(name string) (string, bool) {
	lower := strings.ToLower(name)
	if strings.HasPrefix(lower, "pg_") {
		return lower, true
	}
	for _, sys := range SystemDatabases {
		if likeMatch(lower, sys) {
			return sys, true
		}
	}
	return "", false
}

// SystemGrant says which system database or schema grant g names or matches, if any, as
// registration refuses it (NormalizeTarget). The drivers check again every grant they
// apply: a target's grants come from its events, which whoever can write to NATS can
// forge past the API's checks.
func SystemGrant(g Grant) (string, bool) {
	if sys, ok := systemName(g.Database); ok {
		return sys, true
	}
	if g.Schema != "" {
		return systemName(g.Schema)
	}
	return "", false
}

// likeMatch reports whether pattern, read as SQL LIKE without escapes (_ any one
// character, % any run), matches s.
func likeMatch(pattern, s string) bool {
	if pattern == "" {
		return s == ""
	}
	switch pattern[0] {
	case '%':
		for i := 0; i <= len(s); i++ {
			if likeMatch(pattern[1:], s[i:]) {
				return true
			}
		}
		return false
	case '_':
		return s != "" && likeMatch(pattern[1:], s[1:])
	}
	return s != "" && s[0] == pattern[0] && likeMatch(pattern[1:], s[1:])
}

// MaxConnectionLimit bounds a target's connection_limit: more than any server's
// max_connections is no limit at all.
const MaxConnectionLimit = 10000

// MaxTTLSeconds is the cap on any lease's TTL.
const MaxTTLSeconds = 86400

// identifier is what SyVault accepts as a database, schema or table name: printable, no
// NUL, not absurdly long. Names are always quoted by the drivers; this only keeps out
// input no real database object has.
var identifier = regexp.MustCompile(`^[^\x00-\x1f\x7f]{1,63}$`)

// SameServer reports whether o is reached at the same database server as t: a lease's
// user lives there, so only such a registration may stand in for the lease's own snapshot.
func (t Target) SameServer(o Target) bool {
	return t.Engine == o.Engine && t.Host == o.Host && t.Port == o.Port
}

// AdminPasswordAAD is what a target's sealed admin password is bound to: the record and
// everything the admin connection goes by (engine, host, port, database, admin user, TLS
// mode, CA). Whoever can write to NATS can put a target naming their own server, or a
// weaker TLS mode, next to a sealed password copied from the audit trail; bound, that
// password does not open there, so no worker ever sends it anywhere but where it was
// registered for.
func (t Target) AdminPasswordAAD() []byte {
	b, _ := json.Marshal([]any{"syvault target admin password", t.RecordUID, t.Engine, t.Host, t.Port,
		t.Database, t.AdminUsername, t.TLSMode, t.CACert}) // strings and ints: never fails
	return b
}

// LegacyAdminPasswordAAD is what admin passwords sealed before AdminPasswordAAD were
// bound to: the record uid alone. They keep opening, so an upgrade loses no revocation
// (the workers check the connection they were first recorded with), until a PUT or a
// master key change reseals them bound. ok is false
// for a record uid SyVault never made: the uid comes from the event, and one spelled as
// another secret's associated data (a bound password's, a lease id, a token key's) would
// open that secret as this target's admin password.
func (t Target) LegacyAdminPasswordAAD() (aad []byte, ok bool) {
	return []byte(t.RecordUID), legacyRecordUID.MatchString(t.RecordUID)
}

// legacyRecordUID is every record uid SyVault has made: 12 base62 characters.
var legacyRecordUID = regexp.MustCompile(`^[0-9A-Za-z]{12}$`)

// NormalizeTarget fills defaults and checks a target a client submitted. It returns an
// *Error with code EInvalid naming the first field to fix.
func NormalizeTarget(t *Target) error {
	bad := func(format string, args ...any) error { return Errorf(EInvalid, format, args...) }
	t.Name = strings.TrimSpace(t.Name)
	if t.Name == "" || len(t.Name) > 128 {
		return bad("name is required and must be at most 128 characters.")
	}
	var allowed []string
	switch t.Engine {
	case PostgreSQL:
		allowed = PostgreSQLPrivileges
	case MySQL:
		allowed = MySQLPrivileges
	default:
		return bad("engine must be %q or %q.", PostgreSQL, MySQL)
	}
	if t.Host == "" || len(t.Host) > 253 || strings.ContainsAny(t.Host, " /@?#") {
		return bad("host must be a host name or IP address.")
	}
	if t.Port < 1 || t.Port > 65535 {
		return bad("port must be between 1 and 65535.")
	}
	if t.ConnectionPort < 0 || t.ConnectionPort > 65535 {
		return bad("connection_port must be between 1 and 65535.")
	}
	if len(t.CACert) > 64<<10/2 || (t.CACert != "" && !strings.Contains(t.CACert, "-----BEGIN CERTIFICATE-----")) {
		return bad("ca_cert must be a PEM bundle of CERTIFICATE blocks.")
	}
	if strings.ContainsAny(t.ConnectionHost, " /@?#") {
		return bad("connection_host must be a host name or IP address.")
	}
	if !identifier.MatchString(t.Database) {
		return bad("database is required (1 to 63 printable characters).")
	}
	if sys, ok := systemName(t.Database); ok && !strings.HasPrefix(strings.ToLower(t.Database), "pg_") {
		return bad("database: %q names or matches the system database %q; name the application's database.", t.Database, sys)
	}
	if t.Engine == PostgreSQL && slices.Contains(templateDatabases, t.Database) {
		return bad("database: %q is a template every CREATE DATABASE copies, which fails while a session is connected to it, "+
			"as SyVault's admin sessions would be; name the application's database.", t.Database)
	}
	if !identifier.MatchString(t.AdminUsername) {
		return bad("admin_username is required (1 to 63 printable characters).")
	}
	switch t.TLSMode {
	case "":
		t.TLSMode = TLSRequire
	case TLSDisable, TLSRequire, TLSVerifyFull:
	default:
		return bad("tls_mode must be %q, %q or %q.", TLSDisable, TLSRequire, TLSVerifyFull)
	}
	switch {
	case t.MaxTTLSeconds == 0:
		t.MaxTTLSeconds = MaxTTLSeconds
	case t.MaxTTLSeconds < 1 || t.MaxTTLSeconds > MaxTTLSeconds:
		return Errorf(EInvalidTTL, "max_ttl_seconds must be between 1 and %d.", MaxTTLSeconds)
	}
	if t.ConnectionLimit < 0 || t.ConnectionLimit > MaxConnectionLimit {
		return bad("connection_limit must be between 1 and %d sessions per lease user (0 or absent: no limit).", MaxConnectionLimit)
	}
	if len(t.Grants) == 0 || len(t.Grants) > 32 {
		return bad("grants must list between 1 and 32 grants.")
	}
	for i := range t.Grants {
		g := &t.Grants[i]
		if !identifier.MatchString(g.Database) {
			return bad("grants[%d].database is required (1 to 63 printable characters).", i)
		}
		if sys, ok := systemName(g.Database); ok {
			return bad("grants[%d].database: %q names or matches the system database %q, which no lease may be granted.", i, g.Database, sys)
		}
		switch t.Engine {
		case PostgreSQL:
			if !identifier.MatchString(g.Schema) {
				return bad("grants[%d].schema is required for PostgreSQL.", i)
			}
			if slices.Contains(templateDatabases, g.Database) {
				return bad("grants[%d].database: %q is a template every CREATE DATABASE copies, which fails while a session is "+
					"connected to it, as SyVault's admin sessions would be.", i, g.Database)
			}
			if sys, ok := systemName(g.Schema); ok {
				return bad("grants[%d].schema: %q is the system schema %q, which no lease may be granted.", i, g.Schema, sys)
			}
		case MySQL:
			if g.Schema != "" {
				return bad("grants[%d].schema does not apply to MySQL; name the database only.", i)
			}
		}
		for _, tb := range g.Tables {
			if !identifier.MatchString(tb) || tb == "*" {
				return bad("grants[%d].tables must name tables (omit it for all tables).", i)
			}
		}
		if len(g.Privileges) == 0 {
			return bad("grants[%d].privileges must list at least one privilege.", i)
		}
		for j, p := range g.Privileges {
			p = strings.ToUpper(strings.Join(strings.Fields(p), " "))
			if t.Engine == MySQL && slices.Contains(definerPrivileges, p) {
				return bad("grants[%d].privileges: %s is not granted on MySQL: what it creates names the lease user as DEFINER, "+
					"so it would break when the lease ends (MariaDB) or block the user's drop (MySQL 8). "+
					"Create views, triggers, routines and events as the admin or a migration account you manage.", i, p)
			}
			if t.Engine == PostgreSQL && p == "TRIGGER" {
				return bad("grants[%d].privileges: TRIGGER is not granted on PostgreSQL: a trigger a lease user attaches to a table "+
					"runs its code as whoever writes to that table, and outlives the lease. "+
					"Create triggers as the table's owner or a migration account you manage.", i)
			}
			if !slices.Contains(allowed, p) {
				return bad("grants[%d].privileges: %q is not allowed for %s (allowed: %s).", i, g.Privileges[j], t.Engine, strings.Join(allowed, ", "))
			}
			g.Privileges[j] = p
		}
	}
	return nil
}

// ValidTTL checks a requested TTL against the global cap and a target's (or client's) cap.
func ValidTTL(ttlSeconds, maxSeconds int) error {
	if maxSeconds <= 0 || maxSeconds > MaxTTLSeconds {
		maxSeconds = MaxTTLSeconds
	}
	if ttlSeconds < 1 || ttlSeconds > maxSeconds {
		return Errorf(EInvalidTTL, "ttl_seconds must be between 1 and %d.", maxSeconds)
	}
	return nil
}

// ConnectionAddress is the host and port applications are told to connect to.
func (t *Target) ConnectionAddress() (string, int) {
	host, port := t.Host, t.Port
	if t.ConnectionHost != "" {
		host = t.ConnectionHost
	}
	if t.ConnectionPort != 0 {
		port = t.ConnectionPort
	}
	return host, port
}

// String describes the target without its secret.
func (t *Target) String() string {
	return fmt.Sprintf("%s %s (%s:%d/%s)", t.Engine, t.RecordUID, t.Host, t.Port, t.Database)
}
