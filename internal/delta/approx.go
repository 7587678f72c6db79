package delta

// Approximate matches, after bsdiff (Colin Percival, "Naive differences of
// executable code", 2003). When a program is rebuilt after a small change,
// most of its code and data move by a few bytes and every address that
// crosses the change differs: exact runs are short, but at the right
// alignment most bytes still match. An ADD operation covers such a stretch
// with the base bytes plus the bytewise differences, which are mostly zero
// and compress far better than the target bytes themselves.
//
// Alignments come from the COPY or ADD just before a gap, from the entry
// pairing (hint) and from the exact runs the anchor scan found inside the
// gap that were too short for a COPY (seeds). Between two alignments the
// gap is split as bsdiff splits it: the previous alignment is extended
// forward and the next one backward, each as far as it matches more bytes
// than it misses, and what neither covers is literal.

// align says that target position p lines up with offset p+d of a base.
type align struct {
	base int
	d    int64
}

// seed is an exact run found by the anchor scan: n target bytes at t equal
// the base bytes at t+a.d.
type seed struct {
	t int64
	n int
	a align
}

const (
	// minAdd is the shortest ADD worth its control bytes; shorter aligned
	// stretches are left to the literal frames.
	minAdd = 32
	// giveUp ends an extension once its score has fallen this far below
	// its best: the alignment is lost.
	giveUp = 256
	// keepSlack is how many more bytes a seed must match than the current
	// alignment does over the seed's run before cover switches to it.
	keepSlack = 8
	// missPenalty weighs a byte an extension gets wrong against one it
	// gets right: an ADD must predict at least two thirds of its bytes.
	// bsdiff's 1 (half) measured larger deltas on the shared corpus, since
	// the literal frames, which have the base as dictionary, code poorly
	// aligned stretches better (ADR 0007).
	missPenalty = 2
)

// cover covers target bytes t at tpos, in which no COPY was found, with ADD
// operations where an alignment predicts most bytes and literals elsewhere.
// seeds are in target order; those outside t are ignored.
func (e *encoder) cover(tpos int64, t []byte, h *hint, seeds []seed) error {
	cur, ok := e.startAlign(tpos, h)
	pos := 0 // bytes of t before pos are covered
	for _, s := range seeds {
		st := int(s.t - tpos)
		if st < pos || st >= len(t) {
			continue
		}
		if ok && s.a == cur {
			continue
		}
		n := min(s.n, len(t)-st)
		if ok && e.matching(cur, tpos+int64(st), t[st:st+n]) >= n-keepSlack {
			continue
		}
		var lenf int
		if ok {
			lenf = e.forward(cur, tpos+int64(pos), t[pos:st])
		}
		lenb := e.backward(s.a, tpos+int64(st), t[pos:st])
		if over := lenf + lenb - (st - pos); over > 0 {
			// Both extensions claim the middle: split it where the
			// previous alignment stops doing better than the next.
			x := st - lenb
			score, best, lens := 0, 0, 0
			for i := range over {
				if e.matchAt(cur, tpos+int64(x+i), t[x+i]) {
					score++
				}
				if e.matchAt(s.a, tpos+int64(x+i), t[x+i]) {
					score--
				}
				if score > best {
					best, lens = score, i+1
				}
			}
			lenf += lens - over
			lenb -= lens
		}
		if err := e.emitAligned(tpos, t, pos, lenf, cur, ok, h); err != nil {
			return err
		}
		if err := e.addLiteral(tpos+int64(pos+lenf), t[pos+lenf:st-lenb], h); err != nil {
			return err
		}
		pos, cur, ok = st-lenb, s.a, true
	}
	var lenf int
	if ok {
		lenf = e.forward(cur, tpos+int64(pos), t[pos:])
	}
	if err := e.emitAligned(tpos, t, pos, lenf, cur, ok, h); err != nil {
		return err
	}
	return e.addLiteral(tpos+int64(pos+lenf), t[pos+lenf:], h)
}

// emitAligned emits t[pos:pos+n] as an ADD at alignment a, or as literals
// if it is too short to be worth one.
func (e *encoder) emitAligned(tpos int64, t []byte, pos, n int, a align, ok bool, h *hint) error {
	if n == 0 {
		return nil
	}
	if !ok || n < minAdd {
		return e.addLiteral(tpos+int64(pos), t[pos:pos+n], h)
	}
	return e.addAdd(tpos+int64(pos), t[pos:pos+n], a)
}

// startAlign is the alignment a gap at tpos starts with: that of the COPY or
// ADD that ends there, else the hint's.
func (e *encoder) startAlign(tpos int64, h *hint) (align, bool) {
	if e.lastEnd == tpos {
		return e.lastAlign, true
	}
	if h != nil && h.base >= 0 {
		return align{base: h.base, d: h.delta}, true
	}
	return align{}, false
}

// baseAt returns the bytes of a's base that line up with target [tpos,
// tpos+n), clipped to the base: the first skip target bytes have none.
func (e *encoder) baseAt(a align, tpos int64, n int) (b []byte, skip int) {
	base := e.bases[a.base].b
	lo, hi := tpos+a.d, tpos+a.d+int64(n)
	if lo < 0 {
		skip = int(-lo)
		lo = 0
	}
	hi = min(hi, int64(len(base)))
	if lo >= hi {
		return nil, min(skip, n)
	}
	return base[lo:hi], skip
}

func (e *encoder) matchAt(a align, tpos int64, c byte) bool {
	o := tpos + a.d
	base := e.bases[a.base].b
	return o >= 0 && o < int64(len(base)) && base[o] == c
}

// matching counts the bytes of t (at tpos) that alignment a predicts.
func (e *encoder) matching(a align, tpos int64, t []byte) int {
	b, skip := e.baseAt(a, tpos, len(t))
	t = t[skip:]
	n := 0
	for i := range b {
		if t[i] == b[i] {
			n++
		}
	}
	return n
}

// forward returns the length of the prefix of t (at tpos) that alignment a
// covers best: the one maximising matches minus missPenalty times misses.
func (e *encoder) forward(a align, tpos int64, t []byte) int {
	b, skip := e.baseAt(a, tpos, len(t))
	if skip > 0 {
		return 0
	}
	score, best, n := 0, 0, 0
	for i := range b {
		if t[i] == b[i] {
			score++
		} else {
			score -= missPenalty
		}
		if score > best {
			best, n = score, i+1
		} else if score < best-giveUp {
			break
		}
	}
	return n
}

// backward returns the length of the suffix of t (ending at target tend)
// that alignment a covers best.
func (e *encoder) backward(a align, tend int64, t []byte) int {
	base := e.bases[a.base].b
	o := tend + a.d // base offset lined up with tend
	if o <= 0 || o > int64(len(base)) {
		return 0
	}
	m := int(min(int64(len(t)), o))
	b := base[o-int64(m) : o]
	t = t[len(t)-m:]
	score, best, n := 0, 0, 0
	for i := 1; i <= m; i++ {
		if t[m-i] == b[m-i] {
			score++
		} else {
			score -= missPenalty
		}
		if score > best {
			best, n = score, i
		} else if score < best-giveUp {
			break
		}
	}
	return n
}
