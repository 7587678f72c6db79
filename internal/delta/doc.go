// Package delta encodes the uncompressed tar of a new layer as a compact
// delta against one or more base layers the receiver already holds, and
// rebuilds the exact target bytes from the delta and the bases.
//
// The codec is tar-aware but not tar-dependent. The encoder pairs target
// entries with base entries (by content hash, path, path modulo version
// digits, then basename), finds long identical runs itself with a
// content-defined anchor index over the bases (klauspost's zstd has no
// long-distance matcher), and emits them as COPY operations. Everything else
// (tar headers, padding and changed content) goes into zstd frames whose raw
// dictionary ("patch-from") is assembled from the base byte ranges that
// correspond to it. Non-tar input still works: it is matched by anchors
// alone.
//
// Decoding streams: the output goes to an io.Writer as it is produced, bases
// are read through io.ReaderAt, and the decoder holds at most one block
// (dictionary, literals and control bytes, each bounded by Limits) in
// memory. Every operation is range-checked, the declared target size is
// enforced, and the SHA-256 of the output is compared with the header at
// the end: Decode returns an error, never nil, when anything is wrong. A
// caller must not commit the output before Decode returns nil.
//
// The format is described in docs/decisions/0007-delta-format.md.
package delta
