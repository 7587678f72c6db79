package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// credentialLog is Docker's config.json (authn.DefaultKeychain), noting the
// registries it has no credentials for: a 401 from a registry that wants a
// login is then said to be a missing `docker login`, which the registry's
// reason ("UNAUTHORIZED: authentication required") does not say.
type credentialLog struct {
	mu   sync.Mutex
	none []string // registries resolved to anonymous, in order first asked
	some bool     // whether any registry had credentials
}

func (l *credentialLog) Resolve(r authn.Resource) (authn.Authenticator, error) {
	return l.ResolveContext(context.Background(), r)
}

func (l *credentialLog) ResolveContext(ctx context.Context, r authn.Resource) (authn.Authenticator, error) {
	a, err := authn.Resolve(ctx, authn.DefaultKeychain, r)
	if err != nil {
		return a, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case a != authn.Anonymous:
		l.some = true
	case !slices.Contains(l.none, r.RegistryStr()):
		l.none = append(l.none, r.RegistryStr())
	}
	return a, nil
}

// hint is what to add to the reason of err: for a 401, that the command
// had no credentials for the registry that answered it; else "". A 401
// from a token service (whose host is not the registry's) is put down to
// the registries without credentials only when no registry had any: with
// some, it may be theirs that were refused.
func (l *credentialLog) hint(err error) string {
	te, ok := errors.AsType[*transport.Error](err)
	if !ok || te.StatusCode != http.StatusUnauthorized {
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	none := l.none
	if te.Request != nil && slices.Contains(l.none, te.Request.URL.Host) {
		none = []string{te.Request.URL.Host}
	} else if l.some {
		return ""
	}
	if len(none) == 0 {
		return ""
	}
	return fmt.Sprintf(" (no credentials for %s in Docker's config.json: docker login %s)", strings.Join(none, ", "), none[0])
}

// tlsHint is what to add to the reason of err when a registry's
// certificate did not verify (self-signed, an internal CA): the flag that
// accepts it, which the TLS error does not name.
func tlsHint(err error) string {
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); !ok {
		return ""
	}
	return " (--insecure accepts a certificate that does not verify)"
}
