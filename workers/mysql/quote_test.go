package mysql

import (
	"errors"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
)

func TestQuoteString(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		err            error
	}{
		{name: "plain", in: "abc", want: "'abc'"},
		{name: "quote", in: "a'b", want: "'a''b'"},
		{name: "injection", in: "x' OR '1'='1", want: "'x'' OR ''1''=''1'"},
		{name: "backslash", in: `a\'`, err: errBackslash},
		{name: "NUL", in: "a\x00", err: errNUL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := quoteString(tc.in)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("quoteString(%q) = %s, %v; want %s, %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
}

func TestQuoteIdent(t *testing.T) {
	if got, want := quoteIdent("a`b"), "`a``b`"; got != want {
		t.Fatalf("quoteIdent = %s; want %s", got, want)
	}
	if got, want := dbPattern(`my_db%\`), "`my\\_db\\%\\\\`"; got != want {
		t.Fatalf("dbPattern = %s; want %s", got, want)
	}
}

func TestParseGrants(t *testing.T) {
	specs, err := parseGrants([]events.Grant{{Database: "d", Tables: []string{"t`x"}, Privileges: []string{"select", "show  view"}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	got := specs[0].statements("'u'@'%'")
	if want := grantOnly + "GRANT SELECT, SHOW VIEW ON `d`.`t``x` TO 'u'@'%'"; len(got) != 1 || got[0] != want {
		t.Fatalf("statements = %q; want %q", got, want)
	}
	for _, g := range []events.Grant{
		{Database: "d", Privileges: []string{"SUPER"}},
		{Database: "d", Privileges: []string{"TRIGGER"}},
		{Database: "d", Privileges: []string{"CREATE VIEW"}},
		{Database: "d", Privileges: []string{"ALL PRIVILEGES"}},
		// Refused at registration, and again here: grants come from events, which
		// whoever can write to NATS can forge.
		{Database: "mysql", Privileges: []string{"SELECT", "INSERT"}},
		{Database: "my%", Privileges: []string{"SELECT"}},
		{Database: "d", Privileges: []string{"SELECT ON *.* TO x; --"}},
		{Privileges: []string{"SELECT"}},
		{Database: "d"},
	} {
		if _, err := parseGrants([]events.Grant{g}, ""); err == nil {
			t.Errorf("parseGrants(%+v) = nil error", g)
		}
	}
}

func TestAccount(t *testing.T) {
	if _, err := account("vf_tmp_" + "123456789012345678901234567"); err == nil {
		t.Fatal("33-character name accepted")
	}
	if got, _ := account("vf_tmp_abcdefgh"); got != "'vf_tmp_abcdefgh'@'%'" {
		t.Fatalf("account = %s", got)
	}
}

// A probe's name gives back the time it was made, and only probeName's shape gives a
// time: other names, even ones ParseInt would read, are never taken for a probe.
func TestProbeBorn(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	name := probeName(now)
	if born, ok := probeBorn(name); !ok || !born.Equal(now) {
		t.Fatalf("probeBorn(%q) = %v, %v; want %v", name, born, ok, now)
	}
	if _, err := account(name); err != nil {
		t.Fatalf("a probe's name is not an account name: %v", err)
	}
	for _, other := range []string{
		"vf_probe_abcdefgh",         // an earlier version's
		"vf_probe_+vfq1bk_abcdefgh", // a sign
		"vf_probe_0vfq1bk_abcdefgh", // a leading zero
		"vf_probe_VFQ1BK_abcdefgh",  // upper case
		"vf_probe_vfq1bk_abcdefg1",  // not base 32
		"vf_probe_vfq1bk_abcdefghi", // too long
		"vf_probe_vfq1bk",           // no random part
		"xvf_probe_vfq1bk_abcdefgh", // another prefix
		"vf_probe__abcdefgh",        // no time
		"vf_probe_-vfq1bk_abcdefgh", // before 1970
	} {
		if born, ok := probeBorn(other); ok {
			t.Errorf("probeBorn(%q) = %v, taken for a probe", other, born)
		}
	}
}
