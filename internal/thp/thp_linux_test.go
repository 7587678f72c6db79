package thp

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// vmFlags returns the VmFlags of the mapping that holds addr.
func vmFlags(t *testing.T, addr uintptr) []string {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no /proc/self/smaps: %v", err)
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && !strings.HasSuffix(fields[0], ":") {
			a, err1 := strconv.ParseUint(lo, 16, 64)
			b, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil {
				in = uint64(addr) >= a && uint64(addr) < b
				continue
			}
		}
		if in && fields[0] == "VmFlags:" {
			return fields[1:]
		}
	}
	t.Fatalf("no mapping holds %#x", addr)
	return nil
}

func withMode(t *testing.T, mode string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "enabled")
	if err := os.WriteFile(p, []byte(mode+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := modeFile
	modeFile = p
	t.Cleanup(func() { modeFile = old })
}

func TestPreferForHeapIsANoOpUnlessTheKernelWaitsForAdvice(t *testing.T) {
	for _, mode := range []string{"[always] madvise never", "always madvise [never]", ""} {
		withMode(t, mode)
		gcs := numGC()
		preferForHeap(64 << 20)
		if n := numGC(); n != gcs {
			t.Errorf("mode %q: %d collections, want none (nothing to do)", mode, n-gcs)
		}
	}
}

// TestPreferForHeapBacksTheNextLargeAllocationWithHugePages runs in a
// fresh process, as the encoder's first Encode does: in a process whose heap
// already has free runs, the next allocation may land in one of them.
func TestPreferForHeapBacksTheNextLargeAllocationWithHugePages(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage"); err != nil {
		t.Skipf("kernel without transparent huge pages: %v", err)
	}
	if os.Getenv("THP_TEST_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPreferForHeapBacksTheNextLargeAllocationWithHugePages$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "THP_TEST_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "--- PASS") {
			t.Fatalf("child ran no test:\n%s", out)
		}
		return
	}
	withMode(t, "always [madvise] never")
	gcs := numGC()
	preferForHeap(96 << 20)
	if numGC() == gcs {
		t.Fatal("no collection: the advised allocation was not freed")
	}
	// The size of one encoder table: what Encode allocates next. Only
	// whole huge pages are advised: look past the table's first one.
	table := make([]uint64, 4<<20)
	flags := vmFlags(t, uintptr(unsafe.Pointer(unsafe.SliceData(table)))+hugePage)
	if !slices.Contains(flags, "hg") {
		t.Errorf("table's mapping has VmFlags %v, want hg (MADV_HUGEPAGE)", flags)
	}
	runtime.KeepAlive(table)
}

func numGC() uint32 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.NumGC
}
