package delta

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestCorpus measures the codec on the layer pairs that
// shared/bench/corpus/build-corpus.sh makes (pairs/<name>/{old,new}.tar and
// new.tar.gz). It is skipped unless DELTA_CORPUS names that pairs
// directory. DELTA_CORPUS_PAIR limits it to one pair and DELTA_CORPUS_OP
// (encode or decode) to one half, writing or reading the delta at
// DELTA_CORPUS_OUT, so that each half can run in its own process under
// /usr/bin/time to measure peak memory.
func TestCorpus(t *testing.T) {
	dir := os.Getenv("DELTA_CORPUS")
	if dir == "" {
		t.Skip("DELTA_CORPUS not set")
	}
	pairs, err := filepath.Glob(filepath.Join(dir, "*", "new.tar"))
	if err != nil || len(pairs) == 0 {
		t.Fatalf("no pairs under %s: %v", dir, err)
	}
	only, op, out := os.Getenv("DELTA_CORPUS_PAIR"), os.Getenv("DELTA_CORPUS_OP"), os.Getenv("DELTA_CORPUS_OUT")
	for _, p := range pairs {
		pd := filepath.Dir(p)
		name := filepath.Base(pd)
		if only != "" && name != only {
			continue
		}
		old := openBase(t, filepath.Join(pd, "old.tar"))
		nw := openBase(t, filepath.Join(pd, "new.tar"))
		gz, err := os.Stat(filepath.Join(pd, "new.tar.gz"))
		if err != nil {
			t.Fatal(err)
		}
		path := out
		if path == "" {
			path = filepath.Join(t.TempDir(), "delta")
		}
		if op != "decode" {
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			st, err := Encode(context.Background(), f, nw.R, nw.Size, []Base{old}, EncodeOptions{})
			if err != nil {
				t.Fatalf("%s: Encode() error = %v", name, err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			el := time.Since(start)
			t.Logf("%-16s new.tar.gz %10d  delta %9d (%6.2f%% of gz)  encode %6.2fs %6.1f MB/s  copy %d lit %d dict %d ctl %d blocks %d entries %d exact %d paired %d",
				name, gz.Size(), st.DeltaSize, 100*float64(st.DeltaSize)/float64(gz.Size()), el.Seconds(),
				float64(nw.Size)/el.Seconds()/1e6, st.CopyBytes, st.LiteralBytes, st.DictBytes, st.ControlBytes, st.Blocks, st.Entries, st.Exact, st.Paired)
		}
		if op != "encode" {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			start := time.Now()
			if err := Decode(context.Background(), h, f, []Base{old}, Limits{}); err != nil {
				t.Fatalf("%s: Decode() error = %v", name, err)
			}
			el := time.Since(start)
			f.Close()
			if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != nw.Digest {
				t.Fatalf("%s: Decode() = %s, want %s", name, got, nw.Digest)
			}
			t.Logf("%-16s decode %6.2fs %6.1f MB/s", name, el.Seconds(), float64(nw.Size)/el.Seconds()/1e6)
		}
	}
}

func openBase(t *testing.T, path string) Base {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return Base{Digest: digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)), Size: fi.Size(), R: f}
}
