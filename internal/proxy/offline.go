package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/ociapi"
)

// Staleness is the bounded-staleness policy of one upstream: how long after
// the upstream last confirmed a tag the mirror may still answer it from
// cache when the upstream cannot be asked (offline mode). It applies only
// to tags; content addressed by digest is immutable and always served
// from cache. The zero value has no bound: a disconnected site keeps
// running on what it has.
type Staleness struct {
	// MaxStale applies to repositories that no rule matches; 0 means no
	// limit.
	MaxStale time.Duration
	// Rules are tried in order and the first that matches applies.
	Rules []StalenessRule
}

// StalenessRule sets the staleness limit of the repositories it matches.
type StalenessRule struct {
	// Match is a path.Match pattern on the repository name at the upstream
	// (after routing: registry prefix removed, Docker Hub's "library/"
	// added), such as "org/*" or "library/*". A '*' does not match '/'.
	Match string
	// MaxStale is the limit; 0 means no limit.
	MaxStale time.Duration
}

// MaxStaleFor returns the staleness limit of repository repo, 0 for none.
// A malformed pattern matches nothing (config validation rejects them).
func (s Staleness) MaxStaleFor(repo string) time.Duration {
	for _, r := range s.Rules {
		if ok, err := path.Match(r.Match, repo); err == nil && ok {
			return r.MaxStale
		}
	}
	return s.MaxStale
}

// StaleTagError is the error for a cached tag that the upstream cannot
// confirm and whose last confirmation is older than the staleness limit.
// Clients see 503 UNAVAILABLE with a message that says so; errors.Is
// matches errdef.ErrUnavailable, and the upstream's error stays in the
// chain for the log.
type StaleTagError struct {
	// Repo and Tag name the tag as the upstream knows it.
	Repo, Tag string
	// Age is how long ago the upstream last confirmed the tag.
	Age time.Duration
	// MaxStale is the limit that applies to the repository.
	MaxStale time.Duration
	// Err is why the upstream could not confirm the tag.
	Err error
}

func (e *StaleTagError) Error() string {
	return fmt.Sprintf("tag %s:%s: %s: %v", e.Repo, e.Tag, e.stale(), e.Err)
}

// stale says how the tag's last confirmation compares with the limit: its
// age beyond it, or an age that is not known (a confirmation after now,
// recorded while the clock ran ahead).
func (e *StaleTagError) stale() string {
	if e.Age < 0 {
		return fmt.Sprintf("last confirmed by the upstream at a time after this mirror's clock (which was set back since), so its staleness is unknown and the limit of %s cannot be met",
			shortDuration(e.MaxStale))
	}
	return fmt.Sprintf("last confirmed by the upstream %s ago, more than the allowed staleness of %s",
		shortDuration(e.Age.Round(time.Second)), shortDuration(e.MaxStale))
}

// Unwrap returns the envelope entry clients see, errdef.ErrUnavailable and
// the upstream's error.
func (e *StaleTagError) Unwrap() []error {
	return []error{e.envelope(), errdef.ErrUnavailable, e.Err}
}

// envelope is what the client sees. It names only what the client asked
// for and configuration values, never the upstream's error (which may
// name hosts).
func (e *StaleTagError) envelope() *ociapi.Error {
	why := "the upstream is unreachable"
	if !errors.Is(e.Err, errdef.ErrUnavailable) && !errors.Is(e.Err, errdef.ErrTooManyRequests) {
		why = "the upstream could not confirm it"
	}
	return ociapi.NewError(http.StatusServiceUnavailable, ociapi.CodeUnavailable, fmt.Sprintf(
		"cached tag %s was %s, and %s", e.Tag, e.stale(), why))
}

// shortDuration formats d without trailing zero units: "24h" rather than
// "24h0m0s", as durations are written in the configuration.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// maxStaleNotes bounds staleNotes; past it the record starts afresh (a
// tag then warns once more).
const maxStaleNotes = 4096

// staleNotes remembers, per tag, the last stale answer that was logged as
// a warning: during an outage of days every pull of a tag past its TTL is
// answered stale (or refused), and a warning per pull buried the log of a
// gateway (the access log already has each request, cache=stale). A tag
// warns again when its state changes: it was confirmed since, or it went
// from served to refused. It is safe for concurrent use.
type staleNotes struct {
	mu sync.Mutex
	m  map[string]staleNote
}

// staleNote is what was logged for one tag.
type staleNote struct {
	confirmed time.Time // the tag's last confirmation at its origin
	refused   bool      // beyond its staleness limit
}

// forget drops what was recorded for key: its next stale answer warns.
func (s *staleNotes) forget(key string) {
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
}

// first records n for key and reports whether it differs from what was
// recorded last, that is, whether it is worth a warning.
func (s *staleNotes) first(key string, n staleNote) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.m[key]; ok && old.refused == n.refused && old.confirmed.Equal(n.confirmed) {
		return false
	}
	if s.m == nil || len(s.m) >= maxStaleNotes {
		s.m = map[string]staleNote{}
	}
	s.m[key] = n
	return true
}
