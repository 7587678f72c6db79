// Package e2e runs the real registry-edge binary between a real central
// registry (distribution v3) and real clients (crane, skopeo, containerd,
// podman, the OCI distribution-spec conformance suite), all on loopback.
//
// The tools are found through REGISTRY_EDGE_TEST_<TOOL> environment
// variables, then PATH, then the cache that .ci/test fills. A test whose tool
// is missing is skipped, unless REGISTRY_EDGE_REQUIRE_TOOLS=1 (set by
// .ci/test), in which case it fails: CI cannot pass by skipping.
// docs/testing.md lists what each test proves.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// edgeBin is the registry-edge binary built by TestMain.
var edgeBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "registry-edge-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	edgeBin = filepath.Join(dir, "registry-edge")
	args := []string{"build", "-o", edgeBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "../../cmd/registry-edge")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building registry-edge: %v\n", err)
		return 1
	}
	return m.Run()
}
