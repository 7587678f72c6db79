//go:build unix

package meta

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// removeTornInit removes the file at path if it is shorter than the four
// pages bbolt writes when it creates a database: a first start that ran
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
	if err != nil || st.Size() == 0 || st.Size() >= 4*int64(os.Getpagesize()) {
		return nil
	}
	return os.Remove(path)
}
