package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// The README marks each block a test runs with an HTML comment on the line before its
// fence, <!-- readme-test: NAME -->, which renders as nothing.
const readmeMarker = "<!-- readme-test: "

var readmeText = sync.OnceValues(func() (string, error) {
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	return string(data), err
})

// readmeBlock returns the body of the fenced block marked name in README.md.
func readmeBlock(tb testing.TB, name string) string {
	tb.Helper()
	text, err := readmeText()
	if err != nil {
		tb.Fatal(err)
	}
	marker := readmeMarker + name + " -->\n"
	i := strings.Index(text, marker)
	if i < 0 {
		tb.Fatalf("README.md has no block marked %q", name)
	}
	if strings.Contains(text[i+len(marker):], marker) {
		tb.Fatalf("README.md marks two blocks %q", name)
	}
	rest := text[i+len(marker):]
	if !strings.HasPrefix(rest, "```") {
		tb.Fatalf("README.md: the line after the marker %q is not a fence", name)
	}
	_, body, _ := strings.Cut(rest, "\n")
	end := strings.Index(body, "\n```")
	if end < 0 {
		tb.Fatalf("README.md: the block %q is not closed", name)
	}
	return body[:end+1]
}

// adminNames are what a reader of "Preparing a target" replaces in its statements.
type adminNames struct {
	Admin, Password, Database, Schema string
	// Privileges replaces the privilege list of the table grant; empty keeps the README's.
	Privileges string
}

// The README's placeholders.
const (
	readmeAdmin      = "syvault_admin"
	readmePassword   = "change-me"
	readmeDatabase   = "myapp"
	readmeSchema     = "public"
	readmePrivileges = "SELECT, INSERT, UPDATE, DELETE"
)

var (
	adminWord    = regexp.MustCompile(`\b` + readmeAdmin + `\b`)
	databaseWord = regexp.MustCompile(`\b` + readmeDatabase + `\b`)
	schemaWord   = regexp.MustCompile(`\b` + readmeSchema + `\b`)
)

// adminStatements returns the README's statements that make a target's admin on engine
// ("postgresql" or "mysql"), one per element, with n's names in place of the README's.
// A psql meta-command (\connect DB) is an element of its own.
func adminStatements(tb testing.TB, engine string, n adminNames) []string {
	tb.Helper()
	text := readmeBlock(tb, "admin-sql-"+engine)
	for _, placeholder := range []string{readmeAdmin, readmePassword, readmeDatabase, readmePrivileges} {
		if !strings.Contains(text, placeholder) {
			tb.Fatalf("the README's %s admin statements no longer name %q", engine, placeholder)
		}
	}
	if n.Privileges != "" {
		text = strings.ReplaceAll(text, readmePrivileges, n.Privileges)
	}
	text = adminWord.ReplaceAllLiteralString(text, n.Admin)
	text = strings.ReplaceAll(text, "'"+readmePassword+"'", "'"+n.Password+"'")
	text = databaseWord.ReplaceAllLiteralString(text, n.Database)
	if n.Schema != "" {
		text = schemaWord.ReplaceAllLiteralString(text, n.Schema)
	}
	var stmts []string
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "--"):
			continue
		case strings.HasPrefix(trimmed, `\`):
			stmts = append(stmts, trimmed)
			continue
		}
		cur.WriteString(line + "\n")
		if strings.HasSuffix(trimmed, ";") {
			stmts = append(stmts, strings.TrimSpace(cur.String()))
			cur.Reset()
		}
	}
	if strings.TrimSpace(cur.String()) != "" {
		tb.Fatalf("the README's %s admin statements end without a semicolon: %q", engine, cur.String())
	}
	return stmts
}

// runAdminStatements runs stmts as the database's superuser, starting in database
// (maintenance for PostgreSQL), following \connect as psql does; exec runs one statement
// in a database.
func runAdminStatements(tb testing.TB, stmts []string, database string, exec func(db, stmt string) error) {
	tb.Helper()
	for _, s := range stmts {
		if db, ok := strings.CutPrefix(s, `\connect `); ok {
			database = strings.TrimSpace(db)
			continue
		}
		if strings.HasPrefix(s, `\`) {
			tb.Fatalf("the README's admin statements use a psql command the tests do not know: %s", s)
		}
		if err := exec(database, s); err != nil {
			tb.Fatalf("README statement %q: %v", s, err)
		}
	}
}
