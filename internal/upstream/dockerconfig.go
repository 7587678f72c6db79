package upstream

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// maxDockerConfig bounds the size of a Docker config.json we read.
const maxDockerConfig = 4 << 20

// dockerHubHosts are the names under which Docker Hub credentials may be
// stored; "docker login" writes the key "https://index.docker.io/v1/".
var dockerHubHosts = []string{"index.docker.io", "docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

type dockerAuthEntry struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
	RegistryToken string `json:"registrytoken"`
}

type dockerConfigFile struct {
	Auths       map[string]dockerAuthEntry `json:"auths"`
	CredsStore  string                     `json:"credsStore"`
	CredHelpers map[string]string          `json:"credHelpers"`
}

// readDockerConfig returns the credentials stored in the Docker config.json
// at path for the first of hosts that has an entry. Keys are compared by
// host: "https://ghcr.io", "ghcr.io" and "ghcr.io/v2/" all name ghcr.io.
//
// Credential helpers (credsStore, credHelpers) are not run: an edge mirror
// should not execute programs named by a file. A host that Docker would
// ask a helper for (its credHelpers entry, whatever its auths entry holds,
// or the empty auths entry a credsStore leaves) is an error wrapping
// errdef.ErrUnsupported; a host without any entry is an error wrapping
// errdef.ErrNotFound.
func readDockerConfig(path string, hosts []string) (credentials, error) {
	f, err := os.Open(path)
	if err != nil {
		return credentials{}, fmt.Errorf("docker config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxDockerConfig+1))
	if err != nil {
		return credentials{}, fmt.Errorf("docker config: %w", err)
	}
	if len(b) > maxDockerConfig {
		return credentials{}, fmt.Errorf("docker config: larger than %d bytes: %w", maxDockerConfig, errdef.ErrTooLarge)
	}
	return parseDockerConfig(b, hosts)
}

func parseDockerConfig(b []byte, hosts []string) (credentials, error) {
	var cf dockerConfigFile
	if err := json.Unmarshal(b, &cf); err != nil {
		// The JSON error names only offsets and types, never values.
		return credentials{}, fmt.Errorf("docker config: %w: %w", errdef.ErrInvalid, err)
	}
	// Several keys may name one host; which entry is used must not depend
	// on map order: the exact host wins, then a key for the whole host
	// ("https://ghcr.io", "https://index.docker.io/v1/"), then the first in
	// sorted order of the keys for a part of it (podman's per-namespace
	// "ghcr.io/org", which a client of the whole registry cannot follow).
	keys := slices.Sorted(maps.Keys(cf.Auths))
	byHost := map[string]dockerAuthEntry{}
	rank := map[string]int{}
	for _, k := range keys {
		h := configKeyHost(k)
		r := configKeyRank(k, h)
		if old, dup := rank[h]; !dup || r < old {
			byHost[h], rank[h] = cf.Auths[k], r
		}
	}
	helpers := map[string]bool{}
	for k := range cf.CredHelpers {
		helpers[configKeyHost(k)] = true
	}
	helperHost := ""
	for _, h := range hosts {
		h = strings.ToLower(h)
		if helpers[h] {
			// Docker asks the host's helper and never reads its auths
			// entry, which is then a leftover of an earlier login (an
			// expired key, a rotated password): not used either.
			return credentials{}, fmt.Errorf("docker config: credentials for %s are in a credential helper (credHelpers), which registry-edge does not run: %w", h, errdef.ErrUnsupported)
		}
		e, ok := byHost[h]
		if !ok {
			continue
		}
		c, err := e.credentials()
		if err != nil {
			return credentials{}, fmt.Errorf("docker config: entry for %s: %w", h, err)
		}
		if c == (credentials{}) {
			// "docker login" with a credsStore leaves an empty entry.
			if cf.CredsStore != "" && helperHost == "" {
				helperHost = h
			}
			continue
		}
		return c, nil
	}
	if helperHost != "" {
		return credentials{}, fmt.Errorf("docker config: credentials for %s are in a credential helper (credsStore), which registry-edge does not run: %w", helperHost, errdef.ErrUnsupported)
	}
	if cf.CredsStore != "" {
		return credentials{}, fmt.Errorf("docker config: no credentials for %s in auths (its credsStore is not run): %w", strings.Join(hosts, ", "), errdef.ErrNotFound)
	}
	return credentials{}, fmt.Errorf("docker config: no credentials for %s: %w", strings.Join(hosts, ", "), errdef.ErrNotFound)
}

func (e dockerAuthEntry) credentials() (credentials, error) {
	c := credentials{
		username:      e.Username,
		password:      e.Password,
		identityToken: e.IdentityToken,
		registryToken: e.RegistryToken,
	}
	if e.Auth != "" {
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(e.Auth))
		if err != nil {
			raw, err = base64.RawStdEncoding.DecodeString(strings.TrimSpace(e.Auth))
		}
		if err != nil {
			return credentials{}, fmt.Errorf("auth is not base64: %w", errdef.ErrInvalid)
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok {
			return credentials{}, fmt.Errorf("auth is not user:password: %w", errdef.ErrInvalid)
		}
		c.username, c.password = user, pass
	}
	if c.identityToken != "" {
		// docker login stores "<token>" as the user name with an identity
		// token; it is not a basic credential.
		c.username, c.password = "", ""
	}
	return c, nil
}

// configKeyHost reduces a config.json "auths" key to a lower-case host:
// "https://index.docker.io/v1/" → "index.docker.io".
func configKeyHost(k string) string {
	k = strings.ToLower(strings.TrimSpace(k))
	k = strings.TrimPrefix(k, "https://")
	k = strings.TrimPrefix(k, "http://")
	if i := strings.IndexByte(k, '/'); i >= 0 {
		k = k[:i]
	}
	return k
}

// configKeyRank orders the auths keys that name host h: 0 for h itself, 1
// for another spelling of the whole host (a scheme, a trailing "/", the
// "/v1/" or "/v2/" of an API URL), 2 for a key that names a repository
// namespace on it.
func configKeyRank(k, h string) int {
	if k == h {
		return 0
	}
	k = strings.ToLower(strings.TrimSpace(k))
	k = strings.TrimPrefix(k, "https://")
	k = strings.TrimPrefix(k, "http://")
	switch strings.TrimPrefix(k, h) {
	case "", "/", "/v1", "/v1/", "/v2", "/v2/":
		return 1
	}
	return 2
}

// configHosts returns the hosts to look up in a Docker config.json for a
// registry at host named name, most specific first.
func configHosts(host, name string) []string {
	var out []string
	add := func(h string) {
		h = strings.ToLower(h)
		if h == "" {
			return
		}
		for _, o := range out {
			if o == h {
				return
			}
		}
		out = append(out, h)
	}
	add(host)
	add(name)
	for _, h := range []string{host, name} {
		for _, hub := range dockerHubHosts {
			if strings.EqualFold(h, hub) {
				for _, hh := range dockerHubHosts {
					add(hh)
				}
			}
		}
	}
	return out
}
