package delta

import (
	"bytes"
	"math/bits"
)

// gearTable is the byte table of the gear rolling hash (as in FastCDC):
// h = h<<1 + gearTable[b]. Bit k of h depends on the last k+1 bytes, so the
// top bits, which decide whether a position is an anchor, depend on the
// last 64 bytes. Filled once from a fixed seed and never written again.
var gearTable = func() (g [256]uint64) {
	x := uint64(0x9e3779b97f4a7c15) // splitmix64
	for i := range g {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		g[i] = z ^ z>>31
	}
	return g
}()

const gearWindow = 64

// anchorIndex maps the gear hash at content-defined anchor positions of the
// bases to where they occur. Anchors depend only on the 64 bytes before
// them, so an identical run of a target finds the same anchors however far
// it moved: this is the long-distance matcher klauspost's zstd lacks, and
// what makes COPY operations out of renamed, moved or partly changed files.
type anchorIndex struct {
	limit uint64           // h is an anchor iff h < limit (its top bits are zero)
	m     map[uint64]int64 // anchor hash -> global position just after the window
}

// newAnchorIndex picks an average anchor spacing of 256 bytes, widened for
// very large bases so that the index stays under about 4M entries (~100 MiB).
func newAnchorIndex(total int64) *anchorIndex {
	k := max(8, bits.Len64(uint64(total)>>22))
	return &anchorIndex{
		limit: 1 << (64 - k),
		m:     make(map[uint64]int64, total>>k),
	}
}

// add indexes b, which starts at global position start. The first
// occurrence of an anchor hash wins.
func (x *anchorIndex) add(b []byte, start int64) {
	var h uint64
	for i, c := range b {
		h = h<<1 + gearTable[c]
		if h < x.limit && i >= gearWindow-1 {
			if _, ok := x.m[h]; !ok {
				x.m[h] = start + int64(i) + 1
			}
		}
	}
}

// commonPrefix returns the length of the longest common prefix of a and b.
func commonPrefix(a, b []byte) int {
	n := min(len(a), len(b))
	a, b = a[:n], b[:n]
	const chunk = 256
	i := 0
	for i+chunk <= n && bytes.Equal(a[i:i+chunk], b[i:i+chunk]) {
		i += chunk
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// commonSuffix returns the length of the longest common suffix of a and b.
func commonSuffix(a, b []byte) int {
	n := min(len(a), len(b))
	a, b = a[len(a)-n:], b[len(b)-n:]
	i := 0
	for i < n && a[n-1-i] == b[n-1-i] {
		i++
	}
	return i
}
