package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// ociLayout is an OCI image layout directory written by a client.
type ociLayout struct {
	dir   string
	index struct {
		Manifests []struct {
			MediaType   string            `json:"mediaType"`
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
}

// readLayout reads an OCI layout and checks that every blob in it hashes to
// its file name.
func readLayout(t *testing.T, dir string) *ociLayout {
	t.Helper()
	l := &ociLayout{dir: dir}
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatalf("OCI layout: %v", err)
	}
	if err := json.Unmarshal(b, &l.index); err != nil {
		t.Fatalf("OCI layout index.json: %v", err)
	}
	blobs, err := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range blobs {
		if got := fileDigest(t, p); got != "sha256:"+filepath.Base(p) {
			t.Errorf("OCI layout blob %s has digest %s", p, got)
		}
	}
	return l
}

// has reports whether the layout holds the blob with digest d.
func (l *ociLayout) has(d string) bool {
	_, err := os.Stat(filepath.Join(l.dir, "blobs", strings.Replace(d, ":", "/", 1)))
	return err == nil
}

// blob returns the content of the blob with digest d.
func (l *ociLayout) blob(t *testing.T, d string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.dir, "blobs", strings.Replace(d, ":", "/", 1)))
	if err != nil {
		t.Fatalf("OCI layout: %v", err)
	}
	return b
}

// topDigests are the digests index.json points at.
func (l *ociLayout) topDigests() []string {
	var out []string
	for _, m := range l.index.Manifests {
		out = append(out, m.Digest)
	}
	return out
}

// checkImage asserts the layout's index.json names p and holds every
// manifest and blob of p and of its children.
func (l *ociLayout) checkImage(t *testing.T, p pushed) {
	t.Helper()
	if got := l.topDigests(); !slices.Contains(got, p.digest) {
		t.Errorf("%s: layout index.json names %v, want %s", p.repo, got, p.digest)
	}
	l.checkContent(t, p)
}

// checkContent asserts the layout holds the manifest and blobs of p and of
// its children, byte for byte.
func (l *ociLayout) checkContent(t *testing.T, p pushed) {
	t.Helper()
	if !l.has(p.digest) {
		t.Errorf("%s: layout lacks the manifest %s", p.repo, p.digest)
	} else if got := l.blob(t, p.digest); string(got) != string(p.raw) {
		t.Errorf("%s: layout manifest differs from what was pushed:\n got %s\nwant %s", p.repo, got, p.raw)
	}
	for _, b := range p.blobs {
		if !l.has(b) {
			t.Errorf("%s: layout lacks blob %s", p.repo, b)
		}
	}
	for _, c := range p.children {
		l.checkContent(t, c)
	}
}

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func bytesDigest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}
