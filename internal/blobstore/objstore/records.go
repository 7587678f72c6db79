package objstore

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// recordsDir holds the small records that replicas sharing the bucket
// share (internal/meta: Shared): <root>/_meta/<key>.
const recordsDir = "/_meta"

// recordSegment is what the storage drivers accept as a path element.
var recordSegment = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

func recordPath(key string) (string, error) {
	for _, elem := range strings.Split(key, "/") {
		if !recordSegment.MatchString(elem) || elem == "." || elem == ".." {
			return "", fmt.Errorf("record key %q: %w", key, errdef.ErrInvalid)
		}
	}
	return recordsDir + "/" + key, nil
}

// GetRecord returns the record stored under key, or an error wrapping
// errdef.ErrNotFound.
func (s *Store) GetRecord(ctx context.Context, key string) ([]byte, error) {
	p, err := recordPath(key)
	if err != nil {
		return nil, err
	}
	bctx, cancel, why := s.bounded(ctx)
	defer cancel()
	b, err := s.d.GetContent(bctx, p)
	err = why(err)
	if isNotFound(err) {
		return nil, fmt.Errorf("record %s: %w", key, errdef.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("record %s: %w", key, err)
	}
	return b, nil
}

// PutRecord stores b under key, replacing what was there. One object is
// written in one request, so a reader sees the old record or the new one.
func (s *Store) PutRecord(ctx context.Context, key string, b []byte) error {
	p, err := recordPath(key)
	if err != nil {
		return err
	}
	bctx, cancel, why := s.bounded(ctx)
	defer cancel()
	if err := why(s.d.PutContent(bctx, p, b)); err != nil {
		return fmt.Errorf("record %s: %w", key, err)
	}
	return nil
}

// DeleteRecord removes the record under key, or every record under it when
// key is a directory. A missing record is not an error.
func (s *Store) DeleteRecord(ctx context.Context, key string) error {
	p, err := recordPath(key)
	if err != nil {
		return err
	}
	bctx, cancel, why := s.bounded(ctx)
	defer cancel()
	if err := why(s.d.Delete(bctx, p)); err != nil && !isNotFound(err) {
		return fmt.Errorf("record %s: %w", key, err)
	}
	return nil
}

// ListRecords returns the names directly under dir, sorted; none when dir
// does not exist.
func (s *Store) ListRecords(ctx context.Context, dir string) ([]string, error) {
	p, err := recordPath(dir)
	if err != nil {
		return nil, err
	}
	bctx, cancel, why := s.bounded(ctx)
	defer cancel()
	paths, err := s.d.List(bctx, p)
	err = why(err)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("records %s: %w", dir, err)
	}
	names := make([]string, 0, len(paths))
	for _, q := range paths {
		names = append(names, path.Base(q))
	}
	sort.Strings(names)
	return names, nil
}
