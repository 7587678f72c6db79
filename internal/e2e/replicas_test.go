package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/awserr"
	"github.com/aws/aws-sdk-go/service/s3"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/testutil/flakyrelay"
	"github.com/registry-edge/registry-edge/internal/testutil/s3test"
)

// nginxReplicasConf is the nginx configuration docs/deploy/replicas.md ships;
// the tests run it as it is, with only its addresses and log path replaced.
const nginxReplicasConf = "../../docs/deploy/nginx-replicas.conf"

// Two replicas on one bucket behind the documented nginx configuration: 16
// clients asking for the same cold layer at once all get it whole, from one
// replica, and central sends it once; Range requests pass through; the
// replicas' admin API and metrics are not reachable through nginx; crane
// pulls the image through nginx with central's digests, each blob fetched
// from central once; and with the replica that filled the layer killed,
// nginx sends its share to the other one, which serves the layer from the
// bucket without fetching it again.
func TestReplicasBehindNginx(t *testing.T) {
	t.Parallel()
	crane := need(t, "crane")
	nginx := need(t, "nginx")
	c := startCentral(t)
	img := pushImage(t, c, "edge/replicas", "v1", ociImage(t, runtime.GOARCH, 2, 4<<20))
	layer := img.layers[0]
	counter := startUpstreamCounter(t, c.addr)
	srv := s3test.StartServer(t)
	a := startReplica(t, counter.addr, srv, "a")
	b := startReplica(t, counter.addr, srv, "b")
	lb := startNginx(t, nginx, a.addr, b.addr)

	blobURL := "http://" + lb.addr + "/v2/" + img.repo + "/blobs/" + layer
	bodies := getConcurrently(t, 16, blobURL)
	for i, res := range bodies {
		if res.err != nil || res.status != 200 || digest.FromBytes(res.body).String() != layer {
			t.Fatalf("client %d: GET %s through nginx: status %d, %d bytes, digest %s, err %v; want 200 and %s",
				i, blobURL, res.status, len(res.body), digest.FromBytes(res.body), res.err, layer)
		}
	}
	if n := counter.count("GET", blobPath(img.repo, layer)); n != 1 {
		t.Errorf("central received %d GETs of the layer for 16 concurrent clients through nginx, want 1", n)
	}

	// nginx sent all 16 to one replica, keyed by the digest; the other one
	// never saw the blob.
	lines := lb.waitRequests(t, "GET "+blobPath(img.repo, layer)+" ", 16)
	filler := lines[0]["upstream"]
	for _, l := range lines {
		if l["upstream"] != filler || l["key"] != layer {
			t.Errorf("nginx: %v; want every request of the layer sent to one replica (%s) with key %s", l, filler, layer)
		}
	}
	var fillerM, otherM *mirror
	switch filler {
	case a.addr:
		fillerM, otherM = a, b
	case b.addr:
		fillerM, otherM = b, a
	default:
		t.Fatalf("nginx sent the layer to %q, which is neither replica (%s, %s)", filler, a.addr, b.addr)
	}
	otherM.mark(t)
	for _, e := range otherM.accessLog() {
		if e["digest"] == layer {
			t.Errorf("the replica that does not own the layer served it too: %v", e)
		}
	}

	// Range requests pass through: 206 with exactly the asked bytes.
	full := bodies[0].body
	resp, part := httpDo(t, "GET", blobURL, http.Header{"Range": {"bytes=1000-1999"}}, nil)
	if resp.StatusCode != http.StatusPartialContent || string(part) != string(full[1000:2000]) {
		t.Errorf("GET with Range: bytes=1000-1999 through nginx: %s, %d bytes (equal to the layer's bytes 1000-1999: %t), want 206 and those 1000 bytes",
			resp.Status, len(part), string(part) == string(full[1000:2000]))
	}
	if got, want := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes 1000-1999/%d", len(full)); got != want {
		t.Errorf("Content-Range through nginx = %q, want %q", got, want)
	}

	// Only /v2 is balanced: the replicas would take every client for
	// loopback (admin.allowFrom) since they all come from nginx.
	for _, p := range []string{"/admin/v1/prefetch", "/metrics", "/status"} {
		if resp, _ := httpDo(t, "GET", "http://"+lb.addr+p, nil, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s through nginx: %s, want 404 (only /v2 is proxied)", p, resp.Status)
		}
	}

	// crane pulls the image through nginx with central's digests; every blob
	// was fetched from central exactly once across both replicas.
	if got, want := strings.TrimSpace(craneRun(t, crane, "digest", img.ref(lb.addr))), strings.TrimSpace(craneRun(t, crane, "digest", img.ref(c.addr))); got != want || got != img.digest {
		t.Fatalf("crane digest through nginx = %s, central says %s, pushed %s", got, want, img.digest)
	}
	readLayout(t, pullOCI(t, crane, img.ref(lb.addr))).checkImage(t, img)
	// The tag is keyed by its path: crane's HEAD and GET went to one
	// replica, which alone revalidates it.
	tagPath := "/v2/" + img.repo + "/manifests/" + img.tag
	tagReqs := append(lb.waitRequests(t, "HEAD "+tagPath+" ", 1), lb.waitRequests(t, "GET "+tagPath+" ", 1)...)
	for _, l := range tagReqs {
		if l["upstream"] != tagReqs[0]["upstream"] || l["key"] != " "+tagPath {
			t.Errorf("nginx: %v; want every request of the tag sent to one replica (%s) with key %q", l, tagReqs[0]["upstream"], " "+tagPath)
		}
	}
	for _, d := range img.blobs {
		if n := counter.count("GET", blobPath(img.repo, d)); n != 1 {
			t.Errorf("central received %d GETs of blob %s after a pull through nginx, want 1", n, d)
		}
	}

	// The replica that filled the layer dies: nginx moves its share to the
	// other, which serves the layer from the bucket. (The other blobs of the
	// pull may not have been committed yet, so they are not counted again.)
	// So far nginx logged 18 GETs of the layer: the 16 concurrent ones, the
	// Range GET and crane's.
	before := len(lb.waitRequests(t, "GET "+blobPath(img.repo, layer)+" ", 16+1+1))
	if err := fillerM.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-fillerM.proc.done
	for i := 0; i < 3; i++ {
		res := getBlob(blobURL)
		if res.err != nil || res.status != 200 || digest.FromBytes(res.body).String() != layer {
			t.Fatalf("GET %d of the layer through nginx with its replica killed: status %d, %d bytes, err %v", i, res.status, len(res.body), res.err)
		}
	}
	readLayout(t, pullOCI(t, crane, img.ref(lb.addr))).checkImage(t, img)
	if n := counter.count("GET", blobPath(img.repo, layer)); n != 1 {
		t.Errorf("central received %d GETs of the layer after its replica died, want 1 (the bucket has it)", n)
	}
	for _, l := range lb.waitRequests(t, "GET "+blobPath(img.repo, layer)+" ", before+3)[before:] {
		if !strings.HasSuffix(l["upstream"], otherM.addr) || l["status"] != "200" {
			t.Errorf("nginx with %s killed: %v, want the layer answered (200) by %s", fillerM.addr, l, otherM.addr)
		}
	}
}

// Two replicas on one bucket, addressed directly (no hashing in front),
// fill the same cold layer at the same time, several clients on each: all
// clients get the layer whole; each replica fetches it once; both fills
// succeed; the bucket ends with exactly one object, holding the layer, and
// with nothing under _uploads/ and no pending multipart upload.
func TestReplicasFillConcurrently(t *testing.T) {
	t.Parallel()
	c := startCentral(t)
	const size = 12 << 20 // more than one multipart part (chunkSize 10MiB)
	img := pushImage(t, c, "edge/replicas", "v1", ociImage(t, runtime.GOARCH, 1, size))
	layer := img.layers[0]
	counter := startUpstreamCounter(t, c.addr)
	// Both fills share a link slow enough that they overlap to the end, so
	// the two uploads and moves into place run at the same time.
	link := flakyrelay.New(t, counter.addr)
	link.Throttle(16 << 20)
	srv := s3test.StartServer(t)
	a := startReplica(t, link.Addr(), srv, "a")
	b := startReplica(t, link.Addr(), srv, "b")

	var urls []string
	for _, m := range []*mirror{a, b} {
		for i := 0; i < 4; i++ {
			urls = append(urls, "http://"+m.addr+"/v2/"+img.repo+"/blobs/"+layer)
		}
	}
	for i, res := range getConcurrently(t, 0, urls...) {
		if res.err != nil || res.status != 200 || digest.FromBytes(res.body).String() != layer {
			t.Errorf("client %d: GET %s: status %d, %d bytes, digest %s, err %v; want 200 and %s",
				i, urls[i], res.status, len(res.body), digest.FromBytes(res.body), res.err, layer)
		}
	}
	if n := counter.count("GET", blobPath(img.repo, layer)); n != 2 {
		t.Fatalf("central received %d GETs of the layer, want 2 (one fill per replica): the test did not test concurrent fills", n)
	}

	for _, m := range []*mirror{a, b} {
		waitFillsDone(t, m)
		if n := metricSum(t, m, "registry_edge_fill_failures_total"); n != 0 {
			t.Errorf("replica %s: %v failed fills, want 0:\n%s", m.addr, n, tail(m.proc.log(), 20))
		}
	}
	checkOnlyBlob(t, srv, layer)
}

// A replica killed (SIGKILL) in the middle of a fill leaves nothing in the
// bucket; the other replica fills the layer and every client gets it whole;
// no object under blobs/ ever has content other than its digest's, not
// even while the second fill is running; and the killed replica, started
// again on its storage, serves the layer from the bucket without fetching
// it from central.
func TestReplicaKilledMidFill(t *testing.T) {
	t.Parallel()
	c := startCentral(t)
	const size = 8 << 20
	img := pushImage(t, c, "edge/replicas", "v1", ociImage(t, runtime.GOARCH, 1, size))
	layer := img.layers[0]
	counter := startUpstreamCounter(t, c.addr)
	link := flakyrelay.New(t, counter.addr)
	link.Throttle(4 << 20) // about 2 s per fill: time to kill one in the middle
	srv := s3test.StartServer(t)
	prefix := strings.TrimPrefix(objstoreRoot, "/") + "/"
	watch := watchBlobs(t, srv, prefix)
	a, aOpts := startReplicaOpts(t, link.Addr(), srv, "a")
	b := startReplica(t, link.Addr(), srv, "b")

	// A client of A reads part of the layer; then A dies.
	var got atomic.Int64
	go func() {
		resp, err := (&http.Client{Timeout: time.Minute}).Get("http://" + a.addr + "/v2/" + img.repo + "/blobs/" + layer)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			got.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for got.Load() < 512<<10 {
		if time.Now().After(deadline) {
			t.Fatalf("the client of replica A received %d bytes in 30 s, want 512 KiB", got.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := a.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.proc.done
	if down := link.BytesDown(); down >= size {
		t.Fatalf("the link had carried %d bytes when A was killed, the whole %d-byte layer: the test did not test a kill mid-fill", down, size)
	}
	for _, dir := range []string{"blobs/", "_uploads/"} {
		if keys := listKeys(t, srv.Client(), srv.Bucket, prefix+dir); len(keys) > 0 {
			t.Errorf("the bucket holds objects under %s after A was killed mid-fill:\n%s", prefix+dir, strings.Join(keys, "\n"))
		}
	}

	// B fills it; the watcher checks every object it lists meanwhile.
	resp, body := httpDo(t, "GET", "http://"+b.addr+"/v2/"+img.repo+"/blobs/"+layer, nil, nil)
	if resp.StatusCode != 200 || digest.FromBytes(body).String() != layer {
		t.Fatalf("GET the layer on replica B after A died: %s, %d bytes, digest %s, want 200 and %s", resp.Status, len(body), digest.FromBytes(body), layer)
	}
	// B commits after the last byte reached its client; the watcher goes
	// on until it has hashed the committed object.
	waitFillsDone(t, b)
	watch.waitSeen(t, layerKey(prefix, layer))
	if problems := watch.stop(); len(problems) > 0 {
		t.Errorf("objects under blobs/ with the wrong content during the fills:\n%s", strings.Join(problems, "\n"))
	}
	t.Logf("the watcher listed the bucket %d times", watch.rounds.Load())
	checkOnlyBlob(t, srv, layer)
	fetched := counter.count("GET", blobPath(img.repo, layer))

	// A again, on the same storage and config: it serves the layer from the
	// bucket, with no new GET of it from central.
	a2 := startMirror(t, link.Addr(), aOpts)
	resp, body = httpDo(t, "GET", "http://"+a2.addr+"/v2/"+img.repo+"/blobs/"+layer, nil, nil)
	if resp.StatusCode != 200 || digest.FromBytes(body).String() != layer {
		t.Fatalf("GET the layer on replica A after its restart: %s, %d bytes, digest %s, want 200 and %s", resp.Status, len(body), digest.FromBytes(body), layer)
	}
	if n := counter.count("GET", blobPath(img.repo, layer)); n != fetched {
		t.Errorf("central received %d more GETs of the layer after A restarted, want 0 (the bucket has it)", n-fetched)
	}
	a2.mark(t)
	for _, l := range a2.proc.logLines() {
		if strings.Contains(l, "level=ERROR") {
			t.Errorf("replica A logged an error after its restart: %s", l)
		}
	}
	if staged := stagingFiles(t, a2.storage); len(staged) > 0 {
		t.Errorf("replica A's staging directory after the restart holds %v, want it cleared at start", staged)
	}
}

// uploading is a replica caught uploading a verified 12 MiB layer to the
// bucket (a multipart upload in flight, its uplink to S3 slowed).
type uploading struct {
	c      *central
	img    pushed
	srv    *s3test.Server
	s3link *flakyrelay.Relay
	root   string
	a      *mirror
	size   int64
}

// config is the replica's configuration with fillTimeout and tempMaxAge
// set to timeout.
func (u *uploading) config(timeout string) string {
	return objstoreConfig(u.root, s3Settings{bucket: u.srv.Bucket, endpoint: u.s3link.URL(), accessKey: u.srv.AccessKey, secretKey: u.srv.SecretKey}) +
		"    replica:\n      id: a\n  fillTimeout: " + timeout + "\n  tempMaxAge: " + timeout + "\n"
}

func startUploading(t *testing.T) *uploading {
	t.Helper()
	u := &uploading{c: startCentral(t), srv: s3test.StartServer(t), root: filepath.Join(t.TempDir(), "storage"), size: 12 << 20} // three 5 MiB parts
	u.img = pushImage(t, u.c, "edge/replicas", "v1", ociImage(t, runtime.GOARCH, 1, u.size))
	u.s3link = flakyrelay.New(t, strings.TrimPrefix(u.srv.Endpoint, "http://"))
	u.s3link.ThrottleUp(2 << 20) // the upload takes about 6 s
	u.a = startMirror(t, u.c.addr, mirrorOptions{storage: u.root, config: u.config("60s")})

	// The client gets the whole layer (verified) while the upload runs.
	layer := u.img.layers[0]
	resp, body := httpDo(t, "GET", "http://"+u.a.addr+"/v2/"+u.img.repo+"/blobs/"+layer, nil, nil)
	if resp.StatusCode != 200 || digest.FromBytes(body).String() != layer {
		t.Fatalf("GET the layer: %s, digest %s, want 200 and %s", resp.Status, digest.FromBytes(body), layer)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(pendingUploads(t, u.srv)) == 0 || u.s3link.BytesUp() < 6<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("no multipart upload under way after 30 s (%d bytes up to S3)", u.s3link.BytesUp())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return u
}

// A replica killed (SIGKILL) while it uploads a verified blob leaves
// nothing under blobs/, only an incomplete multipart upload. Started again
// once that is older than storage.tempMaxAge, it aborts the upload and
// clears its staging file, then fills and commits the blob whole.
func TestReplicaKilledMidUpload(t *testing.T) {
	t.Parallel()
	u := startUploading(t)
	layer := u.img.layers[0]
	prefix := strings.TrimPrefix(objstoreRoot, "/") + "/"
	if err := u.a.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-u.a.proc.done
	killed := time.Now()
	if up := u.s3link.BytesUp(); up >= u.size {
		t.Fatalf("%d bytes had gone up to S3 when the replica was killed, the whole %d-byte layer: the test did not kill it mid-upload", up, u.size)
	}
	if keys := listKeys(t, u.srv.Client(), u.srv.Bucket, prefix+"blobs/"); len(keys) > 0 {
		t.Errorf("the bucket holds under blobs/ after the kill mid-upload:\n%s", strings.Join(keys, "\n"))
	}
	if len(pendingUploads(t, u.srv)) == 0 {
		t.Fatal("no pending multipart upload after the kill: nothing to clean up")
	}
	if len(stagingFiles(t, u.root)) == 0 {
		t.Fatal("no staging file after the kill: nothing to clean up")
	}

	// Later than tempMaxAge, the replica starts again. tempMaxAge is at
	// least fillTimeout, which must leave room for the fill's 12 MiB
	// upload on a loaded machine: 5 s did not (CI, stop 14).
	u.s3link.ThrottleUp(0)
	time.Sleep(time.Until(killed.Add(15500 * time.Millisecond)))
	a2 := startMirror(t, u.c.addr, mirrorOptions{storage: u.root, config: u.config("15s")})
	if pending := pendingUploads(t, u.srv); len(pending) > 0 {
		t.Errorf("pending multipart uploads after the restart: %v, want the stale one aborted at start", pending)
	}
	if staged := stagingFiles(t, u.root); len(staged) > 0 {
		t.Errorf("staging files after the restart: %v, want them cleared at start", staged)
	}
	resp, body := httpDo(t, "GET", "http://"+a2.addr+"/v2/"+u.img.repo+"/blobs/"+layer, nil, nil)
	if resp.StatusCode != 200 || digest.FromBytes(body).String() != layer {
		t.Fatalf("GET the layer after the restart: %s, digest %s, want 200 and %s", resp.Status, digest.FromBytes(body), layer)
	}
	waitFillsDone(t, a2)
	checkOnlyBlob(t, u.srv, layer)
}

// A replica killed (SIGKILL) mid-upload and started again at once (an OOM
// kill under a supervisor) finds the incomplete multipart upload younger
// than storage.tempMaxAge, so start-up keeps it; the running replica
// aborts it once it is that old, instead of keeping it until a restart a
// whole tempMaxAge later.
func TestReplicaKilledAndRestartedAtOnceAbortsItsUpload(t *testing.T) {
	t.Parallel()
	u := startUploading(t)
	layer := u.img.layers[0]
	if err := u.a.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-u.a.proc.done
	if up := u.s3link.BytesUp(); up >= u.size {
		t.Fatalf("%d bytes had gone up to S3 when the replica was killed, the whole %d-byte layer: the test did not kill it mid-upload", up, u.size)
	}
	killed := pendingUploads(t, u.srv)
	if len(killed) == 0 {
		t.Fatal("no pending multipart upload after the kill: nothing to clean up")
	}
	u.s3link.ThrottleUp(0)
	a2 := startMirror(t, u.c.addr, mirrorOptions{storage: u.root, config: u.config("15s")})
	resp, body := httpDo(t, "GET", "http://"+a2.addr+"/v2/"+u.img.repo+"/blobs/"+layer, nil, nil)
	if resp.StatusCode != 200 || digest.FromBytes(body).String() != layer {
		t.Fatalf("GET the layer after the restart: %s, digest %s, want 200 and %s", resp.Status, digest.FromBytes(body), layer)
	}
	waitFillsDone(t, a2)
	// The killed upload is 15 s old 15 s after the kill; the replica
	// checks every quarter of tempMaxAge. A minute is ample.
	deadline := time.Now().Add(time.Minute)
	for {
		pending := pendingUploads(t, u.srv)
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending multipart uploads a minute after the restart: %v (killed: %v), want the killed one aborted once older than tempMaxAge", pending, killed)
		}
		time.Sleep(100 * time.Millisecond)
	}
	checkOnlyBlob(t, u.srv, layer)
}

// A replica stopped (SIGTERM) while it uploads a verified blob finishes
// the upload before it exits: the blob is in the bucket, whole, and no
// upload is left.
func TestReplicaStoppedMidUpload(t *testing.T) {
	t.Parallel()
	u := startUploading(t)
	u.a.proc.stop() // SIGTERM; SIGKILL only after 15 s
	if up := u.s3link.BytesUp(); up < u.size {
		t.Errorf("%d bytes went up to S3 before the replica exited, want the whole %d-byte layer", up, u.size)
	}
	checkOnlyBlob(t, u.srv, u.img.layers[0])
	if !strings.Contains(u.a.proc.log(), "blob filled") {
		t.Errorf("the replica's log does not say the fill completed:\n%s", tail(u.a.proc.log(), 20))
	}
}

// --- replicas on one bucket --------------------------------------------------

// startReplica starts registry-edge replica id of a group, configured as
// docs/deploy/replicas.md says: its own storage root, its blobs in srv's
// bucket under objstoreRoot like every replica of the group, and replica
// "a" the one that evicts. extra is more configuration (top-level keys
// other than storage).
func startReplica(t *testing.T, upstream string, srv *s3test.Server, id string, extra ...string) *mirror {
	t.Helper()
	m, _ := startReplicaOpts(t, upstream, srv, id, extra...)
	return m
}

// startReplicaOpts is startReplica that also returns the options to start
// the replica again on its storage.
func startReplicaOpts(t *testing.T, upstream string, srv *s3test.Server, id string, extra ...string) (*mirror, mirrorOptions) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "storage")
	cfg := objstoreConfig(root, s3Settings{
		bucket: srv.Bucket, endpoint: srv.Endpoint, accessKey: srv.AccessKey, secretKey: srv.SecretKey,
	}) + fmt.Sprintf("    replica:\n      id: %s\n      evict: %t\n", id, id == "a") + strings.Join(extra, "")
	opts := mirrorOptions{storage: root, config: cfg}
	return startMirror(t, upstream, opts), opts
}

// checkOnlyBlob checks that the blobs in srv's bucket under objstoreRoot
// are exactly one object, d, with d's content, and that no upload is left:
// nothing under _uploads/ and no pending multipart upload.
func checkOnlyBlob(t *testing.T, srv *s3test.Server, d string) {
	t.Helper()
	prefix := strings.TrimPrefix(objstoreRoot, "/") + "/"
	key := layerKey(prefix, d)
	if keys := listKeys(t, srv.Client(), srv.Bucket, prefix+"blobs/"); !slices.Equal(keys, []string{key}) {
		t.Errorf("the bucket holds under %sblobs/:\n%s\nwant only %s", prefix, strings.Join(keys, "\n"), key)
	}
	if got := objectDigest(t, srv.Client(), srv.Bucket, key); got != d {
		t.Errorf("object %s hashes to %s, want %s", key, got, d)
	}
	if keys := listKeys(t, srv.Client(), srv.Bucket, prefix+"_uploads/"); len(keys) > 0 {
		t.Errorf("the bucket holds uploads:\n%s", strings.Join(keys, "\n"))
	}
	if pending := pendingUploads(t, srv); len(pending) > 0 {
		t.Errorf("pending multipart uploads: %v", pending)
	}
}

// blobPath is the API path of blob d of repo.
func blobPath(repo, d string) string { return "/v2/" + repo + "/blobs/" + d }

// layerKey is the bucket key of blob d under prefix.
func layerKey(prefix, d string) string {
	h := strings.TrimPrefix(d, "sha256:")
	return prefix + "blobs/sha256/" + h[:2] + "/" + h
}

// pendingUploads lists srv's incomplete multipart uploads.
func pendingUploads(t *testing.T, srv *s3test.Server) []string {
	t.Helper()
	keys, err := srv.PendingUploads("")
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// stagingFiles lists the files in a storage root's staging directory and
// of the directories in it (the temporary files of delta computations).
func stagingFiles(t *testing.T, root string) []string {
	t.Helper()
	dir := filepath.Join(root, "staging")
	var names []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, rel)
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return names
}

// metricSum returns the sum of the samples of the metric family name that
// m's /metrics shows (0 when it has none).
func metricSum(t *testing.T, m *mirror, name string) float64 {
	t.Helper()
	resp, body := httpDo(t, "GET", "http://"+m.addr+"/metrics", nil, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s/metrics: %s", m.addr, resp.Status)
	}
	var sum float64
	for _, l := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(l, name); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "{")) {
			v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("%s/metrics: %q: %v", m.addr, l, err)
			}
			sum += v
		}
	}
	return sum
}

// waitFillsDone waits up to 30 s until m runs no fill: the fills its clients
// started have committed (or failed).
func waitFillsDone(t *testing.T, m *mirror) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for metricSum(t, m, "registry_edge_fills_in_flight") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("replica %s still runs a fill after 30 s", m.addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// --- clients ---------------------------------------------------------------

// blobGet is what one client got.
type blobGet struct {
	status int
	body   []byte
	err    error
}

// getBlob GETs url and reads the whole body.
func getBlob(url string) blobGet {
	resp, err := (&http.Client{Timeout: time.Minute}).Get(url)
	if err != nil {
		return blobGet{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return blobGet{status: resp.StatusCode, body: b, err: err}
}

// getConcurrently GETs every url at once (the first one n times when n > 0)
// and returns the results in order.
func getConcurrently(t *testing.T, n int, urls ...string) []blobGet {
	t.Helper()
	if n > 0 {
		urls = slices.Repeat(urls[:1], n)
	}
	out := make([]blobGet, len(urls))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out[i] = getBlob(u)
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// --- central behind a request counter -----------------------------------------

// upstreamCounter is a reverse proxy in front of central that counts the
// requests it forwards, by method and path, as they arrive.
type upstreamCounter struct {
	addr string
	mu   sync.Mutex
	reqs map[string]int // "GET /v2/..." -> requests
}

func startUpstreamCounter(t *testing.T, target string) *upstreamCounter {
	t.Helper()
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	rp.FlushInterval = -1 // stream bodies as they come, as central sends them
	c := &upstreamCounter{reqs: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.reqs[r.Method+" "+r.URL.Path]++
		c.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c.addr = strings.TrimPrefix(srv.URL, "http://")
	return c
}

// count returns the number of method requests for path so far.
func (c *upstreamCounter) count(method, path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reqs[method+" "+path]
}

// --- nginx -------------------------------------------------------------------

// balancer is nginx running the documented configuration.
type balancer struct {
	addr      string
	accessLog string
	proc      *process
}

// startNginx runs nginx with docs/deploy/nginx-replicas.conf in front of
// replicas (host:port each): the file is included, as on Debian, in a
// minimal nginx.conf that keeps nginx's pid, temporary files and logs in a
// temporary directory, after its upstream server lines, listen line and
// access-log path are replaced.
func startNginx(t *testing.T, bin string, replicas ...string) *balancer {
	t.Helper()
	doc, err := os.ReadFile(nginxReplicasConf)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	lb := &balancer{accessLog: filepath.Join(dir, "registry-edge-access.log")}
	lb.addr, lb.proc = startServer(t, "nginx", "/v2/", func(addr string) *process {
		site := filepath.Join(dir, "registry-edge.conf")
		writeFile(t, site, rewriteNginxConf(t, string(doc), addr, replicas, lb.accessLog))
		main := filepath.Join(dir, "nginx.conf")
		writeFile(t, main, fmt.Sprintf(`# written by internal/e2e startNginx
daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[2]s;
}
`, dir, site))
		return startProcess(t, "nginx", nil, bin, "-p", dir+"/", "-e", "stderr", "-c", main)
	})
	return lb
}

var (
	nginxUpstreamBlock = regexp.MustCompile(`(?s)upstream registry_edge \{.*?\n\}`)
	nginxServerLine    = regexp.MustCompile(`(?m)^(\s*server\s+)(\S+)([^\n]*;[^\n]*)$`)
	nginxListenLine    = regexp.MustCompile(`(?m)^(\s*listen\s+)[^;]+;`)
	nginxAccessLogLine = regexp.MustCompile(`(?m)^(\s*access_log\s+)(\S+)(\s[^;]*;)`)
)

// rewriteNginxConf points the documented configuration at the test's
// addresses. It fails the test when the file no longer has the shape
// replicas.md tells operators to edit.
func rewriteNginxConf(t *testing.T, conf, listen string, replicas []string, accessLog string) string {
	t.Helper()
	blocks := nginxUpstreamBlock.FindAllStringIndex(conf, -1)
	if len(blocks) != 1 {
		t.Fatalf("%s: %d `upstream registry_edge { ... }` blocks, want 1", nginxReplicasConf, len(blocks))
	}
	up := conf[blocks[0][0]:blocks[0][1]]
	servers := nginxServerLine.FindAllStringSubmatch(up, -1)
	if len(servers) == 0 {
		t.Fatalf("%s: no server lines in the upstream block:\n%s", nginxReplicasConf, up)
	}
	// The documented lines with their parameters, one per replica; the
	// last one is repeated if the file lists fewer servers than replicas.
	var lines []string
	for i, addr := range replicas {
		s := servers[min(i, len(servers)-1)]
		lines = append(lines, s[1]+addr+s[3])
	}
	first := true
	newUp := nginxServerLine.ReplaceAllStringFunc(up, func(string) string {
		if !first {
			return ""
		}
		first = false
		return strings.Join(lines, "\n")
	})
	conf = conf[:blocks[0][0]] + newUp + conf[blocks[0][1]:]

	if n := len(nginxListenLine.FindAllString(conf, -1)); n != 1 {
		t.Fatalf("%s: %d listen lines, want 1", nginxReplicasConf, n)
	}
	conf = nginxListenLine.ReplaceAllString(conf, "${1}"+listen+";")
	if n := len(nginxAccessLogLine.FindAllString(conf, -1)); n != 1 {
		t.Fatalf("%s: %d access_log lines, want 1", nginxReplicasConf, n)
	}
	return nginxAccessLogLine.ReplaceAllString(conf, "${1}"+accessLog+"${3}")
}

// nginxLogField is one key=value (value optionally double-quoted) of the
// registry_edge log format.
var nginxLogField = regexp.MustCompile(`(\w+)=("[^"]*"|\S+)`)

// waitRequests waits up to 10 s until nginx's access log has n lines whose
// request contains req ("GET /v2/... "), and returns them parsed: request,
// status, upstream, upstream_status, key.
func (lb *balancer) waitRequests(t *testing.T, req string, n int) []map[string]string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(lb.accessLog)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		var out []map[string]string
		for _, l := range strings.Split(string(b), "\n") {
			q := strings.Index(l, `"`)
			if q < 0 || !strings.Contains(l, `"`+req) {
				continue
			}
			e := map[string]string{}
			for _, m := range nginxLogField.FindAllStringSubmatch(l, -1) {
				e[m[1]] = strings.Trim(m[2], `"`)
			}
			end := strings.Index(l[q+1:], `"`)
			e["request"] = l[q+1 : q+1+end]
			e["status"] = strings.Fields(l[q+2+end:])[0]
			out = append(out, e)
		}
		if len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx's access log has %d lines for %q after 10 s, want %d:\n%s", len(out), req, n, tail(string(b), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// --- watching the bucket -----------------------------------------------------

// blobWatch lists the blobs under a prefix of the bucket over and over and
// hashes every object it finds, until stopped.
type blobWatch struct {
	rounds atomic.Int64
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	problems []string       // each once, in the order found
	seen     map[string]int // key -> times hashed and found right
}

// watchBlobs starts a blobWatch of prefix+"blobs/" in srv's bucket; it is
// stopped when the test ends, if not before.
func watchBlobs(t *testing.T, srv *s3test.Server, prefix string) *blobWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &blobWatch{cancel: cancel, done: make(chan struct{}), seen: map[string]int{}}
	client := srv.Client()
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			w.round(ctx, client, srv.Bucket, prefix+"blobs/")
			w.rounds.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { w.stop() })
	return w
}

// round lists the prefix once and checks that each object's content hashes
// to the digest its key names. Objects that disappear in between are
// skipped; errors of the server count as problems.
func (w *blobWatch) round(ctx context.Context, client *s3.S3, bucket, prefix string) {
	var keys []string
	err := client.ListObjectsV2PagesWithContext(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)},
		func(page *s3.ListObjectsV2Output, _ bool) bool {
			for _, o := range page.Contents {
				keys = append(keys, aws.StringValue(o.Key))
			}
			return true
		})
	if err != nil {
		w.problem(ctx, "list %s: %v", prefix, err)
		return
	}
	for _, k := range keys {
		want := "sha256:" + k[strings.LastIndexByte(k, '/')+1:]
		out, err := client.GetObjectWithContext(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(k)})
		if err != nil {
			var ae awserr.Error
			if errors.As(err, &ae) && ae.Code() == s3.ErrCodeNoSuchKey {
				continue
			}
			w.problem(ctx, "get %s: %v", k, err)
			continue
		}
		dg := digest.SHA256.Digester()
		_, err = io.Copy(dg.Hash(), out.Body)
		out.Body.Close()
		switch got := dg.Digest().String(); {
		case err != nil:
			w.problem(ctx, "read %s: %v", k, err)
		case got != want:
			w.problem(ctx, "%s holds content with digest %s", k, got)
		default:
			w.mu.Lock()
			w.seen[k]++
			w.mu.Unlock()
		}
	}
}

// problem records a problem, unless the watch was stopped in the middle
// of a request or the same problem was recorded before.
func (w *blobWatch) problem(ctx context.Context, format string, args ...any) {
	if ctx.Err() != nil {
		return
	}
	p := fmt.Sprintf(format, args...)
	w.mu.Lock()
	defer w.mu.Unlock()
	if !slices.Contains(w.problems, p) {
		w.problems = append(w.problems, p)
	}
}

// waitSeen waits up to 30 s until the watch has hashed key (and found it
// right) once.
func (w *blobWatch) waitSeen(t *testing.T, key string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		w.mu.Lock()
		n := w.seen[key]
		w.mu.Unlock()
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bucket watcher has not seen %s with the right content after 30 s", key)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the watch and returns what it found wrong. It is safe to call
// more than once.
func (w *blobWatch) stop() []string {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.problems)
}
