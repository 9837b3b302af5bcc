package postgres

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
)

func TestQuoteLiteral(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		err            error
	}{
		{name: "plain", in: "abc", want: "'abc'"},
		{name: "empty", in: "", want: "''"},
		{name: "quote", in: "a'b", want: "'a''b'"},
		{name: "only quotes", in: "''", want: "''''''"},
		{name: "injection", in: "x'; DROP ROLE admin; --", want: "'x''; DROP ROLE admin; --'"},
		{name: "backslash", in: `a\b'`, want: `E'a\\b'''`},
		{name: "double quote", in: `a"b`, want: `'a"b'`},
		{name: "unicode", in: "pässwörd", want: "'pässwörd'"},
		{name: "NUL", in: "a\x00b", err: errNUL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := quoteLiteral(tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v; want %v", err, tc.err)
			}
			if got != tc.want {
				t.Fatalf("quoteLiteral(%q) = %s; want %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestValidUntil(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 600_000_000, time.FixedZone("X", 3600))
	if got, want := validUntil(at), "'2030-01-02 02:04:05.6+00:00'"; got != want {
		t.Fatalf("validUntil = %s; want %s", got, want)
	}
	if got := validUntil(time.Time{}); got != "'infinity'" {
		t.Fatalf("validUntil(zero) = %s", got)
	}
}

func TestParseGrant(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		s, err := parseGrant(grant("db", "", nil, "select", " all  privileges "), "home")
		if err != nil {
			t.Fatal(err)
		}
		// ALL is spelled out, without TRIGGER, and a privilege named twice is sent once.
		want := []string{"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES"}
		if s.schema != "public" || s.database != "db" || !slices.Equal(s.check, want) || !slices.Equal(s.privileges, want) {
			t.Fatalf("spec = %+v", s)
		}
	})
	for _, tc := range []struct {
		name  string
		privs []string
		table string
	}{
		{name: "injected privilege", privs: []string{"SELECT ON ALL TABLES IN SCHEMA x TO public; --"}},
		{name: "no privileges"},
		{name: "trigger", privs: []string{"SELECT", "TRIGGER"}},
		{name: "long table", privs: []string{"SELECT"}, table: string(make([]byte, 64))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tables []string
			if tc.table != "" {
				tables = []string{tc.table}
			}
			if _, err := parseGrant(grant("db", "s", tables, tc.privs...), "home"); err == nil {
				t.Fatal("err = nil")
			}
		})
	}
	// Refused at registration, and again here: grants come from events, which whoever
	// can write to NATS can forge.
	for _, g := range []events.Grant{grant("db", "pg_catalog", nil, "SELECT"), grant("pg_x", "", nil, "SELECT")} {
		if _, err := parseGrant(g, "home"); err == nil {
			t.Errorf("parseGrant(%+v) = nil error", g)
		}
	}
}

func grant(db, schema string, tables []string, privs ...string) events.Grant {
	return events.Grant{Database: db, Schema: schema, Tables: tables, Privileges: privs}
}
