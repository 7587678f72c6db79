package blobstore

import (
	"os"
	"sync"

	"github.com/registry-edge/registry-edge/internal/verify"
)

// StagingFile is the local file an Ingest writes, shared by the stores that
// stage content locally (the filesystem store and the object store): it
// hashes and counts the bytes as they arrive, so that readers know how far
// they may read and a commit verifies them without reading the file again.
// Its Write, Written and Verify are those of Ingest.
type StagingFile struct {
	File *os.File
	dg   *verify.Digester

	mu      sync.Mutex
	written int64
}

// NewStagingFile stages into f, hashing with dg.
func NewStagingFile(f *os.File, dg *verify.Digester) *StagingFile {
	return &StagingFile{File: f, dg: dg}
}

func (s *StagingFile) Write(p []byte) (int, error) {
	n, err := s.File.Write(p)
	s.dg.Write(p[:n])
	s.mu.Lock()
	s.written += int64(n)
	s.mu.Unlock()
	return n, err
}

// Written is the number of bytes written so far.
func (s *StagingFile) Written() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written
}

// Verify checks the bytes written so far against the digest and size
// (size < 0: any size).
func (s *StagingFile) Verify(size int64) error { return s.dg.Verify(size) }
