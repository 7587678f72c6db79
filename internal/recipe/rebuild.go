package recipe

import (
	"context"
	"fmt"
	"io"
)

// Rebuild compresses tar with r and writes the result to w, streaming. With
// the tar a blob was made from and the recipe Detect found for it, the output
// is that blob, byte for byte; callers verify its digest before serving it.
//
// Rebuild refuses a recipe this binary cannot reproduce (see
// Recipe.Reproducible) before writing anything. Errors from tar and w are
// returned wrapped; after an error, w holds a partial blob.
func Rebuild(ctx context.Context, w io.Writer, tar io.Reader, r Recipe) error {
	if err := r.Reproducible(); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	src := ctxReader{ctx: ctx, r: tar}
	buf := make([]byte, chunkSize)
	if r.Format == FormatNone {
		if _, err := io.CopyBuffer(w, src, buf); err != nil {
			return fmt.Errorf("rebuild: %w", err)
		}
		return nil
	}
	if _, err := w.Write(r.Header); err != nil {
		return fmt.Errorf("rebuild %s: %w", r, err)
	}
	enc, err := newEncoder(r, w)
	if err != nil {
		return fmt.Errorf("rebuild %s: %w", r, err)
	}
	if _, err := io.CopyBuffer(enc, src, buf); err != nil {
		enc.abort()
		return fmt.Errorf("rebuild %s: %w", r, err)
	}
	if err := enc.close(); err != nil {
		return fmt.Errorf("rebuild %s: %w", r, err)
	}
	return nil
}
