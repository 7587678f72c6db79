// Command deltactl is the release engineer's tool for layer deltas: it
// computes the deltas that rebuild a new image's layers from an older
// image's, publishes them next to the new image as OCI referrers, lists what
// is published, estimates what a site saves, and applies a delta offline.
// It also checks an image against a mirror's signature policy.
//
//	deltactl diff [--platform P] [--max-bases N] [--push] [--output-dir DIR] OLD NEW
//	deltactl inspect [--platform P] IMAGE
//	deltactl plan --site-has OLD [--platform P] NEW
//	deltactl apply --delta FILE [--descriptor FILE.json] --base BLOB... -o OUT
//	deltactl verify --policy FILE [--registry NAME] [--platform P] IMAGE
//	deltactl version
//
// docs/deltactl.md is the user guide.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/interrupt"
	"github.com/registry-edge/registry-edge/internal/version"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	var w interrupt.Watcher
	go w.Watch(sigs, cancel, func(s os.Signal) {
		fmt.Fprintln(os.Stderr, "deltactl: interrupted again: exiting at once")
		os.Exit(interrupt.Status(s))
	})
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if code == exitInterrupted {
		code = w.Status()
	}
	os.Exit(code)
}

// exitInterrupted is what run returns for work a signal stopped; main
// turns it into 130 (Ctrl-C) or 143 (SIGTERM), after the signal.
const exitInterrupted = 130

const usage = `usage: deltactl COMMAND [flags] ARGS

Layer deltas for registry-edge: compute them between two images, publish them
next to the new image (OCI referrers), list them, estimate what a site saves,
and rebuild a layer from a delta offline. Check an image against a mirror's
signature policy.

commands:
  diff OLD NEW               compute the deltas that rebuild NEW's layers from OLD's (--push publishes them)
  inspect IMAGE              list the deltas published for IMAGE
  plan --site-has OLD NEW    bytes a site holding OLD downloads for NEW, with and without deltas
  apply --delta FILE --base BLOB... -o OUT
                             rebuild a layer blob from a delta file and base blob files, verified
  verify --policy FILE IMAGE check IMAGE's cosign signatures against the policy of a registry-edge config
  version                    print the version

Run 'deltactl COMMAND --help' (or 'deltactl help COMMAND') for the flags of a
command. Exit status: 0 on success, 1 on failure, 2 on a usage error, 130
(Ctrl-C) or 143 (SIGTERM) when interrupted; for verify, 1 when the policy
denies the image and 2 on any failure.
`

// env is where a command writes: results to stdout, progress and
// diagnostics to stderr.
type env struct {
	stdout, stderr io.Writer
	// creds notes the registries the command had no credentials for.
	creds credentialLog
}

// run is deltactl: it parses args, runs the command and returns the exit
// status, writing the reason for a failure as one line on stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	e := &env{stdout: stdout, stderr: stderr}
	global, args := leadingFlags(args)
	if len(args) == 0 {
		fmt.Fprintf(stderr, "deltactl: no command\n%s", usage)
		return 2
	}
	cmd, args := args[0], append(global, args[1:]...)
	var err error
	switch cmd {
	case "diff":
		err = diffCmd(ctx, e, args)
	case "inspect":
		err = inspectCmd(ctx, e, args)
	case "plan":
		err = planCmd(ctx, e, args)
	case "apply":
		err = applyCmd(ctx, e, args)
	case "verify":
		err = verifyCmd(ctx, e, args)
	case "version", "--version":
		err = versionCmd(e, args)
	case "help", "-h", "-help", "--help":
		if len(args) > 0 && !strings.HasPrefix(args[len(args)-1], "-") {
			// "deltactl help diff" is "deltactl diff --help" (an unknown
			// command is a usage error, not the general usage).
			return run(ctx, []string{args[len(args)-1], "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "deltactl: unknown command %q\n%s", cmd, usage)
		return 2
	}
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if ctx.Err() != nil {
		// Ctrl-C or SIGTERM: what stopped the work, not how; and what a
		// push had published by then.
		msg := "interrupted"
		if p, ok := errors.AsType[*partialPushError](err); ok {
			msg += "; published before: " + strings.Join(p.published, ", ")
		}
		fmt.Fprintf(stderr, "deltactl: %s\n", msg)
		return exitInterrupted
	}
	fmt.Fprintf(stderr, "deltactl: %s%s\n", redactURLs(errdef.OneLine(err.Error())), e.creds.hint(err)+tlsHint(err))
	if u, ok := errors.AsType[*usageError](err); ok {
		u.printUsage(stderr)
		return 2
	}
	if _, denied := errors.AsType[*deniedError](err); cmd == "verify" && !denied {
		return exitNoVerdict
	}
	return 1
}

// leadingFlags splits the common flags given before the command (as in
// "deltactl --insecure diff ...") from the rest of args.
func leadingFlags(args []string) (global, rest []string) {
	for len(args) > 0 {
		name, _, hasValue := strings.Cut(strings.TrimLeft(args[0], "-"), "=")
		if !strings.HasPrefix(args[0], "-") || args[0] == "-" || args[0] == "--" {
			break
		}
		switch {
		case name == "insecure" || hasValue && (name == "format" || name == "tmp" || name == "timeout"):
			global, args = append(global, args[0]), args[1:]
		case name == "format" || name == "tmp" || name == "timeout":
			if len(args) == 1 {
				// No command follows: run reports that, with the usage.
				return append(global, args[0]), nil
			}
			global, args = append(global, args[0], args[1]), args[2:]
		default:
			return global, args
		}
	}
	return global, args
}

const versionUsage = `usage: deltactl version [--format table|json]

Prints deltactl's version.

flags:
`

func versionCmd(e *env, args []string) error {
	f := newFlags(e, "version", versionUsage)
	f.formatFlag()
	if _, err := f.parse(args, 0, 0); err != nil {
		return err
	}
	if f.format == formatJSON {
		return writeJSON(e.stdout, struct {
			Version string `json:"version"`
		}{version.String()})
	}
	fmt.Fprintf(e.stdout, "deltactl %s\n", version.String())
	return nil
}
