// Package glob matches repository names ("<registry>/<repository>", or a
// repository alone) against the patterns of the config's signature and
// access rules.
package glob

import (
	"errors"
	"strings"
)

// Glob is a compiled repository pattern: segments separated by '/', where
// a segment "**" matches any number of segments (zero included), and in
// any other segment '*' matches any run of characters other than '/'.
type Glob struct {
	pattern string
	segs    []string
}

// Compile checks pattern and compiles it. A pattern no repository name
// could match (upper case, an empty segment) is an error, not a rule that
// never applies.
func Compile(pattern string) (Glob, error) {
	if pattern == "" {
		return Glob{}, errors.New("bad glob: empty")
	}
	segs := strings.Split(pattern, "/")
	for _, s := range segs {
		if s == "" {
			return Glob{}, errors.New(`bad glob: empty segment (leading, trailing or double "/")`)
		}
		if s == "**" {
			continue
		}
		if strings.Contains(s, "**") {
			return Glob{}, errors.New(`bad glob: "**" must be a whole segment`)
		}
		for _, c := range s {
			if !validChar(c) {
				return Glob{}, errors.New("bad glob: allowed are lower-case letters, digits, '.', '_', '-', ':', '*' and '/'")
			}
		}
	}
	return Glob{pattern: pattern, segs: segs}, nil
}

// validChar reports whether c may appear in a pattern segment: the
// characters of registry host names (with a port) and of repository names
// (distribution-spec: lower case), and '*'.
func validChar(c rune) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		return true
	}
	return strings.ContainsRune("._-:*", c)
}

// Match reports whether name matches g.
func (g Glob) Match(name string) bool {
	return matchSegs(g.segs, strings.Split(name, "/"))
}

// matchSegs matches pattern segments against name segments, "**"
// absorbing any number of them.
func matchSegs(pat, name []string) bool {
	return wildcard(len(pat), len(name),
		func(p int) bool { return pat[p] == "**" },
		func(p, i int) bool { return matchSeg(pat[p], name[i]) })
}

// matchSeg matches one segment, where '*' matches any run of characters.
func matchSeg(pat, s string) bool {
	return wildcard(len(pat), len(s),
		func(p int) bool { return pat[p] == '*' },
		func(p, i int) bool { return pat[p] == s[i] })
}

// wildcard matches a pattern of np elements against a name of ni
// elements, where star(p) says that pattern element p matches any run of
// name elements and eq(p, i) whether pattern element p matches name
// element i. It is the linear-time match that backtracks to the last star
// only, so a name cannot make it explode whatever the pattern.
func wildcard(np, ni int, star func(p int) bool, eq func(p, i int) bool) bool {
	p, i := 0, 0
	lastStar, mark := -1, 0
	for i < ni {
		switch {
		case p < np && star(p):
			lastStar, mark = p, i
			p++
		case p < np && eq(p, i):
			p++
			i++
		case lastStar >= 0:
			mark++
			p, i = lastStar+1, mark
		default:
			return false
		}
	}
	for p < np && star(p) {
		p++
	}
	return p == np
}
