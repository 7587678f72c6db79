package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/indexwalk"
	"github.com/registry-edge/registry-edge/internal/layerdelta"
	"github.com/registry-edge/registry-edge/internal/stall"
	"github.com/registry-edge/registry-edge/internal/verify"
	"github.com/registry-edge/registry-edge/internal/version"
)

// client talks to registries through go-containerregistry, with the
// credentials of Docker's config.json (authn.DefaultKeychain, noted in
// creds if not nil).
type client struct {
	nameOpts []name.Option
	opts     []remote.Option
	ctx      context.Context
	refs     *referrersClient
	keychain authn.Keychain
	rt       http.RoundTripper
}

// newClient returns a client; insecure allows plain HTTP and TLS
// certificates that do not verify, as crane --insecure does. timeout bounds
// each wait for a registry: for the answer to a request, and for the next
// bytes of a body (a registry that accepts connections but answers nothing
// would otherwise hold deltactl forever).
func newClient(ctx context.Context, insecure bool, timeout time.Duration, creds *credentialLog) *client {
	t := remote.DefaultTransport.(*http.Transport).Clone()
	// Every wait is bounded by timeout, not only the answer's: the dial
	// and the TLS handshake (go-containerregistry's 30 s and 10 s) too.
	t.DialContext = (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = timeout
	t.ResponseHeaderTimeout = timeout
	var nameOpts []name.Option
	if insecure {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // what --insecure asks for
		nameOpts = append(nameOpts, name.Insecure)
	}
	var keychain authn.Keychain = authn.DefaultKeychain
	if creds != nil {
		keychain = creds
	}
	return &client{
		ctx:      ctx,
		keychain: keychain,
		rt:       stallTransport{t, timeout},
		refs:     &referrersClient{keychain: keychain, rt: stallTransport{t, timeout}},
		nameOpts: nameOpts,
		opts: []remote.Option{
			remote.WithContext(ctx),
			remote.WithAuthFromKeychain(keychain),
			remote.WithTransport(stallTransport{t, timeout}),
			remote.WithUserAgent("deltactl/" + version.String()),
		},
	}
}

// checkPush reports whether the credentials may push to ref's repository:
// it starts a blob upload there (and cancels it), as crane does before a
// copy, so that a diff --push without the right fails before it fetches
// and computes anything.
func (c *client) checkPush(ref name.Reference) error {
	return remote.CheckPushPermission(ref, c.keychain, c.rt)
}

// stallTransport fails a response body that sends no bytes for limit.
type stallTransport struct {
	http.RoundTripper
	limit time.Duration
}

func (t stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.RoundTripper.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = stall.NewReader(resp.Body, t.limit)
	if resp.StatusCode >= http.StatusBadRequest {
		shortenErrorPage(resp)
	}
	return resp, nil
}

// An error answer's body is quoted in the reason on stderr by
// go-containerregistry: the messages of an OCI error envelope (JSON), or
// else the whole body, up to 64 KiB. A proxy or load balancer in front of a
// registry answers with an HTML page, whose first lines say enough.
const (
	maxErrorBody = 64 << 10 // go-containerregistry's limit too
	maxErrorPage = 256      // what is kept of a body that is not JSON
)

// shortenErrorPage cuts the body of the error answer resp to maxErrorPage
// bytes, "..." marking the cut, unless it is JSON.
func shortenErrorPage(resp *http.Response) {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody)) // an error on the way ends the body
	resp.Body.Close()
	switch {
	case json.Valid(b):
		b = detailsAsJSON(b)
	case len(b) > maxErrorPage:
		b = append([]byte(strings.ToValidUTF8(string(b[:maxErrorPage]), "")), "..."...)
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
}

// detailsAsJSON returns the OCI error envelope b with each error's detail
// made a string of its JSON: go-containerregistry quotes a detail with
// Go's %v, which prints the JSON object a registry sends (distribution's
// access list of a 401 or 403) as "[map[Action:pull Name:...]]". Anything
// else comes back as it is.
func detailsAsJSON(b []byte) []byte {
	var env struct {
		Errors []map[string]json.RawMessage `json:"errors"`
	}
	if json.Unmarshal(b, &env) != nil || len(env.Errors) == 0 {
		return b
	}
	changed := false
	for _, e := range env.Errors {
		d, ok := e["detail"]
		if !ok || len(d) == 0 || d[0] == '"' || string(d) == "null" {
			continue
		}
		var compact bytes.Buffer
		if json.Compact(&compact, d) != nil {
			continue
		}
		s, err := json.Marshal(compact.String())
		if err != nil {
			continue
		}
		e["detail"], changed = s, true
	}
	if !changed {
		return b
	}
	out, err := json.Marshal(env)
	if err != nil {
		return b
	}
	return out
}

// parseRef parses an image reference ([registry/]repo[:tag|@digest]).
func (c *client) parseRef(s string) (name.Reference, error) {
	if scheme, _, ok := strings.Cut(s, "://"); ok && !strings.ContainsAny(scheme, "/:@") {
		// A URL pasted for an image: go-containerregistry's reason names
		// its Go API (name.Insecure), and s may hold user:password.
		return nil, fmt.Errorf("an image reference has no URL scheme (%s://): write [registry/]repository[:tag|@digest] (--insecure allows plain HTTP)", scheme)
	}
	ref, err := name.ParseReference(s, c.nameOpts...)
	if err == nil {
		return ref, nil
	}
	// go-containerregistry's reason ("could not parse reference: s")
	// names the reference, not what is wrong with it; parsed as what it
	// looks like (a digest or a tag reference) it says what.
	var why error
	if strings.Contains(s, "@") {
		_, why = name.NewDigest(s, c.nameOpts...)
	} else {
		_, why = name.NewTag(s, c.nameOpts...)
	}
	if why == nil {
		return nil, err
	}
	return nil, fmt.Errorf("could not parse reference %q: %w", s, why)
}

// image is a resolved image reference: what it names (an index or an image
// manifest) and its platform manifests.
type image struct {
	ref   name.Reference
	desc  v1.Descriptor
	index bool
	// manifests are the image manifests: the index's and those of the
	// indexes nested in it, in the order they are listed, depth first
	// (attestations left out), each once however often it is listed, or
	// the one manifest the reference names.
	manifests []platformManifest
	// indexes are the index and those nested in it, in the order they
	// were read; none for an image manifest.
	indexes []nestedIndex
}

// nestedIndex is an index read for an image.
type nestedIndex struct {
	desc ocispec.Descriptor
	body []byte
	path []digest.Digest // the indexes above it, the top one first
}

// nestedIndex returns the index d among those read for img, or nil.
func (img *image) nestedIndex(d digest.Digest) *nestedIndex {
	for i := range img.indexes {
		if img.indexes[i].desc.Digest == d {
			return &img.indexes[i]
		}
	}
	return nil
}

// platformManifest is one image manifest of an image, for one platform.
type platformManifest struct {
	platform v1.Platform
	desc     v1.Descriptor // media type, digest and size only
	manifest *v1.Manifest
	// path is the indexes that lead to its first listing, the top one
	// first and the one that lists it last; none for an image manifest
	// named by the reference.
	path []digest.Digest
	// alsoVia is the paths to its later listings, if any: a pipeline that
	// lists one manifest in two nested indexes (or twice in one), so that
	// verify can tell the indexes that list it and their coverage.
	alsoVia [][]digest.Digest
}

// paths returns pm's path and those of its later listings.
func (pm *platformManifest) paths() [][]digest.Digest {
	if pm.path == nil {
		return nil
	}
	return append([][]digest.Digest{pm.path}, pm.alsoVia...)
}

// repo returns the repository of the image.
func (img *image) repo() name.Repository { return img.ref.Context() }

// resolve fetches what ref names and, for an index, its image manifests.
func (c *client) resolve(ref name.Reference) (*image, error) {
	d, err := remote.Get(ref, c.opts...)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	img := &image{ref: ref, desc: bare(d.Descriptor)}
	switch d.MediaType {
	case types.OCIImageIndex, types.DockerManifestList:
		img.index = true
		onIndex := func(ix indexwalk.Index) error {
			img.indexes = append(img.indexes, nestedIndex{desc: ix.Descriptor, body: ix.Body, path: ix.Path})
			return nil
		}
		onEntry := func(e indexwalk.Entry) error {
			child, err := v1Descriptor(e.Descriptor)
			if err != nil {
				return err
			}
			if !isImageManifest(child.MediaType) || isAttestation(child) {
				return nil
			}
			// A manifest listed again is the same image: one row in
			// diff, plan, inspect and verify, one delta pushed, its
			// bytes counted once. It keeps its first listing's platform
			// (depth first); a later listing's other platform is ignored.
			if i := slices.IndexFunc(img.manifests, func(pm platformManifest) bool { return pm.desc.Digest == child.Digest }); i >= 0 {
				img.manifests[i].alsoVia = append(img.manifests[i].alsoVia, e.Path)
				return nil
			}
			pm, err := c.platformManifest(img.repo(), child, nil)
			if err != nil {
				return err
			}
			pm.path = e.Path
			img.manifests = append(img.manifests, pm)
			return nil
		}
		if err := indexwalk.Walk(c.ctx, ociDescriptor(img.desc), d.Manifest, c.fetchIndex(img.repo()), onIndex, onEntry); err != nil {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		if len(img.manifests) == 0 {
			return nil, fmt.Errorf("image %s: the index lists no image manifest", ref)
		}
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
		pm, err := c.platformManifest(img.repo(), img.desc, d)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		img.manifests = []platformManifest{pm}
	default:
		return nil, fmt.Errorf("image %s: media type %q is not an image manifest or index", ref, d.MediaType)
	}
	return img, nil
}

// platformManifest reads the image manifest desc names (d, if it was
// fetched already); its platform comes from desc, or else from the image's
// config.
func (c *client) platformManifest(repo name.Repository, desc v1.Descriptor, d *remote.Descriptor) (platformManifest, error) {
	if d == nil {
		var err error
		if d, err = remote.Get(repo.Digest(desc.Digest.String()), c.opts...); err != nil {
			return platformManifest{}, fmt.Errorf("manifest %s: %w", desc.Digest, err)
		}
	}
	m, err := v1.ParseManifest(bytes.NewReader(d.Manifest))
	if err != nil {
		return platformManifest{}, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	pm := platformManifest{desc: bare(d.Descriptor), manifest: m}
	if desc.Platform != nil {
		pm.platform = *desc.Platform
		return pm, nil
	}
	im, err := d.Image()
	if err != nil {
		return platformManifest{}, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	cf, err := im.ConfigFile()
	if err != nil {
		return platformManifest{}, fmt.Errorf("manifest %s: config: %w", desc.Digest, err)
	}
	if p := cf.Platform(); p != nil {
		pm.platform = *p
	}
	return pm, nil
}

// fetchIndex returns the fetcher of repo's nested indexes.
func (c *client) fetchIndex(repo name.Repository) indexwalk.Fetcher {
	return func(_ context.Context, d ocispec.Descriptor) ([]byte, error) {
		md, err := remote.Get(repo.Digest(d.Digest.String()), c.opts...)
		if err != nil {
			return nil, err
		}
		if !md.MediaType.IsIndex() {
			return nil, fmt.Errorf("listed as an index, it is a %s", md.MediaType)
		}
		return md.Manifest, nil
	}
}

// v1Descriptor is d as go-containerregistry writes descriptors.
func v1Descriptor(d ocispec.Descriptor) (v1.Descriptor, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return v1.Descriptor{}, err
	}
	var out v1.Descriptor
	if err := json.Unmarshal(b, &out); err != nil {
		return v1.Descriptor{}, fmt.Errorf("descriptor %s: %w", d.Digest, err)
	}
	return out, nil
}

func isImageManifest(mt types.MediaType) bool {
	return mt == types.OCIManifestSchema1 || mt == types.DockerManifestSchema2
}

// isAttestation reports an index entry that is not a runnable image:
// BuildKit's attestation manifests (platform unknown/unknown).
func isAttestation(d v1.Descriptor) bool {
	if d.Annotations["vnd.docker.reference.type"] != "" {
		return true
	}
	return d.Platform != nil && d.Platform.OS == "unknown"
}

// bare keeps a descriptor's media type, digest and size.
func bare(d v1.Descriptor) v1.Descriptor {
	return v1.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}
}

// selectPlatforms returns the manifests of img for the platforms asked
// (all of them when none is), in img's order whatever the order asked; a
// platform that none matches is an error.
func (img *image) selectPlatforms(want platformList) ([]platformManifest, error) {
	if len(want) == 0 {
		return img.manifests, nil
	}
	for _, w := range want {
		if !slices.ContainsFunc(img.manifests, func(pm platformManifest) bool { return platformSatisfies(pm.platform, w) }) {
			return nil, fmt.Errorf("image %s has no platform %s (it has %s)", img.ref, platformString(w), img.platformNames())
		}
	}
	var out []platformManifest
	for _, pm := range img.manifests {
		if slices.ContainsFunc(want, func(w v1.Platform) bool { return platformSatisfies(pm.platform, w) }) {
			out = append(out, pm)
		}
	}
	return out, nil
}

func (img *image) platformNames() string {
	var s []string
	for _, pm := range img.manifests {
		s = append(s, platformString(pm.platform))
	}
	return strings.Join(s, ", ")
}

// counterpart returns the manifest of old for pm's platform (a manifest of
// img), or nil. Two single-manifest images are each other's counterpart
// whatever their configs say: the user named both.
//
// A Windows manifest's counterpart is of the same Windows build (os.version
// without its monthly revision: 10.0.17763 for 10.0.17763.5820): an index
// holds one image per build (ltsc2019, ltsc2022) for windows/amd64, and a
// site of one build holds no layer of the other. One whose os.version is
// not named matches any build.
func (old *image) counterpart(img *image, pm platformManifest) *platformManifest {
	for i := range old.manifests {
		if platformKey(old.manifests[i].platform) == platformKey(pm.platform) &&
			windowsBuild(old.manifests[i].platform) == windowsBuild(pm.platform) {
			return &old.manifests[i]
		}
	}
	for i := range old.manifests {
		if platformKey(old.manifests[i].platform) == platformKey(pm.platform) &&
			(windowsBuild(old.manifests[i].platform) == "" || windowsBuild(pm.platform) == "") {
			return &old.manifests[i]
		}
	}
	if !old.index && !img.index {
		return &old.manifests[0]
	}
	return nil
}

// platformKey is a platform as os/arch[/variant], with the variants that
// mean the default architecture version left out (arm64/v8, amd64/v1).
func platformKey(p v1.Platform) string {
	return platformString(v1.Platform{OS: p.OS, Architecture: p.Architecture, Variant: normalVariant(p)})
}

// windowsBuild is the Windows build of p (the first three parts of its
// os.version), or "".
func windowsBuild(p v1.Platform) string {
	if p.OS != "windows" || p.OSVersion == "" {
		return ""
	}
	parts := strings.SplitN(p.OSVersion, ".", 4)
	return strings.Join(parts[:min(3, len(parts))], ".")
}

func normalVariant(p v1.Platform) string {
	switch {
	case p.Architecture == "arm64" && p.Variant == "v8", p.Architecture == "amd64" && p.Variant == "v1":
		return ""
	}
	return p.Variant
}

// platformSatisfies reports whether have is the platform spec asks for: same
// os and architecture, and the same variant if spec names one.
func platformSatisfies(have, spec v1.Platform) bool {
	return have.OS == spec.OS && have.Architecture == spec.Architecture &&
		(spec.Variant == "" || normalVariant(have) == normalVariant(spec))
}

// platformString is os/arch[/variant], or "unknown" for an image whose
// config names no platform; an os.version is written as containerd does,
// os(version)/arch: an index of Windows images has one windows/amd64 per
// Windows build.
func platformString(p v1.Platform) string {
	if p.OS == "" && p.Architecture == "" {
		return "unknown"
	}
	s := p.OS + "/" + p.Architecture
	if p.OSVersion != "" {
		s = p.OS + "(" + p.OSVersion + ")/" + p.Architecture
	}
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// --- blobs -----------------------------------------------------------------

// blobFiles holds the blobs fetched for one command in temporary files,
// each verified against its digest and size before use.
type blobFiles struct {
	c     *client
	dir   string
	prog  *progress
	files map[digest.Digest]*os.File
}

func newBlobFiles(c *client, dir string, prog *progress) *blobFiles {
	return &blobFiles{c: c, dir: dir, prog: prog, files: map[digest.Digest]*os.File{}}
}

// open returns blob b of repo, fetching it the first time.
func (bf *blobFiles) open(repo name.Repository, b layerdelta.Blob) (layerdelta.Content, error) {
	if f, ok := bf.files[b.Digest]; ok {
		return layerdelta.Content{Blob: b, R: f}, nil
	}
	f, err := bf.fetch(repo, b)
	if err != nil {
		return layerdelta.Content{}, fmt.Errorf("blob %s@%s: %w", repo, b.Digest, err)
	}
	bf.files[b.Digest] = f
	return layerdelta.Content{Blob: b, R: f}, nil
}

func (bf *blobFiles) fetch(repo name.Repository, b layerdelta.Blob) (_ *os.File, err error) {
	l, err := remote.Layer(repo.Digest(b.Digest.String()), bf.c.opts...)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	vr, err := verify.NewReader(rc, b.Digest, b.Size)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(bf.dir, "deltactl-blob-*")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	label := "fetch " + shortDigest(b.Digest)
	defer bf.prog.clear() // a failure too: its reason starts a line of its own
	if _, err := io.Copy(f, bf.prog.reader(vr, label, b.Size)); err != nil {
		return nil, err
	}
	return f, nil
}

// release removes the file of blob d, if it was fetched.
func (bf *blobFiles) release(d digest.Digest) {
	if f, ok := bf.files[d]; ok {
		f.Close()
		os.Remove(f.Name())
		delete(bf.files, d)
	}
}

// removeAll removes every fetched blob.
func (bf *blobFiles) removeAll() {
	for d := range bf.files {
		bf.release(d)
	}
}

// --- published deltas ----------------------------------------------------------

// artifact is a delta artifact published for an image manifest.
type artifact struct {
	desc   v1.Descriptor
	parsed layerdelta.Artifact
	// err says why the artifact is not usable (malformed, or attached to
	// another manifest); parsed is then empty.
	err error
}

// emptyJSONType is the artifact type that registries which do not read a
// manifest's artifactType (go-containerregistry's pkg/registry) report for
// an artifact with an empty config.
const emptyJSONType = ocispec.MediaTypeEmptyJSON

// deltaArtifacts lists the delta artifacts whose subject is the manifest
// subject of repo: its referrers (the referrers API, or the tag schema on
// registries without it) of artifact type layerdelta.ArtifactType.
func (c *client) deltaArtifacts(repo name.Repository, subject v1.Descriptor) ([]artifact, error) {
	b, err := c.referrers(c.ctx, repo.Digest(subject.Digest.String()))
	if err != nil {
		return nil, fmt.Errorf("referrers of %s@%s: %w", repo, subject.Digest, err)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("referrers of %s@%s: %w", repo, subject.Digest, err)
	}
	var out []artifact
	for _, d := range im.Manifests {
		switch {
		case d.ArtifactType == layerdelta.ArtifactType:
		case (d.ArtifactType == "" || d.ArtifactType == emptyJSONType) && d.Annotations[layerdelta.AnnotationTo] != "":
			// A registry that reports the config's media type: the
			// annotation that layerdelta.Manifest sets says what it is.
		default:
			continue
		}
		a := artifact{desc: bare(d)}
		md, err := remote.Get(repo.Digest(d.Digest.String()), c.opts...)
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
			// Deleted, but still listed: the referrers tag of a registry
			// without the API is not cleaned up. Unusable, as for a site.
			a.err = fmt.Errorf("the artifact manifest is gone (%s)", te.Error())
			out = append(out, a)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("delta artifact %s@%s: %w", repo, d.Digest, err)
		}
		a.parsed, a.err = layerdelta.ParseManifest(md.Manifest)
		switch {
		case errors.Is(a.err, layerdelta.ErrNotDeltaArtifact):
			continue
		case a.err == nil && a.parsed.Subject.Digest.String() != subject.Digest.String():
			a.parsed, a.err = layerdelta.Artifact{}, fmt.Errorf("its subject is %s, not %s", a.parsed.Subject.Digest, subject.Digest)
		}
		out = append(out, a)
	}
	return out, nil
}

// --- conversions -------------------------------------------------------------

func blobOf(d v1.Descriptor) layerdelta.Blob {
	return layerdelta.Blob{Digest: digest.Digest(d.Digest.String()), Size: d.Size}
}

func ociDescriptor(d v1.Descriptor) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: string(d.MediaType), Digest: digest.Digest(d.Digest.String()), Size: d.Size}
}
