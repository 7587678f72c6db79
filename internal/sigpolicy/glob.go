package sigpolicy

import (
	"errors"
	"strings"
)

// glob is a compiled repository pattern: segments separated by '/', where
// a segment "**" matches any number of segments (zero included), and in
// any other segment '*' matches any run of characters other than '/'.
type glob struct {
	pattern string
	segs    []string
}

// compileGlob checks pattern and compiles it.
func compileGlob(pattern string) (glob, error) {
	if pattern == "" {
		return glob{}, errors.New("bad glob: empty")
	}
	segs := strings.Split(pattern, "/")
	for _, s := range segs {
		if s == "" {
			return glob{}, errors.New(`bad glob: empty segment (leading, trailing or double "/")`)
		}
		if s == "**" {
			continue
		}
		if strings.Contains(s, "**") {
			return glob{}, errors.New(`bad glob: "**" must be a whole segment`)
		}
		for _, c := range s {
			if !globChar(c) {
				return glob{}, errors.New("bad glob: allowed are lower-case letters, digits, '.', '_', '-', ':', '*' and '/'")
			}
		}
	}
	return glob{pattern: pattern, segs: segs}, nil
}

// globChar reports whether c may appear in a pattern segment: the
// characters of registry host names (with a port) and of repository names
// (distribution-spec: lower case), and '*'.
func globChar(c rune) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		return true
	}
	return strings.ContainsRune("._-:*", c)
}

// match reports whether name ("<registry>/<repository>") matches g.
func (g glob) match(name string) bool {
	return matchSegs(g.segs, strings.Split(name, "/"))
}

// matchSegs matches pattern segments against name segments, "**"
// absorbing any number of them. It is matchSeg's algorithm one level up.
func matchSegs(pat, name []string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(name) {
		switch {
		case p < len(pat) && pat[p] == "**":
			star, mark = p, i
			p++
		case p < len(pat) && matchSeg(pat[p], name[i]):
			p++
			i++
		case star >= 0:
			mark++
			p, i = star+1, mark
		default:
			return false
		}
	}
	for p < len(pat) && pat[p] == "**" {
		p++
	}
	return p == len(pat)
}

// matchSeg matches one segment, where '*' matches any run of characters.
// It is the linear-time wildcard match that backtracks to the last star
// only, so a name cannot make it explode whatever the pattern.
func matchSeg(pat, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pat) && pat[p] == '*':
			star, mark = p, i
			p++
		case p < len(pat) && pat[p] == s[i]:
			p++
			i++
		case star >= 0:
			mark++
			p, i = star+1, mark
		default:
			return false
		}
	}
	for p < len(pat) && pat[p] == '*' {
		p++
	}
	return p == len(pat)
}
