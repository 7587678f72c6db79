package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/ociapi"
)

func TestMaxStaleFor(t *testing.T) {
	t.Parallel()
	s := Staleness{
		MaxStale: 2 * time.Hour,
		Rules: []StalenessRule{
			{Match: "org/releases/*", MaxStale: 30 * time.Minute},
			{Match: "org/*", MaxStale: 24 * time.Hour},
			{Match: "library/*", MaxStale: 0},
			{Match: "bad[", MaxStale: time.Minute},
		},
	}
	tests := []struct {
		repo string
		want time.Duration
	}{
		{"org/releases/app", 30 * time.Minute}, // first match wins over org/*
		{"org/app", 24 * time.Hour},
		{"org/team/app", 2 * time.Hour}, // '*' does not match '/'
		{"library/alpine", 0},           // an explicit 0 exempts
		{"bad[", 2 * time.Hour},         // a malformed pattern matches nothing
		{"other", 2 * time.Hour},
	}
	for _, tt := range tests {
		if got := s.MaxStaleFor(tt.repo); got != tt.want {
			t.Errorf("MaxStaleFor(%q) = %s, want %s", tt.repo, got, tt.want)
		}
	}
	if got := (Staleness{}).MaxStaleFor("any"); got != 0 {
		t.Errorf("zero Staleness: MaxStaleFor() = %s, want 0 (no limit)", got)
	}
}

func TestStaleTagErrorRendering(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cause   error
		wantWhy string
	}{
		{"unreachable", fmt.Errorf("upstream central.test: resolve app:v1: dial tcp 10.0.0.1:443: %w", errdef.ErrUnavailable), "and the upstream is unreachable"},
		{"rate limited", fmt.Errorf("status 429: %w", errdef.ErrTooManyRequests), "and the upstream is unreachable"},
		{"denied", fmt.Errorf("status 403: %w", errdef.ErrDenied), "and the upstream could not confirm it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := error(&StaleTagError{Repo: "org/app", Tag: "v1", Age: 25*time.Hour + 400*time.Millisecond, MaxStale: 24 * time.Hour, Err: tt.cause})
			wrapped := fmt.Errorf("manifest: %w", err)
			if !errors.Is(wrapped, errdef.ErrUnavailable) {
				t.Errorf("errors.Is(%v, ErrUnavailable) = false", wrapped)
			}
			if !errors.Is(wrapped, tt.cause) {
				t.Errorf("the upstream's error is not in the chain of %v", wrapped)
			}
			oe := ociapi.FromError(wrapped, ociapi.KindManifest)
			want := "cached tag v1 was last confirmed by the upstream 25h ago, more than the allowed staleness of 24h, " + tt.wantWhy
			if oe.Status != http.StatusServiceUnavailable || oe.Code != ociapi.CodeUnavailable || oe.Message != want {
				t.Errorf("FromError() = %d %s %q, want 503 UNAVAILABLE %q", oe.Status, oe.Code, oe.Message, want)
			}
			if strings.Contains(oe.Message, "10.0.0.1") {
				t.Errorf("client message %q leaks the upstream's error", oe.Message)
			}
			if msg := err.Error(); !strings.Contains(msg, "org/app:v1") || !strings.Contains(msg, tt.cause.Error()) {
				t.Errorf("Error() = %q, want the repository, the tag and the cause for the log", msg)
			}
		})
	}
}
