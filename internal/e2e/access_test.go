package e2e

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// TestAccessRulesWithClients runs a mirror that lets anyone read open
// repositories and only user alice read private/*, and pulls through it
// with the clients devices use. Each must send its credentials when it has
// them (they do only after a challenge on /v2/, which the mirror therefore
// sends to clients without credentials whenever users exist), and go on
// anonymously for open repositories when it has none (podman and skopeo
// answer the challenge with an empty pair).
func TestAccessRulesWithClients(t *testing.T) {
	t.Parallel()
	c := startCentral(t)
	open := pushImage(t, c, "open/app", "v1", ociImage(t, runtime.GOARCH, 1, 16<<10))
	private := pushImage(t, c, "private/app", "v1", ociImage(t, runtime.GOARCH, 1, 16<<10))
	secret := pushImage(t, c, "secret/app", "v1", ociImage(t, runtime.GOARCH, 1, 16<<10))
	hash, err := bcrypt.GenerateFromPassword([]byte("wonderland"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	writeFile(t, htpasswd, "alice:"+string(hash)+"\n")
	// Central by a name without a port (the default upstream), which
	// podman's registries.conf can put in a mirror location.
	m := startMirror(t, c.addr, mirrorOptions{config: namedCentral(c, true) + fmt.Sprintf(`access:
  anonymous: true
  challengeBase: true
  htpasswd: %s
  rules:
    - repositories: ["private/*"]
      users: ["alice"]
    - repositories: ["%s/secret/*"]
      users: ["alice"]
`, htpasswd, centralName), ownUpstreams: true})
	// Docker's config.json and containers' auth.json, with alice's
	// credentials for the mirror.
	authDir := t.TempDir()
	auth := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, m.addr, base64.StdEncoding.EncodeToString([]byte("alice:wonderland")))
	writeFile(t, filepath.Join(authDir, "config.json"), auth)

	// served checks that the mirror answered 200 for repo since mark.
	served := func(t *testing.T, mark, repo string) {
		t.Helper()
		if servedRepo(m.requestsSince(t, mark), repo) == 0 {
			t.Errorf("the mirror served nothing of %s", repo)
		}
	}

	t.Run("skopeo", func(t *testing.T) {
		skopeo := need(t, "skopeo")
		inspect := func(args ...string) (string, error) {
			return runErr(nil, skopeo, append([]string{"inspect", "--tls-verify=false", "--raw"}, args...)...)
		}
		mark := m.mark(t)
		if out, err := inspect("--creds", "alice:wonderland", "docker://"+m.addr+"/private/app:v1"); err != nil || out != string(private.raw) {
			t.Errorf("skopeo with alice's credentials, private/app: %v\n%s", err, tail(out, 5))
		}
		served(t, mark, "private/app")
		if out, err := inspect("docker://" + m.addr + "/open/app:v1"); err != nil || out != string(open.raw) {
			t.Errorf("skopeo without credentials, open/app: %v\n%s", err, tail(out, 5))
		}
		if _, err := inspect("docker://" + m.addr + "/private/app:v1"); err == nil || !strings.Contains(err.Error(), "unauthorized") {
			t.Errorf("skopeo without credentials, private/app: %v; want unauthorized", err)
		}
		// Stale credentials read what anonymous clients may, nothing more;
		// a login with them fails.
		if out, err := inspect("--creds", "alice:nope", "docker://"+m.addr+"/open/app:v1"); err != nil || out != string(open.raw) {
			t.Errorf("skopeo with a wrong password, open/app: %v\n%s", err, tail(out, 5))
		}
		if _, err := inspect("--creds", "alice:nope", "docker://"+m.addr+"/private/app:v1"); err == nil || !strings.Contains(err.Error(), "unauthorized") {
			t.Errorf("skopeo with a wrong password, private/app: %v; want unauthorized", err)
		}
		authfile := filepath.Join(t.TempDir(), "auth.json")
		if _, err := runErr(nil, skopeo, "login", "--tls-verify=false", "--authfile", authfile, "-u", "alice", "-p", "nope", m.addr); err == nil {
			t.Error("skopeo login with a wrong password succeeded")
		}
		if out, err := runErr(nil, skopeo, "login", "--tls-verify=false", "--authfile", authfile, "-u", "alice", "-p", "wonderland", m.addr); err != nil {
			t.Errorf("skopeo login with alice's password: %v\n%s", err, out)
		}
	})

	t.Run("crane", func(t *testing.T) {
		crane := need(t, "crane")
		mark := m.mark(t)
		out, err := runErr([]string{"DOCKER_CONFIG=" + authDir}, crane, "--insecure", "manifest", m.addr+"/private/app:v1")
		if err != nil || out != string(private.raw) {
			t.Errorf("crane with alice's credentials, private/app: %v\n%s", err, tail(out, 5))
		}
		served(t, mark, "private/app")
		empty := t.TempDir()
		if out, err := runErr([]string{"DOCKER_CONFIG=" + empty}, crane, "--insecure", "manifest", m.addr+"/open/app:v1"); err != nil || out != string(open.raw) {
			t.Errorf("crane without credentials, open/app: %v\n%s", err, tail(out, 5))
		}
	})

	t.Run("podman", func(t *testing.T) {
		podman := need(t, "podman")
		needRoot(t, "rootless podman needs subuid/subgid mappings this test does not set up")
		dir, err := os.MkdirTemp("", "e2e-podman-") // short: podman limits the runroot's length
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		writeFile(t, filepath.Join(dir, "containers.conf"), "")
		writeFile(t, filepath.Join(dir, "none.json"), `{"auths":{}}`)
		writeFile(t, filepath.Join(dir, "storage.conf"), fmt.Sprintf("[storage]\ndriver = \"vfs\"\nrunroot = %q\ngraphroot = %q\n",
			filepath.Join(dir, "runroot"), filepath.Join(dir, "root")))
		env := []string{
			"CONTAINERS_REGISTRIES_CONF=" + writeRegistriesConf(t, centralName, m.addr),
			"CONTAINERS_CONF=" + filepath.Join(dir, "containers.conf"),
			"CONTAINERS_STORAGE_CONF=" + filepath.Join(dir, "storage.conf"),
			"REGISTRY_AUTH_FILE=" + filepath.Join(dir, "none.json"), // no credentials unless --authfile
		}
		policy := writePolicy(t)
		pull := func(args ...string) string {
			t.Helper()
			base := []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "runroot"),
				"--tmpdir", filepath.Join(dir, "tmp"), "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
				"--events-backend", "file", "pull", "--quiet", "--signature-policy", policy}
			return run(t, env, podman, append(base, args...)...)
		}
		cmark, mark := len(c.accessLog()), m.mark(t)
		pull("--authfile", filepath.Join(authDir, "config.json"), private.ref(centralName))
		served(t, mark, centralName+"/private/app")
		mark = m.mark(t)
		pull(open.ref(centralName))
		served(t, mark, centralName+"/open/app")
		// podman falls back to the registry itself when the mirror
		// refuses: central must have seen none of it.
		if direct := c.requestsBy(cmark, "containers/"); len(direct) > 0 {
			t.Errorf("podman went to central directly:\n%s", strings.Join(direct, "\n"))
		}
	})

	t.Run("containerd", func(t *testing.T) {
		ctr := need(t, "ctr")
		containerd := need(t, "containerd")
		needRoot(t, "containerd needs root for its snapshotter and state directories")
		sock := startContainerd(t, containerd, ctr)
		hosts := filepath.Join(t.TempDir(), "certs.d")
		writeFile(t, filepath.Join(hosts, centralName, "hosts.toml"), deviceExample(t, "containerd-hosts.toml", deviceVars{
			Registry: centralName, UpstreamURL: "http://" + c.addr, Mirror: m.addr}))
		ctrImage := func(args ...string) error {
			_, err := runErr(nil, ctr, append([]string{"--address", sock, "--namespace", "e2e", "image"}, args...)...)
			return err
		}
		ctrPull := func(args ...string) {
			t.Helper()
			if err := ctrImage(append([]string{"pull", "--hosts-dir", hosts}, args...)...); err != nil {
				t.Fatalf("ctr image pull %v: %v", args, err)
			}
		}
		cmark, mark := len(c.accessLog()), m.mark(t)
		ctrPull("--user", "alice:wonderland", private.ref(centralName))
		served(t, mark, "private/app")
		// containerd sends secret/app?ns=<central>: the rule, written with
		// the registry's name, covers it. (Refused, containerd falls back
		// to central itself, as hosts.toml allows: only the mirror's
		// answers count here.)
		mark = m.mark(t)
		ctrImage("pull", "--hosts-dir", hosts, secret.ref(centralName))
		refused := 0
		for _, e := range m.requestsSince(t, mark) {
			switch {
			case e["repo"] != "secret/app":
			case e["status"] == "401":
				refused++
			default:
				t.Errorf("anonymous containerd request for secret/app answered %s, want 401: %v", e["status"], e)
			}
		}
		if refused == 0 {
			t.Error("the mirror refused no anonymous containerd request for secret/app")
		}
		ctrImage("rm", secret.ref(centralName))
		cmark, mark = len(c.accessLog()), m.mark(t)
		ctrPull("--user", "alice:wonderland", secret.ref(centralName))
		served(t, mark, "secret/app")
		mark = m.mark(t)
		ctrPull(open.ref(centralName))
		served(t, mark, "open/app")
		if direct := c.requestsBy(cmark, "containerd"); len(direct) > 0 {
			t.Errorf("containerd went to central directly:\n%s", strings.Join(direct, "\n"))
		}
	})
}
