package blobstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

func newPartialFS(t *testing.T) (*FS, string) {
	t.Helper()
	root := t.TempDir()
	s, err := NewFS(root, FSOptions{TempMaxAge: time.Hour, PartialMaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return s, root
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func resume(t *testing.T, s *FS, d digest.Digest) Partial {
	t.Helper()
	p, err := s.Resume(context.Background(), d)
	if err != nil {
		t.Fatalf("Resume(%s): %v", d, err)
	}
	return p
}

func write(t *testing.T, w io.Writer, b []byte) {
	t.Helper()
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
}

func partialFiles(t *testing.T, root string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, "partial"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func commitAndCheck(t *testing.T, s *FS, root string, p Partial, content []byte) {
	t.Helper()
	ctx := context.Background()
	d := digest.FromBytes(content)
	if err := p.Commit(ctx, int64(len(content))); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	rc, err := s.Open(ctx, d)
	if err != nil {
		t.Fatalf("Open after commit: %v", err)
	}
	defer rc.Close()
	got, _ := io.ReadAll(rc)
	if !bytes.Equal(got, content) {
		t.Fatalf("committed content differs (%d bytes, want %d)", len(got), len(content))
	}
	if left := partialFiles(t, root); len(left) != 0 {
		t.Errorf("partial files left after commit: %v", left)
	}
}

// A partial whose checkpoint cannot be written (a full disk) is not kept:
// its bytes would hold space nothing frees.
func TestSuspendWithoutCheckpointDiscards(t *testing.T) {
	s, root := newPartialFS(t)
	content := randomBytes(t, 10_000)
	d := digest.FromBytes(content)
	p := resume(t, s, d)
	write(t, p, content[:5_000])
	// A directory where the checkpoint goes: its rename fails.
	state := s.partialPath(d) + stateSuffix
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := p.Suspend(PartialMeta{Size: int64(len(content))}); err == nil {
		t.Fatal("Suspend without a checkpoint succeeded")
	}
	if s.HasPartial(d) {
		t.Error("the partial's data is still there")
	}
	if left := partialFiles(t, root); len(left) != 0 {
		t.Errorf("left in partial/: %v", left)
	}
}

// Bytes a checkpoint covers that changed on disk before the resume (a
// storage card's corruption after a crash) fail Verify and Commit, though
// the checkpoint's hash state matches the digest.
func TestResumedPartialIsHashedFromDisk(t *testing.T) {
	s, root := newPartialFS(t)
	content := randomBytes(t, 300_000)
	d := digest.FromBytes(content)
	p := resume(t, s, d)
	write(t, p, content[:200_000])
	if err := p.Suspend(PartialMeta{Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(s.partialPath(d), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{content[1000] ^ 0xff}, 1000); err != nil {
		t.Fatal(err)
	}
	f.Close()

	p = resume(t, s, d)
	write(t, p, content[200_000:])
	if err := p.Verify(int64(len(content))); !errors.Is(err, errdef.ErrDigestMismatch) {
		t.Errorf("Verify() = %v, want a digest mismatch", err)
	}
	if err := p.Commit(context.Background(), int64(len(content))); err == nil {
		t.Error("Commit() of changed bytes succeeded")
	}
	if _, err := s.Stat(context.Background(), d); err == nil {
		t.Error("the blob was committed")
	}
	if left := partialFiles(t, root); len(left) != 0 {
		t.Errorf("left in partial/: %v", left)
	}
}

// A suspended partial resumes where it stopped, with its metadata.
func TestPartialSuspendResume(t *testing.T) {
	s, root := newPartialFS(t)
	content := randomBytes(t, 300_000)
	d := digest.FromBytes(content)

	if s.HasPartial(d) {
		t.Fatal("HasPartial before any download")
	}
	p := resume(t, s, d)
	if p.Written() != 0 {
		t.Fatalf("new partial has %d bytes", p.Written())
	}
	if s.HasPartial(d) {
		t.Fatal("HasPartial of an empty partial")
	}
	write(t, p, content[:100_000])
	meta := PartialMeta{Size: int64(len(content)), ETag: `"` + d.String() + `"`}
	if err := p.Suspend(meta); err != nil {
		t.Fatal(err)
	}
	if !s.HasPartial(d) {
		t.Fatal("no HasPartial after 100000 bytes were kept")
	}

	p = resume(t, s, d)
	if p.Written() != 100_000 || p.Meta() != meta {
		t.Fatalf("resumed partial: %d bytes, meta %+v; want 100000, %+v", p.Written(), p.Meta(), meta)
	}
	// Readers see the kept bytes.
	r, err := p.OpenReader()
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 100_000)
	if _, err := io.ReadFull(r, head); err != nil || !bytes.Equal(head, content[:100_000]) {
		t.Fatalf("reader of a resumed partial: %v", err)
	}
	r.Close()
	write(t, p, content[100_000:])
	commitAndCheck(t, s, root, p, content)
	if s.HasPartial(d) {
		t.Error("HasPartial after the commit")
	}
}

// Bytes written after the last checkpoint by a process that died (kill
// -9: the data is in the page cache, the checkpoint is older) are kept.
func TestPartialKeepsBytesAfterCheckpoint(t *testing.T) {
	s, root := newPartialFS(t)
	content := randomBytes(t, 200_000)
	d := digest.FromBytes(content)

	p := resume(t, s, d)
	write(t, p, content[:50_000])
	if err := p.Checkpoint(PartialMeta{Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	write(t, p, content[50_000:120_000])
	p.(*fsPartial).File.Close() // the process dies: no Suspend, the lock goes with the descriptor

	p = resume(t, s, d)
	if p.Written() != 120_000 {
		t.Fatalf("resumed at %d, want 120000", p.Written())
	}
	if p.Meta().Size != int64(len(content)) {
		t.Errorf("meta = %+v, want the checkpoint's", p.Meta())
	}
	write(t, p, content[120_000:])
	commitAndCheck(t, s, root, p, content)
}

// A missing, corrupt or foreign checkpoint costs a rehash of the data, not
// the data.
func TestPartialWithUnusableCheckpoint(t *testing.T) {
	content := randomBytes(t, 100_000)
	d := digest.FromBytes(content)
	other := digest.FromString("other")
	for name, state := range map[string][]byte{
		"missing":        nil,
		"garbage":        []byte("{not json"),
		"other digest":   []byte(`{"digest":"` + other.String() + `","offset":10,"hashState":"AAAA","meta":{"size":5}}`),
		"beyond the end": []byte(`{"digest":"` + d.String() + `","offset":999999,"hashState":"AAAA","meta":{"size":5}}`),
		"bad hash state": []byte(`{"digest":"` + d.String() + `","offset":10,"hashState":"AAAA","meta":{"size":5}}`),
	} {
		t.Run(name, func(t *testing.T) {
			s, root := newPartialFS(t)
			p := resume(t, s, d)
			write(t, p, content[:40_000])
			if err := p.Suspend(PartialMeta{Size: -1}); err != nil {
				t.Fatal(err)
			}
			statePath := filepath.Join(root, "partial", "sha256-"+d.Encoded()+stateSuffix)
			if state == nil {
				os.Remove(statePath)
			} else if err := os.WriteFile(statePath, state, 0o644); err != nil {
				t.Fatal(err)
			}
			p = resume(t, s, d)
			if p.Written() != 40_000 {
				t.Fatalf("resumed at %d, want 40000", p.Written())
			}
			write(t, p, content[40_000:])
			commitAndCheck(t, s, root, p, content)
		})
	}
}

// Wrong bytes in a partial fail the commit and the partial is discarded.
func TestPartialWithWrongBytesIsDiscarded(t *testing.T) {
	s, root := newPartialFS(t)
	content := randomBytes(t, 50_000)
	d := digest.FromBytes(content)
	p := resume(t, s, d)
	bad := append([]byte{}, content[:20_000]...)
	bad[100] ^= 1
	write(t, p, bad)
	if err := p.Suspend(PartialMeta{Size: -1}); err != nil {
		t.Fatal(err)
	}
	p = resume(t, s, d)
	write(t, p, content[20_000:])
	if err := p.Commit(context.Background(), int64(len(content))); !errors.Is(err, errdef.ErrDigestMismatch) {
		t.Fatalf("Commit of wrong bytes: %v, want ErrDigestMismatch", err)
	}
	if _, err := s.Stat(context.Background(), d); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("Stat after a failed commit: %v, want ErrNotFound", err)
	}
	if left := partialFiles(t, root); len(left) != 0 {
		t.Errorf("partial files left after a failed commit: %v", left)
	}
	// The next attempt starts from zero.
	if p := resume(t, s, d); p.Written() != 0 {
		t.Errorf("partial after a failed commit has %d bytes", p.Written())
	}
}

func TestPartialIsExclusive(t *testing.T) {
	s, _ := newPartialFS(t)
	d := digest.FromString("x")
	p := resume(t, s, d)
	if _, err := s.Resume(context.Background(), d); !errors.Is(err, ErrPartialBusy) {
		t.Fatalf("second Resume while held: %v, want ErrPartialBusy", err)
	}
	if err := p.Suspend(PartialMeta{Size: -1}); err != nil {
		t.Fatal(err)
	}
	p = resume(t, s, d)
	if err := p.Cancel(); err != nil {
		t.Fatal(err)
	}
}

func TestPartialCancelRemovesEverything(t *testing.T) {
	s, root := newPartialFS(t)
	d := digest.FromString("x")
	p := resume(t, s, d)
	write(t, p, []byte("x"))
	if err := p.Checkpoint(PartialMeta{Size: 1}); err != nil {
		t.Fatal(err)
	}
	if err := p.Cancel(); err != nil {
		t.Fatal(err)
	}
	if left := partialFiles(t, root); len(left) != 0 {
		t.Errorf("partial files left after Cancel: %v", left)
	}
}

// Start-up removes partials not written for PartialMaxAge and checkpoints
// without data; younger partials stay for a later resume.
func TestStartupCleansOldPartials(t *testing.T) {
	s, root := newPartialFS(t)
	oldD, youngD := digest.FromString("old"), digest.FromString("young")
	for _, d := range []digest.Digest{oldD, youngD} {
		p := resume(t, s, d)
		write(t, p, []byte("some"))
		if err := p.Suspend(PartialMeta{Size: -1}); err != nil {
			t.Fatal(err)
		}
	}
	old := filepath.Join(root, "partial", "sha256-"+oldD.Encoded())
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(root, "partial", "sha256-"+digest.FromString("gone").Encoded()+stateSuffix)
	if err := os.WriteFile(orphan, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFS(root, FSOptions{TempMaxAge: time.Hour, PartialMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	got := partialFiles(t, root)
	want := []string{"sha256-" + youngD.Encoded(), "sha256-" + youngD.Encoded() + stateSuffix}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("partials after start-up = %v, want %v", got, want)
	}
}

func TestCheckAndQuarantine(t *testing.T) {
	s, root := newPartialFS(t)
	ctx := context.Background()
	good, bad := randomBytes(t, 1000), randomBytes(t, 1000)
	for _, b := range [][]byte{good, bad} {
		if err := s.Put(ctx, ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Check(ctx, digest.FromBytes(good)); err != nil {
		t.Errorf("Check of intact content: %v", err)
	}
	// The disk flips a bit behind the store's back.
	p, _ := s.path(digest.FromBytes(bad))
	os.Chmod(p, 0o644)
	flipped := append([]byte{}, bad...)
	flipped[10] ^= 1
	if err := os.WriteFile(p, flipped, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx, digest.FromBytes(bad)); !errors.Is(err, errdef.ErrDigestMismatch) {
		t.Fatalf("Check of corrupted content: %v, want ErrDigestMismatch", err)
	}
	dst, err := s.Quarantine(digest.FromBytes(bad))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, digest.FromBytes(bad)); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("quarantined content still served: %v", err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, flipped) || filepath.Dir(dst) != filepath.Join(root, "quarantine") {
		t.Errorf("quarantined file %s does not hold the corrupted bytes", dst)
	}
}

// A power loss can leave the bytes after a partial's last checkpoint as
// zeros or garbage (the file's length made durable, not its data). They
// fail the digest; the partial is then cut back to the checkpoint before
// them, not discarded, also when the process that read them back wrote a
// checkpoint since (its hash state covers them) and died in turn.
func TestPartialWithDamagedTailRewindsToCheckpoint(t *testing.T) {
	s, root := newPartialFS(t)
	content := randomBytes(t, 200_000)
	d := digest.FromBytes(content)
	data := filepath.Join(root, "partial", "sha256-"+d.Encoded())

	p := resume(t, s, d)
	write(t, p, content[:50_000])
	if err := p.Checkpoint(PartialMeta{Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	write(t, p, content[50_000:120_000])
	p.(*fsPartial).File.Close() // power loss: no Suspend...
	f, err := os.OpenFile(data, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 70_000), 50_000); err != nil { // ...and zeros after the checkpoint
		t.Fatal(err)
	}
	f.Close()

	// The next process takes the zeros for data, checkpoints past them
	// and is killed.
	p = resume(t, s, d)
	write(t, p, content[120_000:150_000])
	if err := p.Checkpoint(PartialMeta{Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	p.(*fsPartial).File.Close()

	p = resume(t, s, d)
	if p.Written() != 150_000 {
		t.Fatalf("resumed at %d, want 150000", p.Written())
	}
	write(t, p, content[150_000:])
	if err := p.Verify(int64(len(content))); !errors.Is(err, errdef.ErrDigestMismatch) {
		t.Fatalf("Verify of a damaged partial: %v, want ErrDigestMismatch", err)
	}
	n, err := p.Rewind()
	if err != nil || n != 50_000 {
		t.Fatalf("Rewind() = %d, %v, want 50000, nil", n, err)
	}
	if fi, err := os.Stat(data); err != nil || fi.Size() != 50_000 {
		t.Fatalf("data after Rewind: %v, %v; want 50000 bytes", fi, err)
	}

	p = resume(t, s, d)
	if p.Written() != 50_000 || p.Meta().Size != int64(len(content)) {
		t.Fatalf("resumed at %d with %+v, want 50000 and the checkpoint's meta", p.Written(), p.Meta())
	}
	write(t, p, content[50_000:])
	commitAndCheck(t, s, root, p, content)
}

// Rewind keeps nothing when no byte was read back unchecked (the wrong
// bytes came in this process: from the upstream), nor when the bytes
// before the checkpoint changed too.
func TestPartialRewindKeepsOnlyCheckedBytes(t *testing.T) {
	content := randomBytes(t, 100_000)
	d := digest.FromBytes(content)
	t.Run("no bytes read back", func(t *testing.T) {
		s, _ := newPartialFS(t)
		p := resume(t, s, d)
		write(t, p, content[:40_000])
		if err := p.Suspend(PartialMeta{Size: -1}); err != nil {
			t.Fatal(err)
		}
		p = resume(t, s, d)
		write(t, p, make([]byte, 60_000))
		if n, err := p.Rewind(); n != 0 || err != nil {
			t.Errorf("Rewind() = %d, %v, want 0, nil", n, err)
		}
		p.Cancel()
	})
	t.Run("prefix changed", func(t *testing.T) {
		s, root := newPartialFS(t)
		p := resume(t, s, d)
		write(t, p, content[:40_000])
		if err := p.Checkpoint(PartialMeta{Size: -1}); err != nil {
			t.Fatal(err)
		}
		write(t, p, content[40_000:60_000])
		p.(*fsPartial).File.Close()
		f, err := os.OpenFile(filepath.Join(root, "partial", "sha256-"+d.Encoded()), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte{content[100] ^ 1}, 100)
		f.Close()
		p = resume(t, s, d)
		write(t, p, content[60_000:])
		if n, err := p.Rewind(); n != 0 || !errors.Is(err, errdef.ErrDigestMismatch) {
			t.Errorf("Rewind() = %d, %v, want 0, ErrDigestMismatch", n, err)
		}
		p.Cancel()
	})
}

// Bytes after the last checkpoint of an earlier boot are what a power loss
// may leave as zeros: a Resume in a later boot cuts them off before any
// is hashed or read, and resumes from the checkpoint (after a kill -9, in
// the same boot, they are kept: TestPartialKeepsBytesAfterCheckpoint).
// The cut is recorded as this boot's: bytes this boot writes after it
// are kept by its next Resume.
func TestPartialTailOfAnEarlierBootIsCut(t *testing.T) {
	root := t.TempDir()
	open := func(boot string) *FS {
		s, err := NewFS(root, FSOptions{TempMaxAge: time.Hour, PartialMaxAge: time.Hour, BootID: boot})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	content := randomBytes(t, 200_000)
	d := digest.FromBytes(content)
	data := filepath.Join(root, "partial", "sha256-"+d.Encoded())

	s := open("boot-1")
	p := resume(t, s, d)
	write(t, p, content[:50_000])
	if err := p.Checkpoint(PartialMeta{Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	write(t, p, content[50_000:120_000])
	p.(*fsPartial).File.Close() // power loss: the file kept its length, not its data
	f, err := os.OpenFile(data, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 70_000), 50_000); err != nil {
		t.Fatal(err)
	}
	f.Close()

	s = open("boot-2")
	p = resume(t, s, d)
	if p.Written() != 50_000 {
		t.Fatalf("resumed at %d in a later boot, want the checkpoint's 50000", p.Written())
	}
	if fi, err := os.Stat(data); err != nil || fi.Size() != 50_000 {
		t.Fatalf("data after the Resume: %v, %v; want 50000 bytes", fi, err)
	}
	write(t, p, content[50_000:90_000])
	p.(*fsPartial).File.Close() // kill -9 in boot 2

	p = resume(t, s, d)
	if p.Written() != 90_000 {
		t.Fatalf("resumed at %d in the same boot, want 90000", p.Written())
	}
	write(t, p, content[90_000:])
	commitAndCheck(t, s, root, p, content)
}
