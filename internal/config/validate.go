package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/registry-edge/registry-edge/internal/glob"
)

// Limits enforced by Validate.
const (
	// MinManifestSize is the smallest accepted cache.maxManifestSize; a real
	// image index or manifest is rarely below 1 KiB, so a smaller limit is a
	// unit mistake ("4" meant as 4 MiB).
	MinManifestSize = KiB
	// MaxManifestSize is the largest accepted cache.maxManifestSize.
	// Manifests are held in memory while being verified; 64 MiB is 16 times
	// the 4 MiB the distribution spec requires registries to accept.
	MaxManifestSize = 64 * MiB
	// MinStoreSize is the smallest non-zero storage.maxSize: a smaller
	// budget is a unit mistake ("20" meant as 20 GiB).
	MinStoreSize = MiB
	// MinDeltaMemoryBudget is the smallest deltas.memoryBudget: about what
	// one delta computation's encoder tables take.
	MinDeltaMemoryBudget = 256 * MiB
	// MaxRetries is the largest accepted retry.max; more retries only delay
	// the error a client sees past its own timeout.
	MaxRetries = 10
)

// Validate checks c and returns every problem found, joined with
// errors.Join, each a *FieldError such as
//
//	upstreams[1].url: scheme must be http or https
//
// It does not touch the file system: paths such as tls.caFile and
// auth.passwordFile are checked when they are used.
func (c Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fieldErr(path, fmt.Sprintf(format, args...)))
	}

	if msg := checkListen(c.Listen); msg != "" {
		add("listen", "%s", msg)
	}

	if strings.TrimSpace(c.Storage.Root) == "" {
		add("storage.root", "required")
	}
	errs = append(errs, c.Storage.Blobs.validate("storage.blobs")...)
	positive(add, "storage.fillTimeout", c.Storage.FillTimeout)
	positive(add, "storage.fillStallTimeout", c.Storage.FillStallTimeout)
	positive(add, "storage.clientStallTimeout", c.Storage.ClientStallTimeout)
	positive(add, "storage.tempMaxAge", c.Storage.TempMaxAge)
	positive(add, "storage.partialMaxAge", c.Storage.PartialMaxAge)
	if c.Storage.MaxSize < 0 {
		add("storage.maxSize", "must not be negative")
	} else if c.Storage.MaxSize > 0 && c.Storage.MaxSize < MinStoreSize {
		add("storage.maxSize", "must be 0 (no limit) or at least %s", ByteSize(MinStoreSize))
	}
	// Written as a negation so that NaN (.nan in YAML), which compares
	// false with everything, is refused too: eviction's target would be
	// int64(NaN), which is 0 on arm64 (evict everything) and negative on
	// amd64 (never evict).
	if !(c.Storage.LowWatermark > 0 && c.Storage.LowWatermark <= 1) {
		add("storage.lowWatermark", "must be greater than 0 and at most 1, got %g", c.Storage.LowWatermark)
	}
	nonNegative(add, "storage.maxAge", c.Storage.MaxAge)
	nonNegative(add, "storage.minIdle", c.Storage.MinIdle)
	if c.Storage.Blobs.Driver == BlobsS3 && !c.Storage.Blobs.Replica.Evicts() {
		const why = "set on a replica that does not evict (storage.blobs.replica.evict: false): set it on the replica that evicts"
		if c.Storage.MaxSize > 0 {
			add("storage.maxSize", why)
		}
		if c.Storage.MaxAge > 0 {
			add("storage.maxAge", why)
		}
		if len(c.Prefetch.Images) > 0 {
			add("prefetch.images", "set on a replica that does not evict (storage.blobs.replica.evict: false): pins only hold against the evicting replica's eviction, so pre-stage there")
		}
	}
	for _, f := range []struct {
		path string
		v    Duration
	}{{"storage.tempMaxAge", c.Storage.TempMaxAge}, {"storage.partialMaxAge", c.Storage.PartialMaxAge}} {
		if c.Storage.FillTimeout > 0 && f.v > 0 && f.v < c.Storage.FillTimeout {
			// A younger file may belong to a fill still running in another
			// process sharing the root.
			msg := fmt.Sprintf("must be at least storage.fillTimeout (%s): raise it, or set storage.fillTimeout to at most %s", c.Storage.FillTimeout, f.v)
			if c.Storage.FillTimeout == Default().Storage.FillTimeout {
				// Configurations written for the first versions chose
				// these ages against a fillTimeout default of 30m; since
				// fills resume it is 6h, and they stopped loading.
				msg += fmt.Sprintf(" (its default is %s; it was 30m before fills resumed across restarts)", c.Storage.FillTimeout)
			}
			add(f.path, "%s", msg)
		}
	}

	positive(add, "deltas.discoveryTimeout", c.Deltas.DiscoveryTimeout)
	if !(c.Deltas.MaxRatio > 0 && c.Deltas.MaxRatio <= 1) {
		add("deltas.maxRatio", "must be in (0, 1]")
	}
	if c.Deltas.MinLayerSize < 0 {
		add("deltas.minLayerSize", "must not be negative")
	}
	if c.Deltas.MinSaving < 0 {
		add("deltas.minSaving", "must not be negative")
	}
	validatePrefixes(add, "deltas.serveTo", c.Deltas.ServeTo)
	if c.Deltas.MaxBaseCandidates < 1 || c.Deltas.MaxBaseCandidates > 64 {
		add("deltas.maxBaseCandidates", "must be between 1 and 64")
	}
	if c.Deltas.Workers < 1 || c.Deltas.Workers > 64 {
		add("deltas.workers", "must be between 1 and 64, got %d", c.Deltas.Workers)
	}
	if c.Deltas.MemoryBudget < MinDeltaMemoryBudget {
		add("deltas.memoryBudget", "must be at least %s (one delta computation), got %s", ByteSize(MinDeltaMemoryBudget), c.Deltas.MemoryBudget)
	}
	nonNegative(add, "cache.tagTTL", c.Cache.TagTTL)
	positive(add, "cache.revalidateTimeout", c.Cache.RevalidateTimeout)
	if !validEnum(c.Cache.TagNotFound, TagNotFoundServeCached, TagNotFoundNotFound) {
		add("cache.tagNotFound", "must be one of %s, %s", TagNotFoundServeCached, TagNotFoundNotFound)
	}
	if c.Cache.MaxManifestSize < MinManifestSize || c.Cache.MaxManifestSize > MaxManifestSize {
		add("cache.maxManifestSize", "must be between %s and %s", MinManifestSize, MaxManifestSize)
	}

	if !c.Log.Level.valid() {
		add("log.level", "must be one of debug, info, warn, error")
	}
	if !validEnum(c.Log.Format, LogFormatText, LogFormatJSON) {
		add("log.format", "must be one of %s, %s", LogFormatText, LogFormatJSON)
	}

	if len(c.Upstreams) == 0 {
		add("upstreams", "at least one upstream is required")
	}
	seen := map[string]int{}
	firstDefault := -1
	for i, u := range c.Upstreams {
		p := fmt.Sprintf("upstreams[%d]", i)
		errs = append(errs, u.validate(p)...)
		errs = append(errs, u.Offline.validate(p+".offline", u.Registry, c.Cache.TagTTL)...)
		errs = append(errs, u.Breaker.validate(p+".breaker")...)
		key := strings.ToLower(u.Registry)
		if j, ok := seen[key]; ok && key != "" {
			add(p+".registry", "duplicate of upstreams[%d].registry %q", j, c.Upstreams[j].Registry)
		} else {
			seen[key] = i
		}
		if u.Default {
			if firstDefault >= 0 {
				add(p+".default", "only one upstream may be the default, and upstreams[%d] already is", firstDefault)
			} else {
				firstDefault = i
			}
		}
	}
	c.Prefetch.validate(add)
	if c.TLS.Enabled() && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		add("tls", "certFile and keyFile go together")
	}
	switch c.TLS.ClientAuth {
	case "", "none":
		if c.TLS.ClientCAFile != "" {
			// Ignored without clientAuth: the admin who set it expects
			// devices to need certificates, and none are even asked for.
			add("tls.clientCAFile", "set, but clientAuth is none: no client certificate is asked for; set clientAuth to require or verify-if-given, or remove clientCAFile")
		}
	case "verify-if-given", "require":
		if !c.TLS.Enabled() {
			add("tls.clientAuth", "needs certFile and keyFile")
		}
		if c.TLS.ClientCAFile == "" {
			add("tls.clientCAFile", "required when clientAuth is %s", c.TLS.ClientAuth)
		}
	default:
		add("tls.clientAuth", "must be one of none, verify-if-given, require")
	}
	c.Admin.validate(add)
	validatePrefixes(add, "access.trustedProxies", c.Access.TrustedProxies)
	firstRule := map[string]string{} // pattern → path of its first use
	for i, r := range c.Access.Rules {
		p := fmt.Sprintf("access.rules[%d]", i)
		if len(r.Repositories) == 0 {
			add(p+".repositories", "at least one pattern is required")
		}
		for j, pat := range r.Repositories {
			// The first rule that matches decides: a later rule's copy of
			// a pattern never applies (users in one rule and certs in the
			// next leave the certs out).
			pp := fmt.Sprintf("%s.repositories[%d]", p, j)
			if first, ok := firstRule[pat]; !ok {
				firstRule[pat] = pp
			} else if !strings.HasPrefix(first, p+".") {
				add(pp, "duplicate of %s %q, which always matches first: put the rule's users and certs in one rule", first, pat)
			}
		}
		if len(r.Users) == 0 && len(r.Certs) == 0 {
			add(p, "needs users or certs: a rule that lets nobody in hides its repositories")
		}
		for j, pat := range r.Repositories {
			if _, err := glob.Compile(pat); err != nil {
				add(fmt.Sprintf("%s.repositories[%d]", p, j), "invalid pattern %q: %v", pat, err)
			}
		}
		for field, pats := range map[string][]string{"users": r.Users, "certs": r.Certs} {
			for j, pat := range pats {
				if _, err := path.Match(pat, ""); err != nil || pat == "" {
					add(fmt.Sprintf("%s.%s[%d]", p, field, j), "invalid pattern %q", pat)
				}
			}
		}
		if len(r.Users) > 0 && c.Access.Htpasswd == "" {
			add(p+".users", "needs access.htpasswd")
		}
		if len(r.Certs) > 0 && (c.TLS.ClientAuth == "" || c.TLS.ClientAuth == "none") {
			add(p+".certs", "needs tls.clientAuth verify-if-given or require")
		}
	}
	if rl := c.Access.RateLimit; math.IsNaN(rl.RequestsPerSecond) || math.IsInf(rl.RequestsPerSecond, 0) {
		// .nan would turn the limit off and .inf lift it, both silently.
		add("access.rateLimit.requestsPerSecond", "must be a finite number, got %g", rl.RequestsPerSecond)
	} else if rl.RequestsPerSecond < 0 {
		add("access.rateLimit.requestsPerSecond", "must not be negative")
	} else if rl.RequestsPerSecond > 0 && rl.Burst < 1 {
		add("access.rateLimit.burst", "must be at least 1 when requestsPerSecond is set")
	}
	if c.Access.ChallengeBase && c.Access.Htpasswd == "" {
		add("access.challengeBase", "needs access.htpasswd")
	}
	if !c.Access.Anonymous && c.Access.Htpasswd == "" && (c.TLS.ClientAuth == "" || c.TLS.ClientAuth == "none") {
		add("access.anonymous", "false needs access.htpasswd or tls.clientAuth, or no client can read anything")
	}
	if _, err := c.SignaturePolicy(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (u Upstream) validate(p string) []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fieldErr(path, fmt.Sprintf(format, args...)))
	}
	if msg := checkRegistry(u.Registry); msg != "" {
		add(p+".registry", "%s", msg)
	}
	parsed, msg := parseUpstreamURL(u.URL)
	if msg != "" {
		add(p+".url", "%s", msg)
	}
	errs = append(errs, u.Auth.validate(p+".auth")...)
	if u.TLS.InsecureSkipVerify && u.TLS.CAFile != "" {
		add(p+".tls", "insecureSkipVerify and caFile are mutually exclusive")
	}
	if parsed != nil && parsed.Scheme == "http" && (u.TLS != TLS{}) {
		add(p+".tls", "set, but url uses http")
	}
	positive(add, p+".timeouts.connect", u.Timeouts.Connect)
	positive(add, p+".timeouts.responseHeader", u.Timeouts.ResponseHeader)
	if u.Retry.Max < 0 || u.Retry.Max > MaxRetries {
		add(p+".retry.max", "must be between 0 and %d", MaxRetries)
	}
	positive(add, p+".retry.minWait", u.Retry.MinWait)
	positive(add, p+".retry.maxWait", u.Retry.MaxWait)
	if u.Retry.MinWait > 0 && u.Retry.MaxWait > 0 && u.Retry.MaxWait < u.Retry.MinWait {
		add(p+".retry.maxWait", "must be at least retry.minWait (%s)", u.Retry.MinWait)
	}
	nonNegative(add, p+".retry.maxRetryAfter", u.Retry.MaxRetryAfter)
	return errs
}

type addFunc func(path, format string, args ...any)

func positive(add addFunc, path string, d Duration) {
	if d <= 0 {
		add(path, "must be greater than 0, got %s", d)
	}
}

func nonNegative(add addFunc, path string, d Duration) {
	if d < 0 {
		add(path, "must not be negative, got %s", d)
	}
}

// checkListen returns what is wrong with a listen address, or "".
func checkListen(s string) string {
	if s == "" {
		return "required"
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("want host:port such as :5000 or 127.0.0.1:5000, got %q", s)
	}
	if msg := checkPort(port, true); msg != "" {
		return msg
	}
	if host != "" && net.ParseIP(host) == nil && !isHostname(host) {
		return fmt.Sprintf("invalid host %q", host)
	}
	return ""
}

// checkRegistry returns what is wrong with an upstream registry name, or "".
// Like Docker's reference parser, it requires a '.' or a ':port' or the name
// localhost, which is what tells /v2/<registry>/<repo> apart from a
// repository whose first component is a namespace.
func checkRegistry(s string) string {
	if s == "" {
		return "required"
	}
	if strings.Contains(s, "@") {
		// A URL with credentials pasted as the name: like the url
		// messages, this one does not repeat it, password and all.
		return "want a host[:port] such as ghcr.io or registry.example.com:5000, without scheme, path or credentials; credentials go in auth"
	}
	if strings.Contains(s, "://") || strings.ContainsAny(s, "/?#") {
		return fmt.Sprintf("want a host[:port] such as ghcr.io or registry.example.com:5000, without scheme or path, got %q", s)
	}
	host, port := s, ""
	if i := strings.LastIndexByte(s, ':'); i >= 0 && !strings.HasSuffix(s, "]") {
		host, port = s[:i], s[i+1:]
		if msg := checkPort(port, false); msg != "" {
			return msg
		}
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		if ip := net.ParseIP(host[1 : len(host)-1]); ip == nil || ip.To4() != nil {
			return fmt.Sprintf("invalid IPv6 address %q", host)
		}
		return ""
	}
	if !isHostname(host) {
		return fmt.Sprintf("invalid host %q", host)
	}
	if port == "" && !strings.Contains(host, ".") && !strings.EqualFold(host, "localhost") {
		return fmt.Sprintf("%q needs a '.', a ':port', or to be localhost, to be told apart from a repository namespace", s)
	}
	return ""
}

// parseUpstreamURL parses an upstream endpoint URL and returns what is wrong
// with it, or "". The messages never repeat the URL, which may carry a
// password.
func parseUpstreamURL(s string) (*url.URL, string) {
	if s == "" {
		return nil, "required"
	}
	u, err := url.Parse(s)
	if err != nil && strings.Contains(s, "@") {
		// url.Parse's message quotes pieces of the input: a password with
		// a '/' in it is read as the host's port, and would be shown.
		return nil, "invalid URL, and credentials in the URL are not allowed; use auth.username with auth.passwordFile"
	}
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // ue.URL is the raw input
		}
		return nil, fmt.Sprintf("invalid URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return u, "scheme must be http or https"
	}
	if u.User != nil {
		return u, "credentials in the URL are not allowed; use auth.username with auth.passwordFile"
	}
	if u.Host == "" {
		return u, "host is required"
	}
	if u.Opaque != "" || (u.Path != "" && u.Path != "/") {
		return u, "path is not supported: the registry API is always at /v2/"
	}
	if u.RawQuery != "" || u.ForceQuery {
		return u, "query is not allowed"
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return u, "fragment is not allowed"
	}
	if p := u.Port(); p != "" {
		if msg := checkPort(p, false); msg != "" {
			return u, msg
		}
	}
	return u, ""
}

// checkPort returns what is wrong with a numeric port, or "".
func checkPort(s string, allowZero bool) string {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || (n == 0 && !allowZero) {
		return fmt.Sprintf("invalid port %q", s)
	}
	return ""
}

// isHostname reports whether s is a DNS name or IPv4 address made of
// letters, digits, '-' and '.', with no empty label.
func isHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// CheckSignatureScopes refuses a signature rule pattern whose first
// segment cannot be a registry name (no '.' or ':', not localhost): rules
// match <registry>/<repository>, and a pattern written as for the default
// upstream's bare repositories ("fleet/**") would never apply, leaving what
// it was to protect unchecked. A registry name that no upstream has is
// only a warning (SignatureScopeWarnings): one policy may be shipped to
// sites mirroring different registries. Malformed patterns are sigpolicy's
// to report. It is not part of Validate: the upstreams are known only once
// command-line overrides are applied.
func (c Config) CheckSignatureScopes() error {
	errs, _ := c.signatureScopes()
	return errors.Join(errs...)
}

// SignatureScopeWarnings lists the signature rule patterns that name a
// registry no upstream has: inert on this mirror.
func (c Config) SignatureScopeWarnings() []string {
	_, warnings := c.signatureScopes()
	return warnings
}

func (c Config) signatureScopes() (errs []error, warnings []string) {
	if len(c.Upstreams) == 0 {
		return nil, nil
	}
	var names []string
	for _, u := range c.Upstreams {
		names = append(names, u.Registry)
	}
	for i, r := range c.Signatures.Rules {
		applies := false
		for j, pat := range r.Repositories {
			first, _, _ := strings.Cut(pat, "/")
			g, err := glob.Compile(first)
			if err != nil || slices.ContainsFunc(names, g.Match) {
				applies = applies || err == nil
				continue
			}
			path := fmt.Sprintf("signatures.rules[%d].repositories[%d]", i, j)
			if strings.ContainsAny(first, ".:*") || first == "localhost" {
				warnings = append(warnings, fmt.Sprintf("%s: %q names a registry no upstream has (upstreams: %s): the rule does not apply here",
					path, pat, strings.Join(names, ", ")))
				continue
			}
			errs = append(errs, fieldErr(path, fmt.Sprintf("%q matches no upstream: patterns are <registry>/<repository> (upstreams: %s), e.g. %s/%s",
				pat, strings.Join(names, ", "), names[0], pat)))
		}
		// The signature repository is fetched through an upstream: one
		// no upstream has would deny every image of a rule that applies.
		if host, _, ok := strings.Cut(r.SignatureRepository, "/"); ok && applies &&
			!slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, host) }) {
			errs = append(errs, fieldErr(fmt.Sprintf("signatures.rules[%d].signatureRepository", i),
				fmt.Sprintf("%q is on %s, which no upstream has (upstreams: %s): name the repository as <upstream registry>/<repository>",
					r.SignatureRepository, host, strings.Join(names, ", "))))
		}
	}
	return errs, warnings
}
