package wire

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
)

// randomRequest builds a WriteRequest that exercises every field the codec
// handles: labels with empty and non-ASCII values, special floats, negative
// timestamps, exemplars, integer and float native histograms and metadata.
func randomRequest(rng *rand.Rand, nSeries int, allowNegZero bool) *prompb.WriteRequest {
	floats := []float64{0, 1, -1, 0.5, 1e308, math.Inf(1), math.Inf(-1), math.NaN(), math.Float64frombits(value.StaleNaN)}
	if allowNegZero {
		floats = append(floats, math.Copysign(0, -1))
	}
	randFloat := func() float64 {
		if rng.IntN(3) == 0 {
			return floats[rng.IntN(len(floats))]
		}
		return rng.NormFloat64() * 1e6
	}
	randInt := func() int64 {
		switch rng.IntN(4) {
		case 0:
			return 0
		case 1:
			return -rng.Int64N(1 << 40)
		default:
			return 1_700_000_000_000 + rng.Int64N(1<<30)
		}
	}
	randString := func() string {
		alphabet := []string{"a", "b", "_", "0", "é", "→", "\x00", " ", "istio_", "request"}
		var sb bytes.Buffer
		for range rng.IntN(12) {
			sb.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		return sb.String()
	}
	randLabels := func(n int) []prompb.Label {
		ls := make([]prompb.Label, 0, n)
		for range n {
			ls = append(ls, prompb.Label{Name: randString(), Value: randString()})
		}
		return ls
	}
	req := &prompb.WriteRequest{}
	for range nSeries {
		ts := prompb.TimeSeries{Labels: randLabels(rng.IntN(8))}
		for range rng.IntN(4) {
			ts.Samples = append(ts.Samples, prompb.Sample{Value: randFloat(), Timestamp: randInt()})
		}
		for range rng.IntN(3) {
			ts.Exemplars = append(ts.Exemplars, prompb.Exemplar{Labels: randLabels(rng.IntN(3)), Value: randFloat(), Timestamp: randInt()})
		}
		for range rng.IntN(3) {
			ts.Histograms = append(ts.Histograms, randomHistogram(rng, randInt()))
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	for range rng.IntN(4) {
		req.Metadata = append(req.Metadata, prompb.MetricMetadata{
			Type:             prompb.MetricMetadata_MetricType(rng.IntN(8)),
			MetricFamilyName: randString(),
			Help:             randString(),
			Unit:             randString(),
		})
	}
	return req
}

func randomHistogram(rng *rand.Rand, ts int64) prompb.Histogram {
	h := prompb.Histogram{
		Sum:           rng.Float64() * 100,
		Schema:        int32(rng.IntN(13) - 4),
		ZeroThreshold: 1e-128,
		Timestamp:     ts,
		ResetHint:     prompb.Histogram_ResetHint(rng.IntN(4)),
		PositiveSpans: []prompb.BucketSpan{{Offset: int32(rng.IntN(5) - 2), Length: 2}, {Offset: 1, Length: 1}},
		NegativeSpans: []prompb.BucketSpan{{Offset: 0, Length: 1}},
	}
	if rng.IntN(2) == 0 {
		h.Count = &prompb.Histogram_CountInt{CountInt: rng.Uint64N(1000)}
		h.ZeroCount = &prompb.Histogram_ZeroCountInt{ZeroCountInt: rng.Uint64N(10)}
		h.PositiveDeltas = []int64{3, -1, 5}
		h.NegativeDeltas = []int64{2}
	} else {
		h.Count = &prompb.Histogram_CountFloat{CountFloat: rng.Float64() * 1000}
		h.ZeroCount = &prompb.Histogram_ZeroCountFloat{ZeroCountFloat: 1.5}
		h.PositiveCounts = []float64{3, 2, 7.5}
		h.NegativeCounts = []float64{2}
	}
	return h
}

func mustMarshal(t testing.TB, req *prompb.WriteRequest) []byte {
	t.Helper()
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRoundTripMatchesGogo decodes gogo's encoding and encodes it again: the
// bytes must be identical to gogo's, field for field.
func TestRoundTripMatchesGogo(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var r Request
	var out []byte
	for i := range 2000 {
		want := mustMarshal(t, randomRequest(rng, rng.IntN(20), false))
		if err := r.Unmarshal(want); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		out = r.MarshalAppend(out[:0])
		if !bytes.Equal(out, want) {
			t.Fatalf("case %d: re-encoding differs from gogo's\n got %x\nwant %x", i, out, want)
		}
		if r.Size() != len(out) {
			t.Fatalf("case %d: Size() = %d, encoded %d bytes", i, r.Size(), len(out))
		}
	}
}

// TestKeepEncodedLabelsRoundTrip: a series whose decoded label bytes are
// copied as they came (KeepEncodedLabels) encodes to gogo's bytes as well,
// and reports the same size.
func TestKeepEncodedLabelsRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var r Request
	var out []byte
	kept := 0
	for i := range 1000 {
		want := mustMarshal(t, randomRequest(rng, rng.IntN(20), false))
		if err := r.Unmarshal(want); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		for j := range r.Series {
			if rng.IntN(2) == 0 {
				r.Series[j].KeepEncodedLabels()
				kept += btoi(r.Series[j].Labels == nil)
			}
		}
		out = r.MarshalAppend(out[:0])
		if !bytes.Equal(out, want) {
			t.Fatalf("case %d: re-encoding with kept label bytes differs from gogo's\n got %x\nwant %x", i, out, want)
		}
		if r.Size() != len(out) {
			t.Fatalf("case %d: Size() = %d, encoded %d bytes", i, r.Size(), len(out))
		}
	}
	if kept == 0 {
		t.Fatal("no series kept its encoded labels: the test checks nothing")
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestRoundTripPreservesFloatBits covers what gogo itself loses: gogo omits a
// -0 value, Cardinal keeps it; NaN payloads (stale markers) must survive.
func TestRoundTripPreservesFloatBits(t *testing.T) {
	negZero := math.Copysign(0, -1)
	stale := math.Float64frombits(value.StaleNaN)
	var r Request
	r.Series = []Series{{
		Labels:    []Label{{Name: []byte("__name__"), Value: []byte("x")}},
		Samples:   []Sample{{Value: negZero, Timestamp: 1}, {Value: stale, Timestamp: 2}, {Value: 0, Timestamp: 3}},
		Exemplars: []Exemplar{{Value: negZero, Timestamp: -5}},
	}}
	enc := r.MarshalAppend(nil)
	var got Request
	if err := got.Unmarshal(enc); err != nil {
		t.Fatal(err)
	}
	s := got.Series[0]
	if len(s.Samples) != 3 {
		t.Fatalf("want 3 samples, got %d", len(s.Samples))
	}
	for i, want := range []float64{negZero, stale, 0} {
		if math.Float64bits(s.Samples[i].Value) != math.Float64bits(want) {
			t.Errorf("sample %d: bits %x, want %x", i, math.Float64bits(s.Samples[i].Value), math.Float64bits(want))
		}
	}
	if math.Float64bits(s.Exemplars[0].Value) != math.Float64bits(negZero) || s.Exemplars[0].Timestamp != -5 {
		t.Errorf("exemplar = %+v", s.Exemplars[0])
	}
	// gogo must read what we wrote.
	var pb prompb.WriteRequest
	if err := pb.Unmarshal(enc); err != nil {
		t.Fatal(err)
	}
	if !value.IsStaleNaN(pb.Timeseries[0].Samples[1].Value) {
		t.Errorf("gogo did not read the stale marker")
	}
}

// TestDecodedFieldsMatchGogo checks the decoded model itself, not only the
// re-encoding: every label, sample, exemplar, histogram timestamp and
// metadata entry equals what gogo decodes.
func TestDecodedFieldsMatchGogo(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var r Request
	for i := range 500 {
		pb := randomRequest(rng, rng.IntN(10), true)
		if err := r.Unmarshal(mustMarshal(t, pb)); err != nil {
			t.Fatal(err)
		}
		if err := sameAsPrompb(&r, pb); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
	}
}

func sameAsPrompb(r *Request, pb *prompb.WriteRequest) error {
	if len(r.Series) != len(pb.Timeseries) {
		return fmt.Errorf("%d series, want %d", len(r.Series), len(pb.Timeseries))
	}
	sameLabels := func(got []Label, want []prompb.Label) error {
		if len(got) != len(want) {
			return fmt.Errorf("%d labels, want %d", len(got), len(want))
		}
		for i := range got {
			if string(got[i].Name) != want[i].Name || string(got[i].Value) != want[i].Value {
				return fmt.Errorf("label %d = %q=%q, want %q=%q", i, got[i].Name, got[i].Value, want[i].Name, want[i].Value)
			}
		}
		return nil
	}
	sameFloat := func(a, b float64) bool {
		// gogo drops -0 on encode, so compare -0 and 0 as equal here.
		return math.Float64bits(a) == math.Float64bits(b) || (a == 0 && b == 0)
	}
	for i := range r.Series {
		s, want := &r.Series[i], &pb.Timeseries[i]
		if err := sameLabels(s.Labels, want.Labels); err != nil {
			return fmt.Errorf("series %d: %w", i, err)
		}
		if len(s.Samples) != len(want.Samples) || len(s.Exemplars) != len(want.Exemplars) || len(s.Histograms) != len(want.Histograms) {
			return fmt.Errorf("series %d: counts differ", i)
		}
		for j, smp := range s.Samples {
			if !sameFloat(smp.Value, want.Samples[j].Value) || smp.Timestamp != want.Samples[j].Timestamp {
				return fmt.Errorf("series %d sample %d = %+v, want %+v", i, j, smp, want.Samples[j])
			}
		}
		for j, e := range s.Exemplars {
			w := want.Exemplars[j]
			if err := sameLabels(e.Labels, w.Labels); err != nil {
				return fmt.Errorf("series %d exemplar %d: %w", i, j, err)
			}
			if !sameFloat(e.Value, w.Value) || e.Timestamp != w.Timestamp {
				return fmt.Errorf("series %d exemplar %d = %v@%d, want %v@%d", i, j, e.Value, e.Timestamp, w.Value, w.Timestamp)
			}
		}
		for j, h := range s.Histograms {
			var got prompb.Histogram
			if err := got.Unmarshal(h.Data); err != nil {
				return fmt.Errorf("series %d histogram %d: %w", i, j, err)
			}
			if h.Timestamp != want.Histograms[j].Timestamp || got.Timestamp != h.Timestamp {
				return fmt.Errorf("series %d histogram %d: timestamp %d, want %d", i, j, h.Timestamp, want.Histograms[j].Timestamp)
			}
		}
	}
	if len(r.Metadata) != len(pb.Metadata) {
		return fmt.Errorf("%d metadata, want %d", len(r.Metadata), len(pb.Metadata))
	}
	for i, m := range r.Metadata {
		w := pb.Metadata[i]
		if m.Type != int32(w.Type) || string(m.FamilyName) != w.MetricFamilyName || string(m.Help) != w.Help || string(m.Unit) != w.Unit {
			return fmt.Errorf("metadata %d = %+v, want %+v", i, m, w)
		}
	}
	return nil
}

func TestUnmarshalRejectsMalformed(t *testing.T) {
	f := func(name string, src []byte) {
		t.Helper()
		var r Request
		if err := r.Unmarshal(src); err == nil {
			t.Errorf("%s: Unmarshal(%x) succeeded, want an error", name, src)
		}
		var pb prompb.WriteRequest
		if err := pb.Unmarshal(src); err == nil {
			t.Errorf("%s: gogo accepts %x, so Cardinal must too", name, src)
		}
	}
	f("truncated length", []byte{0x0a, 0x05, 0x0a})
	f("timeseries as varint", []byte{0x08, 0x01})
	f("label as varint", []byte{0x0a, 0x02, 0x08, 0x01})
	f("sample value as varint", []byte{0x0a, 0x04, 0x12, 0x02, 0x08, 0x01})
	f("bad varint", []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f("metadata type as bytes", []byte{0x1a, 0x03, 0x0a, 0x01, 0x41})
}

// TestAppendToSeriesDoesNotClobberNeighbour guards the capacity clipping of
// the per-series windows into the shared pools.
func TestAppendToSeriesDoesNotClobberNeighbour(t *testing.T) {
	pb := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "__name__", Value: "a"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}},
		{Labels: []prompb.Label{{Name: "__name__", Value: "b"}}, Samples: []prompb.Sample{{Value: 2, Timestamp: 2}}},
	}}
	var r Request
	if err := r.Unmarshal(mustMarshal(t, pb)); err != nil {
		t.Fatal(err)
	}
	r.Series[0].Labels = append(r.Series[0].Labels, Label{Name: []byte("x"), Value: []byte("y")})
	r.Series[0].Samples = append(r.Series[0].Samples, Sample{Value: 9, Timestamp: 9})
	if string(r.Series[1].Labels[0].Value) != "b" || r.Series[1].Samples[0].Value != 2 {
		t.Fatalf("appending to series 0 overwrote series 1: %+v", r.Series[1])
	}
}

func TestSanitize(t *testing.T) {
	l := func(kv ...string) []Label {
		var ls []Label
		for i := 0; i < len(kv); i += 2 {
			ls = append(ls, Label{Name: []byte(kv[i]), Value: []byte(kv[i+1])})
		}
		return ls
	}
	var r Request
	r.Series = []Series{
		{Labels: l("job", "j", "__name__", "up", "a", ""), Samples: make([]Sample, 2)}, // unsorted, empty value: kept
		{Labels: l("job", "j"), Samples: make([]Sample, 3)},                            // no name
		{Labels: l("__name__", "up", "", "v"), Samples: make([]Sample, 1)},             // empty name
		{Labels: l("__name__", "up", "a", "1", "a", "2"), Histograms: make([]Histogram, 4)},
		{Labels: l("__name__", ""), Samples: make([]Sample, 5)}, // empty name value means no name
	}
	var st SanitizeStats
	r.Sanitize(&st)
	if len(r.Series) != 1 {
		t.Fatalf("kept %d series, want 1", len(r.Series))
	}
	got := r.Series[0].Labels
	if len(got) != 2 || string(got[0].Name) != "__name__" || string(got[1].Name) != "job" {
		t.Fatalf("labels not sorted or empty value kept: %q", got)
	}
	want := SanitizeStats{
		Series:      [numInvalidReasons]int{InvalidNoName: 2, InvalidEmptyLabelName: 1, InvalidDuplicateLabel: 1},
		Samples:     [numInvalidReasons]int{InvalidNoName: 8, InvalidEmptyLabelName: 1, InvalidDuplicateLabel: 4},
		Floats:      9,
		Histograms:  4,
		FirstReason: InvalidNoName,
		FirstSeries: `{job="j"}`,
	}
	if st != want {
		t.Fatalf("stats = %+v, want %+v", st, want)
	}
	if st.DroppedSeries() != 4 || st.DroppedSamples() != 13 {
		t.Fatalf("totals = %d series, %d samples", st.DroppedSeries(), st.DroppedSamples())
	}
	if got, want := st.Describe(), `2 with no __name__ label, 1 with empty label name, 1 with duplicate label name; first: {job="j"} (no __name__ label)`; got != want {
		t.Fatalf("Describe() = %q\nwant %q", got, want)
	}
}

// TestSanitizeHistograms: a series with one invalid native histogram is
// dropped whole, and the stats name it with the histogram's error.
func TestSanitizeHistograms(t *testing.T) {
	l := func(kv ...string) []Label {
		var ls []Label
		for i := 0; i < len(kv); i += 2 {
			ls = append(ls, Label{Name: []byte(kv[i]), Value: []byte(kv[i+1])})
		}
		return ls
	}
	good := marshalHistogram(t, intHist(0, 2, spans(0, 2), 1, 0))
	crash := marshalHistogram(t, intHist(0, 1, spans(0, 5), 1))
	custom := intHist(histogram.CustomBucketsSchema, 1, spans(0, 1), 1)
	custom.CustomValues = []float64{1, math.NaN()}
	badBounds := marshalHistogram(t, custom)
	var r Request
	r.Series = []Series{
		{Labels: l("__name__", "ok", "job", "a"), Histograms: []Histogram{{Data: good}, {Data: good}}},
		{Labels: l("job", "a", "__name__", "x"), Samples: make([]Sample, 2), Histograms: []Histogram{{Data: good}, {Data: crash}}},
		{Labels: l("job", "b"), Samples: make([]Sample, 1)},
		{Labels: l("__name__", "y"), Histograms: []Histogram{{Data: badBounds}}},
		{Labels: l("__name__", "ok2"), Samples: make([]Sample, 1), Histograms: []Histogram{{Data: nil}}}, // the empty histogram is valid
	}
	var st SanitizeStats
	r.Sanitize(&st)
	if len(r.Series) != 2 || string(r.Series[0].Labels[0].Value) != "ok" || string(r.Series[1].Labels[0].Value) != "ok2" {
		t.Fatalf("kept %d series: %+v", len(r.Series), r.Series)
	}
	if st.Series[InvalidHistogram] != 2 || st.Samples[InvalidHistogram] != 5 || st.Series[InvalidNoName] != 1 {
		t.Fatalf("stats = %+v", st)
	}
	if st.FirstReason != InvalidHistogram || st.FirstSeries != `{__name__="x", job="a"}` || st.FirstDetail != "positive spans need 5 buckets, have 1" {
		t.Fatalf("first = %v %q %q", st.FirstReason, st.FirstSeries, st.FirstDetail)
	}
	want := `2 with invalid native histogram, 1 with no __name__ label; first: {__name__="x", job="a"}: positive spans need 5 buckets, have 1`
	if got := st.Describe(); got != want {
		t.Fatalf("Describe() = %q\nwant %q", got, want)
	}
	if InvalidHistogram.String() != "invalid native histogram" {
		t.Fatalf("InvalidHistogram.String() = %q", InvalidHistogram)
	}
	// A second request adds to the counts but keeps the first series.
	r.Series = []Series{{Labels: l("__name__", "z"), Histograms: []Histogram{{Data: badBounds}}}}
	r.Sanitize(&st)
	if st.Series[InvalidHistogram] != 3 || st.FirstSeries != `{__name__="x", job="a"}` {
		t.Fatalf("stats after a second request = %+v", st)
	}
	var empty SanitizeStats
	if empty.Describe() != "" {
		t.Fatalf("Describe() of nothing dropped = %q", empty.Describe())
	}
}

func TestFormatLabels(t *testing.T) {
	f := func(limit int, want string, kv ...string) {
		t.Helper()
		var ls []Label
		for i := 0; i < len(kv); i += 2 {
			ls = append(ls, Label{Name: []byte(kv[i]), Value: []byte(kv[i+1])})
		}
		if got := formatLabels(ls, limit); got != want {
			t.Errorf("formatLabels(%q, %d) = %q, want %q", kv, limit, got, want)
		}
	}
	f(256, `{}`)
	f(256, `{__name__="up", job="a"}`, "__name__", "up", "job", "a")
	f(256, `{"0a"="\n", "é"="\"é\""}`, "0a", "\n", "é", `"é"`)
	f(256, `{a="\x00\xff"}`, "a", "\x00\xff")
	f(10, `{a="bbbbbb...`, "a", "bbbbbbbbbbbbbbbbbbbb")
	f(7, `{a="é...`, "a", "éééé") // cut on a rune boundary
	long := formatLabels([]Label{{Name: []byte("v"), Value: bytes.Repeat([]byte("x"), 10000)}}, maxFirstSeries)
	if len(long) > maxFirstSeries+3 {
		t.Errorf("a long series renders as %d bytes", len(long))
	}
}

func TestAllocsSteadyState(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	src := mustMarshal(t, randomRequest(rng, 500, true))
	var r Request
	var out []byte
	var st SanitizeStats
	// Warm up so that every pool has its steady-state capacity.
	if err := r.Unmarshal(src); err != nil {
		t.Fatal(err)
	}
	out = r.MarshalAppend(out[:0])
	if n := testing.AllocsPerRun(50, func() {
		if err := r.Unmarshal(src); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Unmarshal allocates %v times per request", n)
	}
	if n := testing.AllocsPerRun(50, func() { out = r.MarshalAppend(out[:0]) }); n != 0 {
		t.Errorf("MarshalAppend allocates %v times per request", n)
	}
	if n := testing.AllocsPerRun(50, func() { r.Sanitize(&st) }); n != 0 {
		t.Errorf("Sanitize allocates %v times per request", n)
	}
	// Successive valid requests with native histograms of every kind: each
	// is decoded and sanitized afresh, so that every histogram is validated
	// on every run.
	var bodies [][]byte
	for range 3 {
		bodies = append(bodies, mustMarshal(t, validRequest(rng, 300)))
	}
	st = SanitizeStats{}
	for _, b := range bodies {
		if err := r.Unmarshal(b); err != nil {
			t.Fatal(err)
		}
		n := len(r.Series)
		r.Sanitize(&st)
		if len(r.Series) != n || st.DroppedSeries() != 0 {
			t.Fatalf("Sanitize dropped valid series: %s", st.Describe())
		}
	}
	k := 0
	if n := testing.AllocsPerRun(50, func() {
		if err := r.Unmarshal(bodies[k%len(bodies)]); err != nil {
			t.Fatal(err)
		}
		r.Sanitize(&st)
		k++
	}); n != 0 {
		t.Errorf("Unmarshal and Sanitize of requests with native histograms allocate %v times per request", n)
	}
}

// validRequest is a request that Sanitize keeps whole: named series, some
// with unsorted labels, carrying samples or valid native histograms.
func validRequest(rng *rand.Rand, nSeries int) *prompb.WriteRequest {
	req := &prompb.WriteRequest{}
	for i := range nSeries {
		ts := prompb.TimeSeries{Labels: []prompb.Label{
			{Name: "__name__", Value: fmt.Sprintf("metric_%d", i%7)},
			{Name: "job", Value: "mesh"},
			{Name: "series", Value: fmt.Sprint(i, rng.IntN(1000))},
		}}
		if i%5 == 0 {
			ts.Labels[0], ts.Labels[2] = ts.Labels[2], ts.Labels[0]
		}
		if i%3 == 0 {
			for range 1 + rng.IntN(2) {
				ts.Histograms = append(ts.Histograms, randomValidHistogram(rng))
			}
		} else {
			ts.Samples = []prompb.Sample{{Value: rng.Float64(), Timestamp: 1_700_000_000_000 + int64(i)}}
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	return req
}

// FuzzUnmarshal: no input may panic; Cardinal rejects an input exactly when
// gogo, the decoder of Prometheus' receiver, does; what it accepts decodes
// to what gogo decodes, and re-encodes to the same request.
//
// Earlier versions were stricter than gogo in fields they skip (proto2
// groups, ten-byte varints whose last byte overflows, field numbers beyond
// 32 bits) and more lenient elsewhere (field number 0, the inside of
// histograms). Neither kind of difference is kept: a body Prometheus would
// accept must not get a 400 from Cardinal, and one it rejects whole must not
// be forwarded to it. (What Prometheus decodes but then refuses, such as an
// invalid native histogram, is Sanitize's business, not Unmarshal's.)
// checkCuts: the body src with the ranges AppendCuts gives for a request
// that kept every other series is, to gogo, that request: those series
// and the metadata.
func checkCuts(t *testing.T, src []byte) {
	t.Helper()
	var r Request
	if err := r.Unmarshal(src); err != nil {
		t.Fatal(err)
	}
	var want prompb.WriteRequest
	if err := want.Unmarshal(src); err != nil {
		t.Fatal(err)
	}
	kept := r.Series[:0]
	var keptPb []prompb.TimeSeries
	for i := range r.Series {
		if i%2 == 1 {
			kept = append(kept, r.Series[i])
			keptPb = append(keptPb, want.Timeseries[i])
		}
	}
	r.Series = kept
	want.Timeseries = keptPb
	cuts, ok := r.AppendCuts(nil)
	if !ok {
		t.Fatal("AppendCuts refuses a request decoded by Unmarshal")
	}
	var cut []byte
	prev := 0
	for i := 0; i < len(cuts); i += 2 {
		if cuts[i] < prev || cuts[i+1] <= cuts[i] {
			t.Fatalf("cuts %v are not ascending, non-empty ranges", cuts)
		}
		cut = append(cut, src[prev:cuts[i]]...)
		prev = cuts[i+1]
	}
	cut = append(cut, src[prev:]...)
	var got prompb.WriteRequest
	if err := got.Unmarshal(cut); err != nil {
		t.Fatalf("the cut body does not decode: %v", err)
	}
	if got.String() != want.String() {
		t.Fatalf("the cut body decodes to %v, want %v", got.String(), want.String())
	}
	// A series out of its order is refused.
	if len(r.Series) >= 2 {
		r.Series[0], r.Series[1] = r.Series[1], r.Series[0]
		if _, ok := r.AppendCuts(nil); ok {
			t.Fatal("AppendCuts accepts series out of their order")
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 8 {
		f.Add(mustMarshal(f, randomRequest(rng, rng.IntN(4), false)))
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
	f.Add([]byte{0x12, 0x00})                                           // the reserved field 2
	f.Add([]byte{0x00, 0x00})                                           // field number 0
	f.Add([]byte{0x0a, 0x04, 0x22, 0x02, 0x00, 0x00})                   // field 0 inside a histogram
	f.Add([]byte{0x13, 0x08, 0x01, 0x14, 0x0a, 0x00})                   // a group
	f.Add([]byte{0x0a, 0x05, 0x12, 0x03, 0x10, 0x80, 0x02})             // a sample with a padded varint
	f.Add([]byte{0x8a, 0x80, 0x80, 0x80, 0x80, 0x02, 0x02, 0x08, 0x01}) // field 2^33+1, read as 1
	f.Add(exemplarLikeSample(false))
	f.Add(exemplarLikeSample(true))
	f.Fuzz(func(t *testing.T, src []byte) {
		var r Request
		err := r.Unmarshal(src)
		var pb prompb.WriteRequest
		pbErr := pb.Unmarshal(src)
		if (err == nil) != (pbErr == nil) {
			t.Fatalf("Cardinal says %v, gogo says %v", err, pbErr)
		}
		checkGuessed(t, src, err, &pb)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("%v does not wrap ErrMalformed", err)
			}
			return
		}
		if err := sameAsPrompb(&r, &pb); err != nil {
			t.Fatalf("decoded differently from gogo: %v", err)
		}
		if r.Plain() {
			if err := plainReference(&pb); err != nil {
				t.Fatalf("Plain, but %v", err)
			}
			checkCuts(t, src)
		}
		// Labels left encoded: the same identities and encoding, and
		// once decoded the same request.
		var lazy Request
		lazy.SetDeferLabels(true)
		if err := lazy.Unmarshal(src); err != nil {
			t.Fatalf("deferring labels: %v, without: nil", err)
		}
		if len(lazy.Series) != len(r.Series) || lazy.Plain() != r.Plain() {
			t.Fatalf("deferring labels: %d series, plain %v; without: %d, %v", len(lazy.Series), lazy.Plain(), len(r.Series), r.Plain())
		}
		if lazy.DecodedBytes() < r.DecodedBytes() {
			t.Fatalf("deferring labels: DecodedBytes %d, less than the %d of the decoded request", lazy.DecodedBytes(), r.DecodedBytes())
		}
		for i := range r.Series {
			a, _ := r.Series[i].InputHash(nil)
			b, _ := lazy.Series[i].InputHash(nil)
			if a != b {
				t.Fatalf("series %d: InputHash %x deferred, %x not", i, b, a)
			}
		}
		var fromLazy, fromEager prompb.WriteRequest
		if err := fromLazy.Unmarshal(lazy.MarshalAppend(nil)); err != nil {
			t.Fatalf("gogo cannot read the encoding of a deferred request: %v", err)
		}
		if err := fromEager.Unmarshal(r.MarshalAppend(nil)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(mustMarshal(t, &fromLazy), mustMarshal(t, &fromEager)) {
			t.Fatal("a request with deferred labels encodes to something else")
		}
		lazy.DecodeAllLazy()
		if err := sameAsPrompb(&lazy, &pb); err != nil {
			t.Fatalf("deferred labels decoded differently from gogo: %v", err)
		}
		stripUnknown(&pb)
		want := mustMarshal(t, &pb)
		var back prompb.WriteRequest
		if err := back.Unmarshal(r.MarshalAppend(nil)); err != nil {
			t.Fatalf("gogo cannot read Cardinal's encoding: %v", err)
		}
		if got := mustMarshal(t, &back); !bytes.Equal(got, want) {
			t.Fatalf("re-encoding changed the request\n got %x\nwant %x", got, want)
		}
		// Still plain after Sanitize: src means to gogo exactly what the
		// encoder writes for what is left, so it may stand in for it.
		var stats SanitizeStats
		r.Sanitize(&stats)
		// Sanitize decodes the deferred labels it checks: it keeps and
		// drops what it does without deferral.
		var lazySane Request
		lazySane.SetDeferLabels(true)
		if err := lazySane.Unmarshal(src); err != nil {
			t.Fatal(err)
		}
		var lazyStats SanitizeStats
		lazySane.Sanitize(&lazyStats)
		var a, b prompb.WriteRequest
		if err := a.Unmarshal(lazySane.MarshalAppend(nil)); err != nil {
			t.Fatal(err)
		}
		if err := b.Unmarshal(r.MarshalAppend(nil)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(mustMarshal(t, &a), mustMarshal(t, &b)) || lazyStats.DroppedSeries() != stats.DroppedSeries() {
			t.Fatalf("Sanitize with deferred labels kept something else (dropped %d, without deferral %d)", lazyStats.DroppedSeries(), stats.DroppedSeries())
		}
		if r.Plain() {
			var sane prompb.WriteRequest
			if err := sane.Unmarshal(r.MarshalAppend(nil)); err != nil {
				t.Fatal(err)
			}
			if got := mustMarshal(t, &sane); !bytes.Equal(got, want) {
				t.Fatalf("plain after Sanitize, but src means something else than its sanitized encoding\n got %x\nwant %x", got, want)
			}
		}
	})
}

// exemplarLikeSample is a request of one series whose last field, an
// exemplar (its label last), ends in bytes that read as a Sample field: a
// decoder guessing where labels end takes them for the series' sample.
// With data the series has a sample of its own first; without, it carries
// only the exemplar, and a series of the same labels with data follows.
func exemplarLikeSample(data bool) []byte {
	fake := []byte{0x12, 0x10, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0x80, 0xd0, 0xac, 0xf3, 0xbc, 0x31}
	name := []byte{0x0a, 0x0e, 0x0a, 0x08, '_', '_', 'n', 'a', 'm', 'e', '_', '_', 0x12, 0x02, 'u', 'p'}
	lv := append([]byte{0x0a, 0x01, 'a', 0x12, byte(len(fake))}, fake...)
	ex := append([]byte{0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x18, 0x01, 0x0a, byte(len(lv))}, lv...)
	ts := append([]byte(nil), name...)
	if data {
		ts = append(ts, 0x12, 0x0b, 0x09, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x10, 0x02)
	}
	ts = append(ts, 0x1a, byte(len(ex)))
	ts = append(ts, ex...)
	body := append([]byte{0x0a, byte(len(ts))}, ts...)
	if !data {
		other := append(append([]byte(nil), name...), 0x12, 0x0b, 0x09, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x10, 0x02)
		body = append(body, 0x0a, byte(len(other)))
		body = append(body, other...)
	}
	return body
}

// TestGuessedExemplarLikeSample: the guess is wrong, Verify decodes the
// series again, and the request is what strict decoding makes of it,
// exemplars folded.
func TestGuessedExemplarLikeSample(t *testing.T) {
	for _, data := range []bool{true, false} {
		src := exemplarLikeSample(data)
		var pb prompb.WriteRequest
		if err := pb.Unmarshal(src); err != nil {
			t.Fatal(err)
		}
		var g Request
		g.SetDeferLabels(true)
		g.SetGuessLabels(true)
		if err := g.Unmarshal(src); err != nil || g.guessed == 0 {
			t.Fatalf("data %v: %v, %d guessed: the body does not fool the guess", data, err, g.guessed)
		}
		checkGuessed(t, src, nil, &pb)
	}
}

// checkGuessed checks that decoding src guessing where labels end
// (SetGuessLabels), then verifying, gives what the strict decoder gives
// (strictErr, and pb when it is nil): the same error word for word, or
// the same series with the same identities, counts, plainness and
// encoding. It verifies twice: knowing nothing, and knowing what a route
// cache could know, the series whose strict decoding left their labels
// encoded as the bytes the guess took.
func checkGuessed(t *testing.T, src []byte, strictErr error, pb *prompb.WriteRequest) {
	t.Helper()
	var strict Request
	strict.SetDeferLabels(true)
	if err := strict.Unmarshal(src); (err == nil) != (strictErr == nil) {
		t.Fatalf("deferring labels: %v, without: %v", err, strictErr)
	}
	// As ingest decodes: Verify folds the exemplars of a series it finds
	// to carry only exemplars.
	strict.FoldExemplars()
	folded := len(strict.Series) != len(pb.Timeseries)
	for _, knowing := range []bool{false, true} {
		var g Request
		g.SetDeferLabels(true)
		g.SetGuessLabels(true)
		err := g.Unmarshal(src)
		if err == nil {
			g.FoldExemplars()
		}
		var known []bool
		if err == nil && knowing {
			for i := range g.Series {
				k := i < len(strict.Series) && g.Series[i].unverified && strict.Series[i].lazy &&
					bytes.Equal(g.Series[i].rawLabels, strict.Series[i].rawLabels)
				known = append(known, k)
			}
		}
		if err == nil {
			_, err = g.Verify(known)
		}
		if (err == nil) != (strictErr == nil) || err != nil && err.Error() != strictErr.Error() {
			t.Fatalf("guessing labels (knowing %v): %v; strictly: %v", knowing, err, strictErr)
		}
		if err != nil {
			continue
		}
		if len(g.Series) != len(strict.Series) || g.Plain() != strict.Plain() {
			t.Fatalf("guessing labels: %d series, plain %v; strictly: %d, %v", len(g.Series), g.Plain(), len(strict.Series), strict.Plain())
		}
		gs, gh, ge := g.Counts()
		ss, sh, se := strict.Counts()
		if gs != ss || gh != sh || ge != se {
			t.Fatalf("guessing labels: counts %d %d %d; strictly %d %d %d", gs, gh, ge, ss, sh, se)
		}
		for i := range g.Series {
			if g.Series[i].unverified {
				t.Fatalf("series %d still unverified after Verify", i)
			}
			a, _ := strict.Series[i].InputHash(nil)
			b, _ := g.Series[i].InputHash(nil)
			if a != b {
				t.Fatalf("series %d: InputHash %x guessed, %x strictly", i, b, a)
			}
		}
		if !bytes.Equal(g.MarshalAppend(nil), strict.MarshalAppend(nil)) {
			t.Fatal("a request with guessed labels encodes to something else")
		}
		if g.Plain() {
			gc, ok1 := g.AppendCuts(nil)
			sc, ok2 := strict.AppendCuts(nil)
			if ok1 != ok2 || !slices.Equal(gc, sc) {
				t.Fatalf("guessing labels: cuts %v %v; strictly %v %v", gc, ok1, sc, ok2)
			}
		}
		g.DecodeAllLazy()
		if err := sameAsPrompb(&g, pb); err != nil && !folded {
			t.Fatalf("guessed labels decoded differently from gogo: %v", err)
		}
	}
}

// plainReference checks gogo's decoding of a body Cardinal calls plain:
// no unknown field anywhere, and nothing but labels, float samples and
// metadata.
func plainReference(pb *prompb.WriteRequest) error {
	if len(pb.XXX_unrecognized) > 0 {
		return fmt.Errorf("the request has unknown fields %x", pb.XXX_unrecognized)
	}
	for i, ts := range pb.Timeseries {
		if len(ts.XXX_unrecognized) > 0 || len(ts.Exemplars) > 0 || len(ts.Histograms) > 0 {
			return fmt.Errorf("series %d has unknown fields %x, %d exemplars, %d histograms", i, ts.XXX_unrecognized, len(ts.Exemplars), len(ts.Histograms))
		}
		for _, l := range ts.Labels {
			if len(l.XXX_unrecognized) > 0 {
				return fmt.Errorf("a label of series %d has unknown fields %x", i, l.XXX_unrecognized)
			}
		}
		for _, smp := range ts.Samples {
			if len(smp.XXX_unrecognized) > 0 {
				return fmt.Errorf("a sample of series %d has unknown fields %x", i, smp.XXX_unrecognized)
			}
		}
	}
	for i, m := range pb.Metadata {
		if len(m.XXX_unrecognized) > 0 {
			return fmt.Errorf("metadata %d has unknown fields %x", i, m.XXX_unrecognized)
		}
	}
	return nil
}

// seriesWithUnknownField is a timeseries field, as a WriteRequest holds it,
// of a valid series followed by field 5 (a varint), which TimeSeries lacks.
func seriesWithUnknownField(t *testing.T) []byte {
	ts := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "x"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}
	body, err := ts.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	body = append(body, 0x28, 0x01)
	return append([]byte{0x0a, byte(len(body))}, body...)
}

// TestPlain: the requests senders write are plain, and stay so through
// Sanitize when they are valid; anything the encoder would not write, or
// that Sanitize changes, makes a request not plain.
func TestPlain(t *testing.T) {
	valid := func() *prompb.WriteRequest {
		return &prompb.WriteRequest{
			Timeseries: []prompb.TimeSeries{
				{Labels: []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "a"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1000}, {Value: 2, Timestamp: 2000}}},
				{Labels: []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "b"}}, Samples: []prompb.Sample{{Value: 0.5, Timestamp: 1000}}},
			},
			Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "up", Help: "Up."}},
		}
	}
	plain := func(pb *prompb.WriteRequest, tail ...byte) (decoded, sanitized bool) {
		t.Helper()
		var r Request
		if err := r.Unmarshal(append(mustMarshal(t, pb), tail...)); err != nil {
			t.Fatal(err)
		}
		decoded = r.Plain()
		var stats SanitizeStats
		r.Sanitize(&stats)
		return decoded, r.Plain()
	}
	if d, s := plain(valid()); !d || !s {
		t.Fatalf("a valid request of labels, samples and metadata: plain %v, after Sanitize %v; want both", d, s)
	}
	if d, s := plain(&prompb.WriteRequest{}); !d || !s {
		t.Fatal("an empty request is not plain")
	}
	// Zero fields are left out of a sample (a counter at 0 has no value,
	// a sample at the epoch no timestamp): still what the encoder writes.
	zeros := valid()
	zeros.Timeseries[0].Samples = []prompb.Sample{{Value: 0, Timestamp: 1000}, {Value: 3, Timestamp: 0}, {}}
	if d, s := plain(zeros); !d || !s {
		t.Fatalf("a request with zero sample fields left out: plain %v, after Sanitize %v; want both", d, s)
	}
	rng := rand.New(rand.NewPCG(41, 42))
	for i := range 200 {
		pb := randomRequest(rng, 1+rng.IntN(5), true)
		hasMore := false
		for j := range pb.Timeseries {
			ts := &pb.Timeseries[j]
			hasMore = hasMore || len(ts.Exemplars) > 0 || len(ts.Histograms) > 0
			for _, l := range ts.Labels {
				hasMore = hasMore || len(l.Name) == 0 || len(l.Value) == 0 || len(l.Name) >= 128 || len(l.Value) >= 128
			}
		}
		if d, _ := plain(pb); d == hasMore {
			t.Fatalf("random request %d: plain %v, but it has exemplars, histograms or fields the fast path does not read: %v", i, d, hasMore)
		}
	}
	notPlain := map[string]struct {
		pb   *prompb.WriteRequest
		tail []byte
		// decoded: the decoder already says not plain (else Sanitize does).
		decoded bool
	}{
		"unknown request field":  {valid(), []byte{0x58, 0x01}, true},
		"unknown series field":   {valid(), seriesWithUnknownField(t), true},
		"unknown metadata field": {valid(), []byte{0x1a, 0x02, 0x30, 0x01}, true},
		"exemplar": {func() *prompb.WriteRequest {
			pb := valid()
			pb.Timeseries[0].Exemplars = []prompb.Exemplar{{Value: 1, Timestamp: 1}}
			return pb
		}(), nil, true},
		"unsorted labels": {func() *prompb.WriteRequest {
			pb := valid()
			ls := pb.Timeseries[1].Labels
			ls[0], ls[1] = ls[1], ls[0]
			return pb
		}(), nil, false},
		"empty value": {func() *prompb.WriteRequest {
			pb := valid()
			pb.Timeseries[0].Labels = append(pb.Timeseries[0].Labels, prompb.Label{Name: "zone", Value: ""})
			return pb
		}(), nil, true},
		"no metric name": {func() *prompb.WriteRequest {
			pb := valid()
			pb.Timeseries[0].Labels = pb.Timeseries[0].Labels[1:]
			return pb
		}(), nil, false},
	}
	for name, c := range notPlain {
		d, s := plain(c.pb, c.tail...)
		if s || d == c.decoded {
			t.Errorf("%s: plain %v, after Sanitize %v; want %v, false", name, d, s, !c.decoded)
		}
	}
}

// stripUnknown drops the unknown fields gogo keeps; Cardinal skips them, as
// protobuf allows. Histograms are carried as raw bytes and keep theirs.
func stripUnknown(pb *prompb.WriteRequest) {
	pb.XXX_unrecognized = nil
	for i := range pb.Timeseries {
		ts := &pb.Timeseries[i]
		ts.XXX_unrecognized = nil
		for j := range ts.Labels {
			ts.Labels[j].XXX_unrecognized = nil
		}
		for j := range ts.Samples {
			ts.Samples[j].XXX_unrecognized = nil
		}
		for j := range ts.Exemplars {
			ts.Exemplars[j].XXX_unrecognized = nil
			for k := range ts.Exemplars[j].Labels {
				ts.Exemplars[j].Labels[k].XXX_unrecognized = nil
			}
		}
	}
	for i := range pb.Metadata {
		pb.Metadata[i].XXX_unrecognized = nil
	}
}

func TestHashLabelsSeparatesNamesAndValues(t *testing.T) {
	l := func(kv ...string) []Label {
		var ls []Label
		for i := 0; i < len(kv); i += 2 {
			ls = append(ls, Label{Name: []byte(kv[i]), Value: []byte(kv[i+1])})
		}
		return ls
	}
	var buf []byte
	h := func(ls []Label) uint64 {
		var v uint64
		v, buf = HashLabels(buf, ls)
		return v
	}
	distinct := [][]Label{
		l("a", "b;c"),
		l("a", "b", "c", "x"),
		l("a", "bc"),
		l("ab", "c"),
		l("a", "b", "c", "d"),
		l("a", "b\xffc", "d", "e"),
	}
	seen := map[uint64]int{}
	for i, ls := range distinct {
		if j, dup := seen[h(ls)]; dup {
			t.Errorf("label sets %d and %d hash alike", i, j)
		}
		seen[h(ls)] = i
	}
	if a, b := h(l("a", "1")), h(l("a", "1")); a != b {
		t.Error("hash is not deterministic")
	}
	ls := l("__name__", "up", "job", "mesh")
	if n := testing.AllocsPerRun(100, func() { h(ls) }); n != 0 && !raceEnabled {
		t.Errorf("HashLabels allocates %v times", n)
	}
}

// Series of every length class of the two-byte length reservation: under
// 128 bytes, under 16 KiB and beyond, must encode exactly like gogo.
func TestSeriesLengthClasses(t *testing.T) {
	for _, n := range []int{0, 100, 120, 127, 128, 200, 16000, 16383, 16384, 20000, 3 << 20} {
		pb := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
			{Labels: []prompb.Label{{Name: "__name__", Value: "x"}, {Name: "big", Value: strings.Repeat("v", n)}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 2}}},
			{Labels: []prompb.Label{{Name: "__name__", Value: "y"}}},
		}}
		want := mustMarshal(t, pb)
		var r Request
		if err := r.Unmarshal(want); err != nil {
			t.Fatal(err)
		}
		if got := r.MarshalAppend(nil); !bytes.Equal(got, want) {
			t.Fatalf("value of %d bytes: encoding differs from gogo's", n)
		}
	}
}

// InputHash must not depend on how the labels were encoded: hashing the
// decoded bytes in place and encoding the labels first agree, and a sender
// that sends labels unsorted gets the same identity as one that sorts them.
func TestInputHashIsEncodingIndependent(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	var r, sorted Request
	for i := range 300 {
		pb := randomRequest(rng, 5, false)
		if err := r.Unmarshal(mustMarshal(t, pb)); err != nil {
			t.Fatal(err)
		}
		var st SanitizeStats
		r.Sanitize(&st)
		for j := range r.Series {
			s := &r.Series[j]
			h1, _ := s.InputHash(nil)
			raw := s.rawLabels
			s.rawLabels = nil
			h2, _ := s.InputHash(nil)
			s.rawLabels = raw
			if h1 != h2 {
				t.Fatalf("case %d series %d: in-place hash %x != encoded hash %x", i, j, h1, h2)
			}
		}
	}
	// Unsorted on the wire, then sorted by Sanitize.
	unsorted := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: []prompb.Label{{Name: "job", Value: "a"}, {Name: "__name__", Value: "up"}}}}}
	inOrder := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "a"}}}}}
	var st SanitizeStats
	if err := r.Unmarshal(mustMarshal(t, unsorted)); err != nil {
		t.Fatal(err)
	}
	r.Sanitize(&st)
	if err := sorted.Unmarshal(mustMarshal(t, inOrder)); err != nil {
		t.Fatal(err)
	}
	sorted.Sanitize(&st)
	if sorted.Series[0].rawLabels == nil {
		t.Fatal("a canonical series must be hashed in place")
	}
	a, _ := r.Series[0].InputHash(nil)
	b, _ := sorted.Series[0].InputHash(nil)
	if a != b {
		t.Fatalf("unsorted %x vs sorted %x", a, b)
	}
}

func TestEncodedLabelsRoundTrip(t *testing.T) {
	ls := []Label{{Name: []byte("__name__"), Value: []byte("up")}, {Name: []byte("job"), Value: []byte(strings.Repeat("j", 300))}}
	enc := AppendEncodedLabels(nil, ls)
	var s Series
	s.SetEncodedLabels(enc)
	s.Samples = []Sample{{Value: 1, Timestamp: 2}}
	r := Request{Series: []Series{s}}
	var pb prompb.WriteRequest
	if err := pb.Unmarshal(r.MarshalAppend(nil)); err != nil {
		t.Fatal(err)
	}
	got := pb.Timeseries[0]
	if len(got.Labels) != 2 || got.Labels[1].Value != string(ls[1].Value) || got.Samples[0].Value != 1 {
		t.Fatalf("decoded %+v", got)
	}
	back, err := DecodeLabels(enc)
	if err != nil || len(back) != 2 || string(back[0].Value) != "up" {
		t.Fatalf("DecodeLabels = %v, %v", back, err)
	}
	// An empty label set is not mistaken for an encoded one.
	var empty Series
	empty.Labels = []Label{}
	if n := (&Request{Series: []Series{empty}}).Size(); n != 2 {
		t.Fatalf("empty series encodes to %d bytes, want 2", n)
	}
}

// TestSanitizeTrusted: series marked trusted keep their labels unchecked,
// the others are checked as Sanitize does, native histograms always are,
// and the result says when series moved or changed.
func TestSanitizeTrusted(t *testing.T) {
	decodeReq := func(pb *prompb.WriteRequest) *Request {
		t.Helper()
		var r Request
		if err := r.Unmarshal(mustMarshal(t, pb)); err != nil {
			t.Fatal(err)
		}
		return &r
	}
	good := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "up"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}
	noName := prompb.TimeSeries{Labels: []prompb.Label{{Name: "job", Value: "a"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}
	unsorted := prompb.TimeSeries{Labels: []prompb.Label{{Name: "job", Value: "a"}, {Name: "__name__", Value: "up"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}
	badHist := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "h"}}, Histograms: []prompb.Histogram{{
		Count: &prompb.Histogram_CountInt{CountInt: 1}, Schema: 0, ZeroCount: &prompb.Histogram_ZeroCountInt{ZeroCountInt: 0},
		PositiveSpans: []prompb.BucketSpan{{Offset: 0, Length: 5}}, PositiveDeltas: []int64{1}, Timestamp: 1,
	}}}
	for _, c := range []struct {
		name    string
		series  []prompb.TimeSeries
		trusted []bool
		kept    int
		changed bool
	}{
		{"all valid, none trusted", []prompb.TimeSeries{good, good}, nil, 2, false},
		{"all valid, all trusted", []prompb.TimeSeries{good, good}, []bool{true, true}, 2, false},
		{"invalid, untrusted", []prompb.TimeSeries{good, noName}, []bool{true}, 1, true},
		{"invalid, trusted: not checked", []prompb.TimeSeries{good, noName}, []bool{true, true}, 2, false},
		{"unsorted, untrusted", []prompb.TimeSeries{unsorted, good}, []bool{false, true}, 2, true},
		{"bad histogram, trusted: still checked", []prompb.TimeSeries{badHist, good}, []bool{true, true}, 1, true},
	} {
		r := decodeReq(&prompb.WriteRequest{Timeseries: c.series})
		var stats SanitizeStats
		changed := r.SanitizeTrusted(&stats, c.trusted)
		if len(r.Series) != c.kept || changed != c.changed {
			t.Errorf("%s: kept %d, changed %v; want %d, %v", c.name, len(r.Series), changed, c.kept, c.changed)
		}
	}
}

// reserve always leaves room for n more, doubles small buffers and lets
// append's own growth take over past reserveDoubling bytes.
func TestReserve(t *testing.T) {
	for _, tc := range []struct{ len, cap, n int }{{0, 0, 64}, {10, 10, 1}, {1000, 1000, 64}, {5, 100, 64}, {reserveDoubling, reserveDoubling, 4 << 10}} {
		s := make([]byte, tc.len, tc.cap)
		got := reserve(s, tc.n)
		if cap(got)-len(got) < tc.n || len(got) != tc.len {
			t.Fatalf("reserve(len %d cap %d, %d): len %d cap %d", tc.len, tc.cap, tc.n, len(got), cap(got))
		}
		switch {
		case tc.cap-tc.len >= tc.n:
			if cap(got) != tc.cap {
				t.Fatalf("reserve(len %d cap %d, %d) grew to %d with room to spare", tc.len, tc.cap, tc.n, cap(got))
			}
		case tc.len < reserveDoubling:
			if cap(got) < 2*tc.len {
				t.Fatalf("reserve(len %d cap %d, %d) grew to %d, want at least double", tc.len, tc.cap, tc.n, cap(got))
			}
		default:
			if cap(got) >= 2*tc.len {
				t.Fatalf("reserve(len %d, %d) doubled a buffer past %d bytes: cap %d", tc.len, tc.n, reserveDoubling, cap(got))
			}
		}
	}
	ls := reserve([]Label(nil), 64)
	if cap(ls) < 64 {
		t.Fatalf("reserve of labels: cap %d", cap(ls))
	}
}
