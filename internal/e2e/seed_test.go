package e2e

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// pushed is what was pushed to central under one reference.
type pushed struct {
	repo, tag string
	digest    string // manifest (or index) digest
	mediaType string
	raw       []byte   // manifest bytes as pushed
	blobs     []string // config and layer digests (images only)
	layers    []string // layer digests (images only)
	children  []pushed // index children
}

// ref is repo:tag on host.
func (p pushed) ref(host string) string { return host + "/" + p.repo + ":" + p.tag }

// byDigest is repo@digest on host.
func (p pushed) byDigest(host string) string { return host + "/" + p.repo + "@" + p.digest }

// corpus is the content every test seeds into its own central registry.
type corpus struct {
	small  pushed // OCI image, 3 layers, tag edge/small:v1
	docker pushed // Docker schema2 image, 2 layers, edge/docker:v1
	multi  pushed // OCI index with two children (linux/<host arch> and another arch), edge/multi:v1
}

// otherArch is an architecture different from the host's, for the second
// child of the index.
func otherArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

// seedCorpus pushes the standard content to central.
func seedCorpus(t *testing.T, c *central) corpus {
	t.Helper()
	return corpus{
		small:  pushImage(t, c, "edge/small", "v1", ociImage(t, runtime.GOARCH, 3, 64<<10)),
		docker: pushImage(t, c, "edge/docker", "v1", dockerImage(t, 2, 32<<10)),
		multi:  pushIndex(t, c, "edge/multi", "v1", ociImage(t, runtime.GOARCH, 2, 16<<10), ociImage(t, otherArch(), 2, 16<<10)),
	}
}

// ociImage is a random OCI image for linux/arch with n layers of size bytes.
func ociImage(t *testing.T, arch string, n int, size int64) v1.Image {
	t.Helper()
	layers := make([]v1.Layer, n)
	for i := range layers {
		l, err := random.Layer(size, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		layers[i] = l
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	return withPlatform(t, img, arch)
}

// dockerImage is a random Docker schema2 image for the host platform.
func dockerImage(t *testing.T, n int64, size int64) v1.Image {
	t.Helper()
	img, err := random.Image(size, n)
	if err != nil {
		t.Fatal(err)
	}
	return withPlatform(t, img, runtime.GOARCH)
}

// withPlatform sets the config's os/architecture: containerd and podman
// refuse an image whose config does not match the platform they pull for.
func withPlatform(t *testing.T, img v1.Image, arch string) v1.Image {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config.Cmd = []string{"/random_file"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func parseRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// pushImage pushes img to central as repo:tag.
func pushImage(t *testing.T, c *central, repo, tag string, img v1.Image) pushed {
	t.Helper()
	if err := remote.Write(parseRef(t, c.addr+"/"+repo+":"+tag), img); err != nil {
		t.Fatalf("push %s:%s: %v", repo, tag, err)
	}
	return describeImage(t, repo, tag, img)
}

func describeImage(t *testing.T, repo, tag string, img v1.Image) pushed {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	p := pushed{repo: repo, tag: tag, digest: d.String(), mediaType: string(mt), raw: raw}
	p.blobs = append(p.blobs, m.Config.Digest.String())
	for _, l := range m.Layers {
		p.blobs = append(p.blobs, l.Digest.String())
		p.layers = append(p.layers, l.Digest.String())
	}
	return p
}

// pushIndex pushes an OCI index of imgs (platforms taken from their
// configs) to central as repo:tag.
func pushIndex(t *testing.T, c *central, repo, tag string, imgs ...v1.Image) pushed {
	t.Helper()
	var adds []mutate.IndexAddendum
	var children []pushed
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture},
		}})
		children = append(children, describeImage(t, repo, "", img))
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	if err := remote.WriteIndex(parseRef(t, c.addr+"/"+repo+":"+tag), idx); err != nil {
		t.Fatalf("push index %s:%s: %v", repo, tag, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := idx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	return pushed{repo: repo, tag: tag, digest: d.String(), mediaType: string(types.OCIImageIndex), raw: raw, children: children}
}

// allMediaTypes is the Accept header of a client that takes any manifest.
var allMediaTypes = []string{
	string(types.OCIManifestSchema1), string(types.OCIImageIndex),
	string(types.DockerManifestSchema2), string(types.DockerManifestList),
}

// getManifest GETs a manifest from a registry at host and returns its bytes
// and Docker-Content-Digest; any status but 200 fails the test.
func getManifest(t *testing.T, host, repo, ref string) ([]byte, string) {
	t.Helper()
	resp, body := httpDo(t, "GET", fmt.Sprintf("http://%s/v2/%s/manifests/%s", host, repo, ref),
		map[string][]string{"Accept": allMediaTypes}, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s/%s manifest %s: %s: %s", host, repo, ref, resp.Status, body)
	}
	return body, resp.Header.Get("Docker-Content-Digest")
}
