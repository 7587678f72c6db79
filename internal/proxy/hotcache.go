package proxy

import (
	"container/list"
	"sync"

	"github.com/opencontainers/go-digest"
)

// Small verified content (manifests, configs, small layers) is also kept in
// memory: serving a 4 KiB blob from a file costs an open, an fstat, an fcntl
// and a close, which is about as much as the rest of the request. Content
// is immutable and enters only after it was verified and committed, so a
// cached copy can never disagree with the store.
const (
	hotItemMax  = 64 << 10 // larger blobs are served from their file
	hotTotalMax = 32 << 20 // bound on the memory the cache may hold
)

// hotCache is a byte-bounded LRU of small content by digest.
type hotCache struct {
	mu    sync.Mutex
	ll    *list.List
	items map[digest.Digest]*list.Element
	size  int
	max   int
	// removals counts remove calls: content read from the store enters
	// only if none happened since before the read (epoch), or a read
	// racing its eviction would put evicted content back for good.
	removals uint64
}

type hotEntry struct {
	d digest.Digest
	b []byte
}

func newHotCache(max int) *hotCache {
	return &hotCache{ll: list.New(), items: map[digest.Digest]*list.Element{}, max: max}
}

func (c *hotCache) get(d digest.Digest) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[d]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*hotEntry).b, true
}

// epoch is to be taken before reading content from the store, for add.
func (c *hotCache) epoch() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.removals
}

// add keeps b, the content of d read from the store since epoch, unless
// something was removed since then (it may have been d).
func (c *hotCache) add(d digest.Digest, b []byte, epoch uint64) {
	if len(b) > hotItemMax || len(b) > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[d]; ok || c.removals != epoch {
		return
	}
	c.items[d] = c.ll.PushFront(&hotEntry{d: d, b: b})
	c.size += len(b)
	for c.size > c.max {
		last := c.ll.Back()
		ent := last.Value.(*hotEntry)
		c.ll.Remove(last)
		delete(c.items, ent.d)
		c.size -= len(ent.b)
	}
}

// remove drops d; eviction from the store must call it.
func (c *hotCache) remove(d digest.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removals++
	if e, ok := c.items[d]; ok {
		c.ll.Remove(e)
		delete(c.items, d)
		c.size -= len(e.Value.(*hotEntry).b)
	}
}

// linkCacheMax bounds the in-memory copy of repository links (about 150
// bytes each); when it fills, it starts over, and lookups fall back to the
// metadata store.
const linkCacheMax = 1 << 16

// linkCache remembers (repository, digest) links already confirmed, so a
// cache hit does not need a metadata read. Eviction clears it.
type linkCache struct {
	mu sync.RWMutex
	m  map[string]struct{}
}

func newLinkCache() *linkCache { return &linkCache{m: map[string]struct{}{}} }

func (c *linkCache) has(key string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.m[key]
	return ok
}

func (c *linkCache) add(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= linkCacheMax {
		c.m = map[string]struct{}{}
	}
	c.m[key] = struct{}{}
}

func (c *linkCache) clear() {
	c.mu.Lock()
	c.m = map[string]struct{}{}
	c.mu.Unlock()
}
