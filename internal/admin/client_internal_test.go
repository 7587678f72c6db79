package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/gc"
)

// An eviction run takes as long as the store needs (minutes on a bucket):
// `registry-edge gc` waits for it, where the other calls give up after the
// client's timeout. The server here answers every call later than that.
func TestGCIsNotBoundByTheCallTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 50 * time.Millisecond
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		if r.URL.Path == GCPath {
			json.NewEncoder(w).Encode(gc.Plan{Freed: 7})
			return
		}
		json.NewEncoder(w).Encode(PrefetchStatus{})
	}))
	defer srv.Close()
	defer close(release)
	c, err := NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c.timeout = timeout

	if _, err := c.Status(context.Background()); err == nil {
		t.Fatal("Status answered after its timeout, want an error")
	}
	// The eviction's answer comes only after the timeout has passed.
	go func() { time.Sleep(4 * timeout); release <- struct{}{} }()
	plan, err := c.GC(context.Background(), false)
	if err != nil || plan.Freed != 7 {
		t.Fatalf("GC answered after %s: %+v, %v; want the plan", 4*timeout, plan, err)
	}
}
