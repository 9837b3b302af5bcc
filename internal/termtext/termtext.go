// Package termtext writes text others chose (names, hosts, record uids from the store) so
// that a terminal shows it as it is: nothing in it can move the cursor, erase a line, end
// it or reorder what is shown, so one line cannot hide or forge another.
package termtext

import (
	"fmt"
	"strings"
	"unicode"
)

// Printable is s as a terminal may show it: control characters (escape sequences that
// move the cursor, erase lines or write the clipboard; tabs and newlines that break a
// table's columns) and the bidirectional overrides that reorder what is shown are
// written as Go escapes.
func Printable(s string) string {
	if !strings.ContainsFunc(s, unprintable) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case !unprintable(r):
			b.WriteRune(r)
		case r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}

func unprintable(r rune) bool {
	return unicode.IsControl(r) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f || r == 0x061c
}
