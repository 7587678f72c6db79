package blobstore

import (
	"os"
	"syscall"
)

// fileID tells one version of a stored file from another: a write, a
// truncation, a chmod or a replacement changes its change time (which no
// user can set) or its inode.
type fileID struct {
	dev, ino          uint64
	size              int64
	ctimeSec, ctimeNs int64
	mtimeSec, mtimeNs int64
}

func idOf(fi os.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	cs, cn := st.Ctim.Unix()
	ms, mn := st.Mtim.Unix()
	return fileID{dev: uint64(st.Dev), ino: uint64(st.Ino), size: fi.Size(), ctimeSec: cs, ctimeNs: cn, mtimeSec: ms, mtimeNs: mn}, true
}
