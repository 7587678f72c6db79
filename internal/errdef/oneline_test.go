package errdef

import "testing"

// Messages of several lines (joined errors, config problems) are folded
// onto one line with "; " between them.
func TestOneLine(t *testing.T) {
	t.Parallel()
	in := "load config x.yaml: line 2: cache.tagTTL: bad\n\n  line 3:   cache.bogus: unknown  \n"
	if got, want := OneLine(in), "load config x.yaml: line 2: cache.tagTTL: bad; line 3: cache.bogus: unknown"; got != want {
		t.Errorf("OneLine = %q, want %q", got, want)
	}
	// A registry's message with a terminal escape sequence: shown, not run.
	in = "GET /v2/x: DENIED: \x1b]0;pwned\x07\x1b[2Jgone"
	if got, want := OneLine(in), `GET /v2/x: DENIED: \x1b]0;pwned\x07\x1b[2Jgone`; got != want {
		t.Errorf("OneLine(%q) = %q, want %q", in, got, want)
	}
}
