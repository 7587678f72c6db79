package httpserve_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
)

// readFromRecorder is a ResponseWriter with io.ReaderFrom, like net/http's,
// which turns ReadFrom from an *os.File into sendfile.
type readFromRecorder struct {
	*httptest.ResponseRecorder
	readFrom int
}

func (w *readFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	w.readFrom++
	return io.Copy(w.ResponseRecorder, src)
}

// A stored blob leaves through a buffered copy, not through ReadFrom:
// sendfile measured slower and dearer here (ADR 0015).
func TestStoredBlobIsCopiedNotSentWithSendfile(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	path, layer := m.cached(1 << 20) // above the in-memory cache's item limit

	for _, rng := range []string{"", "bytes=1000-"} {
		w := &readFromRecorder{ResponseRecorder: httptest.NewRecorder()}
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		m.srv.Config.Handler.ServeHTTP(w, req)
		want := layer
		if rng != "" {
			want = layer[1000:]
		}
		if w.Code/100 != 2 || !bytes.Equal(w.Body.Bytes(), want) {
			t.Fatalf("cached GET (Range %q): %d, %d bytes, want %d", rng, w.Code, w.Body.Len(), len(want))
		}
		if w.readFrom != 0 {
			t.Errorf("cached GET (Range %q) used the ResponseWriter's ReadFrom %d times, want a buffered copy", rng, w.readFrom)
		}
	}
}

// lineSignal is an access log that hands each line to a channel.
type lineSignal chan string

func (l lineSignal) Write(p []byte) (int, error) {
	l <- string(p)
	return len(p), nil
}

// A client that stops reading a blob (a device gone quiet, a client that
// holds its TCP window shut) has its connection dropped once no write
// got through for Options.WriteStallTimeout, instead of holding the
// connection, a goroutine and the open blob for good.
func TestClientThatStopsReadingIsDropped(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	const size = 32 << 20 // well over what the socket buffers hold
	path, _ := m.cached(size)
	lines := make(lineSignal, 16)
	m.accessLog, m.writeStall = lines, 100*time.Millisecond
	m.restart()

	c, err := net.Dial("tcp", m.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: mirror\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Read nothing until the mirror has given up on this client.
	select {
	case line := <-lines:
		if !strings.Contains(line, "err=") {
			t.Errorf("access log: %s, want the abandoned answer logged with its error", line)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the mirror still waits for a client that reads nothing")
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return // dropped before the headers left: fine too
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || n >= size {
		t.Errorf("the stalled client read %d of %d bytes, err %v: want a broken body", n, size, err)
	}
}

// Over HTTP/2 a write deadline passes whether or not anything is being
// written, and resets the stream: an answer waiting for a fill's next
// bytes (an upstream that pauses: a resume, bytes on disk sent again) for
// longer than Options.WriteStallTimeout had its client cut, while over
// HTTP/1.1 the client waits on. The deadline is lifted while the answer
// waits for the fill: the HTTP/2 client gets the whole blob.
func TestHTTP2ClientWaitsForAPausedFill(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	const stall = time.Second
	m.writeStall, m.http2 = stall, true
	m.restart()
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	release := make(chan struct{})
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, d.String(), fakeupstream.Stall(layer, 100_000, release)))

	resp, err := m.srv.Client().Get(m.srv.URL + blobPath("app", d))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s, want HTTP/2 200", resp.Proto, resp.Status)
	}
	first := make([]byte, 100_000)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("the bytes before the pause: %v", err)
	}
	// The pause: longer than the write stall limit, whatever the machine's
	// load (only real time passes a write deadline).
	time.Sleep(2*stall + stall/2)
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("after a %s pause of the upstream: %v (the stream was reset)", 2*stall+stall/2, err)
	}
	if got := append(first, rest...); !bytes.Equal(got, layer) {
		t.Errorf("got %d bytes, want the layer's %d", len(got), len(layer))
	}
}
