package tracesample

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// refThreshold computes the threshold from the specification's definition
// with exact rational arithmetic, independently of the float64 shortcut in
// NewSampler: T is (1 - ratio) * 2^56 rounded to the nearest integer, an
// exact .5 rounding down (towards keeping), as Collector-Contrib's
// 2^56 - math.Round(ratio * 2^56) does.
func refThreshold(ratio float64) uint64 {
	two56 := new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), 56))
	x := new(big.Rat).Sub(big.NewRat(1, 1), new(big.Rat).SetFloat64(ratio))
	x.Mul(x, two56)
	// ceil(x - 1/2)
	x.Sub(x, big.NewRat(1, 2))
	q, r := new(big.Int).QuoRem(x.Num(), x.Denom(), new(big.Int))
	if r.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsUint64() {
		panic("threshold out of range")
	}
	return q.Uint64()
}

func TestNewSamplerErrors(t *testing.T) {
	for _, r := range []float64{math.NaN(), -0.1, -math.SmallestNonzeroFloat64, 1.0000000001, math.Inf(1), math.Inf(-1)} {
		if _, err := NewSampler(r); err == nil {
			t.Fatalf("NewSampler(%v): no error", r)
		}
	}
	for _, r := range []float64{0, math.Copysign(0, -1), 1, 0.5} {
		if _, err := NewSampler(r); err != nil {
			t.Fatalf("NewSampler(%v): %v", r, err)
		}
	}
}

func TestSamplerThresholdMatchesSpec(t *testing.T) {
	f := func(ratio float64) {
		t.Helper()
		s, err := NewSampler(ratio)
		if err != nil {
			t.Fatalf("NewSampler(%v): %v", ratio, err)
		}
		if s.Ratio() != ratio {
			t.Fatalf("Ratio() = %v, want %v", s.Ratio(), ratio)
		}
		want := refThreshold(ratio)
		if got := s.Threshold(); got != want {
			t.Fatalf("ratio %v: Threshold() = %#x, want %#x", ratio, got, want)
		}
		// |T - (1-ratio)*2^56| <= 1/2: T is a rounding of the exact value.
		exact := new(big.Rat).Mul(
			new(big.Rat).Sub(big.NewRat(1, 1), new(big.Rat).SetFloat64(ratio)),
			new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), 56)))
		diff := new(big.Rat).Sub(new(big.Rat).SetInt(new(big.Int).SetUint64(s.Threshold())), exact)
		if diff.Abs(diff).Cmp(big.NewRat(1, 2)) > 0 {
			t.Fatalf("ratio %v: Threshold() %#x is %s away from exact %s", ratio, s.Threshold(), diff.FloatString(3), exact.FloatString(3))
		}
	}
	f(0)
	f(1)
	f(0.5)
	f(0.25)
	f(0.75)
	f(0.1)
	f(0.01)
	f(0.001)
	f(1.0 / 3)
	f(2.0 / 3)
	f(1e-9)
	f(1e-15)
	f(0.999999)
	f(math.Nextafter(1, 0))
	f(math.SmallestNonzeroFloat64)
	f(0x1p-56)
	f(0x1p-57)   // exact tie: keep 1 value
	f(0x1p-58)   // rounds to keep nothing
	f(0x3p-58)   // 0.75 of a unit: keep 1
	f(0x1.8p-56) // 1.5 units: tie, keep 2
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		f(rng.Float64())
		f(math.Ldexp(rng.Float64(), -rng.IntN(60)))
	}

	// Spot values worked out by hand.
	g := func(ratio float64, want uint64) {
		t.Helper()
		s, _ := NewSampler(ratio)
		if s.Threshold() != want {
			t.Fatalf("ratio %v: Threshold() = %#x, want %#x", ratio, s.Threshold(), want)
		}
	}
	g(0, 1<<56)
	g(1, 0)
	g(0.5, 0x80000000000000)
	g(0.25, 0xc0000000000000)
	g(0x1p-57, 1<<56-1)
	g(0x1p-58, 1<<56)
}

func TestSamplerZeroValueKeepsNothing(t *testing.T) {
	var s Sampler
	if s.Ratio() != 0 || s.Threshold() != 1<<56 {
		t.Fatalf("zero Sampler: ratio %v threshold %#x", s.Ratio(), s.Threshold())
	}
	max := [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if s.Sample(max) {
		t.Fatal("zero Sampler kept a trace")
	}
}

// idWithR returns a trace id whose bytes 9..15 encode r and whose other bytes
// are fill.
func idWithR(r uint64, fill byte) [16]byte {
	var id [16]byte
	for i := range 9 {
		id[i] = fill
	}
	for i := 15; i >= 9; i-- {
		id[i] = byte(r)
		r >>= 8
	}
	return id
}

func TestRandomness(t *testing.T) {
	id := [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd}
	if got := Randomness(id); got != 0x0123456789abcd {
		t.Fatalf("Randomness = %#x", got)
	}
	if got := Randomness(idWithR(1<<56-1, 0)); got != 1<<56-1 {
		t.Fatalf("Randomness = %#x", got)
	}
}

func TestSampleAroundThreshold(t *testing.T) {
	f := func(ratio float64) {
		t.Helper()
		s, err := NewSampler(ratio)
		if err != nil {
			t.Fatal(err)
		}
		T := s.Threshold()
		check := func(r uint64) {
			t.Helper()
			if r >= 1<<56 {
				return
			}
			for _, fill := range []byte{0, 0x5a, 0xff} {
				if got, want := s.Sample(idWithR(r, fill)), r >= T; got != want {
					t.Fatalf("ratio %v, T %#x, R %#x, fill %#x: Sample = %v, want %v", ratio, T, r, fill, got, want)
				}
			}
		}
		if T > 0 {
			check(T - 1)
		}
		check(T)
		check(T + 1)
		check(0)
		check(1<<56 - 1)
	}
	for _, r := range []float64{0, 1, 0.5, 0.01, 1.0 / 3, 1e-9, 0x1p-57, 0.999, math.Nextafter(1, 0)} {
		f(r)
	}
	// Boundary cases spelled out.
	all, _ := NewSampler(1)
	none, _ := NewSampler(0)
	if !all.Sample(idWithR(0, 0)) {
		t.Fatal("ratio 1 dropped R=0")
	}
	if none.Sample(idWithR(1<<56-1, 0xff)) {
		t.Fatal("ratio 0 kept R=2^56-1")
	}
	half, _ := NewSampler(0.5)
	if half.Sample(idWithR(0x7fffffffffffff, 0)) || !half.Sample(idWithR(0x80000000000000, 0)) {
		t.Fatal("ratio 0.5 boundary wrong")
	}
}

func TestSampleMonotonic(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		var id [16]byte
		for i := range id {
			id[i] = byte(rng.Uint32())
		}
		p, q := rng.Float64(), rng.Float64()
		if rng.IntN(4) == 0 {
			p = math.Ldexp(p, -rng.IntN(40))
		}
		if p > q {
			p, q = q, p
		}
		sp, _ := NewSampler(p)
		sq, _ := NewSampler(q)
		if sp.Threshold() < sq.Threshold() {
			t.Fatalf("threshold not monotonic: p %v T %#x, q %v T %#x", p, sp.Threshold(), q, sq.Threshold())
		}
		if sp.Sample(id) && !sq.Sample(id) {
			t.Fatalf("id %x kept at %v but dropped at %v", id, p, q)
		}
	}
}

func TestSampleOnlyLow56Bits(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	samplers := make([]Sampler, 0, 8)
	for _, r := range []float64{0.01, 0.1, 1.0 / 3, 0.5, 0.9} {
		s, _ := NewSampler(r)
		samplers = append(samplers, s)
	}
	for range 5000 {
		var id [16]byte
		for i := range id {
			id[i] = byte(rng.Uint32())
		}
		other := id
		for i := range 9 {
			other[i] = byte(rng.Uint32())
		}
		for _, s := range samplers {
			if s.Sample(id) != s.Sample(other) {
				t.Fatalf("ratio %v: %x and %x differ only in bytes 0..8 but decide differently", s.Ratio(), id, other)
			}
		}
	}
}

func TestSampleStatistics(t *testing.T) {
	const n = 100_000
	rng := rand.New(rand.NewPCG(7, 8))
	ids := make([][16]byte, n)
	for i := range ids {
		for j := range ids[i] {
			ids[i][j] = byte(rng.Uint32())
		}
	}
	for _, ratio := range []float64{0.01, 0.1, 0.5} {
		s, _ := NewSampler(ratio)
		kept := 0
		for _, id := range ids {
			if s.Sample(id) {
				kept++
			}
		}
		got := float64(kept) / n
		if math.Abs(got-ratio) > 0.05*ratio {
			t.Errorf("ratio %v: kept %d of %d (%.5f), more than 5%% off", ratio, kept, n, got)
		}
		t.Logf("ratio %v: kept %.5f", ratio, got)
	}
}
