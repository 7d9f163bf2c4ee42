package gateway

import (
	"slices"
	"sync"

	"github.com/cardinal-gateway/cardinal/internal/shardsort"
	"github.com/cardinal-gateway/cardinal/internal/u64table"
)

// routeCache remembers, for an input series the merger absorbs, where it
// goes: its output identity before and after the limiter. A known input is
// then absorbed without relabeling it or hashing its output, which is most
// of the per-series cost when labels are dropped and series collapse. An
// entry is only a hint: the limiter and the merger confirm it on every use
// (AdmitKnown, RouteKnown), and the full path runs whenever they do not.
// The cache is emptied when the configuration changes, and entries not used
// for the merge staleness period are swept.
//
// Each shard is an open-addressing table (internal/u64table) of 24-byte
// slots: about 40 bytes per route, against 68 for a Go map of the same
// routes, and a lookup updates last-seen in place.
type routeCache struct {
	shards [routeShards]routeShard
}

const routeShards = 64

type routeShard struct {
	mu     sync.Mutex
	routes u64table.Table[routeVal]
	// folded holds the limiter hash of the folded routes, for which it is
	// not the output hash: few, since folding is the exception.
	folded map[uint64]uint64
	// drops counts the routes of dropped inputs (newDropRoute). Unlike
	// the others, nothing else tracks those inputs and bounds them: past
	// maxDropRoutes a shard stops taking them, and the rules run again.
	drops int
	_     [24]byte // keep shards on separate cache lines (128 bytes)
}

// maxDropRoutes bounds each shard's routes of dropped inputs: 256 k in
// all, about 10 MB, for dropped families that churn.
const maxDropRoutes = 4096

// routeVal is one cached route: the output hash, and meta packing the
// route's genFolded (high half) and the last-seen second.
type routeVal struct {
	out, meta uint64
}

func (v routeVal) route(limiterHash uint64) route {
	return route{limiterHash: limiterHash, outHash: v.out, genFolded: uint32(v.meta >> 32), seen: uint32(v.meta)}
}

func valOf(r route) routeVal {
	return routeVal{out: r.outHash, meta: uint64(r.genFolded)<<32 | uint64(r.seen)}
}

func newRouteCache() *routeCache { return &routeCache{} }

// lookup looks one input up under sh.mu (see getAll).
func (sh *routeShard) lookup(in uint64, now uint32) (route, bool) {
	v := sh.routes.Ptr(in)
	if v == nil {
		return route{}, false
	}
	limiterHash := v.out
	if v.meta&(1<<32) != 0 {
		limiterHash = sh.folded[in]
	}
	// The route as it was: its seen is the last-seen second before this
	// lookup (see limiterDue).
	r := v.route(limiterHash)
	// last-seen only feeds the sweep, which is coarse: refreshing it every
	// seenStep seconds instead of on every scrape keeps the cache line
	// clean. An entry may go up to seenStep early: a cache miss, never a
	// wrong route.
	if now-uint32(v.meta) >= seenStep {
		v.meta = v.meta&^0xffffffff | uint64(now)
	}
	return r, true
}

// cachedRoute is one answer of getAll.
type cachedRoute struct {
	r  route
	ok bool
}

// getAll looks up every input of ins as get does: out[i] is what get(ins[i])
// returns, out grown to len(ins). It takes each shard's lock once, not once
// per input, and the lookups under one lock do not depend on one another,
// so that the processor overlaps their cache misses: with hundreds of
// thousands of routes, nearly every lookup is one. order is scratch space;
// both slices are returned for reuse.
func (c *routeCache) getAll(ins []uint64, now uint32, out []cachedRoute, order []int32) ([]cachedRoute, []int32) {
	order = shardsort.Group(order, ins, routeShards)
	out = slices.Grow(out[:0], len(ins))[:len(ins)]
	for s, idx := range shardsort.Shards(order, routeShards) {
		sh := &c.shards[s]
		sh.mu.Lock()
		for _, i := range idx {
			out[i].r, out[i].ok = sh.lookup(ins[i], now)
		}
		sh.mu.Unlock()
	}
	return out, order
}

// seenStep is how stale an entry's seen may get, in seconds.
const seenStep = 16

func (c *routeCache) put(in uint64, r route) {
	sh := &c.shards[in%routeShards]
	sh.mu.Lock()
	p, existed := sh.routes.Upsert(in)
	if existed && p.route(0).dropped() {
		sh.drops--
	}
	if r.dropped() {
		if sh.drops >= maxDropRoutes {
			sh.routes.Delete(in)
			sh.mu.Unlock()
			return
		}
		sh.drops++
	}
	*p = valOf(r)
	if r.folded() {
		if sh.folded == nil {
			sh.folded = map[uint64]uint64{}
		}
		sh.folded[in] = r.limiterHash
	} else if sh.folded != nil {
		delete(sh.folded, in)
	}
	sh.mu.Unlock()
}

func (c *routeCache) del(in uint64) {
	sh := &c.shards[in%routeShards]
	sh.mu.Lock()
	if p := sh.routes.Ptr(in); p != nil && p.route(0).dropped() {
		sh.drops--
	}
	sh.routes.Delete(in)
	delete(sh.folded, in)
	sh.mu.Unlock()
}

// clear forgets everything, when the rules that produced the routes change.
func (c *routeCache) clear() {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.routes.Clear()
		sh.folded = nil
		sh.drops = 0
		sh.mu.Unlock()
	}
}

// sweep drops the entries not used for maxAge seconds (a large shard left
// mostly empty gives its memory back, see u64table.Table.Sweep).
func (c *routeCache) sweep(now, maxAge uint32) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.routes.Sweep(func(in uint64, v routeVal) bool {
			if int64(int32(now-uint32(v.meta))) <= int64(maxAge) {
				return true
			}
			if v.route(0).dropped() {
				sh.drops--
			}
			delete(sh.folded, in)
			return false
		})
		sh.mu.Unlock()
	}
}

// len returns the number of entries.
func (c *routeCache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += sh.routes.Len()
		sh.mu.Unlock()
	}
	return n
}

// route is what the cache knows of an input.
type route struct {
	limiterHash uint64 // the output before folding: the limiter's key, and trace sampling's
	outHash     uint64 // the merged output the input feeds
	// genFolded is the configuration generation the route was computed
	// with, shifted left by five; whether the relabel rules drop the
	// input (bit 4); whether it carries a trace-id label (bit 3); whether
	// it is the single input of its output and the rules leave its labels
	// as they are (bit 2: it passes through as it came); whether it goes
	// to another replica of the cluster (bit 1: outHash is then the
	// owner's index in the view); and whether the limiter folds it
	// (bit 0).
	genFolded uint32
	seen      uint32 // limiter clock seconds
}

func newRoute(gen uint64, limiterHash, outHash uint64, seen uint32, folded bool) route {
	r := route{limiterHash: limiterHash, outHash: outHash, genFolded: uint32(gen) << 5, seen: seen}
	if folded {
		r.genFolded |= 1
	}
	return r
}

// newPeerRoute is the route of an input another replica owns: owner is
// its index in the view of generation gen.
func newPeerRoute(gen uint64, owner int, seen uint32) route {
	return route{outHash: uint64(owner), genFolded: uint32(gen)<<5 | 2, seen: seen}
}

// newPassRoute is the route of an input that passes through unchanged:
// the single input of output out, its labels untouched by the rules.
func newPassRoute(gen uint64, out uint64, seen uint32) route {
	return route{limiterHash: out, outHash: out, genFolded: uint32(gen)<<5 | 4, seen: seen}
}

// newDropRoute is the route of an input the relabel rules drop.
func newDropRoute(gen uint64, seen uint32) route {
	return route{genFolded: uint32(gen)<<5 | 16, seen: seen}
}

// pass reports whether the input passes through as it came.
func (r route) pass() bool { return r.genFolded&4 != 0 }

func (r route) folded() bool { return r.genFolded&1 != 0 }

// peer reports whether the input goes to the replica of index outHash.
func (r route) peer() bool { return r.genFolded&2 != 0 }

// current reports whether the route was computed with configuration gen.
func (r route) current(gen uint64) bool { return r.genFolded>>5 == uint32(gen)&(1<<27-1) }

// dropped reports whether the relabel rules drop the input.
func (r route) dropped() bool { return r.genFolded&16 != 0 }

// withTrace returns r marked as the route of an input that carries a
// trace-id label. Its labels are what the route cache keys, so an input
// without the mark has none: trace sampling need not decode its labels.
func (r route) withTrace() route {
	r.genFolded |= 8
	return r
}

// traced reports whether the input carries a trace-id label.
func (r route) traced() bool { return r.genFolded&8 != 0 }
