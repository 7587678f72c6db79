package verify

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

func TestReader(t *testing.T) {
	t.Parallel()
	content := "hello, registry-edge"
	d := digest.FromString(content)
	tests := []struct {
		name string
		body string
		size int64
		want error
	}{
		{"ok", content, int64(len(content)), nil},
		{"ok unknown size", content, -1, nil},
		{"wrong bytes", strings.ToUpper(content), int64(len(content)), errdef.ErrDigestMismatch},
		{"truncated", content[:5], int64(len(content)), errdef.ErrSizeMismatch},
		{"excess", content + "!", int64(len(content)), errdef.ErrSizeMismatch},
		{"wrong bytes unknown size", "x", -1, errdef.ErrDigestMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := NewReader(strings.NewReader(tt.body), d, tt.size)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if tt.want == nil {
				if err != nil || string(got) != content {
					t.Fatalf("ReadAll() = %q, %v", got, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("ReadAll() error = %v, want %v", err, tt.want)
			}
			var ve *Error
			if !errors.As(err, &ve) || ve.Want != d {
				t.Errorf("error %v is not a *verify.Error for %s", err, d)
			}
			if tt.size >= 0 && int64(len(got)) > tt.size {
				t.Errorf("read %d bytes, more than the size %d", len(got), tt.size)
			}
		})
	}
}

func TestNewDigesterRejectsInvalid(t *testing.T) {
	t.Parallel()
	if _, err := NewDigester("sha256:nothex"); !errors.Is(err, errdef.ErrInvalid) {
		t.Errorf("NewDigester() error = %v, want ErrInvalid", err)
	}
}

func BenchmarkReader(b *testing.B) {
	content := bytes.Repeat([]byte{1}, 1<<20)
	d := digest.FromBytes(content)
	b.SetBytes(int64(len(content)))
	for b.Loop() {
		r, _ := NewReader(bytes.NewReader(content), d, int64(len(content)))
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDigesterStateRoundTrip(t *testing.T) {
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		content := bytes.Repeat([]byte("resume me "), 10_000)
		want := alg.FromBytes(content)
		d, err := NewDigester(want)
		if err != nil {
			t.Fatal(err)
		}
		cut := int64(len(content) / 3)
		d.Write(content[:cut])
		state, err := d.State()
		if err != nil {
			t.Fatal(err)
		}
		r, err := RestoreDigester(want, state, cut)
		if err != nil {
			t.Fatalf("%s: restore: %v", alg, err)
		}
		r.Write(content[cut:])
		if err := r.Verify(int64(len(content))); err != nil {
			t.Errorf("%s: restored digester: %v", alg, err)
		}
		// A state that does not cover the claimed count is refused.
		if _, err := RestoreDigester(want, state, cut+1); !errors.Is(err, errdef.ErrInvalid) {
			t.Errorf("%s: restore with a wrong count: %v, want ErrInvalid", alg, err)
		}
		if _, err := RestoreDigester(want, state[:10], cut); !errors.Is(err, errdef.ErrInvalid) {
			t.Errorf("%s: restore of a truncated state: %v, want ErrInvalid", alg, err)
		}
	}
	sha := digest.FromString("x")
	d512, _ := NewDigester(digest.SHA512.FromString("x"))
	st, _ := d512.State()
	if _, err := RestoreDigester(sha, st, 0); !errors.Is(err, errdef.ErrInvalid) {
		t.Errorf("restore of a sha512 state as sha256: %v, want ErrInvalid", err)
	}
}
