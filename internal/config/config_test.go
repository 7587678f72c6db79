package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

func boolPtr(b bool) *bool { return &b }

func TestDefaultIsValid(t *testing.T) {
	t.Parallel()
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v, want nil", err)
	}
	// Default must hand out a fresh slice each time.
	a, b := Default(), Default()
	a.Upstreams[0].URL = "https://changed.example.com"
	if b.Upstreams[0].URL == a.Upstreams[0].URL {
		t.Errorf("Default() shares its Upstreams slice between calls")
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	ghcr := newUpstream("ghcr.io", "https://ghcr.io")
	tests := []struct {
		name string
		in   string
		want func() Config
	}{
		{
			name: "empty",
			in:   "",
			want: Default,
		},
		{
			name: "comments only",
			in:   "# nothing here\n",
			want: Default,
		},
		{
			name: "empty documents after the first",
			in:   "listen: 127.0.0.1:8080\n---\n---\n# end\n",
			want: func() Config { c := Default(); c.Listen = "127.0.0.1:8080"; return c },
		},
		{
			name: "null sections keep defaults",
			in:   "storage:\ncache: ~\nlog: {}\n",
			want: Default,
		},
		{
			name: "top-level overrides",
			in: `
listen: 127.0.0.1:8080
storage:
  root: /var/lib/registry-edge
  fillTimeout: 1h
cache:
  tagTTL: 0s
  tagNotFound: not-found
  maxManifestSize: 8MiB
log:
  level: debug
  format: json
  accessLog: false
`,
			want: func() Config {
				c := Default()
				c.Listen = "127.0.0.1:8080"
				c.Storage.Root = "/var/lib/registry-edge"
				c.Storage.FillTimeout = Duration(time.Hour)
				c.Cache.TagTTL = 0
				c.Cache.TagNotFound = TagNotFoundNotFound
				c.Cache.MaxManifestSize = 8 * MiB
				c.Log = Log{Level: LevelDebug, Format: LogFormatJSON, AccessLog: false}
				return c
			},
		},
		{
			name: "upstreams replace the default list and take per-entry defaults",
			in: `
upstreams:
  - registry: GHCR.io
    url: https://ghcr.io/
`,
			want: func() Config {
				c := Default()
				c.Upstreams = []Upstream{ghcr}
				return c
			},
		},
		{
			name: "explicit zero retry is kept",
			in: `
upstreams:
  - registry: central.example.com:5000
    url: http://central.example.com:5000
    default: true
    dockerHubLibrary: true
    retry:
      max: 0
      maxRetryAfter: 0s
    timeouts:
      connect: 1s
`,
			want: func() Config {
				c := Default()
				u := newUpstream("central.example.com:5000", "http://central.example.com:5000")
				u.Default = true
				u.DockerHubLibrary = boolPtr(true)
				u.Retry.Max = 0
				u.Retry.MaxRetryAfter = 0
				u.Timeouts.Connect = Duration(time.Second)
				c.Upstreams = []Upstream{u}
				return c
			},
		},
		{
			name: "auth and tls",
			in: `
upstreams:
  - registry: docker.io
    url: https://registry-1.docker.io
    auth: {dockerConfig: /root/.docker/config.json}
  - registry: localhost:5000
    url: https://localhost:5000
    auth: {username: u, passwordFile: /run/secrets/p}
    tls: {caFile: /etc/ssl/ca.pem}
  - registry: "[::1]:5001"
    url: https://[::1]:5001
    tls: {insecureSkipVerify: true}
`,
			want: func() Config {
				c := Default()
				hub := newUpstream("docker.io", "https://registry-1.docker.io")
				hub.Auth = Auth{DockerConfig: "/root/.docker/config.json"}
				local := newUpstream("localhost:5000", "https://localhost:5000")
				local.Auth = Auth{Username: "u", PasswordFile: "/run/secrets/p"}
				local.TLS = TLS{CAFile: "/etc/ssl/ca.pem"}
				v6 := newUpstream("[::1]:5001", "https://[::1]:5001")
				v6.TLS = TLS{InsecureSkipVerify: true}
				c.Upstreams = []Upstream{hub, local, v6}
				return c
			},
		},
		{
			name: "sizes and durations in every form",
			in: `
storage: {fillTimeout: 1h30m, tempMaxAge: 48h}
cache: {maxManifestSize: 1.5MB, revalidateTimeout: 500ms}
`,
			want: func() Config {
				c := Default()
				c.Storage.FillTimeout = Duration(90 * time.Minute)
				c.Storage.TempMaxAge = Duration(48 * time.Hour)
				c.Cache.MaxManifestSize = 1500000
				c.Cache.RevalidateTimeout = Duration(500 * time.Millisecond)
				return c
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Load(strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("Load() error = %v, want nil", err)
			}
			if diff := cmp.Diff(tt.want(), got); diff != "" {
				t.Errorf("Load() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadInvalid(t *testing.T) {
	t.Parallel()
	// two is a valid two-upstream list that the cases below extend.
	const two = `
upstreams:
  - registry: docker.io
    url: https://registry-1.docker.io
`
	tests := []struct {
		name string
		in   string
		want []string // substrings, all of which must appear
	}{
		{"unknown top-level key", "listen: :5000\nlisten_addr: :6000\n", []string{"line 2", `listen_addr: unknown key "listen_addr" (the keys here: listen, storage, `}},
		{"unknown nested key", "storage:\n  rot: /data\n", []string{"line 2", `storage.rot: unknown key "rot" (did you mean "root"?)`}},
		{"unknown upstream key", two + "    retries: 3\n", []string{"line 5", `upstreams[0].retries: unknown key "retries" (the keys here: registry, url, default, dockerHubLibrary, auth, tls, timeouts, retry, offline, breaker)`}},
		{"misspelled key", "cache:\n  tagttl: 5m\n  revalidateTimout: 1s\n", []string{`line 2: cache.tagttl: unknown key "tagttl" (did you mean "tagTTL"?)`, `line 3: cache.revalidateTimout: unknown key "revalidateTimout" (did you mean "revalidateTimeout"?)`}},
		{"unknown key in upstream auth", two + "    auth: {user: x}\n", []string{"line 5", `unknown key "user" (the keys here: `, "username"}},
		{"bad duration", "cache:\n  tagTTL: 5\n", []string{"line 2", `invalid duration "5"`}},
		{"bad size", "cache:\n  maxManifestSize: 4MB2\n", []string{"line 2", `invalid size "4MB2"`}},
		{"bad level", "log: {level: verbose}\n", []string{"line 1", "debug, info, warn, error"}},
		{"bad format", "log: {format: logfmt}\n", []string{"line 1", "text, json"}},
		{"bad policy", "cache: {tagNotFound: ignore}\n", []string{"line 1", "serve-cached, not-found"}},
		{"duration as a list", "cache:\n  tagTTL: [5m]\n", []string{"line 2", "not a list"}},
		{"wrong type", "listen: [a]\n", []string{"line 1", "cannot unmarshal"}},
		{"duplicate key", "listen: :1\nlisten: :2\n", []string{`"listen" already defined`}},
		{"two documents", "listen: :1\n---\nlisten: :2\n", []string{"line 3", "more than one YAML document"}},
		{"a document after an empty one", "listen: :1\n---\n---\nlisten: :2\n", []string{"line 4", "more than one YAML document"}},
		{"a configuration after an empty first document", "---\n---\nlisten: :2\n", []string{"line 3", "more than one YAML document"}},
		{"syntax error", "listen: [\n", []string{"line"}},
		{"several errors at once", "foo: 1\ncache: {tagTTL: x}\n", []string{`line 1: foo: unknown key "foo" (the keys here: listen, `, "line 2: cache: invalid duration"}},

		{"bad listen", "listen: 5000\n", []string{"listen: want host:port"}},
		{"bad prefetch list", "prefetch:\n  images:\n    - {ref: UPPER/app}\n    - {ref: org/app, platforms: [arm64]}\n    - {ref: org/app:latest}\n  windows: [22-06]\n  concurrency: 0\n  interval: 0s\n",
			[]string{`prefetch.images[0].ref: "UPPER/app" is not`, `prefetch.images[1].platforms[0]: "arm64" is not os/arch`,
				`prefetch.images[2].ref: "org/app:latest" is the image of prefetch.images[1].ref (org/app:latest)`, `prefetch.windows[0]: "22-06" is not HH:MM-HH:MM`,
				"prefetch.concurrency: must be between 1 and 16", "prefetch.interval: must be greater than 0"}},
		{"bad store budget", "storage: {maxSize: 20, lowWatermark: 1.5, maxAge: -1h}\n",
			[]string{"storage.maxSize: must be 0 (no limit) or at least 1MiB", "storage.lowWatermark: must be greater than 0 and at most 1, got 1.5", "storage.maxAge: must not be negative"}},
		{"bad delta sizing", "deltas: {workers: 0, memoryBudget: 100MiB}\n",
			[]string{"deltas.workers: must be between 1 and 64, got 0", "deltas.memoryBudget: must be at least 256MiB"}},
		{"tls key without cert", "tls: {keyFile: k.pem}\n", []string{"tls: certFile and keyFile go together"}},
		{"tls client auth without CA", "tls: {certFile: c.pem, keyFile: k.pem, clientAuth: require}\n", []string{"tls.clientCAFile: required when clientAuth is require"}},
		{"tls client CA without client auth", "tls: {certFile: c.pem, keyFile: k.pem, clientCAFile: ca.pem}\n", []string{"tls.clientCAFile: set, but clientAuth is none"}},
		{"tls bad client auth", "tls: {certFile: c.pem, keyFile: k.pem, clientAuth: yes}\n", []string{"tls.clientAuth: must be one of none, verify-if-given, require"}},
		{"closed without credentials", "access: {anonymous: false}\n", []string{"access.anonymous: false needs access.htpasswd or tls.clientAuth"}},
		{"challenge without users", "access: {challengeBase: true}\n", []string{"access.challengeBase: needs access.htpasswd"}},
		{"bad access rule", "access:\n  rules:\n    - repositories: ['a/[', Private/x, /private/x, 'private/']\n      users: [x]\n    - repositories: [b]\n",
			[]string{`access.rules[0].repositories[0]: invalid pattern "a/["`, `access.rules[0].repositories[1]: invalid pattern "Private/x"`,
				`access.rules[0].repositories[2]: invalid pattern "/private/x"`, `access.rules[0].repositories[3]: invalid pattern "private/"`,
				"access.rules[0].users: needs access.htpasswd", "access.rules[1]: needs users or certs"}},
		{"watermark not a number", "storage: {lowWatermark: .nan}\n", []string{"storage.lowWatermark: must be greater than 0 and at most 1, got NaN"}},
		{"rate not a number", "access: {rateLimit: {requestsPerSecond: .nan}}\n", []string{"access.rateLimit.requestsPerSecond: must be a finite number, got NaN"}},
		{"rate infinite", "access: {rateLimit: {requestsPerSecond: .inf}}\n", []string{"access.rateLimit.requestsPerSecond: must be a finite number, got +Inf"}},
		{"access pattern of an earlier rule", "access:\n  htpasswd: /h\n  rules:\n    - {repositories: [private/*, private/*], users: [ops]}\n    - {repositories: [other/*, private/*], users: [dev]}\n",
			[]string{`access.rules[1].repositories[1]: duplicate of access.rules[0].repositories[0] "private/*", which always matches first`}},
		{"bad rate limit", "access: {rateLimit: {requestsPerSecond: 10, burst: 0}}\n", []string{"access.rateLimit.burst: must be at least 1"}},
		{"bad trusted proxy", "access: {trustedProxies: [10.0.0.5/32, nginx]}\n", []string{`access.trustedProxies[1]: "nginx" is not a network in CIDR notation`}},
		{"bad admin network", "admin: {allowFrom: [10.0.0.1, 192.168.0.0/16]}\n", []string{`admin.allowFrom[0]: "10.0.0.1" is not a network in CIDR notation`}},
		{"bad admin host", "admin: {hosts: [mirror.site.lan, 'http://mirror', 'mirror:5000', '']}\n", []string{`admin.hosts[1]: "http://mirror" is not a host name`,
			`admin.hosts[2]: "mirror:5000" is not a host name`, `admin.hosts[3]: "" is not a host name`}},
		{"bad listen port", "listen: :http\n", []string{`listen: invalid port "http"`}},
		{"empty root", "storage: {root: ''}\n", []string{"storage.root: required"}},
		{"zero fill timeout", "storage: {fillTimeout: 0s}\n", []string{"storage.fillTimeout: must be greater than 0"}},
		{"negative tag ttl", "cache: {tagTTL: -1s}\n", []string{"cache.tagTTL: must not be negative"}},
		{"temp age below fill timeout", "storage: {fillTimeout: 1h, tempMaxAge: 10m}\n", []string{"storage.tempMaxAge: must be at least storage.fillTimeout (1h)"}},
		{"partial age below fill timeout", "storage: {fillTimeout: 1h, partialMaxAge: 10m}\n", []string{"storage.partialMaxAge: must be at least storage.fillTimeout (1h)"}},
		{"zero stall timeouts", "storage: {fillStallTimeout: 0s, clientStallTimeout: 0s}\n", []string{"storage.fillStallTimeout: must be greater than 0", "storage.clientStallTimeout: must be greater than 0"}},
		{"zero revalidate timeout", "cache: {revalidateTimeout: 0s}\n", []string{"cache.revalidateTimeout: must be greater than 0"}},
		{"manifest size too small", "cache: {maxManifestSize: 100}\n", []string{"cache.maxManifestSize: must be between 1KiB and 64MiB"}},
		{"manifest size too large", "cache: {maxManifestSize: 1GiB}\n", []string{"cache.maxManifestSize: must be between 1KiB and 64MiB"}},
		{"no upstreams", "upstreams: []\n", []string{"upstreams: at least one upstream is required"}},

		{"missing registry", "upstreams:\n  - url: https://a.example.com\n", []string{"upstreams[0].registry: required"}},
		{"missing url", two + "  - registry: ghcr.io\n", []string{"upstreams[1].url: required"}},
		{"registry with scheme", two + "  - {registry: 'https://ghcr.io', url: 'https://ghcr.io'}\n", []string{"upstreams[1].registry: want a host[:port]"}},
		{"registry with path", two + "  - {registry: ghcr.io/org, url: 'https://ghcr.io'}\n", []string{"upstreams[1].registry: want a host[:port]"}},
		{"registry with credentials", two + "  - {registry: 'https://bob:hunter2@ghcr.io', url: 'https://ghcr.io'}\n", []string{"upstreams[1].registry: want a host[:port]", "credentials go in auth"}},
		{"registry without dot", two + "  - {registry: myregistry, url: 'https://myregistry'}\n", []string{"upstreams[1].registry:", "repository namespace"}},
		{"registry bad port", two + "  - {registry: 'a.example.com:99999', url: 'https://a.example.com'}\n", []string{`upstreams[1].registry: invalid port "99999"`}},
		{"registry bad host", two + "  - {registry: 'a_b.example.com', url: 'https://a.example.com'}\n", []string{`upstreams[1].registry: invalid host`}},
		{"url scheme", two + "  - {registry: ghcr.io, url: 'ftp://ghcr.io'}\n", []string{"upstreams[1].url: scheme must be http or https"}},
		{"url without scheme", two + "  - {registry: ghcr.io, url: 'ghcr.io'}\n", []string{"upstreams[1].url: scheme must be http or https"}},
		{"url with path", two + "  - {registry: ghcr.io, url: 'https://ghcr.io/v2'}\n", []string{"upstreams[1].url: path is not supported"}},
		{"url with query", two + "  - {registry: ghcr.io, url: 'https://ghcr.io?x=1'}\n", []string{"upstreams[1].url: query is not allowed"}},
		{"url with fragment", two + "  - {registry: ghcr.io, url: 'https://ghcr.io#x'}\n", []string{"upstreams[1].url: fragment is not allowed"}},
		{"url with credentials", two + "  - {registry: ghcr.io, url: 'https://bob:hunter2@ghcr.io'}\n", []string{"upstreams[1].url: credentials in the URL are not allowed; use auth"}},
		{"url unparsable", two + "  - {registry: ghcr.io, url: 'https://ghcr.io:bad'}\n", []string{"upstreams[1].url: invalid URL"}},
		{"duplicate registry", two + "  - {registry: Docker.IO, url: 'https://mirror.gcr.io'}\n", []string{`upstreams[1].registry: duplicate of upstreams[0].registry "docker.io"`}},
		{"two defaults", two + "    default: true\n  - {registry: ghcr.io, url: 'https://ghcr.io', default: true}\n", []string{"upstreams[1].default: only one upstream may be the default, and upstreams[0] already is"}},
		{"password and passwordFile", two + "    auth: {username: u, password: p, passwordFile: /f}\n", []string{"upstreams[0].auth.password: password and passwordFile are mutually exclusive"}},
		{"username alone", two + "    auth: {username: u}\n", []string{"upstreams[0].auth.username: requires password or passwordFile"}},
		{"password alone", two + "    auth: {password: p}\n", []string{"upstreams[0].auth.username: required when password or passwordFile is set"}},
		{"dockerConfig and username", two + "    auth: {username: u, passwordFile: /f, dockerConfig: /c}\n", []string{"upstreams[0].auth.dockerConfig: dockerConfig excludes username"}},
		{"tls both", two + "    tls: {insecureSkipVerify: true, caFile: /ca.pem}\n", []string{"upstreams[0].tls: insecureSkipVerify and caFile are mutually exclusive"}},
		{"tls with http", "upstreams:\n  - {registry: localhost:5000, url: 'http://localhost:5000', tls: {caFile: /ca.pem}}\n", []string{"upstreams[0].tls: set, but url uses http"}},
		{"zero connect timeout", two + "    timeouts: {connect: 0s}\n", []string{"upstreams[0].timeouts.connect: must be greater than 0"}},
		{"negative header timeout", two + "    timeouts: {responseHeader: -1s}\n", []string{"upstreams[0].timeouts.responseHeader: must be greater than 0, got -1s"}},
		{"retry max too large", two + "    retry: {max: 11}\n", []string{"upstreams[0].retry.max: must be between 0 and 10"}},
		{"retry max negative", two + "    retry: {max: -1}\n", []string{"upstreams[0].retry.max: must be between 0 and 10"}},
		{"retry waits inverted", two + "    retry: {minWait: 10s, maxWait: 1s}\n", []string{"upstreams[0].retry.maxWait: must be at least retry.minWait (10s)"}},
		{"retry zero min wait", two + "    retry: {minWait: 0s}\n", []string{"upstreams[0].retry.minWait: must be greater than 0"}},
		{"retry negative retry-after", two + "    retry: {maxRetryAfter: -5s}\n", []string{"upstreams[0].retry.maxRetryAfter: must not be negative"}},
		{
			name: "validation errors are all reported",
			in:   "listen: x\nstorage: {root: ''}\n" + two + "  - {registry: ghcr.io, url: 'ftp://ghcr.io'}\n",
			want: []string{"listen:", "storage.root:", "upstreams[1].url:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := wantLoadErrors(t, tt.in, tt.want)
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("Load() error = %q, reveals the URL password", err)
			}
		})
	}
}

// A configuration written when fillTimeout defaulted to 30m, with an age
// chosen against that default, no longer loads: the error says which value
// to change and that the default moved, not only the rule.
func TestAgeBelowTheOldFillTimeoutDefault(t *testing.T) {
	t.Parallel()
	wantLoadErrors(t, "storage: {tempMaxAge: 1h, partialMaxAge: 2h}\n", []string{
		"storage.tempMaxAge: must be at least storage.fillTimeout (6h): raise it, or set storage.fillTimeout to at most 1h (its default is 6h; it was 30m before fills resumed across restarts)",
		"storage.partialMaxAge: must be at least storage.fillTimeout (6h): raise it, or set storage.fillTimeout to at most 2h (its default",
	})
	// A fillTimeout set in the file is no default: no word of one.
	err := wantLoadErrors(t, "storage: {fillTimeout: 3h, tempMaxAge: 1h}\n", []string{"storage.tempMaxAge: must be at least storage.fillTimeout (3h): raise it, or set storage.fillTimeout to at most 1h"})
	if strings.Contains(err.Error(), "default") {
		t.Errorf("error for an explicit fillTimeout = %q, speaks of a default", err)
	}
}

// A secret written one level off, where the decoder wants a mapping, is not
// repeated in the error (which a reload logs); the error still says where.
func TestLoadErrorsDoNotRepeatValues(t *testing.T) {
	const auth = "upstreams:\n  - registry: central.test\n    url: https://central.test\n    auth:\n      username: bob\n"
	for in, want := range map[string]string{
		"upstreams:\n  - registry: central.test\n    url: https://central.test\n    auth: Hunter2pw\n": "line 4: upstreams[0].auth: cannot unmarshal !!str value into",
		"storage:\n  blobs:\n    s3: wJalrXUtnFEMI/K7MDENG\n":                                          "line 3: storage.blobs.s3: cannot unmarshal !!str value into",
		// A tag the decoder cannot apply, on the value or one level off.
		"upstreams:\n  - registry: central.test\n    url: https://central.test\n    auth: !x Hunter2pw\n": "line 4: upstreams[0].auth: cannot unmarshal !x value into",
		auth + "      password: !!int Hunter2pw\n":                                                        "cannot decode !!str value as a !!int",
		auth + "      password: !!bool Hunter2pw\n":                                                       "cannot decode !!str value as a !!bool",
		// An unquoted password starting with '*' is an alias.
		auth + "      password: *Hunter2pw\n": "line 6: unknown anchor referenced (a value starting with '*' is an alias: quote it)",
	} {
		_, err := Load(strings.NewReader(in))
		if err == nil {
			t.Fatalf("Load(%q) = nil error", in)
		}
		msg := err.Error()
		if strings.Contains(msg, "Hunter2") || strings.Contains(msg, "wJalr") {
			t.Errorf("Load(%q) error = %q, repeats the value", in, msg)
		}
		if !strings.Contains(msg, want) {
			t.Errorf("Load(%q) error = %q, want it to contain %q (position and kind)", in, msg, want)
		}
	}
}

// Type errors name the field path of their value, as validation errors do.
func TestLoadTypeErrorsNameTheField(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][]string{
		"storage:\n  maxSize: 4M\n": {"line 2: storage.maxSize: invalid size"},
		"upstreams:\n  - registry: a\n    url: https://a\n    retry:\n      max: lots\n": {"line 5: upstreams[0].retry.max: cannot unmarshal !!str value into int"},
		"log:\n  level: [debug]\n":     {"line 2: log.level: want a single value"},
		"storage: {fillTimeout: xx}\n": {"line 1: storage: invalid duration"},
	} {
		_, err := Load(strings.NewReader(in))
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("Load(%q) error = %v, want %q", in, err, w)
			}
		}
	}
}

// Decode errors are one line each, as validation errors are, without the
// decoder's heading: the first line of a journal says what is wrong.
func TestLoadDecodeErrorsOnePerLine(t *testing.T) {
	t.Parallel()
	_, err := Load(strings.NewReader("cache:\n  tagTTL: 5\n  bogus: 1\n"))
	if err == nil {
		t.Fatal("Load of a bad config: no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "line 2: cache.tagTTL: invalid duration") ||
		!strings.HasPrefix(lines[1], `line 3: cache.bogus: unknown key "bogus"`) {
		t.Errorf("Load error = %q, want one line per problem, each with its line and field path", err)
	}
	if !errors.Is(err, errdef.ErrInvalid) {
		t.Errorf("Load error %v does not wrap ErrInvalid", err)
	}
}

func TestLoadTooLarge(t *testing.T) {
	t.Parallel()
	in := "# " + strings.Repeat("x", maxConfigSize) + "\n"
	_, err := Load(strings.NewReader(in))
	if err == nil || !strings.Contains(err.Error(), "larger than 1MiB") {
		t.Errorf("Load(%d bytes) error = %v, want larger than 1MiB", len(in), err)
	}
}

func TestLoadFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("listen: 127.0.0.1:5001\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("listen: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	c, err := LoadFile(good)
	if err != nil {
		t.Fatalf("LoadFile(%q) error = %v", good, err)
	}
	if c.Listen != "127.0.0.1:5001" {
		t.Errorf("LoadFile(%q).Listen = %q, want %q", good, c.Listen, "127.0.0.1:5001")
	}

	for _, path := range []string{bad, filepath.Join(dir, "missing.yaml")} {
		_, err := LoadFile(path)
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("LoadFile(%q) error = %v, want it to mention the path", path, err)
		}
	}
	if _, err := LoadFile(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadFile(missing) error = %v, want os.ErrNotExist", err)
	}
}

func TestOverride(t *testing.T) {
	t.Parallel()
	twoUpstreams := func() Config {
		c := Default()
		c.Upstreams = append(c.Upstreams, newUpstream("ghcr.io", "https://ghcr.io"))
		return c
	}
	tests := []struct {
		name                   string
		listen, root, upstream string
		want                   func() Config
		wantErr                string
	}{
		{
			name: "nothing",
			want: twoUpstreams,
		},
		{
			name:   "listen and storage",
			listen: "127.0.0.1:6000", root: "/srv/edge",
			want: func() Config {
				c := twoUpstreams()
				c.Listen = "127.0.0.1:6000"
				c.Storage.Root = "/srv/edge"
				return c
			},
		},
		{
			name:     "upstream replaces the list",
			upstream: "http://central.example.com:5000/",
			want: func() Config {
				c := Default()
				u := newUpstream("central.example.com:5000", "http://central.example.com:5000")
				u.Default = true
				c.Upstreams = []Upstream{u}
				return c
			},
		},
		{
			name:     "docker hub endpoint is named docker.io",
			upstream: "https://registry-1.docker.io",
			want:     Default,
		},
		{
			name:     "localhost",
			upstream: "http://localhost",
			want: func() Config {
				c := Default()
				u := newUpstream("localhost", "http://localhost")
				u.Default = true
				c.Upstreams = []Upstream{u}
				return c
			},
		},
		{name: "bad listen", listen: "nope", wantErr: "listen: want host:port"},
		{name: "bad upstream scheme", upstream: "ftp://x.example.com", wantErr: "upstream override: scheme must be http or https"},
		{name: "upstream credentials", upstream: "https://u:secret@x.example.com", wantErr: "upstream override: credentials in the URL are not allowed"},
		{name: "upstream host without dot", upstream: "http://myregistry", wantErr: `upstream override: host "myregistry" cannot name a registry`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := twoUpstreams()
			err := c.Override(tt.listen, tt.root, tt.upstream)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Override() error = %v, want %q", err, tt.wantErr)
				}
				if diff := cmp.Diff(twoUpstreams(), c); diff != "" {
					t.Errorf("Override() changed the config on error (-want +got):\n%s", diff)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("Override() error = %q, reveals the URL password", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Override() error = %v, want nil", err)
			}
			if diff := cmp.Diff(tt.want(), c); diff != "" {
				t.Errorf("Override() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOverrideDoesNotAlias(t *testing.T) {
	t.Parallel()
	orig := Default()
	c := orig
	if err := c.Override("", "", "https://ghcr.io"); err != nil {
		t.Fatal(err)
	}
	if orig.Upstreams[0].Registry != "docker.io" {
		t.Errorf("Override() modified a copy's Upstreams: %q", orig.Upstreams[0].Registry)
	}
}

func TestDefaultUpstream(t *testing.T) {
	t.Parallel()
	up := func(reg string, def bool) Upstream {
		u := newUpstream(reg, "https://"+reg)
		u.Default = def
		return u
	}
	tests := []struct {
		name string
		ups  []Upstream
		want int
	}{
		{"none", nil, -1},
		{"first when unmarked", []Upstream{up("a.io", false), up("b.io", false)}, 0},
		{"marked", []Upstream{up("a.io", false), up("b.io", true)}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := Config{Upstreams: tt.ups}
			if got := c.DefaultUpstream(); got != tt.want {
				t.Errorf("DefaultUpstream() = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestUpstreamIndex(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Upstreams = append(c.Upstreams, newUpstream("ghcr.io", "https://ghcr.io"))
	for reg, want := range map[string]int{"docker.io": 0, "GHCR.IO": 1, "quay.io": -1, "": -1} {
		if got := c.UpstreamIndex(reg); got != want {
			t.Errorf("UpstreamIndex(%q) = %d, want %d", reg, got, want)
		}
	}
}

func TestLibrary(t *testing.T) {
	t.Parallel()
	tests := []struct {
		registry string
		set      *bool
		want     bool
	}{
		{"docker.io", nil, true},
		{"Docker.IO", nil, true},
		{"ghcr.io", nil, false},
		{"docker.io", boolPtr(false), false},
		{"mirror.example.com", boolPtr(true), true},
	}
	for _, tt := range tests {
		u := Upstream{Registry: tt.registry, DockerHubLibrary: tt.set}
		if got := u.Library(); got != tt.want {
			t.Errorf("Upstream{Registry: %q, DockerHubLibrary: %v}.Library() = %v, want %v", tt.registry, tt.set, got, tt.want)
		}
	}
}

func TestValidateProgrammaticZero(t *testing.T) {
	t.Parallel()
	// A Config built by hand without Default must fail loudly, not run with
	// zero timeouts.
	err := Config{}.Validate()
	for _, w := range []string{"listen: required", "storage.root: required", "storage.fillTimeout:", "cache.tagNotFound:", "log.format:", "upstreams: at least one"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Config{}.Validate() = %v, want it to contain %q", err, w)
		}
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "listen" {
		t.Errorf("errors.As(Config{}.Validate(), *FieldError) = %v, want path listen", fe)
	}
}

func FuzzLoad(f *testing.F) {
	seeds := []string{
		"",
		"listen: :5000\n",
		"upstreams:\n  - registry: ghcr.io\n    url: https://ghcr.io\n    auth: {username: u, password: p}\n",
		"cache: {maxManifestSize: 1.5MB, tagTTL: 1h}\n",
		"a: &a [*a, *a]\n",
		"upstreams: [~, {registry: x}]\n",
		"log: {level: [debug]}\n",
		"---\n---\n",
	}
	if b, err := os.ReadFile(examplePath); err == nil {
		seeds = append(seeds, string(b))
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Load(strings.NewReader(in))
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load() returned a config that fails Validate: %v", err)
		}
		// Whatever loads must render and load back to the same config,
		// with inline passwords replaced by REDACTED.
		out, err := render(c)
		if err != nil {
			t.Fatalf("render(Load()) error = %v", err)
		}
		again, err := Load(strings.NewReader(out))
		if err != nil {
			t.Fatalf("Load(render(Load())) error = %v\n%s", err, out)
		}
		for i := range c.Upstreams {
			c.Upstreams[i].Auth.Password = redact(c.Upstreams[i].Auth.Password)
		}
		if diff := cmp.Diff(c, again); diff != "" {
			t.Fatalf("round trip mismatch (-loaded +reloaded):\n%s\n%s", diff, out)
		}
	})
}

// wantLoadErrors loads in, which must fail with an error wrapping
// errdef.ErrInvalid and containing every string of want, and returns it.
func wantLoadErrors(t *testing.T, in string, want []string) error {
	t.Helper()
	_, err := Load(strings.NewReader(in))
	if err == nil {
		t.Fatalf("Load() error = nil, want %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Load() error = %q, want it to contain %q", err, w)
		}
	}
	if !errors.Is(err, errdef.ErrInvalid) {
		t.Errorf("errors.Is(Load() error, errdef.ErrInvalid) = false, want true")
	}
	return err
}
