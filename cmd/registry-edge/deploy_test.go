package main

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/registry-edge/registry-edge/internal/config"
)

// The gateway targets build as static binaries (what `make release` ships).
func TestCrossCompilesStatic(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		goarch, goarm string
		machine       elf.Machine
	}{
		{"arm64", "", elf.EM_AARCH64},
		{"arm", "7", elf.EM_ARM},
	} {
		t.Run(tt.goarch+tt.goarm, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "registry-edge")
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, ".")
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+tt.goarch, "GOARM="+tt.goarm, "GOFLAGS=")
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go build: %v\n%s", err, b)
			}
			f, err := elf.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Machine != tt.machine {
				t.Errorf("machine %v, want %v", f.Machine, tt.machine)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Error("the binary asks for a dynamic loader; want a static binary")
				}
			}
		})
	}
}

// The systemd unit passes systemd-analyze verify.
func TestSystemdUnitVerifies(t *testing.T) {
	t.Parallel()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("REGISTRY_EDGE_REQUIRE_TOOLS") == "1" {
			t.Fatal("systemd-analyze not found and REGISTRY_EDGE_REQUIRE_TOOLS=1")
		}
		t.Skip("systemd-analyze not installed")
	}
	unit, err := os.ReadFile("../../deploy/systemd/registry-edge.service")
	if err != nil {
		t.Fatal(err)
	}
	// verify wants the binaries to exist: point the unit at a stand-in.
	dir := t.TempDir()
	bin := filepath.Join(dir, "registry-edge")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "registry-edge.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/registry-edge", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The Kubernetes manifest agrees with the binary and the image: its
// configuration loads, the command line is one serve accepts with that
// configuration, the config file is where the ConfigMap is mounted, the
// store is on the volume, the probes are the server's, the ports line up,
// and the user is the image's.
func TestKubernetesManifest(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../deploy/kubernetes/registry-edge.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type probe struct {
		HTTPGet struct {
			Path string `yaml:"path"`
			Port string `yaml:"port"`
		} `yaml:"httpGet"`
	}
	var (
		configYAML, configMap, claim string
		dep                          struct {
			Spec struct {
				Template struct {
					Spec struct {
						SecurityContext struct {
							RunAsUser int `yaml:"runAsUser"`
						} `yaml:"securityContext"`
						Containers []struct {
							Args  []string `yaml:"args"`
							Ports []struct {
								Name          string `yaml:"name"`
								ContainerPort int    `yaml:"containerPort"`
							} `yaml:"ports"`
							ReadinessProbe probe `yaml:"readinessProbe"`
							LivenessProbe  probe `yaml:"livenessProbe"`
							VolumeMounts   []struct {
								Name      string `yaml:"name"`
								MountPath string `yaml:"mountPath"`
							} `yaml:"volumeMounts"`
						} `yaml:"containers"`
						Volumes []struct {
							Name      string `yaml:"name"`
							ConfigMap struct {
								Name string `yaml:"name"`
							} `yaml:"configMap"`
							PersistentVolumeClaim struct {
								ClaimName string `yaml:"claimName"`
							} `yaml:"persistentVolumeClaim"`
						} `yaml:"volumes"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		svcTarget string
	)
	kinds := map[string]bool{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var doc struct {
			Kind     string                `yaml:"kind"`
			Metadata struct{ Name string } `yaml:"metadata"`
			Data     map[string]string     `yaml:"data"`
			Spec     yaml.Node             `yaml:"spec"`
		}
		if err := dec.Decode(&doc); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		kinds[doc.Kind] = true
		switch doc.Kind {
		case "ConfigMap":
			configMap, configYAML = doc.Metadata.Name, doc.Data["config.yaml"]
		case "PersistentVolumeClaim":
			claim = doc.Metadata.Name
		case "Deployment":
			if err := doc.Spec.Decode(&dep.Spec); err != nil {
				t.Fatal(err)
			}
		case "Service":
			var svc struct {
				Ports []struct {
					TargetPort string `yaml:"targetPort"`
				} `yaml:"ports"`
			}
			if err := doc.Spec.Decode(&svc); err != nil || len(svc.Ports) != 1 {
				t.Fatalf("Service: %v, %+v", err, svc)
			}
			svcTarget = svc.Ports[0].TargetPort
		}
	}
	for _, k := range []string{"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"} {
		if !kinds[k] {
			t.Fatalf("no %s in the manifest", k)
		}
	}
	cfg, err := config.Load(strings.NewReader(configYAML))
	if err != nil {
		t.Fatalf("the ConfigMap's config.yaml: %v", err)
	}
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	for _, v := range pod.Volumes {
		switch {
		case v.ConfigMap.Name != "" && v.ConfigMap.Name != configMap:
			t.Errorf("volume %s mounts ConfigMap %s, the manifest's is %s", v.Name, v.ConfigMap.Name, configMap)
		case v.PersistentVolumeClaim.ClaimName != "" && v.PersistentVolumeClaim.ClaimName != claim:
			t.Errorf("volume %s mounts claim %s, the manifest's is %s", v.Name, v.PersistentVolumeClaim.ClaimName, claim)
		}
	}
	if want := []string{"serve", "--config", mounts["config"] + "/config.yaml"}; !slices.Equal(c.Args, want) {
		t.Errorf("args %q, want %q", c.Args, want)
	}
	if cfg.Storage.Root != mounts["data"] {
		t.Errorf("storage.root %s, the volume is at %s", cfg.Storage.Root, mounts["data"])
	}
	if len(c.Ports) != 1 || cfg.Listen != fmt.Sprintf(":%d", c.Ports[0].ContainerPort) || svcTarget != c.Ports[0].Name {
		t.Errorf("listen %s, container ports %+v, Service targetPort %s: they do not line up", cfg.Listen, c.Ports, svcTarget)
	}
	if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("probes %s and %s, want /readyz and /healthz", c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)
	}
	docker, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("USER %d:%d", pod.SecurityContext.RunAsUser, pod.SecurityContext.RunAsUser); !strings.Contains(string(docker), want) {
		t.Errorf("runAsUser %d, the Dockerfile has no %q", pod.SecurityContext.RunAsUser, want)
	}

	// serve takes that command line with that configuration (a store and
	// a port of the test's own).
	dir := t.TempDir()
	conf := filepath.Join(dir, "config.yaml")
	addr := freeAddr(t)
	local := strings.Replace(strings.Replace(configYAML, cfg.Storage.Root, filepath.Join(dir, "data"), 1), `":5000"`, `"`+addr+`"`, 1)
	if err := os.WriteFile(conf, []byte(local), 0o600); err != nil {
		t.Fatal(err)
	}
	args := slices.Clone(c.Args)
	args[2] = conf
	srv := startRun(t, append(args, "--upstream", "http://127.0.0.1:1")...)
	resp := srv.waitServing(t, testClient, "http://"+addr+"/healthz")
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz of serve started with %q: %d", args, resp.StatusCode)
	}
	if code := srv.stop(); code != 0 {
		t.Errorf("serve %q exited %d:\n%s", args, code, srv.stderr.String())
	}
}

// The binary carries the time zone database: prefetch.windows are local
// times, and the image (FROM scratch) and minimal gateway systems have no
// /usr/share/zoneinfo, where TZ=Europe/Berlin would silently mean UTC.
// The host running the tests has zoneinfo, so the build itself is checked.
func TestEmbedsTimeZoneDatabase(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	if !slices.Contains(strings.Fields(string(out)), "time/tzdata") {
		t.Error("registry-edge does not import time/tzdata: a TZ set in the container or on a gateway without zoneinfo is ignored")
	}
}

// The Docker build context leaves out what .gitignore does, the store of a
// mirror run from the repository (./data, the default storage.root) above
// all: `docker build .` would otherwise send the whole cache to the engine
// and copy it into the build stage.
func TestDockerignore(t *testing.T) {
	t.Parallel()
	patterns := func(name string) map[string]bool {
		b, err := os.ReadFile(filepath.Join("..", "..", name))
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for line := range strings.Lines(string(b)) {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				m[strings.Trim(line, "/")] = true
			}
		}
		return m
	}
	docker := patterns(".dockerignore")
	for p := range patterns(".gitignore") {
		if !docker[p] {
			t.Errorf(".gitignore has %s, .dockerignore does not", p)
		}
	}
	if root := config.Default().Storage.Root; !docker[root] {
		t.Errorf(".dockerignore leaves out no %s, the default storage.root", root)
	}
}

// prefetch.windows are local times: the start line names the zone they are
// read in, so that a container without TZ (UTC) shows at once.
func TestStartLogNamesTheWindowsTimeZone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	conf := filepath.Join(dir, "config.yaml")
	yml := fmt.Sprintf("listen: %q\nstorage:\n  root: %s\nprefetch:\n  windows: [\"22:00-06:00\"]\n", freeAddr(t), filepath.Join(dir, "data"))
	if err := os.WriteFile(conf, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startRun(t, "serve", "--config", conf, "--upstream", "http://127.0.0.1:1")
	srv.waitLog(t, "registry-edge started")
	if code := srv.stop(); code != 0 {
		t.Fatalf("serve exited %d:\n%s", code, srv.stderr.String())
	}
	want := `prefetch_windows=22:00-06:00 time_zone="` + time.Now().Format("MST (UTC-07:00)") + `"`
	if !strings.Contains(srv.stderr.String(), want) {
		t.Errorf("start log lacks %s:\n%s", want, srv.stderr.String())
	}
}

// Every deployment gives a stop the time serve may take (shutdownGrace for
// downloads, then fillsGrace for fills) before it kills the process: the
// systemd unit, the Kubernetes manifest and the compose file's mirrors
// (whose default, as docker stop's, is 10 s).
func TestDeploymentsWaitForTheShutdown(t *testing.T) {
	t.Parallel()
	need := shutdownGrace + fillsGrace
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("..", "..", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var unit time.Duration
	for line := range strings.Lines(string(read("deploy/systemd/registry-edge.service"))) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "TimeoutStopSec="); ok {
			var err error
			if unit, err = time.ParseDuration(v); err != nil {
				t.Fatalf("TimeoutStopSec=%s: %v", v, err)
			}
		}
	}
	if unit <= need {
		t.Errorf("systemd TimeoutStopSec %v, want more than %v", unit, need)
	}

	var pod struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Template struct {
				Spec struct {
					TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(read("deploy/kubernetes/registry-edge.yaml")))
	for pod.Kind != "Deployment" {
		if err := dec.Decode(&pod); err != nil {
			t.Fatalf("no Deployment in the Kubernetes manifest: %v", err)
		}
	}
	// Kubernetes' default is 30 s.
	if grace := time.Duration(pod.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second; grace <= need {
		t.Errorf("Kubernetes terminationGracePeriodSeconds %v, want more than %v", grace, need)
	}

	var compose struct {
		Services map[string]struct {
			Build           string `yaml:"build"`
			StopGracePeriod string `yaml:"stop_grace_period"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(read("docker-compose.yml"), &compose); err != nil {
		t.Fatal(err)
	}
	for name, svc := range compose.Services {
		if svc.Build == "" {
			continue // not registry-edge
		}
		grace, err := time.ParseDuration(svc.StopGracePeriod)
		if err != nil || grace <= need {
			t.Errorf("docker-compose.yml %s: stop_grace_period %q, want more than %v", name, svc.StopGracePeriod, need)
		}
	}
}
