package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"
)

// writeJSON writes v as one indented JSON document.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newTable returns a tab-separated table writer; Flush prints it aligned,
// with control characters in its cells shown as \xNN (escapeWriter).
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(escapeWriter{w}, 0, 0, 2, ' ', 0)
}

// escapeWriter writes control characters other than newlines as \xNN.
// Tables show strings that come from registries (platforms of an index,
// annotations, certificate subjects, error messages), and an escape
// sequence in one would be run by the terminal.
type escapeWriter struct{ w io.Writer }

func (e escapeWriter) Write(p []byte) (int, error) {
	if !bytes.ContainsFunc(p, escaped) {
		return e.w.Write(p)
	}
	var b bytes.Buffer
	for rest := p; len(rest) > 0; {
		r, n := utf8.DecodeRune(rest)
		if escaped(r) {
			fmt.Fprintf(&b, "\\x%02x", r)
		} else {
			b.Write(rest[:n]) // invalid UTF-8 as it was
		}
		rest = rest[n:]
	}
	if _, err := e.w.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// escaped reports whether escapeWriter escapes r.
func escaped(r rune) bool { return r != '\n' && unicode.IsControl(r) }

// shortDigest is "sha256:" and the first 12 hex digits, as tables show
// digests.
func shortDigest(d digest.Digest) string {
	s := d.String()
	if i := strings.IndexByte(s, ':'); i >= 0 && len(s) > i+13 {
		return s[:i+13]
	}
	return s
}

// humanSize formats n bytes with binary units: "512 B", "3.4 KiB".
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// savingPercent is the part of full that part saves, in percent with one
// decimal; 0 when full is 0.
func savingPercent(full, part int64) float64 {
	if full <= 0 {
		return 0
	}
	return math.Round(1000*(1-float64(part)/float64(full))) / 10
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progress draws one transient progress line on stderr, when stderr is a
// terminal; otherwise it does nothing. It is safe for concurrent use (the
// delta encoder reports from its own goroutines).
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	on    bool
	now   func() time.Time
	last  time.Time
	shown bool
}

// newProgress returns a progress line on w, drawn only if w is a terminal.
func newProgress(w io.Writer) *progress {
	return &progress{w: w, on: isTerminal(w), now: time.Now}
}

// progressInterval bounds how often the line is redrawn.
const progressInterval = 100 * time.Millisecond

// bar shows label with done of total bytes.
func (p *progress) bar(label string, done, total int64) {
	if p == nil || !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.shown && done < total && now.Sub(p.last) < progressInterval {
		return
	}
	p.last = now
	const width = 24
	frac := 1.0
	if total > 0 {
		frac = min(1, float64(done)/float64(total))
	}
	filled := int(frac * width)
	fmt.Fprintf(p.w, "\r\033[K%s [%s%s] %3.0f%% %s/%s", label,
		strings.Repeat("=", filled), strings.Repeat(" ", width-filled), 100*frac, humanSize(done), humanSize(total))
	p.shown = true
}

// status shows label alone (a step without a measure of progress).
func (p *progress) status(label string) {
	if p == nil || !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "\r\033[K%s", label)
	p.shown = true
}

// clear erases the line.
func (p *progress) clear() {
	if p == nil || !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
		p.shown = false
	}
}

// reader returns r, reporting the bytes read from it under label.
func (p *progress) reader(r io.Reader, label string, total int64) io.Reader {
	if p == nil || !p.on {
		return r
	}
	return &progressReader{r: r, p: p, label: label, total: total}
}

type progressReader struct {
	r     io.Reader
	p     *progress
	label string
	n     int64
	total int64
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.n += int64(n)
	pr.p.bar(pr.label, pr.n, pr.total)
	return n, err
}
