package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/layerdelta"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/metrics"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// maxDeltaArtifacts bounds the delta artifacts read for one image manifest.
const maxDeltaArtifacts = 8

// tempDirer is a store that has room for temporary files (blobstore.FS).
type tempDirer interface{ TempDir() string }

// discoverDeltas looks, when an image manifest comes from upstream, for
// published deltas of its layers (referrers of artifact type
// layerdelta.ArtifactType) and records those that rebuild one of its layers,
// for the fills of those layers to find. It does nothing when every layer
// is stored or when no other image of the repository is, since then no
// delta could have a base here. Failures are logged, never returned: deltas
// are an optimisation.
func (p *Proxy) discoverDeltas(ctx context.Context, t Target, m upstream.Manifest) {
	if !p.opts.Deltas {
		return
	}
	var man ocispec.Manifest
	if json.Unmarshal(m.Body, &man) != nil || man.ArtifactType != "" || man.Config.MediaType == ocispec.MediaTypeEmptyJSON {
		return // not an image manifest, or an artifact (such as a delta artifact)
	}
	layers := map[digest.Digest]int64{}
	for _, l := range man.Layers {
		if _, err := p.store.Stat(ctx, l.Digest); err != nil {
			layers[l.Digest] = l.Size
		}
	}
	if len(layers) == 0 || !p.haveOtherImages(ctx, t, m.Descriptor.Digest) {
		return
	}
	log := p.log.With(slog.String("upstream", t.Remote.Name), slog.String("repo", t.Repo.Name), slog.String("manifest", m.Descriptor.Digest.String()))
	ctx, cancel := context.WithTimeout(ctx, p.opts.DeltaDiscoveryTimeout)
	defer cancel()
	body, _, err := p.Referrers(ctx, t, m.Descriptor.Digest, layerdelta.ArtifactType)
	if err != nil {
		log.LogAttrs(ctx, slog.LevelDebug, "no delta referrers", slog.Any("err", err))
		return
	}
	var idx ocispec.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		return
	}
	found := 0
	for i, desc := range idx.Manifests {
		if i == maxDeltaArtifacts {
			break
		}
		res, err := p.Manifest(ctx, t, desc.Digest.String())
		if err != nil {
			log.LogAttrs(ctx, slog.LevelWarn, "cannot fetch a delta artifact", slog.String("artifact", desc.Digest.String()), slog.Any("err", err))
			continue
		}
		a, err := layerdelta.ParseManifest(res.Body)
		if err != nil || a.Subject.Digest != m.Descriptor.Digest {
			log.LogAttrs(ctx, slog.LevelWarn, "ignoring a malformed delta artifact", slog.String("artifact", desc.Digest.String()), slog.Any("err", err))
			continue
		}
		for _, l := range a.Layers {
			if size, ok := layers[l.Target.Digest]; !ok || size != l.Target.Size {
				continue // a delta of a layer that is stored, or of no layer of this image
			}
			d, err := l.Descriptor()
			if err == nil {
				err = p.db.AddDelta(ctx, l.Target.Digest, meta.DeltaRecord{Repo: t.Repo, Descriptor: d})
			}
			if err != nil {
				log.LogAttrs(ctx, slog.LevelWarn, "cannot record a delta", slog.Any("err", err))
				continue
			}
			found++
		}
	}
	if found > 0 {
		log.LogAttrs(ctx, slog.LevelInfo, "found layer deltas", slog.Int("deltas", found))
	}
}

// haveOtherImages reports whether the store holds a manifest of t's
// repository other than d.
func (p *Proxy) haveOtherImages(ctx context.Context, t Target, d digest.Digest) bool {
	tags, err := p.db.Tags(ctx, t.Repo)
	if err != nil {
		return false
	}
	for _, tag := range tags {
		if e, err := p.db.Tag(ctx, t.Repo, tag); err == nil && e.Digest != d {
			return true
		}
	}
	return false
}

// fillFromDelta tries to rebuild f's layer from a recorded delta whose bases
// are stored: it fetches the delta (a blob fill of its own, resumable and
// cached), applies it into a fresh ingest and, if the result has the
// layer's digest and size, makes that ingest the fill's, with every byte
// written. It reports whether it did; on any failure the fill goes on with
// a full fetch, and nothing of the attempt remains.
func (p *Proxy) fillFromDelta(ctx context.Context, f *fill, log *slog.Logger) bool {
	if !p.opts.Deltas {
		return false
	}
	recs, err := p.db.Deltas(ctx, f.d)
	if err != nil || len(recs) == 0 {
		return false
	}
	var (
		best    layerdelta.Layer
		bestRec meta.DeltaRecord
		reason  = metrics.DeltaNoBase
	)
	for _, rec := range recs {
		l, err := layerdelta.ParseDescriptor(rec.Descriptor)
		if err != nil || l.Target.Digest != f.d || rec.Repo.Registry != f.target.Repo.Registry {
			continue
		}
		err = l.Usable(func(b layerdelta.Blob) bool {
			info, err := p.store.Stat(ctx, b.Digest)
			return err == nil && info.Size == b.Size
		})
		if errors.Is(err, errdef.ErrUnsupported) {
			reason = metrics.DeltaUnreproducible
		}
		if err != nil {
			log.LogAttrs(ctx, slog.LevelDebug, "delta not usable", slog.String("delta", l.Delta.Digest.String()), slog.Any("err", err))
			continue
		}
		if best.Delta.Digest == "" || l.Delta.Size < best.Delta.Size {
			best, bestRec = l, rec
		}
	}
	if best.Delta.Digest == "" {
		p.m.Deltas.Fills.WithLabelValues(reason).Inc()
		return false
	}
	log = log.With(slog.String("delta", best.Delta.Digest.String()))
	start := time.Now()
	ing, err := p.applyDelta(ctx, Target{Remote: f.target.Remote, Repo: bestRec.Repo}, best)
	if err != nil {
		p.m.Deltas.Fills.WithLabelValues(metrics.DeltaFailed).Inc()
		log.LogAttrs(ctx, slog.LevelWarn, "cannot rebuild the layer from its delta; fetching it in full", slog.Any("err", err))
		return false
	}
	// The fill's own ingest (a partial with no bytes) gives way.
	f.ing.Cancel()
	f.ing, f.part, f.etag = ing, nil, ""
	f.setSize(best.Target.Size)
	f.advance(best.Target.Size)
	p.m.Deltas.Fills.WithLabelValues(metrics.DeltaApplied).Inc()
	p.m.Deltas.FetchedBytes.Add(float64(best.Delta.Size))
	p.m.Deltas.FullBytes.Add(float64(best.Target.Size))
	log.LogAttrs(ctx, slog.LevelInfo, "layer rebuilt from a delta", slog.Int64("size", best.Target.Size),
		slog.Int64("delta_size", best.Delta.Size), slog.Duration("duration", time.Since(start)))
	return true
}

// applyDelta fetches delta l from t (through the cache) and rebuilds its
// target into a new ingest, which it returns verified and not committed.
func (p *Proxy) applyDelta(ctx context.Context, t Target, l layerdelta.Layer) (_ blobstore.Ingest, err error) {
	if _, err := p.EnsureBlob(ctx, t, l.Delta.Digest); err != nil {
		return nil, fmt.Errorf("fetch delta: %w", err)
	}
	start := time.Now()
	d, err := p.store.Open(ctx, l.Delta.Digest)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	var opened []io.Closer
	defer func() {
		for _, c := range opened {
			c.Close()
		}
	}()
	open := func(b layerdelta.Blob) (layerdelta.Content, error) {
		rc, err := p.store.Open(ctx, b.Digest)
		if err != nil {
			return layerdelta.Content{}, err
		}
		opened = append(opened, rc)
		ra, ok := rc.(io.ReaderAt)
		if !ok {
			return layerdelta.Content{}, fmt.Errorf("base %s: store gives no random access: %w", b.Digest, errdef.ErrUnsupported)
		}
		size, err := rc.Seek(0, io.SeekEnd)
		if err != nil {
			return layerdelta.Content{}, err
		}
		return layerdelta.Content{Blob: layerdelta.Blob{Digest: b.Digest, Size: size}, R: ra}, nil
	}
	ing, err := p.store.Ingest(ctx, l.Target.Digest)
	if err != nil {
		return nil, &localError{err}
	}
	defer func() {
		if err != nil {
			ing.Cancel()
		}
	}()
	tmp := os.TempDir()
	if td, ok := p.store.(tempDirer); ok {
		tmp = td.TempDir()
	}
	if err := layerdelta.Apply(ctx, ing, l, d, open, layerdelta.ApplyOptions{TempDir: tmp}); err != nil {
		return nil, err
	}
	if err := ing.Verify(l.Target.Size); err != nil {
		return nil, err
	}
	p.m.Deltas.RebuildDuration.Observe(time.Since(start).Seconds())
	return ing, nil
}
