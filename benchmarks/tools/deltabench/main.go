// Command deltabench runs registry-edge's layer-delta codec (internal/delta)
// on files, one operation per process, so that benchmarks/delta.sh can time
// each half under /usr/bin/time -v next to zstd, xdelta3, bsdiff and rdiff.
//
//	deltabench encode [-level best] [-concurrency 0] OLD.tar NEW.tar OUT.delta
//	deltabench decode [-verify-base] OLD.tar IN.delta OUT.tar
//	deltabench mktar DIR OUT.tar     deterministic tar (as the corpus's layertool)
//	deltabench gz IN OUT.gz          Go compress/gzip, default level (as layertool)
//
// encode reads the base through an *os.File (Encode loads it into memory and
// computes its digest) and the target through ReaderAt, with the default
// EncodeOptions unless flags say otherwise. decode takes the base's digest
// from the delta's header, as a receiver that stores layers by diffID would
// (-verify-base hashes the base file first and compares), reads the base
// through ReaderAt and streams the output to the file; Decode checks the
// output's size and SHA-256 itself. A failed operation removes its output.
//
// Each operation prints one line of key=value pairs on stdout: sizes, the
// time spent inside the operation (excluding process start-up), the derived
// throughput (MB/s = 10^6 bytes/s of the uncompressed target, i.e. the new
// tar read by encode and the tar written by decode) and the process's peak
// RSS (VmHWM) when /proc is there.
package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/delta"
)

const usage = `usage:
  deltabench encode [-level fastest|default|better|best] [-concurrency N] OLD.tar NEW.tar OUT.delta
  deltabench decode [-verify-base] OLD.tar IN.delta OUT.tar
  deltabench mktar DIR OUT.tar
  deltabench gz IN OUT.gz`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "encode":
		err = encodeCmd(args)
	case "decode":
		err = decodeCmd(args)
	case "mktar":
		err = exactArgs(args, 2, func() error { return mktar(args[0], args[1]) })
	case "gz":
		err = exactArgs(args, 2, func() error { return gz(args[0], args[1]) })
	case "-h", "-help", "--help", "help":
		fmt.Println(usage)
		return
	default:
		err = fmt.Errorf("unknown command %q\n%s", os.Args[1], usage)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "deltabench:", err)
		os.Exit(1)
	}
}

func exactArgs(args []string, n int, f func() error) error {
	if len(args) != n {
		return fmt.Errorf("want %d arguments, got %d\n%s", n, len(args), usage)
	}
	return f()
}

var levels = map[string]delta.Level{
	"fastest": delta.LevelFastest,
	"default": delta.LevelDefault,
	"better":  delta.LevelBetter,
	"best":    delta.LevelBest,
}

func encodeCmd(args []string) error {
	fl := flag.NewFlagSet("encode", flag.ContinueOnError)
	level := fl.String("level", "best", "literal zstd level: fastest, default, better or best")
	conc := fl.Int("concurrency", 0, "blocks compressed in parallel (0: the codec's default, min(2, GOMAXPROCS))")
	maxDict := fl.Int("max-dict", 0, "dictionary bytes per block (0: the codec's default)")
	blockSize := fl.Int("block-size", 0, "literal bytes per block (0: the codec's default)")
	cpuProfile := fl.String("cpuprofile", "", "write a CPU profile of the encoding to this file")
	repeat := fl.Int("repeat", 1, "encode this many times in one process, one line each: the first pass pays the process's first touches of fresh memory (encoder tables), later passes reuse them, as deltactl diff does for the layers of an image")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *repeat < 1 {
		return fmt.Errorf("encode: -repeat %d: want at least 1", *repeat)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if fl.NArg() != 3 {
		return fmt.Errorf("encode: want OLD.tar NEW.tar OUT.delta\n%s", usage)
	}
	lv, ok := levels[*level]
	if !ok {
		return fmt.Errorf("encode: unknown level %q", *level)
	}
	oldPath, newPath, outPath := fl.Arg(0), fl.Arg(1), fl.Arg(2)

	oldF, oldSize, err := openSized(oldPath)
	if err != nil {
		return err
	}
	defer oldF.Close()
	newF, newSize, err := openSized(newPath)
	if err != nil {
		return err
	}
	defer newF.Close()

	for pass := 1; pass <= *repeat; pass++ {
		start := time.Now()
		st, err := writeFile(outPath, func(w io.Writer) (delta.Stats, error) {
			return delta.Encode(context.Background(), w, newF, newSize,
				[]delta.Base{{Size: oldSize, R: oldF}}, delta.EncodeOptions{Level: lv, Concurrency: *conc, MaxDict: *maxDict, BlockSize: *blockSize})
		})
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		el := time.Since(start)
		fmt.Printf("deltabench encode old=%d new=%d delta=%d pct_of_new_tar=%.3f secs=%.3f mbps=%.1f level=%s"+
			" copy=%d literal=%d dict=%d control=%d ops=%d blocks=%d entries=%d exact=%d paired=%d rss_hwm_mib=%s pass=%d\n",
			oldSize, newSize, st.DeltaSize, 100*float64(st.DeltaSize)/float64(max(newSize, 1)), el.Seconds(),
			mbps(newSize, el), *level, st.CopyBytes, st.LiteralBytes, st.DictBytes, st.ControlBytes, st.Ops,
			st.Blocks, st.Entries, st.Exact, st.Paired, peakRSS(), pass)
	}
	return nil
}

func decodeCmd(args []string) error {
	fl := flag.NewFlagSet("decode", flag.ContinueOnError)
	verify := fl.Bool("verify-base", false, "hash the base file and compare it with the digest the delta names")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() != 3 {
		return fmt.Errorf("decode: want OLD.tar IN.delta OUT.tar\n%s", usage)
	}
	oldPath, inPath, outPath := fl.Arg(0), fl.Arg(1), fl.Arg(2)

	start := time.Now()
	oldF, oldSize, err := openSized(oldPath)
	if err != nil {
		return err
	}
	defer oldF.Close()
	in, inSize, err := openSized(inPath)
	if err != nil {
		return err
	}
	defer in.Close()
	h, err := delta.ReadHeader(in)
	if err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if len(h.Bases) != 1 {
		return fmt.Errorf("decode: the delta names %d bases; deltabench handles one", len(h.Bases))
	}
	base := delta.Base{Digest: h.Bases[0].Digest, Size: oldSize, R: oldF}
	if *verify {
		d, err := digest.SHA256.FromReader(io.NewSectionReader(oldF, 0, oldSize))
		if err != nil {
			return fmt.Errorf("decode: hash base: %w", err)
		}
		if d != base.Digest {
			return fmt.Errorf("decode: base %s is %s, the delta wants %s", oldPath, d, base.Digest)
		}
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := writeFile(outPath, func(w io.Writer) (struct{}, error) {
		return struct{}{}, delta.Decode(context.Background(), w, in, []delta.Base{base}, delta.Limits{})
	}); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	el := time.Since(start)
	fmt.Printf("deltabench decode old=%d delta=%d new=%d target=%s secs=%.3f mbps=%.1f verify_base=%t rss_hwm_mib=%s\n",
		oldSize, inSize, h.TargetSize, h.Target, el.Seconds(), mbps(h.TargetSize, el), *verify, peakRSS())
	return nil
}

// writeFile creates path, runs f on a buffered writer to it and closes it;
// on any error the file is removed.
func writeFile[T any](path string, f func(io.Writer) (T, error)) (T, error) {
	out, err := os.Create(path)
	if err != nil {
		var zero T
		return zero, err
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	v, err := f(bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return v, err
}

func openSized(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s: not a regular file", path)
	}
	return f, fi.Size(), nil
}

func mbps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds() / 1e6
}

// peakRSS returns VmHWM from /proc/self/status in MiB, or "-".
func peakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "-"
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			if _, err := fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb); err == nil {
				return fmt.Sprintf("%.1f", float64(kb)/1024)
			}
		}
	}
	return "-"
}

// epoch is the fixed modification time of every entry (2024-01-01), as in
// the corpus's layertool.
var epoch = time.Unix(1704067200, 0).UTC()

// mktar writes a deterministic tar of dir's contents: lexical order, PAX
// format, uid/gid 0 without names, a fixed mtime, permission bits only; the
// same bytes as `layertool mktar` from shared/bench/corpus/build-corpus.sh.
func mktar(dir, out string) error {
	_, err := writeFile(out, func(w io.Writer) (struct{}, error) {
		tw := tar.NewWriter(w)
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil || rel == "." {
				return err
			}
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			link := ""
			if fi.Mode()&fs.ModeSymlink != 0 {
				if link, err = os.Readlink(p); err != nil {
					return err
				}
			}
			h, err := tar.FileInfoHeader(fi, link)
			if err != nil {
				return err
			}
			h.Name = filepath.ToSlash(rel)
			if fi.IsDir() {
				h.Name += "/"
			}
			h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
			h.ModTime, h.AccessTime, h.ChangeTime = epoch, time.Time{}, time.Time{}
			h.Format = tar.FormatPAX
			h.Mode &= 0o7777
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if !fi.Mode().IsRegular() {
				return nil
			}
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			_, err = io.Copy(tw, src)
			return err
		})
		return struct{}{}, errors.Join(err, tw.Close())
	})
	return err
}

// gz compresses in with Go's compress/gzip at the default level (as the
// corpus's `layertool gz`) and prints the sizes and the tar's SHA-256.
func gz(in, out string) error {
	src, err := os.Open(in)
	if err != nil {
		return err
	}
	defer src.Close()
	h := sha256.New()
	var n int64
	_, err = writeFile(out, func(w io.Writer) (struct{}, error) {
		zw := gzip.NewWriter(w)
		var err error
		n, err = io.Copy(io.MultiWriter(zw, h), src)
		return struct{}{}, errors.Join(err, zw.Close())
	})
	if err != nil {
		return err
	}
	fi, err := os.Stat(out)
	if err != nil {
		return err
	}
	fmt.Printf("deltabench gz in=%d out=%d diffid=sha256:%x\n", n, fi.Size(), h.Sum(nil))
	return nil
}
