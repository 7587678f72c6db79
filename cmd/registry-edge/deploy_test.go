package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
