package layerdelta

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/delta"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/recipe"
)

// Content is a layer blob to read: its digest and size, and its bytes at
// random offsets (a file or a bytes.Reader; read concurrently).
type Content struct {
	Blob
	R io.ReaderAt
}

// Options tune Make.
type Options struct {
	// TempDir holds the uncompressed tars and the delta while they are
	// made; "" means os.TempDir().
	TempDir string
	// Encode tunes the codec.
	Encode delta.EncodeOptions
	// MaxRatio bounds the delta worth publishing: it must be smaller than
	// MaxRatio times the target blob's size. Zero means 1 (any delta
	// smaller than the blob). Tiers use 0.5.
	MaxRatio float64
	// MaxTarSize bounds the uncompressed size of a layer; zero means
	// recipe.DefaultMaxTarSize.
	MaxTarSize int64
	// Min are the smallest layer and saving a delta is made for; the
	// zero value means none (callers pass DefaultMinimums or their
	// settings).
	Min Minimums
}

// Result is the outcome of Make.
type Result struct {
	// Layer describes the delta; its Delta descriptor is zero (and File
	// nil) when no delta is worth it (see Reason).
	Layer Layer
	// File holds the delta, positioned at its start; the caller closes and
	// removes it (Result.Close).
	File *os.File
	// Reason says why the delta has the kind it has, or why there is none:
	// the recipe that was found, or why none was, and the sizes compared.
	Reason string
	// TarSize is the target's uncompressed size (KindTar), Stats the codec's.
	TarSize int64
	Stats   delta.Stats
}

// OK reports whether Make produced a delta.
func (r *Result) OK() bool { return r.File != nil }

// Close removes the delta file.
func (r *Result) Close() error {
	if r.File == nil {
		return nil
	}
	r.File.Close()
	return os.Remove(r.File.Name())
}

// Make computes the delta that rebuilds target from bases. It prefers a tar
// delta: the uncompressed tars are compared, and the recipe that compresses
// the new tar into target goes with the delta. When target has no recipe
// (its encoder is not one Detect knows), it tries a blob delta on the
// compressed bytes. It returns a Result without a delta, and a nil error,
// when the delta would not be smaller than opts.MaxRatio of the blob, or
// when the layer or the saving is under opts.Min.
func Make(ctx context.Context, target Content, bases []Content, opts Options) (res Result, err error) {
	if len(bases) == 0 {
		return Result{}, fmt.Errorf("delta for %s: no base: %w", target.Digest, errdef.ErrInvalid)
	}
	if opts.MaxRatio <= 0 {
		opts.MaxRatio = 1
	}
	if opts.MaxTarSize <= 0 {
		opts.MaxTarSize = recipe.DefaultMaxTarSize
	}
	tmp := &tempFiles{dir: opts.TempDir}
	defer tmp.removeAll()

	res.Layer = Layer{Target: target.Blob}
	for _, b := range bases {
		res.Layer.Bases = append(res.Layer.Bases, b.Blob)
	}
	if r := opts.Min.TooSmall(target.Size); r != "" {
		// Not even read: no delta of it would be worth fetching.
		res.Reason = r
		return res, nil
	}
	rec, err := recipe.Detect(ctx, target.R, target.Size, target.Digest, recipe.WithMaxTarSize(opts.MaxTarSize))
	var noMatch *recipe.NoMatchError
	switch {
	case errors.As(err, &noMatch):
		res.Reason = "no recipe: " + noMatch.Error()
		res.Layer.Kind = KindBlob
	case err != nil:
		return Result{}, fmt.Errorf("delta for %s: %w", target.Digest, err)
	default:
		res.Reason = "recipe " + rec.String()
		res.Layer.Kind, res.Layer.Recipe = KindTar, &rec
	}

	var (
		tgt   delta.Base
		bs    []delta.Base
		limit = int64(opts.MaxRatio * float64(target.Size))
	)
	if res.Layer.Kind == KindTar {
		if tgt, err = tmp.decompress(ctx, target, opts.MaxTarSize); err != nil {
			return Result{}, fmt.Errorf("delta for %s: target: %w", target.Digest, err)
		}
		for _, b := range bases {
			base, err := tmp.decompress(ctx, b, opts.MaxTarSize)
			if err != nil {
				return Result{}, fmt.Errorf("delta for %s: base %s: %w", target.Digest, b.Digest, err)
			}
			bs = append(bs, base)
		}
		res.TarSize = tgt.Size
	} else {
		tgt = delta.Base{Digest: target.Digest, Size: target.Size, R: target.R}
		for _, b := range bases {
			bs = append(bs, delta.Base{Digest: b.Digest, Size: b.Size, R: b.R})
		}
	}

	f, err := tmp.create("delta-*")
	if err != nil {
		return Result{}, err
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	stats, err := delta.Encode(ctx, cw, tgt.R, tgt.Size, bs, opts.Encode)
	if err != nil {
		return Result{}, fmt.Errorf("delta for %s: %w", target.Digest, err)
	}
	res.Stats = stats
	if cw.n >= limit {
		res.Reason += fmt.Sprintf("; %s delta of %d bytes is not smaller than %s%% of the %d-byte blob", res.Layer.Kind, cw.n, strconv.FormatFloat(100*opts.MaxRatio, 'f', -1, 64), target.Size)
		res.Layer.Kind, res.Layer.Recipe = "", nil
		return res, nil
	}
	if r := opts.Min.NotWorth(target.Size, cw.n); r != "" {
		res.Reason += "; " + string(res.Layer.Kind) + " " + r
		res.Layer.Kind, res.Layer.Recipe = "", nil
		return res, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Result{}, err
	}
	res.Layer.Delta = ocispec.Descriptor{MediaType: delta.MediaType, Digest: digest.NewDigest(digest.SHA256, h), Size: cw.n}
	if err := res.Layer.validate(); err != nil {
		return Result{}, err
	}
	tmp.keep(f)
	res.File = f
	return res, nil
}

// tempFiles are the temporary files of one Make or Apply.
type tempFiles struct {
	dir   string
	files []*os.File
}

func (t *tempFiles) create(pattern string) (*os.File, error) {
	f, err := os.CreateTemp(t.dir, pattern)
	if err != nil {
		return nil, err
	}
	t.files = append(t.files, f)
	return f, nil
}

// keep takes f off the list of files to remove.
func (t *tempFiles) keep(f *os.File) {
	for i, g := range t.files {
		if g == f {
			t.files = append(t.files[:i], t.files[i+1:]...)
			return
		}
	}
}

func (t *tempFiles) removeAll() {
	for _, f := range t.files {
		f.Close()
		os.Remove(f.Name())
	}
	t.files = nil
}

// decompress writes the uncompressed content of blob to a temporary file
// and returns it as a codec base, with its SHA-256 (the layer's diffID).
// The blob's own digest is checked on the way.
func (t *tempFiles) decompress(ctx context.Context, blob Content, maxSize int64) (delta.Base, error) {
	f, err := t.create("tar-*")
	if err != nil {
		return delta.Base{}, err
	}
	src, err := verifiedReader(blob)
	if err != nil {
		return delta.Base{}, err
	}
	h := sha256.New()
	_, n, err := recipe.Decompress(ctx, io.MultiWriter(f, h), src, maxSize)
	if err == nil {
		// Decompress may stop before the end of the blob (trailing bytes
		// after a gzip member): read on, so that the digest is checked.
		_, err = io.Copy(io.Discard, src)
	}
	if err != nil {
		return delta.Base{}, err
	}
	return delta.Base{Digest: digest.NewDigest(digest.SHA256, h), Size: n, R: f}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
