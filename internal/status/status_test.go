package status

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/httpserve"
	"github.com/registry-edge/registry-edge/internal/metrics"
	"github.com/registry-edge/registry-edge/internal/prefetch"
)

func TestPageShowsTheFigures(t *testing.T) {
	m := metrics.New()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	m.StoreBytes.Set(1 << 20)
	m.Cache.WithLabelValues("blob", "hit").Add(3)
	m.Cache.WithLabelValues("blob", "miss").Add(1)
	m.BytesServed.WithLabelValues("blob").Add(4 << 20)
	m.UpstreamBytes.WithLabelValues("central.example").Add(1 << 20)
	m.FillResumes.WithLabelValues("central.example", "link").Add(2)
	m.Deltas.Fills.WithLabelValues(metrics.DeltaApplied).Add(2)
	m.Deltas.FullBytes.Add(10 << 20)
	m.Deltas.FetchedBytes.Add(1 << 20)
	m.Signatures.Denials.WithLabelValues("fleet", "manifest").Add(3)
	m.Signatures.Verifications.WithLabelValues("fleet", "verified").Add(5)
	m.AddUpstream("central.example", func() metrics.UpstreamHealth {
		return metrics.UpstreamHealth{LastContact: now.Add(-90 * time.Second), BreakerState: 1}
	})
	h := New(Options{
		Metrics: m, Budget: func() int64 { return 2 << 20 }, Root: "/var/lib/registry-edge", Version: "v1.2.3", SignaturePolicy: true, Now: func() time.Time { return now },
		Prefetch: func() []prefetch.Status {
			return []prefetch.Status{{Image: prefetch.Image{Ref: "org/app:<b>1</b>"}, State: prefetch.StateComplete, Blobs: 2, BlobsDone: 2}}
		},
		Recent: func() []httpserve.Pull {
			return []httpserve.Pull{{Time: now, Repo: "library/alpine", Ref: "3.20", Status: 200, Cache: "hit"},
				{Time: now, Repo: "fleet/app", Ref: "1.5", Status: 403, Reason: `signature rule "fleet" (enforce): no_signature <i>`}}
		},
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		"1.0 MiB / 2.0 MiB", "50 %", // disk used vs budget
		"75.0 %",                // hit ratio: 3 hits of 4
		"4.0 MiB",               // served
		"uplink saved: 3.0 MiB", // served minus fetched
		"central.example", "unreachable (circuit open)", "1m30s ago",
		"library/alpine", "3.20",
		`signature rule &#34;fleet&#34; (enforce): no_signature &lt;i&gt;`, // a denial's reason, escaped
		"1 of 1 complete", "org/app:&lt;b&gt;1&lt;/b&gt;", // escaped
		"version v1.2.3",
		"9.0 MiB", "2 layers rebuilt from deltas, at 10.0 % of their size", // deltas
		`<div class="value">3</div><div>5 verified, 0 served unverified (warn)`, // signature policy
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, "<b>1</b>") || strings.Contains(page, "<script") {
		t.Error("page carries unescaped input or script")
	}
	if resp, _ := http.Post(srv.URL, "text/plain", nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
}

// An upstream that has not answered anything since the start (a gateway
// started during an outage, before its breaker opens; an upstream whose
// certificate is refused, which never opens it) is not shown reachable.
func TestUpstreamWithoutAnswerIsNotReachable(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	m := metrics.New()
	m.AddUpstream("silent.example", func() metrics.UpstreamHealth { return metrics.UpstreamHealth{} })
	m.AddUpstream("central.example", func() metrics.UpstreamHealth {
		return metrics.UpstreamHealth{LastContact: now.Add(-time.Minute)}
	})
	srv := httptest.NewServer(New(Options{Metrics: m, Now: func() time.Time { return now }}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	for _, want := range []string{
		`<td>silent.example</td><td class="bad">no answer since start</td><td>never since start</td>`,
		`<td>central.example</td><td class="ok">reachable</td><td>1m0s ago</td>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s:\n%s", want, page)
		}
	}
}
