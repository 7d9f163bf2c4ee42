package gateway

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/config"
)

// seedBuilder writes FuzzGateway programs. It follows the clock the
// program sets, so that the requests it embeds carry scrape-like
// timestamps.
type seedBuilder struct {
	t   testing.TB
	b   []byte
	now int64
}

func newSeed(t testing.TB) *seedBuilder { return &seedBuilder{t: t, now: fuzzEpoch} }

// raw embeds req, encoded by gogo, as a verbatim body.
func (s *seedBuilder) raw(req *prompb.WriteRequest) *seedBuilder {
	body, err := req.Marshal()
	if err != nil {
		s.t.Fatal(err)
	}
	if len(body) > maxRawBody {
		s.t.Fatalf("seed body of %d bytes, the limit is %d", len(body), maxRawBody)
	}
	s.b = append(s.b, opByte(opRaw), 0xff, byte(len(body)>>8), byte(len(body)))
	s.b = append(s.b, body...)
	return s
}

// clock advances the clock by d, one of clockSteps.
func (s *seedBuilder) clock(d time.Duration) *seedBuilder {
	i := slices.Index(clockSteps, d)
	if i < 0 {
		s.t.Fatalf("no clock step of %s", d)
	}
	s.b = append(s.b, opByte(opClock), byte(i), 0)
	s.now += d.Milliseconds()
	return s
}

func (s *seedBuilder) flush(mode flushMode, param byte) *seedBuilder {
	s.b = append(s.b, opByte(opFlush), byte(mode), param)
	return s
}

func (s *seedBuilder) sender(mode senderMode, param byte) *seedBuilder {
	s.b = append(s.b, opByte(opSender), byte(mode), param)
	return s
}

// reload applies fuzzConfigs[i].
func (s *seedBuilder) reload(i int) *seedBuilder {
	s.b = append(s.b, opByte(opReload), byte(i))
	return s
}

func (s *seedBuilder) op(op int, args ...byte) *seedBuilder {
	s.b = append(s.b, opByte(op))
	s.b = append(s.b, args...)
	return s
}

// scrape is one scrape of a small mesh at the builder's clock: one app of
// three pods (the pods collapse) and a fourth app, counters, gauges, a
// summary and a native histogram per pod, fresh request ids and trace ids,
// and the metadata that types them. Seeds stay small: the fuzzer minimises
// every input that finds new coverage, byte by byte.
func (s *seedBuilder) scrape(step int) *prompb.WriteRequest {
	ts := s.now
	req := &prompb.WriteRequest{Metadata: []prompb.MetricMetadata{
		{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "req_total"},
		{Type: prompb.MetricMetadata_SUMMARY, MetricFamilyName: "rpc_latency"},
		{Type: prompb.MetricMetadata_HISTOGRAM, MetricFamilyName: "rpc_duration_seconds"},
		{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "mem_bytes"},
	}}
	for _, app := range []string{"a", "b"} {
		for pod := range 3 {
			if app == "b" && pod > 0 {
				break
			}
			base := []string{"app", app, "namespace", "ns-a", "pod", fmt.Sprintf("p%d", pod)}
			v := float64(10*step + pod)
			add := func(name string, v float64, kv ...string) {
				req.Timeseries = append(req.Timeseries, seedSeries(name, append(slices.Clone(base), kv...), prompb.Sample{Value: v, Timestamp: ts}))
			}
			add("req_total", v, "response_code", "200", "request_id", fmt.Sprintf("r%d", step%6),
				"trace_id", traceValue("trace_id", byte(step*7+pod)))
			add("mem_bytes", float64(100+pod))
			add("rpc_latency", 0.3*float64(pod+1), "quantile", "0.99")
			add("rpc_latency_count", v)
			u := uint64(step + 1)
			h := &histogram.Histogram{
				Schema: 3, ZeroThreshold: 1e-128, ZeroCount: 1, Sum: float64(step) * 1.5,
				PositiveSpans:   []histogram.Span{{Offset: 0, Length: 2}},
				PositiveBuckets: []int64{int64(u), int64(pod)},
			}
			h.Count = 1 + u + u + uint64(pod)
			hs := seedSeries("rpc_duration_seconds", base)
			hs.Histograms = []prompb.Histogram{prompb.FromIntHistogram(ts, h)}
			req.Timeseries = append(req.Timeseries, hs)
		}
	}
	return req
}

func seedSeries(name string, kv []string, samples ...prompb.Sample) prompb.TimeSeries {
	ls := []prompb.Label{{Name: "__name__", Value: name}}
	for i := 0; i+1 < len(kv); i += 2 {
		ls = append(ls, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	slices.SortFunc(ls, func(a, b prompb.Label) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return prompb.TimeSeries{Labels: ls, Samples: samples}
}

// fuzzSeeds are FuzzGateway's seed corpus.
func fuzzSeeds(t testing.TB) [][]byte {
	var seeds [][]byte

	// A mesh scraped every 15s and flushed in between, through every
	// deliverer.
	s := newSeed(t)
	for step, mode := range []flushMode{flushAck, flushForward, flushReject, flushFail} {
		s.raw(s.scrape(step)).clock(15*time.Second).flush(mode, byte(step))
	}
	seeds = append(seeds, s.b)

	// Issue 10's crash: two inputs collide on one output, and the second
	// carries a histogram whose spans claim 5 buckets but hold 1 delta.
	s = newSeed(t)
	broken := prompb.Histogram{
		Count: &prompb.Histogram_CountInt{CountInt: 1}, ZeroThreshold: 1e-128,
		PositiveSpans: []prompb.BucketSpan{{Offset: 0, Length: 5}}, PositiveDeltas: []int64{1},
	}
	valid := prompb.FromIntHistogram(0, &histogram.Histogram{
		Count: 3, ZeroThreshold: 1e-128, ZeroCount: 1,
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{1, 0},
	})
	for step := range 3 {
		p0 := seedSeries("rpc_duration_seconds", []string{"app", "a", "namespace", "ns-a", "pod", "p0"})
		p1 := seedSeries("rpc_duration_seconds", []string{"app", "a", "namespace", "ns-a", "pod", "p1"})
		v, b := valid, broken
		v.Timestamp, b.Timestamp = s.now, s.now
		p0.Histograms = []prompb.Histogram{v}
		p1.Histograms = []prompb.Histogram{b}
		s.raw(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{p0, p1}})
		if step == 1 {
			p1.Histograms = []prompb.Histogram{v}
			s.raw(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{p1}})
		}
		s.clock(15*time.Second).flush(flushForward, 0)
	}
	seeds = append(seeds, s.b)

	// A sender catching up an hour of backlog for two colliding counters
	// and histograms in one request, then live again.
	s = newSeed(t)
	s.clock(time.Hour)
	backlog := &prompb.WriteRequest{}
	for pod := range 2 {
		c := seedSeries("req_total", []string{"app", "a", "namespace", "ns-a", "pod", fmt.Sprintf("p%d", pod)})
		hs := seedSeries("rpc_duration_seconds", []string{"app", "a", "namespace", "ns-a", "pod", fmt.Sprintf("p%d", pod)})
		for i := range 80 {
			ts := s.now - time.Hour.Milliseconds() + int64(i)*45_000
			c.Samples = append(c.Samples, prompb.Sample{Value: float64(i * (pod + 1)), Timestamp: ts})
			if i%8 == 0 {
				u := uint64(i + 1)
				hs.Histograms = append(hs.Histograms, prompb.FromIntHistogram(ts, &histogram.Histogram{
					Schema: 0, Count: u, Sum: float64(i),
					PositiveSpans: []histogram.Span{{Offset: 1, Length: 1}}, PositiveBuckets: []int64{int64(u)},
				}))
			}
		}
		backlog.Timeseries = append(backlog.Timeseries, c, hs)
	}
	s.raw(backlog).flush(flushAck, 0).clock(15*time.Second).raw(s.scrape(1)).flush(flushForward, 0)
	seeds = append(seeds, s.b)

	// A downstream outage of hours: pass-through and merged data fail,
	// merged points pile up and are thinned, then everything drains.
	s = newSeed(t)
	s.sender(senderFail, 0)
	for step := range 3 {
		s.raw(s.scrape(step)).flush(flushForward, 0).flush(flushFail, byte(step)).clock(30 * time.Minute)
	}
	s.sender(senderAccept, 0).flush(flushForward, 0).flush(flushAck, 0)
	seeds = append(seeds, s.b)

	// A downstream with Prometheus' rules and senders retrying, out of
	// order and ahead of time.
	s = newSeed(t)
	s.sender(senderTSDB, 0)
	for step := range 2 {
		req := s.scrape(step)
		for i := range req.Timeseries {
			for j := range req.Timeseries[i].Samples {
				req.Timeseries[i].Samples[j].Timestamp -= int64(i%3) * 20_000
			}
		}
		s.raw(req).raw(req).clock(15*time.Second).flush(flushForward, 0)
	}
	s.sender(senderPoison, 1).raw(s.scrape(5)).clock(15*time.Second).flush(flushForward, 0)
	seeds = append(seeds, s.b)

	// Reloads through every configuration between scrapes.
	s = newSeed(t)
	for step, cfg := range []int{1, 2, 3, 0} {
		s.raw(s.scrape(step)).clock(15*time.Second).flush(flushAck, 0).reload(cfg)
	}
	seeds = append(seeds, s.b)

	// One workload with more outputs than its cap: the rest fold into its
	// overflow series, histograms included; stale markers end them.
	s = newSeed(t)
	for step := range 3 {
		req := &prompb.WriteRequest{}
		for i, code := range []string{"200", "201", "404", "500", "503"} {
			for _, zone := range []string{"z-1", "zz"} {
				v := float64(step*10 + i)
				if step == 2 {
					v = math.Float64frombits(value.StaleNaN)
				}
				req.Timeseries = append(req.Timeseries, seedSeries("req_total",
					[]string{"app", "a", "namespace", "ns-b", "response_code", code, "zone", zone},
					prompb.Sample{Value: v, Timestamp: s.now}))
			}
			hs := seedSeries("rpc_duration_seconds", []string{"app", "a", "namespace", "ns-b", "response_code", code})
			hs.Histograms = []prompb.Histogram{prompb.FromFloatHistogram(s.now, &histogram.FloatHistogram{
				Schema: histogram.CustomBucketsSchema, Count: float64(step + 1), Sum: 1,
				PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []float64{float64(step + 1)},
				CustomValues: []float64{0.5, 1},
			})}
			req.Timeseries = append(req.Timeseries, hs)
		}
		s.raw(req).clock(15*time.Second).flush(flushAck, 0)
	}
	s.clock(5*time.Minute).op(opMaintain).op(opObserve).flush(flushAck, 0)
	seeds = append(seeds, s.b)

	// A backlog longer than an output's queue while the downstream fails:
	// the queue is thinned, then drains.
	s = newSeed(t)
	s.clock(time.Hour)
	start := s.now - 30*time.Minute.Milliseconds()
	thin := func(from, n int) *prompb.WriteRequest {
		req := &prompb.WriteRequest{}
		for pod := range 2 {
			c := seedSeries("req_total", []string{"app", "c", "namespace", "ns-b", "pod", fmt.Sprintf("p%d", pod)})
			for i := from; i < from+n; i++ {
				c.Samples = append(c.Samples, prompb.Sample{Value: float64(i), Timestamp: start + int64(i)*15_000})
			}
			req.Timeseries = append(req.Timeseries, c)
		}
		return req
	}
	s.raw(thin(0, 1)).raw(thin(1, 1)).flush(flushAck, 0).raw(thin(2, 110)).flush(flushFail, 0).
		clock(15*time.Second).flush(flushForward, 0).flush(flushAck, 0)
	seeds = append(seeds, s.b)

	// A restart between scrapes: merged outputs continue from the state
	// file.
	s = newSeed(t)
	s.raw(s.scrape(0)).clock(15*time.Second).raw(s.scrape(1)).flush(flushAck, 0).op(opRestart, 0).
		clock(15*time.Second).raw(s.scrape(2)).clock(15*time.Second).flush(flushAck, 0)
	seeds = append(seeds, s.b)

	// The bugs of issue 10's first campaign, fixed since: before the
	// fixes, each of these seeds failed.
	//
	// A workload named by a label value that is not UTF-8.
	s = newSeed(t)
	s.raw(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		seedSeries("up", []string{"app", "a", "namespace", "ns\xa6"}, prompb.Sample{Value: 1, Timestamp: s.now}),
	}}).op(opObserve)
	seeds = append(seeds, s.b)
	// Two inputs of one output with histograms of a reserved schema and
	// different zero thresholds.
	s = newSeed(t)
	for range 2 {
		req := &prompb.WriteRequest{}
		for pod, zt := range []float64{0.001, 0} {
			hs := seedSeries("rpc_duration_seconds", []string{"app", "a", "namespace", "ns-a", "pod", fmt.Sprintf("p%d", pod)})
			hs.Histograms = []prompb.Histogram{prompb.FromIntHistogram(s.now, &histogram.Histogram{
				Schema: 20, ZeroThreshold: zt, Count: 1, Sum: 1,
				PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []int64{1},
			})}
			req.Timeseries = append(req.Timeseries, hs)
		}
		s.raw(req).clock(15 * time.Second)
	}
	s.flush(flushAck, 0)
	seeds = append(seeds, s.b)
	// A merged output passes through after a reload to fuzzConfigC.
	s = newSeed(t)
	s.raw(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		seedSeries("req_total", []string{"app", "a", "namespace", "ns-a", "pod", "p0"}, prompb.Sample{Value: 1, Timestamp: s.now}),
		seedSeries("req_total", []string{"app", "a", "namespace", "ns-a", "pod", "p1"}, prompb.Sample{Value: 1, Timestamp: s.now}),
	}}).flush(flushAck, 0).reload(2)
	s.raw(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		seedSeries("req_total", []string{"app", "a", "namespace", "ns-a"}, prompb.Sample{Value: 5, Timestamp: s.now - 60_000}),
	}}).clock(15*time.Second).flush(flushAck, 0)
	seeds = append(seeds, s.b)

	// Programs of structured operations from a few fixed random streams.
	for seed := range 4 {
		rng := rand.New(rand.NewPCG(uint64(seed), 10))
		b := make([]byte, 400)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		seeds = append(seeds, b)
	}
	return seeds
}

// TestFuzzSeedsExercise guards FuzzGateway against proving nothing: its
// seeds, which `go test` runs, must reach every stage the target exists
// for.
func TestFuzzSeedsExercise(t *testing.T) {
	var cfgs []*config.Config
	for _, yml := range fuzzConfigs {
		cfg, err := config.Parse([]byte(yml))
		if err != nil {
			t.Fatal(err)
		}
		cfgs = append(cfgs, cfg)
	}
	var total fuzzStats
	for i, seed := range fuzzSeeds(t) {
		h := newFuzzHarness(t, cfgs)
		h.run(seed)
		st := h.stats
		t.Logf("seed %d: %+v", i, st)
		total.processed += st.processed
		total.forwarded += st.forwarded
		total.merged += st.merged
		total.folded += st.folded
		total.invalid += st.invalid
		total.droppedByMerge += st.droppedByMerge
		total.passBodies += st.passBodies
		total.refusedBodies += st.refusedBodies
		total.mergedPoints += st.mergedPoints
		total.mergedHistograms += st.mergedHistograms
		total.staleMarkers += st.staleMarkers
		total.rejectedPoints += st.rejectedPoints
		total.restarts += st.restarts
	}
	if total.restarts == 0 {
		t.Error("the seeds exercise no restart")
	}
	for name, n := range map[string]int{
		"forwarded samples": total.forwarded, "merged samples": total.merged, "folded samples": total.folded,
		"invalid samples": total.invalid, "refused bodies": total.refusedBodies, "merged points": total.mergedPoints,
		"merged histograms": total.mergedHistograms, "stale markers": total.staleMarkers, "rejected points": total.rejectedPoints,
	} {
		if n == 0 {
			t.Errorf("the seeds exercise no %s", name)
		}
	}
}
