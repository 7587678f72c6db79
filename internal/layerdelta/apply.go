package layerdelta

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/registry-edge/registry-edge/internal/delta"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/recipe"
	"github.com/registry-edge/registry-edge/internal/verify"
)

// ApplyOptions tune Apply.
type ApplyOptions struct {
	// TempDir holds the uncompressed bases while the delta is applied;
	// "" means os.TempDir().
	TempDir string
	// Limits bound the decoder. A zero MaxTargetSize is set from the
	// target blob's size (see maxTarFor).
	Limits delta.Limits
	// MaxBaseTarSize bounds the uncompressed size of each base of a tar
	// delta, written to TempDir while the delta is applied; zero sets it
	// from the base blob's size (see maxTarFor), so that a base that is a
	// compression bomb cannot fill the disk.
	MaxBaseTarSize int64
}

// Usable reports why l cannot be applied by this binary with the bases
// has reports as held, or nil if it can: every base must be held, and a
// tar delta's recipe must be reproducible here (see recipe.Reproducible).
// Errors wrap errdef.ErrNotFound (a base is missing) or
// errdef.ErrUnsupported.
func (l Layer) Usable(has func(Blob) bool) error {
	for _, b := range l.Bases {
		if !has(b) {
			return fmt.Errorf("delta %s: base %s not held: %w", l.Delta.Digest, b.Digest, errdef.ErrNotFound)
		}
	}
	if l.Kind == KindTar {
		if err := l.Recipe.Reproducible(); err != nil {
			return fmt.Errorf("delta %s: %w", l.Delta.Digest, err)
		}
	}
	return nil
}

// Apply rebuilds l's target blob from the delta (read from d) and the bases
// (open returns each by digest, as a verified Content), writing it to w.
// It returns nil only if the bytes written to w are exactly the target
// blob: its digest and size. After an error, w holds bytes that must be
// discarded. Errors wrap errdef.ErrDigestMismatch or ErrSizeMismatch (wrong
// base, wrong recipe, corrupted delta), errdef.ErrInvalid (malformed delta),
// errdef.ErrTooLarge (a decoder limit), errdef.ErrNotFound (a base is
// missing) or errdef.ErrUnsupported (a recipe this binary cannot replay).
func Apply(ctx context.Context, w io.Writer, l Layer, d io.Reader, open func(Blob) (Content, error), opts ApplyOptions) error {
	if err := l.validate(); err != nil {
		return err
	}
	if err := l.Usable(func(Blob) bool { return true }); err != nil {
		return err
	}
	tmp := &tempFiles{dir: opts.TempDir}
	defer tmp.removeAll()

	lim := opts.Limits
	if lim.MaxTargetSize <= 0 {
		lim.MaxTargetSize = l.Target.Size
		if l.Kind == KindTar {
			lim.MaxTargetSize = maxTarFor(l.Target.Size)
		}
	}
	var bases []delta.Base
	for _, b := range l.Bases {
		c, err := open(b)
		if err != nil {
			return fmt.Errorf("apply delta %s: base %s: %w", l.Delta.Digest, b.Digest, err)
		}
		if c.Blob != b {
			return fmt.Errorf("apply delta %s: base %s: got %s (%d bytes), want %d bytes: %w", l.Delta.Digest, b.Digest, c.Digest, c.Size, b.Size, errdef.ErrDigestMismatch)
		}
		if l.Kind == KindBlob {
			// A stored blob (its digest was checked when it was stored);
			// the codec compares the digest and size the delta names with
			// the base's, and the output's digest is checked at the end.
			bases = append(bases, delta.Base{Digest: b.Digest, Size: b.Size, R: c.R})
			continue
		}
		limit := opts.MaxBaseTarSize
		if limit <= 0 {
			limit = maxTarFor(b.Size)
		}
		base, err := tmp.decompress(ctx, c, limit)
		if err != nil {
			return fmt.Errorf("apply delta %s: base %s: %w", l.Delta.Digest, b.Digest, err)
		}
		bases = append(bases, base)
	}

	dg, err := verify.NewDigester(l.Target.Digest)
	if err != nil {
		return err
	}
	out := &limitedWriter{w: io.MultiWriter(w, dg), n: l.Target.Size}
	if l.Kind == KindBlob {
		err = delta.Decode(ctx, out, d, bases, lim)
	} else {
		err = decodeAndCompress(ctx, out, l, d, bases, lim)
	}
	if err != nil {
		return fmt.Errorf("apply delta %s to %s: %w", l.Delta.Digest, l.Target.Digest, err)
	}
	if err := dg.Verify(l.Target.Size); err != nil {
		return fmt.Errorf("apply delta %s: rebuilt blob: %w", l.Delta.Digest, err)
	}
	return nil
}

// decodeAndCompress streams the tar that the delta rebuilds into the recipe's
// encoder, which writes the blob to w.
func decodeAndCompress(ctx context.Context, w io.Writer, l Layer, d io.Reader, bases []delta.Base, lim delta.Limits) error {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := delta.Decode(ctx, pw, d, bases, lim)
		pw.CloseWithError(err) // nil closes with io.EOF
		done <- err
	}()
	err := recipe.Rebuild(ctx, w, pr, *l.Recipe)
	pr.CloseWithError(errRebuildStopped)
	if derr := <-done; derr != nil && !errors.Is(derr, errRebuildStopped) {
		return derr // the root cause; Rebuild only saw the pipe break
	}
	return err
}

var errRebuildStopped = errors.New("rebuild stopped")

// maxTarFor is the largest uncompressed tar Apply accepts for a compressed
// blob of size n: generous for real layers (text compresses about 10:1,
// sparse files more) and small enough that a hostile delta cannot make a
// site write terabytes.
func maxTarFor(n int64) int64 {
	return min(delta.DefaultMaxTargetSize, max(256*n, 1<<30))
}

// limitedWriter fails a write past n bytes: a rebuild that outgrows the
// target blob is wrong, and stops there.
type limitedWriter struct {
	w io.Writer
	n int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		return 0, fmt.Errorf("rebuilt blob larger than its target: %w", errdef.ErrSizeMismatch)
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	return n, err
}

// verifiedReader reads c from its start, failing at the end if it does not
// match its digest and size.
func verifiedReader(c Content) (io.Reader, error) {
	return verify.NewReader(io.NewSectionReader(c.R, 0, c.Size), c.Digest, c.Size)
}
