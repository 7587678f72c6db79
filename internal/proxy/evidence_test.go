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

// tarHead returns a tar holding one file named name, in format f.
func tarHead(t *testing.T, name string, f tar.Format) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: 4, Format: f}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte("\x7fELF"))
	tw.Close()
	return buf.Bytes()
}

// textTar returns a v7 tar header made of text only (space-terminated
// fields, no "ustar" magic) that starts with start, with bytes over 0x7f
// in its unused tail, and the checksum Go's archive/tar also accepts: the
// sum of the bytes taken as signed.
func textTar(start string) []byte {
	h := bytes.Repeat([]byte(" "), 512)
	copy(h, start)
	copy(h[100:], "0000755 ")
	copy(h[124:], "00000000000 ")
	copy(h[136:], "00000000000 ")
	h[156] = '0'
	copy(h[300:], "\xc3\xa9\xc3\xa9")
	sum := 0
	for i, b := range h {
		if i >= 148 && i < 156 {
			b = ' '
		}
		sum += int(int8(b))
	}
	copy(h[148:156], fmt.Sprintf("%06o  ", sum))
	return h
}

// A blob is trusted as evidence only if its content, all of it, is what
// its media type says: never an archive or an executable under a
// signature's label.
func TestEvidenceContent(t *testing.T) {
	t.Parallel()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarHead(t, "bin/app", tar.FormatPAX))
	zw.Close()
	v7 := tarHead(t, `{"critical":{}}`, tar.FormatUSTAR)
	copy(v7[257:265], make([]byte, 8)) // no "ustar" magic: the old v7 format, whose name looks like JSON
	sum := 0
	for i, b := range v7[:512] {
		if i >= 148 && i < 156 {
			b = ' '
		}
		sum += int(b)
	}
	copy(v7[148:156], fmt.Sprintf("%06o\x00 ", sum))
	text := textTar(`{"signature":"`)
	cose := textTar("\xd2\x84\x43")
	for _, b := range [][]byte{v7, text, cose} {
		if _, err := tar.NewReader(bytes.NewReader(b)).Next(); err != nil {
			t.Fatalf("test assumption: archive/tar reads %q: %v", b[:16], err)
		}
	}
	if !isText(text) {
		t.Fatal("test assumption: the text tar is text")
	}
	signature := sigpolicy.SimpleSigningMediaType
	for _, c := range []struct {
		name, mediaType string
		blob            []byte
		want            bool
	}{
		{"signature payload", signature, []byte(`{"critical":{"identity":{}}}`), true},
		{"payload with a BOM and spaces", signature, []byte("\xef\xbb\xbf \n[1]"), true},
		{"gzip under a signature's label", signature, gz.Bytes(), false},
		{"tar under a signature's label", signature, tarHead(t, "bin/app", tar.FormatPAX), false},
		{"v7 tar named like JSON", signature, v7, false},
		{"tar made of text, signed checksum", signature, text, false},
		{"tar made of text as SPDX", "text/spdx", text, false},
		{"JSON followed by something else", signature, append([]byte(`{"critical":{}}`), v7...), false},
		{"ELF", "application/vnd.in-toto+json", []byte("\x7fELF\x02\x01\x01"), false},
		{"zstd", "application/vnd.dsse.envelope.v1+json", []byte{0x28, 0xb5, 0x2f, 0xfd, 0}, false},
		{"COSE, any bytes after", "application/cose", []byte{0xd2, 0x84, 0x2a, 0x4d, 0x18}, true},
		{"zstd skippable frame", "application/cose", []byte{0x5a, 0x2a, 0x4d, 0x18, 0}, false},
		{"JSON with a control byte", signature, []byte("{\x00}"), false},
		{"SPDX tag-value", "text/spdx", []byte("SPDXVersion: SPDX-2.3\nDataLicense: CC0-1.0\n"), true},
		{"binary as SPDX", "text/spdx", []byte{'S', 0x01, 0x02}, false},
		{"CycloneDX XML", "application/vnd.cyclonedx+xml", []byte(`<?xml version="1.0"?><bom/>`), true},
		{"CycloneDX JSON, unfinished", "application/vnd.cyclonedx", []byte(`{"bomFormat":`), false},
		{"COSE", "application/cose", []byte{0xd2, 0x84, 0x43}, true},
		{"tar starting like COSE", "application/cose", cose, false},
		{"gzip as COSE", "application/cose", gz.Bytes(), false},
		{"empty descriptor", ocispec.MediaTypeEmptyJSON, []byte("{}"), true},
		{"delta", delta.MediaType, []byte{0x89, 'R', 'E', 'D', 'L', 'T', '\r', '1', 0}, true},
		{"gzip as a delta", delta.MediaType, gz.Bytes(), false},
		{"nothing", signature, nil, false},
	} {
		if got := evidenceContent(c.mediaType, c.blob); got != c.want {
			t.Errorf("%s: evidenceContent(%s) = %v, want %v", c.name, c.mediaType, got, c.want)
		}
	}
}
