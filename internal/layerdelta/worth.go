package layerdelta

import "fmt"

// Minimums say which deltas are worth their overhead. A delta costs more
// than its bytes: the artifact manifest and the referrers lookup (when
// published), a negotiation or a blob request more, a round trip each over
// the site's uplink, and a rebuild (decompress the bases, decode,
// recompress, verify) at the site. Below these sizes that costs more than
// it saves, and the layer is better fetched in full.
type Minimums struct {
	// LayerSize is the smallest layer (compressed) a delta is made for.
	LayerSize int64
	// Saving is the fewest bytes a delta must save over its layer.
	Saving int64
}

// DefaultMinimums are the minimums of deltactl and of registry-edge tiers
// (deltas.minLayerSize, deltas.minSaving): 64 KiB of layer (a few round
// trips' worth of bytes on a slow uplink) and 16 KiB saved (more than the
// artifact manifest, the requests' headers and a round trip cost).
var DefaultMinimums = Minimums{LayerSize: 64 << 10, Saving: 16 << 10}

// TooSmall returns why a layer of size bytes gets no delta, or "".
func (m Minimums) TooSmall(size int64) string {
	if size < m.LayerSize {
		return fmt.Sprintf("layer of %d bytes is smaller than the %d-byte minimum for a delta", size, m.LayerSize)
	}
	return ""
}

// NotWorth returns why a delta of deltaSize bytes for a layer of size
// bytes is not worth fetching instead of the layer, or "".
func (m Minimums) NotWorth(size, deltaSize int64) string {
	if r := m.TooSmall(size); r != "" {
		return r
	}
	if deltaSize >= size {
		return fmt.Sprintf("delta of %d bytes is not smaller than the %d-byte layer", deltaSize, size)
	}
	if size-deltaSize < m.Saving {
		return fmt.Sprintf("delta of %d bytes saves %d bytes of the %d-byte layer, less than the %d-byte minimum saving", deltaSize, size-deltaSize, size, m.Saving)
	}
	return ""
}
