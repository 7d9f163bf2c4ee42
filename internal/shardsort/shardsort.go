// Package shardsort groups the keys of a batch by the shard of a sharded
// table that holds them, so that the batch takes each shard's lock once.
package shardsort

import (
	"iter"
	"slices"
)

// Group sorts the indices of keys by shard, key % shards, keeping their
// order within a shard (a counting sort). It returns buf, reused and
// grown, laid out as start (shards+1 offsets) followed by order (the
// indices): the keys of shard s are keys[i] for i in
// order[start[s]:start[s+1]]. See Split.
func Group(buf []int32, keys []uint64, shards int) []int32 {
	buf = slices.Grow(buf[:0], shards+1+len(keys))[:shards+1+len(keys)]
	start, order := buf[:shards+1], buf[shards+1:]
	clear(start)
	for _, k := range keys {
		start[k%uint64(shards)+1]++
	}
	for i := 1; i <= shards; i++ {
		start[i] += start[i-1]
	}
	// Placing advances start[s] to the end of shard s, which is where
	// shard s+1 begins: shift the offsets up by one afterwards.
	for i, k := range keys {
		s := k % uint64(shards)
		order[start[s]] = int32(i)
		start[s]++
	}
	copy(start[1:], start[:shards])
	start[0] = 0
	return buf
}

// Shards yields, for Group's result buf, each shard that holds keys and
// the indices of its keys, in shard order: the loop a batch takes, one
// lock per shard.
func Shards(buf []int32, shards int) iter.Seq2[int, []int32] {
	return func(yield func(int, []int32) bool) {
		start, order := Split(buf, shards)
		for s := range shards {
			if start[s] == start[s+1] {
				continue
			}
			if !yield(s, order[start[s]:start[s+1]]) {
				return
			}
		}
	}
}

// Split returns the two parts of Group's result.
func Split(buf []int32, shards int) (start, order []int32) {
	return buf[:shards+1], buf[shards+1:]
}
