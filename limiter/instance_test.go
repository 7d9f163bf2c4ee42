package limiter

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func TestInstanceKey(t *testing.T) {
	key := func(kv []string) (string, bool) {
		b, ok := appendInstanceKey(nil, labels(kv...))
		return string(b), ok
	}
	// f checks whether a and b belong to one instance.
	f := func(same bool, a, b []string) {
		t.Helper()
		ka, oka := key(a)
		kb, okb := key(b)
		if !oka || !okb {
			t.Fatalf("%s (%v) and %s (%v): both must belong to an instance", formatLabels(labels(a...)), oka, formatLabels(labels(b...)), okb)
		}
		if (ka == kb) != same {
			t.Fatalf("%s and %s: same instance = %v, want %v", formatLabels(labels(a...)), formatLabels(labels(b...)), ka == kb, same)
		}
	}
	bucket := func(le string, kv ...string) []string {
		return append([]string{"__name__", "rpc_seconds_bucket", "le", le, "pod", "p1"}, kv...)
	}
	f(true, bucket("10"), bucket("+Inf"))
	f(true, bucket("10"), []string{"__name__", "rpc_seconds_sum", "pod", "p1"})
	f(true, bucket("10"), []string{"__name__", "rpc_seconds_count", "pod", "p1"})
	f(true, []string{"__name__", "rpc_seconds", "quantile", "0.5", "pod", "p1"}, []string{"__name__", "rpc_seconds", "quantile", "0.99", "pod", "p1"})
	f(true, []string{"__name__", "rpc_seconds", "quantile", "0.5", "pod", "p1"}, []string{"__name__", "rpc_seconds_count", "pod", "p1"})
	f(false, bucket("10"), bucket("10", "code", "500"))
	f(false, bucket("10", "pod", "p2"), bucket("10"))
	f(false, bucket("10"), []string{"__name__", "other_seconds_bucket", "le", "10", "pod", "p1"})
	f(false, bucket("10"), []string{"__name__", "rpc_seconds_sum", "pod", "p2"})
	// The 0xff separators keep names and values apart.
	f(false, []string{"__name__", "x_sum", "a", "bc"}, []string{"__name__", "x_sum", "ab", "c"})
	f(false, []string{"__name__", "x_sum", "a", "b"}, []string{"__name__", "x_sum", "ab", ""})

	notMember := func(kv ...string) {
		t.Helper()
		if k, ok := key(kv); ok {
			t.Fatalf("%s belongs to instance %q, want none", formatLabels(labels(kv...)), k)
		}
	}
	notMember("__name__", "http_requests_total", "pod", "p1")
	notMember("__name__", "up")
	notMember("__name__", "x_counter", "pod", "p1")
	notMember()
}

// Regression: a workload at its cap admitted le="10" and le="100" of a
// histogram and folded le="1000" and +Inf, which breaks histogram_quantile.
func TestInstanceIsAdmittedOrFoldedWhole(t *testing.T) {
	const limit = 3
	l := newTestLimiter(Settings{Default: limit}, nil)
	if a, f := admitAll(l, makeSeriesN("payments", "checkout", 0, 2), 1); a != 2 || f != 0 {
		t.Fatalf("plain series: admitted %d, folded %d", a, f)
	}
	f := func(name string, ss []testSeries, want Decision) {
		t.Helper()
		var buf []byte
		now := l.Clock()
		for _, s := range ss {
			var d Decision
			d, buf = l.Admit(s.hash, s.ls, 1, now, buf)
			if d != want {
				t.Fatalf("%s: %s got %v, want %v", name, formatLabels(s.ls), d, want)
			}
		}
	}
	// The first bucket takes the last slot; the rest of the histogram
	// follows it past the cap.
	h := histogram("rpc_seconds", "payments", "checkout", "p1", "10", "100", "1000", "+Inf")
	f("admitted histogram", h, Admit)
	f("folded histogram", histogram("rpc_seconds", "payments", "checkout", "p2", "10", "100", "1000", "+Inf"), Fold)
	f("folded summary", summary("rpc_quantiles", "payments", "checkout", "p1", "0.5", "0.9", "0.99"), Fold)
	// A series of no instance is still capped exactly.
	f("plain series", makeSeriesN("payments", "checkout", 10, 1), Fold)
	// Known series keep their decisions.
	f("admitted histogram again", h, Admit)
	want := Report{Workload: "payments/checkout", ActiveSeries: 2 + 6, Limit: limit, DroppedSeries: 6 + 5 + 1, DroppedSamples: 12, FoldedInstances: 2}
	if got := reportOf(t, l, "payments/checkout"); got != want {
		t.Fatalf("report = %+v, want %+v", got, want)
	}
	checkAccounting(t, l)
}

// Prometheus shards by the original labels, so the series of one instance
// come in different concurrent requests and in any order.
func TestInstanceDecisionConcurrent(t *testing.T) {
	const (
		instances  = 300
		limit      = 40
		goroutines = 8
	)
	les := []string{"0.1", "1", "10", "+Inf"}
	size := len(les) + 2
	l := newTestLimiter(Settings{Default: limit}, nil)
	var all []testSeries
	for i := range instances {
		all = append(all, histogram("rpc_seconds", "payments", "checkout", fmt.Sprintf("p%d", i), les...)...)
	}
	perm := rand.Perm(len(all))
	decisions := make([]Decision, len(all))
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			var buf []byte
			now := l.Clock()
			for k := g; k < len(perm); k += goroutines {
				i := perm[k]
				decisions[i], buf = l.Admit(all[i].hash, all[i].ls, 1, now, buf)
			}
		})
	}
	wg.Wait()
	admittedInstances := 0
	for i := range instances {
		d := decisions[i*size]
		for j := 1; j < size; j++ {
			if decisions[i*size+j] != d {
				t.Fatalf("instance %d split: %s got %v, %s got %v", i, formatLabels(all[i*size].ls), d, formatLabels(all[i*size+j].ls), decisions[i*size+j])
			}
		}
		if d == Admit {
			admittedInstances++
		}
	}
	// Each admitted instance took a slot under the cap with its first
	// series: the documented bound on the overshoot.
	if admittedInstances == 0 || admittedInstances > limit {
		t.Fatalf("%d instances admitted, want 1 to %d", admittedInstances, limit)
	}
	r := reportOf(t, l, "payments/checkout")
	if r.ActiveSeries != int64(admittedInstances*size) || r.ActiveSeries > int64(limit+admittedInstances*(size-1)) {
		t.Fatalf("report %+v for %d admitted instances of %d series", r, admittedInstances, size)
	}
	if r.DroppedSeries != int64((instances-admittedInstances)*size) || r.FoldedInstances != int64(instances-admittedInstances) {
		t.Fatalf("report %+v for %d folded instances of %d series", r, instances-admittedInstances, size)
	}
	checkAccounting(t, l)
}

// An instance's decision lasts a window after its last new series; a
// member that comes later is decided alone.
func TestInstanceDecisionExpires(t *testing.T) {
	clock := newFakeClock()
	l := newTestLimiter(Settings{Default: 1, Window: time.Minute}, clock)
	h := histogram("rpc_seconds", "ns", "app", "p1", "1", "+Inf")
	if a, f := admitAll(l, h, 1); a != 4 || f != 0 {
		t.Fatalf("histogram: admitted %d, folded %d", a, f)
	}
	bucket := func(le string) []testSeries {
		return []testSeries{newTestSeries("__name__", "rpc_seconds_bucket", "namespace", "ns", "app", "app", "pod", "p1", "le", le)}
	}
	step := func(d time.Duration) {
		clock.Advance(d)
		admitAll(l, h, 1) // known series do not refresh the instance
		l.Sweep()
	}
	step(50 * time.Second)
	if a, _ := admitAll(l, bucket("5"), 1); a != 1 {
		t.Fatal("a new bucket within the window is not admitted with its instance")
	}
	step(50 * time.Second)
	// 100s after the instance began, 50s after its last new series.
	if a, _ := admitAll(l, bucket("50"), 1); a != 1 {
		t.Fatal("the new bucket did not refresh the instance")
	}
	step(61 * time.Second)
	if a, f := admitAll(l, bucket("500"), 1); a != 0 || f != 1 {
		t.Fatalf("a bucket more than a window after the last new one: admitted %d, folded %d; want it decided alone (folded)", a, f)
	}
	checkAccounting(t, l)
}

// An "instance" of unbounded le values is not a histogram: it must not
// carry its workload arbitrarily far past the cap.
func TestInstanceSeriesCeiling(t *testing.T) {
	l := newTestLimiter(Settings{Default: 1, MaxTrackedFolded: 4 * maxInstanceSeries}, nil)
	var ss []testSeries
	for i := range 2 * maxInstanceSeries {
		ss = append(ss, newTestSeries("__name__", "x_bucket", "namespace", "ns", "app", "app", "le", fmt.Sprint(i)))
	}
	if a, f := admitAll(l, ss, 1); a != maxInstanceSeries || f != maxInstanceSeries {
		t.Fatalf("admitted %d, folded %d; want %d each", a, f, maxInstanceSeries)
	}
	checkAccounting(t, l)
}

// TestNewSeriesAllocs proves that the slow path, the workload and instance
// keys and decisions included, allocates nothing once the maps have room:
// the series of pods that went idle come back, new to the limiter, in
// every round. (Series of ever new pods also cost an occasional map growth
// as the maps' deleted slots fill up, as before instances existed.)
func TestNewSeriesAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are not meaningful under -race")
	}
	clock := newFakeClock()
	l := newTestLimiter(Settings{Default: 300, Window: time.Minute}, clock)
	keep := makeSeries("payments", "checkout", 0)
	var ss []testSeries
	for i := range 100 {
		ss = append(ss, histogram("rpc_seconds", "payments", "checkout", fmt.Sprintf("p%d", i), "1", "10", "100", "+Inf")...)
		ss = append(ss, summary("rpc_quantiles", "payments", "checkout", fmt.Sprintf("p%d", i), "0.5", "0.99")...)
	}
	buf := make([]byte, 0, 256)
	var admitted, folded int
	round := func() {
		admitted, folded = 0, 0
		now := l.Clock()
		for _, s := range ss {
			var d Decision
			d, buf = l.Admit(s.hash, s.ls, 1, now, buf)
			if d == Admit {
				admitted++
			} else {
				folded++
			}
		}
		// They all expire; keep keeps the workload.
		clock.Advance(2 * time.Minute)
		_, buf = l.Admit(keep.hash, keep.ls, 1, l.Clock(), buf)
		l.Sweep()
	}
	round() // warm-up
	if allocs := testing.AllocsPerRun(10, round); allocs != 0 {
		t.Fatalf("admitting %d new series of histograms and summaries allocates %v times", len(ss), allocs)
	}
	// keep takes one of the 300 slots: the histograms and summaries of 30
	// pods (10 series a pod) are admitted, the last summary one series
	// past the cap, and those of the other 70 pods fold.
	if admitted != 300 || folded != len(ss)-300 {
		t.Fatalf("admitted %d, folded %d", admitted, folded)
	}
}
