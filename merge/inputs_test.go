package merge

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cardinal-gateway/cardinal/wire"
)

// inputSet must behave as a map from key to input through growth past the
// index threshold and into chunks, swap-removes, index drops, emptied
// chunks and compaction.
func TestInputSetAgreesWithMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for round := range 50 {
		var s inputSet
		model := map[uint64]float64{}
		for op := range 2000 {
			key := uint64(1 + rng.IntN(10+round*8))
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
				for i := range s.len() {
					if s.at(i).key == key {
						s.removeAt(i)
						delete(model, key)
						break
					}
				}
			}
			if s.len() != len(model) {
				t.Fatalf("round %d op %d: len %d, model %d", round, op, s.len(), len(model))
			}
			if s.index != nil && s.index.Len() != s.len() {
				t.Fatalf("round %d op %d: index holds %d of %d", round, op, s.index.Len(), s.len())
			}
			if want := max(0, (s.len()-listMax+chunkLen-1)/chunkLen); len(s.more) != want {
				t.Fatalf("round %d op %d: %d chunks for %d inputs, want %d", round, op, len(s.more), s.len(), want)
			}
		}
		all := s.clone()
		if len(all) != len(model) {
			t.Fatalf("round %d: clone holds %d, model %d", round, len(all), len(model))
		}
		for i, in := range all {
			if model[in.key] != in.val || *s.at(i) != in {
				t.Fatalf("round %d: clone[%d] = %+v, at = %+v, model %v", round, i, in, *s.at(i), model[in.key])
			}
		}
		for k, v := range model {
			if got := s.get(k); got == nil || got.val != v {
				t.Fatalf("round %d: key %d: %v, want %v", round, k, got, v)
			}
		}
	}
}

// noteCollapsed walks sorted label sets side by side; it must name the same
// labels as a search for each one, including for unsorted input.
func TestNoteCollapsedNamesWhatChanged(t *testing.T) {
	m, _, _ := newTestMerger(t, Rules{})
	rng := rand.New(rand.NewPCG(7, 8))
	names := []string{"__name__", "app", "instance", "le", "namespace", "pod", "request_id", "zone"}
	for range 500 {
		// Several inputs into one output: the set is the union of what
		// each collapsed.
		var mg merged
		want := map[string]bool{}
		for range 1 + rng.IntN(4) {
			var orig, out []wire.Label
			for _, n := range names {
				if rng.IntN(4) == 0 {
					continue
				}
				v := []byte{byte('a' + rng.IntN(3))}
				orig = append(orig, wire.Label{Name: []byte(n), Value: v})
				switch rng.IntN(3) {
				case 0: // dropped
					want[n] = true
				case 1: // rewritten
					out = append(out, wire.Label{Name: []byte(n), Value: []byte("z")})
					want[n] = true
				default:
					out = append(out, wire.Label{Name: []byte(n), Value: v})
				}
			}
			if rng.IntN(4) == 0 && len(out) > 1 {
				out[0], out[len(out)-1] = out[len(out)-1], out[0] // unsorted
			}
			if rng.IntN(4) == 0 && len(orig) > 1 {
				orig[0], orig[len(orig)-1] = orig[len(orig)-1], orig[0]
			}
			mg.noteCollapsed(m, orig, out)
			if len(mg.collapsed) != len(want) || !slices.IsSorted(mg.collapsed) {
				t.Fatalf("orig %v out %v: collapsed %q, want %v", orig, out, mg.collapsed, want)
			}
			for _, n := range mg.collapsed {
				if !want[n] {
					t.Fatalf("orig %v out %v: collapsed %q, want %v", orig, out, mg.collapsed, want)
				}
			}
		}
	}
}
