package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/registry-edge/registry-edge/internal/admin"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/prefetch"
)

const prefetchUsage = `usage: registry-edge prefetch [flags] [IMAGE...]

Asks a running registry-edge to pre-stage IMAGEs ([registry/]repo[:tag|@digest])
and shows their progress until each is complete or failed. The images stay on the
mirror's prefetch list (pinned, fetched again every prefetch.interval) until
--remove takes them off. Without IMAGE, shows the progress of everything the
mirror pre-stages. --platform, --now, --no-wait and --interval apply to IMAGEs
being added: with --remove or without IMAGE they are a usage error. Exit status: 0 when
every image shown is complete, 1 otherwise, 2 on a usage error, 130 (Ctrl-C)
or 143 (SIGTERM) when the wait is interrupted (the mirror goes on).

flags:
`

// platformList collects repeated --platform flags.
type platformList []string

func (p *platformList) String() string { return strings.Join(*p, ",") }
func (p *platformList) Set(v string) error {
	for s := range strings.SplitSeq(v, ",") {
		if parts := strings.Split(s, "/"); len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
			return fmt.Errorf("platform %q: want os/arch[/variant]", s)
		}
		*p = append(*p, s)
	}
	return nil
}

func prefetchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("prefetch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), prefetchUsage); fs.PrintDefaults() }
	addr := fs.String("mirror", "http://127.0.0.1:5000", "`URL` of the mirror (its admin API must be open to this host: admin.allowFrom)")
	var platforms platformList
	fs.Var(&platforms, "platform", "fetch only this `os/arch[/variant]` of an index (repeatable; default: all)")
	now := fs.Bool("now", false, "fetch at once, outside the mirror's prefetch time windows")
	noWait := fs.Bool("no-wait", false, "return once the mirror accepted the request")
	remove := fs.Bool("remove", false, "take IMAGEs (added with this command) off the mirror's list and unpin them")
	interval := fs.Duration("interval", time.Second, "progress refresh `interval`")
	if err := parseFlags(fs, args, true); err != nil {
		return err
	}
	if *interval <= 0 {
		return usageErrorf(fs, "--interval %s: want a positive duration", *interval)
	}
	// A flag that would do nothing is a mistake: say so rather than
	// leave the user to believe it applied.
	var ignored []string
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "platform", "now", "no-wait", "interval":
			if *remove || fs.NArg() == 0 {
				ignored = append(ignored, "--"+f.Name)
			}
		}
	})
	if len(ignored) > 0 {
		why := "without IMAGE (which only shows progress)"
		if *remove {
			why = "with --remove"
		}
		return usageErrorf(fs, "%s: no effect %s", strings.Join(ignored, ", "), why)
	}
	images := make([]prefetch.Image, 0, fs.NArg())
	for _, arg := range fs.Args() {
		// The mirror lists images in this form: progress is matched by it.
		ref, err := prefetch.CanonicalRef(arg)
		if err != nil {
			return usageErrorf(fs, "%v", err)
		}
		images = append(images, prefetch.Image{Ref: ref, Platforms: platforms})
	}
	c, err := admin.NewClient(*addr)
	if err != nil {
		return usageErrorf(fs, "%v", err)
	}

	if *remove {
		if len(images) == 0 {
			return usageErrorf(fs, "--remove needs at least one IMAGE")
		}
		for _, img := range images {
			if _, err := c.Remove(ctx, img.Ref); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "removed %s\n", img.Ref)
		}
		return nil
	}
	var st admin.PrefetchStatus
	if len(images) > 0 {
		if st, err = c.Prefetch(ctx, admin.PrefetchRequest{Images: images, Now: *now}); err != nil {
			return err
		}
		if *noWait {
			fmt.Fprintf(stdout, "accepted %d image(s)\n", len(images))
			return nil
		}
	} else if st, err = c.Status(ctx); err != nil {
		return err
	}
	wanted := map[string]bool{}
	for _, img := range images {
		wanted[img.Ref] = true
	}
	p := &progress{w: stdout, tty: isTerminal(stdout), last: map[string]string{}}
	for {
		shown := selectImages(st.Images, wanted)
		if len(images) == 0 && len(shown) == 0 {
			fmt.Fprintln(stdout, "no image on the mirror's prefetch list (prefetch.images in its config, or registry-edge prefetch IMAGE)")
			return nil
		}
		p.show(shown)
		if len(images) == 0 || settled(shown) {
			p.done()
			for _, s := range shown {
				if s.State != prefetch.StateComplete {
					return fmt.Errorf("%d of %d image(s) not complete", countNot(shown, prefetch.StateComplete), len(shown))
				}
			}
			return nil
		}
		select {
		case <-ctx.Done():
			p.done()
			return interrupted(len(images))
		case <-time.After(*interval):
		}
		if st, err = c.Status(ctx); err != nil {
			p.done()
			if ctx.Err() != nil {
				return interrupted(len(images))
			}
			return err
		}
	}
}

// interrupted is the error of a wait for progress that a signal ended:
// the mirror goes on with the request.
func interrupted(n int) error {
	return fmt.Errorf("interrupted: the mirror goes on with the %d image(s), which stay on its list (prefetch --remove to drop them)", n)
}

func selectImages(all []prefetch.Status, wanted map[string]bool) []prefetch.Status {
	if len(wanted) == 0 {
		return all
	}
	var out []prefetch.Status
	for _, s := range all {
		if wanted[s.Ref] {
			out = append(out, s)
		}
	}
	return out
}

// settled reports whether every image has finished this run (complete or
// failed). Pending, waiting and running ones have not.
func settled(ss []prefetch.Status) bool {
	for _, s := range ss {
		if s.State != prefetch.StateComplete && s.State != prefetch.StateFailed {
			return false
		}
	}
	return true
}

func countNot(ss []prefetch.Status, state string) int {
	n := 0
	for _, s := range ss {
		if s.State != state {
			n++
		}
	}
	return n
}

// progress prints one line per image when its state changes, and on a
// terminal a transient line with the bytes of the running ones.
type progress struct {
	w       io.Writer
	tty     bool
	last    map[string]string
	pending bool // a transient line is on screen
}

func (p *progress) show(ss []prefetch.Status) {
	p.clear()
	var running []string
	for _, s := range ss {
		line := describe(s)
		if s.State == prefetch.StateRunning {
			running = append(running, fmt.Sprintf("%s %s", s.Ref, bytesOf(s)))
		}
		if p.last[s.Ref] != s.State {
			p.last[s.Ref] = s.State
			fmt.Fprintln(p.w, line)
		}
	}
	if p.tty && len(running) > 0 {
		fmt.Fprintf(p.w, "  %s", strings.Join(running, "  "))
		p.pending = true
	}
}

func (p *progress) clear() {
	if p.pending {
		fmt.Fprint(p.w, "\r\033[K")
		p.pending = false
	}
}

func (p *progress) done() { p.clear() }

func describe(s prefetch.Status) string {
	b := fmt.Sprintf("%-9s %s", s.State, s.Ref)
	if s.Digest != "" {
		b += " " + s.Digest
	}
	switch s.State {
	case prefetch.StateComplete:
		b += fmt.Sprintf(" (%d blobs, %s, %d referrers)", s.Blobs, mib(s.Bytes), s.Referrers)
	case prefetch.StateFailed:
		b += ": " + errdef.OneLine(s.Error) // one line per image, whatever the upstream said
	}
	return b
}

func bytesOf(s prefetch.Status) string {
	return fmt.Sprintf("%d/%d blobs %s/%s", s.BlobsDone, s.Blobs, mib(s.BytesDone), mib(s.Bytes))
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
