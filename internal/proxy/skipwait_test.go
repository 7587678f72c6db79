package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeclock"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// resendChunk is how many bytes of the blob rangeIgnoringUpstream sends
// again per release.
const resendChunk = 32 << 10

// rangeIgnoringUpstream serves one blob over a link that breaks after its
// first cut bytes. Asked for the rest, it ignores the range and sends the
// whole blob: the cut bytes (on the fill's disk already) one chunk per
// receive from release, the rest at once.
type rangeIgnoringUpstream struct {
	Upstream
	content []byte
	cut     int
	release chan struct{}
}

func (u rangeIgnoringUpstream) Blob(ctx context.Context, _ string, _ digest.Digest, offset int64, _ string) (*upstream.BlobResponse, error) {
	size := int64(len(u.content))
	if offset == 0 {
		body := io.MultiReader(bytes.NewReader(u.content[:u.cut]), iotest.ErrReader(io.ErrUnexpectedEOF))
		return &upstream.BlobResponse{Body: io.NopCloser(body), Size: size, End: size}, nil
	}
	body := &resentBody{ctx: ctx, content: u.content, gated: u.cut, release: u.release}
	return &upstream.BlobResponse{Body: io.NopCloser(body), Size: size, End: size}, nil
}

type resentBody struct {
	ctx     context.Context
	content []byte
	off     int
	gated   int // bytes before this one wait for release, a chunk at a time
	release chan struct{}
}

func (b *resentBody) Read(p []byte) (int, error) {
	if b.off == len(b.content) {
		return 0, io.EOF
	}
	if b.off < b.gated {
		select {
		case <-b.release:
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
		p = p[:min(len(p), resendChunk, b.gated-b.off)]
	}
	n := copy(p, b.content[b.off:])
	b.off += n
	return n, nil
}

// resendSetup is a proxy on clk whose upstream ignores the range of the
// fill's resume (rangeIgnoringUpstream), and a client of the blob that has
// read the bytes of the first answer, all that is on disk.
type resendSetup struct {
	up     rangeIgnoringUpstream
	client io.ReadCloser
}

func newResendSetup(t *testing.T, clk *fakeclock.Clock, stall time.Duration) *resendSetup {
	t.Helper()
	up := rangeIgnoringUpstream{content: fakeupstream.Random(t, 1<<20), cut: 20 * resendChunk, release: make(chan struct{})}
	fs, db := newStoreAndDB(t)
	// The fill's own stall limit (real time) must not cut the body while
	// the test holds it.
	p := New(fs, db, nil, Options{Now: clk.Now, After: clk.After, ClientStallTimeout: stall, FillStallTimeout: time.Hour, FillTimeout: time.Hour})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.Close(ctx)
	})
	target := Target{Remote: &Remote{Name: "central.test", Client: up}, Repo: meta.Repo{Registry: "central.test", Name: "app"}}
	res, err := p.Blob(context.Background(), target, digest.FromBytes(up.content))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Content.Close() })
	head := make([]byte, up.cut)
	if _, err := io.ReadFull(res.Content, head); err != nil || !bytes.Equal(head, up.content[:up.cut]) {
		t.Fatalf("the bytes of the first answer: %v (equal=%v)", err, bytes.Equal(head, up.content[:up.cut]))
	}
	return &resendSetup{up: up, client: res.Content}
}

type readResult struct {
	b   []byte
	err error
}

// readRest reads the rest of the blob in the background, once it has
// started waiting for bytes (its stall limit armed on clk).
func (s *resendSetup) readRest(t *testing.T, clk *fakeclock.Clock, stall time.Duration) <-chan readResult {
	t.Helper()
	for drained := false; !drained; {
		select {
		case <-clk.Armed(): // the waits of the first read
		default:
			drained = true
		}
	}
	rest := make(chan readResult, 1)
	go func() {
		b, err := io.ReadAll(s.client)
		rest <- readResult{b, err}
	}()
	for clk.WaitArmed(t) != stall {
	}
	return rest
}

// A client of a fill whose upstream ignored the range of a resume and sends
// again the bytes on disk keeps waiting while they come, for longer than
// the client stall limit in all (over a slow link, a long prefix takes
// minutes), and gets the whole blob.
func TestClientWaitsWhileTheUpstreamResendsBytesOnDisk(t *testing.T) {
	t.Parallel()
	const stall = 2 * time.Minute
	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := newResendSetup(t, clk, stall)
	rest := s.readRest(t, clk, stall)
	for range s.up.cut / resendChunk { // 400 s in all
		clk.Advance(20 * time.Second)
		s.up.release <- struct{}{}
	}
	r := <-rest
	if r.err != nil {
		t.Fatalf("the client was cut while the upstream sent the bytes on disk again: %v", r.err)
	}
	if want := s.up.content[s.up.cut:]; !bytes.Equal(r.b, want) {
		t.Fatalf("the rest of the blob: %d bytes, want %d (equal=%v)", len(r.b), len(want), bytes.Equal(r.b, want))
	}
}

// The control: an upstream that ignored the range and then sends nothing
// gives the fill no progress, and its client is cut after the stall limit.
func TestClientCutWhenTheResentBytesDoNotCome(t *testing.T) {
	t.Parallel()
	const stall = 2 * time.Minute
	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := newResendSetup(t, clk, stall)
	rest := s.readRest(t, clk, stall)
	clk.Advance(stall)
	r := <-rest
	if !errors.Is(r.err, errdef.ErrUnavailable) || !strings.Contains(r.err.Error(), "no new bytes") {
		t.Fatalf("read of a fill without progress: %d bytes, error %v; want the stall error", len(r.b), r.err)
	}
}
