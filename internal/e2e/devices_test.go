package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The device-side examples that no runtime here can exercise at least
// parse and point at the mirror.
func TestDeviceExamples(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "..", "config", "devices")
	b, err := os.ReadFile(filepath.Join(dir, "docker-daemon.json"))
	if err != nil {
		t.Fatal(err)
	}
	var daemon struct {
		Mirrors  []string `json:"registry-mirrors"`
		Insecure []string `json:"insecure-registries"`
	}
	if err := json.Unmarshal(b, &daemon); err != nil || len(daemon.Mirrors) != 1 || !strings.Contains(daemon.Mirrors[0], "MIRROR_HOST") {
		t.Errorf("docker-daemon.json: %+v, %v", daemon, err)
	}
	b, err = os.ReadFile(filepath.Join(dir, "k3s-registries.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k3s struct {
		Mirrors map[string]struct {
			Endpoint []string `yaml:"endpoint"`
		} `yaml:"mirrors"`
	}
	if err := yaml.Unmarshal(b, &k3s); err != nil || len(k3s.Mirrors["docker.io"].Endpoint) != 1 || !strings.Contains(k3s.Mirrors["docker.io"].Endpoint[0], "MIRROR_HOST") {
		t.Errorf("k3s-registries.yaml: %+v, %v", k3s, err)
	}
}
