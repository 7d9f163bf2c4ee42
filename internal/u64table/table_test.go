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
		var tb Table
		model := map[uint64]uint64{}
		for op := range 100_000 {
			k := uint64(rng.IntN(keys)) // small keys: 0 included, homes collide
			switch x := rng.IntN(100); {
			case x < 40:
				v := rng.Uint64()
				tb.Put(k, v)
				model[k] = v
			case x < 50:
				if p := tb.Ptr(k); p != nil {
					*p++
					model[k]++
				}
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
	var tb Table
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

// BenchmarkMemory reports the heap per entry of a million, against a Go map.
func BenchmarkMemory(b *testing.B) {
	const n = 1_000_000
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	b.Run("table", func(b *testing.B) {
		for b.Loop() {
			before := heap()
			var tb Table
			for k := range uint64(n) {
				tb.Put(k*0x9E3779B97F4A7C15+1, k)
			}
			b.ReportMetric(float64(heap()-before)/n, "bytes/entry")
			runtime.KeepAlive(&tb)
		}
	})
	b.Run("map", func(b *testing.B) {
		for b.Loop() {
			before := heap()
			m := map[uint64]uint64{}
			for k := range uint64(n) {
				m[k*0x9E3779B97F4A7C15+1] = k
			}
			b.ReportMetric(float64(heap()-before)/n, "bytes/entry")
			runtime.KeepAlive(m)
		}
	})
}

// Sweep gives a burst's memory back, and steady churn allocates nothing.
func TestTableSweepShrinks(t *testing.T) {
	var tb Table
	for k := range uint64(100_000) {
		tb.Put(k+1, k)
	}
	big := len(tb.slots)
	tb.Sweep(func(k, _ uint64) bool { return k <= 100 })
	if tb.Len() != 100 || len(tb.slots) >= big/8 {
		t.Fatalf("after sweeping to 100 of 100k: len %d, %d slots (were %d)", tb.Len(), len(tb.slots), big)
	}
	for k := uint64(1); k <= 100; k++ {
		if v, ok := tb.Get(k); !ok || v != k-1 {
			t.Fatalf("key %d lost in the shrink", k)
		}
	}
	var small Table
	round := func() {
		for k := range uint64(200) {
			small.Put(k+1, k)
		}
		small.Sweep(func(uint64, uint64) bool { return false })
	}
	round()
	if n := testing.AllocsPerRun(20, round); n != 0 {
		t.Fatalf("steady churn allocates %v times per round", n)
	}
}
