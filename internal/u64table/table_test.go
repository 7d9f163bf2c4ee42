package u64table

import (
	"math/rand/v2"
	"runtime"
	"testing"
)

// Table must behave as a map through growth, deletions (with their
// backward shifts), in-place updates, sweeps, clears and the key 0.
func TestTableAgreesWithMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, keys := range []int{3, 50, 5000} {
		var tb Table[uint64]
		model := map[uint64]uint64{}
		for op := range 100_000 {
			k := uint64(rng.IntN(keys)) // small keys: 0 included, homes collide
			switch x := rng.IntN(100); {
			case x < 40:
				v := rng.Uint64()
				tb.Put(k, v)
				model[k] = v
			case x < 45:
				if p := tb.Ptr(k); p != nil {
					*p++
					model[k]++
				}
			case x < 50:
				p, existed := tb.Upsert(k)
				_, wok := model[k]
				if existed != wok || existed && *p != model[k] || !existed && *p != 0 {
					t.Fatalf("keys %d op %d: Upsert(%d) = %d %v, want %d %v", keys, op, k, *p, existed, model[k], wok)
				}
				*p += 7
				model[k] += 7
			case x < 85:
				got, ok := tb.Get(k)
				want, wok := model[k]
				if ok != wok || got != want {
					t.Fatalf("keys %d op %d: Get(%d) = %d %v, want %d %v", keys, op, k, got, ok, want, wok)
				}
			case x < 98:
				tb.Delete(k)
				delete(model, k)
			case x < 99:
				removed := tb.Sweep(func(k, v uint64) bool { return v%3 != 0 })
				n := 0
				for mk, mv := range model {
					if mv%3 == 0 {
						delete(model, mk)
						n++
					}
				}
				if removed != n {
					t.Fatalf("keys %d op %d: Sweep removed %d, want %d", keys, op, removed, n)
				}
			default:
				if rng.IntN(20) == 0 {
					tb.Clear()
					clear(model)
				}
			}
			if tb.Len() != len(model) {
				t.Fatalf("keys %d op %d: Len %d, want %d", keys, op, tb.Len(), len(model))
			}
		}
		seen := map[uint64]uint64{}
		tb.Range(func(k, v uint64) bool { seen[k] = v; return true })
		if len(seen) != len(model) {
			t.Fatalf("keys %d: Range saw %d entries, want %d", keys, len(seen), len(model))
		}
		for k, v := range model {
			if seen[k] != v {
				t.Fatalf("keys %d: Range gave %d=%d, want %d", keys, k, seen[k], v)
			}
		}
	}
}

func TestTableDoesNotAllocateOnUpdate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under -race")
	}
	var tb Table[uint64]
	for k := range uint64(1000) {
		tb.Put(k*7919+1, k)
	}
	if n := testing.AllocsPerRun(100, func() {
		for k := range uint64(1000) {
			if p := tb.Ptr(k*7919 + 1); p != nil {
				*p++
			}
			tb.Put(k*7919+1, k)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per run", n)
	}
}

// BenchmarkMemory reports the heap per entry, against a Go map: the mean
// over 64 tables of 2 k to 24 k entries each, as the limiter shards them (a
// table's bytes per entry depend on where between two growths it stands).
func BenchmarkMemory(b *testing.B) {
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	sizes := []int{2000, 3000, 5000, 8000, 12000, 16000, 24000}
	b.Run("table", func(b *testing.B) {
		for b.Loop() {
			var sum float64
			for _, per := range sizes {
				before := heap()
				tabs := make([]Table[uint64], 64)
				for k := range uint64(per * 64) {
					h := k*0x9E3779B97F4A7C15 + 1
					tabs[h%64].Put(h, k)
				}
				sum += float64(heap()-before) / float64(per*64)
				runtime.KeepAlive(tabs)
			}
			b.ReportMetric(sum/float64(len(sizes)), "bytes/entry")
		}
	})
	b.Run("map", func(b *testing.B) {
		for b.Loop() {
			var sum float64
			for _, per := range sizes {
				before := heap()
				maps := make([]map[uint64]uint64, 64)
				for i := range maps {
					maps[i] = map[uint64]uint64{}
				}
				for k := range uint64(per * 64) {
					h := k*0x9E3779B97F4A7C15 + 1
					maps[h%64][h] = k
				}
				sum += float64(heap()-before) / float64(per*64)
				runtime.KeepAlive(maps)
			}
			b.ReportMetric(sum/float64(len(sizes)), "bytes/entry")
		}
	})
}
