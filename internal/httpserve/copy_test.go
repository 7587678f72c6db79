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
