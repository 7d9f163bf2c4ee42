package merge

import (
	"math/rand/v2"
	"testing"
)

// inputSet must behave as a map from key to input through growth past the
// index threshold, swap-removes, index drops and compaction.
func TestInputSetAgreesWithMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for round := range 50 {
		var s inputSet
		model := map[uint64]float64{}
		for op := range 2000 {
			key := uint64(rng.IntN(40 + round))
			switch {
			case rng.IntN(3) > 0:
				if got := s.get(key); (got != nil) != (model[key] != 0) {
					t.Fatalf("round %d op %d: get(%d) = %v, model has %v", round, op, key, got, model[key])
				} else if got == nil {
					s.add(input{key: key, val: float64(op + 1)})
					model[key] = float64(op + 1)
				} else if got.val != model[key] {
					t.Fatalf("round %d op %d: key %d holds %v, want %v", round, op, key, got.val, model[key])
				}
			default:
				for i := range s.list {
					if s.list[i].key == key {
						s.removeAt(i)
						delete(model, key)
						break
					}
				}
			}
			if s.len() != len(model) {
				t.Fatalf("round %d op %d: len %d, model %d", round, op, s.len(), len(model))
			}
			if s.index != nil && len(s.index) != s.len() {
				t.Fatalf("round %d op %d: index holds %d of %d", round, op, len(s.index), s.len())
			}
		}
		for k, v := range model {
			if got := s.get(k); got == nil || got.val != v {
				t.Fatalf("round %d: key %d: %v, want %v", round, k, got, v)
			}
		}
	}
}
