package httpserve_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
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
