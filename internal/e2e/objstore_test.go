package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/service/s3"

	"github.com/registry-edge/registry-edge/internal/testutil/s3test"
)

// objstoreRoot is the storage.blobs.s3.rootDirectory of TestMirrorOnObjectStorage;
// the objects are under this prefix, without its leading slash.
const objstoreRoot = "/site-a"

// A mirror whose blobs are on S3 (a real versitygw) serves an image pulled
// through it with central's digests, keeps every layer as an object under
// its rootDirectory and none on the local disk, leaves no upload behind, and
// after a restart with central gone still serves the image by digest.
func TestMirrorOnObjectStorage(t *testing.T) {
	t.Parallel()

	// The config is checked before anything runs: s3 without a bucket is
	// refused, naming the field.
	t.Run("check-config-without-bucket", func(t *testing.T) {
		conf := filepath.Join(t.TempDir(), "no-bucket.yaml")
		writeFile(t, conf, objstoreConfig(t.TempDir(), s3Settings{
			endpoint: "http://127.0.0.1:9", accessKey: "a", secretKey: "b",
		}))
		out, err := runErr(nil, edgeBin, "check-config", conf)
		if err == nil {
			t.Fatalf("check-config accepted driver s3 without a bucket:\n%s", out)
		}
		if !strings.Contains(err.Error(), "storage.blobs.s3.bucket") {
			t.Errorf("check-config without a bucket failed without naming storage.blobs.s3.bucket: %v", err)
		}
	})

	crane := need(t, "crane")
	c := startCentral(t)
	img := pushImage(t, c, "edge/objstore", "v1", ociImage(t, runtime.GOARCH, 3, 256<<10))
	srv := s3test.StartServer(t)
	client := srv.Client()

	root := filepath.Join(t.TempDir(), "storage")
	cfg := objstoreConfig(root, s3Settings{
		bucket: srv.Bucket, endpoint: srv.Endpoint, accessKey: srv.AccessKey, secretKey: srv.SecretKey,
	})
	conf := filepath.Join(t.TempDir(), "registry-edge.yaml")
	writeFile(t, conf, cfg)
	if out, err := runErr(nil, edgeBin, "check-config", conf); err != nil {
		t.Fatalf("check-config refused the s3 config:\n%s\n%v", cfg, err)
	} else if !strings.Contains(out, "ok") {
		t.Errorf("check-config output: %q", out)
	}
	// startMirror passes --storage root too: the same directory as storage.root.
	opts := mirrorOptions{storage: root, config: cfg}
	m := startMirror(t, c.addr, opts)

	// The pull: crane verifies every blob against the manifest's digests,
	// readLayout checks again that each blob hashes to its name, and the
	// manifest is central's.
	if got, want := strings.TrimSpace(craneRun(t, crane, "digest", img.ref(m.addr))), strings.TrimSpace(craneRun(t, crane, "digest", img.ref(c.addr))); got != want || got != img.digest {
		t.Fatalf("crane digest through the mirror = %s, central says %s, pushed %s", got, want, img.digest)
	}
	l := readLayout(t, pullOCI(t, crane, img.ref(m.addr)))
	l.checkImage(t, img)
	if got := craneRun(t, crane, "manifest", img.byDigest(m.addr)); got != string(img.raw) {
		t.Errorf("crane manifest through the mirror differs from what was pushed:\n got %s\nwant %s", got, img.raw)
	}

	// Every layer is an object at <rootDirectory>/blobs/sha256/<xx>/<hex>
	// with the layer's bytes, and nothing is left under _uploads. A fill
	// commits after the last byte reached the client, so wait a little.
	prefix := strings.TrimPrefix(objstoreRoot, "/") + "/"
	wantKeys := map[string]string{} // key -> layer digest
	for _, d := range img.layers {
		wantKeys[layerKey(prefix, d)] = d
	}
	keys := waitBucketHolds(t, srv, prefix, wantKeys)
	for key, d := range wantKeys {
		if got := objectDigest(t, client, srv.Bucket, key); got != d {
			t.Errorf("object %s hashes to %s, want %s", key, got, d)
		}
	}
	t.Logf("objects under %s: %d", prefix, len(keys))

	// No layer's content is on the local disk (the staging files of the
	// fills are gone once they are committed).
	waitNoLocalLayers(t, root, img.layers)

	// Mirror and central stop; a new mirror on the same config serves the
	// image by digest from the bucket.
	m.proc.stop()
	c.proc.stop()
	m2 := startMirror(t, c.addr, opts)
	l = readLayout(t, pullOCI(t, crane, img.byDigest(m2.addr)))
	l.checkImage(t, img)
	for _, d := range img.layers {
		resp, body := httpDo(t, "GET", "http://"+m2.addr+"/v2/"+img.repo+"/blobs/"+d, nil, nil)
		if resp.StatusCode != 200 || bytesDigest(body) != d {
			t.Errorf("GET blob %s after the restart with central down: %s, digest %s", d, resp.Status, bytesDigest(body))
		}
	}
	waitNoLocalLayers(t, root, img.layers)
	if _, uploads := objstoreProblems(listKeys(t, client, srv.Bucket, prefix), wantKeys, prefix); len(uploads) > 0 {
		t.Errorf("after the restart, the bucket holds uploads %v", uploads)
	}
}

// With storage.blobs.s3.redirect, a stored layer is answered with a 307 to
// a presigned URL of its object: crane follows it to the S3 server and gets
// the image with central's digests, a Range GET is answered by S3, and
// small blobs (the config) are still served by the mirror.
func TestMirrorRedirectsToObjectStorage(t *testing.T) {
	t.Parallel()
	crane := need(t, "crane")
	c := startCentral(t)
	img := pushImage(t, c, "edge/redirect", "v1", ociImage(t, runtime.GOARCH, 2, 256<<10))
	srv := s3test.StartServer(t)
	root := filepath.Join(t.TempDir(), "storage")
	cfg := objstoreConfig(root, s3Settings{bucket: srv.Bucket, endpoint: srv.Endpoint, accessKey: srv.AccessKey, secretKey: srv.SecretKey}) +
		"      redirect: true\n"
	m := startMirror(t, c.addr, mirrorOptions{storage: root, config: cfg})

	// The first pull fills the bucket through the mirror (streamed).
	readLayout(t, pullOCI(t, crane, img.ref(m.addr))).checkImage(t, img)
	waitNoLocalLayers(t, root, img.layers)
	mark := m.mark(t)

	// The second is redirected for the layers.
	readLayout(t, pullOCI(t, crane, img.byDigest(m.addr))).checkImage(t, img)
	d := img.layers[0]
	req, err := http.NewRequest("GET", "http://"+m.addr+"/v2/"+img.repo+"/blobs/"+d, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", "bytes=1000-1999")
	resp, err := http.DefaultClient.Do(req) // follows the redirect, Range included
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || len(body) != 1000 || resp.Request.URL.Host != strings.TrimPrefix(srv.Endpoint, "http://") {
		t.Errorf("Range GET of a layer: %s, %d bytes, from %s; want 206, 1000 bytes, from the S3 server", resp.Status, len(body), resp.Request.URL.Host)
	}
	status := map[string]string{}
	entries := m.requestsSince(t, mark)
	for _, e := range entries {
		if e["method"] == "GET" && e["digest"] != "" {
			status[e["digest"]] = e["status"]
		}
	}
	config := img.blobs[0] // small: served by the mirror
	if status[config] != "200" {
		t.Errorf("GET of the config blob (small) answered %q, want 200 from the mirror", status[config])
	}
	for _, l := range img.layers {
		if status[l] != "307" {
			t.Errorf("GET of layer %s answered %q, want 307 to the bucket; requests: %v", l, status[l], entries)
		}
	}
}

// s3Settings are the storage.blobs.s3 values objstoreConfig writes; an
// empty bucket is left out.
type s3Settings struct {
	bucket, endpoint, accessKey, secretKey string
}

// objstoreConfig is a registry-edge config (storage section only; the
// upstream comes from --upstream) that keeps metadata and staging under root
// and the blobs in an S3 bucket under objstoreRoot.
func objstoreConfig(root string, s s3Settings) string {
	var b strings.Builder
	fmt.Fprintf(&b, "storage:\n  root: %q\n  blobs:\n    driver: s3\n    s3:\n", root)
	if s.bucket != "" {
		fmt.Fprintf(&b, "      bucket: %q\n", s.bucket)
	}
	fmt.Fprintf(&b, "      region: %s\n", s3test.Region)
	fmt.Fprintf(&b, "      regionEndpoint: %q\n", s.endpoint)
	b.WriteString("      forcePathStyle: true\n")
	fmt.Fprintf(&b, "      accessKey: %q\n", s.accessKey)
	fmt.Fprintf(&b, "      secretKey: %q\n", s.secretKey)
	fmt.Fprintf(&b, "      rootDirectory: %s\n", objstoreRoot)
	return b.String()
}

// waitBucketHolds waits (30 s at most) until srv's bucket holds every key
// of want under prefix and nothing under prefix's _uploads/, and returns the
// keys under prefix. A fill commits after its last byte reached the client.
func waitBucketHolds(t *testing.T, srv *s3test.Server, prefix string, want map[string]string) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		keys := listKeys(t, srv.Client(), srv.Bucket, prefix)
		missing, uploads := objstoreProblems(keys, want, prefix)
		if len(missing) == 0 && len(uploads) == 0 {
			return keys
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s, the bucket lacks %v and holds the uploads %v; keys under %s:\n%s",
				missing, uploads, prefix, strings.Join(keys, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// listKeys lists the keys of bucket under prefix, sorted.
func listKeys(t *testing.T, client *s3.S3, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	err := client.ListObjectsV2Pages(&s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)},
		func(page *s3.ListObjectsV2Output, _ bool) bool {
			for _, o := range page.Contents {
				keys = append(keys, aws.StringValue(o.Key))
			}
			return true
		})
	if err != nil {
		t.Fatalf("list s3://%s/%s: %v", bucket, prefix, err)
	}
	sort.Strings(keys)
	return keys
}

// objstoreProblems returns the wanted keys absent from keys and the keys
// under prefix's _uploads/.
func objstoreProblems(keys []string, want map[string]string, prefix string) (missing, uploads []string) {
	have := map[string]bool{}
	for _, k := range keys {
		have[k] = true
		if strings.HasPrefix(k, prefix+"_uploads/") {
			uploads = append(uploads, k)
		}
	}
	for k := range want {
		if !have[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	return missing, uploads
}

// objectDigest downloads an object and returns its sha256 digest.
func objectDigest(t *testing.T, client *s3.S3, bucket, key string) string {
	t.Helper()
	out, err := client.GetObject(&s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get s3://%s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, out.Body); err != nil {
		t.Fatalf("read s3://%s/%s: %v", bucket, key, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// waitNoLocalLayers waits up to 10 s until no file under root is named
// after a layer's hex digest or holds a layer's bytes (whatever its name),
// and fails the test with the files that still do.
func waitNoLocalLayers(t *testing.T, root string, layers []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		found := localLayerFiles(t, root, layers)
		if len(found) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the local storage root holds layer content:\n%s", strings.Join(found, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// localLayerFiles lists the regular files under root whose name is a
// layer's hex digest or whose content hashes to a layer's digest.
func localLayerFiles(t *testing.T, root string, layers []string) []string {
	t.Helper()
	isLayer := map[string]bool{}
	for _, d := range layers {
		isLayer[d] = true
		isLayer[strings.TrimPrefix(d, "sha256:")] = true
	}
	var found []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		if isLayer[d.Name()] {
			found = append(found, rel+" (named after a layer)")
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) { // removed meanwhile
				return nil
			}
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		if sum := "sha256:" + hex.EncodeToString(h.Sum(nil)); isLayer[sum] {
			found = append(found, rel+" (holds layer "+sum+")")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	sort.Strings(found)
	return found
}
