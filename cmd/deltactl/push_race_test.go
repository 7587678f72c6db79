package main

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
)

// On a registry without the referrers API, another push for the same image
// at the same time may write the tag schema's index over this one's entry:
// diff --push pushes again until its artifact is listed.
func TestDiffPushSurvivesARacingPush(t *testing.T) {
	t.Parallel()
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(false))
	var raced atomic.Bool
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || !strings.Contains(r.URL.Path, "/manifests/sha256-") || raced.Swap(true) {
			inner.ServeHTTP(w, r)
			return
		}
		// The racing push read the index before this one wrote it, and
		// writes what it read (plus its own entry) after.
		get := httptest.NewRequest(http.MethodGet, r.URL.Path, nil)
		get.Header.Set("Accept", "application/vnd.oci.image.index.v1+json")
		prev := httptest.NewRecorder()
		inner.ServeHTTP(prev, get)
		inner.ServeHTTP(w, r)
		body := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`
		if prev.Code == http.StatusOK {
			body = prev.Body.String()
		}
		put := httptest.NewRequest(http.MethodPut, r.URL.Path, strings.NewReader(body))
		put.Header.Set("Content-Type", "application/vnd.oci.image.index.v1+json")
		inner.ServeHTTP(httptest.NewRecorder(), put)
	}))
	t.Cleanup(s.Close)
	r := makeRelease(t, strings.TrimPrefix(s.URL, "http://"))
	var diff diffReport
	decodeStrict(t, mustRun(t, "diff", "--push", "--format", "json", r.oldRef, r.newRef).stdout, &diff)
	if !raced.Load() {
		t.Fatal("no push of the tag schema's index to race with")
	}
	checkPublished(t, r, diff, false)
}

// A registry with the referrers API keeps the list itself: one that shows a
// new referrer late does not fail the push.
func TestDiffPushToARegistryThatListsLate(t *testing.T) {
	t.Parallel()
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true))
	var lists atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/referrers/") && lists.Add(1) <= 20 {
			w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
			w.Write([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`))
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	r := makeRelease(t, strings.TrimPrefix(s.URL, "http://"))
	mustRun(t, "diff", "--push", r.oldRef, r.newRef)
	if lists.Load() == 0 {
		t.Fatal("the push never read the referrers")
	}
}
