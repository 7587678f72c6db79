package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/layerdelta"
	"github.com/registry-edge/registry-edge/internal/testutil/layergen"
)

// offline is a pair of single-manifest images whose deltas diff wrote to
// a directory, with their base blobs fetched to files.
type offline struct {
	repo   string
	dir    string            // --output-dir
	blobs  string            // fetched base blobs
	tar    diffLayer         // the tar delta (compress/gzip layer)
	blob   diffLayer         // the blob delta (GNU gzip layer with an unchanged tail)
	bases  map[string]string // base blob files by digest
	oldGNU blobLayer
}

func makeOffline(t *testing.T) offline {
	t.Helper()
	host := newRegistry(t, true)
	o := offline{repo: host + "/edge/single", dir: filepath.Join(t.TempDir(), "deltas"), blobs: t.TempDir(), bases: map[string]string{}}
	base := layer(t, goGzip, layergen.New(200, 8, 4<<10))
	app := layergen.New(201, 40, 16<<10)
	old := []blobLayer{base, layer(t, goGzip, app), layer(t, gnuGzip, layergen.New(202, 30, 16<<10))}
	// A GNU gzip blob that starts with a new member and ends with the old
	// blob: no recipe, but a delta of its compressed bytes is small.
	gnu := layer(t, gnuGzip, layergen.New(203, 2, 1<<10))
	gnu.blob = append(gnu.blob, old[2].blob...)
	gnu.tar = append(gnu.tar, old[2].tar...)
	nw := []blobLayer{base, layer(t, goGzip, app.Update(204)), gnu}
	o.oldGNU = old[2]
	pushImage(t, o.repo+":1", testImage(t, "amd64", old...))
	pushImage(t, o.repo+":2", testImage(t, "amd64", nw...))

	var rep diffReport
	mustJSON(t, &rep, "diff", "--output-dir", o.dir, "--max-bases", "1", o.repo+":1", o.repo+":2")
	if len(rep.Platforms) != 1 || len(rep.Platforms[0].Layers) != 2 {
		t.Fatalf("diff of two single images: %+v, want one platform with 2 layers", rep.Platforms)
	}
	o.tar, o.blob = rep.Platforms[0].Layers[0], rep.Platforms[0].Layers[1]
	if o.tar.Kind != layerdelta.KindTar || o.blob.Kind != layerdelta.KindBlob || o.blob.Recipe != "" {
		t.Fatalf("kinds %q (%s) and %q (%s), want a tar and a blob delta", o.tar.Kind, o.tar.Reason, o.blob.Kind, o.blob.Reason)
	}
	for _, l := range []diffLayer{o.tar, o.blob} {
		if l.Files == nil {
			t.Fatalf("layer %s: no files written", l.Target.Digest)
		}
		hex := l.Delta.Digest.Encoded()
		if l.Files.Delta != filepath.Join(o.dir, hex+".delta") || l.Files.Descriptor != filepath.Join(o.dir, hex+".json") {
			t.Errorf("files %+v, want %s/%s.{delta,json}", l.Files, o.dir, hex)
		}
		if got := fileDigest(t, l.Files.Delta); got != l.Delta.Digest {
			t.Errorf("%s holds %s", l.Files.Delta, got)
		}
		if len(l.Bases) != 1 {
			t.Fatalf("bases %v, want 1 (--max-bases 1)", l.Bases)
		}
		for _, b := range l.Bases {
			o.bases[b.Digest.String()] = fetchBlob(t, o.repo, b.Digest, o.blobs)
		}
	}
	// The descriptor file is the artifact's layer descriptor.
	var desc ocispec.Descriptor
	b, err := os.ReadFile(o.tar.Files.Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &desc); err != nil {
		t.Fatal(err)
	}
	l, err := layerdelta.ParseDescriptor(desc)
	if err != nil {
		t.Fatalf("descriptor file: %v", err)
	}
	if l.Target != o.tar.Target || l.Delta.Digest != o.tar.Delta.Digest || l.Recipe.String() != o.tar.Recipe {
		t.Errorf("descriptor file describes %+v, want the delta of %v", l, o.tar.Target)
	}
	return o
}

// TestApply rebuilds layers offline from the files diff --output-dir wrote
// and blobs fetched from the registry, and checks that every failure leaves
// nothing at OUT.
func TestApply(t *testing.T) {
	t.Parallel()
	o := makeOffline(t)

	t.Run("round-trip", func(t *testing.T) {
		for _, l := range []diffLayer{o.tar, o.blob} {
			out := filepath.Join(t.TempDir(), "layer.blob")
			var res applyResult
			// --descriptor defaults to the .json next to the .delta.
			mustJSON(t, &res, "apply", "--delta", l.Files.Delta, "--base", o.bases[l.Bases[0].Digest.String()], "-o", out)
			if got := fileDigest(t, out); got != l.Target.Digest {
				t.Errorf("apply %s delta: rebuilt %s, want %s", l.Kind, got, l.Target.Digest)
			}
			want := applyResult{Output: out, Target: l.Target, Delta: *l.Delta, Kind: l.Kind, Recipe: l.Recipe, Bases: l.Bases}
			if d := cmp.Diff(want, res); d != "" {
				t.Errorf("apply result (-want +got):\n%s", d)
			}
			if ents := dirEntries(t, filepath.Dir(out)); !cmp.Equal(ents, []string{"layer.blob"}) {
				t.Errorf("files next to OUT: %v, want OUT only", ents)
			}
		}
		// Explicit descriptor, bases as arguments, extra unrelated base files,
		// text output.
		out := filepath.Join(t.TempDir(), "layer.blob")
		other := fetchBlob(t, o.repo, o.blob.Target.Digest, t.TempDir())
		r := mustRun(t, "apply", "--delta", o.tar.Files.Delta, "--descriptor", o.tar.Files.Descriptor, "--output", out, other, o.bases[o.tar.Bases[0].Digest.String()])
		if got := fileDigest(t, out); got != o.tar.Target.Digest {
			t.Errorf("apply: rebuilt %s, want %s", got, o.tar.Target.Digest)
		}
		if !strings.Contains(r.stdout, o.tar.Target.Digest.String()) || !strings.Contains(r.stdout, out) {
			t.Errorf("apply output %q does not name the layer and OUT", r.stdout)
		}
	})

	t.Run("level", func(t *testing.T) {
		// A delta made at another level is another delta that every
		// applier rebuilds the same layer from.
		dir := t.TempDir()
		var rep diffReport
		mustJSON(t, &rep, "diff", "--level", "fastest", "--output-dir", dir, "--max-bases", "1", o.repo+":1", o.repo+":2")
		l := rep.Platforms[0].Layers[0]
		if l.Delta == nil || l.Delta.Digest == o.tar.Delta.Digest {
			t.Fatalf("--level fastest: delta %v, want one other than the best level's %s", l.Delta, o.tar.Delta.Digest)
		}
		out := filepath.Join(t.TempDir(), "layer.blob")
		mustRun(t, "apply", "--delta", l.Files.Delta, "--base", o.bases[l.Bases[0].Digest.String()], "-o", out)
		if got := fileDigest(t, out); got != o.tar.Target.Digest {
			t.Errorf("apply of a fastest-level delta: rebuilt %s, want %s", got, o.tar.Target.Digest)
		}
	})

	deltaBytes, err := os.ReadFile(o.tar.Files.Delta)
	if err != nil {
		t.Fatal(err)
	}
	descBytes, err := os.ReadFile(o.tar.Files.Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	base := o.bases[o.tar.Bases[0].Digest.String()]
	// write puts a delta and its descriptor in a new directory.
	write := func(t *testing.T, delta []byte, desc string) string {
		dir := t.TempDir()
		p := filepath.Join(dir, "x.delta")
		if err := os.WriteFile(p, delta, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "x.json"), []byte(desc), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flipped := append([]byte(nil), deltaBytes...)
	flipped[len(flipped)/2] ^= 0x5a
	// A descriptor that names the corrupted delta, so that only the
	// rebuild can tell.
	renamed := strings.ReplaceAll(string(descBytes), o.tar.Delta.Digest.String(), digest.FromBytes(flipped).String())
	wrongTarget := strings.ReplaceAll(string(descBytes), o.tar.Target.Digest.String(), o.blob.Target.Digest.String())

	tests := []struct {
		name  string
		delta []byte
		desc  string
		base  string
		code  int
		want  string
	}{
		{"corrupted delta", flipped, string(descBytes), base, 1, "corrupted or truncated"},
		{"truncated delta", deltaBytes[:len(deltaBytes)-100], string(descBytes), base, 1, "corrupted or truncated"},
		{"empty delta", nil, string(descBytes), base, 1, "corrupted or truncated"},
		{"corrupted delta, matching descriptor", flipped, renamed, base, 1, "apply "},
		{"wrong base", deltaBytes, string(descBytes), fetchBlob(t, o.repo, o.oldGNU.Blob().Digest, t.TempDir()), 1, "is not among the --base files"},
		{"missing base file", deltaBytes, string(descBytes), "/nonexistent/base", 1, "no such file"},
		{"descriptor names another target", deltaBytes, wrongTarget, base, 1, "digest mismatch"},
		{"malformed descriptor", deltaBytes, "{", base, 1, "invalid"},
		{"descriptor of another kind", deltaBytes, strings.Replace(string(descBytes), `"tar"`, `"zip"`, 1), base, 1, "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := write(t, tt.delta, tt.desc)
			outDir := t.TempDir()
			out := filepath.Join(outDir, "layer.blob")
			r := deltactl(t, "apply", "--delta", p, "--base", tt.base, "-o", out)
			t.Logf("stderr: %s", r.stderr)
			checkFailure(t, r, tt.code, tt.want)
			if r.stdout != "" {
				t.Errorf("a failed apply wrote %q to stdout", r.stdout)
			}
			if ents := dirEntries(t, outDir); len(ents) != 0 {
				t.Errorf("a failed apply left %v in OUT's directory", ents)
			}
		})
	}

	t.Run("missing descriptor", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "x.delta")
		if err := os.WriteFile(p, deltaBytes, 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "layer.blob")
		checkFailure(t, deltactl(t, "apply", "--delta", p, "--base", base, "-o", out), 1, "x.json")
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("OUT exists after a failure: %v", err)
		}
	})
	t.Run("OUT in a missing directory", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "missing", "layer.blob")
		checkFailure(t, deltactl(t, "apply", "--delta", o.tar.Files.Delta, "--base", base, "-o", out), 1, "does not exist")
	})
	t.Run("OUT is a directory", func(t *testing.T) {
		out := t.TempDir()
		checkFailure(t, deltactl(t, "apply", "--delta", o.tar.Files.Delta, "--base", base, "-o", out), 1, "is a directory")
		if ents := dirEntries(t, out); len(ents) != 0 {
			t.Errorf("a failed apply left %v in the directory", ents)
		}
	})
	t.Run("missing delta file", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "layer.blob")
		checkFailure(t, deltactl(t, "apply", "--delta", "/nonexistent/x.delta", "--base", base, "-o", out), 1, "delta: ")
	})
	t.Run("OUT is stdout", func(t *testing.T) {
		r := mustRun(t, "apply", "--delta", o.tar.Files.Delta, "--base", base, "-o", "-")
		if got := digest.FromString(r.stdout); got != o.tar.Target.Digest {
			t.Errorf("-o -: stdout holds %s (%d bytes), want the blob %s", got, len(r.stdout), o.tar.Target.Digest)
		}
		if !strings.Contains(r.stderr, o.tar.Target.Digest.String()) {
			t.Errorf("-o -: the status line is not on stderr: %q", r.stderr)
		}
	})
	t.Run("OUT is a symbolic link", func(t *testing.T) {
		target := filepath.Join(t.TempDir(), "real.blob")
		link := filepath.Join(t.TempDir(), "link.blob")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(target, []byte("before"), 0o644); err != nil {
			t.Fatal(err)
		}
		mustRun(t, "apply", "--delta", o.tar.Files.Delta, "--base", base, "-o", link)
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("the link was replaced: %v %v", fi.Mode(), err)
		}
		if got := fileDigest(t, target); got != o.tar.Target.Digest {
			t.Errorf("the link's target holds %s, want %s", got, o.tar.Target.Digest)
		}
		// A link to a file not written yet, by a relative path.
		dir := t.TempDir()
		dangling := filepath.Join(dir, "dangling.blob")
		if err := os.Symlink("new.blob", dangling); err != nil {
			t.Fatal(err)
		}
		mustRun(t, "apply", "--delta", o.tar.Files.Delta, "--base", base, "-o", dangling)
		if got := fileDigest(t, filepath.Join(dir, "new.blob")); got != o.tar.Target.Digest {
			t.Errorf("the dangling link's target holds %s, want %s", got, o.tar.Target.Digest)
		}
	})
	t.Run("OUT is a FIFO", func(t *testing.T) {
		fifo := filepath.Join(t.TempDir(), "out.fifo")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Skipf("mkfifo: %v", err)
		}
		got := make(chan digest.Digest, 1)
		go func() {
			f, err := os.Open(fifo)
			if err != nil {
				got <- ""
				return
			}
			defer f.Close()
			d, _ := digest.FromReader(f)
			got <- d
		}()
		mustRun(t, "apply", "--delta", o.tar.Files.Delta, "--base", base, "-o", fifo)
		if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
			// (The reader stays blocked: nobody will open the FIFO.)
			t.Fatalf("the FIFO was replaced: %v %v", fi.Mode(), err)
		}
		if d := <-got; d != o.tar.Target.Digest {
			t.Errorf("the FIFO's reader got %s, want %s", d, o.tar.Target.Digest)
		}
	})
	t.Run("Ctrl-C while the FIFO's reader does not read", func(t *testing.T) {
		// More than a pipe holds (64 KiB on Linux): the write waits for
		// the reader, which reads one byte and then nothing.
		if o.tar.Target.Size <= 4*64<<10 {
			t.Fatalf("layer of %d bytes: too small to fill a pipe", o.tar.Target.Size)
		}
		fifo, tmp := filepath.Join(t.TempDir(), "out.fifo"), t.TempDir()
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Skipf("mkfifo: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			f, err := os.Open(fifo)
			if err == nil {
				t.Cleanup(func() { f.Close() })
				f.Read(make([]byte, 1)) // deltactl is writing
			}
			cancel()
		}()
		r := runBounded(t, ctx, "apply", "--tmp", tmp, "--delta", o.tar.Files.Delta, "--base", base, "-o", fifo)
		if r.code != exitInterrupted || r.stderr != "deltactl: interrupted\n" {
			t.Errorf("apply -o FIFO, interrupted: exit %d, stderr %q; want %d and \"deltactl: interrupted\"", r.code, r.stderr, exitInterrupted)
		}
		if ents := dirEntries(t, tmp); len(ents) != 0 {
			t.Errorf("an interrupted apply left %v in --tmp", ents)
		}
	})
	t.Run("existing OUT is kept on failure", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "layer.blob")
		if err := os.WriteFile(out, []byte("before"), 0o644); err != nil {
			t.Fatal(err)
		}
		p := write(t, flipped, renamed)
		checkFailure(t, deltactl(t, "apply", "--delta", p, "--base", base, "-o", out), 1, "apply ")
		if b, _ := os.ReadFile(out); string(b) != "before" {
			t.Errorf("OUT is %q after a failed apply, want it untouched", b)
		}
	})
}
