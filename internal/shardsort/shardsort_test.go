package shardsort

import (
	"math/rand/v2"
	"testing"
)

// TestGroup: every index appears once, under its key's shard, in its
// original order within the shard.
func TestGroup(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var buf []int32
	for _, shards := range []int{1, 3, 64, 256} {
		for _, n := range []int{0, 1, 7, 1000} {
			keys := make([]uint64, n)
			for i := range keys {
				keys[i] = rng.Uint64()
			}
			buf = Group(buf, keys, shards)
			start, order := Split(buf, shards)
			if len(order) != n || start[0] != 0 || int(start[shards]) != n {
				t.Fatalf("%d shards, %d keys: %d indices, start %d..%d", shards, n, len(order), start[0], start[shards])
			}
			seen := make([]bool, n)
			for s := range shards {
				prev := -1
				for _, i := range order[start[s]:start[s+1]] {
					if seen[i] || int(keys[i]%uint64(shards)) != s || int(i) <= prev {
						t.Fatalf("%d shards, %d keys: index %d under shard %d (seen %v, after %d)", shards, n, i, s, seen[i], prev)
					}
					seen[i], prev = true, int(i)
				}
			}
		}
	}
}

// TestShards: the iterator yields exactly the non-empty shards of Group's
// result, in order, with their indices, and stops when asked.
func TestShards(t *testing.T) {
	keys := []uint64{5, 1, 9, 3, 13, 7}
	buf := Group(nil, keys, 4)
	start, order := Split(buf, 4)
	var got []int
	for s, idx := range Shards(buf, 4) {
		if len(idx) == 0 || &idx[0] != &order[start[s]] || len(idx) != int(start[s+1]-start[s]) {
			t.Fatalf("shard %d: indices %v, want order[%d:%d]", s, idx, start[s], start[s+1])
		}
		got = append(got, s)
	}
	if len(got) != 2 || got[0] != 1 || got[1] != 3 {
		t.Fatalf("shards %v, want [1 3] (keys %v mod 4)", got, keys)
	}
	n := 0
	for range Shards(buf, 4) {
		n++
		break
	}
	if n != 1 {
		t.Fatalf("the loop went on after break: %d", n)
	}
}
