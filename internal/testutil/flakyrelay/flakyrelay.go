// Package flakyrelay is an in-process TCP relay for tests that stands
// between a client (the mirror) and a real server (an upstream registry)
// and breaks the link the way a cellular modem does: it cuts connections
// after a number of bytes, throttles, stalls, blackholes and refuses.
//
// Faults act on the upstream→client direction where they are about bytes
// (that is where blob bodies flow) and on both directions where they are
// about silence. Every setting may be changed at any time from any
// goroutine; a change applies to the connections already open.
//
// Counters are updated before the effect they count can be seen by either
// peer: once a client has read k bytes, BytesDown() >= k; once it has seen
// a cut, Cuts() includes it. Tests can therefore assert them exactly
// without waiting. BytesDown counts what the relay wrote to the client's
// socket; a cut is a reset (RST), which may discard bytes the client had not
// read yet, as a broken link does, so a client may receive fewer.
package flakyrelay

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// maxChunk is the most the relay reads from one side before forwarding.
// Throttled links use smaller chunks (see chunk) so bytes leave smoothly.
const maxChunk = 32 << 10

// errCut ends a pump whose connection the relay cut on purpose.
var errCut = errors.New("flakyrelay: connection cut")

// Relay is a running relay. Create it with New.
type Relay struct {
	target string
	ln     net.Listener
	ctx    context.Context // cancelled by Close; parent of every connection's context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and one serve goroutine per connection
	once   sync.Once

	bytesDown atomic.Int64
	bytesUp   atomic.Int64
	accepted  atomic.Int64
	cuts      atomic.Int64

	mu        sync.Mutex
	closed    bool
	conns     map[*conn]struct{}
	changed   chan struct{} // closed and replaced whenever a setting changes
	stalled   bool
	blackhole bool
	refuse    bool
	cutEvery  int64 // per connection, 0 = off
	cutAt     int64 // value of admitted at which to cut once; armed if cutArmed
	cutArmed  bool
	admitted  int64  // downstream bytes admitted since New (not corrected for failed writes)
	downRate  bucket // upstream→client, all connections together
	upRate    bucket // client→upstream, all connections together
}

// bucket is a token bucket of one direction; guarded by Relay.mu.
type bucket struct {
	rate     int64 // bytes per second; 0 = unlimited
	tokens   float64
	refilled time.Time
}

// burst is the bucket's size: 100 ms of traffic.
func (b *bucket) burst() int64 { return max(b.rate/10, 1) }

func (b *bucket) set(bytesPerSecond int64) {
	b.rate = max(bytesPerSecond, 0)
	b.tokens = float64(b.burst())
	b.refilled = time.Now()
}

// take takes n bytes and returns how long to wait for the debt to clear.
func (b *bucket) take(n int) time.Duration {
	now := time.Now()
	b.tokens += now.Sub(b.refilled).Seconds() * float64(b.rate)
	b.tokens = min(b.tokens, float64(b.burst()))
	b.refilled = now
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / float64(b.rate) * float64(time.Second))
}

func (r *Relay) bucket(down bool) *bucket {
	if down {
		return &r.downRate
	}
	return &r.upRate
}

// New starts a relay on 127.0.0.1 that forwards every connection to target
// (host:port). It is closed, with every connection, when the test ends.
func New(t testing.TB, target string) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("flakyrelay: listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Relay{
		target:  target,
		ln:      ln,
		ctx:     ctx,
		cancel:  cancel,
		conns:   map[*conn]struct{}{},
		changed: make(chan struct{}),
	}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.Close)
	return r
}

// Addr returns the host:port clients should dial instead of the target.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// URL returns "http://" + Addr().
func (r *Relay) URL() string { return "http://" + r.Addr() }

// Close stops accepting, resets every connection and returns when all the
// relay's goroutines have ended. It is safe to call more than once.
func (r *Relay) Close() {
	r.once.Do(func() {
		r.ln.Close()
		r.mu.Lock()
		r.closed = true
		open := r.snapshot()
		r.mu.Unlock()
		r.cancel()
		for _, c := range open {
			c.abort()
		}
		r.wg.Wait()
	})
}

// CutEvery resets each connection once it has carried n bytes upstream→
// client, counted per connection from its start; n <= 0 turns it off. A
// connection that has already carried n bytes is cut before its next byte.
func (r *Relay) CutEvery(n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cutEvery = max(n, 0)
}

// CutAfterTotal resets, once, the connection that brings the upstream→client
// bytes carried by all connections since this call to n: the bytes up to n
// are forwarded, then that connection is cut. n <= 0 disarms it.
func (r *Relay) CutAfterTotal(n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cutArmed = n > 0
	r.cutAt = r.admitted + n
}

// Throttle limits upstream→client bytes of all connections together to
// bytesPerSecond, with a burst of a tenth of a second; bytesPerSecond <= 0
// removes the limit. Each call starts a full bucket.
func (r *Relay) Throttle(bytesPerSecond int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.downRate.set(bytesPerSecond)
	r.broadcast()
}

// ThrottleUp is Throttle for client→upstream bytes (an uplink: what a
// client uploads).
func (r *Relay) ThrottleUp(bytesPerSecond int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.upRate.set(bytesPerSecond)
	r.broadcast()
}

// Stall stops forwarding in both directions while keeping every connection
// open, as a link that went silent. New connections are still dialed.
// Bytes already handed to the kernel still arrive; no byte read after Stall
// returns is forwarded before Resume.
func (r *Relay) Stall() { r.set(&r.stalled, true) }

// Resume undoes Stall. It does not lift a blackhole.
func (r *Relay) Resume() { r.set(&r.stalled, false) }

// Blackhole makes the upstream silently drop everything: new connections
// are accepted but neither dialed nor answered, and open ones stop
// forwarding as with Stall. Turning it off lets held connections dial and
// everything flow again (unless stalled), as TCP does after a link returns.
func (r *Relay) Blackhole(on bool) { r.set(&r.blackhole, on) }

// Refuse makes the relay reset every new connection as soon as it is
// accepted (an upstream that is down). Open connections are not affected.
func (r *Relay) Refuse(on bool) { r.set(&r.refuse, on) }

// DropAll resets every open connection now, including those held by a
// blackhole. Each counts as a cut.
func (r *Relay) DropAll() {
	r.mu.Lock()
	open := r.snapshot()
	r.mu.Unlock()
	for _, c := range open {
		r.cut(c)
	}
}

// BytesDown returns the upstream→client bytes forwarded so far.
func (r *Relay) BytesDown() int64 { return r.bytesDown.Load() }

// BytesUp returns the client→upstream bytes forwarded so far.
func (r *Relay) BytesUp() int64 { return r.bytesUp.Load() }

// Conns returns the number of connections accepted, refused ones included.
func (r *Relay) Conns() int { return int(r.accepted.Load()) }

// Cuts returns the number of connections the relay cut on purpose (CutEvery,
// CutAfterTotal, DropAll). Refusals, Close and resets passed on from a peer
// are not cuts.
func (r *Relay) Cuts() int { return int(r.cuts.Load()) }

func (r *Relay) set(flag *bool, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*flag = on
	r.broadcast()
}

// broadcast wakes every goroutine waiting for a setting to change. r.mu
// must be held.
func (r *Relay) broadcast() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// snapshot returns the open connections. r.mu must be held.
func (r *Relay) snapshot() []*conn {
	open := make([]*conn, 0, len(r.conns))
	for c := range r.conns {
		open = append(open, c)
	}
	return open
}

// chunk returns how many bytes of a direction to read at once.
func (r *Relay) chunk(down bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.bucket(down)
	if b.rate == 0 {
		return maxChunk
	}
	return int(min(b.burst(), maxChunk))
}

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		nc, err := r.ln.Accept()
		if err != nil {
			return // closed
		}
		r.mu.Lock()
		r.accepted.Add(1) // under r.mu: once Conns counts c, DropAll sees it
		if r.refuse || r.closed {
			r.mu.Unlock()
			reset(nc)
			continue
		}
		ctx, cancel := context.WithCancel(r.ctx)
		c := &conn{client: nc, ctx: ctx, cancel: cancel}
		r.conns[c] = struct{}{}
		r.wg.Add(1)
		r.mu.Unlock()
		go r.serve(c)
	}
}

// serve dials the target for c (once no blackhole holds it) and forwards
// both directions until both have ended or c is cut.
func (r *Relay) serve(c *conn) {
	defer r.wg.Done()
	defer func() {
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
	}()
	if r.wait(c, r.dialable) != nil {
		return
	}
	r.mu.Unlock()
	var d net.Dialer
	u, err := d.DialContext(c.ctx, "tcp", r.target)
	if err != nil {
		c.abort() // the client sees a reset where the target refused
		return
	}
	if !c.setUpstream(u) {
		return
	}
	downDone := make(chan struct{})
	go func() {
		defer close(downDone)
		r.forward(c, c.client, u, true)
	}()
	r.forward(c, u, c.client, false)
	<-downDone
	c.close()
}

// forward runs one direction. At the source's EOF it half-closes the
// destination, as the peer did; on any other end it resets both sides.
// Like bytes, a peer's FIN or reset does not cross a silent link: it is
// passed on when the link flows again.
func (r *Relay) forward(c *conn, dst, src net.Conn, down bool) {
	err := r.pump(c, dst, src, down)
	if r.wait(c, r.flowing) != nil {
		c.abort()
		return
	}
	r.mu.Unlock()
	if errors.Is(err, io.EOF) {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
			return
		}
	}
	c.abort()
}

func (r *Relay) pump(c *conn, dst, src net.Conn, down bool) error {
	buf := make([]byte, maxChunk)
	for {
		n, rerr := src.Read(buf[:r.chunk(down)])
		if err := r.send(c, dst, buf[:n], down); err != nil {
			return err
		}
		if rerr != nil {
			return rerr
		}
	}
}

// send forwards p to dst once the link lets it, counting what it forwards,
// and cuts c where a cut setting says so.
func (r *Relay) send(c *conn, dst net.Conn, p []byte, down bool) error {
	for len(p) > 0 {
		if err := r.throttle(c, len(p), down); err != nil {
			return err
		}
		k, cut, err := r.admit(c, len(p), down)
		if err != nil {
			return err
		}
		var werr error
		if k > 0 {
			var w int
			w, werr = dst.Write(p[:k])
			if w < k { // count what was written, not what was meant to be
				r.counter(down).Add(int64(w - k))
			}
		}
		if cut {
			r.cut(c)
			return errCut
		}
		if werr != nil {
			return werr
		}
		p = p[k:]
	}
	return nil
}

func (r *Relay) counter(down bool) *atomic.Int64 {
	if down {
		return &r.bytesDown
	}
	return &r.bytesUp
}

// admit waits until the link is neither stalled nor blackholed, then
// returns how many of n bytes c may forward now and whether c must be cut
// right after them. It counts the admitted bytes under the same lock that
// Stall takes, so no byte is admitted after Stall returns.
func (r *Relay) admit(c *conn, n int, down bool) (k int, cut bool, err error) {
	if err := r.wait(c, r.flowing); err != nil {
		return 0, false, err
	}
	defer r.mu.Unlock() // wait returns with r.mu held
	if !down {
		r.bytesUp.Add(int64(n))
		return n, false, nil
	}
	k64 := int64(n)
	if r.cutEvery > 0 {
		if left := r.cutEvery - c.down; left <= k64 {
			k64, cut = max(left, 0), true
		}
	}
	if r.cutArmed {
		if left := r.cutAt - r.admitted; left <= k64 {
			k64, cut = max(left, 0), true
			r.cutArmed = false
		}
	}
	c.down += k64
	r.admitted += k64
	r.bytesDown.Add(k64)
	return int(k64), cut, nil
}

// wait blocks until ok (called with r.mu held) is true or c ends. It
// returns nil with r.mu still held, so the caller acts on the state ok saw.
func (r *Relay) wait(c *conn, ok func() bool) error {
	for {
		r.mu.Lock()
		if err := c.ctx.Err(); err != nil {
			r.mu.Unlock()
			return err
		}
		if ok() {
			return nil
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-c.ctx.Done():
		}
	}
}

// flowing reports whether bytes may cross the link. r.mu must be held.
func (r *Relay) flowing() bool { return !r.stalled && !r.blackhole }

// dialable reports whether a new connection may be dialed. r.mu must be held.
func (r *Relay) dialable() bool { return !r.blackhole }

// throttle takes n bytes of a direction from its token bucket, waiting
// while it is in debt. A settings change ends the wait early: the bucket
// was refilled or the link stalled, and admit deals with the rest.
func (r *Relay) throttle(c *conn, n int, down bool) error {
	r.mu.Lock()
	b := r.bucket(down)
	if b.rate == 0 {
		r.mu.Unlock()
		return nil
	}
	d := b.take(n)
	changed := r.changed
	r.mu.Unlock()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-changed:
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
	return nil
}

// cut resets c and counts it if it was still open.
func (r *Relay) cut(c *conn) {
	c.end(func(u net.Conn) {
		r.cuts.Add(1) // before the reset, so a peer that sees it sees the count
		reset(c.client)
		if u != nil {
			reset(u)
		}
	})
}

// conn is one relayed connection.
type conn struct {
	client net.Conn
	ctx    context.Context // done once c has ended
	cancel context.CancelFunc
	down   int64 // downstream bytes admitted; guarded by Relay.mu

	mu       sync.Mutex
	upstream net.Conn // nil until dialed
	ended    bool
}

// setUpstream records u, or closes it and reports false if c has ended.
func (c *conn) setUpstream(u net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		u.Close()
		return false
	}
	c.upstream = u
	return true
}

// end runs how (with the upstream connection, nil if not dialed) the first
// time c ends, and cancels c's context.
func (c *conn) end(how func(u net.Conn)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	c.ended = true
	how(c.upstream)
	c.cancel()
}

// abort resets both sides of c.
func (c *conn) abort() {
	c.end(func(u net.Conn) {
		reset(c.client)
		if u != nil {
			reset(u)
		}
	})
}

// close closes both sides of c normally, after both directions ended.
func (c *conn) close() {
	c.end(func(u net.Conn) {
		c.client.Close()
		u.Close()
	})
}

// reset closes nc with an RST where the platform allows it, so the peer
// sees a broken connection rather than an orderly end.
func reset(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	nc.Close()
}
