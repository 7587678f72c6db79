package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/delta"
	"github.com/registry-edge/registry-edge/internal/errdef"
)

// Delta negotiation between registry-edge tiers, after RFC 3229 (delta
// encoding in HTTP): a lower tier sends a HEAD for a layer blob with
// A-IM: DeltaIM and, in If-None-Match, the entity tags (quoted digests) of
// layers it holds; an upper tier that can rebuild the layer from some of
// them answers 226 IM Used with the delta's descriptor in HeaderDelta, and
// the lower tier fetches the delta as an ordinary blob (resumable, with
// Range). Any other answer means "no delta". See
// docs/decisions/0009-delta-artifacts-and-negotiation.md.
const (
	// DeltaIM is the instance manipulation a registry-edge delta is.
	DeltaIM = "vnd.registry-edge.delta.v1"
	// HeaderDeltas, on any response, says the server is a registry-edge
	// that answers delta negotiations ("v1").
	HeaderDeltas = "Registry-Edge-Deltas"
	// HeaderDeltaFormats, on a negotiation, lists the delta format
	// versions the lower tier reads ("1, 2"). A tier that writes none of
	// them answers as to a plain request (the layer in full) instead of
	// computing a delta the lower tier would download and reject. Tiers
	// from before this header send none; they are taken to read what the
	// upper tier writes (they cannot be told from those that do).
	HeaderDeltaFormats = "Registry-Edge-Delta-Formats"
	// HeaderDelta carries the JSON descriptor of the delta, with the
	// annotations of internal/layerdelta.
	HeaderDelta = "Registry-Edge-Delta"
	// HeaderTierError, on a 5xx answer of a registry-edge, says the failure
	// is its own upstream's ("upstream"): the tier answered, so the link to
	// it is up. A lower tier neither counts such an answer against its
	// circuit breaker (which would cut it off from everything the tier
	// holds) nor retries it (the tier retried already).
	HeaderTierError = "Registry-Edge-Error"
	// HeaderTagAge, on a registry-edge's answer for a tag from its cache,
	// is how many seconds ago the tag's origin confirmed it. Not the HTTP
	// Age header: a CDN or caching proxy in front of a plain registry
	// sends that one about its own copy.
	HeaderTagAge = "Registry-Edge-Tag-Age"
	// StatusIMUsed is 226 IM Used (RFC 3229 section 10.4.1).
	StatusIMUsed = 226
	// maxDeltaHeader bounds HeaderDelta.
	maxDeltaHeader = 64 << 10
)

// DeltaPeer reports whether the upstream has said it answers delta
// negotiations (on any response so far).
func (c *Client) DeltaPeer() bool { return c.deltaPeer.Load() }

// DeltaPending is NegotiateDelta's error when the upstream is still
// computing the delta (202 Accepted): ask again after RetryAfter.
type DeltaPending struct {
	RetryAfter time.Duration
}

func (e *DeltaPending) Error() string {
	return fmt.Sprintf("delta still being computed upstream; ask again in %s", e.RetryAfter)
}

// Bounds of a DeltaPending's RetryAfter, whatever the upstream says.
const (
	minDeltaRetry     = time.Second
	maxDeltaRetry     = 30 * time.Second
	defaultDeltaRetry = 5 * time.Second
)

// NegotiateDelta asks the upstream for a delta that rebuilds blob d of repo
// from some of bases (blobs this mirror holds). It returns the delta's
// descriptor and true on a 226 answer, false when the upstream answers
// with the blob itself, and a *DeltaPending error when the upstream
// answers that it is still computing the delta. The caller checks the
// descriptor (its target and bases) and verifies the rebuilt blob.
//
// The request prefers an asynchronous answer (RFC 7240 "Prefer:
// respond-async, wait"), with a wait of half this client's response
// header timeout: a delta of a large layer can take longer to compute than
// the timeout, which would turn the negotiation into a full fetch.
func (c *Client) NegotiateDelta(ctx context.Context, repo string, d digest.Digest, bases []digest.Digest) (ocispec.Descriptor, bool, error) {
	op := opInfo{name: "negotiate delta", repo: repo, ref: d.String()}
	if err := checkRepo(repo); err != nil {
		return ocispec.Descriptor{}, false, c.fail(op, err)
	}
	if err := d.Validate(); err != nil {
		return ocispec.Descriptor{}, false, c.fail(op, fmt.Errorf("digest: %w", errdef.ErrInvalid))
	}
	if len(bases) == 0 {
		return ocispec.Descriptor{}, false, nil
	}
	tags := make([]string, len(bases))
	for i, b := range bases {
		tags[i] = `"` + b.String() + `"`
	}
	hdr := http.Header{
		"A-Im":          {DeltaIM},
		"If-None-Match": {strings.Join(tags, ", ")},
		"Prefer":        {"respond-async, wait=" + strconv.Itoa(c.deltaWait())},
	}
	if f := deltaFormats(); f != "" {
		hdr.Set(HeaderDeltaFormats, f)
	}
	resp, err := c.do(ctx, op, request{method: http.MethodHead, path: repo + "/blobs/" + d.String(), header: hdr})
	if err != nil {
		return ocispec.Descriptor{}, false, err
	}
	drain(resp.Body)
	switch {
	case resp.StatusCode == StatusIMUsed && strings.EqualFold(resp.Header.Get("Im"), DeltaIM):
	case resp.StatusCode == http.StatusOK:
		return ocispec.Descriptor{}, false, nil
	case resp.StatusCode == http.StatusAccepted:
		wait, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		if !ok {
			wait = defaultDeltaRetry
		}
		return ocispec.Descriptor{}, false, &DeltaPending{RetryAfter: min(max(wait, minDeltaRetry), maxDeltaRetry)}
	default:
		return ocispec.Descriptor{}, false, c.statusError(op, resp)
	}
	raw := resp.Header.Get(HeaderDelta)
	var desc ocispec.Descriptor
	if len(raw) > maxDeltaHeader {
		return ocispec.Descriptor{}, false, c.fail(op, fmt.Errorf("%s header of %d bytes: %w", HeaderDelta, len(raw), errdef.ErrInvalid))
	}
	if err := json.Unmarshal([]byte(raw), &desc); err != nil {
		return ocispec.Descriptor{}, false, c.fail(op, fmt.Errorf("%s header: %w", HeaderDelta, errdef.ErrInvalid))
	}
	return desc, true, nil
}

// deltaWait is how many seconds a negotiation asks the upstream to wait
// for a delta before it answers 202: half the response header timeout,
// rounded down (0, an answer at once, below 2 s), so that a 202 written
// late on a busy upstream still arrives in time.
func (c *Client) deltaWait() int {
	return int(c.bodyStall / 2 / time.Second) // bodyStall is the response header timeout
}

// ParseIfNoneMatch returns the digests named by the entity tags of an
// If-None-Match header, each once (at most max, which must be positive),
// ignoring weak tags and anything that is not a quoted digest.
func ParseIfNoneMatch(values []string, max int) []digest.Digest {
	var out []digest.Digest
	seen := map[digest.Digest]bool{}
	for _, v := range values {
		for _, tag := range strings.Split(v, ",") {
			tag = strings.TrimSpace(tag)
			if len(tag) < 2 || tag[0] != '"' || tag[len(tag)-1] != '"' {
				continue
			}
			d := digest.Digest(tag[1 : len(tag)-1])
			if d.Validate() != nil || seen[d] {
				continue // a base offered twice is compared once
			}
			seen[d] = true
			if out = append(out, d); len(out) == max {
				return out
			}
		}
	}
	return out
}

// deltaFormats is the HeaderDeltaFormats value of this binary's decoder.
func deltaFormats() string {
	vs := make([]string, 0, delta.FormatVersion-delta.MinFormatVersion+1)
	for v := delta.MinFormatVersion; v <= delta.FormatVersion; v++ {
		vs = append(vs, strconv.Itoa(v))
	}
	return strings.Join(vs, ", ")
}

// ReadsDeltaFormat reports whether the lower tier that sent the
// negotiation headers h reads deltas of format version v: it lists v in
// HeaderDeltaFormats, or sends no such header.
func ReadsDeltaFormat(h http.Header, v int) bool {
	vals := h.Values(HeaderDeltaFormats)
	if len(vals) == 0 {
		return true
	}
	for _, val := range vals {
		for _, f := range strings.Split(val, ",") {
			if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n == v {
				return true
			}
		}
	}
	return false
}
