package merge

import "github.com/cardinal-gateway/cardinal/internal/shardsort"

// Prefetch looks up the state of the outputs outs[i] fed by the inputs
// ins[i] (the same length), as the RouteKnown or PassKnown calls that
// follow will, and changes nothing: it brings that state into the
// processor's cache. Grouped by shard under one lock each, the lookups do
// not wait on one another, so their cache misses overlap, where one call
// per series would take them one after another (the merger's state of a
// large mesh is far larger than the cache, and nearly every lookup
// misses). order is scratch space, returned for reuse. The number returned
// means nothing: it uses what was read, so that the compiler cannot skip
// the reads.
func (m *Merger) Prefetch(ins, outs []uint64, order []int32) ([]int32, uint64) {
	order = shardsort.Group(order, outs, numShards)
	var sink uint64
	for s, idx := range shardsort.Shards(order, numShards) {
		sh := &m.shards[s]
		sh.mu.Lock()
		for _, i := range idx {
			o := sh.outputs.get(outs[i])
			if o == nil {
				continue
			}
			sink += o.input
			if o.m != nil {
				if ip := o.m.inputs.get(ins[i]); ip != nil {
					sink += ip.key
				}
			}
		}
		sh.mu.Unlock()
	}
	return order, sink
}
