package blobstore

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/verify"
)

// Check hashes stored content d and reports whether it still matches its
// digest (disk corruption, or a file changed behind the store's back). The
// error wraps errdef.ErrDigestMismatch when it does not.
func (s *FS) Check(_ context.Context, d digest.Digest) error {
	rc, err := s.openRaw(d)
	if err != nil {
		return err
	}
	defer rc.Close()
	dg, err := verify.NewDigester(d)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dg, rc); err != nil {
		return fmt.Errorf("blob %s: read: %w", d, err)
	}
	return dg.Verify(-1)
}

// Quarantine moves stored content d out of the store, to
// quarantine/<alg>-<hex> under the root, and returns that path: the content
// is no longer served, and is kept for inspection.
func (s *FS) Quarantine(d digest.Digest) (string, error) {
	p, err := s.path(d)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(s.root, "quarantine")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	s.forget(d)
	dst := filepath.Join(dir, string(d.Algorithm())+"-"+d.Encoded())
	if err := os.Rename(p, dst); err != nil {
		return "", fmt.Errorf("blob %s: quarantine: %w", d, err)
	}
	syncDir(filepath.Dir(p))
	return dst, nil
}
