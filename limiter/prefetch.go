package limiter

import "slices"

// Prefetch looks up the series hashes, as the AdmitKnown calls that follow
// will, and changes nothing: it brings their entries into the processor's
// cache. Grouped by shard under one lock each, the lookups do not wait on
// one another, so their cache misses overlap (see merge.Merger.Prefetch).
// order is scratch space, returned for reuse; the number returned means
// nothing, it keeps the compiler from skipping the reads.
func (l *Limiter) Prefetch(hashes []uint64, order []int32) ([]int32, uint64) {
	var start [numShards + 1]int32
	for _, h := range hashes {
		start[h%numShards+1]++
	}
	for i := 1; i <= numShards; i++ {
		start[i] += start[i-1]
	}
	next := start
	order = slices.Grow(order[:0], len(hashes))[:len(hashes)]
	for i, h := range hashes {
		s := h % numShards
		order[next[s]] = int32(i)
		next[s]++
	}
	var sink uint64
	for s := range numShards {
		lo, hi := start[s], start[s+1]
		if lo == hi {
			continue
		}
		sh := &l.shards[s]
		sh.mu.Lock()
		for _, i := range order[lo:hi] {
			if p := sh.series.Ptr(hashes[i]); p != nil {
				sink += *p
			}
		}
		sh.mu.Unlock()
	}
	return order, sink
}
