package httpserve_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/delta"
	"github.com/registry-edge/registry-edge/internal/gc"
	"github.com/registry-edge/registry-edge/internal/proxy"
	"github.com/registry-edge/registry-edge/internal/sigpolicy"
	"github.com/registry-edge/registry-edge/internal/testutil/cosigntest"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
	"github.com/registry-edge/registry-edge/internal/testutil/layergen"
)

func withPolicy(t testing.TB, mode sigpolicy.Mode, keys ...*cosigntest.Key) mirrorOpt {
	t.Helper()
	rule := sigpolicy.RuleSpec{Name: "fleet", Repositories: []string{"central.test/**"}, Mode: mode}
	for _, k := range keys {
		rule.Keys = append(rule.Keys, k.PublicPEM)
	}
	pol, err := sigpolicy.New(sigpolicy.Spec{Rules: []sigpolicy.RuleSpec{rule}})
	if err != nil {
		t.Fatal(err)
	}
	return func(o *proxy.Options) { o.Policy = pol }
}

// sign pushes to the fake upstream, under cosign's signature tag, a
// signature of manifest d of app by k.
// It returns the digests of the signature's config and payload.
func sign(t *testing.T, m *mirror, k *cosigntest.Key, d digest.Digest) []digest.Digest {
	t.Helper()
	man, blobs := cosigntest.Parts(t, k.Sign(t, "central.test/app", d))
	var ds []digest.Digest
	for _, b := range blobs {
		desc := m.fake.AddBlob(b)
		m.fake.LinkBlob("app", desc.Digest)
		ds = append(ds, desc.Digest)
	}
	m.fake.AddManifest("app", cosigntest.SignatureTag(d), ocispec.MediaTypeImageManifest, man)
	return ds
}

// signedMirror is a mirror enforcing signatures by a new key, with app:signed
// (one layer, "signed layer") signed by it upstream and pulled once.
func signedMirror(t *testing.T) (*mirror, ocispec.Descriptor) {
	t.Helper()
	key := cosigntest.NewKey(t)
	m := newMirror(t, withPolicy(t, sigpolicy.ModeEnforce, key))
	signed, _ := m.fake.Image("app", "signed", []byte("signed layer"))
	sign(t, m, key, signed.Digest)
	pullImage(t, m, "signed", []byte("signed layer"))
	return m, signed
}

func deniedMessage(t *testing.T, resp *http.Response, body []byte) string {
	t.Helper()
	var env struct {
		Errors []struct{ Code, Message string }
	}
	if resp.StatusCode != http.StatusForbidden || json.Unmarshal(body, &env) != nil || len(env.Errors) != 1 || env.Errors[0].Code != "DENIED" {
		t.Fatalf("got %d %s, want 403 DENIED", resp.StatusCode, body)
	}
	return env.Errors[0].Message
}

// Under enforce, a signed image is served; an unsigned one, or one signed
// with another key, is refused with 403 DENIED naming the rule and the
// reason, and so are its blobs; the signature itself is served (evidence),
// and the verdicts keep working with the upstream gone.
func TestSignaturePolicyEnforce(t *testing.T) {
	t.Parallel()
	key, other := cosigntest.NewKey(t), cosigntest.NewKey(t)
	m := newMirror(t, withPolicy(t, sigpolicy.ModeEnforce, key))
	signedLayer, unsignedLayer, otherLayer := []byte("signed layer"), []byte("unsigned layer"), []byte("other key layer")
	signed, _ := m.fake.Image("app", "signed", signedLayer)
	m.fake.Image("app", "unsigned", unsignedLayer)
	wrong, _ := m.fake.Image("app", "wrong", otherLayer)
	sign(t, m, key, signed.Digest)
	sign(t, m, other, wrong.Digest)

	pullImage(t, m, "signed", signedLayer)
	resp, body := m.get(http.MethodGet, manifestPath("app", "unsigned"), "Accept", ocispec.MediaTypeImageManifest)
	if msg := deniedMessage(t, resp, body); !strings.Contains(msg, `"fleet"`) || !strings.Contains(msg, "no_signature") {
		t.Errorf("message %q does not name the rule and the reason", msg)
	}
	resp, body = m.get(http.MethodGet, manifestPath("app", "wrong"), "Accept", ocispec.MediaTypeImageManifest)
	if msg := deniedMessage(t, resp, body); !strings.Contains(msg, "wrong_key") {
		t.Errorf("message %q does not say wrong key", msg)
	}
	// Blobs of an image no verified manifest references are not served.
	for _, l := range [][]byte{unsignedLayer, otherLayer} {
		resp, body := m.get(http.MethodGet, blobPath("app", digest.FromBytes(l)))
		deniedMessage(t, resp, body)
		resp, _ = m.get(http.MethodHead, blobPath("app", digest.FromBytes(l)))
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("HEAD of an unverified blob: %d, want 403", resp.StatusCode)
		}
	}
	// The evidence is served, so that cosign verify works against the mirror.
	resp, sig := m.get(http.MethodGet, manifestPath("app", cosigntest.SignatureTag(signed.Digest)), "Accept", ocispec.MediaTypeImageManifest)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET signature: %d", resp.StatusCode)
	}
	var sm ocispec.Manifest
	if err := json.Unmarshal(sig, &sm); err != nil || len(sm.Layers) != 1 {
		t.Fatalf("signature manifest %s", sig)
	}
	if resp, _ := m.get(http.MethodGet, blobPath("app", sm.Layers[0].Digest)); resp.StatusCode != http.StatusOK {
		t.Errorf("GET signature payload: %d", resp.StatusCode)
	}
	if got := metricValue(t, m.metrics, "registry_edge_signature_denials_total", "rule", "fleet", "kind", "manifest"); got != 2 {
		t.Errorf("manifest denials = %v, want 2", got)
	}

	// Offline: the upstream is gone; the recorded verdicts still decide.
	m.upstream.Close()
	m.restart()
	resp, body = m.get(http.MethodGet, manifestPath("app", signed.Digest.String()), "Accept", ocispec.MediaTypeImageManifest)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("signed manifest offline: %d %s", resp.StatusCode, body)
	}
	resp, body = m.get(http.MethodGet, blobPath("app", digest.FromBytes(signedLayer)))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, signedLayer) {
		t.Errorf("signed layer offline: %d", resp.StatusCode)
	}
	resp, _ = m.get(http.MethodGet, manifestPath("app", wrong.Digest.String()), "Accept", ocispec.MediaTypeImageManifest)
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("manifest signed with another key, offline: %d, want 403", resp.StatusCode)
	}
}

// Under warn, an unsigned image is served; the failure is counted.
func TestSignaturePolicyWarn(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	m := newMirror(t, withPolicy(t, sigpolicy.ModeWarn, key))
	layer := []byte("unsigned layer")
	m.fake.Image("app", "unsigned", layer)
	pullImage(t, m, "unsigned", layer)
	if got := metricValue(t, m.metrics, "registry_edge_signature_warnings_total", "rule", "fleet"); got != 1 {
		t.Errorf("warnings = %v, want 1", got)
	}
}

// A signed index covers its children: a child pulled by digest is served
// without a signature of its own; the child of an unsigned index is not.
func TestSignedIndexCoversChildren(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	m := newMirror(t, withPolicy(t, sigpolicy.ModeEnforce, key))
	index := func(tag string, layer []byte) (ocispec.Descriptor, ocispec.Descriptor) {
		child, _ := m.fake.Image("app", "", layer)
		child.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
		idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{child}}
		idx.SchemaVersion = 2
		b, _ := json.Marshal(idx)
		return m.fake.AddManifest("app", tag, ocispec.MediaTypeImageIndex, b), child
	}
	signedIdx, signedChild := index("multi", []byte("child layer"))
	_, unsignedChild := index("unsigned-multi", []byte("other child layer"))
	sign(t, m, key, signedIdx.Digest)

	// A child asked for before its index is refused (no verified index
	// lists it yet), and served once the index is verified: the refusal
	// recorded for it does not outlive the index's verification.
	resp, body := m.get(http.MethodGet, manifestPath("app", signedChild.Digest.String()), "Accept", ocispec.MediaTypeImageManifest)
	deniedMessage(t, resp, body)
	for _, c := range []struct {
		ref  string
		want int
	}{
		{"multi", http.StatusOK},
		{signedChild.Digest.String(), http.StatusOK},
		{"unsigned-multi", http.StatusForbidden},
		{unsignedChild.Digest.String(), http.StatusForbidden},
	} {
		resp, body := m.get(http.MethodGet, manifestPath("app", c.ref), "Accept", ocispec.MediaTypeImageIndex+", "+ocispec.MediaTypeImageManifest)
		if resp.StatusCode != c.want {
			t.Errorf("GET %s: %d %s, want %d", c.ref, resp.StatusCode, body, c.want)
		}
	}
	resp, _ = m.get(http.MethodGet, blobPath("app", digest.FromBytes([]byte("child layer"))))
	if resp.StatusCode != http.StatusOK {
		t.Errorf("layer of a covered child: %d", resp.StatusCode)
	}
}

// A verified index covers an index nested in it, which covers its own
// children in turn; a signature on a nested index covers what is below it,
// not the index above it (deltactl verify reports the same: docs/deltactl.md).
func TestSignedIndexCoversNestedIndexes(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	m := newMirror(t, withPolicy(t, sigpolicy.ModeEnforce, key))
	index := func(tag string, children ...ocispec.Descriptor) ocispec.Descriptor {
		idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: children}
		idx.SchemaVersion = 2
		b, _ := json.Marshal(idx)
		return m.fake.AddManifest("app", tag, ocispec.MediaTypeImageIndex, b)
	}
	child := func(layer string) ocispec.Descriptor {
		d, _ := m.fake.Image("app", "", []byte(layer))
		d.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
		return d
	}
	topChild, innerChild := child("top's child"), child("inner's child")
	topInner := index("", topChild)
	top := index("top", topInner)
	inner := index("", innerChild)
	index("outer", inner)
	sign(t, m, key, top.Digest)
	sign(t, m, key, inner.Digest)

	for _, c := range []struct {
		ref  string
		want int
	}{
		{"top", http.StatusOK},
		{topInner.Digest.String(), http.StatusOK},
		{topChild.Digest.String(), http.StatusOK},
		{"outer", http.StatusForbidden},
		{inner.Digest.String(), http.StatusOK},
		{innerChild.Digest.String(), http.StatusOK},
	} {
		resp, body := m.get(http.MethodGet, manifestPath("app", c.ref), "Accept", ocispec.MediaTypeImageIndex+", "+ocispec.MediaTypeImageManifest)
		if resp.StatusCode != c.want {
			t.Errorf("GET %s: %d %s, want %d", c.ref, resp.StatusCode, body, c.want)
		}
	}
}

// Layers rebuilt from deltas are trusted only through the digest in a
// verified manifest: under enforce, a site rebuilds v2's layer from a
// published delta when v2 is signed; when v2 is not signed, neither its
// manifest nor its layer is served, delta or not.
func TestRebuiltLayersTrustedThroughVerifiedManifest(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	for _, signed := range []bool{true, false} {
		m := newMirror(t, withDeltas, withPolicy(t, sigpolicy.ModeEnforce, key))
		s := publishDelta(t, m, nil)
		v1, _ := m.fake.Image("app", "v1", s.old) // the same manifest publishDelta pushed
		sign(t, m, key, v1.Digest)
		if signed {
			sign(t, m, key, s.v2.Digest)
		}
		pullImage(t, m, "v1", s.old)
		if signed {
			pullImage(t, m, "v2", s.nw)
			if got := metricValue(t, m.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != 1 {
				t.Errorf("signed v2: applied deltas = %v, want 1", got)
			}
			continue
		}
		resp, body := m.get(http.MethodGet, manifestPath("app", "v2"), "Accept", ocispec.MediaTypeImageManifest)
		deniedMessage(t, resp, body)
		resp, body = m.get(http.MethodGet, blobPath("app", s.newLayer.Digest))
		deniedMessage(t, resp, body)
		if n := m.fake.Count(http.MethodGet, blobPath("app", s.l.Delta.Digest)); n != 0 {
			t.Errorf("unsigned v2: the delta was fetched %d times", n)
		}
	}
}

// artifact pushes to the fake upstream an artifact manifest of app (tag
// ref) with one layer of mediaType whose digest is d (the blob is added
// when body is not nil), and subject, if not nil.
func artifact(t *testing.T, m *mirror, ref, mediaType string, d digest.Digest, body []byte, subject *ocispec.Descriptor) ocispec.Descriptor {
	t.Helper()
	layer := ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: 1}
	if body != nil {
		layer = m.fake.AddBlob(body)
		layer.MediaType = mediaType
		m.fake.LinkBlob("app", layer.Digest)
	}
	cfg := m.fake.AddBlob([]byte("{}"))
	m.fake.LinkBlob("app", cfg.Digest)
	cfg.MediaType = ocispec.MediaTypeEmptyJSON
	man := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{layer}, Subject: subject}
	man.SchemaVersion = 2
	b, err := json.Marshal(man)
	if err != nil {
		t.Fatal(err)
	}
	desc := m.fake.AddManifest("app", ref, ocispec.MediaTypeImageManifest, b)
	if subject != nil {
		desc.ArtifactType = mediaType
		m.fake.AddReferrer("app", subject.Digest, desc)
	}
	return desc
}

// Evidence can vouch for no manifest: an artifact of a signature's media
// type, attached to a signed image and listing an unsigned manifest's
// digest as its layer, leaves that manifest refused, whether the digest
// was asked for as a blob first or not, and the artifact's blobs are
// served as blobs only.
func TestEvidenceCannotVouchForAManifest(t *testing.T) {
	t.Parallel()
	m, signed := signedMirror(t)
	evil, _ := m.fake.Image("app", "evil", []byte("evil layer"))

	// The artifact's layer is the unsigned manifest's bytes: JSON, so
	// evidence by its content.
	req, _ := http.NewRequest(http.MethodGet, m.upstream.URL+manifestPath("app", evil.Digest.String()), nil)
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	up, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	evilBody, err := io.ReadAll(up.Body)
	up.Body.Close()
	if err != nil || digest.FromBytes(evilBody) != evil.Digest {
		t.Fatalf("the unsigned manifest from the upstream: %v", err)
	}
	art := artifact(t, m, "readme", sigpolicy.SimpleSigningMediaType, "", evilBody, &signed)
	resp, body := m.get(http.MethodGet, manifestPath("app", art.Digest.String()), "Accept", ocispec.MediaTypeImageManifest)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the artifact (evidence of a signed image): %d %s", resp.StatusCode, body)
	}
	// The unsigned manifest's bytes, asked for as a blob: evidence lists
	// them, so they may be served as content, never as a manifest.
	m.get(http.MethodGet, blobPath("app", evil.Digest))
	for _, ref := range []string{"evil", evil.Digest.String()} {
		resp, body := m.get(http.MethodGet, manifestPath("app", ref), "Accept", ocispec.MediaTypeImageManifest)
		deniedMessage(t, resp, body)
	}
	resp, body = m.get(http.MethodGet, blobPath("app", digest.FromBytes([]byte("evil layer"))))
	deniedMessage(t, resp, body)
}

// Under enforce, only evidence goes unsigned: a Helm chart, a WebAssembly
// module or an artifact of unknown type is verified like an image; and
// evidence about nothing trusted (no subject, or an unsigned one) is
// served, but its blobs are not.
func TestOnlyEvidenceIsServedUnsigned(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	m := newMirror(t, withPolicy(t, sigpolicy.ModeEnforce, key))
	for _, mt := range []string{"application/vnd.cncf.helm.chart.content.v1.tar+gzip", "application/vnd.wasm.content.layer.v1+wasm", "application/octet-stream",
		ocispec.MediaTypeEmptyJSON} { // a layer labelled empty that is not "{}"
		body := []byte("content of " + mt)
		art := artifact(t, m, "", mt, "", body, nil)
		resp, got := m.get(http.MethodGet, manifestPath("app", art.Digest.String()), "Accept", ocispec.MediaTypeImageManifest)
		if msg := deniedMessage(t, resp, got); !strings.Contains(msg, "no_signature") {
			t.Errorf("%s artifact: %q, want no_signature", mt, msg)
		}
		resp, got = m.get(http.MethodGet, blobPath("app", digest.FromBytes(body)))
		deniedMessage(t, resp, got)
	}

	unsigned, _ := m.fake.Image("app", "unsigned", []byte("unsigned layer"))
	payload := []byte(`{"critical":{}}`)
	for _, subject := range []*ocispec.Descriptor{nil, &unsigned} {
		art := artifact(t, m, "", sigpolicy.SimpleSigningMediaType, "", payload, subject)
		resp, got := m.get(http.MethodGet, manifestPath("app", art.Digest.String()), "Accept", ocispec.MediaTypeImageManifest)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("evidence (subject %v): %d %s, want 200", subject != nil, resp.StatusCode, got)
		}
		resp, got = m.get(http.MethodGet, blobPath("app", digest.FromBytes(payload)))
		deniedMessage(t, resp, got)
	}
	// cosign's tag names the manifest its signature is about.
	artifact(t, m, cosigntest.SignatureTag(unsigned.Digest), sigpolicy.SimpleSigningMediaType, "", payload, nil)
	resp, got := m.get(http.MethodGet, manifestPath("app", cosigntest.SignatureTag(unsigned.Digest)), "Accept", ocispec.MediaTypeImageManifest)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("signature of an unsigned image: %d %s, want 200", resp.StatusCode, got)
	}
	resp, got = m.get(http.MethodGet, blobPath("app", digest.FromBytes(payload)))
	deniedMessage(t, resp, got)
}

// A layer is evidence by its content, not by its label: an image whose
// gzip-tar layers are labelled as a cosign signature, attached to a signed
// image (subject, or cosign's .att tag), is verified like any image (podman
// unpacks its layers whatever the label), so neither its manifest nor its
// layers are served; a manifest without layers is no evidence at all (a
// runtime runs its config).
func TestEvidenceIsCheckedByItsContent(t *testing.T) {
	t.Parallel()
	m, signed := signedMirror(t)

	code := layergen.Gzip(layergen.New(61, 3, 1000).Tar(), -1)
	for _, ref := range []string{"", cosigntest.SignatureTag(signed.Digest)[:len(cosigntest.SignatureTag(signed.Digest))-len(".sig")] + ".att"} {
		var subject *ocispec.Descriptor
		if ref == "" {
			subject = &signed
		}
		art := artifact(t, m, ref, sigpolicy.SimpleSigningMediaType, "", code, subject)
		get := art.Digest.String()
		if ref != "" {
			get = ref
		}
		resp, body := m.get(http.MethodGet, manifestPath("app", get), "Accept", ocispec.MediaTypeImageManifest)
		if msg := deniedMessage(t, resp, body); !strings.Contains(msg, "no_signature") {
			t.Errorf("%q: the artifact's manifest: %q, want no_signature", ref, msg)
		}
		resp, body = m.get(http.MethodGet, blobPath("app", digest.FromBytes(code)))
		deniedMessage(t, resp, body)
	}
	// A real signature payload attached the same way is served.
	payload := []byte(`{"critical":{"image":{"docker-manifest-digest":"` + signed.Digest.String() + `"}}}`)
	real := artifact(t, m, "", sigpolicy.SimpleSigningMediaType, "", payload, &signed)
	if resp, body := m.get(http.MethodGet, manifestPath("app", real.Digest.String()), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
		t.Fatalf("a real signature's manifest: %d %s", resp.StatusCode, body)
	}
	if resp, body := m.get(http.MethodGet, blobPath("app", digest.FromBytes(payload))); resp.StatusCode != http.StatusOK || !bytes.Equal(body, payload) {
		t.Errorf("a real signature's payload: %d %s", resp.StatusCode, body)
	}

	// No layers: an image config with an empty root file system, also
	// when evidence is listed under "blobs".
	cfg := m.fake.AddBlob([]byte(`{"config":{"Entrypoint":["/bin/sh"],"Env":["LD_PRELOAD=/x.so"]}}`))
	m.fake.LinkBlob("app", cfg.Digest)
	cfg.MediaType = ocispec.MediaTypeImageConfig
	sig := m.fake.AddBlob(payload)
	sig.MediaType = sigpolicy.SimpleSigningMediaType
	for _, blobs := range [][]ocispec.Descriptor{nil, {sig}} {
		var empty struct {
			ocispec.Manifest
			Blobs []ocispec.Descriptor `json:"blobs,omitempty"`
		}
		empty.Manifest = ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{}, Subject: &signed}
		empty.SchemaVersion = 2
		empty.Blobs = blobs
		b, err := json.Marshal(empty)
		if err != nil {
			t.Fatal(err)
		}
		desc := m.fake.AddManifest("app", "", ocispec.MediaTypeImageManifest, b)
		resp, body := m.get(http.MethodGet, manifestPath("app", desc.Digest.String()), "Accept", ocispec.MediaTypeImageManifest)
		if msg := deniedMessage(t, resp, body); !strings.Contains(msg, "no_signature") {
			t.Errorf("manifest without layers (blobs %d): %q, want no_signature", len(blobs), msg)
		}
	}
}

// Evidence is judged by the bytes that are served, all of them: an
// upstream that answers a range of a signature-labelled blob with JSON,
// and the blob itself with a gzip tar, gets neither served.
func TestEvidenceIsJudgedByTheBytesServed(t *testing.T) {
	t.Parallel()
	m, signed := signedMirror(t)
	code := layergen.Gzip(layergen.New(62, 40, 64<<10).Tar(), -1)
	if len(code) <= 1<<20 {
		t.Fatalf("test assumption: a layer over 1 MiB, got %d bytes", len(code))
	}
	art := artifact(t, m, "", sigpolicy.SimpleSigningMediaType, "", code, &signed)
	lie := []byte(`{"critical":{"image":{"docker-manifest-digest":"` + signed.Digest.String() + `"}}}`)
	lie = append(lie, bytes.Repeat([]byte(" "), 512-len(lie))...)
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, digest.FromBytes(code).String(), func(w http.ResponseWriter, r *http.Request, _ int) bool {
		if !strings.HasPrefix(r.Header.Get("Range"), "bytes=0-") || r.Header.Get("Range") == "bytes=0-" {
			return false
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-511/%d", len(code)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(lie)
		return true
	}))
	resp, body := m.get(http.MethodGet, manifestPath("app", art.Digest.String()), "Accept", ocispec.MediaTypeImageManifest)
	if msg := deniedMessage(t, resp, body); !strings.Contains(msg, "no_signature") {
		t.Errorf("the artifact's manifest: %q, want no_signature", msg)
	}
	resp, body = m.get(http.MethodGet, blobPath("app", digest.FromBytes(code)))
	deniedMessage(t, resp, body)
}

// Evidence cannot lend a signed image's layers a config of its own: an
// artifact attached to the signed image (or to nothing) whose config
// starts a shell and whose layers are the signed image's, labelled as
// signatures or as deltas (which are not read to be checked), is an
// unsigned image and refused; so is its config.
func TestEvidenceCannotDressSignedLayers(t *testing.T) {
	t.Parallel()
	m, signed := signedMirror(t)
	layer := m.fake.AddBlob([]byte("signed layer")) // the signed image's own layer, stored by pullImage
	cfg := m.fake.AddBlob([]byte(`{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/sh","-c","evil"]},"rootfs":{"type":"layers","diff_ids":["` + layer.Digest.String() + `"]}}`))
	m.fake.LinkBlob("app", cfg.Digest)
	cfg.MediaType = ocispec.MediaTypeImageConfig
	for _, c := range []struct {
		label   string
		subject *ocispec.Descriptor
	}{{sigpolicy.SimpleSigningMediaType, &signed}, {sigpolicy.SimpleSigningMediaType, nil}, {delta.MediaType, &signed}} {
		subject := c.subject
		layer.MediaType = c.label
		man := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{layer}, Subject: subject}
		man.SchemaVersion = 2
		b, err := json.Marshal(man)
		if err != nil {
			t.Fatal(err)
		}
		desc := m.fake.AddManifest("app", "", ocispec.MediaTypeImageManifest, b)
		resp, body := m.get(http.MethodGet, manifestPath("app", desc.Digest.String()), "Accept", ocispec.MediaTypeImageManifest)
		if msg := deniedMessage(t, resp, body); !strings.Contains(msg, "no_signature") {
			t.Errorf("%s, subject %v: %q, want no_signature", c.label, subject != nil, msg)
		}
		resp, body = m.get(http.MethodGet, blobPath("app", cfg.Digest))
		deniedMessage(t, resp, body)
	}
}

// Evidence whose blob could not be read to be checked (the upstream
// failed) is refused, and checked again on the next request for it.
func TestEvidenceUnreadableOnceIsCheckedAgain(t *testing.T) {
	t.Parallel()
	m, signed := signedMirror(t)
	payload := []byte(`{"critical":{"image":{"docker-manifest-digest":"` + signed.Digest.String() + `"}}}`)
	art := artifact(t, m, "", "application/spdx+json", "", payload, &signed)
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, digest.FromBytes(payload).String(), fakeupstream.First(1, fakeupstream.Status(http.StatusNotFound, "", 0))))
	// Its blob could not be read: refused, as a manifest whose signatures
	// cannot be fetched is, and nothing is trusted.
	resp, body := m.get(http.MethodGet, manifestPath("app", art.Digest.String()), "Accept", ocispec.MediaTypeImageManifest)
	if msg := deniedMessage(t, resp, body); !strings.Contains(msg, "cannot verify") {
		t.Errorf("evidence whose blob could not be read: %q, want cannot verify", msg)
	}
	resp, body = m.get(http.MethodGet, blobPath("app", digest.FromBytes(payload)))
	deniedMessage(t, resp, body)
	// Read now.
	if resp, body := m.get(http.MethodGet, manifestPath("app", art.Digest.String()), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
		t.Fatalf("evidence manifest: %d %s", resp.StatusCode, body)
	}
	if resp, body := m.get(http.MethodGet, blobPath("app", digest.FromBytes(payload))); resp.StatusCode != http.StatusOK || !bytes.Equal(body, payload) {
		t.Errorf("evidence blob after the manifest was asked for again: %d %s", resp.StatusCode, body)
	}
}

// The OCI tag schema's referrers index (tag sha256-<hex>), which registry
// copies read, is served under enforce as the listing it is, also when
// empty; it vouches for nothing it lists: an unsigned image it names stays
// refused, and the same index under any other tag or by digest is verified
// like any index.
func TestReferrersTagIndexIsServedNotTrusted(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	m := newMirror(t, withPolicy(t, sigpolicy.ModeEnforce, key))
	signed, _ := m.fake.Image("app", "signed", []byte("signed layer"))
	sign(t, m, key, signed.Digest)
	unsigned, _ := m.fake.Image("app", "", []byte("unsigned layer"))
	sbom := artifact(t, m, "", "application/spdx+json", "", []byte(`{"spdxVersion":"SPDX-2.3"}`), &signed)
	sbom.ArtifactType = "application/spdx+json"
	index := func(tag string, manifests ...ocispec.Descriptor) ocispec.Descriptor {
		idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: manifests}
		idx.SchemaVersion = 2
		if idx.Manifests == nil {
			idx.Manifests = []ocispec.Descriptor{}
		}
		b, err := json.Marshal(idx)
		if err != nil {
			t.Fatal(err)
		}
		return m.fake.AddManifest("app", tag, ocispec.MediaTypeImageIndex, b)
	}
	tag := strings.Replace(signed.Digest.String(), ":", "-", 1)
	listing := index(tag, sbom, unsigned)
	index(strings.Replace(unsigned.Digest.String(), ":", "-", 1))
	index("not-a-listing", sbom, unsigned)

	for _, c := range []struct {
		ref  string
		want int
	}{
		{tag, http.StatusOK},
		{strings.Replace(unsigned.Digest.String(), ":", "-", 1), http.StatusOK}, // empty
		{sbom.Digest.String(), http.StatusOK},                                   // evidence
		{unsigned.Digest.String(), http.StatusForbidden},                        // listed, not covered
		{listing.Digest.String(), http.StatusForbidden},                         // the listing by digest
		{"not-a-listing", http.StatusForbidden},
	} {
		resp, body := m.get(http.MethodGet, manifestPath("app", c.ref), "Accept", ocispec.MediaTypeImageIndex+", "+ocispec.MediaTypeImageManifest)
		if resp.StatusCode != c.want {
			t.Errorf("GET %s: %d %s, want %d", c.ref, resp.StatusCode, body, c.want)
		}
	}
	resp, body := m.get(http.MethodGet, blobPath("app", digest.FromBytes([]byte("unsigned layer"))))
	deniedMessage(t, resp, body)
}

// A failed verification counts only for the repository it was made in: an
// unsigned copy of a signed image (same digest, no signature in its
// repository) asked for first does not get the signed original refused;
// once verified, the digest is signed wherever the rule applies.
func TestNegativeVerdictStaysInItsRepository(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	m := newMirror(t, withPolicy(t, sigpolicy.ModeEnforce, key))
	layer := []byte("promoted layer")
	signed, _ := m.fake.Image("app", "v1", layer)
	copied, _ := m.fake.Image("copy", "v1", layer)
	if signed.Digest != copied.Digest {
		t.Fatal("test assumption: the copy has the original's digest")
	}
	sign(t, m, key, signed.Digest)
	get := func(repo string) (*http.Response, []byte) {
		return m.get(http.MethodGet, manifestPath(repo, "v1"), "Accept", ocispec.MediaTypeImageManifest)
	}
	resp, body := get("copy")
	if msg := deniedMessage(t, resp, body); !strings.Contains(msg, "no_signature") {
		t.Errorf("unsigned copy: %q, want no_signature", msg)
	}
	// The status page's recent pulls say why (the operator's first look).
	if pulls := m.server.RecentPulls(); len(pulls) == 0 || pulls[0].Status != http.StatusForbidden || !strings.Contains(pulls[0].Reason, "no_signature") {
		t.Errorf("recent pulls after a denial: %+v, want the 403 with its reason", pulls)
	}
	if resp, body := get("app"); resp.StatusCode != http.StatusOK {
		t.Errorf("signed original after its unsigned copy: %d %s, want 200", resp.StatusCode, body)
	}
	if resp, body := get("copy"); resp.StatusCode != http.StatusOK {
		t.Errorf("copy of a verified digest: %d %s, want 200", resp.StatusCode, body)
	}
}

// Negative verdicts of two repositories for one digest are kept side by
// side: the second does not send the first back upstream within the
// verdict's minute.
func TestNegativeVerdictsOfTwoRepositoriesAreBothKept(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	m := newMirror(t, withPolicy(t, sigpolicy.ModeEnforce, key))
	layer := []byte("unsigned everywhere")
	a, _ := m.fake.Image("a", "v1", layer)
	m.fake.Image("b", "v1", layer)
	sigTag := cosigntest.SignatureTag(a.Digest)
	asked := func(repo string) int {
		return m.fake.Count(http.MethodGet, manifestPath(repo, sigTag)) + m.fake.Count(http.MethodHead, manifestPath(repo, sigTag))
	}
	for _, repo := range []string{"a", "b", "a", "b"} {
		resp, body := m.get(http.MethodGet, manifestPath(repo, "v1"), "Accept", ocispec.MediaTypeImageManifest)
		if msg := deniedMessage(t, resp, body); !strings.Contains(msg, "no_signature") {
			t.Errorf("%s: %q, want no_signature", repo, msg)
		}
	}
	for _, repo := range []string{"a", "b"} {
		if n := asked(repo); n != 1 {
			t.Errorf("signature tag of %s asked upstream %d times, want 1 (its verdict is recorded)", repo, n)
		}
	}
}

// Devices pulling a newly signed image at once share one verification:
// the signature's blobs and its evidence are fetched once, not once per
// device.
func TestConcurrentFirstPullsShareOneVerification(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	m := newMirror(t, withPolicy(t, sigpolicy.ModeEnforce, key))
	img, _ := m.fake.Image("app", "v1", []byte("rolled out"))
	sigBlobs := sign(t, m, key, img.Digest)
	var wg sync.WaitGroup
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, body := m.get(http.MethodGet, manifestPath("app", "v1"), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
				t.Errorf("pull: %d %s", resp.StatusCode, body)
			}
		}()
	}
	wg.Wait()
	if err := m.proxy.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, d := range sigBlobs {
		if n := m.fake.Count(http.MethodGet, blobPath("app", d)); n != 1 {
			t.Errorf("signature blob %s fetched %d times, want 1", d, n)
		}
	}
	if n := m.fake.Count(http.MethodGet, manifestPath("app", cosigntest.SignatureTag(img.Digest))); n != 1 {
		t.Errorf("signature manifest fetched %d times, want 1", n)
	}
}

// Hostile and broken upstream content under enforce: a tag moved to an
// unsigned digest, a signature made for another digest, a malformed or
// oversize signature manifest are refused with a reason and no crash; a
// referrers listing that fails is not taken for "unsigned".
func TestSignaturePolicyBadUpstream(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	m := newMirror(t, withPolicy(t, sigpolicy.ModeEnforce, key))
	get := func(ref string) (*http.Response, []byte) {
		return m.get(http.MethodGet, manifestPath("app", ref), "Accept", ocispec.MediaTypeImageManifest)
	}
	denied := func(ref string) string {
		t.Helper()
		resp, body := get(ref)
		return deniedMessage(t, resp, body)
	}

	// The tag moves upstream to an unsigned image (tag TTL passed).
	v1, _ := m.fake.Image("app", "latest", []byte("signed"))
	sign(t, m, key, v1.Digest)
	if resp, body := get("latest"); resp.StatusCode != http.StatusOK {
		t.Fatalf("signed latest: %d %s", resp.StatusCode, body)
	}
	m.fake.Image("app", "latest", []byte("moved, unsigned"))
	m.clock.Advance(2 * time.Minute)
	if msg := denied("latest"); !strings.Contains(msg, "no_signature") {
		t.Errorf("moved tag: %q", msg)
	}

	// A valid signature of another digest, copied under this one's tag.
	other, _ := m.fake.Image("app", "copied", []byte("copied signature"))
	man, blobs := cosigntest.Parts(t, key.Sign(t, "central.test/app", v1.Digest))
	for _, b := range blobs {
		m.fake.LinkBlob("app", m.fake.AddBlob(b).Digest)
	}
	m.fake.AddManifest("app", cosigntest.SignatureTag(other.Digest), ocispec.MediaTypeImageManifest, man)
	if msg := denied("copied"); strings.Contains(msg, "verified") {
		t.Errorf("copied signature: %q", msg)
	}

	// Garbage and an oversize manifest under the signature tag.
	bad, _ := m.fake.Image("app", "garbage", []byte("garbage signature"))
	m.fake.AddManifest("app", cosigntest.SignatureTag(bad.Digest), ocispec.MediaTypeImageManifest, []byte(`{"schemaVersion":2,"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"sha256:nothex","size":-1}]}`))
	denied("garbage")
	huge, _ := m.fake.Image("app", "huge", []byte("huge signature"))
	m.fake.AddManifest("app", cosigntest.SignatureTag(huge.Digest), ocispec.MediaTypeImageManifest, bytes.Repeat([]byte(" "), 5<<20))
	denied("huge")

	// No signature tag, and the referrers listing fails: refused, but as
	// unverifiable, not recorded as unsigned; once the listing works and a
	// signature is there, the image is served at once.
	later, _ := m.fake.Image("app", "later", []byte("signed later"))
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, "/referrers/"+later.Digest.String(), fakeupstream.Status(http.StatusBadGateway, "", 100)))
	resp, body := get("later")
	if resp.StatusCode == http.StatusOK {
		t.Fatalf("served with its signatures unknown: %s", body)
	}
	if got := metricValue(t, m.metrics, "registry_edge_signature_verifications_total", "rule", "fleet", "reason", "no_signature"); got != 1 {
		t.Errorf("no_signature verdicts = %v, want 1 (the moved tag only)", got)
	}
	m.fake.ClearFaults()
	sign(t, m, key, later.Digest)
	if resp, body := get("later"); resp.StatusCode != http.StatusOK {
		t.Errorf("signed later: %d %s", resp.StatusCode, body)
	}
}

// BenchmarkManifestByTagPolicy measures cached manifest-by-tag requests
// through the mirror without a policy and with an enforce rule whose
// verdict is recorded, side by side in one run (issue #6: within 10 %).
// Compare the two ns/op: go test -run X -bench ManifestByTagPolicy ./internal/httpserve
func BenchmarkManifestByTagPolicy(b *testing.B) {
	key := cosigntest.NewKey(b)
	for _, name := range []string{"none", "enforce"} {
		b.Run(name, func(b *testing.B) {
			var opts []mirrorOpt
			if name == "enforce" {
				opts = append(opts, withPolicy(b, sigpolicy.ModeEnforce, key))
			}
			m := newMirror(b, opts...)
			img, _ := m.fake.Image("app", "v1", []byte("layer"))
			man, blobs := cosigntest.Parts(b, key.Sign(b, "central.test/app", img.Digest))
			for _, bl := range blobs {
				m.fake.LinkBlob("app", m.fake.AddBlob(bl).Digest)
			}
			m.fake.AddManifest("app", cosigntest.SignatureTag(img.Digest), ocispec.MediaTypeImageManifest, man)
			url := m.srv.URL + manifestPath("app", "v1")
			client := m.srv.Client()
			get := func() {
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("GET: %d", resp.StatusCode)
				}
			}
			get() // fills the cache and records the verdict
			b.ResetTimer()
			for b.Loop() {
				get()
			}
		})
	}
}

// A cold verification of a cosign tag-scheme signature costs the upstream
// two requests: the signature manifest and its payload (one GET, no HEAD);
// a recorded verdict costs none. (The evidence stored afterwards, in the
// background, is not part of the verification.)
func TestSignatureVerificationRequests(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	m := newMirror(t, withPolicy(t, sigpolicy.ModeEnforce, key))
	img, _ := m.fake.Image("app", "v1", []byte("layer"))
	payload := sign(t, m, key, img.Digest)[1]
	get := func() {
		resp, body := m.get(http.MethodGet, manifestPath("app", img.Digest.String()), "Accept", ocispec.MediaTypeImageManifest)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET: %d %s", resp.StatusCode, body)
		}
	}
	get()
	if err := m.proxy.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, manifestPath("app", cosigntest.SignatureTag(img.Digest)), 1},
		{http.MethodGet, blobPath("app", payload), 1},
		{http.MethodHead, blobPath("app", payload), 0},
	} {
		if n := m.fake.Count(c.method, c.path); n != c.want {
			t.Errorf("%s %s: %d upstream requests, want %d", c.method, c.path, n, c.want)
		}
	}
	// The evidence was looked for: referrers and cosign's other tags.
	if n := m.fake.Count(http.MethodGet, manifestPath("app", strings.TrimSuffix(cosigntest.SignatureTag(img.Digest), ".sig")+".att")); n != 1 {
		t.Errorf("attestation tag asked %d times, want 1", n)
	}
	before := m.fake.Total()
	get()
	if n := m.fake.Total() - before; n != 0 {
		t.Errorf("second pull: %d upstream requests, want 0", n)
	}
}

// After an image verifies, its evidence is stored in the background (for
// cosign against the mirror offline), and nothing else: a referrer that is
// no evidence, such as a Helm chart attached to the image, is not
// downloaded on that account.
func TestOnlyEvidenceIsStoredAfterAVerification(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	m := newMirror(t, withPolicy(t, sigpolicy.ModeEnforce, key))
	signed, _ := m.fake.Image("app", "signed", []byte("signed layer"))
	sign(t, m, key, signed.Digest)
	sbom := []byte(`{"spdxVersion":"SPDX-2.3"}`)
	chart := []byte("a chart, not evidence")
	// The chart first: the referrers are stored in their order, so once
	// the SBOM is, the chart has been looked at.
	artifact(t, m, "", "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "", chart, &signed)
	artifact(t, m, "", "application/spdx+json", "", sbom, &signed)
	pullImage(t, m, "signed", []byte("signed layer"))
	// The referrers are stored in the background; the deadline only
	// bounds a failure.
	for deadline := time.Now().Add(20 * time.Second); m.fake.Count(http.MethodGet, blobPath("app", digest.FromBytes(sbom))) == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if m.fake.Count(http.MethodGet, blobPath("app", digest.FromBytes(sbom))) == 0 {
		t.Fatal("the SBOM attached to the verified image was not stored")
	}
	if n := m.fake.Count(http.MethodGet, blobPath("app", digest.FromBytes(chart))); n != 0 {
		t.Errorf("the chart attached to the verified image was fetched %d times", n)
	}
}

// An evicted image takes its verdict and trust records with it (they grew
// without bound on a mirror that runs for months), and the proxy's memory
// of it goes too: pulled again, it is verified again and its layers are
// served. With the memory kept, the manifest skipped its verification, so
// its trust was not recorded again, and a layer no client had asked for
// before the eviction was refused 403.
func TestEvictedImageIsVerifiedAgain(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	m := newMirror(t, withPolicy(t, sigpolicy.ModeEnforce, key))
	layer := []byte("signed layer")
	signed, _ := m.fake.Image("app", "signed", layer)
	sign(t, m, key, signed.Digest)
	// A device reads the manifest; its layer it has.
	if resp, body := m.get(http.MethodGet, manifestPath("app", "signed"), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET manifest: %d %s", resp.StatusCode, body)
	}
	// Its signature is stored in the background: all of it is evicted.
	if err := m.proxy.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}

	mt := &gc.Maintainer{Store: m.store, DB: m.db, Cache: m.proxy, Options: gc.Options{MaxSize: 1, Now: m.clock.Now}}
	if plan := mt.RunOnce(context.Background()); plan == nil || len(plan.Delete) == 0 {
		t.Fatalf("eviction plan %+v, want everything evicted", plan)
	}
	if n := m.storedBlobs(); n != 0 {
		t.Fatalf("%d blobs left after evicting everything", n)
	}
	sigs := m.fake.Count(http.MethodGet, manifestPath("app", cosigntest.SignatureTag(signed.Digest)))

	// Another device pulls the whole image.
	pullImage(t, m, "signed", layer)
	if n := m.fake.Count(http.MethodGet, manifestPath("app", cosigntest.SignatureTag(signed.Digest))); n == sigs {
		t.Errorf("the signature was not fetched again: the image was not verified again")
	}
}

// A signature that an upstream lists on the second page of its referrers
// answer (Link rel="next") is found: the image is served under enforce.
func TestSignatureOnLaterReferrersPage(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	m := newMirror(t, withPolicy(t, sigpolicy.ModeEnforce, key))
	m.fake.ReferrersPageSize = 1
	signed, _ := m.fake.Image("app", "signed", []byte("signed layer"))
	other := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("sbom"), Size: 10, ArtifactType: "application/spdx+json"}
	m.fake.AddReferrer("app", signed.Digest, other)
	man, blobs := cosigntest.Parts(t, key.Sign(t, "central.test/app", signed.Digest))
	for _, b := range blobs {
		m.fake.LinkBlob("app", m.fake.AddBlob(b).Digest)
	}
	desc := m.fake.AddManifest("app", digest.FromBytes(man).String(), ocispec.MediaTypeImageManifest, man)
	desc.ArtifactType = sigpolicy.SignatureArtifactType
	m.fake.AddReferrer("app", signed.Digest, desc)

	resp, body := m.get(http.MethodGet, manifestPath("app", "signed"), "Accept", ocispec.MediaTypeImageManifest)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("image signed on the second referrers page: %d %s, want 200", resp.StatusCode, body)
	}
}

// signedIntoRepository is a mirror under one rule of key's whose
// signatureRepository is sigRepo, over an upstream where app:signed is
// signed into fleet/signatures (cosign sign with COSIGN_REPOSITORY).
func signedIntoRepository(t *testing.T, key *cosigntest.Key, sigRepo string) (*mirror, ocispec.Descriptor) {
	t.Helper()
	pol, err := sigpolicy.New(sigpolicy.Spec{Rules: []sigpolicy.RuleSpec{{
		Name: "fleet", Repositories: []string{"central.test/**"}, Keys: []string{key.PublicPEM}, SignatureRepository: sigRepo,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	m := newMirror(t, func(o *proxy.Options) { o.Policy = pol })
	signed, _ := m.fake.Image("app", "signed", []byte("signed layer"))
	man, blobs := cosigntest.Parts(t, key.Sign(t, "central.test/app", signed.Digest))
	for _, b := range blobs {
		m.fake.LinkBlob("fleet/signatures", m.fake.AddBlob(b).Digest)
	}
	m.fake.AddManifest("fleet/signatures", cosigntest.SignatureTag(signed.Digest), ocispec.MediaTypeImageManifest, man)
	return m, signed
}

// Signatures pushed with COSIGN_REPOSITORY (another repository than the
// image's): a rule whose signatureRepository names it finds them there; a
// rule without it does not (no_signature).
func TestSignatureRepository(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	for _, sigRepo := range []string{"", "central.test/fleet/signatures"} {
		t.Run("signatureRepository="+sigRepo, func(t *testing.T) {
			t.Parallel()
			m, signed := signedIntoRepository(t, key, sigRepo)

			resp, body := m.get(http.MethodGet, manifestPath("app", "signed"), "Accept", ocispec.MediaTypeImageManifest)
			if sigRepo == "" {
				if msg := deniedMessage(t, resp, body); !strings.Contains(msg, "no_signature") {
					t.Errorf("signature in another repository, rule without signatureRepository: %q, want no_signature", msg)
				}
				return
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("image signed into %s: %d %s, want 200", sigRepo, resp.StatusCode, body)
			}
			// The evidence is served from the signature repository, for
			// cosign verify with COSIGN_REPOSITORY against the mirror.
			resp, _ = m.get(http.MethodGet, manifestPath("fleet/signatures", cosigntest.SignatureTag(signed.Digest)), "Accept", ocispec.MediaTypeImageManifest)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET the signature in %s: %d", sigRepo, resp.StatusCode)
			}
		})
	}
}

// Signed with COSIGN_REPOSITORY, verified once: with the uplink down, the
// signature is still served from the signature repository, whole (cosign
// verify against the mirror with COSIGN_REPOSITORY set works offline).
func TestSignatureRepositoryEvidenceOffline(t *testing.T) {
	t.Parallel()
	m, signed := signedIntoRepository(t, cosigntest.NewKey(t), "central.test/fleet/signatures")
	sigTag := cosigntest.SignatureTag(signed.Digest)
	if resp, body := m.get(http.MethodGet, manifestPath("app", "signed"), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
		t.Fatalf("image signed into fleet/signatures: %d %s, want 200", resp.StatusCode, body)
	}
	if err := m.proxy.Wait(context.Background()); err != nil { // the evidence is stored
		t.Fatal(err)
	}

	m.upstream.Close()
	m.restart()
	resp, body := m.get(http.MethodGet, manifestPath("fleet/signatures", sigTag), "Accept", ocispec.MediaTypeImageManifest)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the signature in fleet/signatures offline: %d %s, want 200", resp.StatusCode, body)
	}
	var sm ocispec.Manifest
	if err := json.Unmarshal(body, &sm); err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]ocispec.Descriptor{sm.Config}, sm.Layers...) {
		if resp, _ := m.get(http.MethodGet, blobPath("fleet/signatures", d.Digest)); resp.StatusCode != http.StatusOK {
			t.Errorf("GET signature blob %s offline: %d, want 200", d.Digest, resp.StatusCode)
		}
	}
}

// The verdict cache metric counts the lookups of manifests that are not
// evidence (docs/metrics.md): a signature manifest pulled again and again,
// as cosign verify and the devices' referrers lookups do, is no hit; the
// signed image pulled again is one.
func TestEvidenceIsNoVerdictCacheLookup(t *testing.T) {
	t.Parallel()
	m, signed := signedMirror(t)
	hits := func() float64 {
		return metricValue(t, m.metrics, "registry_edge_signature_verdict_cache_total", "result", "hit")
	}
	before := hits()
	for range 3 {
		resp, body := m.get(http.MethodGet, manifestPath("app", cosigntest.SignatureTag(signed.Digest)), "Accept", ocispec.MediaTypeImageManifest)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET signature: %d %s", resp.StatusCode, body)
		}
	}
	if got := hits(); got != before {
		t.Errorf("verdict cache hits after pulling the signature 3 times = %v, want %v", got, before)
	}
	if resp, body := m.get(http.MethodGet, manifestPath("app", signed.Digest.String()), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET signed manifest: %d %s", resp.StatusCode, body)
	}
	if got := hits(); got != before+1 {
		t.Errorf("verdict cache hits after pulling the signed image again = %v, want %v", got, before+1)
	}
}
