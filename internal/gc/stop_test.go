package gc_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/gc"
	"github.com/registry-edge/registry-edge/internal/testutil/syncbuf"
)

// stoppingCache is the mirror stopping while it evicts: the shutdown ends
// the maintenance's context as the first batch is evicted.
type stoppingCache struct {
	noCache
	stop    context.CancelFunc
	ctx     context.Context
	evicted *bool // set once Evict was called
}

func (c stoppingCache) Evict([]digest.Digest, func() error) error {
	*c.evicted = true
	c.stop()
	return c.ctx.Err()
}

// A maintenance run that a shutdown stops (while it sizes the store, or
// while it evicts) logs no error: nothing failed, and a routine restart
// must not page anyone.
func TestMaintenanceStoppedByShutdownLogsNoError(t *testing.T) {
	evicted := false
	for _, tt := range []struct {
		name     string
		cache    func(context.Context, context.CancelFunc) gc.Cache
		evicting bool // the run reaches Evict
	}{
		{"while sizing", func(_ context.Context, stop context.CancelFunc) gc.Cache { stop(); return noCache{} }, false},
		{"while evicting", func(ctx context.Context, stop context.CancelFunc) gc.Cache {
			return stoppingCache{stop: stop, ctx: ctx, evicted: &evicted}
		}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newSite(t)
			s.image("old", 2*time.Hour, s.blob(3000))
			s.image("new", time.Hour, s.blob(3000))
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			var logs syncbuf.Buffer
			m := &gc.Maintainer{Store: s.store, DB: s.db, Cache: tt.cache(ctx, stop), Options: gc.Options{MaxSize: 4000},
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			m.RunOnce(ctx)
			if tt.evicting && !evicted {
				t.Fatal("the run never came to evict: the case does not test a shutdown while evicting")
			}
			if strings.Contains(logs.String(), "level=ERROR") {
				t.Errorf("a maintenance run stopped by the shutdown logged an error:\n%s", logs.String())
			}
			var n int
			if err := s.store.Walk(context.Background(), func(blobstore.Info) error { n++; return nil }); err != nil || n == 0 {
				t.Errorf("store after the stopped run: %d blobs, %v", n, err)
			}
		})
	}
}
