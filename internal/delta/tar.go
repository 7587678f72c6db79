package delta

import (
	"bytes"
	"io"
	"path"
	"strconv"
	"strings"
)

// entry is the layout of one tar entry: where its header blocks (including
// any PAX or GNU long-name blocks before it) start, where its content starts
// and how many content bytes the archive stores.
type entry struct {
	name string
	hdr  int64
	data int64
	size int64
	typ  byte
}

func (e entry) end() int64 { return e.data + e.size }

const (
	tarBlock = 512
	// maxExtHeader bounds a PAX or GNU long-name header the encoder reads.
	// Larger ones end the tar walk; the rest is matched as opaque bytes.
	maxExtHeader = 1 << 20
)

// walkTar reports the entries of a tar archive in r. It reads only headers
// and walks the layout itself (rather than with archive/tar) because the
// codec needs exact byte offsets, including those of extension headers and
// of the physical data of sparse files. It stops without error at the end
// marker, at the end of r or at the first block that is not a valid header,
// and returns the offset where the entries end: everything after it (end
// marker, padding or unparsable bytes) is left to opaque matching. Names
// and types only steer heuristics, so a hostile archive can make the delta
// larger but never wrong.
func walkTar(r io.ReaderAt, size int64, fn func(entry) error) (int64, error) {
	var blk [tarBlock]byte
	pos := int64(0)
	for {
		start := pos
		var longName, paxPath string
		for {
			if size-pos < tarBlock {
				return start, nil
			}
			if _, err := r.ReadAt(blk[:], pos); err != nil {
				return start, nil
			}
			if !validHeader(&blk) {
				return start, nil
			}
			typ := blk[156]
			sz, ok := parseNumeric(blk[124:136])
			if !ok || sz < 0 || sz > size-pos-tarBlock {
				return start, nil
			}
			if typ == 'x' || typ == 'L' || typ == 'g' || typ == 'K' {
				if sz > maxExtHeader {
					return start, nil
				}
				ext := make([]byte, sz)
				if _, err := r.ReadAt(ext, pos+tarBlock); err != nil {
					return start, nil
				}
				switch typ {
				case 'x':
					if p, ok := paxRecord(ext, "path"); ok {
						paxPath = p
					}
				case 'L':
					longName = string(bytes.TrimRight(ext, "\x00"))
				}
				pos += tarBlock + roundBlock(sz)
				if typ == 'g' {
					// A global header stands on its own.
					start = pos
				}
				continue
			}
			if headerOnly(typ) {
				sz = 0
			}
			name := ustarName(&blk)
			switch {
			case paxPath != "":
				name = paxPath
			case longName != "":
				name = longName
			}
			e := entry{name: cleanName(name), hdr: start, data: pos + tarBlock, size: sz, typ: typ}
			if err := fn(e); err != nil {
				return start, err
			}
			pos = e.data + roundBlock(sz)
			break
		}
	}
}

func roundBlock(n int64) int64 { return (n + tarBlock - 1) &^ (tarBlock - 1) }

// headerOnly reports types whose size field does not count stored bytes,
// as archive/tar treats them.
func headerOnly(typ byte) bool {
	switch typ {
	case '1', '2', '3', '4', '5', '6':
		return true
	}
	return false
}

// validHeader checks the header checksum (unsigned or signed sum, as
// archive/tar accepts both); an all-zero block is not a header.
func validHeader(b *[tarBlock]byte) bool {
	want, ok := parseNumeric(b[148:156])
	if !ok {
		return false
	}
	var u, s int64
	for i, c := range b {
		if i >= 148 && i < 156 {
			c = ' '
		}
		u += int64(c)
		s += int64(int8(c))
	}
	return u != 8*' ' && (want == u || want == s)
}

// parseNumeric parses a tar numeric field: octal text or GNU base-256.
func parseNumeric(b []byte) (int64, bool) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		if b[0]&0x40 != 0 { // negative
			return 0, false
		}
		var v int64
		for i, c := range b {
			if i == 0 {
				c &= 0x7f
			}
			if v > (1<<62)>>8 {
				return 0, false
			}
			v = v<<8 | int64(c)
		}
		return v, true
	}
	s := strings.Trim(string(b), " \x00")
	if s == "" {
		return 0, true
	}
	v, err := strconv.ParseInt(s, 8, 64)
	return v, err == nil
}

func ustarName(b *[tarBlock]byte) string {
	name := cstr(b[0:100])
	if string(b[257:262]) == "ustar" {
		if prefix := cstr(b[345:500]); prefix != "" {
			name = prefix + "/" + name
		}
	}
	return name
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// paxRecord finds key in PAX extended header records ("%d %s=%s\n").
func paxRecord(b []byte, key string) (string, bool) {
	for len(b) > 0 {
		sp := bytes.IndexByte(b, ' ')
		if sp <= 0 {
			return "", false
		}
		n, err := strconv.Atoi(string(b[:sp]))
		if err != nil || n <= sp || n > len(b) {
			return "", false
		}
		rec := b[sp+1 : n]
		b = b[n:]
		if len(rec) == 0 || rec[len(rec)-1] != '\n' {
			return "", false
		}
		k, v, ok := bytes.Cut(rec[:len(rec)-1], []byte{'='})
		if ok && string(k) == key {
			return string(v), true
		}
	}
	return "", false
}

func cleanName(n string) string {
	n = strings.TrimPrefix(n, "./")
	n = strings.Trim(n, "/")
	return n
}

// versionless replaces every run of digits with '#', so that libfoo.so.1.2
// and libfoo.so.1.3, or pkg@4.21.1/index.js and pkg@4.21.2/index.js, meet.
func versionless(s string) string {
	var b strings.Builder
	digits := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '0' && c <= '9' {
			if !digits {
				b.WriteByte('#')
			}
			digits = true
			continue
		}
		digits = false
		b.WriteByte(c)
	}
	return b.String()
}

func baseName(s string) string { return path.Base(s) }
