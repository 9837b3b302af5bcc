package postgres

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
)

var errNUL = errors.New("literal holds a NUL byte")

// quoteLiteral returns s as a SQL string literal, for the statements that take no bind
// parameters (CREATE/ALTER ROLE ... PASSWORD, VALID UNTIL). Single quotes are doubled;
// when s holds a backslash it is doubled too and the literal written E'...', which reads
// the same whatever standard_conforming_strings is (PQescapeLiteral does the same). NUL
// cannot appear in a PostgreSQL string, so it is refused rather than truncated.
func quoteLiteral(s string) (string, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return "", errNUL
	}
	q := strings.ReplaceAll(s, "'", "''")
	if strings.Contains(q, `\`) {
		return `E'` + strings.ReplaceAll(q, `\`, `\\`) + `'`, nil
	}
	return "'" + q + "'", nil
}

// connectionLimit is PostgreSQL's CONNECTION LIMIT for n sessions, 0 meaning none (-1).
func connectionLimit(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// validUntil returns the VALID UNTIL literal for t: an explicit UTC offset so the
// session's TimeZone cannot shift it, and 'infinity' for the zero time.
func validUntil(t time.Time) string {
	if t.IsZero() {
		return "'infinity'"
	}
	return "'" + t.UTC().Format("2006-01-02 15:04:05.999999-07:00") + "'"
}

// tablePrivileges are the table privileges a grant may name; they are spliced into GRANT
// as keywords, so nothing else may pass. CREATE is the one schema privilege, handled apart.
// TRIGGER is never granted (see events.PostgreSQLPrivileges): a lease user's trigger on a
// table it does not own runs as whoever writes to the table, after the lease too.
var tablePrivileges = map[string]bool{
	"SELECT": true, "INSERT": true, "UPDATE": true, "DELETE": true,
	"TRUNCATE": true, "REFERENCES": true,
}

// allPrivileges is what ALL [PRIVILEGES] grants on a table: spelled out, so that neither
// TRIGGER nor a privilege a later PostgreSQL adds to ALL comes with it.
var allPrivileges = []string{"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES"}

// grantSpec is a validated grant.
type grantSpec struct {
	database   string
	schema     string
	tables     []string
	privileges []string // table privileges, for the GRANT statement
	check      []string // each table privilege to verify, ALL expanded
	// create is CREATE on the schema: lease users may create objects there, which then
	// belong to the target's group role.
	create bool
}

// parseGrant validates g, defaulting the database to defaultDB and the schema to public.
func parseGrant(g events.Grant, defaultDB string) (grantSpec, error) {
	if sys, ok := events.SystemGrant(g); ok {
		return grantSpec{}, fmt.Errorf("names or matches the system database or schema %q, which no lease may be granted", sys)
	}
	s := grantSpec{database: g.Database, schema: g.Schema, tables: g.Tables}
	if s.database == "" {
		s.database = defaultDB
	}
	if s.schema == "" {
		s.schema = "public"
	}
	for _, name := range append([]string{s.database, s.schema}, s.tables...) {
		if err := checkIdentifier(name); err != nil {
			return grantSpec{}, err
		}
	}
	if len(g.Privileges) == 0 {
		return grantSpec{}, errors.New("no privileges")
	}
	seen := map[string]bool{}
	for _, p := range g.Privileges {
		p = strings.ToUpper(strings.Join(strings.Fields(p), " "))
		switch {
		case p == "CREATE":
			s.create = true
		case p == "ALL" || p == "ALL PRIVILEGES":
			for _, a := range allPrivileges {
				if !seen[a] {
					seen[a] = true
					s.privileges = append(s.privileges, a)
					s.check = append(s.check, a)
				}
			}
		case p == "TRIGGER":
			return grantSpec{}, errors.New("TRIGGER is never granted: a lease user's trigger runs as whoever writes to the table, and outlives the lease")
		case tablePrivileges[p]:
			if !seen[p] {
				seen[p] = true
				s.privileges = append(s.privileges, p)
				s.check = append(s.check, p)
			}
		default:
			return grantSpec{}, fmt.Errorf("%q is not a table privilege or CREATE", p)
		}
	}
	return s, nil
}

// describe names the grant in messages a user sees.
func (s grantSpec) describe(i int) string {
	privs := s.privileges
	if s.create {
		privs = append(slices.Clone(privs), "CREATE on the schema")
	}
	if len(s.tables) == 0 {
		return fmt.Sprintf("grant %d (%s on all tables of %s.%s)", i+1, strings.Join(privs, ", "), s.database, s.schema)
	}
	return fmt.Sprintf("grant %d (%s on %s.%s.{%s})", i+1, strings.Join(privs, ", "), s.database, s.schema, strings.Join(s.tables, ","))
}

// statements returns the GRANTs that give group this grant; schemaTables, for a grant
// naming no tables, are the schema's tables it covers (see schemaTables).
func (s grantSpec) statements(group string, schemaTables []string) string {
	g := ident(group)
	privs := strings.Join(s.privileges, ", ")
	var b strings.Builder
	fmt.Fprintf(&b, "GRANT CONNECT ON DATABASE %s TO %s;\n", ident(s.database), g)
	schemaPrivs := "USAGE"
	if s.create {
		schemaPrivs = "USAGE, CREATE"
	}
	fmt.Fprintf(&b, "GRANT %s ON SCHEMA %s TO %s;\n", schemaPrivs, ident(s.schema), g)
	switch {
	case privs == "":
	case len(s.tables) == 0:
		if len(schemaTables) > 0 {
			fmt.Fprintf(&b, "GRANT %s ON TABLE %s TO %s;\n", privs, strings.Join(schemaTables, ", "), g)
		}
		// Tables the admin creates later get the privileges too. Only for schema-wide
		// grants: a grant listing tables must not widen to tables created after it.
		fmt.Fprintf(&b, "ALTER DEFAULT PRIVILEGES IN SCHEMA %s GRANT %s ON TABLES TO %s;\n", ident(s.schema), privs, g)
	default:
		tables := make([]string, len(s.tables))
		for i, t := range s.tables {
			tables[i] = ident(s.schema, t)
		}
		fmt.Fprintf(&b, "GRANT %s ON TABLE %s TO %s;\n", privs, strings.Join(tables, ", "), g)
	}
	return b.String()
}

// passwordLiteral is the PASSWORD clause's literal: the verifier prepared ahead when
// there is one, else password's SCRAM verifier when it can be computed here, else the
// quoted plaintext.
func passwordLiteral(password, prepared string) (string, error) {
	if prepared != "" {
		return quoteLiteral(prepared)
	}
	if v, ok := driver.SCRAMVerifier(password); ok {
		return quoteLiteral(v)
	}
	return quoteLiteral(password)
}
