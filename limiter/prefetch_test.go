package limiter

import (
	"math/rand/v2"
	"testing"
)

// TestPrefetchChangesNothing: a limiter that prefetches before every batch
// admits and folds exactly what its twin that never does.
func TestPrefetchChangesNothing(t *testing.T) {
	clock := &fakeClock{}
	a := newTestLimiter(Settings{Default: 40}, clock)
	b := newTestLimiter(Settings{Default: 40}, clock)
	ss := append(makeSeriesN("n", "a", 0, 60), makeSeriesN("n", "b", 0, 30)...)
	rng := rand.New(rand.NewPCG(9, 10))
	var order []int32
	var buf []byte
	for round := range 10 {
		hashes := make([]uint64, 0, len(ss)+10)
		for _, s := range ss {
			hashes = append(hashes, s.hash)
		}
		for range 10 {
			hashes = append(hashes, rng.Uint64())
		}
		order, _ = a.Prefetch(hashes, order)
		now := a.Clock()
		for _, i := range rng.Perm(len(ss)) {
			s := ss[i]
			var da, db Decision
			if round == 0 {
				da, buf = a.Admit(s.hash, s.ls, 1, now, buf)
				db, buf = b.Admit(s.hash, s.ls, 1, now, buf)
			} else {
				var oka, okb bool
				da, oka = a.AdmitKnown(s.hash, 1, now)
				db, okb = b.AdmitKnown(s.hash, 1, now)
				if oka != okb {
					t.Fatalf("round %d: known %v, the twin %v", round, oka, okb)
				}
			}
			if da != db {
				t.Fatalf("round %d: decided %v, the twin %v", round, da, db)
			}
		}
	}
}
