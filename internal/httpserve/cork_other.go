//go:build !linux

package httpserve

import "net"

// setCork is a no-op where TCP_CORK does not exist.
func setCork(*net.TCPConn, bool) bool { return false }
