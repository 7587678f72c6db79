package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/config"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/sigpolicy"
)

const verifyUsage = `usage: deltactl verify [flags] --policy FILE IMAGE

Checks IMAGE against the signature policy of a registry-edge config file (its
signatures block), with the mirror's own verification code, and prints the
verdict for each manifest: the image manifest, or the index, the indexes nested
in it on the way to the platforms, and each platform manifest (those --platform
selects). A verified index covers what it lists, nested indexes included. The signatures are read from
IMAGE's registry (the sha256-<hex>.sig tag and the OCI referrers).

Exit status 0 when a mirror with that policy would serve every manifest listed
(verified, covered by a verified index, or a rule in warn or off mode), 1 when
it would deny one (the verdicts are printed all the same), 2 when there is no
verdict (a usage error, an invalid policy file, a registry that cannot be
read), 130 (Ctrl-C) or 143 (SIGTERM) when interrupted.

flags:
`

// verifyReport is the result of verify (--format json).
type verifyReport struct {
	// Image is IMAGE as given.
	Image string `json:"image"`
	// Registry and Repository are the names the rules are matched with.
	Registry   string `json:"registry"`
	Repository string `json:"repository"`
	// Manifests are the index (if IMAGE names one) and then its platform
	// manifests, or the one image manifest.
	Manifests []verifyManifest `json:"manifests"`
}

// verifyManifest is the verdict on one manifest.
type verifyManifest struct {
	Digest digest.Digest `json:"digest"`
	// Platform is os/arch[/variant]; absent for an index.
	Platform string         `json:"platform,omitempty"`
	Rule     string         `json:"rule"`
	Mode     sigpolicy.Mode `json:"mode"`
	// OK reports that a signature of this manifest satisfied the rule.
	OK bool `json:"ok"`
	// Allowed reports that a mirror with the policy would serve the
	// manifest: OK, covered by a verified index, or not enforced.
	Allowed bool             `json:"allowed"`
	Reason  sigpolicy.Reason `json:"reason"`
	Message string           `json:"message"`
	// CoveredBy is the verified index that covers a platform manifest
	// without a valid signature of its own.
	CoveredBy digest.Digest `json:"coveredBy,omitempty"`
	// Signer and Signature say who signed and where the signature is; for
	// a manifest covered by its index, those of the index.
	Signer    string `json:"signer,omitempty"`
	Signature string `json:"signature,omitempty"`
	// Detail says more about a failure (cosign's error, certificate
	// subjects).
	Detail string `json:"detail,omitempty"`
}

func verifyCmd(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "verify", verifyUsage)
	var policyFile, registryName string
	var platforms platformList
	f.StringVar(&policyFile, "policy", "", "registry-edge config `file` whose signatures block is the policy (required)")
	f.StringVar(&registryName, "registry", "", "registry `name` the rules are matched with, as the mirror's upstream names it (default: IMAGE's registry as written; docker.io when it names none)")
	f.platformFlag(&platforms)
	f.registryFlags()
	f.formatFlag()
	pos, err := f.parse(args, 1, 1)
	if err != nil {
		return err
	}
	if policyFile == "" {
		return f.usageErr("--policy is required")
	}
	c := newClient(ctx, f.insecure, f.timeout, &e.creds)
	ref, err := c.parseRef(pos[0])
	if err != nil {
		return f.usageErr("IMAGE: %v", err)
	}
	if registryName == "" {
		registryName = writtenRegistry(pos[0])
	}
	registryName = strings.ToLower(registryName)

	pol, upstreams, err := loadPolicy(policyFile)
	if err != nil {
		return err
	}
	if (registryName == "index.docker.io" || registryName == "registry-1.docker.io") && slices.Contains(upstreams, "docker.io") {
		registryName = "docker.io" // as the mirror names Docker Hub's hosts
	}
	if !slices.Contains(upstreams, registryName) {
		// Rules are matched on the upstream's name: an image checked under
		// a name the mirror does not have would pass rules it is under.
		return f.usageErr("%s is no upstream of %s (upstreams: %s): pass --registry with the name the mirror knows IMAGE's registry by",
			registryName, policyFile, strings.Join(upstreams, ", "))
	}
	img, err := c.resolve(ref)
	if err != nil {
		return err
	}
	pms, err := img.selectPlatforms(platforms)
	if err != nil {
		return err
	}
	src := &remoteSource{c: c, repo: img.repo()}
	if sr := pol.Match(registryName, img.repo().RepositoryStr()).SignatureRepository; sr != "" {
		// Signed with COSIGN_REPOSITORY: the signatures are in that
		// repository, which deltactl can reach only on IMAGE's registry
		// (it knows the mirror's other upstreams by name, not address).
		host, path, _ := strings.Cut(sr, "/")
		if host != registryName {
			return fmt.Errorf("the rule for %s keeps its signatures in %s, on another registry than IMAGE's (%s): verify through the mirror, or pass that repository's images by their registry", img.repo(), sr, registryName)
		}
		if src.repo, err = name.NewRepository(img.repo().RegistryStr()+"/"+path, c.nameOpts...); err != nil {
			return fmt.Errorf("signature repository %s: %w", sr, err)
		}
	}
	rep := verifyReport{Image: pos[0], Registry: registryName, Repository: img.repo().RepositoryStr(), Manifests: []verifyManifest{}}
	check := func(d digest.Digest) (sigpolicy.Verdict, error) {
		v, err := pol.Verify(ctx, src, rep.Registry, rep.Repository, d)
		if err != nil {
			return v, fmt.Errorf("verify %s@%s: %w", img.repo(), d, err)
		}
		return v, nil
	}

	top := digest.Digest(img.desc.Digest.String())
	// A verified index covers what it lists, as the mirror has it: an
	// index nested in it, covered, covers what it lists in turn, and a
	// signature on a nested index covers only what is below it. trusted
	// maps each index served as verified (signed or covered) to the
	// signed index that covers it.
	trusted := map[digest.Digest]trust{}
	// A manifest listed by several indexes (parents) is covered by any
	// of them that is trusted, the first in the order listed.
	covered := func(d digest.Digest, parents []digest.Digest, v sigpolicy.Verdict, m *verifyManifest) {
		if v.OK {
			return
		}
		var by trust
		for _, parent := range parents {
			if t, ok := trusted[parent]; ok && sigpolicy.Covers(parent, img.nestedIndex(parent).body, d) {
				by = t
				break
			}
		}
		if by.index == "" {
			return
		}
		trusted[d] = by
		m.Allowed, m.CoveredBy = true, by.index
		m.Signer, m.Signature = by.verdict.Signer, by.verdict.Signature
		m.Message = fmt.Sprintf("covered by the verified index %s; on its own: %s", by.index, v.Message)
	}
	// The indexes a pull of the platforms goes through.
	onPath := map[digest.Digest]bool{}
	for _, pm := range pms {
		for _, path := range pm.paths() {
			for _, d := range path {
				onPath[d] = true
			}
		}
	}
	for _, ix := range img.indexes {
		if !onPath[ix.desc.Digest] {
			continue
		}
		v, err := check(ix.desc.Digest)
		if err != nil {
			return err
		}
		m := manifestVerdict(v, "")
		if v.OK {
			trusted[ix.desc.Digest] = trust{index: ix.desc.Digest, verdict: v}
		}
		var parents []digest.Digest
		if len(ix.path) > 0 {
			parents = ix.path[len(ix.path)-1:]
		}
		covered(ix.desc.Digest, parents, v, &m)
		rep.Manifests = append(rep.Manifests, m)
	}
	for _, pm := range pms {
		d := digest.Digest(pm.desc.Digest.String())
		v, err := check(d)
		if err != nil {
			return err
		}
		m := manifestVerdict(v, platformString(pm.platform))
		var parents []digest.Digest
		for _, path := range pm.paths() {
			parents = append(parents, path[len(path)-1])
		}
		covered(d, parents, v, &m)
		rep.Manifests = append(rep.Manifests, m)
	}

	denied := 0
	for _, m := range rep.Manifests {
		if !m.Allowed {
			denied++
		}
	}
	if f.format == formatJSON {
		if err := writeJSON(e.stdout, rep); err != nil {
			return err
		}
	} else {
		rep.writeTable(e.stdout, top)
	}
	if denied > 0 {
		return &deniedError{n: denied}
	}
	return nil
}

// trust is the signed index that makes an index or manifest served.
type trust struct {
	index   digest.Digest
	verdict sigpolicy.Verdict
}

// deniedError is verify's verdict that a mirror would deny n manifests:
// exit status 1. Any other failure of verify gives no verdict: exit
// status 2 (exitNoVerdict), as grep and diff tell "no" from "trouble".
type deniedError struct{ n int }

func (d *deniedError) Error() string { return fmt.Sprintf("%d manifest(s) would be denied", d.n) }

// exitNoVerdict is verify's exit status when it could not judge the image.
const exitNoVerdict = 2

// loadPolicy loads a registry-edge config file and compiles its signature
// policy; it returns the names of its upstreams too (lower case).
func loadPolicy(path string) (*sigpolicy.Policy, []string, error) {
	cfg, err := config.LoadFile(path)
	if err == nil {
		err = cfg.CheckSignatureScopes()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("--policy: %w", err)
	}
	pol, err := cfg.SignaturePolicy()
	if err != nil {
		return nil, nil, fmt.Errorf("--policy %s: %w", path, err)
	}
	if pol == nil {
		return nil, nil, fmt.Errorf("--policy %s: no signature policy (the signatures block has no rule and its defaultMode is off)", path)
	}
	var names []string
	for _, u := range cfg.Upstreams {
		names = append(names, strings.ToLower(u.Registry))
	}
	return pol, names, nil
}

// manifestVerdict is the row of verdict v.
func manifestVerdict(v sigpolicy.Verdict, platform string) verifyManifest {
	return verifyManifest{
		Digest:    v.Digest,
		Platform:  platform,
		Rule:      v.Rule,
		Mode:      v.Mode,
		OK:        v.OK,
		Allowed:   v.Allowed(),
		Reason:    v.Reason,
		Message:   v.Message,
		Signer:    v.Signer,
		Signature: v.Signature,
		Detail:    v.Detail,
	}
}

// writtenRegistry is the registry part of an image reference as written,
// lower-cased: the first path component when it looks like a host (it has
// a '.' or a ':', or is localhost, as docker decides), else docker.io, the
// name registry-edge's Docker Hub upstream has.
func writtenRegistry(ref string) string {
	host, rest, ok := strings.Cut(ref, "/")
	if ok && rest != "" && (strings.ContainsAny(host, ".:") || host == "localhost") {
		return strings.ToLower(host)
	}
	return "docker.io"
}

func (r verifyReport) writeTable(w io.Writer, top digest.Digest) {
	tw := newTable(w)
	fmt.Fprintln(tw, "DIGEST\tPLATFORM\tRULE\tMODE\tVERDICT\tSERVED\tSIGNER / MESSAGE")
	denied := 0
	for _, m := range r.Manifests {
		platform := m.Platform
		if platform == "" {
			platform = "index"
		}
		verdict, served, about := string(m.Reason), "yes", m.Message
		switch {
		case m.CoveredBy != "":
			verdict, about = "covered by index", m.Signer+" (index "+shortDigest(m.CoveredBy)+")"
		case m.OK:
			about = m.Signer
		}
		if !m.Allowed {
			served = "no"
			denied++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shortDigest(m.Digest), platform, m.Rule, m.Mode, verdict, served, errdef.OneLine(about))
	}
	tw.Flush()
	for _, m := range r.Manifests {
		if !m.OK && m.CoveredBy == "" && m.Detail != "" {
			fmt.Fprintf(w, "%s detail: %s\n", shortDigest(m.Digest), errdef.OneLine(m.Detail))
		}
	}
	what := "all would be served"
	if denied > 0 {
		what = fmt.Sprintf("%d would be denied", denied)
	}
	fmt.Fprintf(w, "%s (%s): %d manifest(s), %s (rules matched on %s/%s)\n", r.Image, top, len(r.Manifests), what, r.Registry, r.Repository)
}

// remoteSource is sigpolicy.Source over a registry: what the mirror reads
// through its cache, read here directly from IMAGE's repository.
type remoteSource struct {
	c    *client
	repo name.Repository
}

var _ sigpolicy.Source = (*remoteSource)(nil)

// opts returns the client's options with ctx, which outranks the one the
// client was made with.
func (s *remoteSource) opts(ctx context.Context) []remote.Option {
	return append(slices.Clip(s.c.opts), remote.WithContext(ctx))
}

// Manifest returns a manifest of the image's repository by tag or digest;
// repo is the one Verify was given, which names the same repository.
func (s *remoteSource) Manifest(ctx context.Context, _, ref string) ([]byte, error) {
	var r name.Reference = s.repo.Tag(ref)
	if d, err := digest.Parse(ref); err == nil {
		r = s.repo.Digest(d.String())
	}
	desc, err := remote.Get(r, s.opts(ctx)...)
	if err != nil {
		return nil, sourceErr("manifest "+r.String(), err)
	}
	return desc.Manifest, nil
}

// Referrers returns the referrers index of subject: the referrers API, or
// the sha256-<hex> tag on registries without it (none there is an empty
// index).
func (s *remoteSource) Referrers(ctx context.Context, _ string, subject digest.Digest) ([]byte, error) {
	r := s.repo.Digest(subject.String())
	b, err := s.c.referrers(ctx, r)
	if err != nil {
		return nil, sourceErr("referrers of "+r.String(), err)
	}
	return b, nil
}

// Blob returns blob d, reading at most maxSize bytes of it.
func (s *remoteSource) Blob(ctx context.Context, _ string, d digest.Digest, maxSize int64) ([]byte, error) {
	r := s.repo.Digest(d.String())
	l, err := remote.Layer(r, s.opts(ctx)...)
	if err != nil {
		return nil, sourceErr("blob "+r.String(), err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, sourceErr("blob "+r.String(), err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(rc, maxSize+1)); err != nil {
		return nil, sourceErr("blob "+r.String(), err)
	}
	if int64(buf.Len()) > maxSize {
		return nil, fmt.Errorf("blob %s: more than %d bytes: %w", r, maxSize, errdef.ErrTooLarge)
	}
	return buf.Bytes(), nil
}

// sourceErr maps a registry error to the sigpolicy.Source contract: a 404
// is errdef.ErrNotFound; anything else is a failure to fetch.
func sourceErr(what string, err error) error {
	if terr, ok := errors.AsType[*transport.Error](err); ok && terr.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s: %w: %w", what, errdef.ErrNotFound, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
