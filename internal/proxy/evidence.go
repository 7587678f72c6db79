package proxy

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/delta"
	"github.com/registry-edge/registry-edge/internal/errdef"
)

// Bounds of an artifact served as evidence: larger ones are verified like
// images (ADR 0011).
const (
	maxEvidenceBlobs = 64
	maxEvidenceBlob  = 16 << 20
)

// evidenceBlobs reads the blobs of c, a manifest labelled as evidence,
// whole and verified against their digests, and reports whether each is
// what its media type says. An artifact is evidence only if all are: a
// runtime such as podman unpacks a layer whatever its label, so one tar,
// compressed stream or executable among them, or a blob too large to be
// read, makes the manifest an image to be verified. Judging by the bytes
// that are served, and by all of them, is what keeps a label from vouching
// for code: a first-bytes sniff can be answered by a lying upstream's range
// response, or raced by a tar header made of text. A delta is the
// exception: it can be as large as a layer, and a site reads only the
// deltas it uses, so it is not read here; it is evidence only in an
// artifact whose config is the empty one (as deltactl publishes them),
// with which no runtime unpacks anything, since it names no layer. err is
// set when a blob could not be read (the upstream failed): nothing is
// decided then.
func (p *Proxy) evidenceBlobs(ctx context.Context, t Target, c content) (ok bool, err error) {
	if len(c.descs) > maxEvidenceBlobs {
		return false, nil
	}
	for _, desc := range c.descs {
		mt, _, _ := strings.Cut(desc.MediaType, ";")
		switch {
		case desc.MediaType == ocispec.MediaTypeEmptyJSON && desc.Digest == ocispec.DescriptorEmptyJSON.Digest:
			continue // "{}", known by its digest
		case strings.TrimSpace(mt) == delta.MediaType:
			if c.runnableConfig {
				return false, nil
			}
			continue
		case desc.Size > maxEvidenceBlob:
			return false, nil
		}
		b, err := sigSource{p: p, t: t}.Blob(ctx, "", desc.Digest, maxEvidenceBlob)
		if errors.Is(err, errdef.ErrTooLarge) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("evidence blob %s: %w", desc.Digest, err)
		}
		if !evidenceContent(desc.MediaType, b) {
			return false, nil
		}
	}
	return true, nil
}

// evidenceContent reports whether b, a whole blob, is what evidence of
// media type mt holds: JSON, XML or text for signatures, attestations,
// bundles and SBOMs, COSE for notation, a delta for a delta; and never
// something a runtime unpacks or runs, whatever the label.
func evidenceContent(mt string, b []byte) bool {
	if unpackable(b) {
		return false
	}
	mt, _, _ = strings.Cut(mt, ";")
	switch strings.TrimSpace(mt) {
	case delta.MediaType:
		return delta.HasMagic(b)
	case "application/cose":
		return len(b) >= 2 && (b[0] == 0xd2 || b[0] == 0x84)
	case ocispec.MediaTypeEmptyJSON:
		return string(b) == "{}"
	case "text/spdx":
		return isText(b)
	case "application/vnd.cyclonedx+xml":
		return isText(b) && firstChar(b) == '<'
	case "application/vnd.cyclonedx":
		switch firstChar(b) {
		case '<':
			return isText(b)
		case '{':
			return isJSON(b)
		}
		return false
	}
	return isJSON(b)
}

// unpackable reports whether blob b is what a runtime would unpack as a
// layer or run: a compressed stream (as containers/image and containerd
// detect them), an executable, or a tar that Go's archive/tar (which
// podman, containerd and Docker unpack with) reads a header from.
func unpackable(b []byte) bool {
	for _, magic := range [][]byte{
		{0x1f, 0x8b},             // gzip
		{0x28, 0xb5, 0x2f, 0xfd}, // zstd
		{'B', 'Z', 'h'},          // bzip2
		{0xfd, '7', 'z', 'X', 'Z', 0x00},
		{0x7f, 'E', 'L', 'F'},
		{0x00, 'a', 's', 'm'}, // WebAssembly
	} {
		if bytes.HasPrefix(b, magic) {
			return true
		}
	}
	if len(b) >= 4 && b[0]&0xf0 == 0x50 && b[1] == 0x2a && b[2] == 0x4d && b[3] == 0x18 {
		return true // a zstd skippable frame, which containerd takes for zstd
	}
	_, err := tar.NewReader(bytes.NewReader(b)).Next()
	return err == nil
}

// isJSON reports whether b, after a byte order mark, is one JSON object or
// array and nothing else.
func isJSON(b []byte) bool {
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	c := firstChar(b)
	return (c == '{' || c == '[') && json.Valid(b)
}

// isText reports whether b has no control bytes but tabs and line breaks
// (JSON, XML and SPDX tag-value are text; a tar header or a binary is not).
func isText(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return len(b) > 0
}

// firstChar returns the first byte of b after white space and a UTF-8
// byte order mark, or 0.
func firstChar(b []byte) byte {
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return 0
	}
	return b[0]
}
