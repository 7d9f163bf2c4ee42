package relabel

import (
	"math/rand/v2"
	"testing"
)

// nameSet must agree with a map on members, non-members and near misses
// (same length and same first, middle and last byte).
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
		s := newNameSet(names)
		if s.len() != len(members) {
			t.Fatalf("len %d, want %d", s.len(), len(members))
		}
		for range 200 {
			q := randName()
			if s.has([]byte(q)) != members[q] {
				t.Fatalf("has(%q) = %v, want %v (set %q)", q, s.has([]byte(q)), members[q], names)
			}
		}
	}
	s := newNameSet([]string{"__name__", "job", "le", "istio_request_duration_milliseconds_bucket"})
	long := []byte("istio_request_duration_milliseconds_bucket")
	if n := testing.AllocsPerRun(100, func() { s.has([]byte("instance")); s.has(long) }); n != 0 {
		t.Fatalf("has allocates %v times", n)
	}
}
