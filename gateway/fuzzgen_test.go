package gateway

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
)

// This file turns FuzzGateway's bytes into traffic: remote-write requests
// drawn from a small alphabet of metrics and labels, so that different
// inputs collapse into one output (same app, different pods), with the
// float samples, native histograms, exemplars and metadata that break
// things: NaN and stale markers, resets, duplicate, out-of-order and absurd
// timestamps, histograms valid and broken in every way Prometheus checks.

// fuzzInput reads decisions from the fuzzer's bytes. Once they run out
// every read returns zero, so any input is a complete program.
type fuzzInput struct{ data []byte }

func (in *fuzzInput) more() bool { return len(in.data) > 0 }

func (in *fuzzInput) byte() byte {
	if len(in.data) == 0 {
		return 0
	}
	b := in.data[0]
	in.data = in.data[1:]
	return b
}

func (in *fuzzInput) intn(n int) int { return int(in.byte()) % n }

func (in *fuzzInput) bool() bool { return in.byte()&1 == 1 }

func (in *fuzzInput) u16() int { return int(in.byte())<<8 | int(in.byte()) }

func (in *fuzzInput) u64() uint64 {
	var b [8]byte
	for i := range b {
		b[i] = in.byte()
	}
	return binary.LittleEndian.Uint64(b[:])
}

// take returns the next n bytes, or fewer when the input ends.
func (in *fuzzInput) take(n int) []byte {
	n = min(n, len(in.data))
	b := in.data[:n]
	in.data = in.data[n:]
	return b
}

// Operations, in the order of fuzzOps: the byte read modulo len(fuzzOps)
// picks one. Requests come up most often.
const (
	opRaw      = iota // a remote-write body taken verbatim from the input
	opRequest         // a request built from the alphabet
	opMutated         // a built request with a few bytes overwritten
	opClock           // advance the clock
	opFlush           // flush the merger through a chosen deliverer
	opSender          // change how the downstream answers
	opReload          // apply another configuration
	opMaintain        // what the background goroutines do: sweeps
	opObserve         // read the admin and metrics views
	opRestart         // save the merge state, start a new gateway on it
)

var fuzzOps = []int{
	opRaw, opRequest, opRequest, opRequest, opRequest, opMutated,
	opClock, opClock, opFlush, opFlush, opSender, opReload, opMaintain, opObserve, opRestart,
}

// opByte returns the byte that selects op.
func opByte(op int) byte { return byte(slices.Index(fuzzOps, op)) }

// Bounds that keep one iteration fast.
const (
	maxFuzzOps          = 64
	maxFuzzInput        = 64 << 10
	maxRawBody          = 16 << 10
	maxSeriesPerRequest = 8
)

// fuzzMetric is one metric name of the alphabet.
type fuzzMetric struct {
	name  string
	extra string // a label the series carries: quantile or le
	hist  bool   // carries native histograms
}

var fuzzMetrics = []fuzzMetric{
	{name: "req_total"},
	{name: "cpu_usage"},
	{name: "mem_bytes"},
	{name: "rpc_duration_seconds", hist: true},
	{name: "rpc_latency", extra: "quantile"},
	{name: "rpc_latency_sum"},
	{name: "rpc_latency_count"},
	{name: "http_duration_bucket", extra: "le"},
	{name: "dropped_metric"},
	{name: "weird_counter"},
	{name: "weird_total"},
	{name: "grpc_handled_seconds", hist: true},
}

// Families the metadata may describe.
var fuzzFamilies = []string{
	"req", "req_total", "cpu_usage", "mem_bytes", "rpc_duration_seconds", "rpc_latency",
	"http_duration", "weird_counter", "weird", "grpc_handled_seconds",
}

// fuzzLabels are the optional labels, in the order of the presence bits.
// namespace and app are present unless their bit is set; the others only
// when it is.
var fuzzLabels = []struct {
	name   string
	values []string
}{
	{"namespace", []string{"ns-a", "ns-b"}},
	{"app", []string{"a", "b", "c", "d", "e"}},
	{"pod", []string{"p0", "p1", "p2", "p3"}},
	{"instance", []string{"10.0.0.1:80", "10.0.0.2:80"}},
	{"request_id", []string{"r0", "r1", "r2", "r3", "r4", "r5"}},
	{"zone", []string{"z-1", "z-2", "zz"}},
	{"response_code", []string{"200", "500", "503"}},
	{"trace_id", nil},    // a trace id made from a byte
	{"traceparent", nil}, // likewise, W3C form
	{"color", []string{"red", "blue"}},
}

var fuzzQuantiles = []string{"0.5", "0.99", "1"}
var fuzzLes = []string{"0.1", "1", "+Inf"}

// traceValue makes the value of a trace label from b: mostly valid ids in
// every format tracesample reads (plain hex, W3C, B3, Jaeger), so that the
// ratio samples about half of them, sometimes garbage.
func traceValue(name string, b byte) string {
	id := uint64(b) * 0x9e3779b97f4a7c15
	switch b % 16 {
	case 15:
		return "not-a-trace-id"
	case 14:
		return strings.Repeat("0", 32) // the invalid all-zero id
	case 13:
		return fmt.Sprintf("%016x-%016x-1", id, id|1) // B3
	case 12:
		return fmt.Sprintf("%x:%x:0:1", id, id|1) // Jaeger
	case 11:
		return fmt.Sprintf("%x%%3A%x%%3A0%%3A1", id, id|1) // Jaeger, URL-encoded
	case 10:
		return fmt.Sprintf("%016x", id) // 64-bit
	}
	if name == "traceparent" {
		return fmt.Sprintf("00-%016x%016x-%016x-01", id, ^id, id|1)
	}
	return fmt.Sprintf("%016x%016x", id, id>>7)
}

// fuzzRun is what the generator remembers of one input series, so that
// counters grow from scrape to scrape and can be reset on purpose.
type fuzzRun struct {
	v    float64
	ts   int64
	step uint64
}

// fuzzGen builds requests; runs are keyed by the series' labels.
type fuzzGen struct {
	now  func() int64 // the gateway clock, ms
	runs map[string]*fuzzRun
}

func (g *fuzzGen) request(in *fuzzInput) *prompb.WriteRequest {
	req := &prompb.WriteRequest{}
	n := 1 + in.intn(maxSeriesPerRequest)
	for range n {
		req.Timeseries = append(req.Timeseries, g.series(in))
	}
	if in.intn(4) == 0 {
		for range 1 + in.intn(3) {
			t := in.intn(9)
			if t == 8 {
				t = 99 // no such type
			}
			req.Metadata = append(req.Metadata, prompb.MetricMetadata{
				Type:             prompb.MetricMetadata_MetricType(t),
				MetricFamilyName: fuzzFamilies[in.intn(len(fuzzFamilies))],
				Help:             "help",
			})
		}
	}
	return req
}

func (g *fuzzGen) series(in *fuzzInput) prompb.TimeSeries {
	m := fuzzMetrics[in.intn(len(fuzzMetrics))]
	mask := in.u16()
	ls := []prompb.Label{{Name: "__name__", Value: m.name}}
	for i, l := range fuzzLabels {
		bit := mask&(1<<i) != 0
		if i < 2 {
			bit = !bit
		}
		if !bit {
			continue
		}
		v := ""
		if l.values == nil {
			v = traceValue(l.name, in.byte())
		} else {
			v = l.values[in.intn(len(l.values))]
		}
		ls = append(ls, prompb.Label{Name: l.name, Value: v})
	}
	switch m.extra {
	case "quantile":
		ls = append(ls, prompb.Label{Name: "quantile", Value: fuzzQuantiles[in.intn(len(fuzzQuantiles))]})
	case "le":
		ls = append(ls, prompb.Label{Name: "le", Value: fuzzLes[in.intn(len(fuzzLes))]})
	}
	slices.SortFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	key := labelKey(ls)
	run := g.runs[key]
	if run == nil {
		run = &fuzzRun{ts: g.now()}
		g.runs[key] = run
	}
	// Labels no receiver accepts, or that Sanitize must normalise, now and
	// then.
	if b := in.byte(); b < 24 {
		ls = breakLabels(ls, b)
	}
	s := prompb.TimeSeries{Labels: ls}
	nf := in.intn(4)
	if m.hist && in.intn(4) != 0 {
		nf = 0 // mostly histograms alone, sometimes both kinds in one series
	}
	for range nf {
		ts := g.timestamp(in, run)
		s.Samples = append(s.Samples, prompb.Sample{Timestamp: ts, Value: sampleValue(in, run)})
	}
	if m.hist || in.intn(16) == 0 {
		for range in.intn(3) {
			s.Histograms = append(s.Histograms, histogramSample(in, g.timestamp(in, run), run))
		}
	}
	if in.intn(4) == 0 {
		e := prompb.Exemplar{Value: float64(in.byte()), Timestamp: g.timestamp(in, run)}
		if in.intn(8) != 0 {
			e.Labels = []prompb.Label{{Name: "trace_id", Value: traceValue("trace_id", in.byte())}}
		}
		s.Exemplars = append(s.Exemplars, e)
	}
	return s
}

// breakLabels spoils ls in one of the ways Sanitize handles, or makes it
// unusually large.
func breakLabels(ls []prompb.Label, b byte) []prompb.Label {
	switch b % 8 {
	case 6: // a value longer than a one-byte length
		return append(ls, prompb.Label{Name: "zzz", Value: strings.Repeat("v", 200)})
	case 7:
		if b == 7 { // a series longer than the encoder's 16 KiB fast path
			return append(ls, prompb.Label{Name: "zzz", Value: strings.Repeat("v", 17<<10)})
		}
		return append(ls, prompb.Label{Name: "zzz", Value: "\xff\xfe not UTF-8"})
	case 0: // an empty value: Prometheus treats the label as absent
		return append(ls, prompb.Label{Name: "zone", Value: ""})
	case 1: // a name given twice
		return append(ls, ls[len(ls)-1])
	case 2: // no metric name
		return ls[1:]
	case 3: // unsorted
		slices.Reverse(ls)
		return ls
	case 4: // an empty name
		return append(ls, prompb.Label{Name: "", Value: "x"})
	}
	// the metric name emptied
	ls[0].Value = ""
	return ls
}

// timestamp picks a sample's time: mostly scrape-like, sometimes a
// duplicate, out of order, far ahead or behind, or at the ends of int64.
func (g *fuzzGen) timestamp(in *fuzzInput, run *fuzzRun) int64 {
	now := g.now()
	var ts int64
	switch in.intn(16) {
	case 0, 1, 2, 3:
		ts = now - int64(in.intn(4))*15_000
	case 4:
		ts = run.ts // a duplicate
	case 5:
		ts = run.ts - 1000 // out of order
	case 6:
		ts = run.ts + 15_000
	case 7:
		ts = now + 2*60_000 // ahead of merge.max_ahead
	case 8:
		ts = now + 365*24*3600_000
	case 9:
		ts = now - 30*24*3600_000
	case 10:
		ts = 0
	case 11:
		ts = -1 - int64(in.byte())
	case 12:
		ts = math.MaxInt64 - int64(in.byte())
	case 13:
		ts = math.MinInt64 + int64(in.byte())
	case 14:
		ts = now + int64(int8(in.byte()))*1000
	default:
		ts = now - int64(in.byte())*60_000
	}
	run.ts = ts
	return ts
}

func sampleValue(in *fuzzInput, run *fuzzRun) float64 {
	switch in.intn(16) {
	case 0, 1, 2, 3, 4, 5:
		run.v += float64(in.intn(10))
		return run.v
	case 6:
		run.v = float64(in.intn(2)) // a reset
		return run.v
	case 7:
		return math.NaN()
	case 8:
		return math.Float64frombits(value.StaleNaN)
	case 9:
		return math.Inf(1)
	case 10:
		return math.Inf(-1)
	case 11:
		return math.Copysign(0, -1)
	case 12:
		return 0
	case 13:
		return math.Float64frombits(in.u64())
	case 14:
		return -float64(in.byte())
	}
	return 1e308
}

var (
	fuzzSchemas     = []int32{-4, -1, 0, 1, 3, 8}
	fuzzBounds      = [][]float64{{0.1, 0.5, 1, 5}, {0.25, 1, 4}, {1}}
	fuzzBadSchemas  = []int32{-5, -9, -10, 53, 100, -52, -54, math.MinInt32, math.MaxInt32}
	fuzzBrokenBound = [][]float64{{1, 0.5}, {math.NaN()}, {1, math.Inf(1)}, {2, 2}}
	fuzzResetHints  = []histogram.CounterResetHint{histogram.UnknownCounterReset, histogram.CounterReset, histogram.NotCounterReset}
)

// histogramSample builds one native histogram sample at ts: valid ones of
// every layout (integer and float, exponential, reserved and custom
// schemas), and broken ones of every kind Prometheus' Validate checks.
func histogramSample(in *fuzzInput, ts int64, run *fuzzRun) prompb.Histogram {
	if in.intn(8) != 0 {
		run.step += uint64(1 + in.intn(3))
	} else {
		run.step = uint64(in.intn(2)) // a reset
	}
	step := run.step
	kind := in.intn(16)
	switch kind {
	case 0, 1, 2:
		return prompb.FromIntHistogram(ts, expHistogram(in, step))
	case 3, 4:
		return prompb.FromFloatHistogram(ts, expHistogram(in, step).ToFloat(nil))
	case 5:
		return prompb.FromIntHistogram(ts, customHistogram(in, step))
	case 6:
		return prompb.FromFloatHistogram(ts, customHistogram(in, step).ToFloat(nil))
	case 7:
		// A reserved schema, which Prometheus reduces to 8.
		h := expHistogram(in, step)
		h.Schema = 9 + int32(in.intn(44))
		return prompb.FromIntHistogram(ts, h)
	case 8:
		// Issue 10's crash: the spans claim 5 buckets, the deltas hold 1.
		return prompb.Histogram{
			Count: &prompb.Histogram_CountInt{CountInt: 1}, ZeroThreshold: 1e-128, Schema: 0,
			PositiveSpans: []prompb.BucketSpan{{Offset: 0, Length: 5}}, PositiveDeltas: []int64{1},
			Timestamp: ts,
		}
	case 9:
		// A negative bucket count.
		ph := prompb.FromIntHistogram(ts, expHistogram(in, step))
		ph.PositiveDeltas[len(ph.PositiveDeltas)-1] -= int64(step) + 5
		return ph
	case 10:
		ph := prompb.FromIntHistogram(ts, expHistogram(in, step))
		ph.Schema = fuzzBadSchemas[in.intn(len(fuzzBadSchemas))]
		return ph
	case 11:
		// The count does not match the buckets.
		ph := prompb.FromIntHistogram(ts, expHistogram(in, step))
		ph.Count = &prompb.Histogram_CountInt{CountInt: ph.GetCountInt() + 1 + uint64(in.intn(3))}
		return ph
	case 12:
		// A stale marker, valid.
		h := expHistogram(in, step)
		h.Sum = math.Float64frombits(value.StaleNaN)
		if in.bool() {
			return prompb.FromFloatHistogram(ts, h.ToFloat(nil))
		}
		return prompb.FromIntHistogram(ts, h)
	case 13:
		// A gauge histogram.
		h := expHistogram(in, step)
		if in.bool() {
			h = customHistogram(in, step)
		}
		h.CounterResetHint = histogram.GaugeType
		if in.bool() {
			return prompb.FromFloatHistogram(ts, h.ToFloat(nil))
		}
		return prompb.FromIntHistogram(ts, h)
	case 14:
		// Custom buckets that break the rules.
		ph := prompb.FromIntHistogram(ts, customHistogram(in, step))
		switch in.intn(5) {
		case 0:
			ph.CustomValues = slices.Clone(fuzzBrokenBound[in.intn(len(fuzzBrokenBound))])
		case 1:
			ph.ZeroThreshold = 0.001
		case 2:
			ph.ZeroCount = &prompb.Histogram_ZeroCountInt{ZeroCountInt: 1}
		case 3:
			ph.NegativeSpans = []prompb.BucketSpan{{Offset: 0, Length: 1}}
			ph.NegativeDeltas = []int64{1}
		default:
			ph.CustomValues = nil // spans without bounds
		}
		return ph
	}
	// Float histograms that break the rules, or an empty one.
	fh := expHistogram(in, step).ToFloat(nil)
	switch in.intn(4) {
	case 0:
		fh.Count = -1
	case 1:
		fh.PositiveBuckets[0] = -fh.PositiveBuckets[0] - 1
	case 2:
		fh.ZeroCount = -1
	default:
		return prompb.FromIntHistogram(ts, &histogram.Histogram{Schema: fuzzSchemas[in.intn(len(fuzzSchemas))]})
	}
	return prompb.FromFloatHistogram(ts, fh)
}

// expHistogram is a valid exponential histogram whose counts grow with step.
func expHistogram(in *fuzzInput, step uint64) *histogram.Histogram {
	h := &histogram.Histogram{
		Schema:           fuzzSchemas[in.intn(len(fuzzSchemas))],
		ZeroThreshold:    1e-128,
		CounterResetHint: fuzzResetHints[in.intn(len(fuzzResetHints))],
		ZeroCount:        step % 3,
		Sum:              float64(step) * 0.25,
	}
	if in.intn(4) == 0 {
		h.ZeroThreshold = 0.001
	}
	n := 1 + in.intn(3)
	h.PositiveSpans = []histogram.Span{{Offset: int32(int8(in.byte())) % 8, Length: uint32(n)}}
	var pos []int64
	for i := range n {
		pos = append(pos, int64(step)*int64(1+i%2))
	}
	if in.bool() {
		h.PositiveSpans = append(h.PositiveSpans, histogram.Span{Offset: int32(in.intn(3)), Length: 1})
		pos = append(pos, int64(step))
	}
	var neg []int64
	if in.intn(4) == 0 {
		h.NegativeSpans = []histogram.Span{{Offset: int32(int8(in.byte())) % 4, Length: 1}}
		neg = []int64{int64(step)}
	}
	h.PositiveBuckets = toDeltas(pos)
	h.NegativeBuckets = toDeltas(neg)
	h.Count = h.ZeroCount + sumCounts(pos) + sumCounts(neg)
	return h
}

// customHistogram is a valid histogram with custom buckets (NHCB), with one
// of a few sets of bounds, so that inputs of one output may disagree.
func customHistogram(in *fuzzInput, step uint64) *histogram.Histogram {
	bounds := fuzzBounds[in.intn(len(fuzzBounds))]
	n := len(bounds) + 1
	off := 0
	if in.bool() {
		off, n = 1, n-1
	}
	h := &histogram.Histogram{
		Schema:           histogram.CustomBucketsSchema,
		CounterResetHint: fuzzResetHints[in.intn(len(fuzzResetHints))],
		CustomValues:     slices.Clone(bounds),
		PositiveSpans:    []histogram.Span{{Offset: int32(off), Length: uint32(n)}},
		Sum:              float64(step),
	}
	var pos []int64
	for i := range n {
		pos = append(pos, int64(step)+int64(i))
	}
	h.PositiveBuckets = toDeltas(pos)
	h.Count = sumCounts(pos)
	return h
}

func toDeltas(counts []int64) []int64 {
	var out []int64
	prev := int64(0)
	for _, c := range counts {
		out = append(out, c-prev)
		prev = c
	}
	return out
}

func sumCounts(xs []int64) uint64 {
	var n uint64
	for _, x := range xs {
		n += uint64(x)
	}
	return n
}

// labelKey identifies a label set: names and values with 0xff separators.
func labelKey(ls []prompb.Label) string {
	var sb strings.Builder
	for _, l := range ls {
		sb.WriteString(l.Name)
		sb.WriteByte(0xff)
		sb.WriteString(l.Value)
		sb.WriteByte(0xff)
	}
	return sb.String()
}

// printKey renders a labelKey for messages.
func printKey(k string) string {
	parts := strings.Split(strings.TrimSuffix(k, "\xff"), "\xff")
	var sb strings.Builder
	sb.WriteByte('{')
	for i := 0; i+1 < len(parts); i += 2 {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%s=%q", parts[i], parts[i+1])
	}
	sb.WriteByte('}')
	return sb.String()
}
