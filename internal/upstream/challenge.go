package upstream

import (
	"sort"
	"strings"
)

// challenge is one parsed WWW-Authenticate challenge. scheme and parameter
// names are lower-cased; values are unquoted.
type challenge struct {
	scheme string
	params map[string]string
}

// Bounds on what parseChallenges keeps from a hostile header.
const (
	maxChallenges      = 16
	maxChallengeParams = 16
)

// parseChallenges parses the WWW-Authenticate header values of a response
// (RFC 9110 section 11.6.1):
//
//	challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//	auth-param = token BWS "=" BWS ( token / quoted-string )
//
// Several challenges may share one header value, separated by commas; a
// token not followed by "=" starts the next challenge. The parser never
// fails: malformed input yields whatever challenges could be read, and each
// step consumes at least one byte, so it always terminates. If a parameter
// repeats, the first value wins.
func parseChallenges(values []string) []challenge {
	var out []challenge
	for _, v := range values {
		out = append(out, parseChallengeList(v, maxChallenges-len(out))...)
		if len(out) >= maxChallenges {
			break
		}
	}
	return out
}

func parseChallengeList(s string, max int) []challenge {
	var out []challenge
	i := 0
	for i < len(s) && len(out) < max {
		i = skipSpaceComma(s, i)
		if i >= len(s) {
			break
		}
		scheme, j := readToken(s, i)
		if scheme == "" {
			i++ // not a token: skip the byte
			continue
		}
		i = j
		ch := challenge{scheme: strings.ToLower(scheme), params: map[string]string{}}
		i = parseParams(s, i, ch.params)
		out = append(out, ch)
	}
	return out
}

// parseParams reads auth-params starting at i into params and returns the
// position of the next challenge (or the end of s).
func parseParams(s string, i int, params map[string]string) int {
	for i < len(s) {
		start := i
		i = skipSpace(s, i)
		if i < len(s) && s[i] == ',' {
			// "scheme, next" or "a=1, b=2": look past the comma.
			i = skipSpaceComma(s, i)
		}
		name, j := readToken(s, i)
		if name == "" {
			return i
		}
		k := skipSpace(s, j)
		if k >= len(s) || s[k] != '=' {
			// A token without "=" is the next challenge's scheme.
			return start
		}
		k = skipSpace(s, k+1)
		var val string
		if k < len(s) && s[k] == '"' {
			val, k = readQuoted(s, k)
		} else {
			val, k = readToken(s, k)
		}
		name = strings.ToLower(name)
		if _, dup := params[name]; !dup && len(params) < maxChallengeParams {
			params[name] = val
		}
		i = skipSpace(s, k)
		if i >= len(s) || s[i] != ',' {
			return i
		}
	}
	return i
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

func skipSpaceComma(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == ',') {
		i++
	}
	return i
}

func readToken(s string, i int) (string, int) {
	j := i
	for j < len(s) && isTokenChar(s[j]) {
		j++
	}
	return s[i:j], j
}

// readQuoted reads a quoted-string starting at the opening quote s[i] and
// returns its unescaped content and the position after the closing quote.
// An unterminated string runs to the end of s.
func readQuoted(s string, i int) (string, int) {
	var b strings.Builder
	i++ // opening quote
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"':
			return b.String(), i + 1
		case c == '\\' && i+1 < len(s):
			b.WriteByte(s[i+1])
			i += 2
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String(), i
}

func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// formatChallenges renders challenges in canonical form (parameters sorted,
// values quoted); parseChallenges of the result gives the same challenges.
// It is used by tests and fuzzing.
func formatChallenges(chs []challenge) string {
	parts := make([]string, 0, len(chs))
	for _, ch := range chs {
		keys := make([]string, 0, len(ch.params))
		for k := range ch.params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		b.WriteString(ch.scheme)
		for n, k := range keys {
			if n == 0 {
				b.WriteByte(' ')
			} else {
				b.WriteString(", ")
			}
			b.WriteString(k)
			b.WriteString(`="`)
			v := ch.params[k]
			for i := 0; i < len(v); i++ {
				if v[i] == '"' || v[i] == '\\' {
					b.WriteByte('\\')
				}
				b.WriteByte(v[i])
			}
			b.WriteByte('"')
		}
		parts = append(parts, b.String())
	}
	return strings.Join(parts, ", ")
}
