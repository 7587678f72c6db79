package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/registry-edge/registry-edge/internal/admin"
	"github.com/registry-edge/registry-edge/internal/gc"
)

const gcUsage = `usage: registry-edge gc [flags]

Asks a running registry-edge to bring its store within storage.maxSize and
storage.maxAge now (it also does so every minute), or with --dry-run lists what
would be evicted and why, without deleting anything. Exit status 1 when the
store is still over budget afterwards (what is left is pinned, or was served
within storage.minIdle), 2 on a usage error, 130 (Ctrl-C) or 143 (SIGTERM)
when interrupted.

flags:
`

func gcCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), gcUsage); fs.PrintDefaults() }
	addr := fs.String("mirror", "http://127.0.0.1:5000", "`URL` of the mirror (its admin API must be open to this host: admin.allowFrom)")
	dryRun := fs.Bool("dry-run", false, "only list what would be evicted")
	format := fs.String("format", "table", "output `format`: table or json")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *format != "table" && *format != "json" {
		return usageErrorf(fs, "--format must be table or json")
	}
	c, err := admin.NewClient(*addr)
	if err != nil {
		return usageErrorf(fs, "%v", err)
	}
	plan, err := c.GC(ctx, *dryRun)
	if err != nil {
		return err
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(plan); err != nil {
			return err
		}
	} else {
		printPlan(stdout, plan, *dryRun)
	}
	if plan.OverBudget && !*dryRun {
		// A script (the runbook's "disk is full" steps) must be able to
		// tell: exit status 1.
		return errors.New("still over budget after eviction: what is left is pinned (pre-staged), or was served within storage.minIdle (a device may be pulling it)")
	}
	return nil
}

func printPlan(w io.Writer, p *gc.Plan, dryRun bool) {
	verb := "evicted"
	if dryRun {
		verb = "would evict"
	}
	budget := "no budget"
	if p.Budget > 0 {
		budget = "budget " + mib(p.Budget)
	}
	fmt.Fprintf(w, "store %s, %s, %d images (%d pinned, %d delta bases, evicted last); %s %d, freeing %s\n",
		mib(p.Used), budget, p.Units, p.PinnedUnits, p.BaseUnits, verb, len(p.Victims), mib(p.Freed))
	if len(p.Victims) > 0 {
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ROOT\tTAGS\tLAST PULLED\tFREES\tREASON")
		for _, v := range p.Victims {
			tags := strings.Join(v.Tags, ",")
			if tags == "" {
				tags = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.Root, tags, v.LastAccess.Format("2006-01-02 15:04"), mib(v.Freed), v.Reason)
		}
		tw.Flush()
	}
	if p.OverBudget && dryRun {
		fmt.Fprintln(w, "would still be over budget: what is left is pinned (pre-staged), or was served within storage.minIdle (a device may be pulling it)")
	}
}
