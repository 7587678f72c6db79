package thp

import (
	"bytes"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

const hugePage = 2 << 20

// modeFile says which memory the kernel backs with huge pages:
// "always [madvise] never" when only memory that asks for them.
var modeFile = "/sys/kernel/mm/transparent_hugepage/enabled"

func madviseOnly() bool {
	b, err := os.ReadFile(modeFile)
	return err == nil && bytes.Contains(b, []byte("[madvise]"))
}

func preferForHeap(n int) {
	if n < 2*hugePage || !madviseOnly() {
		return
	}
	b := make([]byte, n)
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	beg := int((p+hugePage-1)&^(hugePage-1) - p)
	end := int((p+uintptr(n))&^(hugePage-1) - p)
	// The advice stays with the mapping: Go never maps heap addresses
	// again once they are mapped, and returns free pages to the kernel
	// with MADV_DONTNEED, which keeps it. An error (EINVAL on a kernel
	// without THP) leaves ordinary pages, as before.
	_ = unix.Madvise(b[beg:end], unix.MADV_HUGEPAGE)
	runtime.KeepAlive(b) // b is garbage from here on: the collection frees it
	runtime.GC()
}
