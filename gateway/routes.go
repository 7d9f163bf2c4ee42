package gateway

import (
	"math/bits"
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
//
// Each shard is an open-addressing table of 24-byte slots with linear
// probing, at most three quarters full and grown by half: about 40 bytes
// per route, against 84 for a Go map of the same routes, and a lookup
// updates last-seen in place.
type routeCache struct {
	shards [routeShards]routeShard
}

const routeShards = 64

type routeShard struct {
	mu    sync.Mutex
	slots []routeSlot // nil until the first put
	used  int
	// folded holds the limiter hash of the folded routes, for which it is
	// not the output hash: few, since folding is the exception.
	folded map[uint64]uint64
	gone   []uint64 // sweep's scratch
	_      [56]byte // keep shards on separate cache lines
}

// routeSlot is one cached route. in is the input hash, 0 for an empty slot
// (an input hashing to 0 is never cached); meta packs the configuration
// generation (31 bits), the folded flag and the last-seen second.
type routeSlot struct {
	in, out, meta uint64
}

func (sl routeSlot) route(limiterHash uint64) route {
	return route{limiterHash: limiterHash, outHash: sl.out, genFolded: uint32(sl.meta >> 32), seen: uint32(sl.meta)}
}

func slotOf(in uint64, r route) routeSlot {
	return routeSlot{in: in, out: r.outHash, meta: uint64(r.genFolded)<<32 | uint64(r.seen)}
}

// home is where in's probe starts: the high bits of in scaled to n (the
// low ones chose the shard).
func home(in uint64, n int) int {
	hi, _ := bits.Mul64(in, uint64(n))
	return int(hi)
}

// find returns the slot of in, or the empty slot where it would go, and
// whether it is there. The table must not be full.
func (sh *routeShard) find(in uint64) (int, bool) {
	n := len(sh.slots)
	for i := home(in, n); ; {
		switch sh.slots[i].in {
		case in:
			return i, true
		case 0:
			return i, false
		}
		if i++; i == n {
			i = 0
		}
	}
}

// resize rehashes the routes into a table of n slots.
func (sh *routeShard) resize(n int) {
	old := sh.slots
	sh.slots = make([]routeSlot, n)
	for _, sl := range old {
		if sl.in != 0 {
			i, _ := sh.find(sl.in)
			sh.slots[i] = sl
		}
	}
}

// remove empties slot i and moves later routes of its probe run back, so
// that no lookup stops at the hole (no tombstones).
func (sh *routeShard) remove(i int) {
	n := len(sh.slots)
	for j := i; ; {
		if j++; j == n {
			j = 0
		}
		sl := sh.slots[j]
		if sl.in == 0 {
			break
		}
		// The route at j may fill the hole if the hole lies between its
		// home and j, cyclically.
		if (j-home(sl.in, n)+n)%n >= (j-i+n)%n {
			sh.slots[i] = sl
			i = j
		}
	}
	sh.slots[i] = routeSlot{}
	sh.used--
}

func newRouteCache() *routeCache { return &routeCache{} }

func (c *routeCache) get(in uint64, now uint32) (route, bool) {
	if in == 0 {
		return route{}, false
	}
	sh := &c.shards[in%routeShards]
	sh.mu.Lock()
	if sh.slots == nil {
		sh.mu.Unlock()
		return route{}, false
	}
	i, ok := sh.find(in)
	if !ok {
		sh.mu.Unlock()
		return route{}, false
	}
	sl := &sh.slots[i]
	// last-seen only feeds the sweep, which is coarse: refreshing it every
	// seenStep seconds instead of on every scrape keeps the cache line
	// clean. An entry may go up to seenStep early: a cache miss, never a
	// wrong route.
	if now-uint32(sl.meta) >= seenStep {
		sl.meta = sl.meta&^0xffffffff | uint64(now)
	}
	limiterHash := sl.out
	if sl.meta&(1<<32) != 0 {
		limiterHash = sh.folded[in]
	}
	r := sl.route(limiterHash)
	sh.mu.Unlock()
	return r, true
}

// seenStep is how stale an entry's seen may get, in seconds.
const seenStep = 16

func (c *routeCache) put(in uint64, r route) {
	if in == 0 {
		return
	}
	sh := &c.shards[in%routeShards]
	sh.mu.Lock()
	if sh.slots == nil {
		sh.slots = make([]routeSlot, 8)
	}
	i, ok := sh.find(in)
	if !ok {
		if (sh.used+1)*4 > len(sh.slots)*3 {
			sh.resize(len(sh.slots) + len(sh.slots)/2)
			i, _ = sh.find(in)
		}
		sh.used++
	}
	sh.slots[i] = slotOf(in, r)
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
	if in == 0 {
		return
	}
	sh := &c.shards[in%routeShards]
	sh.mu.Lock()
	if sh.slots != nil {
		if i, ok := sh.find(in); ok {
			sh.remove(i)
		}
	}
	delete(sh.folded, in)
	sh.mu.Unlock()
}

// clear forgets everything, when the rules that produced the routes change.
func (c *routeCache) clear() {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.slots, sh.used, sh.folded = nil, 0, nil
		sh.mu.Unlock()
	}
}

// sweep drops the entries not used for maxAge seconds. A large shard left
// mostly empty is rebuilt at a size fit for the rest, so that the memory of
// a burst of series is given back; otherwise shards keep their size.
func (c *routeCache) sweep(now, maxAge uint32) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		// Removing moves routes back along their probe runs, which would
		// make the loop miss or revisit some: note the inputs, remove
		// after.
		gone := sh.gone[:0]
		for _, sl := range sh.slots {
			if sl.in != 0 && int64(int32(now-uint32(sl.meta))) > int64(maxAge) {
				gone = append(gone, sl.in)
			}
		}
		for _, in := range gone {
			if j, ok := sh.find(in); ok {
				sh.remove(j)
			}
			delete(sh.folded, in)
		}
		sh.gone = gone[:0]
		if cap(sh.gone) > 1024 && cap(sh.gone) > len(sh.slots) {
			sh.gone = nil
		}
		if sh.used == 0 {
			sh.slots = nil
		} else if len(sh.slots) >= 4096 && sh.used*8 < len(sh.slots) {
			sh.resize(max(8, sh.used*3/2))
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
		n += sh.used
		sh.mu.Unlock()
	}
	return n
}

// route is what the cache knows of an input.
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
