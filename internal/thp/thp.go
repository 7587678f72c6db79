// Package thp lets a process that is about to fill large tables have them
// backed by transparent huge pages where the kernel only gives huge pages to
// memory that asks for them (THP mode "madvise", the default of most
// distributions).
//
// The delta encoder's best level allocates about 70 MiB of hash tables per
// worker and writes all of them. In a fresh process every 4 KiB page of that
// is a page fault; under a hypervisor one costs about 11 µs. Backed by 2 MiB
// pages the same memory faults 512 times less often; a host that took the
// guest's free memory back still backs it again page by page, so what this
// saves depends on the machine: 5-13 % of a one-layer encode on the
// benchmark VM (ADR 0019).
package thp

import "sync"

var once sync.Once

// PreferForHeap makes about n bytes of the Go heap, the next n bytes the
// heap grows by, eligible for huge pages, once per process: it allocates n
// bytes without touching them, advises the kernel, and frees them with a
// garbage collection, so that the next large allocations reuse those
// addresses. It is a no-op where the kernel has no transparent huge pages,
// gives them to all memory already, or refuses them, and on systems other
// than Linux. It costs one collection and no resident memory.
func PreferForHeap(n int) {
	once.Do(func() { preferForHeap(n) })
}
