package load

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	f := func(ms []int, p float64, want int) {
		t.Helper()
		d := make([]time.Duration, len(ms))
		for i, m := range ms {
			d[i] = time.Duration(m) * time.Millisecond
		}
		slices.Sort(d)
		if got := Percentile(d, p); got != time.Duration(want)*time.Millisecond {
			t.Fatalf("Percentile(%v, %g) = %v, want %dms", ms, p, got, want)
		}
	}
	f(nil, 0.5, 0)
	f([]int{7}, 0.5, 7)
	f([]int{7}, 0.99, 7)
	f([]int{1, 2}, 0.5, 1)
	f([]int{1, 2, 3}, 0.5, 2)
	f([]int{1, 2, 3, 4}, 0.5, 2)
	f([]int{1, 2, 3, 4}, 0.51, 3)
	f([]int{1, 2, 3, 4}, 1, 4)
	f([]int{1, 2, 3, 4}, 0.0001, 1)
	// p99 of 1..100 is 99, of 1..1000 is 990; one slow request in 100 is the p99.
	seq := func(n int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = i + 1
		}
		return s
	}
	f(seq(100), 0.99, 99)
	f(seq(1000), 0.99, 990)
	f(seq(1000), 0.5, 500)
	f(append(seq(99), 5000), 0.99, 99)
	f(append(seq(98), 5000, 5000), 0.99, 5000)
}

func TestMedian(t *testing.T) {
	f := func(xs []float64, want float64) {
		t.Helper()
		got := Median(xs)
		if got != want && !(math.IsNaN(got) && math.IsNaN(want)) {
			t.Fatalf("Median(%v) = %g, want %g", xs, got, want)
		}
	}
	f(nil, math.NaN())
	f([]float64{3}, 3)
	f([]float64{3, 1}, 2)
	f([]float64{3, 1, 2}, 2)
	f([]float64{10, 1, 2, 1000}, 6)
	in := []float64{3, 1, 2}
	Median(in)
	if !slices.Equal(in, []float64{3, 1, 2}) {
		t.Fatalf("Median modified its input: %v", in)
	}
}
