package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/admin"
	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/prefetch"
)

// scripted is a prefetcher whose images advance one state per Status call,
// ending in final.
type scripted struct {
	mu      sync.Mutex
	images  []prefetch.Image
	calls   int
	final   map[string]string
	removed []string
}

func (s *scripted) Trigger(images []prefetch.Image, now bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, img := range images {
		// As the mirror lists them.
		ref, err := prefetch.CanonicalRef(img.Ref)
		if err != nil {
			return err
		}
		img.Ref = ref
		s.images = append(s.images, img)
	}
	return nil
}

func (s *scripted) Remove(_ context.Context, ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removed = append(s.removed, ref)
	return nil
}

func (s *scripted) Status() []prefetch.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	var out []prefetch.Status
	for _, img := range s.images {
		st := prefetch.Status{Image: img, State: prefetch.StatePending}
		switch {
		case s.calls == 2:
			st.State, st.Blobs, st.BlobsDone, st.Bytes, st.BytesDone = prefetch.StateRunning, 2, 1, 2<<20, 1<<20
		case s.calls > 2:
			st.State = s.final[img.Ref]
			if st.State == prefetch.StateFailed {
				st.Error = "upstream unreachable"
			}
			st.Blobs, st.BlobsDone, st.Bytes, st.BytesDone = 2, 2, 2<<20, 2<<20
		}
		out = append(out, st)
	}
	return out
}

func TestPrefetchCommand(t *testing.T) {
	for _, tt := range []struct {
		name     string
		args     []string
		final    map[string]string
		wantCode int
		want     []string
	}{
		{"all complete", []string{"org/a:1", "org/b:2"}, map[string]string{"org/a:1": prefetch.StateComplete, "org/b:2": prefetch.StateComplete}, 0,
			[]string{"pending   org/a:1", "running   org/a:1", "complete  org/a:1", "complete  org/b:2"}},
		{"one failed", []string{"org/a:1", "org/b:2"}, map[string]string{"org/a:1": prefetch.StateComplete, "org/b:2": prefetch.StateFailed}, 1,
			[]string{"complete  org/a:1", "failed    org/b:2: upstream unreachable", "1 of 2 image(s) not complete"}},
		{"no tag is latest", []string{"org/a:1", "org/b"}, map[string]string{"org/a:1": prefetch.StateComplete, "org/b:latest": prefetch.StateComplete}, 0,
			[]string{"complete  org/a:1", "complete  org/b:latest"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pf := &scripted{final: tt.final}
			srv := httptest.NewServer(admin.New(admin.Options{Prefetcher: pf, Allow: loopback}))
			defer srv.Close()
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"prefetch", "--mirror", srv.URL, "--interval", "1ms", "--platform", "linux/arm64"}, tt.args...), &stdout, &stderr, nil)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, stdout.String(), stderr.String())
			}
			out := stdout.String() + stderr.String()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if len(pf.images) != 2 || pf.images[0].Platforms[0] != "linux/arm64" {
				t.Errorf("mirror got %+v", pf.images)
			}
		})
	}
}

func TestPrefetchCommandErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"prefetch", "UPPER/case"}, 2, "invalid repository name"},
		{[]string{"prefetch", "--platform", "arm64", "org/a"}, 2, "want os/arch"},
		{[]string{"prefetch", "--mirror", "localhost:1", "org/a"}, 2, "want http://host:port"},
		{[]string{"prefetch", "--mirror", "http://127.0.0.1:1", "org/a"}, 1, "admin API of the mirror"},
		// Flags that would do nothing: a usage error, not silently ignored.
		{[]string{"prefetch", "--remove", "--now", "org/a"}, 2, "--now: no effect with --remove"},
		{[]string{"prefetch", "--remove", "--platform", "linux/arm64", "--no-wait", "org/a"}, 2, "--no-wait, --platform: no effect with --remove"},
		{[]string{"prefetch", "--platform", "linux/arm64"}, 2, "--platform: no effect without IMAGE"},
		{[]string{"prefetch", "--no-wait"}, 2, "--no-wait: no effect without IMAGE"},
		{[]string{"prefetch", "--interval", "5s"}, 2, "--interval: no effect without IMAGE"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), tt.args, &stdout, &stderr, nil); code != tt.code || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tt.args, code, stderr.String(), tt.code, tt.want)
		}
		if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n"); tt.code == 1 && lines != 0 {
			t.Errorf("%v: %d-line error, want one line: %q", tt.args, lines+1, stderr.String())
		}
	}
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

func TestPrefetchCommandRemove(t *testing.T) {
	pf := &scripted{}
	srv := httptest.NewServer(admin.New(admin.Options{Prefetcher: pf, Allow: loopback}))
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"prefetch", "--mirror", srv.URL, "--remove", "org/a:1", "org/b:2"}, &stdout, &stderr, nil); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if len(pf.removed) != 2 || pf.removed[0] != "org/a:1" || pf.removed[1] != "org/b:2" {
		t.Errorf("removed %v", pf.removed)
	}
	if !strings.Contains(stdout.String(), "removed org/a:1") {
		t.Errorf("stdout: %q", stdout.String())
	}
}

// The progress of an empty list says that it is empty, not nothing.
func TestPrefetchCommandEmptyList(t *testing.T) {
	srv := httptest.NewServer(admin.New(admin.Options{Prefetcher: &scripted{}, Allow: loopback}))
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"prefetch", "--mirror", srv.URL}, &stdout, &stderr, nil); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "no image on the mirror's prefetch list") {
		t.Errorf("stdout %q, want it to say the list is empty", stdout.String())
	}
}

func TestFsckCommand(t *testing.T) {
	root := t.TempDir()
	store, err := blobstore.NewFS(root, blobstore.FSOptions{TempMaxAge: time.Hour, PartialMaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	good, bad := []byte("good content"), []byte("soon corrupted")
	for _, b := range [][]byte{good, bad} {
		if err := store.Put(ctx, ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"fsck", "--storage", root}, &stdout, &stderr, nil); code != 0 {
		t.Fatalf("fsck of an intact store: exit %d: %s%s", code, stdout.String(), stderr.String())
	}
	d := digest.FromBytes(bad)
	p := filepath.Join(root, "blobs", "sha256", d.Encoded()[:2], d.Encoded())
	os.Chmod(p, 0o644)
	if err := os.WriteFile(p, []byte("SOON corrupted"), 0o444); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	stderr.Reset()
	if code := run(ctx, []string{"fsck", "--storage", root}, &stdout, &stderr, nil); code != 1 {
		t.Fatalf("fsck of a corrupted store: exit %d, want 1", code)
	}
	if !strings.Contains(stdout.String(), "BAD "+d.String()) || !strings.Contains(stdout.String(), "1 bad") {
		t.Errorf("fsck output:\n%s", stdout.String())
	}
	if _, err := store.Stat(ctx, d); err == nil {
		t.Error("corrupted content still in the store")
	}
	if _, err := store.Stat(ctx, digest.FromBytes(good)); err != nil {
		t.Errorf("intact content: %v", err)
	}

	// Interrupted (Ctrl-C): one line that says so, exit 130 (main makes
	// it 143 after SIGTERM), as deltactl.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	stdout.Reset()
	stderr.Reset()
	if code := run(cctx, []string{"fsck", "--storage", root}, &stdout, &stderr, nil); code != exitInterrupted || stderr.String() != "registry-edge: fsck: interrupted\n" {
		t.Errorf("fsck interrupted: exit %d, stderr %q; want 130 and %q", code, stderr.String(), "registry-edge: fsck: interrupted\n")
	}

	// A directory that holds no store is an error, and stays as it was.
	empty := t.TempDir()
	stdout.Reset()
	stderr.Reset()
	if code := run(ctx, []string{"fsck", "--storage", empty}, &stdout, &stderr, nil); code != 1 || !strings.Contains(stderr.String(), "no store at "+empty) {
		t.Errorf("fsck of an empty directory: exit %d, stderr %q; want 1 and %q", code, stderr.String(), "no store at "+empty)
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Errorf("fsck of an empty directory created %d entries in it", len(entries))
	}
}

// A wait for progress ended by a signal says that the mirror goes on with
// the images, which stay listed.
func TestPrefetchInterrupted(t *testing.T) {
	pf := &scripted{final: map[string]string{"org/a:1": prefetch.StatePending}}
	srv := httptest.NewServer(admin.New(admin.Options{Prefetcher: pf, Allow: loopback}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Interrupted once the request was accepted and shown.
		for {
			pf.mu.Lock()
			calls := pf.calls
			pf.mu.Unlock()
			if calls >= 3 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"prefetch", "--mirror", srv.URL, "--interval", "1ms", "org/a:1"}, &stdout, &stderr, nil)
	if code != exitInterrupted || !strings.Contains(stderr.String(), "interrupted: the mirror goes on with the 1 image(s), which stay on its list") {
		t.Errorf("interrupted prefetch: exit %d, stderr %q", code, stderr.String())
	}
}

// A failed image's line stays one line, whatever its error holds (a joined
// error, an upstream's message with a terminal escape sequence).
func TestDescribeFailedImageIsOneLine(t *testing.T) {
	t.Parallel()
	got := describe(prefetch.Status{State: prefetch.StateFailed, Image: prefetch.Image{Ref: "central.example/app:v1"},
		Error: "manifest: 502 from upstream\nDENIED: \x1b[2Jgone"})
	if want := "failed    central.example/app:v1: manifest: 502 from upstream; DENIED: \\x1b[2Jgone"; got != want {
		t.Errorf("describe = %q, want %q", got, want)
	}
}
