package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/layerdelta"
	"github.com/registry-edge/registry-edge/internal/verify"
)

const applyUsage = `usage: deltactl apply [flags] --delta FILE --base BLOB [--base BLOB...] -o OUT

Rebuilds a layer blob from a delta file and the base layer blobs it needs, as
'deltactl diff --output-dir' writes them (DIR/<hex>.delta and its descriptor
DIR/<hex>.json). The base files are found by their content, in any order
(further arguments are base files too). The rebuilt blob is written to a
temporary file next to OUT and renamed to OUT only once it has the digest and
size the descriptor names for the layer: after a failure nothing is left at
OUT and the exit status is 1. A symbolic link OUT is followed. With -o -, or
an OUT that is not a regular file (a device, a FIFO), the blob is rebuilt
into a temporary file under --tmp first and written out once verified; the
status line then goes to stderr for -o -.

flags:
`

// maxDescriptorSize bounds a descriptor file: its annotations are at most a
// few of layerdelta's 64 KiB values.
const maxDescriptorSize = 1 << 20

// stringList collects a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// applyResult is the result of apply (--format json).
type applyResult struct {
	Output string            `json:"output"`
	Target layerdelta.Blob   `json:"target"`
	Delta  layerdelta.Blob   `json:"delta"`
	Kind   layerdelta.Kind   `json:"kind"`
	Recipe string            `json:"recipe,omitempty"`
	Bases  []layerdelta.Blob `json:"bases"`
}

func applyCmd(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "apply", applyUsage)
	var deltaPath, descPath, out string
	var bases stringList
	f.StringVar(&deltaPath, "delta", "", "delta `file` (required)")
	f.StringVar(&descPath, "descriptor", "", "the delta's descriptor `file` (default: the delta file with .delta replaced by .json)")
	f.Var(&bases, "base", "a base layer blob `file` (repeatable)")
	f.StringVar(&out, "o", "", "output `file` for the rebuilt layer blob (required)")
	f.StringVar(&out, "output", "", "same as -o: output `file`")
	f.tmpFlag()
	f.formatFlag()
	pos, err := f.parse(args, 0, -1)
	if err != nil {
		return err
	}
	bases = append(bases, pos...)
	switch {
	case deltaPath == "":
		return f.usageErr("--delta is required")
	case len(bases) == 0:
		return f.usageErr("at least one --base is required")
	case out == "":
		return f.usageErr("-o is required")
	}
	if descPath == "" {
		descPath = strings.TrimSuffix(deltaPath, ".delta") + ".json"
	}
	dst, err := resolveOutput(out, e.stdout)
	if err != nil {
		return err
	}
	if _, err := os.Stat(deltaPath); err != nil {
		return fmt.Errorf("delta: %w", err)
	}

	l, err := readDescriptor(descPath)
	if err != nil {
		return err
	}
	d, err := openDelta(deltaPath, l)
	if err != nil {
		return err
	}
	defer d.Close()
	files, err := openBases(bases, l)
	if err != nil {
		return err
	}
	defer closeAll(files)
	open := func(b layerdelta.Blob) (layerdelta.Content, error) {
		c, ok := files[b.Digest]
		if !ok {
			return layerdelta.Content{}, fmt.Errorf("base %s: %w", b.Digest, errdef.ErrNotFound)
		}
		return c, nil
	}
	rebuild := func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 1<<20)
		if err := layerdelta.Apply(ctx, bw, l, bufio.NewReaderSize(d, 1<<20), open, layerdelta.ApplyOptions{TempDir: f.tmp}); err != nil {
			return err
		}
		return bw.Flush()
	}
	if dst.path != "" {
		err = writeFileAtomic(dst.path, rebuild)
	} else {
		err = writeVerified(ctx, f.tmp, dst.open, rebuild)
	}
	if err != nil {
		return fmt.Errorf("apply %s: %w", deltaPath, err)
	}

	res := applyResult{Output: out, Target: l.Target, Delta: layerdelta.Blob{Digest: l.Delta.Digest, Size: l.Delta.Size}, Kind: l.Kind, Bases: l.Bases}
	if l.Recipe != nil {
		res.Recipe = l.Recipe.String()
	}
	status := e.stdout
	if out == "-" {
		status = e.stderr
	}
	if f.format == formatJSON {
		return writeJSON(status, res)
	}
	fmt.Fprintf(status, "%s: %s (%d bytes), rebuilt from %s delta %s\n", out, l.Target.Digest, l.Target.Size, l.Kind, l.Delta.Digest)
	return nil
}

// output is where apply writes: a path replaced atomically, or a stream
// (stdout, a device, a FIFO) written once the blob is verified.
type output struct {
	path string
	open func() (io.WriteCloser, error)
}

// resolveOutput checks OUT before any work is done: - is stdout, a
// symbolic link is followed, a directory or a missing parent directory is
// an error, and an existing file that is not a regular file is written
// through rather than replaced.
func resolveOutput(out string, stdout io.Writer) (output, error) {
	if out == "-" {
		return output{open: func() (io.WriteCloser, error) { return nopCloser{stdout}, nil }}, nil
	}
	path := out
	if fi, err := os.Lstat(out); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		if path, err = filepath.EvalSymlinks(out); errors.Is(err, fs.ErrNotExist) {
			// A link to a file yet to be written: write that file.
			path, err = os.Readlink(out)
			if err == nil && !filepath.IsAbs(path) {
				path = filepath.Join(filepath.Dir(out), path)
			}
		}
		if err != nil {
			return output{}, fmt.Errorf("-o %s: %w", out, err)
		}
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return output{}, fmt.Errorf("-o %s: is a directory", out)
	case err == nil && !fi.Mode().IsRegular():
		return output{open: func() (io.WriteCloser, error) { return os.OpenFile(path, os.O_WRONLY, 0) }}, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return output{}, fmt.Errorf("-o %s: %w", out, err)
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || !di.IsDir() {
		return output{}, fmt.Errorf("-o %s: directory %s does not exist", out, filepath.Dir(path))
	}
	return output{path: path}, nil
}

// writeVerified runs write into a temporary file under dir (write fails
// unless what it wrote is verified), then copies that file to open's
// writer: nothing unverified reaches a stream. The end of ctx (Ctrl-C)
// ends the wait for the stream too: opening a FIFO waits for its reader,
// and writing to it for the reader to read; the temporary file goes
// either way.
func writeVerified(ctx context.Context, dir string, open func() (io.WriteCloser, error), write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(dir, "deltactl-apply-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := write(tmp); err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		w, err := open()
		if err != nil {
			done <- err
			return
		}
		if _, err := io.Copy(w, tmp); err != nil {
			w.Close()
			done <- err
			return
		}
		done <- w.Close()
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// The copy, if it ever starts, fails on the closed file; an
		// open that waits for a reader waits until deltactl exits.
		return ctx.Err()
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// readDescriptor reads a delta's descriptor (layerdelta.Layer.Descriptor as
// JSON) from path.
func readDescriptor(path string) (layerdelta.Layer, error) {
	fh, err := os.Open(path)
	if err != nil {
		return layerdelta.Layer{}, fmt.Errorf("descriptor: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxDescriptorSize+1))
	if err != nil {
		return layerdelta.Layer{}, fmt.Errorf("descriptor %s: %w", path, err)
	}
	if len(b) > maxDescriptorSize {
		return layerdelta.Layer{}, fmt.Errorf("descriptor %s: larger than %d bytes: %w", path, maxDescriptorSize, errdef.ErrTooLarge)
	}
	var desc ocispec.Descriptor
	if err := json.Unmarshal(b, &desc); err != nil {
		return layerdelta.Layer{}, fmt.Errorf("descriptor %s: %v: %w", path, err, errdef.ErrInvalid)
	}
	l, err := layerdelta.ParseDescriptor(desc)
	if err != nil {
		return layerdelta.Layer{}, fmt.Errorf("descriptor %s: %w", path, err)
	}
	return l, nil
}

// openDelta opens the delta file and checks that it is the one the
// descriptor names, before anything is rebuilt from it.
func openDelta(path string, l layerdelta.Layer) (_ *os.File, err error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("delta: %w", err)
	}
	defer func() {
		if err != nil {
			fh.Close()
		}
	}()
	dg, err := verify.NewDigester(l.Delta.Digest)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(dg, fh); err != nil {
		return nil, fmt.Errorf("delta %s: %w", path, err)
	}
	if err := dg.Verify(l.Delta.Size); err != nil {
		return nil, fmt.Errorf("delta %s is not the delta its descriptor names (corrupted or truncated): %w", path, err)
	}
	if _, err := fh.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return fh, nil
}

// openBases opens the base files and returns those that l needs, by
// digest; a base that none of the files holds is an error.
func openBases(paths []string, l layerdelta.Layer) (_ map[digest.Digest]layerdelta.Content, err error) {
	need := map[digest.Digest]layerdelta.Blob{}
	for _, b := range l.Bases {
		need[b.Digest] = b
	}
	files := map[digest.Digest]layerdelta.Content{}
	defer func() {
		if err != nil {
			closeAll(files)
		}
	}()
	var seen []string
	for _, p := range paths {
		fh, blob, err := hashFile(p)
		if err != nil {
			return nil, fmt.Errorf("base file: %w", err)
		}
		if _, dup := files[blob.Digest]; dup || need[blob.Digest] != blob {
			seen = append(seen, fmt.Sprintf("%s is %s", p, shortDigest(blob.Digest)))
			fh.Close()
			continue
		}
		files[blob.Digest] = layerdelta.Content{Blob: blob, R: fh}
	}
	for _, b := range l.Bases {
		if _, ok := files[b.Digest]; !ok {
			others := ""
			if len(seen) > 0 {
				others = " (" + strings.Join(seen, "; ") + ")"
			}
			return nil, fmt.Errorf("base %s (%d bytes) is not among the --base files%s: %w", b.Digest, b.Size, others, errdef.ErrNotFound)
		}
	}
	return files, nil
}

// hashFile opens path and returns it with its SHA-256 digest and size.
func hashFile(path string) (*os.File, layerdelta.Blob, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, layerdelta.Blob{}, err
	}
	h := sha256.New()
	n, err := io.Copy(h, fh)
	if err != nil {
		fh.Close()
		return nil, layerdelta.Blob{}, fmt.Errorf("%s: %w", path, err)
	}
	return fh, layerdelta.Blob{Digest: digest.NewDigest(digest.SHA256, h), Size: n}, nil
}

func closeAll(files map[digest.Digest]layerdelta.Content) {
	for _, c := range files {
		c.R.(*os.File).Close()
	}
}
