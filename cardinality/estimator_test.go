package cardinality

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/cardinal-gateway/cardinal/wire"
)

func labels(kv ...string) []wire.Label {
	var ls []wire.Label
	for i := 0; i < len(kv); i += 2 {
		ls = append(ls, wire.Label{Name: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	return ls
}

// observe adds a series with labels kv to group (w, m).
func observe(e *Estimator, w, m string, nowMs int64, in []wire.Label, out []wire.Label) {
	inH, _ := wire.HashLabels(nil, in)
	outH, _ := wire.HashLabels(nil, out)
	e.Observe(&Observation{Group: GroupKey([]byte(w), []byte(m)), Workload: []byte(w), Metric: []byte(m),
		In: inH, Out: outH, InLabels: in, OutLabels: out, NowMs: nowMs})
}

// The estimates against exact counts: exact up to SmallMax, then within
// four standard errors (a test that fails about once in 15 000 runs of a
// fair sketch; the seeds are fixed, so it is deterministic).
func TestEstimatesWithinStatedError(t *testing.T) {
	const now = 1_700_000_000_000
	for _, n := range []int{1, 7, SmallMax, SmallMax + 1, 100, 1000, 5000, 20000, 100000} {
		e := New(Options{})
		rng := rand.New(rand.NewPCG(uint64(n), 7))
		exact := map[string]bool{}
		for i := range n * 2 {
			// Every value twice, in a random order: duplicates count once.
			v := fmt.Sprintf("req-%d", i)
			if i >= n {
				v = fmt.Sprintf("req-%d", rng.IntN(n))
			}
			exact[v] = true
			in := labels("__name__", "req_total", "app", "a", "request_id", v)
			out := labels("__name__", "req_total", "app", "a")
			observe(e, "ns/a", "req_total", now, in, out)
		}
		r := e.Report(now, Filter{})
		if len(r) != 1 {
			t.Fatalf("n=%d: %d groups", n, len(r))
		}
		var values uint64
		for _, l := range r[0].Labels {
			if l.Name == "request_id" {
				values = l.ValuesIn
				if l.ValuesOut != 0 {
					t.Fatalf("request_id after the rules: %d values, it was dropped", l.ValuesOut)
				}
			}
		}
		want := float64(len(exact))
		for _, got := range []float64{float64(values), float64(r[0].SeriesIn)} {
			tol := 4 * RelativeError * want
			if want <= SmallMax {
				tol = 0
			}
			t.Logf("n=%d: estimate %v, exact %v", n, got, want)
			if math.Abs(got-want) > tol {
				t.Errorf("n=%d: estimate %v, exact %v (tolerance %v)", n, got, want, tol)
			}
		}
		if r[0].SeriesOut != 1 {
			t.Errorf("n=%d: %d series out, want 1", n, r[0].SeriesOut)
		}
	}
}

// The window slides by halves: what was seen two half-windows ago is
// gone, what was seen in the previous one still counts, and churn is the
// share of the current half-window's series the previous one did not have.
func TestWindowAndChurn(t *testing.T) {
	e := New(Options{Window: 10 * time.Minute})
	half := int64(5 * 60 * 1000)
	t0 := int64(1_700_000_000_000) / half * half
	add := func(at int64, ids ...int) {
		for _, i := range ids {
			ls := labels("__name__", "up", "pod", fmt.Sprint(i))
			observe(e, "w", "up", at, ls, ls)
		}
	}
	add(t0, 1, 2, 3, 4)
	add(t0+half, 3, 4, 5, 6) // half new
	r := e.Report(t0+half, Filter{})[0]
	if r.SeriesOut != 6 || r.Churn != 0.5 {
		t.Fatalf("window of two halves: %d series, churn %v; want 6 and 0.5", r.SeriesOut, r.Churn)
	}
	r = e.Report(t0+2*half, Filter{})[0]
	if r.SeriesOut != 4 {
		t.Fatalf("one half later: %d series, want the 4 of the last half", r.SeriesOut)
	}
	if got := e.Report(t0+3*half, Filter{}); len(got) != 0 {
		t.Fatalf("two halves later: %+v, want nothing", got)
	}
	e.Sweep(t0 + 3*half)
	if e.Groups() != 0 {
		t.Fatalf("%d groups after the sweep", e.Groups())
	}
}

// Without a dense sketch left, a count stays a lower bound and says so.
func TestDenseBudgetSaturates(t *testing.T) {
	e := New(Options{MaxDense: 1})
	now := int64(1_700_000_000_000)
	for i := range 500 {
		ls := labels("__name__", "x", "id", fmt.Sprint(i))
		// All in one shard: the budget is per shard.
		e.Observe(&Observation{Group: 0, Workload: []byte("w"), Metric: []byte("x"), In: xxhash.Sum64String(fmt.Sprint(i)), Out: 1, InLabels: ls, OutLabels: ls, NowMs: now})
	}
	r := e.Report(now, Filter{})[0]
	if !r.Saturated {
		t.Fatalf("not saturated: %+v", r)
	}
	if r.SeriesIn < SmallMax {
		t.Fatalf("series in %d: below what was counted exactly", r.SeriesIn)
	}
}

func TestMaxGroups(t *testing.T) {
	e := New(Options{MaxGroups: 3})
	for i := range 5 {
		ls := labels("__name__", fmt.Sprint("m", i))
		observe(e, "w", fmt.Sprint("m", i), 1_700_000_000_000, ls, ls)
	}
	if e.Groups() != 3 || e.DroppedGroups() != 2 {
		t.Fatalf("groups %d, dropped %d; want 3 and 2", e.Groups(), e.DroppedGroups())
	}
}

// Observing known groups and labels allocates nothing, across a rotation
// of the half-windows too.
func TestObserveAllocsNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	e := New(Options{Window: 2 * time.Second})
	obs := make([]Observation, 64)
	for i := range obs {
		ls := labels("__name__", "req_total", "app", fmt.Sprint(i%4), "code", fmt.Sprint(200+i%3), "pod", fmt.Sprint(i))
		h, _ := wire.HashLabels(nil, ls)
		obs[i] = Observation{Group: GroupKey([]byte(fmt.Sprint(i%4)), []byte("req_total")), Workload: []byte("w"), Metric: []byte("req_total"),
			In: h, Out: h, InLabels: ls, OutLabels: ls}
	}
	now := int64(1_700_000_000_000)
	run := func() {
		for i := range obs {
			obs[i].NowMs = now
			e.Observe(&obs[i])
		}
		now += 1000 // a new half-window every run
	}
	run()
	run()
	if n := testing.AllocsPerRun(50, run); n != 0 {
		t.Fatalf("Observe allocates %v times per run", n)
	}
}

func BenchmarkObserve(b *testing.B) {
	e := New(Options{})
	var obs []Observation
	for i := range 1000 {
		in := labels("__name__", "istio_requests_total", "namespace", "ns", "app", fmt.Sprint(i%20), "pod", fmt.Sprint(i%100),
			"response_code", fmt.Sprint(200+i%5), "request_id", fmt.Sprint(i))
		out := in[:5]
		ih, _ := wire.HashLabels(nil, in)
		oh, _ := wire.HashLabels(nil, out)
		obs = append(obs, Observation{Group: GroupKey([]byte(fmt.Sprint(i%20)), []byte("istio_requests_total")), Workload: []byte("w"),
			Metric: []byte("istio_requests_total"), In: ih, Out: oh, InLabels: in, OutLabels: out, NowMs: 1_700_000_000_000})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		e.Observe(&obs[i%len(obs)])
	}
}
