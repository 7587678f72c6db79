// Package hangnet makes listeners that hang their clients, for tests of
// timeouts and circuit breakers: connect attempts that never complete, like
// a blackholed host, or connections that never get an answer.
package hangnet

import (
	"net"
	"testing"
)

// Silent returns a listener on 127.0.0.1 that accepts connections and
// never answers on them, like a peer that took the connection and hung
// (not even a TLS handshake), and a channel that receives a value for each
// accepted connection (dropped when nobody takes it). Test cleanup closes
// the listener and the connections.
func Silent(t testing.TB) (net.Listener, <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{}, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln, accepted
}
