// Package depcheck enforces the dependency direction of the project: the
// storage and verification layers must not depend on HTTP, so that they
// stay usable from the CLI and testable without a server.
package depcheck

import (
	"os/exec"
	"strings"
	"testing"
)

func TestNoHTTPInStorageLayers(t *testing.T) {
	t.Parallel()
	for _, pkg := range []string{"blobstore", "verify", "meta", "errdef"} {
		out, err := exec.Command("go", "list", "-deps", "github.com/registry-edge/registry-edge/internal/"+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == "net/http" {
				t.Errorf("internal/%s depends on net/http", pkg)
			}
		}
	}
}
