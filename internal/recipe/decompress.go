package recipe

import (
	"bufio"
	"context"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// Decompress copies the uncompressed content of a layer blob (gzip, zstd or
// an uncompressed tar, told apart by their magic bytes) to w, and returns
// the blob's format and the number of bytes written. It stops with an error
// wrapping errdef.ErrTooLarge once more than maxSize bytes come out, so a
// decompression bomb costs at most maxSize bytes of w. A corrupt blob wraps
// errdef.ErrInvalid. It does not check any digest: callers hash what they
// read or what they write, as they need.
func Decompress(ctx context.Context, w io.Writer, blob io.Reader, maxSize int64) (Format, int64, error) {
	br := bufio.NewReaderSize(blob, chunkSize)
	magic, _ := br.Peek(4)
	var (
		f   Format
		src io.Reader
	)
	switch {
	case isGzip(magic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return FormatGzip, 0, fmt.Errorf("decompress gzip: %w: %w", errdef.ErrInvalid, err)
		}
		defer zr.Close()
		f, src = FormatGzip, zr
	case isZstd(magic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return FormatZstd, 0, fmt.Errorf("decompress zstd: %w", err)
		}
		defer zr.Close()
		f, src = FormatZstd, zr
	default:
		f, src = FormatNone, br
	}
	ww := &writeErrRecorder{w: w}
	n, err := io.CopyBuffer(ww, ctxReader{ctx: ctx, r: io.LimitReader(src, maxSize+1)}, make([]byte, chunkSize))
	switch {
	case err != nil && (ww.err != nil || ctx.Err() != nil):
		return f, n, fmt.Errorf("decompress %s: %w", f, err)
	case err != nil && f != FormatNone:
		return f, n, fmt.Errorf("decompress %s: %w: %w", f, errdef.ErrInvalid, err)
	case err != nil:
		return f, n, fmt.Errorf("decompress: %w", err)
	case n > maxSize:
		return f, n, fmt.Errorf("decompress %s: more than %d bytes: %w", f, maxSize, errdef.ErrTooLarge)
	}
	return f, n, nil
}

// writeErrRecorder tells the errors of w from those of the reader.
type writeErrRecorder struct {
	w   io.Writer
	err error
}

func (w *writeErrRecorder) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}
