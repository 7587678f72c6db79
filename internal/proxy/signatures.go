package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/delta"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/ociapi"
	"github.com/registry-edge/registry-edge/internal/sigpolicy"
)

// negativeVerdictTTL is how long a failed verification is remembered
// before the signatures are looked for again (a signature may be pushed
// after the image).
const negativeVerdictTTL = time.Minute

// checkManifest applies the signature policy to manifest ref of t about to
// be served (ADR 0011). Under enforce, a runnable manifest without a valid
// signature is refused with 403 DENIED naming the rule and the reason;
// under warn it is served, logged and counted. A verified index covers its
// children; a verified image covers its config and layers, which are then
// the only blobs of the repository served under enforce. Evidence
// (signatures, attestations, SBOMs, delta artifacts: see manifestContent)
// is served without a signature of its own, and covers its blobs only when
// it is about a manifest trusted under the rule.
func (p *Proxy) checkManifest(ctx context.Context, t Target, ref string, res ManifestResult) error {
	pol := p.opts.Policy
	if pol == nil {
		return nil
	}
	m := pol.Match(t.Remote.Name, t.Repo.Name)
	if m.Mode == sigpolicy.ModeOff {
		return nil
	}
	d := res.Descriptor.Digest
	// The hot path: a manifest verified (or served as evidence of one)
	// before under this rule revision costs a map lookup.
	key := verifiedKey(m, meta.TrustManifest)
	if p.verified.has(d, key) {
		p.m.Signatures.Cache.WithLabelValues("hit").Inc()
		return nil
	}
	if p.verified.has(d, verifiedKey(m, trustEvidence)) {
		return nil // evidence judged before: no verdict is looked up for it
	}
	c := manifestContent(res.Body)
	if c.index && ociapi.TagSchemaSubject(ref) != "" {
		// The OCI tag schema's listing of a manifest's referrers, read
		// by registry copies (crane copy --all-tags, skopeo sync): served
		// as the list it is. It vouches for nothing: each manifest it
		// lists is checked when asked for, and it is never trusted, so
		// it cannot serve as a verified index either.
		return nil
	}
	if c.evidence {
		// Evidence runs nothing: it is served unsigned, once its blobs
		// show that it is what its labels say. What it lists is content,
		// never a manifest, and trusted only when it is about something
		// already trusted: an artifact anyone can push must not make its
		// blobs servable.
		about := c.subject
		if about == "" {
			about = ociapi.CosignTagSubject(ref)
		}
		ok, err := p.evidenceBlobs(ctx, t, c)
		if err != nil {
			return p.cannotVerify(ctx, t, m, d, err)
		}
		if ok {
			if about == "" || !p.trustedManifest(ctx, m, about) {
				return nil
			}
			if err := p.db.Trust(ctx, m.Rule, m.Revision, d, nil, c.blobs); err != nil {
				return err
			}
			p.verified.add(d, verifiedKey(m, trustEvidence))
			return nil
		}
		// A blob that is no evidence: an image under evidence's labels,
		// verified as one.
	}
	v, err := p.verdict(ctx, t, m, d)
	if err != nil {
		return p.cannotVerify(ctx, t, m, d, err)
	}
	if v.OK {
		if err := p.db.Trust(ctx, m.Rule, m.Revision, d, c.children, c.blobs); err != nil {
			return err
		}
		p.verified.add(d, key)
		if et, err := p.evidenceTarget(t, m); err == nil {
			p.storeEvidence(ctx, et, d)
		}
		return nil
	}
	log := p.log.With(slog.String("repo", t.Repo.Name), slog.String("digest", d.String()), slog.String("rule", m.Rule), slog.String("reason", v.Reason))
	if m.Mode == sigpolicy.ModeWarn {
		p.m.Signatures.Warnings.WithLabelValues(m.Rule).Inc()
		log.LogAttrs(ctx, slog.LevelWarn, "manifest without a valid signature served (warn)", slog.String("message", v.Message))
		return nil
	}
	p.m.Signatures.Denials.WithLabelValues(m.Rule, "manifest").Inc()
	log.LogAttrs(ctx, slog.LevelWarn, "manifest denied by the signature policy", slog.String("message", v.Message))
	return ociapi.NewError(http.StatusForbidden, ociapi.CodeDenied, v.Message)
}

// cannotVerify answers a manifest whose signatures (or evidence) could not
// be checked: served with a warning under warn, refused under enforce.
func (p *Proxy) cannotVerify(ctx context.Context, t Target, m sigpolicy.Match, d digest.Digest, err error) error {
	if m.Mode == sigpolicy.ModeWarn {
		p.log.LogAttrs(ctx, slog.LevelWarn, "cannot verify the signature; serving (warn)", slog.String("repo", t.Repo.Name),
			slog.String("digest", d.String()), slog.String("rule", m.Rule), slog.Any("err", err))
		p.m.Signatures.Warnings.WithLabelValues(m.Rule).Inc()
		return nil
	}
	p.m.Signatures.Denials.WithLabelValues(m.Rule, "unverifiable").Inc()
	p.log.LogAttrs(ctx, slog.LevelWarn, "manifest denied: its signatures cannot be verified", slog.String("repo", t.Repo.Name),
		slog.String("digest", d.String()), slog.String("rule", m.Rule), slog.Any("err", err))
	// 403, not 5xx: a device must not take the mirror's failure as a
	// reason to pull the image from elsewhere.
	return ociapi.NewError(http.StatusForbidden, ociapi.CodeDenied,
		fmt.Sprintf("signature rule %q (%s): cannot verify: %s", m.Rule, m.Mode, unverifiableReason(err)))
}

// trustedManifest reports whether manifest d is trusted under m: served
// under the rule revision before, verified, or covered by a verified index.
// It verifies nothing itself.
func (p *Proxy) trustedManifest(ctx context.Context, m sigpolicy.Match, d digest.Digest) bool {
	if p.verified.has(d, verifiedKey(m, meta.TrustManifest)) || p.verified.has(d, verifiedKey(m, trustEvidence)) {
		return true
	}
	if v, err := p.db.Verdict(ctx, m.Rule, m.Revision, d, ""); err == nil && v.OK {
		return true
	}
	ok, err := p.db.Trusted(ctx, m.Rule, m.Revision, meta.TrustManifest, d)
	return err == nil && ok
}

// verdict returns the verdict of manifest d under m: recorded (a positive
// one for as long as the rule's revision holds, in any repository), covered
// by a verified index, recorded negative (for negativeVerdictTTL, in the
// repository it was made for), or verified now. When
// the signatures cannot be fetched, the last verdict recorded is used,
// however old: verification must keep working with the uplink down.
func (p *Proxy) verdict(ctx context.Context, t Target, m sigpolicy.Match, d digest.Digest) (meta.Verdict, error) {
	repo := t.Remote.Name + "/" + t.Repo.Name
	rec, recErr := p.db.Verdict(ctx, m.Rule, m.Revision, d, repo)
	if recErr == nil && rec.OK {
		p.m.Signatures.Cache.WithLabelValues("hit").Inc()
		return rec, nil
	}
	// Before a negative verdict: a platform manifest refused on its own
	// is served once a verified index lists it.
	if ok, err := p.db.Trusted(ctx, m.Rule, m.Revision, meta.TrustManifest, d); err == nil && ok {
		p.m.Signatures.Cache.WithLabelValues("hit").Inc()
		return meta.Verdict{OK: true, Reason: string(sigpolicy.ReasonVerified), Message: "covered by a verified index", At: p.now()}, nil
	}
	if recErr == nil && p.within(rec.At, negativeVerdictTTL) {
		p.m.Signatures.Cache.WithLabelValues("hit").Inc()
		return rec, nil
	}
	p.m.Signatures.Cache.WithLabelValues("miss").Inc()
	// Devices pulling a new image at once share one verification (and
	// its upstream requests), detached from the first one's disconnect.
	got, err, _ := p.verifying.Do(m.Rule+"\x00"+m.Revision+"\x00"+repo+"\x00"+string(d), func() (any, error) {
		vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), verifyTimeout)
		defer cancel()
		stop := context.AfterFunc(p.closing, cancel)
		defer stop()
		return p.verifyNow(vctx, t, m, d, repo)
	})
	if err != nil {
		if recErr == nil {
			return rec, nil
		}
		return meta.Verdict{}, err
	}
	return got.(meta.Verdict), nil
}

// evidenceTarget returns where the signatures and other evidence of t's
// manifests are under m: t itself, or the rule's signature repository
// (signed with COSIGN_REPOSITORY), where they are looked up, cached and
// served, through that repository's upstream.
func (p *Proxy) evidenceTarget(t Target, m sigpolicy.Match) (Target, error) {
	if m.SignatureRepository == "" {
		return t, nil
	}
	st, err := p.router.Route(m.SignatureRepository, "")
	if err != nil {
		return Target{}, fmt.Errorf("signature repository %s of rule %q: %w", m.SignatureRepository, m.Rule, err)
	}
	return st, nil
}

// verifyTimeout bounds one verification, signatures' fetches included.
const verifyTimeout = 2 * time.Minute

// verifyNow verifies manifest d of t under m and records the verdict.
func (p *Proxy) verifyNow(ctx context.Context, t Target, m sigpolicy.Match, d digest.Digest, repo string) (meta.Verdict, error) {
	start := time.Now()
	st, err := p.evidenceTarget(t, m)
	if err != nil {
		return meta.Verdict{}, err
	}
	v, err := p.opts.Policy.Verify(ctx, sigSource{p: p, t: st}, t.Remote.Name, t.Repo.Name, d)
	p.m.Signatures.Duration.Observe(time.Since(start).Seconds())
	if err != nil {
		p.m.Signatures.Verifications.WithLabelValues(m.Rule, "error").Inc()
		return meta.Verdict{}, err
	}
	p.m.Signatures.Verifications.WithLabelValues(m.Rule, string(v.Reason)).Inc()
	if !v.OK && v.Detail != "" {
		p.log.LogAttrs(ctx, slog.LevelInfo, "signature verification failed", slog.String("repo", t.Repo.Name),
			slog.String("digest", d.String()), slog.String("rule", m.Rule), slog.String("detail", v.Detail))
	} else if v.OK {
		p.log.LogAttrs(ctx, slog.LevelInfo, "signature verified", slog.String("repo", t.Repo.Name),
			slog.String("digest", d.String()), slog.String("rule", m.Rule), slog.String("signer", v.Signer), slog.String("signature", v.Signature))
	}
	out := meta.Verdict{OK: v.OK, Reason: string(v.Reason), Message: v.Message, Signer: v.Signer, At: p.now(), Repo: repo}
	if err := p.db.PutVerdict(ctx, m.Rule, m.Revision, d, out); err != nil {
		return meta.Verdict{}, err
	}
	return out, nil
}

// Bounds of the evidence stored for a verified manifest.
const (
	maxEvidenceManifests = 16
	maxEvidenceStored    = 64 << 20
)

// Evidence returns the digests of the manifests that are evidence about
// manifest d of t: its OCI 1.1 referrers and cosign's sha256-<hex>.sig,
// .att and .sbom tag manifests that exist, fetched through the cache.
// With the upstream unreachable it returns what the cache answers for
// (a stored referrers list, cosign tags served stale) together with an
// error wrapping errdef.ErrUnavailable for what it could not look up: a
// cosign tag the mirror never stored, such as an .att that does not
// exist, must not hide the .sig it holds.
func (p *Proxy) Evidence(ctx context.Context, t Target, d digest.Digest) ([]digest.Digest, error) {
	var out []digest.Digest
	var unavailable []error
	body, _, err := p.Referrers(ctx, t, d, "")
	switch {
	case errors.Is(err, errdef.ErrUnavailable):
		unavailable = append(unavailable, fmt.Errorf("referrers of %s: %w", d, err))
	case err != nil && !errors.Is(err, errdef.ErrNotFound):
		return nil, fmt.Errorf("referrers of %s: %w", d, err)
	case err == nil:
		var idx ocispec.Index
		if err := json.Unmarshal(body, &idx); err != nil {
			return nil, fmt.Errorf("referrers of %s: %w: %w", d, errdef.ErrInvalid, err)
		}
		for _, m := range idx.Manifests {
			out = append(out, m.Digest)
		}
	}
	for _, suffix := range []string{".sig", ".att", ".sbom"} {
		tag := d.Algorithm().String() + "-" + d.Encoded() + suffix
		m, err := p.Manifest(ctx, t, tag)
		if errors.Is(err, errdef.ErrNotFound) {
			continue
		}
		if errors.Is(err, errdef.ErrUnavailable) {
			unavailable = append(unavailable, fmt.Errorf("%s: %w", tag, err))
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", tag, err)
		}
		if !slices.Contains(out, m.Descriptor.Digest) {
			out = append(out, m.Descriptor.Digest)
		}
	}
	return out, errors.Join(unavailable...)
}

// storeEvidence fetches and stores, in the background, the evidence of
// verified manifest d (see Evidence) with its blobs (each at most
// maxEvidenceBlob, together at most maxEvidenceStored), so that devices
// and admins can check it against the mirror with the uplink down.
func (p *Proxy) storeEvidence(ctx context.Context, t Target, d digest.Digest) {
	key := t.Remote.Name + "/" + t.Repo.Name + "@" + string(d)
	if _, running := p.storingEvidence.LoadOrStore(key, true); running {
		return // another request of the same image does it
	}
	if !p.startBackground() {
		p.storingEvidence.Delete(key)
		return
	}
	go func() {
		defer p.wg.Done()
		defer p.storingEvidence.Delete(key)
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		stop := context.AfterFunc(p.closing, cancel)
		defer stop()
		refs, err := p.Evidence(ctx, t, d)
		if err != nil {
			p.log.LogAttrs(ctx, slog.LevelDebug, "cannot list evidence", slog.String("digest", d.String()), slog.Any("err", err))
		}
		var total int64
		for i, ref := range refs {
			if i == maxEvidenceManifests {
				break
			}
			res, err := p.manifest(ctx, t, ref.String())
			if err != nil {
				continue
			}
			c := manifestContent(res.Body)
			if !c.evidence {
				continue // an artifact that is no evidence: not kept for it
			}
			for _, b := range c.blobs {
				size, _, err := p.statBlob(ctx, t, b)
				if err != nil || size > maxEvidenceBlob || total+size > maxEvidenceStored {
					continue
				}
				total += size
				if _, err := p.EnsureBlob(ctx, t, b); err != nil {
					p.log.LogAttrs(ctx, slog.LevelDebug, "cannot store evidence", slog.String("digest", b.String()), slog.Any("err", err))
				}
			}
		}
	}()
}

// unverifiableReason says, without upstream text, why signatures could not
// be checked.
func unverifiableReason(err error) string {
	switch {
	case errors.Is(err, errdef.ErrTooLarge):
		return "signature content too large"
	case errors.Is(err, errdef.ErrInvalid), errors.Is(err, errdef.ErrDigestMismatch), errors.Is(err, errdef.ErrSizeMismatch):
		return "malformed signature content"
	default:
		return "signatures unavailable (upstream unreachable or failing, and no recorded verdict)"
	}
}

// CheckBlob is checkBlob for the HTTP layer (delta negotiations).
func (p *Proxy) CheckBlob(ctx context.Context, t Target, d digest.Digest) error {
	return p.checkBlob(ctx, t, d)
}

// trustDelta makes delta blob dd trusted as content wherever its target
// is: a lower tier fetches it like a blob.
func (p *Proxy) trustDelta(ctx context.Context, t Target, target, dd digest.Digest) error {
	pol := p.opts.Policy
	if pol == nil {
		return nil
	}
	m := pol.Match(t.Remote.Name, t.Repo.Name)
	if m.Mode != sigpolicy.ModeEnforce {
		return nil
	}
	return p.db.Trust(ctx, m.Rule, m.Revision, target, nil, []digest.Digest{dd})
}

// checkBlob applies the signature policy to a blob a client asks for:
// under enforce, only blobs a verified manifest (or an artifact served as
// evidence) references are served.
func (p *Proxy) checkBlob(ctx context.Context, t Target, d digest.Digest) error {
	pol := p.opts.Policy
	if pol == nil {
		return nil
	}
	m := pol.Match(t.Remote.Name, t.Repo.Name)
	if m.Mode != sigpolicy.ModeEnforce {
		return nil
	}
	key := verifiedKey(m, meta.TrustBlob)
	if p.verified.has(d, key) {
		return nil // the hot path: a blob served before under this rule revision
	}
	ok, err := p.db.Trusted(ctx, m.Rule, m.Revision, meta.TrustBlob, d)
	if err != nil {
		return err
	}
	if ok {
		p.verified.add(d, key)
	} else {
		p.m.Signatures.Denials.WithLabelValues(m.Rule, "blob").Inc()
		return ociapi.NewError(http.StatusForbidden, ociapi.CodeDenied,
			fmt.Sprintf("signature policy %q: blob %s is not referenced by a verified manifest", m.Rule, d))
	}
	return nil
}

// trustEvidence is a kind of Proxy.verified only: evidence served about a
// manifest trusted under the rule. It is no verdict, so a hit on it is not
// counted as one (registry_edge_signature_verdict_cache_total).
const trustEvidence meta.TrustKind = "evidence"

// verifiedKey is a key of Proxy.verified: trusted as kind under m's rule
// revision.
func verifiedKey(m sigpolicy.Match, kind meta.TrustKind) string {
	return m.Rule + "\x00" + m.Revision + "\x00" + string(kind)
}

// trustCache holds, per digest, the verifiedKeys under which the content is
// known trusted. It is keyed by digest first so that evicted content leaves
// it (forget): a mirror running for months verifies many thousands of
// images, and the records it mirrors go with their content (meta.Forget),
// so an entry left here would also skip the recording of trust when the
// image is pulled again, and its blobs would be refused.
type trustCache struct {
	m sync.Map // digest.Digest -> *sync.Map of verifiedKey -> struct{}
}

func (c *trustCache) has(d digest.Digest, key string) bool {
	keys, ok := c.m.Load(d)
	if !ok {
		return false
	}
	_, ok = keys.(*sync.Map).Load(key)
	return ok
}

func (c *trustCache) add(d digest.Digest, key string) {
	keys, _ := c.m.LoadOrStore(d, new(sync.Map))
	keys.(*sync.Map).Store(key, struct{}{})
}

func (c *trustCache) forget(d digest.Digest) { c.m.Delete(d) }

// content is what a manifest references, and what it is to the policy.
type content struct {
	index    bool            // an index (it lists manifests)
	children []digest.Digest // an index's manifests
	blobs    []digest.Digest // config, layers and blobs
	// descs are the descriptors of blobs, with their media types (the
	// config's as "application/json" unless it is the empty descriptor).
	descs   []ocispec.Descriptor
	subject digest.Digest // the OCI 1.1 subject, if any
	// runnableConfig is set for a config other than the empty one: a
	// runtime unpacks the layers it names.
	runnableConfig bool
	// evidence is set for a manifest whose every layer is a signature, an
	// attestation, an SBOM or a delta (evidenceMediaType): it runs nothing.
	// Everything else (images, indexes, Helm charts, WebAssembly, unknown
	// artifacts) is verified: a runtime, a Helm or a Flux can run it.
	evidence bool
}

// manifestContent reads body as a manifest or an index.
func manifestContent(body []byte) content {
	var m struct {
		Config    *ocispec.Descriptor  `json:"config"`
		Layers    []ocispec.Descriptor `json:"layers"`
		Manifests []ocispec.Descriptor `json:"manifests"`
		Blobs     []ocispec.Descriptor `json:"blobs"`
		Subject   *ocispec.Descriptor  `json:"subject"`
	}
	var c content
	if json.Unmarshal(body, &m) != nil {
		return c // unreadable: not evidence, so verified
	}
	for _, d := range m.Manifests {
		c.children = append(c.children, d.Digest)
	}
	if m.Config != nil {
		c.blobs = append(c.blobs, m.Config.Digest)
		cfg := *m.Config
		c.runnableConfig = cfg.MediaType != ocispec.MediaTypeEmptyJSON || cfg.Digest != ocispec.DescriptorEmptyJSON.Digest
		if cfg.MediaType != ocispec.MediaTypeEmptyJSON {
			cfg.MediaType = "application/json" // any config is JSON
		}
		c.descs = append(c.descs, cfg)
	}
	if m.Subject != nil {
		c.subject = m.Subject.Digest
	}
	c.index = m.Manifests != nil
	// Evidence has something to say: a manifest with a config and no
	// layers is an image with an empty root file system, which a runtime
	// runs (whatever else it lists); an artifact manifest (OCI 1.1 rc) has
	// blobs and no config.
	c.evidence = !c.index && (len(m.Layers) > 0 || m.Config == nil && len(m.Blobs) > 0)
	for _, l := range append(m.Layers, m.Blobs...) {
		c.blobs = append(c.blobs, l.Digest)
		c.descs = append(c.descs, l)
		if !evidenceLayer(l) {
			c.evidence = false
		}
	}
	return c
}

// evidenceLayer reports whether l is a layer of a signature, an
// attestation, an SBOM or a delta: content no runtime, Helm or Flux runs.
// The OCI empty descriptor counts only as what it is (two bytes, "{}"): a
// runtime that unpacks any application/vnd.oci.* layer would run a tar
// labelled so.
func evidenceLayer(l ocispec.Descriptor) bool {
	if l.MediaType == ocispec.MediaTypeEmptyJSON {
		return l.Digest == ocispec.DescriptorEmptyJSON.Digest && l.Size == ocispec.DescriptorEmptyJSON.Size
	}
	return evidenceMediaType(l.MediaType)
}

// evidenceMediaType reports whether mt is the media type of a layer of a
// signature, an attestation, an SBOM or a delta.
func evidenceMediaType(mt string) bool {
	mt, _, _ = strings.Cut(mt, ";") // application/vnd.dev.sigstore.bundle+json;version=0.2
	switch strings.TrimSpace(mt) {
	case sigpolicy.SimpleSigningMediaType, // cosign signatures
		"application/vnd.dsse.envelope.v1+json",     // cosign attestations
		"application/vnd.in-toto+json",              // in-toto statements
		"application/vnd.dev.sigstore.bundle+json",  // sigstore bundles v0.1, v0.2
		sigpolicy.BundleArtifactType,                // sigstore bundles v0.3
		"application/jose+json", "application/cose", // notation signatures
		"text/spdx", "text/spdx+json", "application/spdx+json", // SBOMs
		"application/vnd.cyclonedx", "application/vnd.cyclonedx+json", "application/vnd.cyclonedx+xml",
		"application/vnd.syft+json",
		delta.MediaType:
		return true
	}
	return false
}

// sigSource gives the policy the signatures of t's repository through the
// cache: fetched with the image, stored, and served from the store when the
// upstream is down.
type sigSource struct {
	p *Proxy
	t Target
}

func (s sigSource) Manifest(ctx context.Context, _, ref string) ([]byte, error) {
	res, err := s.p.manifest(ctx, s.t, ref)
	if err != nil {
		return nil, err
	}
	return res.Body, nil
}

func (s sigSource) Referrers(ctx context.Context, _ string, subject digest.Digest) ([]byte, error) {
	body, _, err := s.p.referrers(ctx, s.t, subject)
	return body, err
}

// Blob reads a signature blob (a payload, a bundle): from the store, or
// with one bounded upstream GET, verified and then stored (and linked) so
// that it is served to devices and is there when the uplink is down.
func (s sigSource) Blob(ctx context.Context, _ string, d digest.Digest, maxSize int64) ([]byte, error) {
	p, t := s.p, s.t
	if ok, _ := p.linked(ctx, t, d); ok {
		if rc, err := p.store.Open(ctx, d); err == nil {
			defer rc.Close()
			return readAtMost(rc, d, maxSize)
		}
	}
	resp, err := t.Remote.Client.Blob(ctx, t.Repo.Name, d, 0, "")
	p.countUpstream(t, "blob", err)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.Size > maxSize {
		return nil, fmt.Errorf("blob %s: %d bytes, more than %d: %w", d, resp.Size, maxSize, errdef.ErrTooLarge)
	}
	b, err := readAtMost(resp.Body, d, maxSize)
	if err != nil {
		return nil, err
	}
	p.m.UpstreamBytes.WithLabelValues(t.Remote.Name).Add(float64(len(b)))
	if digest.FromBytes(b) != d {
		return nil, fmt.Errorf("blob %s from upstream: %w", d, errdef.ErrDigestMismatch)
	}
	release := p.evictions.hold(d)
	defer release()
	if err := p.store.Put(ctx, ocispec.Descriptor{Digest: d, Size: int64(len(b))}, bytes.NewReader(b)); err == nil {
		if err := p.db.Link(ctx, t.Repo, d); err != nil {
			return nil, err
		}
	} else {
		p.noteWriteError(ctx, err) // verified: usable even if it could not be cached
	}
	return b, nil
}

// readAtMost reads r to its end, failing past maxSize bytes.
func readAtMost(r io.Reader, d digest.Digest, maxSize int64) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(r, maxSize+1)); err != nil {
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	if int64(buf.Len()) > maxSize {
		return nil, fmt.Errorf("blob %s: more than %d bytes: %w", d, maxSize, errdef.ErrTooLarge)
	}
	return buf.Bytes(), nil
}

var _ sigpolicy.Source = sigSource{}
