package e2e

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/testutil/flakyrelay"
)

// resumeLayerSize is big enough for several cuts and a kill mid-fill, small
// enough to keep the suite quick.
const resumeLayerSize = 24 << 20

// A blob fetched over a link that is cut every 4 MiB arrives whole and
// right, and the link carries it about once: every transfer resumes from
// the last byte on disk.
func TestResumeThroughFlakyLink(t *testing.T) {
	t.Parallel()
	c := startCentral(t)
	img := pushImage(t, c, "edge/big", "v1", ociImage(t, runtime.GOARCH, 1, resumeLayerSize))
	layer := img.layers[0]
	relay := flakyrelay.New(t, c.addr)
	relay.CutEvery(4 << 20)
	// At the speed of a link, not of loopback: a reset discards what sits
	// unread in the receiving socket, and on loopback that is megabytes.
	relay.Throttle(8 << 20)
	m := startMirror(t, relay.Addr(), mirrorOptions{})

	resp, body := httpDo(t, "GET", "http://"+m.addr+"/v2/edge/big/blobs/"+layer, nil, nil)
	if resp.StatusCode != 200 || digest.FromBytes(body).String() != layer {
		t.Fatalf("GET through a flaky link: %s, %d bytes, digest %s, want %s", resp.Status, len(body), digest.FromBytes(body), layer)
	}
	if relay.Cuts() < len(body)/(4<<20) {
		t.Fatalf("the relay cut the link %d times, want at least %d: the test did not test resuming", relay.Cuts(), len(body)/(4<<20))
	}
	if down := relay.BytesDown(); float64(down) > 1.02*float64(len(body)) {
		t.Errorf("the link carried %d bytes for a %d-byte blob (%.3fx), want at most 1.02x", down, len(body), float64(down)/float64(len(body)))
	}
}

// registry-edge killed with SIGKILL in the middle of a fill and started
// again on the same storage finishes the blob without fetching again what
// was on disk.
func TestKillMidFillResumesAfterRestart(t *testing.T) {
	t.Parallel()
	c := startCentral(t)
	img := pushImage(t, c, "edge/big", "v1", ociImage(t, runtime.GOARCH, 1, resumeLayerSize))
	layer := img.layers[0]
	relay := flakyrelay.New(t, c.addr)
	relay.Throttle(6 << 20) // about 4 s for the blob: time to kill it in the middle
	storage := t.TempDir()
	m := startMirror(t, relay.Addr(), mirrorOptions{storage: storage})

	url := "http://" + m.addr + "/v2/edge/big/blobs/" + layer
	go func() {
		// This client's transfer dies with the mirror.
		if resp, err := (&http.Client{Timeout: time.Minute}).Get(url); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for relay.BytesDown() < resumeLayerSize/2 {
		if time.Now().After(deadline) {
			t.Fatalf("the fill did not reach half of the blob in 60 s (%d bytes)", relay.BytesDown())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := m.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-m.proc.done
	atKill := relay.BytesDown()
	if atKill >= resumeLayerSize {
		t.Fatalf("the blob was complete (%d bytes) before the kill: the test did not test resuming", atKill)
	}
	// What the killed mirror had written (the bytes in flight in socket
	// buffers at the kill, up to megabytes under load, are lost with it).
	kept, err := os.Stat(filepath.Join(storage, "partial", strings.Replace(layer, ":", "-", 1)))
	if err != nil || kept.Size() == 0 {
		t.Fatalf("no partial download after the kill: %v", err)
	}

	relay.Throttle(0)
	m2 := startMirror(t, relay.Addr(), mirrorOptions{storage: storage})
	resp, body := httpDo(t, "GET", "http://"+m2.addr+"/v2/edge/big/blobs/"+layer, nil, nil)
	if resp.StatusCode != 200 || digest.FromBytes(body).String() != layer {
		t.Fatalf("GET after restart: %s, %d bytes, digest %s, want %s", resp.Status, len(body), digest.FromBytes(body), layer)
	}
	// The restarted mirror fetches only what was not on disk (plus the
	// response headers).
	if after, want := relay.BytesDown()-atKill, int64(len(body))-kept.Size(); after > want+64<<10 {
		t.Errorf("after the restart the link carried %d bytes, want at most the %d not on disk (%d kept of %d; %d before the kill)",
			after, want, kept.Size(), len(body), atKill)
	}
}
