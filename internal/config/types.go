package config

import (
	"fmt"
	"log/slog"
	"math"
	"math/big"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration that reads and writes as a Go duration string
// ("30s", "5m", "1h30m") in YAML and JSON. Bare numbers other than "0" are
// rejected because they have no unit.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d like time.Duration.String without trailing zero units:
// "5m" rather than "5m0s", "1h" rather than "1h0m0s".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// durationSyntax is what time.ParseDuration accepts, whatever the size;
// durationDays the same with days, which it does not.
var (
	durationSyntax = regexp.MustCompile(`^[-+]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$`)
	durationDays   = regexp.MustCompile(`^[-+]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h|d))+$`)
)

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler using time.ParseDuration.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(strings.TrimSpace(string(text)))
	if err != nil {
		switch s := strings.TrimSpace(string(text)); {
		case durationSyntax.MatchString(s):
			// Well formed, so out of time.Duration's range.
			return fmt.Errorf("invalid duration %q: too large, at most %s", text, Duration(math.MaxInt64).String())
		case durationDays.MatchString(s):
			return fmt.Errorf("invalid duration %q: d is no unit; use hours, such as 24h or 168h", text)
		}
		return fmt.Errorf("invalid duration %q: want a number with a unit such as 30s, 5m or 1h", text)
	}
	*d = Duration(v)
	return nil
}

// UnmarshalYAML implements yaml.Unmarshaler so that a bad value is reported
// with its line number, together with every other decode error.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error { return unmarshalScalar(n, d) }

// ByteSize is a size in bytes that reads as a number with an optional SI or
// IEC unit: "1000", "512KiB", "4MiB", "20GiB", "1.5GB". Units are matched
// case-insensitively; SI units (kB, MB, GB, TB, PB) are powers of 1000 and
// IEC units (KiB, MiB, GiB, TiB, PiB) are powers of 1024. A fractional value
// must come to a whole number of bytes.
type ByteSize int64

// Byte size units.
const (
	KiB ByteSize = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
	PiB
)

// byteUnits lists every accepted unit, largest first within each family, so
// that String picks the largest unit that represents a value exactly.
var byteUnits = []struct {
	name string
	size int64
}{
	{"PiB", int64(PiB)}, {"TiB", int64(TiB)}, {"GiB", int64(GiB)}, {"MiB", int64(MiB)}, {"KiB", int64(KiB)},
	{"PB", 1e15}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"kB", 1e3},
	{"B", 1},
}

// String formats b with the largest IEC unit, else the largest SI unit, that
// represents it exactly ("4MiB", "1500MB", "1001B"). The result parses back
// to the same value.
func (b ByteSize) String() string {
	if b == 0 {
		return "0"
	}
	for _, u := range byteUnits {
		if int64(b)%u.size == 0 {
			return fmt.Sprintf("%d%s", int64(b)/u.size, u.name)
		}
	}
	return fmt.Sprintf("%dB", int64(b)) // unreachable: the B unit divides everything
}

// MarshalText implements encoding.TextMarshaler.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; see ByteSize for the
// accepted forms.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := parseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// UnmarshalYAML implements yaml.Unmarshaler so that a bad value is reported
// with its line number.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error { return unmarshalScalar(n, b) }

func parseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	i := 0
	dots := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		if s[i] == '.' {
			dots++
		}
		i++
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	if num == "" || dots > 1 || num[0] == '.' || num[len(num)-1] == '.' {
		return 0, fmt.Errorf("invalid size %q: want a non-negative number with an optional unit such as 512KiB, 4MiB or 1.5GB", s)
	}
	mult := int64(0)
	for _, u := range byteUnits {
		if strings.EqualFold(unit, u.name) {
			mult = u.size
			break
		}
	}
	if unit == "" {
		mult = 1
	}
	if mult == 0 {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (want B, kB, MB, GB, TB, PB, KiB, MiB, GiB, TiB or PiB)", s, unit)
	}
	if len(num) > 40 {
		// 19 digits reach the int64 limit; longer input is either too large
		// or spurious precision, and big.Rat is slow on megabytes of digits.
		return 0, fmt.Errorf("invalid size %.20q...: too large", s)
	}
	r, ok := new(big.Rat).SetString(num) // num is digits with at most one inner dot
	if !ok {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, fmt.Errorf("invalid size %q: not a whole number of bytes", s)
	}
	if !r.Num().IsInt64() {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return ByteSize(r.Num().Int64()), nil
}

// Level is a log level: debug, info (the default, and the zero value), warn
// or error. It implements slog.Leveler.
type Level slog.Level

// Log levels.
const (
	LevelDebug = Level(slog.LevelDebug)
	LevelInfo  = Level(slog.LevelInfo)
	LevelWarn  = Level(slog.LevelWarn)
	LevelError = Level(slog.LevelError)
)

var levelNames = []struct {
	name  string
	level Level
}{{"debug", LevelDebug}, {"info", LevelInfo}, {"warn", LevelWarn}, {"error", LevelError}}

// Level returns l as a slog.Level, so that a Level can be used directly as
// slog.HandlerOptions.Level.
func (l Level) Level() slog.Level { return slog.Level(l) }

// String returns the configuration name of l ("info"), or slog's rendering
// for a level that has no name.
func (l Level) String() string {
	for _, n := range levelNames {
		if n.level == l {
			return n.name
		}
	}
	return slog.Level(l).String()
}

// MarshalText implements encoding.TextMarshaler.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (l *Level) UnmarshalText(text []byte) error {
	for _, n := range levelNames {
		if string(text) == n.name {
			*l = n.level
			return nil
		}
	}
	return fmt.Errorf("invalid log level %q: want one of debug, info, warn, error", text)
}

// UnmarshalYAML implements yaml.Unmarshaler so that a bad value is reported
// with its line number.
func (l *Level) UnmarshalYAML(n *yaml.Node) error { return unmarshalScalar(n, l) }

func (l Level) valid() bool {
	for _, n := range levelNames {
		if n.level == l {
			return true
		}
	}
	return false
}

// LogFormat selects the slog handler: text (the default) or json.
type LogFormat string

// Log formats.
const (
	LogFormatText LogFormat = "text"
	LogFormatJSON LogFormat = "json"
)

// UnmarshalText implements encoding.TextUnmarshaler.
func (f *LogFormat) UnmarshalText(text []byte) error {
	v, err := parseEnum("log format", string(text), LogFormatText, LogFormatJSON)
	if err != nil {
		return err
	}
	*f = v
	return nil
}

// UnmarshalYAML implements yaml.Unmarshaler so that a bad value is reported
// with its line number.
func (f *LogFormat) UnmarshalYAML(n *yaml.Node) error { return unmarshalScalar(n, f) }

// TagNotFoundPolicy says what to do when the upstream answers 404 for a tag
// that is in the cache.
type TagNotFoundPolicy string

// Tag-not-found policies.
const (
	// TagNotFoundServeCached keeps serving the cached manifest (the default):
	// a tag deleted or hidden upstream does not break pulls at the edge.
	TagNotFoundServeCached TagNotFoundPolicy = "serve-cached"
	// TagNotFoundNotFound passes the upstream 404 on to the client, so the
	// edge never serves a tag that the upstream no longer has.
	TagNotFoundNotFound TagNotFoundPolicy = "not-found"
)

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *TagNotFoundPolicy) UnmarshalText(text []byte) error {
	v, err := parseEnum("tagNotFound policy", string(text), TagNotFoundServeCached, TagNotFoundNotFound)
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// UnmarshalYAML implements yaml.Unmarshaler so that a bad value is reported
// with its line number.
func (p *TagNotFoundPolicy) UnmarshalYAML(n *yaml.Node) error { return unmarshalScalar(n, p) }

// parseEnum returns the allowed value equal to s (case-sensitive, as YAML
// keys and values are elsewhere in the file), or an error listing them.
func parseEnum[T ~string](what, s string, allowed ...T) (T, error) {
	for _, a := range allowed {
		if s == string(a) {
			return a, nil
		}
	}
	return "", fmt.Errorf("invalid %s %q: want one of %s", what, s, joinQuoted(allowed))
}

func validEnum[T ~string](v T, allowed ...T) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

func joinQuoted[T ~string](vs []T) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = string(v)
	}
	return strings.Join(q, ", ")
}

// textUnmarshaler is the pointer half of the scalar types above.
type textUnmarshaler interface{ UnmarshalText([]byte) error }

// unmarshalScalar decodes a YAML scalar through UnmarshalText and reports a
// failure as a *yaml.TypeError carrying the line number. yaml.v3 aborts the
// whole decode with a bare error, without the line, when UnmarshalText
// itself fails; a TypeError instead joins the other decode errors.
func unmarshalScalar(n *yaml.Node, u textUnmarshaler) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want a single value, not a %s", n.Line, kindName(n.Kind))}}
	}
	if err := u.UnmarshalText([]byte(n.Value)); err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	return nil
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	default:
		return "document"
	}
}
