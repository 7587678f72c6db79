package httpserve_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/gc"
	"github.com/registry-edge/registry-edge/internal/proxy"
	"github.com/registry-edge/registry-edge/internal/sigpolicy"
	"github.com/registry-edge/registry-edge/internal/testutil/cosigntest"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
)

const threeYears = 3 * 365 * 24 * time.Hour

// pullImage pulls repo:v1 (manifest and layer) through m and returns the
// manifest's digest.
func pullStepped(t *testing.T, m *mirror, repo string) digest.Digest {
	t.Helper()
	desc, layers := m.fake.Image(repo, "v1", fakeupstream.Random(t, 300_000))
	if resp, body := m.get(http.MethodGet, manifestPath(repo, "v1"), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
		t.Fatalf("pull %s: manifest: %d %s", repo, resp.StatusCode, body)
	}
	if resp, _ := m.get(http.MethodGet, blobPath(repo, layers[0].Digest)); resp.StatusCode != http.StatusOK {
		t.Fatalf("pull %s: layer: %d", repo, resp.StatusCode)
	}
	m.waitFills()
	return desc.Digest
}

// A gateway without an RTC boots with its clock years behind (fake-hwclock's
// last shutdown time, or 1970) and NTP steps it forward minutes later. The
// images its devices pulled at boot, before the step, are the ones in use:
// over the budget, the image genuinely pulled a month ago goes first,
// whether the step came before the boot pulls were first flushed or after.
func TestClockStepForwardDoesNotAgeAccesses(t *testing.T) {
	t.Parallel()
	for _, flushBeforeStep := range []bool{false, true} {
		name := map[bool]string{false: "step before the first flush", true: "step between two flushes"}[flushBeforeStep]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := newMirror(t)
			old := pullStepped(t, m, "app-old")
			m.clock.Advance(30 * 24 * time.Hour)
			// Power cycle: the clock comes back three years behind.
			m.clock.Step(-threeYears)
			m.restart()
			boot := pullStepped(t, m, "app-boot")
			m.clock.Advance(time.Minute)
			ctx := context.Background()
			if flushBeforeStep {
				if err := m.proxy.FlushAccess(ctx); err != nil {
					t.Fatal(err)
				}
				m.clock.Advance(time.Minute)
			}
			m.clock.Step(threeYears) // NTP
			m.clock.Advance(time.Minute)

			mt := &gc.Maintainer{Store: m.store, DB: m.db, Cache: m.proxy, Metrics: m.metrics,
				Options: gc.Options{MaxSize: 500_000, LowWatermark: 0.95, Now: m.clock.Now}}
			plan, err := mt.Plan(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(plan.Victims) != 1 || plan.Victims[0].Root != old {
				t.Fatalf("victims %+v, want only app-old %s (app-boot is %s)", plan.Victims, old, boot)
			}
		})
	}
}

// A gateway whose clock ran years ahead is set back by NTP: the accesses
// stamped before the step are not newer than everything after it, for
// years: two days later, an image last pulled before the step is idle
// for storage.maxAge of a day like any other. That holds for an access
// not flushed before the step, one flushed before it, and one written by
// the process before (once this one has flushed: a step is seen between
// two flushes).
func TestClockStepBackDoesNotKeepAccessesForever(t *testing.T) {
	t.Parallel()
	for _, before := range []string{"nothing", "flush", "restart"} {
		t.Run("step after "+before, func(t *testing.T) {
			t.Parallel()
			m := newMirror(t)
			ctx := context.Background()
			flush := func() {
				t.Helper()
				if err := m.proxy.FlushAccess(ctx); err != nil {
					t.Fatal(err)
				}
			}
			m.clock.Step(threeYears)
			ahead := pullStepped(t, m, "app-ahead")
			switch before {
			case "flush":
				flush()
			case "restart":
				m.restart()
				m.clock.Advance(time.Minute)
				flush()
			}
			m.clock.Advance(time.Minute)
			m.clock.Step(-threeYears) // NTP
			m.clock.Advance(time.Minute)
			flush()
			m.clock.Advance(2 * 24 * time.Hour)
			recent := pullStepped(t, m, "app-recent")

			mt := &gc.Maintainer{Store: m.store, DB: m.db, Cache: m.proxy, Metrics: m.metrics,
				Options: gc.Options{MaxAge: 24 * time.Hour, MinIdle: time.Hour, Now: m.clock.Now}}
			plan, err := mt.Plan(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(plan.Victims) != 1 || plan.Victims[0].Root != ahead {
				t.Fatalf("victims %+v, want only app-ahead %s (app-recent is %s)", plan.Victims, ahead, recent)
			}
		})
	}
}

// A tag fetched while the clock ran years ahead is not fresh for years
// after NTP sets the clock back: once storage's tag TTL (a minute here) has
// passed, a pull asks the upstream again, and learns where the tag moved.
func TestClockStepBackDoesNotKeepATagFresh(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	m.clock.Step(threeYears)
	pullStepped(t, m, "app")
	m.clock.Step(-threeYears) // NTP
	m.clock.Advance(2 * time.Minute)
	moved, _ := m.fake.Image("app", "v1", fakeupstream.Random(t, 1000))
	resp, body := m.get(http.MethodGet, manifestPath("app", "v1"), "Accept", ocispec.MediaTypeImageManifest)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("pull after the step: %d %s", resp.StatusCode, body)
	}
	if got := digest.Digest(resp.Header.Get("Docker-Content-Digest")); got != moved.Digest {
		t.Errorf("app:v1 served as %s two minutes after the step back, want %s, where the upstream moved it", got, moved.Digest)
	}
}

// An image refused while the clock ran years ahead (not signed yet) is not
// refused for years after NTP sets the clock back: once the minute a
// refusal is remembered has passed, it is verified again, and served once
// signed.
func TestClockStepBackDoesNotKeepARefusal(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	m := newMirror(t, withPolicy(t, sigpolicy.ModeEnforce, key))
	img, _ := m.fake.Image("app", "late", []byte("signed late"))
	path := manifestPath("app", img.Digest.String())
	m.clock.Step(threeYears)
	resp, body := m.get(http.MethodGet, path, "Accept", ocispec.MediaTypeImageManifest)
	deniedMessage(t, resp, body)
	sign(t, m, key, img.Digest)
	m.clock.Step(-threeYears) // NTP
	m.clock.Advance(2 * time.Minute)
	if resp, body := m.get(http.MethodGet, path, "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
		t.Errorf("signed image two minutes after the step back: %d %s, want 200", resp.StatusCode, body)
	}
}

// A tag confirmed while the clock ran ahead has an unknown age once NTP
// sets the clock back: with the upstream down it is not served past the
// staleness limit as if it had just been confirmed, and the refusal says
// why.
func TestClockStepBackDoesNotLiftMaxStale(t *testing.T) {
	t.Parallel()
	m := newOfflineMirror(t, offlineSetup{staleness: proxy.Staleness{MaxStale: 30 * time.Minute}})
	m.clock.Step(threeYears) // booted with a clock years ahead
	m.fake.Image("app", "v1", []byte("layer"))
	if resp, body := m.get(http.MethodGet, manifestPath("app", "v1")); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET app:v1: %d %s", resp.StatusCode, body)
	}
	m.clock.Step(-threeYears) // NTP
	m.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
	resp, body := m.get(http.MethodGet, manifestPath("app", "v1"))
	m.wantCode(resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
	if msg := errorMessage(t, body); !strings.Contains(msg, "clock") || !strings.Contains(msg, "limit of 30m") {
		t.Errorf("GET app:v1 message = %q, want it to say the tag's age is unknown (the clock was set back) and name the limit", msg)
	}
}
