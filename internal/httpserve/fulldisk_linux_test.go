package httpserve_test

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
)

// smallDisk mounts a tmpfs of size bytes for the test and returns its path.
// It needs root (CI runs as root; elsewhere the test is skipped).
func smallDisk(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small file system needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)); err != nil {
		t.Fatalf("mount a %d-byte tmpfs: %v", size, err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// newMirrorOnSmallDisk is newMirror with its storage on a tmpfs of size
// bytes, which it returns too.
func newMirrorOnSmallDisk(t *testing.T, size int, opts ...mirrorOpt) (*mirror, string) {
	t.Helper()
	root := smallDisk(t, size)
	m := newMirror(t, opts...)
	m.stop()
	m.root = root
	m.start()
	return m, root
}

// fillDisk writes a file into dir until the file system is full.
func fillDisk(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Room again before the mirror stops (it records access times then).
	t.Cleanup(func() { os.Remove(f.Name()) })
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}

// leaveRoom fills the file system at dir but for about n bytes.
func leaveRoom(t *testing.T, dir string, n int64) {
	t.Helper()
	fillDisk(t, dir)
	filler := filepath.Join(dir, "filler")
	st, err := os.Stat(filler)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filler, st.Size()-n); err != nil {
		t.Fatal(err)
	}
}

// On a full disk, cached images keep being served by tag when the tag is
// revalidated upstream (its new check cannot be recorded), and manifests
// not cached pass through.
func TestFullDiskServesTags(t *testing.T) {
	t.Parallel()
	m, root := newMirrorOnSmallDisk(t, 4<<20)
	layer := fakeupstream.Random(t, 100_000)
	m.fake.Image("app", "v1", layer)
	pullImage(t, m, "v1", layer)
	// Enough tags that recording them needs new pages of meta.db.
	var tags []string
	for i := range 300 {
		tag := "new-" + strconv.Itoa(i)
		m.fake.Image("app", tag, []byte(tag))
		tags = append(tags, tag)
	}
	fillDisk(t, root)

	m.clock.Advance(2 * time.Minute) // past the tag TTL: revalidated upstream
	failed := 0
	for _, tag := range append([]string{"v1"}, tags...) {
		resp, body := m.get(http.MethodGet, manifestPath("app", tag), "Accept", ocispec.MediaTypeImageManifest)
		if resp.StatusCode != http.StatusOK {
			if failed++; failed < 3 {
				t.Errorf("GET %s on a full disk: %d %s", tag, resp.StatusCode, body)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d tags failed on a full disk", failed, len(tags)+1)
	}
}

// A layer larger than the free space fills the disk and fails; its bytes
// are not kept, so the disk has room again for the blobs that fit.
func TestFullDiskKeepsNoPartial(t *testing.T) {
	t.Parallel()
	m, _ := newMirrorOnSmallDisk(t, 4<<20)
	big := fakeupstream.Random(t, 6<<20)
	_, layers := m.fake.Image("app", "big", big)
	resp, body, err := m.do(http.MethodGet, blobPath("app", layers[0].Digest))
	if err == nil && resp.StatusCode == http.StatusOK && len(body) == len(big) {
		t.Fatal("a layer larger than the disk was served whole")
	}
	m.waitFills()
	if left := m.ingestFiles(); len(left) != 0 {
		t.Errorf("after the disk filled up, still on disk: %v", left)
	}
	m.clock.Advance(2 * time.Minute) // the store is tried again
	small := fakeupstream.Random(t, 200_000)
	_, sl := m.fake.Image("other", "v1", small)
	resp, body = m.get(http.MethodGet, blobPath("other", sl[0].Digest))
	m.waitFills()
	if resp.StatusCode != http.StatusOK || len(body) != len(small) {
		t.Fatalf("GET a small blob: %d, %d bytes", resp.StatusCode, len(body))
	}
	if _, err := m.store.Stat(t.Context(), sl[0].Digest); err != nil {
		t.Errorf("a blob that fits was not stored: %v", err)
	}
}

// A layer rebuilt from its delta needs room for the decompressed tars
// too: a rebuild that fills the disk is noted as a full disk (metric, log,
// eviction asked), not only as a failed delta, and the layer comes in full
// into the room left.
func TestDeltaRebuildOnAFullDiskIsNoted(t *testing.T) {
	t.Parallel()
	m, root := newMirrorOnSmallDisk(t, 16<<20, withDeltas)
	s := publishDelta(t, m, nil)
	pullImage(t, m, "v1", s.old)
	// Room for the layer, not for the tars a rebuild writes first.
	leaveRoom(t, root, int64(len(s.nw))+512<<10)
	pullImage(t, m, "v2", s.nw)
	if got := metricValue(t, m.metrics, "registry_edge_delta_fills_total", "result", "failed"); got != 1 {
		t.Errorf("failed deltas = %v, want 1 (the rebuild did not fit)", got)
	}
	if got := metricValue(t, m.metrics, "registry_edge_store_full_total"); got < 1 {
		t.Errorf("store_full_total = %v after a rebuild ran out of room, want at least 1", got)
	}
}

// fullDiskWithABlob is a mirror on a full disk whose upstream holds a
// 1 MiB blob of app.
func fullDiskWithABlob(t *testing.T) (*mirror, []byte, ocispec.Descriptor) {
	t.Helper()
	m, root := newMirrorOnSmallDisk(t, 4<<20)
	blob := fakeupstream.Random(t, 1<<20)
	d := m.fake.AddBlob(blob)
	m.fake.LinkBlob("app", d.Digest)
	fillDisk(t, root)
	return m, blob, d
}

// A fill that fails before its first byte (the disk is full) answers its
// client with an error status and envelope, not 200 and a cut connection;
// the next request passes the blob through.
func TestFillFailingBeforeItsFirstByteAnswersAnError(t *testing.T) {
	t.Parallel()
	m, blob, d := fullDiskWithABlob(t)
	resp, body, err := m.do(http.MethodGet, blobPath("app", d.Digest))
	if err != nil {
		t.Fatalf("first GET on a full disk: %v (a cut connection), want an error answer", err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "the mirror's disk is full") {
		t.Errorf("first GET on a full disk: %d %q, want 503 saying the mirror's disk is full", resp.StatusCode, body)
	}
	for _, h := range []string{"Cache-Control", "ETag", "Docker-Content-Digest"} {
		if v := resp.Header.Get(h); v != "" {
			t.Errorf("the error answer carries the blob's %s: %q", h, v)
		}
	}
	resp, body, err = m.do(http.MethodGet, blobPath("app", d.Digest))
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, blob) {
		t.Errorf("second GET: %v %v, %d bytes; want the blob passed through", err, resp.StatusCode, len(body))
	}
}

// A region whose disk cannot hold the tars of a delta it computes for a
// site answers with the full layer at once (not a 500 the site retries),
// and notes the full disk.
func TestRegionWithoutRoomForADeltaAnswersFull(t *testing.T) {
	t.Parallel()
	region, root := newMirrorOnSmallDisk(t, 16<<20, withDeltas)
	site, _, nw, _ := tiers(t, region)
	// Room for the new layer, not for the tars of a delta.
	leaveRoom(t, root, int64(len(nw))+512<<10)
	pullImage(t, site, "v2", nw)
	if got := metricValue(t, region.metrics, "registry_edge_delta_negotiations_total", "result", "full"); got != 1 {
		t.Errorf("region answered %v negotiations in full, want 1", got)
	}
	if got := metricValue(t, region.metrics, "registry_edge_store_full_total"); got < 1 {
		t.Errorf("region store_full_total = %v, want the full disk noted", got)
	}
	if got := metricValue(t, site.metrics, "registry_edge_upstream_requests_total", "upstream", "central.test", "op", "negotiate", "result", "error"); got != 0 {
		t.Errorf("site counted %v failed negotiations, want 0 (an answer in full)", got)
	}
}

// A site below a region whose disk is full: the region's "ask again" is
// its own failure, not its upstream's, so the site asks again, and gets
// the blob the region then passes through.
func TestSiteBelowARegionWithAFullDiskGetsTheBlob(t *testing.T) {
	t.Parallel()
	region, blob, d := fullDiskWithABlob(t)
	site := newMirrorOver(t, region.srv.URL, nil)
	resp, body, err := site.do(http.MethodGet, blobPath("app", d.Digest))
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, blob) {
		t.Errorf("site: %v %v %.200q; want the blob the region passes through when asked again", err, resp.StatusCode, body)
	}
}
