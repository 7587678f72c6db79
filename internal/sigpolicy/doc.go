// Package sigpolicy verifies cosign signatures of manifests against a
// per-repository policy, offline (issue #6): before the mirror serves or
// caches a manifest as trusted, it asks Verify whether a signature the rule
// accepts exists, and denies (enforce), logs (warn) or skips (off).
//
// # Policy
//
// A Spec is an ordered list of rules and a default mode; New checks it and
// compiles it into an immutable *Policy. The first rule with a repository
// glob matching "<registry>/<repository>" applies (Match); repositories
// that no rule matches get the default mode, off unless set. Rule modes
// default to enforce. A rule accepts a signature that:
//
//   - verifies with any of its public keys (PEM: ECDSA on P-256, P-384 or
//     P-521, hashed with the curve's hash as cosign signs, or with SHA-256
//     as cosign before v2.2 did; Ed25519; RSA; any of them, so keys can be
//     rotated by listing old and new, in one PEM text or in several), or
//     carries a certificate that chains to its pinned Fulcio roots
//     (through its pinned intermediates, or the chain in the signature)
//     and whose OIDC issuer and subject match any of its identities
//     (exact or anchored regular expression);
//   - signs a payload naming the manifest's digest
//     (critical.image.docker-manifest-digest, or the subject of the in-toto
//     statement of a sigstore bundle);
//   - carries the rule's required annotations, if any;
//   - if the rule requires a transparency-log proof, comes with a Rekor
//     entry signed by one of the rule's pinned Rekor keys (for a keyless
//     signature, logged while its certificate was valid). Without that
//     requirement the Rekor bundle is ignored, as with cosign
//     --insecure-ignore-tlog, which is what key-based signatures made with
//     "cosign sign --tlog-upload=false" need.
//
// # Repository globs
//
// A glob is matched against "<registry>/<repository>", for example
// "central.example.com/fleet/app", segment by segment ('/'). A segment "**"
// matches any number of segments, zero included, so
// "central.example.com/fleet/**" matches "central.example.com/fleet" and
// everything under it; "*" inside a segment matches any characters of that
// segment only ("central.example.com/fleet-*/**", "*/fleet/**" for any
// registry). Globs are lower case (distribution-spec repository names are);
// the registry passed to Match and Verify is lower-cased. The registry is
// the host[:port] that the mirror routes the request to, as written in its
// upstream configuration ("docker.io", with Docker Hub's "library/" added to
// the repository).
//
// # Where signatures are found
//
// Verify reads, through the Source the mirror implements, the first and,
// only if no signature there verifies, the second of:
//
//   - the cosign tag "sha256-<hex>.sig": an image manifest whose layers of
//     media type application/vnd.dev.cosign.simplesigning.v1+json are the
//     signed payloads, with the base64 signature in the layer annotation
//     dev.cosignproject.cosign/signature, and optionally the certificate
//     (dev.sigstore.cosign/certificate), its chain
//     (dev.sigstore.cosign/chain) and the Rekor bundle
//     (dev.sigstore.cosign/bundle);
//   - the OCI 1.1 referrers of the manifest: cosign signature manifests of
//     the same layout (artifactType
//     application/vnd.dev.cosign.artifact.sig.v1+json, written by cosign's
//     OCI 1.1 mode), and sigstore bundles v0.3 (artifactType
//     application/vnd.dev.sigstore.bundle.v0.3+json, written by "cosign
//     sign --new-bundle-format"). Bundles whose statement is not of
//     cosign's sign predicate (https://sigstore.dev/cosign/sign/v1) are
//     attestations and are not signatures.
//
// As with cosign, a signature binds a digest, not a repository name: the
// payload's docker-reference is not compared with the repository.
//
// Every manifest and blob read by digest is checked against its digest
// again. A registry's "not found" is an answer, not a failure to fetch: a
// referrer listed but absent (a stale tag schema index) is no signature,
// and a signature whose payload or bundle is absent is an unreadable one
// (invalid_signature). At most 16 referrers, 64 signatures (the newest of the tag's) and
// 256 KiB per payload or bundle are read per manifest.
//
// # How it verifies
//
// Only with cosign's verification API, offline: no Rekor, Fulcio or TUF
// request is made, and nothing but the Source and the Spec is read.
//
//   - Simple-signing signatures (tag and OCI 1.1 referrers):
//     static.NewSignature builds the oci.Signature from the layer, and
//     cosign.VerifyImageSignature checks it, once per rule key
//     (CheckOpts.SigVerifier) and once as keyless (RootCerts,
//     IntermediateCerts, Identities), with ClaimVerifier
//     cosign.SimpleClaimVerifier (digest and Annotations), Offline, no
//     RekorClient, IgnoreTlog unless the rule requires the log, and then
//     RekorPubKeys: cosign.VerifyBundle checks the bundle's signed entry
//     timestamp offline and that the logged entry is this payload,
//     signature and key or certificate, and VerifyImageSignature then
//     checks the certificate's validity at the logged time.
//   - Sigstore bundles: cosign.VerifyNewBundle (sigstore-go's verifier)
//     with a trusted root built in memory from the rule's pinned roots,
//     intermediates and Rekor keys (no trusted_root.json needed), an
//     artifact-digest policy for the manifest digest, and the rule's key
//     or one identity at a time. With the log required, the entry's
//     inclusion promise and inclusion proof (a Rekor v1 checkpoint signed
//     by the pinned key) are verified offline, and the integrated time is
//     the time at which the certificate must have been valid.
//
// When every signature fails, a second pass explains why with cosign's
// individual checks (TrustedCert, CheckCertificatePolicy,
// SimpleClaimVerifier, VerifyBundle, CheckExpiry) so that the verdict
// carries one Reason; that pass never accepts anything. Of several failing
// signatures, the one that came closest to verifying names the reason.
//
// # Verdicts and errors
//
// Verify returns a Verdict: the rule, its revision and mode, OK, a Reason
// (a closed set, fit for a metric label), a Message for the client (rule
// and reason, no key material or certificate subject) and, when OK, who
// signed (Signer: "key sha256:<hex of the SubjectPublicKeyInfo>" or
// "<subject> (issuer <issuer>)") and where the signature was found. A
// missing or invalid signature is a Verdict; an error means signatures
// could not be fetched (errors from the Source, wrapped, so errors.Is still
// sees errdef.ErrUnavailable and the like), and the mirror decides.
//
// The package is stateless and keeps no cache. The mirror caches verdicts
// under (manifest digest, Match.Rule, Match.Revision): the revision changes
// when what the rule accepts changes (keys, identities, roots, Rekor keys,
// annotations), not when its mode, name or globs do. A positive verdict
// stays true; a negative one may change when a signature is pushed later,
// so it should be re-checked when the signature tag or the referrers
// change. For a multi-arch index, Covers tells whether a verified index
// lists a child manifest, which is then covered by the index's verdict
// (a child signed itself, as by "cosign sign --recursive", also verifies
// on its own).
//
// # Not supported
//
//   - Signed certificate timestamps (SCTs) of keyless certificates are not
//     checked (CheckOpts.IgnoreSCT): that would need pinned CT log keys.
//     The transparency-log proof is what shows when a certificate signed.
//   - RFC 3161 timestamps (TSA) are ignored. A keyless signature without a
//     required log proof is checked against the current time, so a
//     short-lived Fulcio certificate fails once expired: keyless rules
//     should set RequireTlog. (cosign reads the clock itself here; there is
//     no clock to inject.)
//   - Rekor keys must be ECDSA (cosign verifies Rekor v1 signed entry
//     timestamps with ECDSA only). Rekor v2 (tile-based) entries in bundles
//     are not verified: they need the log's origin URL, which the policy
//     does not carry.
//   - Sigstore bundles v0.3 hold only the leaf certificate: a keyless rule
//     must pin the Fulcio intermediates for them to verify. They carry no
//     annotations, so a rule that requires annotations rejects them
//     (missing_annotation). Older bundles (artifactType
//     application/vnd.dev.sigstore.bundle+json;version=0.1 or 0.2) are
//     read the same way.
//   - For simple-signing signatures, cosign reads the OIDC issuer from the
//     Fulcio extension 1.3.6.1.4.1.57264.1.1 only (Fulcio writes it next to
//     1.3.6.1.4.1.57264.1.8); sigstore bundles are read with either.
//   - Attestations (.att tags, in-toto bundles of other predicates), SBOMs
//     and GitHub-workflow certificate extensions are not part of a rule.
//   - Ed25519 signatures are accepted in both of cosign's forms
//     (Ed25519ph, its default, and pure Ed25519 of older versions).
package sigpolicy
