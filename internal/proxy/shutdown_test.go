package proxy

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/metrics"
	"github.com/registry-edge/registry-edge/internal/testutil/syncbuf"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// stallingUpstream sends the first half of its blob, then nothing until
// the fill's context ends.
type stallingUpstream struct {
	Upstream
	content []byte
}

func (u stallingUpstream) Blob(ctx context.Context, _ string, _ digest.Digest, offset int64, _ string) (*upstream.BlobResponse, error) {
	half := bytes.NewReader(u.content[offset : len(u.content)/2])
	body := io.MultiReader(half, ctxReader{ctx})
	return &upstream.BlobResponse{Body: io.NopCloser(body), Offset: offset, Size: int64(len(u.content))}, nil
}

// ctxReader blocks until ctx ends, then fails with its error.
type ctxReader struct{ ctx context.Context }

func (r ctxReader) Read([]byte) (int, error) {
	<-r.ctx.Done()
	return 0, r.ctx.Err()
}

// A fill that the mirror's shutdown stops is not a failure: it keeps its
// partial download for the next request, is logged at Info (a restart
// during a download must not page anyone), and counts in no fill failure.
func TestFillStoppedByShutdownIsNoFailure(t *testing.T) {
	t.Parallel()
	fs, db := newStoreAndDB(t)
	content := bytes.Repeat([]byte("layer "), 100<<10)
	d := digest.FromBytes(content)
	var logs syncbuf.Buffer
	m := metrics.New()
	p := New(fs, db, nil, Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Metrics: m})
	remote := &Remote{Name: "central.test", Client: stallingUpstream{content: content}}
	target := Target{Remote: remote, Repo: meta.Repo{Registry: "central.test", Name: "team/app"}}

	res, err := p.Blob(context.Background(), target, d)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Content.Close()
	if _, err := io.ReadFull(res.Content, make([]byte, len(content)/2)); err != nil {
		t.Fatalf("first half of the blob: %v", err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if _, err := io.ReadAll(res.Content); err == nil {
		t.Error("the client of the stopped fill read the rest of the blob without an error")
	}
	if !fs.HasPartial(d) {
		t.Error("the fill stopped by the shutdown kept no partial download")
	}
	out := logs.String()
	if strings.Contains(out, "level=ERROR") || !strings.Contains(out, `msg="blob fill stopped by the shutdown"`) {
		t.Errorf("log of a fill stopped by the shutdown:\n%s", out)
	}
	failures := make(chan prometheus.Metric, 8)
	m.FillFailures.Collect(failures)
	if n := len(failures); n != 0 {
		t.Errorf("fill failures counted: %d series, want none", n)
	}
}
