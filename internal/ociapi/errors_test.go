package ociapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

type retryAfterErr struct{ d time.Duration }

func (e retryAfterErr) Error() string                     { return "rate limited" }
func (e retryAfterErr) Unwrap() error                     { return errdef.ErrTooManyRequests }
func (e retryAfterErr) RetryAfterDuration() time.Duration { return e.d }

func TestFromError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		err        error
		kind       Kind
		wantStatus int
		wantCode   Code
	}{
		{"blob not found", fmt.Errorf("x: %w", errdef.ErrNotFound), KindBlob, 404, CodeBlobUnknown},
		{"manifest not found", fmt.Errorf("x: %w", errdef.ErrNotFound), KindManifest, 404, CodeManifestUnknown},
		{"tags not found", fmt.Errorf("x: %w", errdef.ErrNotFound), KindTags, 404, CodeNameUnknown},
		{"typed", NewError(405, CodeUnsupported, "no"), KindBlob, 405, CodeUnsupported},
		{"wrapped typed", fmt.Errorf("ctx: %w", NewError(400, CodeDigestInvalid, "bad")), KindBlob, 400, CodeDigestInvalid},
		{"digest mismatch", fmt.Errorf("x: %w", errdef.ErrDigestMismatch), KindBlob, 502, CodeUnknown},
		{"size mismatch", fmt.Errorf("x: %w", errdef.ErrSizeMismatch), KindBlob, 502, CodeUnknown},
		{"too large", fmt.Errorf("x: %w", errdef.ErrTooLarge), KindManifest, 502, CodeManifestInvalid},
		{"invalid manifest", fmt.Errorf("x: %w", errdef.ErrInvalid), KindManifest, 400, CodeManifestInvalid},
		{"unauthorized", errdef.ErrUnauthorized, KindBlob, 401, CodeUnauthorized},
		{"denied", errdef.ErrDenied, KindBlob, 403, CodeDenied},
		{"rate limited", retryAfterErr{3 * time.Second}, KindBlob, 429, CodeTooManyRequests},
		{"unavailable", fmt.Errorf("dial: %w", errdef.ErrUnavailable), KindManifest, 503, CodeUnavailable},
		{"unsupported", errdef.ErrUnsupported, KindBlob, 405, CodeUnsupported},
		{"range", errdef.ErrRangeNotSatisfiable, KindBlob, 416, CodeRangeNotSatisfiable},
		{"metadata damaged", fmt.Errorf("read metadata /var/lib/secret/meta.db: %w", errdef.ErrDamaged), KindManifest, 503, CodeUnavailable},
		{"unknown", errors.New("disk on fire at /var/lib/secret"), KindBlob, 500, CodeUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := FromError(tt.err, tt.kind)
			if got.Status != tt.wantStatus || got.Code != tt.wantCode {
				t.Errorf("FromError(%v) = %d %s, want %d %s", tt.err, got.Status, got.Code, tt.wantStatus, tt.wantCode)
			}
			if tt.name == "unknown" && got.Message != "internal error" {
				t.Errorf("FromError() message = %q leaks the internal error", got.Message)
			}
			if strings.Contains(got.Message, "/var/lib/secret") {
				t.Errorf("FromError() message = %q leaks a path", got.Message)
			}
		})
	}
}

func TestWriteError(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	WriteError(rec, httptest.NewRequest(http.MethodGet, "/v2/x/blobs/y", nil), &Error{Status: 429, Code: CodeTooManyRequests, Message: "slow down", RetryAfter: 1500 * time.Millisecond})
	if rec.Code != 429 {
		t.Fatalf("status = %d, want 429", rec.Code)
	}
	if got := rec.Header().Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After = %q, want 2", got)
	}
	var env struct {
		Errors []struct{ Code, Message string }
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil {
		t.Fatal(err)
	}
	if len(env.Errors) != 1 || env.Errors[0].Code != "TOOMANYREQUESTS" || env.Errors[0].Message != "slow down" {
		t.Errorf("envelope = %+v", env)
	}

	head := httptest.NewRecorder()
	WriteError(head, httptest.NewRequest(http.MethodHead, "/v2/x/blobs/y", nil), NewError(404, CodeBlobUnknown, "no"))
	if head.Code != 404 || head.Body.Len() != 0 {
		t.Errorf("HEAD error: status %d body %q, want 404 and no body", head.Code, head.Body.String())
	}
}
