package config

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestByteSizeUnmarshalText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    ByteSize
		wantErr string
	}{
		{"0", 0, ""},
		{"1000", 1000, ""},
		{"1000B", 1000, ""},
		{"512KiB", 512 << 10, ""},
		{"4MiB", 4 << 20, ""},
		{"4 MiB", 4 << 20, ""},
		{"4mib", 4 << 20, ""},
		{"20GiB", 20 << 30, ""},
		{"2TiB", 2 << 40, ""},
		{"1PiB", 1 << 50, ""},
		{"1kB", 1000, ""},
		{"1KB", 1000, ""},
		{"1.5GB", 1500000000, ""},
		{"1.5MiB", 1536 << 10, ""},
		{"0.5KiB", 512, ""},
		{"3TB", 3e12, ""},
		{" 7MB ", 7e6, ""},
		{"8191PiB", 8191 << 50, ""},
		{"", 0, "invalid size"},
		{"MiB", 0, "invalid size"},
		{"-1", 0, "invalid size"},
		{"1.2.3", 0, "invalid size"},
		{".5MB", 0, "invalid size"},
		{"5.MB", 0, "invalid size"},
		{"1e6", 0, `unknown unit "e6"`},
		{"4M", 0, `unknown unit "M"`},
		{"4k", 0, `unknown unit "k"`},
		{"1.5B", 0, "not a whole number of bytes"},
		{"0.1KiB", 0, "not a whole number of bytes"},
		{"8192PiB", 0, "too large"},
		{"99999999999999999999", 0, "too large"},
	}
	for _, tt := range tests {
		var got ByteSize
		err := got.UnmarshalText([]byte(tt.in))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ByteSize.UnmarshalText(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ByteSize.UnmarshalText(%q) = %d, %v, want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestByteSizeString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   ByteSize
		want string
	}{
		{0, "0"},
		{1, "1B"},
		{1001, "1001B"},
		{1000, "1kB"},
		{1024, "1KiB"},
		{4 * MiB, "4MiB"},
		{1536 * KiB, "1536KiB"},
		{1500000000, "1500MB"},
		{20 * GiB, "20GiB"},
		{-4 * MiB, "-4MiB"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
		}
		if tt.in < 0 {
			continue
		}
		var back ByteSize
		if err := back.UnmarshalText([]byte(tt.in.String())); err != nil || back != tt.in {
			t.Errorf("ByteSize round trip of %d = %d, %v", int64(tt.in), back, err)
		}
	}
}

func FuzzByteSize(f *testing.F) {
	for _, s := range []string{"4MiB", "1.5GB", "1000", "0.5KiB", "9223372036854775807", "8191.99PiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var b ByteSize
		if err := b.UnmarshalText([]byte(in)); err != nil {
			return
		}
		if b < 0 {
			t.Fatalf("ByteSize.UnmarshalText(%q) = %d, want non-negative", in, b)
		}
		var back ByteSize
		if err := back.UnmarshalText([]byte(b.String())); err != nil || back != b {
			t.Fatalf("round trip of %q: String() = %q, parsed back %d, %v", in, b.String(), back, err)
		}
	})
}

func TestDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    time.Duration
		str     string
		wantErr bool
	}{
		{"0", 0, "0s", false},
		{"0s", 0, "0s", false},
		{"200ms", 200 * time.Millisecond, "200ms", false},
		{"10s", 10 * time.Second, "10s", false},
		{"5m", 5 * time.Minute, "5m", false},
		{"30m", 30 * time.Minute, "30m", false},
		{"1h30m", 90 * time.Minute, "1h30m", false},
		{"24h", 24 * time.Hour, "24h", false},
		{"1h0m1s", time.Hour + time.Second, "1h0m1s", false},
		{"-1s", -time.Second, "-1s", false},
		{"5", 0, "", true},
		{"5 minutes", 0, "", true},
		{"", 0, "", true},
	}
	// The message says what is wrong with a value that has units.
	for in, want := range map[string]string{
		"9999999h": `invalid duration "9999999h": too large, at most 2562047h47m16.854775807s`,
		"1d":       `invalid duration "1d": d is no unit; use hours, such as 24h or 168h`,
		"1h1x":     `invalid duration "1h1x": want a number with a unit such as 30s, 5m or 1h`,
		"h":        `invalid duration "h": want a number with a unit such as 30s, 5m or 1h`,
		".s":       `invalid duration ".s": want a number with a unit such as 30s, 5m or 1h`,
	} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err == nil || err.Error() != want {
			t.Errorf("Duration.UnmarshalText(%q) error = %v, want %q", in, err, want)
		}
	}
	for _, tt := range tests {
		var d Duration
		err := d.UnmarshalText([]byte(tt.in))
		if tt.wantErr {
			if err == nil {
				t.Errorf("Duration.UnmarshalText(%q) error = nil, want error", tt.in)
			}
			continue
		}
		if err != nil || d.D() != tt.want {
			t.Errorf("Duration.UnmarshalText(%q) = %v, %v, want %v", tt.in, d.D(), err, tt.want)
		}
		if got := d.String(); got != tt.str {
			t.Errorf("Duration(%v).String() = %q, want %q", d.D(), got, tt.str)
		}
	}
}

func TestLevel(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want slog.Level
	}{{"debug", slog.LevelDebug}, {"info", slog.LevelInfo}, {"warn", slog.LevelWarn}, {"error", slog.LevelError}} {
		var l Level
		if err := l.UnmarshalText([]byte(tt.in)); err != nil || l.Level() != tt.want {
			t.Errorf("Level.UnmarshalText(%q) = %v, %v, want %v", tt.in, l.Level(), err, tt.want)
		}
		if l.String() != tt.in {
			t.Errorf("Level(%v).String() = %q, want %q", tt.want, l.String(), tt.in)
		}
	}
	var l Level
	for _, bad := range []string{"", "warning", "INFO", "trace"} {
		if err := l.UnmarshalText([]byte(bad)); err == nil || !strings.Contains(err.Error(), "debug, info, warn, error") {
			t.Errorf("Level.UnmarshalText(%q) error = %v, want the allowed list", bad, err)
		}
	}
	var _ slog.Leveler = LevelInfo
}

func TestEnums(t *testing.T) {
	t.Parallel()
	var f LogFormat
	if err := f.UnmarshalText([]byte("json")); err != nil || f != LogFormatJSON {
		t.Errorf("LogFormat.UnmarshalText(json) = %q, %v", f, err)
	}
	if err := f.UnmarshalText([]byte("JSON")); err == nil || !strings.Contains(err.Error(), "text, json") {
		t.Errorf("LogFormat.UnmarshalText(JSON) error = %v, want the allowed list", err)
	}
	var p TagNotFoundPolicy
	if err := p.UnmarshalText([]byte("not-found")); err != nil || p != TagNotFoundNotFound {
		t.Errorf("TagNotFoundPolicy.UnmarshalText(not-found) = %q, %v", p, err)
	}
	if err := p.UnmarshalText([]byte("404")); err == nil || !strings.Contains(err.Error(), "serve-cached, not-found") {
		t.Errorf("TagNotFoundPolicy.UnmarshalText(404) error = %v, want the allowed list", err)
	}
}

func TestJSONEncoding(t *testing.T) {
	t.Parallel()
	// slog's JSON handler and any debug endpoint render Config with
	// encoding/json: units must stay readable.
	b, err := json.Marshal(Default().Cache)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"TagTTL":"5m","RevalidateTimeout":"2s","TagNotFound":"serve-cached","MaxManifestSize":"4MiB"}`
	if string(b) != want {
		t.Errorf("json.Marshal(Default().Cache) = %s, want %s", b, want)
	}
}
