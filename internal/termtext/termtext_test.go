package termtext_test

import (
	"testing"

	"github.com/syvault/syvault/internal/termtext"
)

// TestPrintable: what could redraw a line (an escape sequence, a carriage return, a
// newline, a bidirectional override) is shown escaped; everything else as it is.
func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"db.internal":                   "db.internal",
		"prod – EU ✓":                   "prod – EU ✓",
		"evil\x1b[2K\rdb.internal":      `evil\x1b[2K\x0ddb.internal`,
		"a\nb\tc":                       `a\x0ab\x09c`,
		"ltr\u202eesrever\u2066x\u200f": `ltr\u202eesrever\u2066x\u200f`,
	} {
		if got := termtext.Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}
