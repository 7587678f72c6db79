package httpserve

import (
	"context"
	"net"
	"net/http"
)

type connKey struct{}

// ConnContext is http.Server's ConnContext for a Server: it keeps each
// plain TCP connection in its requests' context, so that a response that
// would leave in two segments can be sent in one (see writeBody) and a
// broken response ends with a reset (see resetOnClose).
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*net.TCPConn); ok {
		return context.WithValue(ctx, connKey{}, tc)
	}
	return ctx
}

// corkAbove is the body size from which a response is corked: net/http
// writes the headers and the body through a 4 KiB buffer, so a body
// larger than this leaves in at least two writes, and each write wakes
// the client for a segment of its own.
const corkAbove = 3 << 10

// writeBody writes body, the whole response body after the headers, in
// one Write. A body larger than corkAbove is written with the connection
// corked (TCP_CORK on Linux) and flushed before it is uncorked, so that the
// kernel sends the headers and the body together, as nginx does with
// tcp_nopush: one wake-up of the client instead of two. Without a plain TCP
// connection (HTTP/2, TLS, tests) it is one Write.
func writeBody(w *recorder, r *http.Request, body []byte) error {
	tc, _ := r.Context().Value(connKey{}).(*net.TCPConn)
	if len(body) <= corkAbove || tc == nil || !setCork(tc, true) {
		_, err := w.Write(body)
		return err
	}
	defer setCork(tc, false)
	_, err := w.Write(body)
	w.Flush()
	return err
}

// resetOnClose makes the coming close of r's connection a TCP reset
// (SO_LINGER 0). A client reading a body without a length (HTTP/1.0) takes
// a plain close for the end of the body; a reset is the only way left to
// tell it that the body is broken.
func resetOnClose(r *http.Request) {
	if tc, _ := r.Context().Value(connKey{}).(*net.TCPConn); tc != nil {
		_ = tc.SetLinger(0)
	}
}
