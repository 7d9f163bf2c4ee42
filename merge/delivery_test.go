package merge

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/wire"

	"github.com/cardinal-gateway/cardinal/internal/rematch"
)

// newMetricMerger is newTestMerger with a registry to read metrics from.
func newMetricMerger(t testing.TB, rules Rules) (*Merger, *clock, *sink, *prometheus.Registry) {
	t.Helper()
	if rules.MaxInputs == 0 {
		rules.MaxInputs = 1 << 20
	}
	if rules.Staleness == 0 {
		rules.Staleness = time.Minute
	}
	reg := prometheus.NewRegistry()
	c := &clock{t: time.UnixMilli(1_700_000_000_000)}
	return New(Options{Rules: rules, Now: c.Now, Registerer: reg}), c, &sink{}, reg
}

func counterValue(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, mt := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range mt.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if mt.GetCounter() != nil {
				return mt.GetCounter().GetValue()
			}
			return mt.GetGauge().GetValue()
		}
	}
	return 0
}

// feedSeries routes one series with labels orig, whose output drops pod.
func feedSeries(m *Merger, orig []wire.Label, s wire.Series) Decision {
	var out []wire.Label
	for _, l := range orig {
		if string(l.Name) != "pod" {
			out = append(out, l)
		}
	}
	in, _ := wire.HashLabels(nil, orig)
	oh, _ := wire.HashLabels(nil, out)
	s.Labels = out
	tk := m.Begin()
	defer m.End(tk)
	return m.Route(tk, in, oh, orig, &s, m.now().UnixMilli(), false)
}

// lastValues returns the newest value delivered per output (by its labels).
func lastValues(s *sink) map[string]float64 {
	out := map[string]float64{}
	newest := map[string]int64{}
	for _, ts := range s.all() {
		key := fmt.Sprint(ts.Labels)
		for _, smp := range ts.Samples {
			if smp.Timestamp >= newest[key] {
				newest[key], out[key] = smp.Timestamp, smp.Value
			}
		}
	}
	return out
}

// Regression (issue 10, finding 2): an output used to be marked clean before
// its flush was delivered, so after an outage longer than one flush's
// retries, outputs whose inputs had stopped kept their old value
// downstream forever: 10 of 10 stayed at 1 against 150 acknowledged.
func TestOutageKeepsMergedOutputsPending(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{FlushInterval: time.Second, Staleness: time.Hour})
	const outputs = 10
	now := c.Now().UnixMilli()
	name := func(i int) string { return fmt.Sprintf("req%d_total", i) }
	for i := range outputs {
		feed(m, name(i), "v1", 1, now)
		feed(m, name(i), "v2", 0, now)
	}
	c.Add(time.Second)
	if !flush(m, s) {
		t.Fatal("first flush failed")
	}
	// The downstream goes away; the inputs go on (a rollout v1 → v2), then
	// stop for good while it is still away.
	s.fail = true
	for step := 1; step <= 6; step++ {
		c.Add(time.Second)
		for i := range outputs {
			feed(m, name(i), "v1", 1+float64(step)*10, now+int64(step)*1000)
			feed(m, name(i), "v2", float64(step)*15, now+int64(step)*1000)
		}
		if flush(m, s) {
			t.Fatal("a flush succeeded during the outage")
		}
	}
	s.fail = false
	c.Add(time.Second)
	if !flush(m, s) {
		t.Fatal("flush after the outage failed")
	}
	got := lastValues(s)
	for i := range outputs {
		key := fmt.Sprint([]prompb.Label{{Name: "__name__", Value: name(i)}})
		if got[key] != 151 {
			t.Errorf("%s: newest value downstream %v, want 151 (61 + 90)", name(i), got[key])
		}
	}
	if n := m.pending.Load(); n != 0 {
		t.Fatalf("%d points still pending after a successful flush", n)
	}
}

// Regression (issue 10, finding 3): summary quantiles were summed as
// counters and grew without bound: the p50 of two pods oscillating between
// 1 and 2 ms was emitted as 4, 6, 8 … 14 ms.
func TestSummaryQuantilesAreNotSummed(t *testing.T) {
	f := func(withMetadata bool) {
		t.Helper()
		m, c, s := newTestMerger(t, Rules{})
		if withMetadata {
			m.ObserveMetadata([]wire.Metadata{{Type: typeSummary, FamilyName: []byte("rpc_ms")}})
		}
		now := c.Now().UnixMilli()
		for step := range 8 {
			ts := now + int64(step)*15000
			for _, pod := range []string{"a", "b"} {
				p50 := float64(1 + (step+len(pod))%2) // 1, 2, 1, 2 … per pod, out of phase
				if pod == "b" {
					p50 = float64(1 + step%2)
				}
				feedSeries(m, lbls("__name__", "rpc_ms", "pod", pod, "quantile", "0.5"), wire.Series{Samples: []wire.Sample{{Value: p50, Timestamp: ts}}})
				feedSeries(m, lbls("__name__", "rpc_ms_count", "pod", pod), wire.Series{Samples: []wire.Sample{{Value: float64(10 * (step + 1)), Timestamp: ts}}})
				feedSeries(m, lbls("__name__", "rpc_ms_sum", "pod", pod), wire.Series{Samples: []wire.Sample{{Value: float64(15 * (step + 1)), Timestamp: ts}}})
			}
			c.Add(15 * time.Second)
			flush(m, s)
		}
		q, _ := emitted(s, "rpc_ms")
		for i, v := range q {
			if v != 2 {
				t.Errorf("metadata %v: quantile emission %d = %v, want 2 (the max of 1 and 2)", withMetadata, i, v)
			}
		}
		if len(q) == 0 {
			t.Fatalf("metadata %v: no quantile emitted", withMetadata)
		}
		cnt, _ := emitted(s, "rpc_ms_count")
		if cnt[len(cnt)-1] != 160 {
			t.Fatalf("metadata %v: _count emitted %v, want it to end at 160 (2 × 80)", withMetadata, cnt)
		}
	}
	f(false)
	f(true)
}

// Quantile policies are configurable like gauges.
func TestQuantilePolicy(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{Quantiles: []GaugeRule{{Match: mustAnchored("rpc_ms"), Policy: Min}}})
	now := c.Now().UnixMilli()
	feedSeries(m, lbls("__name__", "rpc_ms", "pod", "a", "quantile", "0.9"), wire.Series{Samples: []wire.Sample{{Value: 3, Timestamp: now}}})
	feedSeries(m, lbls("__name__", "rpc_ms", "pod", "b", "quantile", "0.9"), wire.Series{Samples: []wire.Sample{{Value: 5, Timestamp: now}}})
	c.Add(time.Second)
	flush(m, s)
	if q, _ := emitted(s, "rpc_ms"); fmt.Sprint(q) != "[3]" {
		t.Fatalf("emitted %v, want [3] (min)", q)
	}
}

// Regression (issue 10, finding 4): a counter input that came back after
// merge.staleness was counted twice: the output rose by 1,005 where the
// inputs rose by 5.
func TestCounterInputReturningAfterStalenessContinues(t *testing.T) {
	m, c, s, reg := newMetricMerger(t, Rules{Staleness: time.Minute, ForgetAfter: time.Hour})
	now := c.Now().UnixMilli()
	feed(m, "x_total", "a", 1000, now)
	feed(m, "x_total", "b", 10, now)
	c.Add(time.Second)
	flush(m, s)
	// a stops scraping for ten minutes (an outage longer than the
	// staleness); b goes on.
	for i := 1; i <= 10; i++ {
		c.Add(time.Minute)
		feed(m, "x_total", "b", 10, c.Now().UnixMilli())
		flush(m, s)
	}
	if m.retired.Load() != 1 {
		t.Fatalf("retired inputs %d, want 1 (a)", m.retired.Load())
	}
	feed(m, "x_total", "a", 1005, c.Now().UnixMilli())
	c.Add(time.Second)
	flush(m, s)
	vals, _ := emitted(s, "x_total")
	if last := vals[len(vals)-1]; last != 1015 {
		t.Fatalf("emitted %v; the last value is %v, want 1015 (1005 + 10)", vals, last)
	}
	if v := counterValue(t, reg, "cardinal_merge_revived_inputs_total"); v != 1 {
		t.Fatalf("revived %v, want 1", v)
	}
	for i := 1; i < len(vals); i++ {
		if vals[i] < vals[i-1] {
			t.Fatalf("the merged counter went down: %v", vals)
		}
	}
}

// Past merge.forget_after an input is forgotten (its contribution stays):
// if it comes back it counts from zero. The ceiling on remembered inputs
// forgets at once.
func TestForgottenInputs(t *testing.T) {
	m, c, s, reg := newMetricMerger(t, Rules{Staleness: time.Minute, ForgetAfter: 2 * time.Minute, MaxRetired: 1})
	now := c.Now().UnixMilli()
	feed(m, "x_total", "a", 100, now)
	feed(m, "x_total", "b", 10, now)
	feed(m, "x_total", "c", 1, now)
	c.Add(90 * time.Second)
	flush(m, s) // all three retire; only one fits
	if r := m.retired.Load(); r != 1 {
		t.Fatalf("retired %d, want 1 (max_retired_inputs)", r)
	}
	if v := counterValue(t, reg, "cardinal_merge_forgotten_inputs_total", "reason", "capacity"); v != 2 {
		t.Fatalf("forgotten{capacity} = %v, want 2", v)
	}
	c.Add(2 * time.Minute)
	flush(m, s)
	if v := counterValue(t, reg, "cardinal_merge_forgotten_inputs_total", "reason", "age"); v != 1 {
		t.Fatalf("forgotten{age} = %v, want 1", v)
	}
	vals, _ := emitted(s, "x_total")
	for _, v := range vals {
		// Every input ended, so the output ends with a stale marker.
		if v != 111 && !value.IsStaleNaN(v) {
			t.Fatalf("emitted %v: forgetting must keep the contributions (111)", vals)
		}
	}
	// Nothing of the output is remembered any more, so it is gone (after
	// its stale marker): a coming back is a new series of its own.
	if d := feed(m, "x_total", "a", 101, c.Now().UnixMilli()); d != Pass {
		t.Fatalf("a back after everything was forgotten: %d, want Pass", d)
	}
}

// Regression (issue 10, finding 5): one flush was one request, 100k merged
// outputs in one 26 MiB body, and one refused sample lost the whole flush
// and was sent again.
func TestFlushBatchesAndIsolatesRejectedSeries(t *testing.T) {
	m, c, s, reg := newMetricMerger(t, Rules{MaxSamplesPerSend: 500, MaxBytesPerSend: 64 << 10})
	const outputs = 5000
	now := c.Now().UnixMilli()
	for i := range outputs {
		name := fmt.Sprintf("m%05d_total", i)
		feed(m, name, "a", 1, now)
		feed(m, name, "b", 2, now)
	}
	var sizes []int
	s.reject = func(ts prompb.TimeSeries) string {
		if strings.HasSuffix(ts.Labels[0].Value, "7_total") {
			return "out_of_order"
		}
		return ""
	}
	var bodies []int
	deliver := func(ctx contextT, req *wire.Request, onReject func(int, string, error)) error {
		sizes = append(sizes, len(req.Series))
		bodies = append(bodies, req.Size())
		return s.deliver(ctx, req, onReject)
	}
	c.Add(time.Second)
	if !m.Flush(bg(), deliver, false) {
		t.Fatal("flush failed")
	}
	for i, n := range sizes {
		if n > 500 || bodies[i] > 64<<10 {
			t.Fatalf("batch %d: %d series, %d bytes, want at most 500 and 64 KiB", i, n, bodies[i])
		}
	}
	if got := len(s.all()); got != outputs-outputs/10 {
		t.Fatalf("%d series delivered, want %d", got, outputs-outputs/10)
	}
	if v := counterValue(t, reg, "cardinal_merge_rejected_samples_total", "reason", "out_of_order"); v != outputs/10 {
		t.Fatalf("rejected{out_of_order} = %v, want %d", v, outputs/10)
	}
	// Nothing rejected comes back.
	before := s.batches
	c.Add(time.Second)
	m.Flush(bg(), s.deliver, false)
	if s.batches != before {
		t.Fatalf("the next flush sent %d more batches with nothing new", s.batches-before)
	}
}

// Regression (issue 10, finding 6): emissions were stamped with the wall
// clock, and one sample stamped an hour ahead pinned every later emission
// of its output an hour ahead.
func TestEmissionTimestampsComeFromTheData(t *testing.T) {
	m, c, s, reg := newMetricMerger(t, Rules{MaxAhead: time.Minute})
	now := c.Now().UnixMilli()
	feed(m, "x_total", "a", 1, now-25_000)
	feed(m, "x_total", "b", 1, now-20_000)
	c.Add(time.Second)
	flush(m, s)
	// b's sender has a bogus sample an hour ahead.
	feed(m, "x_total", "b", 2, now+time.Hour.Milliseconds())
	c.Add(time.Second)
	flush(m, s)
	feed(m, "x_total", "a", 3, c.Now().UnixMilli()+60_000)
	feed(m, "x_total", "b", 3, c.Now().UnixMilli()+60_000)
	c.Add(2 * time.Minute)
	feed(m, "x_total", "a", 4, c.Now().UnixMilli())
	flush(m, s)
	vals, ts := emitted(s, "x_total")
	wantTs := []int64{now - 20_000, now + 2000 + 60_000}
	if len(ts) < 2 || ts[0] != wantTs[0] {
		t.Fatalf("emitted %v at %v: the first emission must carry the newest data time %d", vals, ts, wantTs[0])
	}
	for i := range ts {
		if i > 0 && ts[i] <= ts[i-1] {
			t.Fatalf("timestamps not strictly increasing: %v", ts)
		}
		if ts[i] > c.Now().UnixMilli()+60_000 {
			t.Fatalf("emission %d at %d is more than a minute ahead of the clock %d", i, ts[i], c.Now().UnixMilli())
		}
	}
	if last := ts[len(ts)-1]; last != c.Now().UnixMilli() {
		t.Fatalf("the last emission is at %d, want %d (a's newest sample): the future sample must not pin the output", last, c.Now().UnixMilli())
	}
	if v := counterValue(t, reg, "cardinal_merge_future_samples_total"); v != 1 {
		t.Fatalf("future samples %v, want 1", v)
	}
	if vals[len(vals)-1] != 7 {
		t.Fatalf("last value %v, want 7", vals[len(vals)-1])
	}
}

// Regression (issue 10, finding 6): a sender catching up an hour of WAL
// squeezed the whole increase into one or two flushes. The output keeps the
// shape of its data: about one point per flush interval of data time.
func TestCatchUpKeepsTheShapeOfTheData(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{FlushInterval: 15 * time.Second, Staleness: 2 * time.Hour})
	start := c.Now().Add(-time.Hour).UnixMilli()
	// Both pods' whole backlog arrives before the flusher runs, in the
	// order a sender replays it (each shard in time order).
	const steps = 240 // an hour at 15 s
	for step := range steps {
		ts := start + int64(step)*15_000
		feed(m, "x_total", "a", float64(step), ts)
		feed(m, "x_total", "b", float64(2*step), ts)
	}
	c.Add(time.Second)
	flush(m, s)
	vals, ts := emitted(s, "x_total")
	if len(vals) < 30 {
		t.Fatalf("%d points for an hour of data, want the hour's shape (at least 30): %v", len(vals), vals)
	}
	if vals[len(vals)-1] != 3*(steps-1) {
		t.Fatalf("the last value is %v, want %d", vals[len(vals)-1], 3*(steps-1))
	}
	// The rate stays smooth: no point carries much more than its share of
	// the increase.
	for i := 1; i < len(vals); i++ {
		dt := float64(ts[i]-ts[i-1]) / 1000
		rate := (vals[i] - vals[i-1]) / dt
		if dt <= 0 || rate > 0.5 { // the data's rate is 3 per 15 s = 0.2/s
			t.Fatalf("point %d: %v over %.0f s, a spike: %v at %v", i, vals[i]-vals[i-1], dt, vals, ts)
		}
	}
	if ts[0] < start || ts[len(ts)-1] > c.Now().UnixMilli() {
		t.Fatalf("points outside the data's time range: %v", ts)
	}
}

// Regression (issue 10, finding 7): merged outputs whose inputs had all
// ended never got a stale marker and lingered in queries.
func TestEndedOutputGetsOneStaleMarker(t *testing.T) {
	m, c, s, reg := newMetricMerger(t, Rules{})
	stale := math.Float64frombits(value.StaleNaN)
	now := c.Now().UnixMilli()
	feed(m, "x_total", "a", 1, now)
	feed(m, "x_total", "b", 2, now)
	c.Add(time.Second)
	flush(m, s)
	feed(m, "x_total", "a", stale, now+15000)
	c.Add(time.Second)
	flush(m, s) // b is still live: no marker
	feed(m, "x_total", "b", stale, now+15000)
	for range 3 {
		c.Add(time.Second)
		flush(m, s)
	}
	vals, ts := emitted(s, "x_total")
	markers := 0
	for i, v := range vals {
		if value.IsStaleNaN(v) {
			markers++
			if i != len(vals)-1 {
				t.Fatalf("stale marker before the end: %v", vals)
			}
		}
	}
	if markers != 1 || counterValue(t, reg, "cardinal_merge_stale_markers_total") != 1 {
		t.Fatalf("emitted %v at %v: want exactly one stale marker, at the end", vals, ts)
	}
	// An input coming back revives the output.
	feed(m, "x_total", "a", 5, now+60000)
	c.Add(time.Second)
	flush(m, s)
	vals, _ = emitted(s, "x_total")
	if last := vals[len(vals)-1]; last != 7 {
		t.Fatalf("after a came back: last %v, want 7 (5 + b's 2)", last)
	}
}

// Merging two histograms that cannot be added (exponential and custom
// buckets) is counted and skips the input, never panics.
func TestIncompatibleHistogramsAreSkipped(t *testing.T) {
	m, c, s, reg := newMetricMerger(t, Rules{})
	now := c.Now().UnixMilli()
	exp := &histogram.FloatHistogram{Schema: 0, Count: 2, Sum: 3, PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []float64{2}}
	cus := &histogram.FloatHistogram{Schema: histogram.CustomBucketsSchema, Count: 1, Sum: 1, PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []float64{1}, CustomValues: []float64{1}}
	// a passes through first; its value is known to the merger only from
	// its second sample on.
	for i, h := range []*histogram.FloatHistogram{exp, cus, exp, cus} {
		ts := now + int64(i)
		ph := prompb.FromFloatHistogram(ts, h)
		data, err := ph.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		feedSeries(m, lbls("__name__", "lat", "pod", string(rune('a'+i%2))), wire.Series{Histograms: []wire.Histogram{{Timestamp: ts, Data: data}}})
	}
	c.Add(time.Second)
	flush(m, s)
	if v := counterValue(t, reg, "cardinal_merge_histogram_errors_total"); v == 0 {
		t.Fatal("the incompatible histogram was not counted")
	}
	got := s.all()
	if len(got) != 1 || len(got[0].Histograms) != 1 {
		t.Fatalf("delivered %+v, want one histogram", got)
	}
}

// A native histogram with a NaN zero threshold, which Prometheus' receiver
// accepts, is counted and skipped: Prometheus' arithmetic would never
// finish adding it (its zero-threshold reconciliation loops until the two
// thresholds are equal).
func TestNaNZeroThresholdHistogramsAreSkipped(t *testing.T) {
	m, c, s, reg := newMetricMerger(t, Rules{})
	now := c.Now().UnixMilli()
	ok := &histogram.FloatHistogram{Schema: 0, Count: 2, Sum: 3, ZeroThreshold: 1e-128, PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []float64{2}}
	bad := ok.Copy()
	bad.ZeroThreshold = math.NaN()
	for i, h := range []*histogram.FloatHistogram{ok, bad, ok, bad, ok, bad} {
		ts := now + int64(i)
		ph := prompb.FromFloatHistogram(ts, h)
		data, err := ph.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		feedSeries(m, lbls("__name__", "lat", "pod", string(rune('a'+i%3))), wire.Series{Histograms: []wire.Histogram{{Timestamp: ts, Data: data}}})
	}
	c.Add(time.Second)
	done := make(chan struct{})
	go func() {
		flush(m, s)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the flush did not finish: a NaN zero threshold reached the histogram arithmetic")
	}
	if v := counterValue(t, reg, "cardinal_merge_histogram_errors_total"); v == 0 {
		t.Fatal("the histogram with a NaN zero threshold was not counted")
	}
	for _, ts := range s.all() {
		for _, h := range ts.Histograms {
			if math.IsNaN(h.ZeroThreshold) {
				t.Fatalf("a merged histogram has a NaN zero threshold: %+v", h)
			}
		}
	}
}

// Points queued while a batch is in flight are delivered by the next flush;
// the in-flight one is removed only when acknowledged.
func TestAbsorbDuringDelivery(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{FlushInterval: time.Second})
	now := c.Now().UnixMilli()
	feed(m, "x_total", "a", 1, now)
	feed(m, "x_total", "b", 1, now)
	c.Add(time.Second)
	deliver := func(ctx contextT, req *wire.Request, onReject func(int, string, error)) error {
		// While the downstream works, the inputs move on by more than a
		// flush interval of data time.
		feed(m, "x_total", "a", 2, now+5000)
		feed(m, "x_total", "a", 3, now+10000)
		return s.deliver(ctx, req, onReject)
	}
	m.Flush(bg(), deliver, false)
	c.Add(time.Second)
	flush(m, s)
	vals, ts := emitted(s, "x_total")
	if fmt.Sprint(vals) != "[2 3 4]" {
		t.Fatalf("emitted %v at %v, want [2 3 4]", vals, ts)
	}
}

type contextT = context.Context

func bg() context.Context { return context.Background() }

func mustAnchored(re string) *rematch.Matcher { return rematch.MustCompile("^(?:" + re + ")$") }

// Regression (issue 10, found by TestE2ESenderOutage): a restart restored
// merged outputs without their inputs, so the first inputs to report after
// it (the tail of a scrape split across two batches) made a partial sum:
// 330 emitted before the restart, 110 after, then 360. The state file now
// keeps every input's state, and the output continues where it was.
func TestRestartResumesExactSums(t *testing.T) {
	path := filepath.Join(t.TempDir(), "merge.state")
	m, c, s := newTestMerger(t, Rules{StateFile: path})
	now := c.Now().UnixMilli()
	for i, pod := range []string{"a", "b", "c"} {
		feed(m, "x_total", pod, float64(100+10*i), now)
	}
	c.Add(time.Second)
	flush(m, s)
	if vals, _ := emitted(s, "x_total"); fmt.Sprint(vals) != "[330]" {
		t.Fatalf("before the restart: %v", vals)
	}
	if err := m.SaveState(path); err != nil {
		t.Fatal(err)
	}
	m2 := New(Options{Rules: Rules{MaxInputs: 100, Staleness: time.Minute, StateFile: path}, Now: c.Now})
	if n, err := m2.LoadState(path); n != 1 || err != nil {
		t.Fatalf("LoadState = %d, %v", n, err)
	}
	// Only a reports in the first batch after the restart.
	feed(m2, "x_total", "a", 105, now+15000)
	s2 := &sink{}
	c.Add(time.Second)
	flush(m2, s2)
	feed(m2, "x_total", "b", 115, now+15000)
	feed(m2, "x_total", "c", 125, now+15000)
	c.Add(time.Second)
	flush(m2, s2)
	vals, _ := emitted(s2, "x_total")
	if fmt.Sprint(vals) != "[335 345]" {
		t.Fatalf("after the restart emitted %v, want [335 345]: a's 5, then b's and c's", vals)
	}
	if m2.tracked.Load() != 3 {
		t.Fatalf("tracked %d inputs after the restore, want 3", m2.tracked.Load())
	}
}

// Regression (issue 10, found by TestE2ESenderOutage): a float counter's sum
// over its inputs in map order changed in its last bit from flush to
// flush, and a 1-ulp decrease reads as a counter reset in rate().
func TestMergedCounterNeverDecreases(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{FlushInterval: time.Second})
	now := c.Now().UnixMilli()
	for step := range 60 {
		for i, pod := range []string{"a", "b", "c", "d", "e"} {
			feed(m, "bytes_sum", pod, []float64{0.1, 0.2, 0.3, 1e-17, 7.7}[i], now+int64(step)*1000)
		}
		c.Add(time.Second)
		flush(m, s)
	}
	vals, _ := emitted(s, "bytes_sum")
	if len(vals) < 50 {
		t.Fatalf("%d emissions", len(vals))
	}
	for i := 1; i < len(vals); i++ {
		if vals[i] < vals[i-1] {
			t.Fatalf("emission %d went down: %v after %v", i, vals[i], vals[i-1])
		}
	}
}

// Regression (issue 11, found by the reliability suite's kill -9 test):
// the state a crashed process left was up to a minute old, so after the
// restart the first inputs to report made a sum below what the killed
// process had emitted (a counter going down), stamped at or before its last
// timestamps (the receiver refused them as duplicates). Restored from a
// save that was not the last, an output waits for its inputs to report
// again and emits after the restart's time.
func TestCrashRestoreWaitsForItsInputs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "merge.state")
	m, c, s := newTestMerger(t, Rules{StateFile: path, FlushInterval: time.Second})
	now := c.Now().UnixMilli()
	for i, pod := range []string{"a", "b", "c"} {
		feed(m, "x_total", pod, float64(100*(i+1)), now)
	}
	c.Add(time.Second)
	flush(m, s)
	m.saveState(false) // the periodic save
	// The process goes on for a while after it: absorbs and emits more.
	for step := int64(1); step <= 5; step++ {
		for i, pod := range []string{"a", "b", "c"} {
			feed(m, "x_total", pod, float64(100*(i+1))+float64(step), now+step*1000)
		}
		c.Add(time.Second)
		flush(m, s)
	}
	vals, ts := emitted(s, "x_total")
	lastV, lastT := vals[len(vals)-1], ts[len(ts)-1]
	// kill -9; the restarted process reads the old save.
	c.Add(3 * time.Second)
	m2 := New(Options{Rules: Rules{MaxInputs: 100, Staleness: time.Minute, StateFile: path, FlushInterval: time.Second}, Now: c.Now})
	if n, err := m2.LoadState(path); n != 1 || err != nil {
		t.Fatalf("LoadState = %d, %v", n, err)
	}
	s2 := &sink{}
	// a's next sample arrives first: no partial sum.
	feed(m2, "x_total", "a", 107, now+7000)
	c.Add(time.Second)
	flush(m2, s2)
	if got, _ := emitted(s2, "x_total"); len(got) != 0 {
		t.Fatalf("emitted %v before every restored input reported", got)
	}
	feed(m2, "x_total", "b", 207, now+7000)
	feed(m2, "x_total", "c", 307, now+7000)
	c.Add(time.Second)
	flush(m2, s2)
	vals2, ts2 := emitted(s2, "x_total")
	if len(vals2) != 1 || vals2[0] < lastV || ts2[0] <= lastT || vals2[0] != 621 {
		t.Fatalf("after the crash emitted %v at %v; want 621 (107+207+307), not below %v, after %d", vals2, ts2, lastV, lastT)
	}
	// An input that never reports again does not hold the output forever.
	m3 := New(Options{Rules: Rules{MaxInputs: 100, Staleness: time.Hour, StateFile: path, FlushInterval: time.Second}, Now: c.Now})
	if _, err := m3.LoadState(path); err != nil {
		t.Fatal(err)
	}
	s3 := &sink{}
	feed(m3, "x_total", "a", 108, c.Now().UnixMilli())
	c.Add(3 * time.Minute)
	flush(m3, s3)
	if got, _ := emitted(s3, "x_total"); len(got) != 1 {
		t.Fatalf("after the restore grace emitted %v, want one point", got)
	}
}
