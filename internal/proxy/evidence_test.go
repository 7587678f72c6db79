package proxy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/delta"
	"github.com/registry-edge/registry-edge/internal/sigpolicy"
)

// tarHead returns the first 512 bytes of a tar holding one file named
// name, in format f.
func tarHead(t *testing.T, name string, f tar.Format) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: 4, Format: f}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte("\x7fELF"))
	tw.Close()
	return buf.Bytes()[:512]
}

// A blob is trusted as evidence only if its content is what its media type
// says: never an archive or an executable under a signature's label.
func TestEvidenceContent(t *testing.T) {
	t.Parallel()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarHead(t, "bin/app", tar.FormatPAX))
	zw.Close()
	v7 := tarHead(t, `{"critical":{}}`, tar.FormatUSTAR)
	copy(v7[257:265], make([]byte, 8)) // no "ustar" magic: the old v7 format, whose name looks like JSON
	sum := 0
	for i, b := range v7 {
		if i >= 148 && i < 156 {
			b = ' '
		}
		sum += int(b)
	}
	copy(v7[148:156], fmt.Sprintf("%06o\x00 ", sum))
	if !isTarHeader(v7) || !isTarHeader(tarHead(t, "bin/app", tar.FormatPAX)) {
		t.Fatal("test assumption: valid tar headers")
	}
	signature := sigpolicy.SimpleSigningMediaType
	for _, c := range []struct {
		name, mediaType string
		head            []byte
		want            bool
	}{
		{"signature payload", signature, []byte(`{"critical":{"identity":{}}}`), true},
		{"payload with a BOM and spaces", signature, []byte("\xef\xbb\xbf \n[1]"), true},
		{"gzip under a signature's label", signature, gz.Bytes()[:64], false},
		{"tar under a signature's label", signature, tarHead(t, "bin/app", tar.FormatPAX), false},
		{"v7 tar named like JSON", signature, v7, false},
		{"ELF", "application/vnd.in-toto+json", []byte("\x7fELF\x02\x01\x01"), false},
		{"zstd", "application/vnd.dsse.envelope.v1+json", []byte{0x28, 0xb5, 0x2f, 0xfd, 0}, false},
		{"JSON with a control byte", signature, []byte("{\x00}"), false},
		{"SPDX tag-value", "text/spdx", []byte("SPDXVersion: SPDX-2.3\nDataLicense: CC0-1.0\n"), true},
		{"binary as SPDX", "text/spdx", []byte{'S', 0x01, 0x02}, false},
		{"CycloneDX XML", "application/vnd.cyclonedx+xml", []byte(`<?xml version="1.0"?><bom/>`), true},
		{"COSE", "application/cose", []byte{0xd2, 0x84, 0x43}, true},
		{"gzip as COSE", "application/cose", gz.Bytes()[:16], false},
		{"empty descriptor", ocispec.MediaTypeEmptyJSON, []byte("{}"), true},
		{"delta", delta.MediaType, []byte{0x89, 'R', 'E', 'D', 'L', 'T', '\r', '1', 0}, true},
		{"gzip as a delta", delta.MediaType, gz.Bytes()[:16], false},
		{"nothing", signature, nil, false},
	} {
		if got := evidenceContent(c.mediaType, c.head); got != c.want {
			t.Errorf("%s: evidenceContent(%s) = %v, want %v", c.name, c.mediaType, got, c.want)
		}
	}
}
