package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/delta"
	"github.com/registry-edge/registry-edge/internal/layerdelta"
)

// push publishes deltas as one artifact whose subject is the platform
// manifest subject of repo: the delta blobs, the empty config, then the
// artifact manifest by digest. go-containerregistry's remote.Put (v0.22.1,
// write.go commitSubjectReferrers) keeps the referrers tag schema's index
// (tag sha256-<hex> of the subject) up to date itself when the registry has
// no referrers API, so nothing here depends on which kind it is.
func (d *differ) push(repo name.Repository, subject v1.Descriptor, from digest.Digest, deltas []*made) (layerdelta.Blob, error) {
	var layers []layerdelta.Layer
	for _, m := range deltas {
		layers = append(layers, m.res.Layer)
	}
	raw, desc, err := layerdelta.Manifest(ociDescriptor(subject), from, layers)
	if err != nil {
		return layerdelta.Blob{}, err
	}
	config := static.NewLayer(ocispec.DescriptorEmptyJSON.Data, types.MediaType(ocispec.MediaTypeEmptyJSON))
	if err := remote.WriteLayer(repo, config, d.c.opts...); err != nil {
		return layerdelta.Blob{}, fmt.Errorf("config: %w", err)
	}
	for _, m := range deltas {
		l := &fileLayer{f: m.res.File, blob: layerdelta.Blob{Digest: m.res.Layer.Delta.Digest, Size: m.res.Layer.Delta.Size}, prog: d.prog}
		err := remote.WriteLayer(repo, l, d.c.opts...)
		d.prog.clear()
		if err != nil {
			return layerdelta.Blob{}, fmt.Errorf("delta %s: %w", l.blob.Digest, err)
		}
	}
	ref := repo.Digest(desc.Digest.String())
	// On a registry without the referrers API, the tag schema's index is
	// read, extended and written again: a push for the same image running
	// at the same time (one per old release, say) may write over this
	// one's entry. Each Put adds it again; the artifact must be listed.
	for attempt := 1; ; attempt++ {
		if err := remote.Put(ref, rawManifest{b: raw, mt: types.OCIManifestSchema1}, d.c.opts...); err != nil {
			return layerdelta.Blob{}, fmt.Errorf("artifact manifest %s: %w", desc.Digest, err)
		}
		listed, err := d.listed(repo, subject, desc.Digest)
		if err != nil {
			return layerdelta.Blob{}, fmt.Errorf("artifact manifest %s: list the referrers of %s: %w", desc.Digest, subject.Digest, err)
		}
		if listed || !d.tagSchema(repo, subject) {
			// Listed, or the registry keeps the list itself (the
			// referrers API), however late it shows it.
			break
		}
		if attempt == maxListAttempts {
			return layerdelta.Blob{}, fmt.Errorf("artifact manifest %s: pushed, but the referrers of %s do not list it after %d attempts (other pushes for the same image at the same time?)", desc.Digest, subject.Digest, attempt)
		}
		time.Sleep(time.Duration(rand.Int64N(int64(attempt) * int64(200*time.Millisecond))))
	}
	return layerdelta.Blob{Digest: desc.Digest, Size: desc.Size}, nil
}

// maxListAttempts bounds the pushes of one artifact manifest that concurrent
// pushes may undo (see push).
const maxListAttempts = 5

// tagSchema reports whether subject's referrers are kept in the tag
// schema's index (tag sha256-<hex>): the registry has no referrers API.
func (d *differ) tagSchema(repo name.Repository, subject v1.Descriptor) bool {
	_, err := remote.Head(repo.Tag(strings.Replace(subject.Digest.String(), ":", "-", 1)), d.c.opts...)
	return err == nil
}

// listed reports whether the referrers of subject in repo (the API, or the
// tag schema's index) list manifest d.
func (d *differ) listed(repo name.Repository, subject v1.Descriptor, dg digest.Digest) (bool, error) {
	b, err := d.c.referrers(d.c.ctx, repo.Digest(subject.Digest.String()))
	if err != nil {
		return false, err
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(im.Manifests, func(m v1.Descriptor) bool { return m.Digest.String() == dg.String() }), nil
}

// rawManifest is a manifest to put as it is.
type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// fileLayer is a delta file as a blob to upload (a v1.Layer).
type fileLayer struct {
	f    io.ReaderAt
	blob layerdelta.Blob
	prog *progress
}

var _ v1.Layer = (*fileLayer)(nil)

func (l *fileLayer) Digest() (v1.Hash, error) { return v1.NewHash(l.blob.Digest.String()) }
func (l *fileLayer) DiffID() (v1.Hash, error) { return l.Digest() }
func (l *fileLayer) Size() (int64, error)     { return l.blob.Size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) {
	return types.MediaType(delta.MediaType), nil
}

func (l *fileLayer) Compressed() (io.ReadCloser, error) {
	r := io.NewSectionReader(l.f, 0, l.blob.Size)
	return io.NopCloser(l.prog.reader(r, "push "+shortDigest(l.blob.Digest), l.blob.Size)), nil
}

func (l *fileLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }

// write writes the delta of res to --output-dir as <hex>.delta, with its
// descriptor (layerdelta.Layer.Descriptor) as <hex>.json.
func (d *differ) write(res layerdelta.Result) (deltaFiles, error) {
	l := res.Layer
	if files, ok := d.written[l.Delta.Digest]; ok {
		return files, nil
	}
	desc, err := l.Descriptor()
	if err != nil {
		return deltaFiles{}, err
	}
	js, err := json.MarshalIndent(desc, "", "  ")
	if err != nil {
		return deltaFiles{}, err
	}
	base := filepath.Join(d.o.outputDir, l.Delta.Digest.Encoded())
	files := deltaFiles{Delta: base + ".delta", Descriptor: base + ".json"}
	err = writeFileAtomic(files.Delta, func(w io.Writer) error {
		_, err := io.Copy(w, io.NewSectionReader(res.File, 0, l.Delta.Size))
		return err
	})
	if err != nil {
		return deltaFiles{}, err
	}
	err = writeFileAtomic(files.Descriptor, func(w io.Writer) error {
		_, err := w.Write(append(js, '\n'))
		return err
	})
	if err != nil {
		return deltaFiles{}, err
	}
	d.written[l.Delta.Digest] = files
	return files, nil
}

// writeFileAtomic writes path through a temporary file in its directory,
// synced and renamed over path only when write succeeded: after a failure,
// nothing of it is left.
func writeFileAtomic(path string, write func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
