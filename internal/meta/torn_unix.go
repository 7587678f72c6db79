//go:build unix

package meta

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// removeTornInit removes the file at path if it is shorter than the four
// pages (of the page size recorded in it) bbolt writes when it creates a
// database: a first start that ran
// out of disk space leaves such a file (bbolt writes the four pages in one
// write), which holds nothing and whose meta pages point past its end, so
// that bbolt's mmap faults (SIGBUS) at every later start. The file is
// locked meanwhile, as bbolt locks it: a process creating it now is never
// disturbed.
func removeTornInit(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return nil // bolt.Open says what is wrong
	}
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return nil // in use: bolt.Open waits for it, then says so
	}
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return nil
	}
	// The first meta page: a 16-byte page header, then the magic, the
	// version and the page size the file was made with (bbolt writes them
	// in the machine's byte order). Not a bbolt file: bolt.Open says so.
	var hdr [28]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil || binary.NativeEndian.Uint32(hdr[16:]) != boltMagic {
		return nil
	}
	pageSize := int64(binary.NativeEndian.Uint32(hdr[24:]))
	if pageSize < 512 || st.Size() >= 4*pageSize {
		return nil
	}
	return os.Remove(path)
}

// boltMagic marks a bbolt file (its meta pages).
const boltMagic = 0xED0CDAED
