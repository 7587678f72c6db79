//go:build !unix

package delta

import "io"

// mapBase is not available on this platform: bases are read into memory.
func mapBase(io.ReaderAt, int64) ([]byte, func(), bool) { return nil, nil, false }
