package admin_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/registry-edge/registry-edge/internal/admin"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/gc"
	"github.com/registry-edge/registry-edge/internal/prefetch"
)

type fakePrefetcher struct {
	mu     sync.Mutex
	got    []prefetch.Image
	now    bool
	status []prefetch.Status
	err    error
}

func (f *fakePrefetcher) Trigger(images []prefetch.Image, now bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.got, f.now = append(f.got, images...), now
	for _, img := range images {
		f.status = append(f.status, prefetch.Status{Image: img, State: prefetch.StatePending})
	}
	return nil
}

func (f *fakePrefetcher) Remove(_ context.Context, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, st := range f.status {
		if st.Ref == ref {
			f.status = append(f.status[:i], f.status[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("prefetch image %q is not listed: %w", ref, errdef.ErrNotFound)
}

func (f *fakePrefetcher) Status() []prefetch.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]prefetch.Status(nil), f.status...)
}

func TestPrefetchAPI(t *testing.T) {
	pf := &fakePrefetcher{}
	srv := httptest.NewServer(admin.New(admin.Options{Prefetcher: pf, Allow: loopback}))
	defer srv.Close()
	c, err := admin.NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := c.Prefetch(ctx, admin.PrefetchRequest{Images: []prefetch.Image{{Ref: "org/app:1", Platforms: []string{"linux/arm64"}}}, Now: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(pf.got) != 1 || pf.got[0].Ref != "org/app:1" || pf.got[0].Platforms[0] != "linux/arm64" || !pf.now {
		t.Errorf("prefetcher got %+v now=%v", pf.got, pf.now)
	}
	if len(st.Images) != 1 || st.Images[0].State != prefetch.StatePending {
		t.Errorf("answer = %+v", st)
	}
	st, err = c.Status(ctx)
	if err != nil || len(st.Images) != 1 {
		t.Errorf("Status() = %+v, %v", st, err)
	}

	st, err = c.Remove(ctx, "org/app:1")
	if err != nil || len(st.Images) != 0 {
		t.Errorf("Remove() = %+v, %v", st, err)
	}
	if _, err := c.Remove(ctx, "org/app:1"); err == nil || !strings.Contains(err.Error(), "not listed") {
		t.Errorf("Remove() of an unlisted image: %v", err)
	}

	pf.err = fmt.Errorf("prefetch image \"X\": invalid repository name: %w", errdef.ErrInvalid)
	if _, err := c.Prefetch(ctx, admin.PrefetchRequest{Images: []prefetch.Image{{Ref: "X"}}}); err == nil || !strings.Contains(err.Error(), "invalid repository name") {
		t.Errorf("invalid image: %v, want the prefetcher's reason", err)
	}
}

func TestPrefetchAPIBadRequests(t *testing.T) {
	srv := httptest.NewServer(admin.New(admin.Options{Prefetcher: &fakePrefetcher{}, Allow: loopback}))
	defer srv.Close()
	const good = `{"images":[{"ref":"a"}]}`
	for _, tt := range []struct {
		method, path, body string
		header             []string
		status             int
	}{
		{"POST", admin.PrefetchPath, `{"images":[]}`, nil, 400},
		{"POST", admin.PrefetchPath, `{"images":[{"ref":"a"}],"unknown":1}`, nil, 400},
		{"POST", admin.PrefetchPath, `not json`, nil, 400},
		{"DELETE", admin.PrefetchPath, ``, nil, 400},
		{"PUT", admin.PrefetchPath, ``, nil, 405},
		{"DELETE", admin.PrefetchPath + "?ref=org/none", ``, nil, 404},
		{"GET", "/admin/v1/other", ``, nil, 404},
		{"GET", "/v2/", ``, nil, 404},
		// What a web page can send (a form post: no preflight) is refused.
		{"POST", admin.PrefetchPath, good, []string{"Content-Type", "text/plain"}, 415},
		{"POST", admin.PrefetchPath, good, []string{"Content-Type", ""}, 415},
		{"POST", admin.PrefetchPath, good, []string{"Origin", "http://attacker.example"}, 403},
		{"POST", admin.PrefetchPath, good, []string{"Sec-Fetch-Site", "cross-site"}, 403},
		{"DELETE", admin.PrefetchPath + "?ref=a", ``, []string{"Origin", "null"}, 403},
	} {
		req, _ := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i < len(tt.header); i += 2 {
			req.Header.Set(tt.header[i], tt.header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s %s: %d %s, want %d JSON", tt.method, tt.path, tt.body, resp.StatusCode, resp.Header.Get("Content-Type"), tt.status)
		}
	}
	if _, err := admin.NewClient("localhost:5001"); err == nil {
		t.Error("NewClient accepted a URL without scheme")
	}
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

func TestAdminOnlyFromAllowedNetworks(t *testing.T) {
	srv := httptest.NewServer(admin.New(admin.Options{Prefetcher: &fakePrefetcher{}, Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + admin.PrefetchPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET from loopback with only 10/8 allowed: %d, want 403", resp.StatusCode)
	}
}

func TestGCAPI(t *testing.T) {
	var gotDry []bool
	h := admin.New(admin.Options{Prefetcher: &fakePrefetcher{}, Allow: loopback, GC: func(_ context.Context, dryRun bool) (*gc.Plan, error) {
		gotDry = append(gotDry, dryRun)
		return &gc.Plan{Used: 10, Freed: 4, Victims: []gc.Victim{{Reason: "over budget", Freed: 4}}}, nil
	}})
	srv := httptest.NewServer(h)
	defer srv.Close()
	c, _ := admin.NewClient(srv.URL)
	p, err := c.GC(context.Background(), true)
	if err != nil || p.Freed != 4 || len(p.Victims) != 1 {
		t.Fatalf("GC(dry run) = %+v, %v", p, err)
	}
	if _, err := c.GC(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if len(gotDry) != 2 || !gotDry[0] || gotDry[1] {
		t.Errorf("GC func called with dryRun %v, want [true false]", gotDry)
	}
	resp, err := http.Get(srv.URL + admin.GCPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET %s: %d, want 405", admin.GCPath, resp.StatusCode)
	}
	// Without a GC function the resource does not exist.
	srv2 := httptest.NewServer(admin.New(admin.Options{Prefetcher: &fakePrefetcher{}, Allow: loopback}))
	defer srv2.Close()
	resp, err = http.Post(srv2.URL+admin.GCPath, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST %s without GC: %d, want 404", admin.GCPath, resp.StatusCode)
	}
}

// The commands' usual misconfigurations get a reason, not a bare status:
// plain HTTP to a mirror serving HTTPS, and a URL with no admin API.
func TestClientNamesTheLikelyCause(t *testing.T) {
	t.Parallel()
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(tlsSrv.Close)
	plain := strings.Replace(tlsSrv.URL, "https://", "http://", 1)
	notAdmin := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(notAdmin.Close)
	for base, want := range map[string]string{
		plain:        "serves HTTPS: use --mirror " + tlsSrv.URL,
		notAdmin.URL: "none at " + notAdmin.URL,
	} {
		c, err := admin.NewClient(base)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.GC(context.Background(), true)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("GC via %s: %v, want an error saying %q", base, err, want)
		}
	}
}

// The mirror's error message (a joined error of several lines, or bytes
// from something else that answers in the same shape) comes back as one
// line without control characters: the commands print it as their one
// error line.
func TestClientErrorIsOneLine(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error": "images[0]: bad\nimages[1]: \u001b[31mworse\n"}`)
	}))
	t.Cleanup(srv.Close)
	c, err := admin.NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GC(context.Background(), true)
	if want := `admin API: images[0]: bad; images[1]: \x1b[31mworse`; err == nil || err.Error() != want {
		t.Errorf("GC() error = %v, want %q", err, want)
	}
}

// A web page in a browser on an allowed host can make its own host name
// resolve to the mirror (DNS rebinding): its scripts then read the mirror
// as their own origin, with no Origin header on a GET. The admin API and
// the status page answer only requests addressed to the mirror by an IP
// address, localhost, or a name in admin.hosts.
func TestAdminRefusesRebindingHostNames(t *testing.T) {
	page := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "status") })
	api := admin.New(admin.Options{Prefetcher: &fakePrefetcher{}, Allow: loopback, Hosts: []string{"Mirror.Site.Lan"}})
	status := admin.Only(loopback, []string{"Mirror.Site.Lan"}, page)
	for _, tc := range []struct {
		host string
		want int
	}{
		{"rebind.attacker.example", http.StatusForbidden},
		{"rebind.attacker.example:5000", http.StatusForbidden},
		{"mirror.site.lan.attacker.example", http.StatusForbidden},
		{"127.0.0.1:5000", http.StatusOK},
		{"[::1]:5000", http.StatusOK},
		{"192.168.1.20", http.StatusOK},
		{"localhost:5000", http.StatusOK},
		{"mirror.site.lan:5000", http.StatusOK},
		{"MIRROR.site.lan.", http.StatusOK},
	} {
		for name, h := range map[string]http.Handler{"admin API": api, "status page": status} {
			r := httptest.NewRequest(http.MethodGet, admin.PrefetchPath, nil)
			r.Host = tc.host
			r.RemoteAddr = "127.0.0.1:40000"
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Errorf("%s, Host %q: %d, want %d", name, tc.host, w.Code, tc.want)
			}
		}
	}
}
