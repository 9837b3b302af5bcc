package postgres

import (
	"regexp"
	"strings"
	"testing"

	"github.com/syvault/syvault/workers/driver"
)

func TestScramVerifier(t *testing.T) {
	pw := "xK9#mP2$qR7wL4nB'@!~"
	v, ok := driver.SCRAMVerifier(pw)
	if !ok {
		t.Fatal("no verifier for a printable ASCII password")
	}
	if !regexp.MustCompile(`^SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}$`).MatchString(v) {
		t.Fatalf("verifier %q is not SCRAM-SHA-256$4096:salt$StoredKey:ServerKey", v)
	}
	if strings.Contains(v, pw) {
		t.Fatal("the verifier holds the password")
	}
	if w, _ := driver.SCRAMVerifier(pw); w == v {
		t.Fatal("two verifiers share a salt")
	}
	if _, ok := driver.SCRAMVerifier("pässword"); ok {
		t.Fatal("computed a verifier for a password SASLprep would normalize")
	}
	lit, err := passwordLiteral(pw, "")
	if err != nil || strings.Contains(lit, pw) || !strings.HasPrefix(lit, "'SCRAM-SHA-256$") {
		t.Fatalf("literal %q, %v", lit, err)
	}
	if lit, err := passwordLiteral(pw, v); err != nil || lit != "'"+v+"'" {
		t.Fatalf("a prepared verifier is not taken as it is: %q, %v", lit, err)
	}
}
