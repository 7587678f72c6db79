// Package config defines the registry-edge configuration: the Config types
// with their YAML schema, Default, a strict Load and Validate. It is the only
// package that reads configuration; every other package takes the typed
// values it needs through its constructor.
//
// The reference for every key is docs/config.md, and
// config/registry-edge.example.yaml is a commented example that a test keeps
// loadable and in step with Default.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/sigpolicy"
)

// maxConfigSize bounds the input of Load. A real configuration is a few KiB;
// the bound keeps a wrong path (a log file, /dev/zero) from eating memory.
const maxConfigSize = 1 << 20

// Config is the whole registry-edge configuration. Obtain one from Default,
// Load or LoadFile; a Config built by hand must pass Validate before use.
type Config struct {
	// Listen is the TCP address the registry API is served on, host:port.
	Listen string `yaml:"listen"`
	// Storage configures the local content store.
	Storage Storage `yaml:"storage"`
	// Cache configures how mutable references (tags) are cached.
	Cache Cache `yaml:"cache"`
	// Log configures logging.
	Log Log `yaml:"log"`
	// Upstreams lists the registries this edge mirrors. In YAML the list
	// replaces the default list as a whole; keys left out of an entry take
	// their defaults.
	Upstreams []Upstream `yaml:"upstreams"`
	// Prefetch lists images to pre-stage on the site.
	Prefetch Prefetch `yaml:"prefetch"`
	// Admin configures the site admin's API.
	Admin Admin `yaml:"admin"`
	// TLS serves the registry listener over HTTPS when set.
	TLS ServerTLS `yaml:"tls,omitempty"`
	// Access decides which clients may read which repositories.
	Access Access `yaml:"access"`
	// Deltas configures layer deltas.
	Deltas Deltas `yaml:"deltas"`
	// Signatures is the signature policy: which repositories need which
	// cosign signatures (see internal/sigpolicy).
	Signatures sigpolicy.Spec `yaml:"signatures,omitempty"`
}

// Deltas configures layer deltas: rebuilding layers from published or
// negotiated deltas, and computing deltas for lower tiers.
type Deltas struct {
	// Enabled looks for deltas of the layers of pulled images and rebuilds
	// layers from them when their bases are stored.
	Enabled bool `yaml:"enabled"`
	// DiscoveryTimeout bounds the lookup of an image's published deltas
	// when its manifest is fetched.
	DiscoveryTimeout Duration `yaml:"discoveryTimeout"`
	// Negotiate asks an upstream that is a registry-edge for a delta
	// against the layers this mirror holds (RFC 3229 A-IM).
	Negotiate bool `yaml:"negotiate"`
	// Serve answers such requests from lower tiers with deltas computed
	// here.
	Serve bool `yaml:"serve"`
	// ServeTo, if not empty, lists the networks (CIDR) of the lower tiers
	// that may ask for deltas; requests from elsewhere are answered as
	// plain blob requests. Empty: any client the access rules let read.
	ServeTo []string `yaml:"serveTo,omitempty"`
	// Precompute computes, when a new image's manifest is fetched, the
	// deltas of its layers against the repository's other stored images,
	// so that lower tiers rarely wait (with Serve).
	Precompute bool `yaml:"precompute"`
	// MaxRatio bounds the delta served to a lower tier: it must be smaller
	// than this fraction of the layer, or the full layer is served.
	MaxRatio float64 `yaml:"maxRatio"`
	// MinLayerSize is the smallest layer a delta is negotiated, computed
	// or used for, MinSaving the fewest bytes a delta must save over its
	// layer: below them a delta's requests and rebuild cost more than it
	// saves.
	MinLayerSize ByteSize `yaml:"minLayerSize"`
	MinSaving    ByteSize `yaml:"minSaving"`
	// MaxBaseCandidates bounds the layers a mirror offers as bases in one
	// negotiation.
	MaxBaseCandidates int `yaml:"maxBaseCandidates"`
	// Workers bounds the deltas computed at once for lower tiers
	// (precomputed or asked for).
	Workers int `yaml:"workers"`
	// MemoryBudget bounds the memory of the deltas computed at once: each
	// reserves an estimate (encoder tables plus its bases) and waits for
	// room; one larger than the budget runs alone.
	MemoryBudget ByteSize `yaml:"memoryBudget"`
}

// Access is the device access policy of the registry API.
type Access struct {
	// Anonymous lets clients without credentials read the repositories no
	// rule restricts.
	Anonymous bool `yaml:"anonymous"`
	// Htpasswd is a file of user:bcrypt-hash lines (htpasswd -B) for
	// basic authentication.
	Htpasswd string `yaml:"htpasswd,omitempty"`
	// ChallengeBase answers GET /v2/ from clients without credentials with
	// a Basic challenge when Htpasswd has users, also with Anonymous, so
	// that podman, skopeo and buildah send the credentials they hold.
	// Docker Engine then cannot pull anonymously.
	ChallengeBase bool `yaml:"challengeBase,omitempty"`
	// Rules restrict repositories to some users or client certificates;
	// the first rule whose repositories match decides.
	Rules []AccessRule `yaml:"rules,omitempty"`
	// RateLimit bounds the registry requests of each client address.
	RateLimit RateLimit `yaml:"rateLimit"`
	// TrustedProxies are the networks (CIDR) of reverse proxies in front of
	// this mirror (nginx before replicas): for a request from one of them,
	// the client address is taken from X-Forwarded-For, for the rate limit,
	// admin.allowFrom and the access log. Empty trusts no header.
	TrustedProxies []string `yaml:"trustedProxies,omitempty"`
}

// TrustedProxyNetworks returns TrustedProxies parsed; Validate has checked
// them.
func (a Access) TrustedProxyNetworks() []netip.Prefix { return parsePrefixes(a.TrustedProxies) }

// RateLimit is a per-client-address token bucket.
type RateLimit struct {
	// RequestsPerSecond is the sustained rate; 0 turns the limit off.
	RequestsPerSecond float64 `yaml:"requestsPerSecond"`
	// Burst is how many requests may come at once.
	Burst int `yaml:"burst"`
}

// AccessRule restricts repositories.
type AccessRule struct {
	// Repositories are glob patterns (path.Match; '*' stops at '/') on the
	// repository name as clients send it, registry prefix included.
	Repositories []string `yaml:"repositories"`
	// Users are glob patterns of htpasswd user names allowed to read them.
	Users []string `yaml:"users,omitempty"`
	// Certs are glob patterns of client certificate common names allowed
	// to read them (tls.clientAuth).
	Certs []string `yaml:"certs,omitempty"`
}

// ServerTLS configures HTTPS (and HTTP/2) on the registry listener.
type ServerTLS struct {
	// CertFile and KeyFile are the PEM certificate (chain) and key. They
	// are re-read when they change, so a renewed certificate needs no
	// restart. Both or neither.
	CertFile string `yaml:"certFile,omitempty"`
	KeyFile  string `yaml:"keyFile,omitempty"`
	// ClientAuth asks clients for certificates (mTLS): none,
	// verify-if-given or require.
	ClientAuth string `yaml:"clientAuth,omitempty"`
	// ClientCAFile is the PEM bundle of the CAs that sign client
	// certificates; required unless ClientAuth is none.
	ClientCAFile string `yaml:"clientCAFile,omitempty"`
}

// Enabled reports whether HTTPS is configured.
func (t ServerTLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// Storage configures the local content store.
type Storage struct {
	// Root is the directory holding blobs, manifests and temporary files. A
	// relative path is relative to the working directory.
	Root string `yaml:"root"`
	// FillTimeout bounds one upstream blob fill, from the first request to
	// the commit, across all its resumes, independent of the client that
	// triggered it. It is the overall deadline of a fill's retries.
	FillTimeout Duration `yaml:"fillTimeout"`
	// FillStallTimeout is how long a fill waits for the next body bytes
	// from the upstream before it drops the connection and resumes.
	FillStallTimeout Duration `yaml:"fillStallTimeout"`
	// ClientStallTimeout is how long a client streaming a blob that is
	// being filled waits for new bytes (while the fill resumes) before its
	// connection is closed. The fill itself goes on.
	ClientStallTimeout Duration `yaml:"clientStallTimeout"`
	// TempMaxAge is the age above which a temporary file under Root is
	// considered orphaned (by a crash) and removed at start-up.
	TempMaxAge Duration `yaml:"tempMaxAge"`
	// PartialMaxAge is how long an interrupted fill's partial download is
	// kept, from its last write, for a later fill to resume it.
	PartialMaxAge Duration `yaml:"partialMaxAge"`
	// MaxSize is the byte budget of the store; 0 means none. Above it,
	// whole images are evicted, least recently pulled first, down to
	// LowWatermark × MaxSize. Pinned (pre-staged) content is never evicted.
	MaxSize ByteSize `yaml:"maxSize"`
	// LowWatermark is the fraction of MaxSize eviction brings the store
	// down to.
	LowWatermark float64 `yaml:"lowWatermark"`
	// MaxAge evicts images not pulled for longer; 0 means no age limit.
	MaxAge Duration `yaml:"maxAge"`
	// MinIdle spares from eviction images served (or stored) less than
	// this long ago: a device may be pulling them, and with the uplink down
	// an image evicted mid-pull is lost to the site. The budget may be
	// exceeded meanwhile.
	MinIdle Duration `yaml:"minIdle"`
	// Blobs selects where blobs and manifests are stored: under Root
	// (default) or in an S3 bucket.
	Blobs Blobs `yaml:"blobs,omitempty"`
}

// Cache configures how tags are cached. Content addressed by digest never
// expires through these settings.
type Cache struct {
	// TagTTL is how long a cached tag answers with zero upstream requests.
	// After that it is revalidated with a HEAD. Zero revalidates every time.
	TagTTL Duration `yaml:"tagTTL"`
	// RevalidateTimeout bounds the HEAD that revalidates a stale tag; when it
	// runs out or fails, the cached tag is served (stale-if-error).
	RevalidateTimeout Duration `yaml:"revalidateTimeout"`
	// TagNotFound is what to do when the upstream answers 404 for a tag that
	// is cached.
	TagNotFound TagNotFoundPolicy `yaml:"tagNotFound"`
	// MaxManifestSize is the largest manifest accepted from an upstream.
	MaxManifestSize ByteSize `yaml:"maxManifestSize"`
}

// Log configures logging.
type Log struct {
	// Level is the minimum level logged.
	Level Level `yaml:"level"`
	// Format selects text or JSON output.
	Format LogFormat `yaml:"format"`
	// AccessLog enables one info line per request.
	AccessLog bool `yaml:"accessLog"`
}

// Upstream is one registry this edge mirrors.
type Upstream struct {
	// Registry is the registry host name the mirror answers for, as it
	// appears in image references: "docker.io", "ghcr.io",
	// "central.example.com:5000". Requests are routed here by a path prefix
	// (/v2/ghcr.io/org/app/...) or by containerd's ?ns=ghcr.io.
	Registry string `yaml:"registry"`
	// URL is the endpoint the registry API is reached at, such as
	// https://registry-1.docker.io, without path, query or credentials.
	URL string `yaml:"url"`
	// Default marks the upstream for requests with no prefix and no ?ns=.
	// When no upstream is marked, the first one is the default.
	Default bool `yaml:"default"`
	// DockerHubLibrary, when true, prefixes single-component repository
	// names with "library/" (alpine → library/alpine). Nil means true for
	// docker.io and false otherwise; use Library.
	DockerHubLibrary *bool `yaml:"dockerHubLibrary,omitempty"`
	// Auth holds the credentials for this upstream.
	Auth Auth `yaml:"auth,omitempty"`
	// TLS configures certificate verification for an https URL.
	TLS TLS `yaml:"tls,omitempty"`
	// Timeouts bounds the connection phases of each upstream request.
	Timeouts Timeouts `yaml:"timeouts"`
	// Retry configures retries of idempotent upstream requests.
	Retry Retry `yaml:"retry"`
	// Offline bounds how stale a cached tag may be and still be served
	// when this upstream cannot confirm it.
	Offline Offline `yaml:"offline"`
	// Breaker configures the circuit breaker that stops requests to this
	// upstream while it is down.
	Breaker Breaker `yaml:"breaker"`
}

// TLS configures certificate verification for an upstream.
type TLS struct {
	// InsecureSkipVerify disables certificate verification. For tests only.
	InsecureSkipVerify bool `yaml:"insecureSkipVerify,omitempty"`
	// CAFile is a PEM bundle of extra roots, added to the system pool.
	CAFile string `yaml:"caFile,omitempty"`
}

// Timeouts bounds the connection phases of each upstream request. A body
// transfer is bounded by Storage.FillTimeout, not by these.
type Timeouts struct {
	// Connect bounds the TCP connect and TLS handshake.
	Connect Duration `yaml:"connect"`
	// ResponseHeader bounds the wait for response headers once the request
	// is sent.
	ResponseHeader Duration `yaml:"responseHeader"`
}

// Retry configures retries of idempotent upstream requests (on connection
// errors, 429 and 5xx), with exponential backoff and jitter between MinWait
// and MaxWait.
type Retry struct {
	// Max is the number of retries after the first attempt; 0 disables.
	Max int `yaml:"max"`
	// MinWait is the first backoff.
	MinWait Duration `yaml:"minWait"`
	// MaxWait caps the backoff.
	MaxWait Duration `yaml:"maxWait"`
	// MaxRetryAfter is the longest Retry-After the client waits for; a
	// longer one fails the request at once instead of stalling it.
	MaxRetryAfter Duration `yaml:"maxRetryAfter"`
}

// Library reports whether single-component repository names are prefixed
// with "library/": DockerHubLibrary if set, else whether Registry is
// docker.io.
func (u Upstream) Library() bool {
	if u.DockerHubLibrary != nil {
		return *u.DockerHubLibrary
	}
	return strings.EqualFold(u.Registry, dockerHub)
}

// UnmarshalYAML starts each list entry from the default timeouts and retry
// settings, so that keys left out take their defaults while explicit zeros
// (retry.max: 0) are kept. It implements yaml.v3's obsolete Unmarshaler form
// on purpose: unlike yaml.Node.Decode, its callback keeps the decoder's
// KnownFields setting, so unknown keys inside an entry are still errors.
func (u *Upstream) UnmarshalYAML(unmarshal func(any) error) error {
	type upstream Upstream // no methods: stops the recursion
	v := upstream(newUpstream("", ""))
	if err := unmarshal(&v); err != nil {
		return err
	}
	*u = Upstream(v)
	return nil
}

// Default returns the built-in configuration: listen on :5000, store under
// ./data, and mirror Docker Hub as the default upstream.
func Default() Config {
	up := newUpstream(dockerHub, "https://registry-1.docker.io")
	up.Default = true
	return Config{
		Listen: ":5000",
		Storage: Storage{
			Root:               "data",
			FillTimeout:        Duration(6 * time.Hour),
			FillStallTimeout:   Duration(30 * time.Second),
			ClientStallTimeout: Duration(2 * time.Minute),
			TempMaxAge:         Duration(24 * time.Hour),
			PartialMaxAge:      Duration(72 * time.Hour),
			LowWatermark:       0.9,
			MinIdle:            Duration(5 * time.Minute),
			Blobs:              Blobs{Driver: BlobsFilesystem},
		},
		Cache: Cache{
			TagTTL:            Duration(5 * time.Minute),
			RevalidateTimeout: Duration(2 * time.Second),
			TagNotFound:       TagNotFoundServeCached,
			// The distribution spec asks registries to accept manifests of
			// at least 4 MiB and allows rejecting larger ones:
			// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pushing-manifests
			MaxManifestSize: 4 * MiB,
		},
		Log: Log{
			Level:     LevelInfo,
			Format:    LogFormatText,
			AccessLog: true,
		},
		Upstreams: []Upstream{up},
		Prefetch: Prefetch{
			Concurrency: 2,
			Interval:    Duration(time.Hour),
		},
		Admin:  Admin{AllowFrom: []string{"127.0.0.0/8", "::1/128"}},
		Access: Access{Anonymous: true, RateLimit: RateLimit{Burst: 200}},
		Deltas: Deltas{Enabled: true, DiscoveryTimeout: Duration(5 * time.Second), Negotiate: true, Serve: true,
			Precompute: true, MaxRatio: 0.5, MinLayerSize: 64 << 10, MinSaving: 16 << 10, // layerdelta.DefaultMinimums
			MaxBaseCandidates: 16, Workers: 1, MemoryBudget: 1 << 30},
	}
}

// newUpstream returns an upstream with the default timeouts, retry and
// breaker settings and no staleness limit.
func newUpstream(registry, rawURL string) Upstream {
	return Upstream{
		Registry: registry,
		URL:      rawURL,
		Timeouts: Timeouts{
			Connect:        Duration(5 * time.Second),
			ResponseHeader: Duration(30 * time.Second),
		},
		Retry: Retry{
			Max:           3,
			MinWait:       Duration(200 * time.Millisecond),
			MaxWait:       Duration(5 * time.Second),
			MaxRetryAfter: Duration(10 * time.Second),
		},
		Breaker: Breaker{
			Failures: 3,
			MinProbe: Duration(time.Second),
			MaxProbe: Duration(time.Minute),
		},
	}
}

// Load reads a YAML configuration from r: it starts from Default, decodes r
// strictly over it (an unknown key is an error naming the key and its line),
// applies the per-upstream defaults and validates the result. Empty input
// yields Default. Errors other than I/O errors wrap errdef.ErrInvalid;
// validation errors are joined field-path errors (see Validate).
func Load(r io.Reader) (Config, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxConfigSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	if len(b) > maxConfigSize {
		return Config{}, fmt.Errorf("read config: larger than %s: %w", ByteSize(maxConfigSize), errdef.ErrInvalid)
	}
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return Default(), nil
		}
		err = withPaths(withoutValues(err, b), b)
		var te *yaml.TypeError
		if errors.As(err, &te) {
			// One line per problem, as validation reports them, without
			// the decoder's "unmarshal errors:" heading.
			return Config{}, invalid(errors.New(strings.Join(te.Errors, "\n")))
		}
		return Config{}, invalid(fmt.Errorf("decode config: %w", err))
	}
	// A document separator with nothing after it ("---" at the end, as
	// tools that concatenate YAML leave) is an empty document, not a
	// second configuration.
	var extra yaml.Node
	err = dec.Decode(&extra)
	for err == nil && emptyDocument(&extra) {
		extra = yaml.Node{}
		err = dec.Decode(&extra)
	}
	if !errors.Is(err, io.EOF) {
		if err == nil {
			line := extra.Line
			if len(extra.Content) > 0 {
				line = extra.Content[0].Line
			}
			err = fmt.Errorf("line %d: more than one YAML document", line)
		}
		return Config{}, invalid(fmt.Errorf("decode config: %w", err))
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// emptyDocument reports whether n, a document the decoder returned, holds
// nothing but a null.
func emptyDocument(n *yaml.Node) bool {
	return len(n.Content) == 0 || len(n.Content) == 1 && n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null"
}

// LoadFile is Load on the named file; every error names the path.
func LoadFile(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("load config: %w", err)
	}
	defer f.Close()
	c, err := Load(f)
	if err != nil {
		return Config{}, fmt.Errorf("load config %s: %w", path, err)
	}
	return c, nil
}

// applyDefaults normalises what Load decoded. Per-upstream defaults are
// applied during the decode itself (see Upstream.UnmarshalYAML), because
// only there is an unset key distinguishable from an explicit zero.
func (c *Config) applyDefaults() {
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		u.Registry = strings.ToLower(u.Registry)
		if len(u.Offline.Repositories) == 0 {
			u.Offline.Repositories = nil // "repositories: []" renders as absent
		}
		if p, err := url.Parse(u.URL); err == nil && p.Path == "/" && p.RawQuery == "" && p.Fragment == "" {
			u.URL = strings.TrimSuffix(u.URL, "/")
		}
	}
}

// Override applies the registry-edge command-line flags --listen, --storage
// and --upstream over c; empty values leave c unchanged. An upstream URL
// replaces the upstream list with a single default upstream, with default
// timeouts and retry and no auth, whose Registry is the URL's host[:port]
// ("docker.io" for Docker Hub's hosts). The result is validated; on error c
// is left unchanged.
func (c *Config) Override(listen, storageRoot, upstreamURL string) error {
	n := *c
	n.Upstreams = slices.Clone(c.Upstreams)
	if listen != "" {
		n.Listen = listen
	}
	if storageRoot != "" {
		n.Storage.Root = storageRoot
	}
	if upstreamURL != "" {
		u, msg := parseUpstreamURL(upstreamURL)
		if msg != "" {
			return fieldErr("upstream override", msg)
		}
		registry := strings.ToLower(u.Host)
		if isDockerHubHost(u.Host) {
			registry = dockerHub
		}
		if msg := checkRegistry(registry); msg != "" {
			return fieldErr("upstream override", fmt.Sprintf("host %q cannot name a registry: %s; use a config file to set upstreams[].registry", registry, msg))
		}
		up := newUpstream(registry, upstreamURL)
		up.Default = true
		n.Upstreams = []Upstream{up}
	}
	n.applyDefaults()
	if err := n.Validate(); err != nil {
		return err
	}
	*c = n
	return nil
}

// DefaultUpstream returns the index of the upstream that serves requests
// with no registry prefix and no ?ns=: the one marked Default, else the
// first. It returns -1 when there are no upstreams.
func (c Config) DefaultUpstream() int {
	if len(c.Upstreams) == 0 {
		return -1
	}
	for i, u := range c.Upstreams {
		if u.Default {
			return i
		}
	}
	return 0
}

// UpstreamIndex returns the index of the upstream whose Registry equals
// registry, ignoring case, or -1. It is the lookup for a path prefix or a
// ?ns= value.
func (c Config) UpstreamIndex(registry string) int {
	for i, u := range c.Upstreams {
		if strings.EqualFold(u.Registry, registry) {
			return i
		}
	}
	return -1
}

// FieldError is one problem Validate found, at a field path such as
// "upstreams[1].url". It wraps errdef.ErrInvalid.
type FieldError struct {
	// Path is the YAML path of the field, with list indexes.
	Path string
	// Msg says what is wrong.
	Msg string
}

// Error returns "path: msg".
func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// Unwrap returns errdef.ErrInvalid.
func (e *FieldError) Unwrap() error { return errdef.ErrInvalid }

func fieldErr(path, msg string) error { return &FieldError{Path: path, Msg: msg} }

// invalidError marks a decode error as errdef.ErrInvalid without changing
// its message.
type invalidError struct{ err error }

func (e invalidError) Error() string   { return e.err.Error() }
func (e invalidError) Unwrap() []error { return []error{e.err, errdef.ErrInvalid} }

func invalid(err error) error { return invalidError{err} }

// yamlValue is the excerpt of a value that the YAML decoder puts in its
// errors, quoted in backticks: "cannot unmarshal !!str `s3cr3t` into
// config.Auth", "cannot unmarshal !x `s3cr3t...` into config.Auth",
// "cannot decode !!str `s3cr3t` as a !!int".
var yamlValue = regexp.MustCompile(" `[^`]*`")

// yamlAnchor is the name in the decoder's error for an alias of no anchor:
// an unquoted password that starts with '*' is read as one.
var yamlAnchor = regexp.MustCompile(`unknown anchor '([^']*)' referenced`)

// yamlLine is the start of one of the YAML decoder's type errors.
var yamlLine = regexp.MustCompile(`^line (\d+): `)

// withPaths names, in the YAML decoder's type errors ("line 7: cannot
// unmarshal ..."), the field path of the value on that line
// ("line 7: upstreams[0].retry.max: cannot unmarshal ..."), as validation
// errors do. A line that holds several values (a flow mapping) keeps its
// number only.
func withPaths(err error, b []byte) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	paths := linePaths(b)
	out := &yaml.TypeError{Errors: make([]string, len(te.Errors))}
	for i, e := range te.Errors {
		out.Errors[i] = e
		m := yamlLine.FindStringSubmatch(e)
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		rest := unknownKey(e[len(m[0]):])
		if p := paths[n]; p != "" {
			rest = p + ": " + rest
		}
		out.Errors[i] = m[0] + rest
	}
	return out
}

// yamlUnknown is the YAML decoder's error for a key that no field has.
var yamlUnknown = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)

// unknownKey rewrites the decoder's "field X not found in type config.T",
// which names a Go type a site admin never sees, as what to do about it:
// the key that is close to it (a typo, a case slip), or the keys there are.
func unknownKey(e string) string {
	m := yamlUnknown.FindStringSubmatch(e)
	if m == nil {
		return e
	}
	key, known := m[1], yamlKeys()[m[2]]
	if known == nil {
		// A method-less copy of a type, declared where the type decodes
		// itself (Upstream's "upstream"), has the same keys.
		for name, ks := range yamlKeys() {
			if strings.EqualFold(name, m[2]) {
				known = ks
			}
		}
	}
	if len(known) == 0 {
		return fmt.Sprintf("unknown key %q", key)
	}
	for _, k := range known {
		// A slip of a key or two (one more per five letters), not any
		// short key to any other ("foo" is not "log").
		if strings.EqualFold(k, key) || editDistance(k, key) <= 1+len(key)/5 {
			return fmt.Sprintf("unknown key %q (did you mean %q?)", key, k)
		}
	}
	return fmt.Sprintf("unknown key %q (the keys here: %s)", key, strings.Join(known, ", "))
}

// yamlKeys maps the name of each struct type a configuration is decoded
// into, as the decoder's errors write it ("config.Storage"), to its keys.
var yamlKeys = sync.OnceValue(func() map[string][]string {
	keys := map[string][]string{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		switch t.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
			walk(t.Elem())
			return
		case reflect.Struct:
		default:
			return
		}
		if _, seen := keys[t.String()]; seen {
			return
		}
		keys[t.String()] = nil // before the fields: a type may contain itself
		var names []string
		var fields func(t reflect.Type)
		fields = func(t reflect.Type) {
			for f := range t.Fields() {
				name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				switch {
				case name == "-":
					continue
				case strings.Contains(opts, "inline"):
					fields(f.Type)
					continue
				case name == "":
					if !f.IsExported() {
						continue
					}
					name = strings.ToLower(f.Name) // the decoder's default
				}
				names = append(names, name)
				walk(f.Type)
			}
		}
		fields(t)
		keys[t.String()] = names
	}
	walk(reflect.TypeFor[Config]())
	return keys
})

// editDistance is the Levenshtein distance of a and b (short keys).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// linePaths maps the lines of YAML document b to the field path of the one
// value that starts there ("" where several do); a flow collection counts
// as one value.
func linePaths(b []byte) map[int]string {
	var doc yaml.Node
	if yaml.Unmarshal(b, &doc) != nil {
		return nil
	}
	all := map[int][]string{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if path != "" {
			all[n.Line] = append(all[n.Line], path)
		}
		if n.Style&yaml.FlowStyle != 0 {
			return // {a: 1, b: 2} or [x, y]: one line, one path
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				key := n.Content[i].Value
				if path != "" {
					key = path + "." + key
				}
				walk(n.Content[i+1], key)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	walk(&doc, "")
	out := map[int]string{}
	for line, ps := range all {
		// A block mapping starts on the line of its first key: the
		// deepest path, if every other one leads to it, is the value's.
		deepest := slices.MaxFunc(ps, func(a, b string) int { return len(a) - len(b) })
		if !slices.ContainsFunc(ps, func(p string) bool { return !strings.HasPrefix(deepest, p) }) {
			out[line] = deepest
		}
	}
	return out
}

// withoutValues drops the values from the YAML decoder's errors: a secret
// written one level off (auth: s3cr3t), under an explicit tag (password:
// !!int s3cr3t) or unquoted after a '*' (password: *s3cr3t, an alias)
// would otherwise be repeated in the error, and in the log of a reload.
func withoutValues(err error, b []byte) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return errors.New(scrubValues(err.Error(), b))
	}
	out := &yaml.TypeError{Errors: make([]string, len(te.Errors))}
	for i, e := range te.Errors {
		out.Errors[i] = scrubValues(e, b)
	}
	return out
}

// scrubValues drops the values from one of the decoder's messages about
// document b; an alias of no anchor, reported without a line, gets the
// line of its first use.
func scrubValues(msg string, b []byte) string {
	msg = yamlValue.ReplaceAllString(msg, " value")
	return yamlAnchor.ReplaceAllStringFunc(msg, func(m string) string {
		const what = "unknown anchor referenced (a value starting with '*' is an alias: quote it)"
		alias := "*" + yamlAnchor.FindStringSubmatch(m)[1]
		for n, line := range slices.Collect(strings.Lines(string(b))) {
			if strings.Contains(line, alias) {
				return fmt.Sprintf("line %d: %s", n+1, what)
			}
		}
		return what
	})
}
