package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/registry-edge/registry-edge/internal/layerdelta"
)

// Output formats (--format).
const (
	formatTable = "table"
	formatJSON  = "json"
)

// usageError is a command-line mistake: exit status 2, with the command's
// usage after the reason.
type usageError struct {
	err        error
	printUsage func(io.Writer)
}

func (u *usageError) Error() string { return u.err.Error() }
func (u *usageError) Unwrap() error { return u.err }

// flags is the flag set of one command, with the flags most commands
// share.
type flags struct {
	*flag.FlagSet
	e     *env
	name  string
	usage string

	format   string
	insecure bool
	timeout  time.Duration
	tmp      string
}

func newFlags(e *env, name, usage string) *flags {
	f := &flags{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), e: e, name: name, usage: usage}
	// parse reports errors and help itself.
	f.SetOutput(io.Discard)
	f.Usage = func() {}
	return f
}

// formatFlag adds --format.
func (f *flags) formatFlag() {
	f.StringVar(&f.format, "format", formatTable, "output `format`: table (for people) or json (one object, for scripts; see docs/deltactl.md)")
}

// registryFlags adds the flags of commands that talk to registries.
func (f *flags) registryFlags() {
	f.BoolVar(&f.insecure, "insecure", false, "allow plain HTTP and TLS certificates that do not verify (self-signed registries)")
	f.DurationVar(&f.timeout, "timeout", time.Minute, "longest wait for a registry's answer, and for the next bytes of a download")
}

// tmpFlag adds --tmp.
func (f *flags) tmpFlag() {
	f.StringVar(&f.tmp, "tmp", os.TempDir(), "`directory` for temporary files (blobs, uncompressed layers, deltas)")
}

// printUsage writes the command's usage and its flags.
func (f *flags) printUsage(w io.Writer) {
	fmt.Fprint(w, f.usage)
	f.SetOutput(w)
	f.PrintDefaults()
	f.SetOutput(io.Discard)
}

// usageErr returns a usage error of this command.
func (f *flags) usageErr(format string, args ...any) error {
	return &usageError{err: fmt.Errorf("%s: "+format, append([]any{f.name}, args...)...), printUsage: f.printUsage}
}

// parse parses args, flags and arguments in any order ("--" ends the
// flags), and checks that there are lo to hi arguments (hi < 0: any
// number). --help prints the usage on stdout and returns flag.ErrHelp.
func (f *flags) parse(args []string, lo, hi int) ([]string, error) {
	var pos []string
	for {
		if err := f.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				f.printUsage(f.e.stdout)
				return nil, err
			}
			return nil, f.usageErr("%v", err)
		}
		rest := f.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	switch {
	case len(pos) < lo && lo == hi:
		return nil, f.usageErr("want %d argument(s), got %d", lo, len(pos))
	case len(pos) < lo:
		return nil, f.usageErr("want at least %d argument(s), got %d", lo, len(pos))
	case hi >= 0 && len(pos) > hi:
		return nil, f.usageErr("unexpected argument %q", pos[hi])
	}
	if f.Lookup("format") != nil && f.format != formatTable && f.format != formatJSON {
		return nil, f.usageErr("--format %q: want table or json", f.format)
	}
	if f.Lookup("timeout") != nil && f.timeout <= 0 {
		return nil, f.usageErr("--timeout %s: want a positive duration", f.timeout)
	}
	if f.Lookup("tmp") != nil {
		if fi, err := os.Stat(f.tmp); err != nil || !fi.IsDir() {
			return nil, f.usageErr("--tmp %s: not a directory", f.tmp)
		}
	}
	return pos, nil
}

// platformList collects --platform flags: repeatable, or a comma list.
type platformList []v1.Platform

func (p *platformList) String() string {
	var s []string
	for _, pl := range *p {
		s = append(s, platformString(pl))
	}
	return strings.Join(s, ",")
}

func (p *platformList) Set(v string) error {
	for s := range strings.SplitSeq(v, ",") {
		parts := strings.Split(s, "/")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" || (len(parts) == 3 && parts[2] == "") {
			return fmt.Errorf("platform %q: want os/arch[/variant]", s)
		}
		pl := v1.Platform{OS: parts[0], Architecture: parts[1]}
		if len(parts) == 3 {
			pl.Variant = parts[2]
		}
		*p = append(*p, pl)
	}
	return nil
}

// platformFlag adds --platform.
func (f *flags) platformFlag(p *platformList) {
	f.Var(p, "platform", "only this `os/arch[/variant]` of an index (repeatable, or a comma list; default: all)")
}

// minimumsFlags adds --min-layer-size and --min-saving, defaulting to
// layerdelta.DefaultMinimums (the rule registry-edge tiers use too).
func (f *flags) minimumsFlags(m *layerdelta.Minimums) {
	*m = layerdelta.DefaultMinimums
	f.Int64Var(&m.LayerSize, "min-layer-size", m.LayerSize, "smallest layer, in bytes, worth a delta: below it a delta's artifact and round trips cost more than they save")
	f.Int64Var(&m.Saving, "min-saving", m.Saving, "fewest bytes a delta must save over its layer")
}

// checkMinimums rejects negative minimums.
func (f *flags) checkMinimums(m layerdelta.Minimums) error {
	if m.LayerSize < 0 || m.Saving < 0 {
		return f.usageErr("--min-layer-size %d, --min-saving %d: want 0 or more bytes", m.LayerSize, m.Saving)
	}
	return nil
}
