package hangnet

import (
	"net"
	"os"
	"syscall"
	"testing"
)

// ZeroBacklog returns a listener on 127.0.0.1 with a listen backlog of 0:
// once its queue holds a connection that nobody accepts, the kernel drops
// further SYNs, so new connects hang until their timeout. The caller
// closes it.
func ZeroBacklog(t testing.TB) net.Listener {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "zero-backlog")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
