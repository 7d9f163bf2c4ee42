package limiter

import (
	"fmt"
	"testing"
	"time"
)

// Regression: 1M folded series of a workload capped at 10 cost 1M entries
// (+36 MiB); now the entries stop growing at the cap plus
// DefaultMaxTrackedFolded, however many series arrive.
func TestFoldedSeriesMemoryIsBounded(t *testing.T) {
	n := 1_000_000
	if raceEnabled {
		n = 100_000
	}
	const limit = 10
	l := newTestLimiter(Settings{Default: limit}, nil)
	ls := makeSeries("payments", "checkout", 0).ls
	const bound = limit + DefaultMaxTrackedFolded
	var buf []byte
	now := l.Clock()
	for i := range n {
		var d Decision
		d, buf = l.Admit(mix64(uint64(i)), ls, 1, now, buf)
		if (d == Admit) != (i < limit) {
			t.Fatalf("series %d: %v", i, d)
		}
		if i == 2*bound || i == n-1 {
			if got := entries(l); got != bound {
				t.Fatalf("after %d series: %d entries, want %d", i+1, got, bound)
			}
		}
	}
	want := Report{Workload: "payments/checkout", ActiveSeries: limit, Limit: limit, DroppedSeries: DefaultMaxTrackedFolded,
		DroppedSamples: uint64(n - limit), Saturated: true, UntrackedFolds: uint64(n - bound)}
	if got := reportOf(t, l, "payments/checkout"); got != want {
		t.Fatalf("report = %+v, want %+v", got, want)
	}
	vals := gatherByWorkload(t, l)
	if got := vals["cardinal_untracked_folds_total"]["payments/checkout"]; got != float64(n-bound) {
		t.Fatalf("untracked folds = %v, want %d", got, n-bound)
	}
	if got := vals["cardinal_series_limit_reached_total"]["payments/checkout"]; got != DefaultMaxTrackedFolded {
		t.Fatalf("limit reached = %v, want %d", got, DefaultMaxTrackedFolded)
	}
	checkAccounting(t, l)
}

// Folded instances count against the same bound as folded series.
func TestFoldedInstanceMemoryIsBounded(t *testing.T) {
	const (
		limit      = 10
		maxTracked = 100
		instances  = 5000
	)
	l := newTestLimiter(Settings{Default: limit, MaxTrackedFolded: maxTracked}, nil)
	// Instances of 3 series: 4 are admitted (the 4th up to 12 series).
	// Each folded one takes an entry for itself and one per series: 25 of
	// them fill the 100 entries, and the workload saturates.
	const bound = 4*3 + 4 + maxTracked
	for i := range instances {
		a, f := admitAll(l, histogram("rpc_seconds", "payments", "checkout", fmt.Sprintf("p%d", i), "+Inf"), 1)
		if (i < 4 && a != 3) || (i >= 4 && f != 3) {
			t.Fatalf("instance %d: admitted %d, folded %d", i, a, f)
		}
		if i == 100 || i == instances-1 {
			if got := entries(l); got != bound {
				t.Fatalf("after %d instances: %d entries, want %d", i+1, got, bound)
			}
		}
	}
	r := reportOf(t, l, "payments/checkout")
	if r.ActiveSeries != 12 || r.DroppedSeries != 75 || r.FoldedInstances != 25 || !r.Saturated || r.UntrackedFolds != (instances-29)*3 {
		t.Fatalf("report = %+v", r)
	}
	checkAccounting(t, l)
}

// A series folded untracked must stay folded while it is active: it cannot
// be admitted when room opens up, or its cumulative value would count both
// on its own and in the overflow series.
func TestSaturationKeepsUntrackedSeriesFolded(t *testing.T) {
	clock := newFakeClock()
	l := newTestLimiter(Settings{Default: 2, MaxTrackedFolded: 3, Window: time.Minute}, clock)
	adm := makeSeriesN("ns", "app", 0, 2)
	tracked := makeSeriesN("ns", "app", 2, 3)
	untracked := makeSeriesN("ns", "app", 5, 5)
	if a, _ := admitAll(l, adm, 1); a != 2 {
		t.Fatalf("admitted %d, want 2", a)
	}
	if _, f := admitAll(l, tracked, 1); f != 3 {
		t.Fatalf("folded %d, want 3", f)
	}
	if _, f := admitAll(l, untracked, 1); f != 5 {
		t.Fatalf("folded %d, want 5", f)
	}
	if got := entries(l); got != 5 {
		t.Fatalf("%d entries, want 5: the last 5 series untracked", got)
	}
	if r := reportOf(t, l, "ns/app"); !r.Saturated || r.DroppedSeries != 3 || r.UntrackedFolds != 5 {
		t.Fatalf("report = %+v", r)
	}
	// Only the untracked series keep coming: the others expire, and free
	// the slots under the cap and the tracked entries.
	for step := 1; step <= 8; step++ {
		clock.Advance(10 * time.Second)
		if a, _ := admitAll(l, untracked, 1); a != 0 {
			t.Fatalf("step %d: %d untracked series admitted", step, a)
		}
		l.Sweep()
	}
	if r := reportOf(t, l, "ns/app"); r.ActiveSeries != 0 || r.DroppedSeries != 0 || !r.Saturated {
		t.Fatalf("after the others expired: %+v, want saturated without entries", r)
	}
	// A saturated workload folds any series it does not know, room or not.
	if a, _ := admitAll(l, makeSeriesN("ns", "app", 100, 1), 1); a != 0 {
		t.Fatal("a saturated workload admitted a new series")
	}
	// Saturation ends after a whole window without an untracked fold, and
	// the workload, idle, is forgotten.
	clock.Advance(time.Minute)
	l.Sweep()
	if r := reportOf(t, l, "ns/app"); !r.Saturated {
		t.Fatalf("a window after the last untracked fold: %+v, want still saturated", r)
	}
	clock.Advance(time.Second)
	l.Sweep()
	if rep := l.Cardinality(0); len(rep) != 0 {
		t.Fatalf("after the saturation ended: %+v, want no workload", rep)
	}
	// The series that stopped for more than a window start afresh.
	if a, f := admitAll(l, untracked, 1); a != 2 || f != 3 {
		t.Fatalf("after the saturation: admitted %d, folded %d; want 2 and 3", a, f)
	}
	checkAccounting(t, l)
}

// A saturated workload keeps deciding known instances whole: members of an
// admitted instance are admitted, members of other instances fold.
func TestSaturationKeepsInstancesWhole(t *testing.T) {
	l := newTestLimiter(Settings{Default: 1, MaxTrackedFolded: 2}, nil)
	h := histogram("rpc_seconds", "ns", "app", "p1", "1", "+Inf")
	if a, _ := admitAll(l, h[:1], 1); a != 1 {
		t.Fatal("first bucket not admitted")
	}
	if _, f := admitAll(l, makeSeriesN("ns", "app", 0, 3), 1); f != 3 {
		t.Fatal("plain series over the cap not folded")
	}
	if r := reportOf(t, l, "ns/app"); !r.Saturated {
		t.Fatalf("report %+v, want saturated", r)
	}
	if a, f := admitAll(l, h[1:], 1); a != len(h)-1 || f != 0 {
		t.Fatalf("rest of the admitted histogram: admitted %d, folded %d", a, f)
	}
	if a, _ := admitAll(l, histogram("rpc_seconds", "ns", "app", "p2", "1", "+Inf"), 1); a != 0 {
		t.Fatalf("another histogram: %d series admitted", a)
	}
	checkAccounting(t, l)
}
