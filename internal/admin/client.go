package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/gc"
)

// Client talks to the admin API of a running registry-edge.
type Client struct {
	base string
	hc   *http.Client
	// timeout bounds a call but an eviction run's, which takes as long as
	// the store needs (minutes on a bucket) and stops, between batches,
	// when the caller's context is cancelled (Ctrl-C).
	timeout time.Duration
}

// NewClient returns a client of the admin API at base, such as
// http://127.0.0.1:5001.
func NewClient(base string) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("admin URL %q: want http://host:port", base)
	}
	return &Client{base: strings.TrimRight(base, "/"), hc: &http.Client{}, timeout: 30 * time.Second}, nil
}

// Prefetch asks the mirror to pre-stage req's images.
func (c *Client) Prefetch(ctx context.Context, req PrefetchRequest) (PrefetchStatus, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return PrefetchStatus{}, err
	}
	return c.do(ctx, http.MethodPost, b)
}

// Remove takes an image added at run time off the mirror's prefetch list.
func (c *Client) Remove(ctx context.Context, ref string) (PrefetchStatus, error) {
	return c.doPath(ctx, http.MethodDelete, PrefetchPath+"?ref="+url.QueryEscape(ref), nil)
}

// Status returns the progress of every image the mirror pre-stages.
func (c *Client) Status(ctx context.Context) (PrefetchStatus, error) {
	return c.do(ctx, http.MethodGet, nil)
}

func (c *Client) do(ctx context.Context, method string, body []byte) (PrefetchStatus, error) {
	return c.doPath(ctx, method, PrefetchPath, body)
}

func (c *Client) doPath(ctx context.Context, method, path string, body []byte) (PrefetchStatus, error) {
	var st PrefetchStatus
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	err := c.call(ctx, method, path, body, &st)
	return st, err
}

// call sends a request and decodes the JSON answer into out.
func (c *Client) call(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin API of the mirror at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		switch {
		case json.Unmarshal(b, &e) == nil && e.Error != "":
			return fmt.Errorf("admin API: %s", errdef.OneLine(e.Error))
		case resp.StatusCode == http.StatusBadRequest && bytes.Contains(b, []byte("HTTP request to an HTTPS server")):
			// Go's answer to plain HTTP on a TLS listener.
			return fmt.Errorf("admin API: the mirror at %s serves HTTPS: use --mirror %s", c.base, strings.Replace(c.base, "http://", "https://", 1))
		case resp.StatusCode == http.StatusNotFound:
			return fmt.Errorf("admin API: none at %s (not a registry-edge, or its admin.allowFrom is [], which turns the API off)", c.base)
		}
		return fmt.Errorf("admin API: %s", resp.Status)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	return nil
}

// GC asks the mirror for an eviction run (or only its plan, with dryRun),
// and waits for it as long as it takes, or until ctx is done.
func (c *Client) GC(ctx context.Context, dryRun bool) (*gc.Plan, error) {
	b, err := json.Marshal(GCRequest{DryRun: dryRun})
	if err != nil {
		return nil, err
	}
	var plan gc.Plan
	if err := c.call(ctx, http.MethodPost, GCPath, b, &plan); err != nil {
		return nil, err
	}
	return &plan, nil
}
