// Package recipe finds and replays the exact compression of a layer blob.
//
// A layer's digest covers its compressed bytes
// (https://github.com/opencontainers/image-spec/blob/v1.1.1/descriptor.md#digests),
// but registry-edge computes deltas on the uncompressed tar. To serve a layer
// rebuilt from a delta, the receiver must recompress the tar to exactly the
// original bytes. Neither gzip (RFC 1952) nor zstd (RFC 8878) fixes the
// compressed form of a given input: it depends on the encoder, its version,
// its level and its settings. Detect finds, among the encoders that container
// tools really use, one that reproduces a blob, and returns it as a Recipe;
// Rebuild replays a Recipe on a tar.
//
// A Recipe is only as good as the encoder code that produced it, so it records
// an encoder generation, and Recipe.Reproducible says whether this binary's
// encoders belong to it. Callers verify the rebuilt blob's digest in any case
// and fall back to a full fetch when it does not match.
//
// What reproduces what: compress/gzip's output changed in Go 1.8 and
// changes again in Go 1.27 (issue #5; the tests check Go 1.26 against crane
// built with Go 1.26), so layers of Docker, BuildKit, containerd and
// go-containerregistry (crane, ko) rebuild with a toolchain of the same
// generation. klauspost/compress's output changes between releases: on one
// tar, measured, its deflate differs between 1.15.12 and 1.18.4 (1.18.4,
// 1.19.2 and 1.20.3 agree) and its zstd differs between 1.15.12, 1.18.4
// (= 1.19.2) and 1.20.3. So layers made by podman, buildah or skopeo
// rebuild only when this binary links the klauspost/compress release the
// tool was built with: Debian 12's skopeo 1.9.3 (klauspost/compress 1.15.12,
// pgzip 1.2.5) is reproduced by those versions, and by this package's only
// when their outputs happen to agree on the layer (they do on some tars,
// not on others).
// Encoders outside the candidates (GNU gzip's zlib, the reference zstd,
// pigz, eStargz, zstd:chunked, multi-member gzip) have no recipe.
package recipe

import (
	"bytes"
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// Format is the container format of a layer blob.
type Format string

// Formats of layer blobs.
const (
	// FormatNone is an uncompressed tar; Rebuild copies it.
	FormatNone Format = "none"
	// FormatGzip is a single gzip member (RFC 1952).
	FormatGzip Format = "gzip"
	// FormatZstd is a single zstd frame (RFC 8878).
	FormatZstd Format = "zstd"
)

// Encoder names an encoder implementation by its Go import path.
type Encoder string

// Encoders that Detect tries and Rebuild replays.
const (
	// EncoderGoGzip is the standard library's compress/gzip, used by Docker,
	// BuildKit, containerd and go-containerregistry (crane, ko).
	EncoderGoGzip Encoder = "compress/gzip"
	// EncoderPgzip is github.com/klauspost/pgzip, used by containers/image
	// (podman, buildah, skopeo).
	EncoderPgzip Encoder = "github.com/klauspost/pgzip"
	// EncoderKlauspostGzip is github.com/klauspost/compress/gzip.
	EncoderKlauspostGzip Encoder = "github.com/klauspost/compress/gzip"
	// EncoderZstd is github.com/klauspost/compress/zstd, used by
	// containers/image, containerd, BuildKit and go-containerregistry.
	EncoderZstd Encoder = "github.com/klauspost/compress/zstd"
)

// Versions of the encoder modules linked into this binary. Test binaries carry
// no dependency versions in their build info, so these are constants, and
// TestModuleVersions fails when go.mod no longer agrees with them.
const (
	klauspostCompressVersion = "v1.20.3"
	pgzipVersion             = "v1.3.0"
)

// DefaultPgzipBlockSize is pgzip's default block size (1 MiB), which
// containers/image never changes. pgzip compresses each block on its own,
// with the previous block's last 16 KiB as dictionary, and ends it with a
// sync flush, so the block size shapes the output.
const DefaultPgzipBlockSize = 1 << 20

// pgzipTailSize is the dictionary pgzip gives each block: the last bytes of
// the block before it.
const pgzipTailSize = 16 << 10

// Limits on recipes, which arrive from the network inside deltas.
const (
	// maxHeaderSize bounds a gzip member header: 10 fixed bytes, an extra
	// field of at most 65535 bytes, a name and a comment.
	maxHeaderSize = 128 << 10
	// minPgzipBlockSize is the smallest block pgzip accepts, one byte more
	// than its dictionary.
	minPgzipBlockSize = pgzipTailSize + 1
	// maxPgzipBlockSize bounds the memory Rebuild gives pgzip, which holds
	// about three BlockSize buffers per block in flight.
	maxPgzipBlockSize = 16 << 20
	// maxZstdFirstBlock is zstd's largest block (128 KiB).
	maxZstdFirstBlock = 128 << 10
)

// Recipe says how a layer blob was compressed, precisely enough to compress
// its tar again to the same bytes. It is small and JSON-serialisable, so that
// it can travel with a delta. Its zero value is not valid.
type Recipe struct {
	// Format is the blob's format.
	Format Format `json:"format"`
	// Encoder is the encoder that reproduces the blob; empty for FormatNone.
	Encoder Encoder `json:"encoder,omitempty"`
	// Version is the Go toolchain (for compress/gzip) or module version of the
	// encoder that detected the recipe. It is informational: Generation
	// decides compatibility.
	Version string `json:"version,omitempty"`
	// Generation identifies the encoder code whose output the recipe
	// reproduces: "go-deflate-1.8" for compress/gzip from Go 1.8 to Go 1.26,
	// or the klauspost module versions. Reproducible compares it with this
	// binary's.
	Generation string `json:"generation,omitempty"`
	// Level is the encoder's level as its API takes it: -1 is the default
	// (compress/flate level 6, klauspost/compress/flate level 5); for zstd
	// it is a zstd level that zstd.EncoderLevelFromZstd maps (1 fastest,
	// 3 default, 7 better, 11 best).
	Level int `json:"level"`
	// BlockSize is pgzip's block size; zero for other encoders. pgzip's
	// concurrency and zstd's do not change their output, so neither is
	// recorded.
	BlockSize int `json:"blockSize,omitempty"`
	// FirstBlock, for zstd, is the length of a short first block, or zero.
	// containers/image sniffs the first 8 bytes of a layer to detect its
	// compression and replays them with io.MultiReader, so the encoder gets
	// them in one Write and the rest through ReadFrom, which compresses
	// what it holds as a block of its own before reading on.
	FirstBlock int `json:"firstBlock,omitempty"`
	// Header is the blob's gzip member header (RFC 1952 section 2.3) verbatim:
	// flags, mtime, extra flags, OS byte, extra field, name, comment and
	// header CRC. Encoders write their own header, which Rebuild replaces by
	// this one.
	Header []byte `json:"header,omitempty"`
}

// String describes the recipe for tables and logs, e.g.
// "gzip compress/gzip level -1", or "uncompressed" for a layer stored as a
// plain tar (format none: "none" read as no recipe at all).
func (r Recipe) String() string {
	switch {
	case r.Format == FormatNone:
		return "uncompressed"
	case r.Format == "":
		return ""
	case r.BlockSize != 0:
		return fmt.Sprintf("%s %s level %d block %d", r.Format, r.Encoder, r.Level, r.BlockSize)
	case r.FirstBlock != 0:
		return fmt.Sprintf("%s %s level %d first block %d", r.Format, r.Encoder, r.Level, r.FirstBlock)
	default:
		return fmt.Sprintf("%s %s level %d", r.Format, r.Encoder, r.Level)
	}
}

// Validate checks that r is well formed. It does not say whether this binary
// can reproduce it: see Reproducible. Errors wrap errdef.ErrInvalid.
func (r Recipe) Validate() error {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("recipe: "+format+": %w", append(args, errdef.ErrInvalid)...)
	}
	switch r.Format {
	case FormatNone:
		if r.Encoder != "" || r.Generation != "" || r.Level != 0 || r.BlockSize != 0 || r.FirstBlock != 0 || len(r.Header) != 0 {
			return invalid("format none takes no encoder settings")
		}
		return nil
	case FormatGzip:
		switch r.Encoder {
		case EncoderGoGzip, EncoderKlauspostGzip, EncoderPgzip:
		default:
			return invalid("encoder %q cannot write gzip", r.Encoder)
		}
		// -2 is HuffmanOnly in compress/flate and ConstantCompression in
		// klauspost/compress/flate; klauspost's stateless level (-3) is
		// left out because its output depends on the size of each write.
		if r.Level < -2 || r.Level > 9 {
			return invalid("gzip level %d out of range [-2, 9]", r.Level)
		}
		if r.Encoder == EncoderPgzip {
			if r.BlockSize < minPgzipBlockSize || r.BlockSize > maxPgzipBlockSize {
				return invalid("pgzip block size %d out of range [%d, %d]", r.BlockSize, minPgzipBlockSize, maxPgzipBlockSize)
			}
		} else if r.BlockSize != 0 {
			return invalid("block size set for %s", r.Encoder)
		}
		if r.FirstBlock != 0 {
			return invalid("first block set for gzip")
		}
		if len(r.Header) > maxHeaderSize {
			return invalid("gzip header of %d bytes exceeds %d", len(r.Header), maxHeaderSize)
		}
		br := bytes.NewReader(r.Header)
		h, err := readGzipHeader(br, maxHeaderSize)
		if err != nil {
			return fmt.Errorf("recipe: %w", err)
		}
		if len(h) != len(r.Header) {
			return invalid("%d bytes after the gzip header", len(r.Header)-len(h))
		}
	case FormatZstd:
		if r.Encoder != EncoderZstd {
			return invalid("encoder %q cannot write zstd", r.Encoder)
		}
		if r.Level < 1 || r.Level > 22 {
			return invalid("zstd level %d out of range [1, 22]", r.Level)
		}
		if r.BlockSize != 0 || len(r.Header) != 0 {
			return invalid("zstd takes no block size or gzip header")
		}
		if r.FirstBlock < 0 || r.FirstBlock > maxZstdFirstBlock {
			return invalid("zstd first block %d out of range [0, %d]", r.FirstBlock, maxZstdFirstBlock)
		}
	default:
		return invalid("unknown format %q", r.Format)
	}
	if r.Generation == "" {
		return invalid("no encoder generation")
	}
	return nil
}

// Reproducible reports whether this binary's encoders produce the output r
// describes: it returns nil if r is valid and its Generation is this binary's
// for r.Encoder, and an error wrapping errdef.ErrUnsupported if the encoder
// code differs (callers then fall back to a full fetch), or errdef.ErrInvalid
// if r is malformed.
func (r Recipe) Reproducible() error {
	if err := r.Validate(); err != nil {
		return err
	}
	if r.Format == FormatNone {
		return nil
	}
	have := generation(r.Encoder)
	if have == "" {
		return fmt.Errorf("recipe %s: generation of this binary's encoder unknown: %w", r, errdef.ErrUnsupported)
	}
	if r.Generation != have {
		return fmt.Errorf("recipe %s: made by generation %s, this binary has %s: %w", r, r.Generation, have, errdef.ErrUnsupported)
	}
	return nil
}

// generation returns the generation of this binary's encoder e, or "" if it
// is unknown.
func generation(e Encoder) string {
	switch e {
	case EncoderGoGzip:
		return goDeflateGeneration(runtime.Version())
	case EncoderKlauspostGzip, EncoderZstd:
		return "github.com/klauspost/compress@" + klauspostCompressVersion
	case EncoderPgzip:
		return "github.com/klauspost/pgzip@" + pgzipVersion + "+github.com/klauspost/compress@" + klauspostCompressVersion
	}
	return ""
}

// encoderVersion returns the version recorded in Recipe.Version for e.
func encoderVersion(e Encoder) string {
	switch e {
	case EncoderGoGzip:
		return runtime.Version()
	case EncoderKlauspostGzip, EncoderZstd:
		return klauspostCompressVersion
	case EncoderPgzip:
		return pgzipVersion
	}
	return ""
}

// goDeflateGeneration maps a Go version string (runtime.Version(): "go1.26.8",
// "go1.27rc1", "devel go1.27-abcdef Tue ...") to the generation of its
// compress/flate output. The output last changed in Go 1.8 (new matcher and
// level 1) and changes again in Go 1.27. Releases after 1.27 are each their
// own generation until someone has checked that they write the same bytes
// and extended this table: an unneeded full fetch costs less than a wasted
// delta. It returns "" for a string it cannot parse.
func goDeflateGeneration(v string) string {
	v = strings.TrimPrefix(v, "devel ")
	rest, ok := strings.CutPrefix(v, "go1.")
	if !ok {
		return ""
	}
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	minor, err := strconv.Atoi(rest[:end])
	if err != nil {
		return ""
	}
	switch {
	case minor < 8:
		return "go-deflate-1.0"
	case minor <= 26:
		return "go-deflate-1.8"
	default:
		return "go-deflate-1." + strconv.Itoa(minor)
	}
}
