package main

import (
	"net/url"
	"regexp"
	"strings"
)

// urlPattern finds the URLs in an error message (Go's HTTP client quotes
// the URL it failed to get: Get "https://...": ...).
var urlPattern = regexp.MustCompile(`(?i)\bhttps?://[^\s"'<>]+`)

// redactURLs returns msg with the query values and the user information of
// every URL in it replaced by "redacted". A registry redirects blob and
// manifest reads to CDNs and object stores with tokens and signatures in
// the query (X-Amz-Signature, token=...), and an error on the way there
// quotes that URL; go-containerregistry redacts it for blobs only.
func redactURLs(msg string) string {
	return urlPattern.ReplaceAllStringFunc(msg, func(s string) string {
		raw := strings.TrimRight(s, ".,;:)")
		tail := s[len(raw):]
		u, err := url.Parse(raw)
		if err != nil {
			return "[unparsable url]" + tail
		}
		if u.User == nil && u.RawQuery == "" {
			return s
		}
		if u.User != nil {
			u.User = url.User("redacted")
		}
		if u.RawQuery != "" {
			q, err := url.ParseQuery(u.RawQuery)
			if err != nil {
				u.RawQuery = "redacted"
			} else {
				for k := range q {
					q[k] = []string{"redacted"}
				}
				u.RawQuery = q.Encode()
			}
		}
		return u.String() + tail
	})
}
