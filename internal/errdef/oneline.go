package errdef

import (
	"fmt"
	"strings"
	"unicode"
)

// OneLine folds a message onto one line, as the commands print their
// errors: a registry's error body or a joined error may hold newlines,
// which become "; " (blank lines go), and other control characters, which
// a registry's or a mirror's answer may hold too (an escape sequence would
// be run by the terminal), are written as \xNN.
func OneLine(s string) string {
	var parts []string
	for l := range strings.SplitSeq(s, "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			parts = append(parts, l)
		}
	}
	var b strings.Builder
	for _, r := range strings.Join(parts, "; ") {
		if unicode.IsControl(r) {
			fmt.Fprintf(&b, "\\x%02x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
