package layerdelta

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/registry-edge/registry-edge/internal/recipe"
)

// Files returns the regular files of layer c (a tar, compressed or not)
// with their sizes, by path: what a caller choosing bases compares, since
// a delta finds a file's old bytes in whichever base holds its path. It
// reads the layer once, streaming, checking its digest, and keeps nothing
// but the names.
func Files(ctx context.Context, c Content, maxTarSize int64) (map[string]int64, error) {
	if maxTarSize <= 0 {
		maxTarSize = recipe.DefaultMaxTarSize
	}
	src, err := verifiedReader(c)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _, err := recipe.Decompress(ctx, pw, src, maxTarSize)
		if err == nil {
			// Bytes after the compressed stream count for the digest.
			_, err = io.Copy(io.Discard, src)
		}
		pw.CloseWithError(err)
	}()
	defer func() {
		pr.Close() // stops the decompression if the tar ends early
		<-done     // which reads c.R: not past the return
	}()
	files := map[string]int64{}
	tr := tar.NewReader(pr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			// Read to the end of the blob, so that its digest is checked.
			if _, err := io.Copy(io.Discard, pr); err != nil {
				return nil, fmt.Errorf("layer %s: list files: %w", c.Digest, err)
			}
			return files, nil
		}
		if err != nil {
			return nil, fmt.Errorf("layer %s: list files: %w", c.Digest, err)
		}
		if h.Typeflag == tar.TypeReg {
			files[h.Name] = h.Size
		}
	}
}
