package merge

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/wire"

	"github.com/cardinal-gateway/cardinal/internal/rematch"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// sink records delivered batches, decoded by prompb, as a downstream would
// store them. fail makes every delivery fail (a downstream outage); reject
// refuses the series it matches on their own, as Prometheus refuses an
// out-of-order sample.
type sink struct {
	mu      sync.Mutex
	reqs    []*prompb.WriteRequest
	fail    bool
	reject  func(prompb.TimeSeries) string
	batches int
}

func (s *sink) deliver(_ context.Context, req *wire.Request, onReject func(int, string, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return fmt.Errorf("downstream down")
	}
	s.batches++
	var r prompb.WriteRequest
	if err := r.Unmarshal(req.MarshalAppend(nil)); err != nil {
		return err
	}
	kept := r.Timeseries[:0]
	for i, ts := range r.Timeseries {
		if s.reject != nil {
			if reason := s.reject(ts); reason != "" {
				onReject(i, reason, fmt.Errorf("refused"))
				continue
			}
		}
		kept = append(kept, ts)
	}
	r.Timeseries = kept
	s.reqs = append(s.reqs, &r)
	return nil
}

// all returns every series delivered, in order.
func (s *sink) all() []prompb.TimeSeries {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []prompb.TimeSeries
	for _, r := range s.reqs {
		out = append(out, r.Timeseries...)
	}
	return out
}

func newTestMerger(t testing.TB, rules Rules) (*Merger, *clock, *sink) {
	t.Helper()
	if rules.MaxInputs == 0 {
		rules.MaxInputs = 1000
	}
	if rules.Staleness == 0 {
		rules.Staleness = time.Minute
	}
	c := &clock{t: time.UnixMilli(1_700_000_000_000)}
	return New(Options{Rules: rules, Now: c.Now}), c, &sink{}
}

func lbls(kv ...string) []wire.Label {
	var ls []wire.Label
	for i := 0; i < len(kv); i += 2 {
		ls = append(ls, wire.Label{Name: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	return ls
}

// feed routes one sample of the input {name, pod} whose output is {name}
// (pod dropped), in a request of its own.
func feed(m *Merger, name, pod string, v float64, ts int64) Decision {
	orig := lbls("__name__", name, "pod", pod)
	out := lbls("__name__", name)
	in, _ := wire.HashLabels(nil, orig)
	oh, _ := wire.HashLabels(nil, out)
	s := wire.Series{Labels: out, Samples: []wire.Sample{{Value: v, Timestamp: ts}}}
	tk := m.Begin()
	defer m.End(tk)
	return m.Route(tk, in, oh, orig, &s, m.now().UnixMilli(), false)
}

func flush(m *Merger, s *sink) bool {
	return m.Flush(context.Background(), s.deliver, false)
}

// emitted returns the values emitted for metric name, in order.
func emitted(s *sink, name string) (vals []float64, ts []int64) {
	for _, series := range s.all() {
		if series.Labels[0].Value != name {
			continue
		}
		for _, smp := range series.Samples {
			vals = append(vals, smp.Value)
			ts = append(ts, smp.Timestamp)
		}
	}
	return vals, ts
}

func TestSingleInputPassesThrough(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{})
	for i := range 5 {
		if d := feed(m, "req_total", "a", float64(i), int64(1000+i)); d != Pass {
			t.Fatalf("sample %d: decision %d, want Pass", i, d)
		}
		c.Add(time.Second)
	}
	flush(m, s)
	if len(s.all()) != 0 {
		t.Fatalf("a single-input output was emitted by the merger: %v", s.all())
	}
}

func TestCollidingCountersAreSummed(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{})
	if d := feed(m, "req_total", "a", 10, 1000); d != Pass {
		t.Fatalf("first input: %d, want Pass", d)
	}
	if d := feed(m, "req_total", "b", 5, 1001); d != Absorbed|NewInput {
		t.Fatalf("second input: %d, want Absorbed|NewInput", d)
	}
	if d := feed(m, "req_total", "a", 12, 2000); d != Absorbed {
		t.Fatalf("first input after the collision: %d, want Absorbed", d)
	}
	c.Add(time.Second)
	flush(m, s)
	vals, ts := emitted(s, "req_total")
	if len(vals) != 1 || vals[0] != 17 {
		t.Fatalf("emitted %v, want [17] (12 + 5)", vals)
	}
	// Stamped with the newest data absorbed, which is after what passed
	// through (a's sample at 1000).
	if ts[0] != 2000 {
		t.Fatalf("emission timestamp %d, want 2000, the newest sample's", ts[0])
	}
}

func TestCounterResetOfOneInput(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{})
	feed(m, "req_total", "a", 100, 1000)
	feed(m, "req_total", "b", 50, 1000)
	c.Add(time.Second)
	flush(m, s)
	feed(m, "req_total", "a", 3, 2000) // a restarted
	feed(m, "req_total", "b", 60, 2000)
	c.Add(time.Second)
	flush(m, s)
	feed(m, "req_total", "a", 7, 3000)
	c.Add(time.Second)
	flush(m, s)
	vals, ts := emitted(s, "req_total")
	want := []float64{150, 163, 167} // 100+50, (100+3)+60, (100+7)+60
	if fmt.Sprint(vals) != fmt.Sprint(want) {
		t.Fatalf("emitted %v, want %v", vals, want)
	}
	for i := 1; i < len(ts); i++ {
		if ts[i] <= ts[i-1] || vals[i] < vals[i-1] {
			t.Fatalf("emission %d goes back: %v at %v", i, vals, ts)
		}
	}
}

func TestVanishedInputKeepsContributing(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{Staleness: time.Minute})
	feed(m, "req_total", "a", 10, 1000)
	feed(m, "req_total", "b", 20, 1000)
	// b disappears: a stale marker, then nothing. a goes on.
	feed(m, "req_total", "b", math.Float64frombits(value.StaleNaN), 2000)
	feed(m, "req_total", "c", 4, 2000) // a new input counts from zero: all of 4 is new
	c.Add(time.Second)
	flush(m, s)
	for range 3 {
		c.Add(30 * time.Second) // beyond staleness for b and c
		feed(m, "req_total", "a", 11, c.Now().UnixMilli())
		flush(m, s)
	}
	vals, _ := emitted(s, "req_total")
	if want := []float64{34, 35, 35, 35}; fmt.Sprint(vals) != fmt.Sprint(want) {
		t.Fatalf("emitted %v, want %v", vals, want)
	}
	// b (retired by its stale marker) and c expired; only a is left.
	if got := m.tracked.Load(); got != 1 {
		t.Fatalf("tracked inputs: %d, want 1", got)
	}
}

func TestStaleStateExpires(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{Staleness: time.Minute, ForgetAfter: 3 * time.Minute})
	feed(m, "up", "a", 1, 1000)
	feed(m, "req_total", "a", 1, 1000)
	feed(m, "req_total", "b", 1, 1000)
	if n := m.tracked.Load(); n != 3 {
		t.Fatalf("tracked %d inputs, want 3", n)
	}
	c.Add(2 * time.Minute)
	flush(m, s) // emits the merged counter, then everything is stale
	if n, r := m.tracked.Load(), m.retired.Load(); n != 0 || r != 2 {
		t.Fatalf("tracked %d live and %d retired inputs after staleness, want 0 and 2 (the counter's)", n, r)
	}
	c.Add(2 * time.Minute)
	flush(m, s)
	if n, r := m.tracked.Load(), m.retired.Load(); n != 0 || r != 0 {
		t.Fatalf("tracked %d live and %d retired inputs after forget_after, want none", n, r)
	}
	for i := range m.shards {
		if n := m.shards[i].outputs.t.Len(); n != 0 {
			t.Fatalf("shard %d still holds %d outputs", i, n)
		}
	}
}

func TestGaugePolicies(t *testing.T) {
	f := func(policy Policy, want float64) {
		t.Helper()
		m, c, s := newTestMerger(t, Rules{Gauges: []GaugeRule{{Match: rematch.MustCompile("^conns$"), Policy: policy}}})
		feed(m, "conns", "a", 3, 1000)
		feed(m, "conns", "b", 7, 1002)
		feed(m, "conns", "c", 5, 1001)
		c.Add(time.Second)
		flush(m, s)
		vals, _ := emitted(s, "conns")
		if len(vals) != 1 || vals[0] != want {
			t.Fatalf("policy %d: emitted %v, want %v", policy, vals, want)
		}
	}
	f(Sum, 15)
	f(Max, 7)
	f(Min, 3)
	f(Last, 7)
}

func TestStaleGaugeInputLeavesTheAggregate(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{Staleness: time.Minute})
	feed(m, "conns", "a", 3, 1000)
	feed(m, "conns", "b", 7, 1000)
	c.Add(40 * time.Second)
	feed(m, "conns", "a", 4, 41000)
	c.Add(40 * time.Second) // b last seen 80 s ago, a 40 s ago
	flush(m, s)
	vals, ts := emitted(s, "conns")
	// The value at 1000 became a point of its own when a's sample 40 s
	// later arrived (data time moved more than a flush interval), stamped
	// just after a's pass-through sample; by the flush, b is stale.
	if fmt.Sprint(vals) != "[10 4]" || fmt.Sprint(ts) != "[1001 41000]" {
		t.Fatalf("emitted %v at %v, want [10 4] at [1001 41000]: b is stale", vals, ts)
	}
}

func TestNewlyMergedOutputWaitsForInFlightRequests(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{})
	// A request passes a sample through and is still being forwarded...
	orig := lbls("__name__", "req_total", "pod", "a")
	out := lbls("__name__", "req_total")
	in, _ := wire.HashLabels(nil, orig)
	oh, _ := wire.HashLabels(nil, out)
	slow := m.Begin()
	ser := wire.Series{Labels: out, Samples: []wire.Sample{{Value: 1, Timestamp: 5000}}}
	if d := m.Route(slow, in, oh, orig, &ser, c.Now().UnixMilli(), false); d != Pass {
		t.Fatal("want Pass")
	}
	// ...while another request makes the output merged.
	feed(m, "req_total", "b", 2, 5000)
	c.Add(time.Second)
	flush(m, s)
	if vals, _ := emitted(s, "req_total"); len(vals) != 0 {
		t.Fatalf("emitted %v while a pass-through request was in flight", vals)
	}
	m.End(slow)
	flush(m, s)
	if vals, ts := emitted(s, "req_total"); len(vals) != 1 || vals[0] != 3 || ts[0] <= 5000 {
		t.Fatalf("emitted %v at %v, want [3] after 5000", vals, ts)
	}
}

// A failed flush leaves its points pending: the next one delivers them,
// oldest first, then the newer value.
func TestFailedFlushStaysPending(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{FlushInterval: 10 * time.Millisecond})
	feed(m, "req_total", "a", 1, 1000)
	feed(m, "req_total", "b", 1, 1000)
	s.fail = true
	c.Add(time.Second)
	flush(m, s)
	s.fail = false
	feed(m, "req_total", "a", 2, 2000)
	c.Add(time.Second)
	flush(m, s)
	if vals, ts := emitted(s, "req_total"); fmt.Sprint(vals) != "[2 3]" || fmt.Sprint(ts) != "[1001 2000]" {
		t.Fatalf("emitted %v at %v, want [2 3] at [1001 2000]", vals, ts)
	}
}

func TestConcurrentInputsSumExactly(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{MaxInputs: 100000})
	const pods, steps = 16, 200
	var wg sync.WaitGroup
	for p := range pods {
		wg.Go(func() {
			for step := 1; step <= steps; step++ {
				feed(m, "req_total", fmt.Sprintf("pod-%d", p), float64(step*(p+1)), int64(step))
				if step%50 == 0 {
					flush(m, s)
				}
			}
		})
	}
	wg.Wait()
	c.Add(time.Second)
	flush(m, s)
	vals, ts := emitted(s, "req_total")
	// Every pod ends at steps*(p+1); one pod's first sample may have passed
	// through before the collision, and still counts.
	want := 0.0
	for p := range pods {
		want += float64(steps * (p + 1))
	}
	if len(vals) == 0 || vals[len(vals)-1] != want {
		t.Fatalf("final value %v, want %v", vals, want)
	}
	for i := 1; i < len(vals); i++ {
		if vals[i] < vals[i-1] || ts[i] <= ts[i-1] {
			t.Fatalf("emission %d goes back: %v@%d after %v@%d", i, vals[i], ts[i], vals[i-1], ts[i-1])
		}
	}
}

// countHistogram encodes a native histogram of count observations, all in
// one bucket, as a remote-write histogram.
func countHistogram(t *testing.T, count uint64) []byte {
	t.Helper()
	ih := &histogram.Histogram{
		Count: count, Sum: float64(count), Schema: 0, ZeroThreshold: 1e-128,
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []int64{int64(count)},
	}
	ph := prompb.FromIntHistogram(1000, ih)
	b, err := ph.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNativeHistogramsAreAdded(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{})
	h := func(count uint64) []byte { return countHistogram(t, count) }
	route := func(pod string, count uint64, ts int64) Decision {
		orig := lbls("__name__", "lat", "pod", pod)
		out := lbls("__name__", "lat")
		in, _ := wire.HashLabels(nil, orig)
		oh, _ := wire.HashLabels(nil, out)
		ser := wire.Series{Labels: out, Histograms: []wire.Histogram{{Timestamp: ts, Data: h(count)}}}
		tk := m.Begin()
		defer m.End(tk)
		return m.Route(tk, in, oh, orig, &ser, c.Now().UnixMilli(), false)
	}
	if d := route("a", 3, 1000); d != Pass {
		t.Fatalf("first input: %d, want Pass", d)
	}
	route("b", 4, 1000)
	c.Add(time.Second)
	flush(m, s)
	// a's histogram passed through and its value is unknown to the merger:
	// emitting b alone would make the output dip.
	if all := s.all(); len(all) != 0 {
		t.Fatalf("emitted %+v before every input reported", all)
	}
	route("a", 5, 2000)
	c.Add(time.Second)
	flush(m, s)
	all := s.all()
	if len(all) != 1 || len(all[0].Histograms) != 1 {
		t.Fatalf("emitted %+v, want one histogram", all)
	}
	fh := all[0].Histograms[0].ToFloatHistogram()
	if fh.Count != 9 || fh.Sum != 9 || fh.PositiveBuckets[0] != 9 {
		t.Fatalf("merged histogram count %v sum %v buckets %v, want 9 (5 + 4)", fh.Count, fh.Sum, fh.PositiveBuckets)
	}
}

// A native histogram input's state goes where the input goes: it keeps
// counting when the input retires, continues when it comes back, and
// survives a state file.
func TestNativeHistogramStateFollowsItsInput(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{})
	h := func(count uint64) []byte { return countHistogram(t, count) }
	route := func(m *Merger, pod string, count uint64) {
		orig := lbls("__name__", "lat", "pod", pod)
		out := lbls("__name__", "lat")
		in, _ := wire.HashLabels(nil, orig)
		oh, _ := wire.HashLabels(nil, out)
		ser := wire.Series{Labels: out, Histograms: []wire.Histogram{{Timestamp: c.Now().UnixMilli(), Data: h(count)}}}
		tk := m.Begin()
		defer m.End(tk)
		m.Route(tk, in, oh, orig, &ser, c.Now().UnixMilli(), false)
	}
	// last flushes m and returns the count of the newest merged histogram.
	last := func(m *Merger, s *sink) float64 {
		t.Helper()
		c.Add(time.Second)
		flush(m, s)
		all := s.all()
		if len(all) == 0 || len(all[len(all)-1].Histograms) == 0 {
			t.Fatalf("nothing emitted: %+v", all)
		}
		hs := all[len(all)-1].Histograms
		return hs[len(hs)-1].ToFloatHistogram().Count
	}
	route(m, "a", 3)
	route(m, "b", 4)
	c.Add(time.Second)
	route(m, "a", 5)
	if got := last(m, s); got != 9 {
		t.Fatalf("count %v, want 9 (5 + 4)", got)
	}
	// b stops: past the staleness period it retires, and its count stays.
	for range 70 {
		c.Add(time.Second)
		route(m, "a", 6)
	}
	if got := last(m, s); got != 10 {
		t.Fatalf("count %v after b retired, want 10 (6 + 4)", got)
	}
	// b comes back: it continues from its last count, not added again.
	route(m, "b", 7)
	if got := last(m, s); got != 13 {
		t.Fatalf("count %v after b came back, want 13 (6 + 7)", got)
	}
	path := filepath.Join(t.TempDir(), "state")
	if err := m.SaveState(path); err != nil {
		t.Fatal(err)
	}
	m2, _, _ := newTestMerger(t, Rules{})
	m2.now = c.Now
	if _, err := m2.LoadState(path); err != nil {
		t.Fatal(err)
	}
	s2 := &sink{}
	c.Add(time.Second)
	route(m2, "a", 8) // b's count comes from the file
	if got := last(m2, s2); got != 15 {
		t.Fatalf("count %v after a restart, want 15 (8 + 7)", got)
	}
}

func TestCollisionsReport(t *testing.T) {
	m, _, _ := newTestMerger(t, Rules{})
	for _, pod := range []string{"a", "b", "c"} {
		feed(m, "req_total", pod, 1, 1000)
	}
	feed(m, "other_total", "a", 1, 1000)
	feed(m, "other_total", "b", 1, 1000)
	feed(m, "single", "a", 1, 1000)
	got := m.Collisions(10)
	if len(got) != 2 {
		t.Fatalf("report %+v, want 2 merged outputs", got)
	}
	if got[0].Series != `{__name__="req_total"}` || got[0].Inputs != 3 || fmt.Sprint(got[0].CollapsedLabels) != "[pod]" || got[0].Kind != "counter" {
		t.Fatalf("top entry %+v", got[0])
	}
	if top1 := m.Collisions(1); len(top1) != 1 {
		t.Fatalf("top=1 returned %d entries", len(top1))
	}
}

func TestMaxInputs(t *testing.T) {
	m, _, _ := newTestMerger(t, Rules{MaxInputs: 2})
	feed(m, "x_total", "a", 1, 1000)
	feed(m, "x_total", "b", 1, 1000) // merged, 2 inputs tracked
	if d := feed(m, "x_total", "c", 1, 1000); d != Dropped {
		t.Fatalf("a third input beyond max_inputs: %d, want Dropped", d)
	}
	// Forwarded untracked, a second input of it could later pass too,
	// and the downstream would get two values for one series.
	if d := feed(m, "y_total", "a", 1, 1000); d != Dropped {
		t.Fatalf("a new output beyond max_inputs: %d, want Dropped", d)
	}
}

func TestKindOf(t *testing.T) {
	m, _, _ := newTestMerger(t, Rules{Types: []TypeRule{{Match: rematch.MustCompile("^envoy_.*_cx_active$"), Kind: Gauge}}})
	m.ObserveMetadata([]wire.Metadata{{Type: 1, FamilyName: []byte("http_requests")}, {Type: 2, FamilyName: []byte("queue_total")}})
	f := func(name string, want Kind) {
		t.Helper()
		if got := m.kindOf([]byte(name), false); got != want {
			t.Errorf("kindOf(%q) = %v, want %v", name, got, want)
		}
	}
	f("istio_requests_total", Counter)
	f("x_bucket", Counter)
	f("x_count", Counter)
	f("x_sum", Counter)
	f("up", Gauge)
	f("http_requests", Counter) // metadata
	f("queue_total", Gauge)     // metadata beats the suffix
	f("envoy_cluster_upstream_cx_active", Gauge)
}

func TestPassThroughAllocsNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	m, _, _ := newTestMerger(t, Rules{})
	orig := lbls("__name__", "req_total", "pod", "a")
	out := lbls("__name__", "req_total")
	in, _ := wire.HashLabels(nil, orig)
	oh, _ := wire.HashLabels(nil, out)
	ser := wire.Series{Labels: out, Samples: []wire.Sample{{Value: 1, Timestamp: 1}}}
	tk := m.Begin()
	m.Route(tk, in, oh, orig, &ser, 1, false)
	if n := testing.AllocsPerRun(100, func() {
		if m.Route(tk, in, oh, orig, &ser, 1, false) != Pass {
			t.Fatal("want Pass")
		}
	}); n != 0 {
		t.Fatalf("Route of a known single-input series allocates %v times", n)
	}
	m.End(tk)
}

// Regression: a target that misses one scrape gets stale markers, then comes
// back with the same cumulative values. That must add nothing; it used to
// count the input's whole value a second time.
func TestInputBackAfterStaleMarkerIsNotCountedTwice(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{})
	stale := math.Float64frombits(value.StaleNaN)
	feed(m, "x_total", "a", 100, 1000)
	feed(m, "x_total", "b", 200, 1000)
	feed(m, "x_total", "a", 110, 2000)
	feed(m, "x_total", "b", stale, 2000)
	c.Add(time.Second)
	flush(m, s)
	feed(m, "x_total", "a", 120, 3000)
	feed(m, "x_total", "b", 205, 3000)
	c.Add(time.Second)
	flush(m, s)
	if vals, _ := emitted(s, "x_total"); fmt.Sprint(vals) != "[310 325]" {
		t.Fatalf("emitted %v, want [310 325]: b's stale marker keeps its 200, its return adds 5", vals)
	}
}

// Regression: a resent request holding a sample and then a stale marker must
// not count the sample twice.
func TestResentStaleMarkerIsIdempotent(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{})
	stale := math.Float64frombits(value.StaleNaN)
	feed(m, "x_total", "a", 100, 1000)
	for range 2 {
		orig := lbls("__name__", "x_total", "pod", "b")
		out := lbls("__name__", "x_total")
		in, _ := wire.HashLabels(nil, orig)
		oh, _ := wire.HashLabels(nil, out)
		ser := wire.Series{Labels: out, Samples: []wire.Sample{{Value: 3, Timestamp: 1000}, {Value: stale, Timestamp: 2000}}}
		tk := m.Begin()
		m.Route(tk, in, oh, orig, &ser, c.Now().UnixMilli(), false)
		m.End(tk)
	}
	c.Add(time.Second)
	flush(m, s)
	if vals, _ := emitted(s, "x_total"); fmt.Sprint(vals) != "[103]" {
		t.Fatalf("emitted %v, want [103]", vals)
	}
}

// A stale gauge input leaves the aggregate at once.
func TestStaleMarkerRemovesGaugeInput(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{})
	feed(m, "conns", "a", 3, 1000)
	feed(m, "conns", "b", 7, 1000)
	feed(m, "conns", "b", math.Float64frombits(value.StaleNaN), 2000)
	c.Add(time.Second)
	flush(m, s)
	if vals, _ := emitted(s, "conns"); fmt.Sprint(vals) != "[3]" {
		t.Fatalf("emitted %v, want [3]", vals)
	}
}

// The limiter's overflow series never pass through: even its first input is
// merged.
func TestForceMergeNeverPassesThrough(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{})
	orig := lbls("__name__", "x_total", "path", "/a")
	out := lbls("__name__", "x_total", "cardinal_overflow", "true")
	in, _ := wire.HashLabels(nil, orig)
	oh, _ := wire.HashLabels(nil, out)
	ser := wire.Series{Labels: out, Samples: []wire.Sample{{Value: 5, Timestamp: 1000}}}
	tk := m.Begin()
	if d := m.Route(tk, in, oh, orig, &ser, c.Now().UnixMilli(), true); d != Absorbed|NewInput {
		t.Fatalf("first folded input: %d, want Absorbed", d)
	}
	m.End(tk)
	c.Add(time.Second)
	flush(m, s)
	vals, ts := emitted(s, "x_total")
	if fmt.Sprint(vals) != "[5]" || ts[0] != 1000 {
		t.Fatalf("emitted %v at %v, want [5] at 1000", vals, ts)
	}
}

// Regression: after a restart, the first input of an output that the
// previous process emitted merged must not pass through with the sender's
// (older) timestamp: the downstream would reject it as out of order, and
// the sender's whole request with it.
func TestStateFileKeepsMergedOutputsAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "merge.state")
	m, c, s := newTestMerger(t, Rules{StateFile: path})
	now := c.Now().UnixMilli()
	feed(m, "req_total", "a", 10, now)
	feed(m, "req_total", "b", 5, now)
	feed(m, "single_total", "a", 1, now)
	c.Add(time.Second)
	flush(m, s)
	_, ts := emitted(s, "req_total")
	if len(ts) != 1 {
		t.Fatalf("emitted %v", ts)
	}
	if err := m.SaveState(path); err != nil {
		t.Fatal(err)
	}

	// The restarted process.
	m2 := New(Options{Rules: Rules{MaxInputs: 100, Staleness: time.Minute, StateFile: path}, Now: c.Now})
	n, err := m2.LoadState(path)
	if err != nil || n != 1 {
		t.Fatalf("LoadState = %d, %v; want the one merged output", n, err)
	}
	// a's sample that the old process had already absorbed, resent by a
	// sender that never got the answer: it is counted already.
	if d := feed(m2, "req_total", "a", 10, now); d.Base() != Absorbed {
		t.Fatalf("restored merged output: decision %d, want Absorbed", d)
	}
	if d := feed(m2, "single_total", "a", 2, now+1000); d != Pass {
		t.Fatalf("an output that was never merged: decision %d, want Pass", d)
	}
	s2 := &sink{}
	c.Add(time.Second)
	flush(m2, s2)
	if vals, _ := emitted(s2, "req_total"); len(vals) != 0 {
		t.Fatalf("a resent sample was emitted again: %v", vals)
	}
	// a moves on; b never reports again but keeps its 5: the restored
	// output continues exactly, not from the inputs that report first.
	feed(m2, "req_total", "a", 12, now+5000)
	c.Add(time.Second)
	flush(m2, s2)
	vals, ts2 := emitted(s2, "req_total")
	if fmt.Sprint(vals) != "[17]" || ts2[0] <= ts[0] {
		t.Fatalf("after restart emitted %v at %v, want [17] after %d", vals, ts2, ts[0])
	}

	// A corrupt file is an error, a missing one is a first start.
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m2.LoadState(path); err == nil {
		t.Fatal("LoadState accepted a corrupt file")
	}
	if n, err := m2.LoadState(filepath.Join(t.TempDir(), "none")); n != 0 || err != nil {
		t.Fatalf("missing file: %d, %v", n, err)
	}
}

// TestForgottenOutputComesBackAfterItsLastEmission: a merged output the
// merger forgot (inputs gone, retired ones forgotten) that comes back with
// samples older than what it emitted before emits after that, not at
// their timestamps: the downstream still holds the old emission and would
// refuse an older point.
func TestForgottenOutputComesBackAfterItsLastEmission(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{ForgetAfter: time.Minute})
	now := c.Now().UnixMilli()
	feed(m, "req_total", "a", 1, now)
	feed(m, "req_total", "b", 2, now)
	flush(m, s)
	_, ts := emitted(s, "req_total")
	if len(ts) == 0 {
		t.Fatal("nothing emitted")
	}
	last := ts[len(ts)-1]
	// Idle until the inputs retire, the retired ones are forgotten, and
	// then the output.
	for range 10 {
		c.Add(time.Minute)
		flush(m, s)
	}
	if n := m.merged.Load(); n != 0 {
		t.Fatalf("%d merged outputs left: the test must have the output forgotten", n)
	}
	// Back with samples from before its last emission.
	feed(m, "req_total", "a", 5, now-time.Hour.Milliseconds())
	feed(m, "req_total", "b", 6, now-time.Hour.Milliseconds())
	flush(m, s)
	_, ts = emitted(s, "req_total")
	for _, at := range ts[len(ts)-1:] {
		if at <= last {
			t.Fatalf("the output came back and emitted at %d, at or before its last emission at %d", at, last)
		}
	}
}
