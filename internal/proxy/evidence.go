package proxy

import (
	"bytes"
	"context"
	"io"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/delta"
)

// evidenceHeadSize is how much of an evidence blob is read to see what it
// is: a tar header is 512 bytes.
const evidenceHeadSize = 512

// evidenceBlobs returns the blobs of evidence (descs: content.descs)
// whose first bytes are what their media type says. A
// layer is trusted as evidence by its label only if its content agrees: a
// tar labelled as a signature is unpacked by some runtimes (podman), so a
// label alone would let anyone with push access run unsigned code. all is
// false when a blob could not be read (the upstream failed): it is to be
// looked at again.
func (p *Proxy) evidenceBlobs(ctx context.Context, t Target, descs []ocispec.Descriptor) (ok []digest.Digest, all bool) {
	all = true
	for _, desc := range descs {
		var head []byte
		var err error
		if desc.Size >= 0 && desc.Size <= smallEvidence {
			// Read whole, and stored: it is about to be asked for.
			head, err = sigSource{p: p, t: t}.Blob(ctx, "", desc.Digest, smallEvidence)
		} else {
			head, err = p.blobHead(ctx, t, desc.Digest)
		}
		if err != nil {
			all = false
			continue
		}
		if evidenceContent(desc.MediaType, head[:min(len(head), evidenceHeadSize)]) {
			ok = append(ok, desc.Digest)
		}
	}
	return ok, all
}

// smallEvidence is the size up to which an evidence blob is fetched whole
// to be looked at (signatures, attestations and most SBOMs): it is stored,
// for the client about to ask for it.
const smallEvidence = 1 << 20

// blobHead returns the first bytes of blob d of t: from the store if it is
// there, else with one bounded range request.
func (p *Proxy) blobHead(ctx context.Context, t Target, d digest.Digest) ([]byte, error) {
	if rc, err := p.store.Open(ctx, d); err == nil {
		defer rc.Close()
		head := make([]byte, evidenceHeadSize)
		n, err := io.ReadFull(rc, head)
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			err = nil
		}
		return head[:n], err
	}
	head, err := t.Remote.Client.BlobRange(ctx, t.Repo.Name, d, 0, evidenceHeadSize)
	p.countUpstream(t, "blob", err)
	return head, err
}

// evidenceContent reports whether head, the first bytes of a blob, is
// what evidence of media type mt holds: JSON, XML or text for signatures,
// attestations, bundles and SBOMs, COSE for notation, a delta for a
// delta; and never an archive or an executable, whatever the label.
func evidenceContent(mt string, head []byte) bool {
	if looksExecutable(head) {
		return false
	}
	mt, _, _ = strings.Cut(mt, ";")
	switch strings.TrimSpace(mt) {
	case delta.MediaType:
		return delta.HasMagic(head)
	case "application/cose":
		return len(head) >= 2 && (head[0] == 0xd2 || head[0] == 0x84)
	case ocispec.MediaTypeEmptyJSON:
		return string(head) == "{}"
	case "text/spdx":
		return isText(head)
	case "application/vnd.cyclonedx+xml":
		return isText(head) && firstChar(head) == '<'
	case "application/vnd.cyclonedx":
		return isText(head) && (firstChar(head) == '{' || firstChar(head) == '<')
	}
	c := firstChar(head)
	return isText(head) && (c == '{' || c == '[')
}

// looksExecutable reports whether head starts a compressed stream, a tar
// archive or an executable: what a runtime would unpack or run.
func looksExecutable(head []byte) bool {
	for _, magic := range [][]byte{
		{0x1f, 0x8b},             // gzip
		{0x28, 0xb5, 0x2f, 0xfd}, // zstd
		{'B', 'Z', 'h'},          // bzip2
		{0xfd, '7', 'z', 'X', 'Z', 0x00},
		{0x7f, 'E', 'L', 'F'},
		{0x00, 'a', 's', 'm'}, // WebAssembly
	} {
		if bytes.HasPrefix(head, magic) {
			return true
		}
	}
	return isTarHeader(head)
}

// isTarHeader reports whether head starts with a tar header whose checksum
// holds (any tar format, the old v7 one without "ustar" included).
func isTarHeader(head []byte) bool {
	if len(head) < 512 {
		return false
	}
	field := strings.TrimRight(strings.TrimSpace(string(bytes.TrimRight(head[148:156], "\x00"))), "\x00 ")
	want, err := strconv.ParseInt(field, 8, 64)
	if err != nil {
		return false
	}
	var sum int64
	for i, b := range head[:512] {
		if i >= 148 && i < 156 {
			b = ' '
		}
		sum += int64(b)
	}
	return sum == want
}

// isText reports whether head has no control bytes but tabs and line
// breaks (JSON, XML and SPDX tag-value are text; a tar header or a binary
// is not).
func isText(head []byte) bool {
	for _, b := range head {
		if b < 0x20 && b != '\t' && b != '\n' && b != '\r' {
			return false
		}
	}
	return len(head) > 0
}

// firstChar returns the first byte of head after white space and a UTF-8
// byte order mark, or 0.
func firstChar(head []byte) byte {
	head = bytes.TrimPrefix(head, []byte("\xef\xbb\xbf"))
	head = bytes.TrimLeft(head, " \t\r\n")
	if len(head) == 0 {
		return 0
	}
	return head[0]
}
