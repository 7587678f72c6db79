package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/config"
	"github.com/registry-edge/registry-edge/internal/errdef"
)

const fsckUsage = `usage: registry-edge fsck [flags]

Re-verifies the digest of every blob and manifest in the store and moves the
ones that no longer match into <storage>/quarantine/, where they are no
longer served (the next pull fetches them again). Safe while the mirror runs.
Exit status 1 when anything was quarantined or could not be read, 2 on a
usage error, 130 (Ctrl-C) or 143 (SIGTERM) when interrupted.

flags:
`

func fsckCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fsck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), fsckUsage); fs.PrintDefaults() }
	cfgPath := fs.String("config", "", "YAML config `file` whose storage.root to check")
	storage := fs.String("storage", "", "storage `directory` to check (overrides the config)")
	dryRun := fs.Bool("dry-run", false, "report bad content without moving it")
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
	root := cfg.Storage.Root
	if *storage != "" {
		root = *storage
	} else if cfg.Storage.Blobs.Driver == config.BlobsS3 {
		// Objects are verified on their way in; re-reading a bucket is a
		// job for the object store's own integrity checks.
		return fmt.Errorf("fsck checks blobs on the local filesystem; storage.blobs.driver is s3 (bucket %s)", cfg.Storage.Blobs.S3.Bucket)
	}
	// A store has a blobs directory. Without one the root is most likely
	// not the mirror's (the default ./data from another directory), and
	// checking it would create an empty store and report success.
	if fi, err := os.Stat(filepath.Join(root, "blobs")); err != nil || !fi.IsDir() {
		return fmt.Errorf("no store at %s (no blobs directory): give the mirror's --storage DIR or --config FILE", root)
	}
	// Opening the store cleans nothing younger than a day or the partial
	// age: a running mirror's ingests and partials are safe.
	store, err := blobstore.NewFS(root, blobstore.FSOptions{TempMaxAge: max(cfg.Storage.TempMaxAge.D(), 24*time.Hour), PartialMaxAge: cfg.Storage.PartialMaxAge.D()})
	if err != nil {
		return err
	}
	var checked, bad, unreadable int
	var bytes int64
	err = store.Walk(ctx, func(i blobstore.Info) error {
		checked++
		bytes += i.Size
		err := store.Check(ctx, i.Digest)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errdef.ErrDigestMismatch), errors.Is(err, errdef.ErrSizeMismatch):
			bad++
			if *dryRun {
				fmt.Fprintf(stdout, "BAD %s (%d bytes): %v\n", i.Digest, i.Size, err)
				return nil
			}
			dst, qerr := store.Quarantine(i.Digest)
			if qerr != nil {
				fmt.Fprintf(stdout, "BAD %s (%d bytes), cannot quarantine: %v\n", i.Digest, i.Size, qerr)
				return nil
			}
			fmt.Fprintf(stdout, "BAD %s (%d bytes): quarantined to %s\n", i.Digest, i.Size, dst)
		case errors.Is(err, errdef.ErrNotFound):
			// Evicted while we walked.
		default:
			unreadable++
			fmt.Fprintf(stdout, "UNREADABLE %s: %v\n", i.Digest, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "checked %d items (%s): %d bad, %d unreadable\n", checked, mib(bytes), bad, unreadable)
	if bad+unreadable > 0 {
		return fmt.Errorf("%d item(s) failed their check", bad+unreadable)
	}
	return nil
}
