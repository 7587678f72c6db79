package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
)

// /readyz answers 200 while the mirror serves, pulls included, and 503
// naming the file once a request found meta.db damaged (every request
// that needs a tag or a link then fails until the admin moves the file
// aside), so that Kubernetes takes the pod out of its Service and devices
// go elsewhere; /healthz stays 200 (a restart repairs nothing).
func TestReadyzFailsOnceMetadataIsDamaged(t *testing.T) {
	t.Parallel()
	fake := fakeupstream.New()
	fake.Image("team/app", "v1", fakeupstream.Random(t, 1000))
	up := httptest.NewServer(fake)
	defer up.Close()
	addr, dir := freeAddr(t), t.TempDir()
	srv := startRun(t, "serve", "--listen", addr, "--storage", dir, "--upstream", up.URL)
	defer srv.stop()
	base := "http://" + addr
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := testClient.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	srv.waitServing(t, testClient, base+"/readyz").Body.Close()
	if code, body := get("/v2/team/app/manifests/v1"); code != http.StatusOK {
		t.Fatalf("GET manifest = %d %s", code, body)
	}
	if code, body := get("/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz of a mirror that serves = %d %q, want 200 ready", code, body)
	}

	path := filepath.Join(dir, "meta.db")
	if err := os.Truncate(path, 8192); err != nil {
		t.Fatal(err)
	}
	if code, body := get("/v2/team/app/manifests/v1"); code != http.StatusServiceUnavailable {
		t.Fatalf("GET manifest with meta.db damaged = %d %s, want 503", code, body)
	}
	want := "not ready: the metadata database (meta.db) is damaged (the log says what to do)\n"
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || body != want {
		t.Errorf("/readyz after the damage was found = %d %q, want 503 %q", code, body, want)
	}
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz after the damage was found = %d %q, want 200", code, body)
	}
}
