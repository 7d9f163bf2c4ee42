package gateway

import (
	"sync"
)

// routeCache remembers, for an input series the merger absorbs, where it
// goes: its output identity before and after the limiter. A known input is
// then absorbed without relabeling it or hashing its output, which is most
// of the per-series cost when labels are dropped and series collapse. An
// entry is only a hint: the limiter and the merger confirm it on every use
// (AdmitKnown, RouteKnown), and the full path runs whenever they do not.
// The cache is emptied when the configuration changes, and entries not used
// for the merge staleness period are swept.
type routeCache struct {
	shards [routeShards]routeShard
}

const routeShards = 64

type routeShard struct {
	mu sync.Mutex
	m  map[uint64]route
	_  [48]byte // keep shards on separate cache lines
}

// route is 24 bytes, so that a cached input costs about 60 bytes of map.
type route struct {
	limiterHash uint64 // the output before folding: the limiter's key, and trace sampling's
	outHash     uint64 // the merged output the input feeds
	// genFolded is the configuration generation the route was computed
	// with, shifted left by one, and whether the limiter folds the input.
	genFolded uint32
	seen      uint32 // limiter clock seconds
}

func newRoute(gen uint64, limiterHash, outHash uint64, seen uint32, folded bool) route {
	r := route{limiterHash: limiterHash, outHash: outHash, genFolded: uint32(gen) << 1, seen: seen}
	if folded {
		r.genFolded |= 1
	}
	return r
}

func (r route) folded() bool { return r.genFolded&1 != 0 }

// current reports whether the route was computed with configuration gen.
func (r route) current(gen uint64) bool { return r.genFolded>>1 == uint32(gen)&(1<<31-1) }

func newRouteCache() *routeCache {
	c := &routeCache{}
	for i := range c.shards {
		c.shards[i].m = map[uint64]route{}
	}
	return c
}

func (c *routeCache) get(in uint64, now uint32) (route, bool) {
	sh := &c.shards[in%routeShards]
	sh.mu.Lock()
	r, ok := sh.m[in]
	// Writing seen back is a second map operation; it only feeds the
	// sweep, which is coarse, so it is refreshed every seenStep seconds
	// instead of on every scrape. An entry may go up to seenStep early:
	// a cache miss, never a wrong route.
	if ok && now-r.seen >= seenStep {
		r.seen = now
		sh.m[in] = r
	}
	sh.mu.Unlock()
	return r, ok
}

// seenStep is how stale an entry's seen may get, in seconds.
const seenStep = 16

func (c *routeCache) put(in uint64, r route) {
	sh := &c.shards[in%routeShards]
	sh.mu.Lock()
	sh.m[in] = r
	sh.mu.Unlock()
}

func (c *routeCache) del(in uint64) {
	sh := &c.shards[in%routeShards]
	sh.mu.Lock()
	delete(sh.m, in)
	sh.mu.Unlock()
}

// clear forgets everything, when the rules that produced the routes change.
func (c *routeCache) clear() {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		clear(sh.m)
		sh.mu.Unlock()
	}
}

// sweep drops the entries not used for maxAge seconds.
func (c *routeCache) sweep(now, maxAge uint32) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for k, r := range sh.m {
			if int64(int32(now-r.seen)) > int64(maxAge) {
				delete(sh.m, k)
			}
		}
		sh.mu.Unlock()
	}
}

// len returns the number of entries.
func (c *routeCache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
