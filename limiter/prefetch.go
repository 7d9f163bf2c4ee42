package limiter

import "github.com/cardinal-gateway/cardinal/internal/shardsort"

// Prefetch looks up the series hashes, as the AdmitKnown calls that follow
// will, and changes nothing: it brings their entries into the processor's
// cache. Grouped by shard under one lock each, the lookups do not wait on
// one another, so their cache misses overlap (see merge.Merger.Prefetch).
// order is scratch space, returned for reuse; the number returned means
// nothing, it keeps the compiler from skipping the reads.
func (l *Limiter) Prefetch(hashes []uint64, order []int32) ([]int32, uint64) {
	order = shardsort.Group(order, hashes, numShards)
	var sink uint64
	for s, idx := range shardsort.Shards(order, numShards) {
		sh := &l.shards[s]
		sh.mu.Lock()
		for _, i := range idx {
			if p := sh.series.Ptr(hashes[i]); p != nil {
				sink += *p
			}
		}
		sh.mu.Unlock()
	}
	return order, sink
}
