package httpserve_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/registry-edge/registry-edge/internal/httpserve"
)

// A cached blob held in memory but larger than net/http's 4 KiB write
// buffer leaves in one TCP segment with the server's ConnContext (headers
// and body together, as nginx sends them with tcp_nopush), where net/http
// alone sends two: each segment wakes the client once.
func TestInMemoryBlobLeavesInOneSegment(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	path, layer := m.cached(10 << 10)

	h := m.srv.Config.Handler
	if got := dataSegmentsOut(t, h, httpserve.ConnContext, path, layer); got != 1 {
		t.Errorf("with ConnContext the response left in %d data segments, want 1", got)
	}
	// The control shows that the count tells the two apart.
	if got := dataSegmentsOut(t, h, nil, path, layer); got < 2 {
		t.Errorf("without ConnContext the response left in %d data segment(s): net/http no longer splits it, and the cork may be dropped", got)
	}
}

// dataSegmentsOut serves one GET of path with h on a fresh loopback
// connection, checks that the body is want, and returns how many data
// segments the server's socket sent (TCP_INFO).
func dataSegmentsOut(t *testing.T, h http.Handler, connContext func(context.Context, net.Conn) context.Context, path string, want []byte) uint32 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	srv := &http.Server{Handler: h, ConnContext: func(ctx context.Context, c net.Conn) context.Context {
		accepted <- c
		if connContext != nil {
			return connContext(ctx, c)
		}
		return ctx
	}}
	go srv.Serve(ln)
	defer srv.Close()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: mirror.test\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, resp.ContentLength))
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, want) {
		t.Fatalf("GET %s: %d, %d bytes (%v), want 200 and %d bytes", path, resp.StatusCode, len(body), err, len(want))
	}

	rc, err := (<-accepted).(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return info.Data_segs_out
}
