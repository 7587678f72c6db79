package objstore

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/verify"
)

// localPrefix names the copies of OpenLocal in TempDir; CleanUploads
// removes those a crash left (they start with tempPrefix).
const localPrefix = tempPrefix + "local-"

// OpenLocal copies blob d into a temporary file in TempDir, checking its
// digest and size on the way, and returns it for random access (the delta
// codec reads its bases at random offsets, which would be a request each
// on the bucket). Closing it removes the file.
func (s *Store) OpenLocal(ctx context.Context, d digest.Digest) (blobstore.LocalFile, error) {
	rc, err := s.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	size, err := rc.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = rc.Seek(0, io.SeekStart)
	}
	if err != nil {
		return nil, wrapErr(d, "", err)
	}
	vr, err := verify.NewReader(rc, d, size)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(s.tempDir, localPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("blob %s: local copy: %w", d, err)
	}
	lf := &localFile{File: f}
	if _, err := io.Copy(f, vr); err != nil {
		lf.Close()
		return nil, wrapErr(d, "local copy", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		lf.Close()
		return nil, wrapErr(d, "local copy", err)
	}
	return lf, nil
}

// localFile is a temporary copy, removed when closed.
type localFile struct{ *os.File }

func (f *localFile) Close() error {
	err := f.File.Close()
	if rerr := os.Remove(f.Name()); err == nil {
		err = rerr
	}
	return err
}

// RedirectURL returns a URL from which a client can GET blob d directly (on
// S3, presigned for 20 minutes), or "" when the driver has none.
func (s *Store) RedirectURL(ctx context.Context, d digest.Digest) (string, error) {
	p, err := blobPath(d)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
	if err != nil {
		return "", err
	}
	u, err := s.d.RedirectURL(req, p)
	if err != nil {
		return "", wrapErr(d, "redirect", err)
	}
	return u, nil
}
