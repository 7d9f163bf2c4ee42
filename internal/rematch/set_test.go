package rematch

import (
	"math/rand/v2"
	"testing"
)

// set must agree with a map on members, non-members and near misses.
func TestNameSetAgreesWithMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := "ab_c"
	randName := func() string {
		b := make([]byte, rng.IntN(6))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	for range 200 {
		members := map[string]bool{}
		var names []string
		for range rng.IntN(40) {
			n := randName()
			members[n] = true
			names = append(names, n)
		}
		s := newSet(names)
		if s.len() != len(members) {
			t.Fatalf("len %d, want %d", s.len(), len(members))
		}
		for range 200 {
			q := randName()
			if s.has(q) != members[q] {
				t.Fatalf("has(%q) = %v, want %v (set %q)", q, s.has(q), members[q], names)
			}
		}
	}
	s := newSet([]string{"__name__", "job", "le", "istio_request_duration_milliseconds_bucket"})
	long := "istio_request_duration_milliseconds_bucket"
	if n := testing.AllocsPerRun(100, func() { s.has("instance"); s.has(long) }); n != 0 {
		t.Fatalf("has allocates %v times", n)
	}
}
