package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/registry-edge/registry-edge/internal/access"
	"github.com/registry-edge/registry-edge/internal/admin"
	"github.com/registry-edge/registry-edge/internal/config"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/gc"
	"github.com/registry-edge/registry-edge/internal/httpserve"
	"github.com/registry-edge/registry-edge/internal/layerdelta"
	"github.com/registry-edge/registry-edge/internal/logging"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/metrics"
	"github.com/registry-edge/registry-edge/internal/prefetch"
	"github.com/registry-edge/registry-edge/internal/proxy"
	"github.com/registry-edge/registry-edge/internal/sigpolicy"
	"github.com/registry-edge/registry-edge/internal/status"
	"github.com/registry-edge/registry-edge/internal/tlsserve"
	"github.com/registry-edge/registry-edge/internal/upstream"
	"github.com/registry-edge/registry-edge/internal/version"
)

// shutdownGrace bounds how long a stop waits for requests to end, and
// fillsGrace how long it then waits for fills to stop (they are cancelled;
// what they received stays on disk).
const (
	shutdownGrace = 30 * time.Second
	fillsGrace    = 10 * time.Second
)

// reloadFunc reads the configuration again (SIGHUP).
type reloadFunc func() (config.Config, error)

// reloadRequests carries SIGHUP to a running serve; main forwards the
// signal, tests send directly.
var reloadRequests = make(chan struct{}, 1)

func serve(ctx context.Context, cfg config.Config, reload reloadFunc, stderr io.Writer, notice *stopNotice) error {
	logOut := logging.NewBufferedWriter(stderr, 100*time.Millisecond)
	defer logOut.Close()
	level := new(slog.LevelVar)
	level.Set(cfg.Log.Level.Level())
	log := logging.New(logOut, level, cfg.Log.Format == config.LogFormatJSON)
	// A second signal while stopping is logged as the rest of the log.
	notice.use(log, logOut.Flush)
	defer notice.use(nil, nil)

	// meta.db first: its lock makes this process the only one on
	// storage.root, so the store may clear what a dead one left there.
	if err := os.MkdirAll(cfg.Storage.Root, 0o755); err != nil {
		return fmt.Errorf("storage.root: %w", err)
	}
	db, err := meta.Open(filepath.Join(cfg.Storage.Root, "meta.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := openStore(ctx, cfg, log)
	if err != nil {
		return startFailed(ctx, log, err)
	}
	if err := shareMeta(ctx, cfg, store, db, log); err != nil {
		return startFailed(ctx, log, err)
	}

	m := metrics.New()
	remotes := make([]*proxy.Remote, 0, len(cfg.Upstreams))
	clients := make([]*upstream.Client, 0, len(cfg.Upstreams))
	for i, u := range cfg.Upstreams {
		secret, err := u.Auth.Secret()
		if err != nil {
			return fmt.Errorf("upstreams[%d].auth: %w", i, err)
		}
		c, err := upstream.New(upstream.Options{
			URL:                   u.URL,
			RegistryName:          u.Registry,
			Username:              u.Auth.Username,
			Password:              secret,
			DockerConfig:          u.Auth.DockerConfig,
			InsecureSkipVerify:    u.TLS.InsecureSkipVerify,
			CAFile:                u.TLS.CAFile,
			ConnectTimeout:        u.Timeouts.Connect.D(),
			ResponseHeaderTimeout: u.Timeouts.ResponseHeader.D(),
			RetryMax:              u.Retry.Max,
			RetryMinWait:          u.Retry.MinWait.D(),
			RetryMaxWait:          u.Retry.MaxWait.D(),
			MaxRetryAfter:         u.Retry.MaxRetryAfter.D(),
			UserAgent:             "registry-edge/" + version.String(),
			Logger:                log.With(slog.String("upstream", u.Registry)),
			Breaker: upstream.BreakerOptions{
				Failures: u.Breaker.Failures,
				MinProbe: u.Breaker.MinProbe.D(),
				MaxProbe: u.Breaker.MaxProbe.D(),
			},
		})
		if err != nil {
			return fmt.Errorf("upstreams[%d]: %w", i, err)
		}
		m.AddUpstream(u.Registry, func() metrics.UpstreamHealth {
			h := c.Health()
			return metrics.UpstreamHealth{LastContact: h.LastContact, BreakerState: int(h.State), Refused: h.Refused}
		})
		remotes = append(remotes, &proxy.Remote{Name: u.Registry, Library: u.Library(), Client: c, Staleness: staleness(u.Offline)})
		clients = append(clients, c)
	}
	router, err := proxy.NewRouter(remotes, cfg.DefaultUpstream())
	if err != nil {
		return err
	}
	policy, err := cfg.SignaturePolicy()
	if err != nil {
		return err
	}
	var maint *gc.Maintainer // created below; the proxy asks it for room when the disk is full
	p := proxy.New(store, db, router, proxy.Options{
		Policy:                policy,
		TagTTL:                cfg.Cache.TagTTL.D(),
		RevalidateTimeout:     cfg.Cache.RevalidateTimeout.D(),
		FillTimeout:           cfg.Storage.FillTimeout.D(),
		FillStallTimeout:      cfg.Storage.FillStallTimeout.D(),
		ClientStallTimeout:    cfg.Storage.ClientStallTimeout.D(),
		OnDiskFull:            onDiskFull(cfg, func(ctx context.Context) { maint.RunOnce(ctx) }),
		MaxManifestSize:       int64(cfg.Cache.MaxManifestSize),
		StoreBudget:           func() int64 { return maint.CurrentOptions().MaxSize },
		TagNotFound:           string(cfg.Cache.TagNotFound),
		Deltas:                cfg.Deltas.Enabled,
		DeltaDiscoveryTimeout: cfg.Deltas.DiscoveryTimeout.D(),
		NegotiateDeltas:       cfg.Deltas.Enabled && cfg.Deltas.Negotiate,
		MaxBaseCandidates:     cfg.Deltas.MaxBaseCandidates,
		MaxDeltaRatio:         cfg.Deltas.MaxRatio,
		DeltaMinimums:         &layerdelta.Minimums{LayerSize: int64(cfg.Deltas.MinLayerSize), Saving: int64(cfg.Deltas.MinSaving)},
		PrecomputeDeltas:      cfg.Deltas.Serve && cfg.Deltas.Precompute,
		DeltaWorkers:          cfg.Deltas.Workers,
		RedirectBlobs:         cfg.Storage.Blobs.Driver == config.BlobsS3 && cfg.Storage.Blobs.S3.Redirect,
		DeltaMemoryBudget:     int64(cfg.Deltas.MemoryBudget),
		Logger:                log,
		Metrics:               m,
	})
	images := make([]prefetch.Image, len(cfg.Prefetch.Images))
	for i, img := range cfg.Prefetch.Images {
		images[i] = prefetch.Image{Ref: img.Ref, Platforms: img.Platforms}
	}
	pf, err := prefetch.New(p, router, db, prefetch.Options{
		Images:      images,
		Concurrency: cfg.Prefetch.Concurrency,
		Windows:     cfg.Prefetch.ParsedWindows(),
		Interval:    cfg.Prefetch.Interval.D(),
		Logger:      log.With(slog.String("component", "prefetch")),
	})
	if err != nil {
		return err
	}
	m.SetPrefetchSource(pf.Progress)
	hopts := httpserve.Options{Logger: log, Metrics: m, AccessLog: cfg.Log.AccessLog, ServeDeltas: cfg.Deltas.Serve, ServeDeltasTo: cfg.Deltas.ServeToNetworks(),
		TrustedProxies: cfg.Access.TrustedProxyNetworks(), WriteStallTimeout: cfg.Storage.ClientStallTimeout.D()}
	hopts.Ready = func() error { return ready(db) }
	if rl := cfg.Access.RateLimit; rl.RequestsPerSecond > 0 {
		hopts.RateLimit = access.NewRateLimiter(rl.RequestsPerSecond, rl.Burst, nil)
	}
	devices := new(access.Dynamic)
	pol, err := accessPolicy(cfg.Access)
	if err != nil {
		return err
	}
	for _, w := range pol.UnknownUsers() {
		log.LogAttrs(ctx, slog.LevelWarn, "access rule names an unknown user", slog.String("warning", w))
	}
	devices.Set(pol)
	hopts.Access = devices
	maint = &gc.Maintainer{Store: store, DB: db, Cache: p, Options: gcOptions(cfg), Metrics: m, Logger: log.With(slog.String("component", "gc")),
		PinnedTags: pf.PinnedTags}
	if allow := cfg.Admin.AllowedNetworks(); len(allow) > 0 {
		// Both under the budget in force, which a reload may have changed.
		hopts.Admin = admin.New(admin.Options{Prefetcher: pf, Allow: allow, Hosts: adminHosts(cfg.Admin), GC: func(ctx context.Context, dryRun bool) (*gc.Plan, error) {
			if dryRun {
				return maint.Plan(ctx)
			}
			return maint.RunNow(ctx)
		}})
	}
	var handler *httpserve.Server
	if allow := cfg.Admin.AllowedNetworks(); len(allow) > 0 {
		hopts.Status = admin.Only(allow, adminHosts(cfg.Admin), status.New(status.Options{
			Metrics: m, Prefetch: pf.Status, Recent: func() []httpserve.Pull { return handler.RecentPulls() },
			Budget: func() int64 { return maint.CurrentOptions().MaxSize }, Root: cfg.Storage.Root, Version: version.String(),
			SignaturePolicy: policy != nil,
		}))
	}
	handler = httpserve.New(p, hopts)

	if ctx.Err() != nil {
		// Stopped while starting: the port is not taken at all.
		return startFailed(ctx, log, ctx.Err())
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           handler,
		ConnContext:       httpserve.ConnContext,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	var tlsFiles *tlsserve.Server
	if cfg.TLS.Enabled() {
		if tlsFiles, err = tlsserve.New(tlsserve.Options{
			CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile,
			ClientCAFile: cfg.TLS.ClientCAFile, ClientAuth: tlsserve.ClientAuth(cfg.TLS.ClientAuth),
			Logger: log,
		}); err != nil {
			ln.Close()
			return err
		}
		srv.TLSConfig, srv.ErrorLog = tlsFiles.Config(), tlsFiles.ErrorLog()
	}
	upstreams := make([]string, len(remotes))
	for i, r := range remotes {
		upstreams[i] = r.Name
	}
	started := []slog.Attr{slog.String("version", version.String()),
		slog.String("listen", ln.Addr().String()), slog.Bool("tls", srv.TLSConfig != nil), slog.String("storage", cfg.Storage.Root),
		slog.Any("upstreams", upstreams), slog.String("default_upstream", remotes[cfg.DefaultUpstream()].Name)}
	if len(cfg.Prefetch.Windows) > 0 {
		// The windows are local times: a container without TZ runs
		// them in UTC, which the admin should see here.
		started = append(started, slog.String("prefetch_windows", strings.Join(cfg.Prefetch.Windows, ",")),
			slog.String("time_zone", time.Now().Format("MST (UTC-07:00)")))
	}
	log.LogAttrs(ctx, slog.LevelInfo, "registry-edge started", started...)
	for _, w := range cfg.SignatureScopeWarnings() {
		log.LogAttrs(ctx, slog.LevelWarn, "signature rule for another registry", slog.String("warning", w))
	}
	for _, w := range cfg.PrefetchWarnings() {
		log.LogAttrs(ctx, slog.LevelWarn, "prefetch image of a registry no upstream has", slog.String("warning", w))
	}
	for _, w := range cfg.DeltaWarnings() {
		log.LogAttrs(ctx, slog.LevelWarn, "delta setting without effect", slog.String("warning", w))
	}

	// Background work: pre-staging, keeping the store in its budget
	// (access times are flushed every minute too), a bucket clear of
	// the uploads of killed processes and the disk of partial downloads
	// too old to resume, and, on a replica that does not evict, its
	// records of what the evicting one removed.
	pctx, stopPrefetch := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Go(func() { pf.Run(pctx) })
	bg.Go(func() { maint.Run(pctx, time.Minute) })
	bg.Go(func() { cleanUploads(pctx, cfg, store, log) })
	bg.Go(func() { cleanPartials(pctx, cfg, store, log) })
	bg.Go(func() { forgetEvicted(pctx, cfg, maint, log) })
	defer func() { stopPrefetch(); bg.Wait() }()
	for i, c := range clients {
		bg.Go(func() { checkUpstream(pctx, log, remotes[i].Name, c) })
	}

	// SIGHUP: what can change live is applied; the rest is named.
	bg.Go(func() {
		for {
			select {
			case <-pctx.Done():
				return
			case <-reloadRequests:
				if tlsFiles != nil {
					reloadTLS(pctx, log, tlsFiles)
				}
				applyReload(pctx, log, reload, cfg, policy, level, devices, maint)
			}
		}
	})

	errc := make(chan error, 1)
	if srv.TLSConfig != nil {
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.LogAttrs(context.Background(), slog.LevelInfo, "shutting down")
	stopPrefetch()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	switch err := srv.Shutdown(sctx); {
	case errors.Is(err, context.DeadlineExceeded):
		// A slow device still downloading: its connection goes now.
		log.LogAttrs(context.Background(), slog.LevelWarn, "clients still downloading at shutdown; their connections are closed",
			slog.Duration("waited", shutdownGrace))
		srv.Close()
	case err != nil:
		return err
	}
	// Fills that outlived their clients stop here; what they received
	// stays on disk and the next request of the blob resumes it.
	fctx, fcancel := context.WithTimeout(context.Background(), fillsGrace)
	defer fcancel()
	switch err := p.Close(fctx); {
	case errors.Is(err, context.DeadlineExceeded):
		log.LogAttrs(context.Background(), slog.LevelWarn, "fills still running at shutdown; they will be resumed on demand",
			slog.Duration("waited", fillsGrace))
	case err != nil:
		log.LogAttrs(context.Background(), slog.LevelWarn, "shutdown incomplete", slog.Any("err", err))
	}
	return nil
}

// ready is serve's /readyz: not ready once a transaction found meta.db
// damaged. Requests that read a damaged record fail with 503 until the
// site admin moves the file aside and restarts, and which ones do is up to
// where the damage is: a load balancer or Kubernetes sends the devices to
// another replica, or their runtimes fall back to the upstream, rather
// than to this. A full or unwritable store leaves the mirror ready: it
// still serves what it holds and passes misses through (docs/metrics.md,
// "Health").
func ready(db *meta.DB) error {
	// The file's path is in the log, not in an answer any client can read.
	if _, ok := errors.AsType[*meta.DamagedError](db.Damaged()); ok {
		return errors.New("the metadata database (meta.db) is damaged (the log says what to do)")
	}
	return nil
}

// startFailed is what serve returns when a step of its start-up failed
// with err: nil if a stop (SIGTERM, Ctrl-C) came meanwhile, since the
// step failed because it was cancelled (a bucket's start-up cleanup, say),
// and a stop is a clean exit; err otherwise.
func startFailed(ctx context.Context, log *slog.Logger, err error) error {
	if ctx.Err() == nil {
		return err
	}
	log.LogAttrs(context.Background(), slog.LevelInfo, "stopped while starting", slog.Any("err", err))
	return nil
}

// checkUpstream asks an upstream for its API version check (GET /v2/) once
// at start. The log then says at once whether each upstream answers (a
// wrong URL or a dead uplink shows here, not at the first pull), an
// unreachable one has its circuit breaker counting before devices ask, and
// the first fill finds a connection already open.
func checkUpstream(ctx context.Context, log *slog.Logger, name string, c *upstream.Client) {
	ctx, cancel := context.WithTimeout(ctx, upstreamCheckTimeout)
	defer cancel()
	start := time.Now()
	err := c.Ping(ctx)
	attrs := []slog.Attr{slog.String("upstream", name), slog.Duration("duration", time.Since(start).Round(time.Millisecond))}
	switch {
	case err == nil:
		log.LogAttrs(ctx, slog.LevelInfo, "upstream answers", attrs...)
	case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
		// Shutting down.
		return
	default:
		log.LogAttrs(ctx, slog.LevelWarn, "upstream does not answer at start; cached content is served, uncached content fails until it answers",
			append(attrs, slog.Any("err", err))...)
		return
	}
	// Credentials too, as a login would: a wrong or missing password shows
	// now, not at the first pull of a repository that needs it.
	attrs = attrs[:1]
	if !c.HasCredentials() {
		if c.Challenge() == "basic" {
			log.LogAttrs(ctx, slog.LevelWarn, "upstream asks for credentials and none are configured; what it does not serve anonymously fails", attrs...)
		}
		return
	}
	checked, err := c.CheckCredentials(ctx)
	switch {
	case err == nil && checked == upstream.CredentialsAccepted:
		log.LogAttrs(ctx, slog.LevelInfo, "upstream accepts the mirror's credentials", attrs...)
	case err == nil:
		log.LogAttrs(ctx, slog.LevelInfo, "upstream does not ask for credentials on /v2/; the mirror's are sent when it does", attrs...)
	case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
	case errors.Is(err, errdef.ErrUnauthorized), errors.Is(err, errdef.ErrDenied):
		log.LogAttrs(ctx, slog.LevelWarn, "upstream refuses the mirror's credentials; what needs them fails until they are fixed",
			append(attrs, slog.Any("err", err))...)
	default:
		log.LogAttrs(ctx, slog.LevelWarn, "cannot check the mirror's credentials with the upstream", append(attrs, slog.Any("err", err))...)
	}
}

// upstreamCheckTimeout bounds the start-up check of an upstream, retries
// included.
const upstreamCheckTimeout = time.Minute

// staleness converts an upstream's offline settings for the proxy.
func staleness(o config.Offline) proxy.Staleness {
	s := proxy.Staleness{MaxStale: o.MaxStale.D()}
	for _, r := range o.Repositories {
		s.Rules = append(s.Rules, proxy.StalenessRule{Match: r.Match, MaxStale: r.MaxStale.D()})
	}
	return s
}

// accessPolicy builds the device access policy; nil means open to all.
func accessPolicy(a config.Access) (*access.Policy, error) {
	if a.Anonymous && a.Htpasswd == "" && len(a.Rules) == 0 {
		return nil, nil
	}
	rules := make([]access.Rule, len(a.Rules))
	for i, r := range a.Rules {
		rules[i] = access.Rule{Repositories: r.Repositories, Users: r.Users, Certs: r.Certs}
	}
	return access.New(access.Options{Anonymous: a.Anonymous, HtpasswdFile: a.Htpasswd, ChallengeBase: a.ChallengeBase, Rules: rules})
}

func gcOptions(cfg config.Config) gc.Options {
	o := gc.Options{MaxSize: int64(cfg.Storage.MaxSize), LowWatermark: cfg.Storage.LowWatermark, MaxAge: cfg.Storage.MaxAge.D(),
		MinIdle: cfg.Storage.MinIdle.D(), KeepDeltaBases: cfg.Deltas.Enabled}
	if cfg.Storage.Blobs.Driver == config.BlobsS3 {
		// Other replicas publish what they served once a minute (the
		// maintenance interval): content younger than a few of those may
		// be in use on a replica the evicting one has not heard from yet.
		o.MinIdle = max(o.MinIdle, sharedMinIdle)
	}
	return o
}

// reloadTLS reads the listener's certificate, key and client CA bundle
// again (SIGHUP), whatever the configuration file holds: a renewal
// (certbot's deploy hook, say) is served at once, a device CA rotated by
// replacing the bundle's content applies without a restart. Files that do
// not load change nothing.
func reloadTLS(ctx context.Context, log *slog.Logger, t *tlsserve.Server) {
	if err := t.Reload(); err != nil {
		log.LogAttrs(ctx, slog.LevelError, "TLS files do not load; serving the previous certificate and client CAs", slog.Any("err", err))
		return
	}
	log.LogAttrs(ctx, slog.LevelInfo, "TLS files reloaded")
}

// applyReload reads the configuration again and applies what can change
// while serving: the access policy (and its htpasswd file), the log level
// and the storage budget. Other changes are logged as needing a restart,
// among them a signature key or certificate file whose content changed
// (runningPolicy is the policy in force). A configuration that does not
// load changes nothing.
func applyReload(ctx context.Context, log *slog.Logger, reload reloadFunc, running config.Config, runningPolicy *sigpolicy.Policy,
	level *slog.LevelVar, devices *access.Dynamic, maint *gc.Maintainer) {
	if reload == nil {
		log.LogAttrs(ctx, slog.LevelWarn, "SIGHUP: running on the embedded default configuration, nothing to reload (start with --config)")
		return
	}
	next, err := reload()
	if err != nil {
		log.LogAttrs(ctx, slog.LevelError, "configuration reload failed; keeping the running configuration", slog.Any("err", err))
		return
	}
	pol, err := accessPolicy(next.Access)
	if err != nil {
		log.LogAttrs(ctx, slog.LevelError, "configuration reload failed; keeping the running configuration", slog.Any("err", err))
		return
	}
	devices.Set(pol)
	for _, w := range pol.UnknownUsers() {
		log.LogAttrs(ctx, slog.LevelWarn, "access rule names an unknown user", slog.String("warning", w))
	}
	level.Set(next.Log.Level.Level())
	maint.SetOptions(gcOptions(next))
	live := func(c config.Config) config.Config {
		c.Access, c.Log.Level = config.Access{RateLimit: c.Access.RateLimit, TrustedProxies: c.Access.TrustedProxies}, 0
		c.Storage.MaxSize, c.Storage.LowWatermark, c.Storage.MaxAge, c.Storage.MinIdle = 0, 0, 0, 0
		return c
	}
	attrs := []slog.Attr{slog.String("applied", "access (anonymous, htpasswd, challengeBase, rules), log.level, storage.maxSize, storage.lowWatermark, storage.maxAge, storage.minIdle")}
	keys := changedKeys(live(running), live(next))
	nextPolicy, perr := next.SignaturePolicy()
	if perr == nil && !slices.Equal(runningPolicy.Revisions(), nextPolicy.Revisions()) &&
		!slices.ContainsFunc(keys, func(k string) bool { return strings.HasPrefix(k, "signatures") }) {
		// Same configuration, other trust: a key, certificate or Rekor
		// key file was replaced (a key rotated or revoked).
		keys = append(keys, "signatures.rules (the content of a key or certificate file)")
	}
	if len(keys) > 0 {
		attrs = append(attrs, slog.String("not_applied", strings.Join(keys, ", ")+": take effect at the next restart"))
	}
	log.LogAttrs(ctx, slog.LevelInfo, "configuration reloaded", attrs...)
	if perr != nil {
		log.LogAttrs(ctx, slog.LevelError, "the signature policy no longer loads; the running one stays, and the mirror will not start with it", slog.Any("err", perr))
	}
	for _, w := range next.SignatureScopeWarnings() {
		log.LogAttrs(ctx, slog.LevelWarn, "signature rule for another registry", slog.String("warning", w))
	}
}

// changedKeys names the configuration keys, two levels deep (storage.root,
// upstreams), whose values differ between a and b. Only names: values may
// be secrets.
func changedKeys(a, b config.Config) []string {
	var keys []string
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range va.NumField() {
		f := va.Type().Field(i)
		name := yamlKey(f)
		if name == "" || reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			continue
		}
		if f.Type.Kind() != reflect.Struct {
			keys = append(keys, name)
			continue
		}
		n := len(keys)
		for j := range f.Type.NumField() {
			sub := yamlKey(f.Type.Field(j))
			if sub != "" && !reflect.DeepEqual(va.Field(i).Field(j).Interface(), vb.Field(i).Field(j).Interface()) {
				keys = append(keys, name+"."+sub)
			}
		}
		if len(keys) == n { // the difference is in unexported state
			keys = append(keys, name)
		}
	}
	return keys
}

// yamlKey is the YAML key of an exported field, "" for others.
func yamlKey(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if !f.IsExported() || name == "-" || name == "" {
		return ""
	}
	return name
}

// adminHosts returns the names the admin API and the status page answer
// to besides IP addresses and localhost: admin.hosts and the machine's host
// name, whole and its first label (gateway-17.site.lan and gateway-17).
func adminHosts(a config.Admin) []string {
	hosts := slices.Clone(a.Hosts)
	if h, err := os.Hostname(); err == nil && h != "" {
		short, _, _ := strings.Cut(h, ".")
		hosts = append(hosts, h, short)
	}
	return hosts
}
