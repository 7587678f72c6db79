package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/testutil/cosigntest"
)

// The signature policy with the real binaries: central (the real registry)
// holds a signed and an unsigned image, the signature pushed as cosign
// pushes it (sha256-<hex>.sig); registry-edge runs with a config whose
// rule names the public key file. crane pulls the signed image through the
// mirror; the unsigned one is refused with 403 DENIED naming the rule;
// with central stopped, the signed image and its signature are still
// served and the unsigned one still refused.
func TestSignaturePolicyAtSite(t *testing.T) {
	t.Parallel()
	crane := need(t, "crane")
	c := startCentral(t)
	signed := pushImage(t, c, "fleet/app", "signed", ociImage(t, runtime.GOARCH, 2, 64<<10))
	unsigned := pushImage(t, c, "fleet/app", "unsigned", ociImage(t, runtime.GOARCH, 1, 64<<10))
	sigTag, keyFile := signInCentral(t, c, signed)
	m := startMirror(t, c.addr, mirrorOptions{config: fleetPolicy(c, keyFile)})

	dir := pullOCI(t, crane, signed.ref(m.addr))
	readLayout(t, dir).checkImage(t, signed)
	_, err := runErr(nil, crane, "--insecure", "manifest", unsigned.ref(m.addr))
	if err == nil || !strings.Contains(err.Error(), "DENIED") || !strings.Contains(err.Error(), `"fleet"`) || !strings.Contains(err.Error(), "no_signature") {
		t.Errorf("crane manifest of the unsigned image: %v; want DENIED naming the rule and no_signature", err)
	}
	resp, _ := httpDo(t, "GET", "http://"+m.addr+"/v2/fleet/app/blobs/"+unsigned.layers[0], nil, nil)
	if resp.StatusCode != 403 {
		t.Errorf("GET a layer of the unsigned image: %s, want 403", resp.Status)
	}

	c.proc.stop() // the uplink is down
	dir = pullOCI(t, crane, signed.ref(m.addr))
	readLayout(t, dir).checkImage(t, signed)
	craneRun(t, crane, "manifest", m.addr+"/fleet/app:"+sigTag) // the evidence is served too
	// A real client: cosign verify against the mirror, central down.
	cosign := need(t, "cosign")
	home := t.TempDir() // no TUF cache or docker config of the machine
	env := []string{"HOME=" + home, "TUF_ROOT=" + filepath.Join(home, "tuf"), "DOCKER_CONFIG=" + home}
	out := run(t, env, cosign, "verify", "--key", keyFile, "--insecure-ignore-tlog=true", "--allow-http-registry",
		m.addr+"/fleet/app@"+signed.digest)
	if !strings.Contains(out, signed.digest) {
		t.Errorf("cosign verify through the mirror printed no payload for %s:\n%s", signed.digest, out)
	}
	if out, err := runErr(nil, crane, "--insecure", "manifest", unsigned.ref(m.addr)); err == nil {
		t.Errorf("unsigned image served with central down: %s", out)
	}
}

// signInCentral signs image p in central with a new key, as cosign does
// (a signature manifest under the tag sha256-<hex>.sig), and returns that
// tag and the file of the public key.
func signInCentral(t *testing.T, c *central, p pushed) (sigTag, keyFile string) {
	t.Helper()
	key := cosigntest.NewKey(t)
	sigTag = cosigntest.SignatureTag(digest.Digest(p.digest))
	if err := remote.Write(parseRef(t, c.addr+"/"+p.repo+":"+sigTag), key.Sign(t, c.addr+"/"+p.repo, digest.Digest(p.digest))); err != nil {
		t.Fatal(err)
	}
	keyFile = filepath.Join(t.TempDir(), "cosign.pub")
	writeFile(t, keyFile, key.PublicPEM)
	return sigTag, keyFile
}

// fleetPolicy is a signatures section that enforces signatures by keyFile
// on central's fleet/** repositories.
func fleetPolicy(c *central, keyFile string) string {
	return `signatures:
  rules:
    - name: fleet
      repositories: ["` + strings.ToLower(c.addr) + `/fleet/**"]
      mode: enforce
      keys: [` + keyFile + `]
`
}

// Signatures in another repository with the real cosign: `cosign sign
// --key` with COSIGN_REPOSITORY puts the signature of central's fleet/app
// in fleet/signatures. A mirror whose rule says signatureRepository:
// fleet/signatures serves the image (and, with central down, still does,
// and cosign verify with the same COSIGN_REPOSITORY works against the
// mirror); a mirror whose rule does not say it refuses it, no_signature.
func TestSignatureRepositoryAtSite(t *testing.T) {
	t.Parallel()
	crane, cosign := need(t, "crane"), need(t, "cosign")
	c := startCentral(t)
	img := pushImage(t, c, "fleet/app", "v1", ociImage(t, runtime.GOARCH, 1, 32<<10))
	home := t.TempDir() // no TUF cache or docker config of the machine
	env := []string{"HOME=" + home, "TUF_ROOT=" + filepath.Join(home, "tuf"), "DOCKER_CONFIG=" + home, "COSIGN_PASSWORD="}
	prefix := filepath.Join(home, "cosign")
	run(t, env, cosign, "generate-key-pair", "--output-key-prefix", prefix)
	sigRepo := strings.ToLower(c.addr) + "/fleet/signatures"
	signEnv := append(slices.Clip(env), "COSIGN_REPOSITORY="+sigRepo)
	run(t, signEnv, cosign, "sign", "--key", prefix+".key", "--tlog-upload=false", "--allow-http-registry", "--yes",
		c.addr+"/fleet/app@"+img.digest)
	sigTag := "sha256-" + strings.TrimPrefix(img.digest, "sha256:") + ".sig"
	craneRun(t, crane, "manifest", sigRepo+":"+sigTag) // where cosign put it
	if _, err := runErr(nil, crane, "--insecure", "manifest", c.addr+"/fleet/app:"+sigTag); err == nil {
		t.Fatalf("cosign put the signature in the image's repository too: COSIGN_REPOSITORY not taken")
	}

	without := startMirror(t, c.addr, mirrorOptions{config: fleetPolicy(c, prefix+".pub")})
	_, err := runErr(nil, crane, "--insecure", "manifest", img.ref(without.addr))
	if err == nil || !strings.Contains(err.Error(), "DENIED") || !strings.Contains(err.Error(), "no_signature") {
		t.Errorf("mirror without signatureRepository: %v; want DENIED no_signature", err)
	}

	m := startMirror(t, c.addr, mirrorOptions{config: fleetPolicy(c, prefix+".pub") + "      signatureRepository: " + sigRepo + "\n"})
	dir := pullOCI(t, crane, img.ref(m.addr))
	readLayout(t, dir).checkImage(t, img)

	verifyEnv := append(slices.Clip(env), "COSIGN_REPOSITORY="+m.addr+"/fleet/signatures")
	verify := func(when string) {
		out := run(t, verifyEnv, cosign, "verify", "--key", prefix+".pub", "--insecure-ignore-tlog=true", "--allow-http-registry",
			m.addr+"/fleet/app@"+img.digest)
		if !strings.Contains(out, img.digest) {
			t.Errorf("cosign verify with COSIGN_REPOSITORY through the mirror, %s, printed no payload for %s:\n%s", when, img.digest, out)
		}
	}
	// Once before the uplink goes: what cosign reads is then stored by
	// the requests themselves, not only by the mirror's background
	// storing of the evidence, which the stop below would race with.
	verify("online")

	c.proc.stop() // the uplink is down: the verdict and the evidence are kept
	dir = pullOCI(t, crane, img.ref(m.addr))
	readLayout(t, dir).checkImage(t, img)
	verify("offline")
}

// Keys as release teams hold them, with the real cosign: a P-384 key
// imported with cosign import-key-pair (cosign then signs with SHA-384),
// signing one image the classic way (sha256-<hex>.sig) and one as a
// sigstore bundle among the referrers, and cosign's own key signing a
// third; the mirror's rule names one key file holding both public keys
// (a rotation). All three images are served.
func TestImportedAndRotatedKeysAtSite(t *testing.T) {
	t.Parallel()
	crane, cosign := need(t, "crane"), need(t, "cosign")
	c := startCentral(t)
	classic := pushImage(t, c, "fleet/app", "classic", ociImage(t, runtime.GOARCH, 1, 32<<10))
	bundled := pushImage(t, c, "fleet/app", "bundled", ociImage(t, runtime.GOARCH, 1, 32<<10))
	old := pushImage(t, c, "fleet/app", "old", ociImage(t, runtime.GOARCH, 1, 32<<10))
	home := t.TempDir() // no TUF cache or docker config of the machine
	env := []string{"HOME=" + home, "TUF_ROOT=" + filepath.Join(home, "tuf"), "DOCKER_CONFIG=" + home, "COSIGN_PASSWORD="}

	pk, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(pk)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(home, "p384.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	newKey, oldKey := filepath.Join(home, "new"), filepath.Join(home, "old")
	run(t, env, cosign, "import-key-pair", "--key", filepath.Join(home, "p384.pem"), "--output-key-prefix", newKey)
	run(t, env, cosign, "generate-key-pair", "--output-key-prefix", oldKey)
	sign := func(key string, p pushed, extra ...string) {
		args := append([]string{"sign", "--key", key + ".key", "--tlog-upload=false", "--allow-http-registry", "--yes"}, extra...)
		run(t, env, cosign, append(args, c.addr+"/"+p.repo+"@"+p.digest)...)
	}
	sign(newKey, classic)
	sign(newKey, bundled, "--new-bundle-format")
	sign(oldKey, old)

	var both []byte
	for _, f := range []string{oldKey + ".pub", newKey + ".pub"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		both = append(both, b...)
	}
	keyFile := filepath.Join(home, "keys.pub")
	writeFile(t, keyFile, string(both))
	m := startMirror(t, c.addr, mirrorOptions{config: fleetPolicy(c, keyFile)})
	for _, p := range []pushed{classic, bundled, old} {
		if out, err := runErr(nil, crane, "--insecure", "manifest", p.ref(m.addr)); err != nil {
			t.Errorf("crane manifest %s through the mirror: %v\n%s", p.ref(m.addr), err, out)
		}
	}
}
