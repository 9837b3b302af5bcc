package events_test

import (
	"strings"
	"testing"

	"github.com/syvault/syvault/events"
)

func validTarget() events.Target {
	return events.Target{Name: "orders-pg", Engine: events.PostgreSQL, Host: "127.0.0.1", Port: 5432, Database: "orders",
		AdminUsername: "syvault_admin", Grants: []events.Grant{{Database: "orders", Schema: "public", Privileges: []string{"select", "Insert"}}}}
}

func TestNormalizeTarget(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		tg := validTarget()
		if err := events.NormalizeTarget(&tg); err != nil {
			t.Fatal(err)
		}
		if tg.TLSMode != events.TLSRequire || tg.MaxTTLSeconds != 86400 || tg.Grants[0].Privileges[1] != "INSERT" {
			t.Fatalf("defaults not applied: %+v", tg)
		}
	})
	bad := []struct {
		name   string
		mutate func(*events.Target)
		code   events.Code
	}{
		{"unknown engine", func(t *events.Target) { t.Engine = "oracle" }, events.EInvalid},
		{"no host", func(t *events.Target) { t.Host = "" }, events.EInvalid},
		{"host with path", func(t *events.Target) { t.Host = "a/b" }, events.EInvalid},
		{"port zero", func(t *events.Target) { t.Port = 0 }, events.EInvalid},
		{"port too big", func(t *events.Target) { t.Port = 70000 }, events.EInvalid},
		{"no grants", func(t *events.Target) { t.Grants = nil }, events.EInvalid},
		{"privilege off the allow-list", func(t *events.Target) { t.Grants[0].Privileges = []string{"SUPERUSER"} }, events.EInvalid},
		{"all privileges refused", func(t *events.Target) { t.Grants[0].Privileges = []string{"ALL PRIVILEGES"} }, events.EInvalid},
		{"mysql privilege on postgres", func(t *events.Target) { t.Grants[0].Privileges = []string{"CREATE VIEW"} }, events.EInvalid},
		{"postgres grant needs a schema", func(t *events.Target) { t.Grants[0].Schema = "" }, events.EInvalid},
		{"mysql grant takes no schema", func(t *events.Target) { t.Engine = events.MySQL }, events.EInvalid},
		{"NUL in a table name", func(t *events.Target) { t.Grants[0].Tables = []string{"a\x00b"} }, events.EInvalid},
		{"bad tls mode", func(t *events.Target) { t.TLSMode = "prefer" }, events.EInvalid},
		{"max ttl above 24h", func(t *events.Target) { t.MaxTTLSeconds = 86401 }, events.EInvalidTTL},
		{"negative max ttl", func(t *events.Target) { t.MaxTTLSeconds = -1 }, events.EInvalidTTL},
		{"negative connection limit", func(t *events.Target) { t.ConnectionLimit = -1 }, events.EInvalid},
		{"connection limit above any server's", func(t *events.Target) { t.ConnectionLimit = events.MaxConnectionLimit + 1 }, events.EInvalid},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			tg := validTarget()
			tt.mutate(&tg)
			if err := events.NormalizeTarget(&tg); events.ErrorCode(err) != tt.code {
				t.Fatalf("err = %v, want code %s", err, tt.code)
			}
		})
	}
}

func TestValidTTL(t *testing.T) {
	for _, tt := range []struct {
		ttl, max int
		ok       bool
	}{{1, 0, true}, {86400, 0, true}, {0, 0, false}, {-5, 0, false}, {86401, 0, false}, {3601, 3600, false}, {3600, 3600, true}} {
		if err := events.ValidTTL(tt.ttl, tt.max); (err == nil) != tt.ok {
			t.Errorf("ValidTTL(%d, %d) = %v", tt.ttl, tt.max, err)
		}
	}
}

func TestNormalizeTarget_SystemDatabases(t *testing.T) {
	for _, tt := range []struct {
		name   string
		engine events.Engine
		db     string
		schema string
	}{
		{"mysql", events.MySQL, "mysql", ""},
		{"mysql upper case", events.MySQL, "MySQL", ""},
		{"information_schema", events.MySQL, "information_schema", ""},
		{"performance_schema", events.MySQL, "performance_schema", ""},
		{"sys", events.MySQL, "sys", ""},
		{"pattern matching mysql", events.MySQL, "my_ql", ""},
		{"pattern matching everything", events.MySQL, "%", ""},
		{"pattern matching sys", events.MySQL, "s%", ""},
		{"pg_catalog schema", events.PostgreSQL, "orders", "pg_catalog"},
		{"pg_toast schema", events.PostgreSQL, "orders", "pg_toast"},
		{"information_schema schema", events.PostgreSQL, "orders", "information_schema"},
		{"any pg_ schema", events.PostgreSQL, "orders", "pg_temp_3"},
		{"mysql database on postgres", events.PostgreSQL, "mysql", "public"},
		{"template1 on postgres", events.PostgreSQL, "template1", "public"},
		{"template0 on postgres", events.PostgreSQL, "template0", "public"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tg := validTarget()
			tg.Engine = tt.engine
			tg.Grants[0].Database, tg.Grants[0].Schema = tt.db, tt.schema
			err := events.NormalizeTarget(&tg)
			if events.ErrorCode(err) != events.EInvalid {
				t.Fatalf("err = %v, want %s", err, events.EInvalid)
			}
			if !strings.Contains(events.ErrorMessage(err), "grants[0].") {
				t.Fatalf("message does not name the field: %s", events.ErrorMessage(err))
			}
			if strings.HasPrefix(tt.db, "template") && !strings.Contains(events.ErrorMessage(err), "CREATE DATABASE") {
				t.Fatalf("a template refused for another reason: %s", events.ErrorMessage(err))
			}
		})
	}
	t.Run("a template as the target's own database", func(t *testing.T) {
		tg := validTarget()
		tg.Database = "template1"
		if err := events.NormalizeTarget(&tg); events.ErrorCode(err) != events.EInvalid || !strings.Contains(events.ErrorMessage(err), "CREATE DATABASE") {
			t.Fatalf("err = %v, want invalid_request saying why", err)
		}
	})
	t.Run("ordinary names pass", func(t *testing.T) {
		for _, db := range []string{"orders", "my_db", "system", "sysadmin_data"} {
			tg := validTarget()
			tg.Engine, tg.Grants[0].Database, tg.Grants[0].Schema = events.MySQL, db, ""
			if err := events.NormalizeTarget(&tg); err != nil {
				t.Errorf("%s: %v", db, err)
			}
		}
	})
}

// TestNormalizeTarget_NoTriggerOnPostgreSQL: a trigger a lease attaches to a table runs
// as whoever writes to the table and outlives the lease, so PostgreSQL targets may not
// grant TRIGGER; the refusal says why.
func TestNormalizeTarget_NoTriggerOnPostgreSQL(t *testing.T) {
	for _, p := range []string{"TRIGGER", "trigger", " Trigger "} {
		tg := validTarget()
		tg.Grants[0].Privileges = []string{"SELECT", p}
		err := events.NormalizeTarget(&tg)
		if events.ErrorCode(err) != events.EInvalid || !strings.Contains(events.ErrorMessage(err), "runs its code as whoever writes to that table") {
			t.Errorf("%q: err = %v, want invalid_request saying why", p, err)
		}
	}
}

func TestNormalizeTarget_DefinerPrivilegesOnMySQL(t *testing.T) {
	for _, p := range []string{"CREATE VIEW", "TRIGGER", "create routine", "EVENT", "ALTER ROUTINE"} {
		tg := validTarget()
		tg.Engine, tg.Grants[0].Schema, tg.Grants[0].Privileges = events.MySQL, "", []string{"SELECT", p}
		err := events.NormalizeTarget(&tg)
		if events.ErrorCode(err) != events.EInvalid || !strings.Contains(events.ErrorMessage(err), "DEFINER") {
			t.Errorf("%s: err = %v, want invalid_request explaining DEFINER", p, err)
		}
	}
	tg := validTarget()
	tg.Grants[0].Privileges = []string{"SELECT", "create"}
	if err := events.NormalizeTarget(&tg); err != nil || tg.Grants[0].Privileges[1] != "CREATE" {
		t.Fatalf("PostgreSQL CREATE (on the schema) refused: %v", err)
	}
}
