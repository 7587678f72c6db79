package blobstore

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A store this process may not write is refused at start, naming the
// directory; a writable one passes. As root (CI), permissions do not stop
// writes: the store sits on a file system remounted read-only instead.
func TestCheckWritable(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if os.Geteuid() == 0 {
		if err := syscall.Mount("tmpfs", root, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatalf("mount a tmpfs: %v", err)
		}
		t.Cleanup(func() { syscall.Unmount(root, syscall.MNT_DETACH) })
	}
	s, err := NewFS(root, FSOptions{TempMaxAge: time.Hour, PartialMaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CheckWritable(); err != nil {
		t.Fatalf("a writable store: %v", err)
	}
	if os.Geteuid() == 0 {
		if err := syscall.Mount("tmpfs", root, "tmpfs", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
			t.Fatalf("remount read-only: %v", err)
		}
	} else if err := os.Chmod(filepath.Join(root, "ingest"), 0o555); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFS(root, FSOptions{TempMaxAge: time.Hour, PartialMaxAge: time.Hour}); err != nil {
		t.Fatalf("NewFS of a store it may not write (it only reads): %v", err)
	}
	err = s.CheckWritable()
	if err == nil || !strings.Contains(err.Error(), "is not writable by this process") || !strings.Contains(err.Error(), root) {
		t.Errorf("CheckWritable of a store it may not write: %v, want an error naming the directory", err)
	}
}
