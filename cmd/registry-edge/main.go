// Command registry-edge is a pull-through OCI registry mirror for sites on
// slow or unreliable uplinks.
//
//	registry-edge [serve] [--config FILE] [--listen ADDR] [--storage DIR] [--upstream URL]
//	registry-edge check-config FILE
//	registry-edge prefetch [--mirror URL] [--platform OS/ARCH] [--now] [--no-wait] [--remove] [IMAGE...]
//	registry-edge gc [--mirror URL] [--dry-run] [--format table|json]
//	registry-edge fsck [--storage DIR | --config FILE] [--dry-run]
//	registry-edge version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	// The time zone database, for prefetch.windows (local times) where
	// the system has none: the container image is FROM scratch, and
	// minimal gateway images often lack /usr/share/zoneinfo. Without it
	// TZ=Europe/Berlin silently means UTC. About 400 KB.
	_ "time/tzdata"

	"github.com/registry-edge/registry-edge/internal/config"
	"github.com/registry-edge/registry-edge/internal/interrupt"
	"github.com/registry-edge/registry-edge/internal/version"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	stops := make(chan os.Signal, 2)
	signal.Notify(stops, os.Interrupt, syscall.SIGTERM)
	notice := &stopNotice{stderr: os.Stderr}
	var w interrupt.Watcher
	go w.Watch(stops, cancel, func(s os.Signal) { notice.forced(s, os.Exit) })
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			select {
			case reloadRequests <- struct{}{}:
			default: // a reload is already pending
			}
		}
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, notice)
	signal.Stop(stops)
	if code == exitInterrupted {
		code = w.Status()
	}
	os.Exit(code)
}

// exitInterrupted is what run returns when a signal stopped a one-shot
// command (prefetch, gc, fsck); main turns it into 130 (Ctrl-C) or 143
// (SIGTERM), after the signal, as deltactl does. A serve that a signal
// stops has done what it should: status 0.
const exitInterrupted = 130

// stopNotice says that a second SIGINT or SIGTERM, while a serve waits for
// downloads and fills to end (up to shutdownGrace and fillsGrace), exits at
// once with 128 + the signal's number: what fills received is on disk, and
// resumed like after a kill -9. While a serve runs it says so through the
// serve's logger (log.format json: a JSON line), else as one line on
// stderr.
type stopNotice struct {
	stderr io.Writer
	mu     sync.Mutex
	log    *slog.Logger
	flush  func() error // writes out what log buffers
}

// use makes the notice go through log (nil: back to stderr). A nil
// notice (tests) does nothing.
func (n *stopNotice) use(log *slog.Logger, flush func() error) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.log, n.flush = log, flush
}

// forced says that sig came again, writes out the log lines still
// buffered, and exits.
func (n *stopNotice) forced(sig os.Signal, exit func(int)) {
	code := interrupt.Status(sig)
	n.mu.Lock()
	if n.log != nil {
		n.log.LogAttrs(context.Background(), slog.LevelWarn, "signal again while stopping: exiting at once",
			slog.String("signal", sig.String()), slog.Int("status", code))
		_ = n.flush()
	} else {
		fmt.Fprintf(n.stderr, "registry-edge: %v again while stopping: exiting at once\n", sig)
	}
	n.mu.Unlock()
	exit(code)
}

const usage = `usage:
  registry-edge [serve] [flags]      run the mirror (default: embedded config)
  registry-edge check-config FILE    validate a config file
  registry-edge prefetch [IMAGE...]  pre-stage images on a running mirror, show progress
  registry-edge gc [--dry-run]       evict now to the storage budget (or list what would go)
  registry-edge fsck [--storage DIR] re-verify every stored digest, quarantine bad ones
  registry-edge version              print the version
`

// errUsage marks a command-line mistake (exit code 2).
var errUsage = errors.New("usage")

// usageError is a command-line mistake (errUsage), or -h (flag.ErrHelp),
// of the command whose flags are fs: run prints its usage (fs.Usage, which
// writes to fs.Output()), on stderr above the reason, or, for -h, on
// stdout.
type usageError struct {
	err error
	fs  *flag.FlagSet
}

func (u *usageError) Error() string { return u.err.Error() }
func (u *usageError) Unwrap() error { return u.err }

func (u *usageError) printUsage(w io.Writer) {
	out := u.fs.Output()
	u.fs.SetOutput(w)
	u.fs.Usage()
	u.fs.SetOutput(out)
}

// usageErrorf returns a usage error of the command whose flags are fs.
func usageErrorf(fs *flag.FlagSet, format string, args ...any) error {
	return &usageError{err: fmt.Errorf("%w: "+format, append([]any{errUsage}, args...)...), fs: fs}
}

func versionCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: registry-edge version\n\nPrints the version of this binary.")
	}
	if err := parseFlags(fs, args, true); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf(fs, "version takes no argument")
	}
	fmt.Fprintf(stdout, "registry-edge %s\n", version.String())
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, notice *stopNotice) int {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serveCmd(ctx, args, stderr, notice)
	case "check-config":
		err = checkConfigCmd(args, stdout, stderr)
	case "prefetch":
		err = prefetchCmd(ctx, args, stdout, stderr)
	case "gc":
		err = gcCmd(ctx, args, stdout, stderr)
	case "fsck":
		err = fsckCmd(ctx, args, stdout, stderr)
	case "version":
		err = versionCmd(args, stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "registry-edge: unknown command %q\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		if u, ok := errors.AsType[*usageError](err); ok {
			if errors.Is(err, flag.ErrHelp) {
				// Asked for: the output, as deltactl's.
				u.printUsage(stdout)
				return 0
			}
			u.printUsage(stderr)
		}
		if errors.Is(err, errUsage) {
			fmt.Fprintf(stderr, "registry-edge: %v\n", err)
			return 2
		}
		if ctx.Err() != nil && cmd != "serve" {
			// Ctrl-C or SIGTERM: say so, not the context's own words;
			// 130 or 143, as deltactl and a shell report it.
			if errors.Is(err, context.Canceled) {
				err = fmt.Errorf("%s: interrupted", cmd)
			}
			fmt.Fprintf(stderr, "registry-edge: %v\n", err)
			return exitInterrupted
		}
		fmt.Fprintf(stderr, "registry-edge: %v\n", err)
		return 1
	}
	return 0
}

func checkConfigCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	// --config as serve takes it, too.
	cfgPath := fs.String("config", "", "the config `file` to check (or give it as the argument)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: registry-edge check-config FILE\n\nValidates a config file as serve would load it (secret files are not read); prints \"FILE: ok\" or every error with its field path.")
	}
	if err := parseFlags(fs, args, true); err != nil {
		return err
	}
	path := *cfgPath
	switch {
	case path == "" && fs.NArg() == 1:
		path = fs.Arg(0)
	case path == "" || fs.NArg() != 0:
		return usageErrorf(fs, "check-config takes exactly one FILE")
	}
	cfg, err := config.LoadFile(path)
	if err == nil {
		err = cfg.CheckSignatureScopes()
	}
	if err != nil {
		return err
	}
	for _, w := range slices.Concat(cfg.SignatureScopeWarnings(), cfg.PrefetchWarnings(), cfg.DeltaWarnings()) {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	return nil
}

func serveCmd(ctx context.Context, args []string, stderr io.Writer, notice *stopNotice) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "YAML config `file` (default: the embedded default config)")
	listen := fs.String("listen", "", "listen `address`, overrides listen")
	storage := fs.String("storage", "", "storage `directory`, overrides storage.root")
	upstreamURL := fs.String("upstream", "", "mirror only this registry `URL`, overrides upstreams")
	// serve is the default command, so `registry-edge -h` lands here: show
	// every command, then serve's flags.
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fmt.Fprintln(fs.Output(), "\nflags of serve:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	cfg := config.Default()
	if *cfgPath != "" {
		var err error
		if cfg, err = config.LoadFile(*cfgPath); err != nil {
			return err
		}
	}
	if err := cfg.Override(*listen, *storage, *upstreamURL); err != nil {
		return err
	}
	if err := cfg.CheckSignatureScopes(); err != nil {
		return err
	}
	var reload reloadFunc
	if *cfgPath != "" {
		reload = func() (config.Config, error) {
			c, err := config.LoadFile(*cfgPath)
			if err == nil {
				err = c.Override(*listen, *storage, *upstreamURL)
			}
			if err == nil {
				err = c.CheckSignatureScopes()
			}
			return c, err
		}
	}
	return serve(ctx, cfg, reload, stderr, notice)
}

// parseFlags parses a subcommand's flags: -h is flag.ErrHelp (exit 0,
// with the usage on stdout), a bad flag or, unless positional, any
// argument is a usage error (exit 2, the usage then the reason on stderr).
func parseFlags(fs *flag.FlagSet, args []string, positional bool) error {
	// The flag package prints the reason above the usage; run prints the
	// usage, and the reason once, below, where it is seen.
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	if errors.Is(err, flag.ErrHelp) {
		return &usageError{err: err, fs: fs}
	}
	if err != nil {
		return usageErrorf(fs, "%v", err)
	}
	if !positional && fs.NArg() != 0 {
		return usageErrorf(fs, "unexpected argument %q", fs.Arg(0))
	}
	return nil
}
