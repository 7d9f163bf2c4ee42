package wire

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
)

// TestRandomValidHistogramsAreValid checks the generator itself: what it
// calls valid, Prometheus accepts, in every layout.
func TestRandomValidHistogramsAreValid(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for i := range 5000 {
		h := randomValidHistogram(rng)
		data := encodeHistogramVariant(rng, &h)
		if err := referenceValidate(data); err != nil {
			t.Fatalf("case %d: generated histogram %+v is invalid: %v", i, h, err)
		}
		if err := ValidateHistogram(data); err != nil {
			t.Fatalf("case %d: %v\n%x", i, err, data)
		}
	}
}

// TestValidateHistogramMatchesPrometheus is the differential test:
// ValidateHistogram's verdict equals Prometheus' on valid, mutated and
// damaged histograms, and DecodeFloatHistogram decodes what prompb decodes.
func TestValidateHistogramMatchesPrometheus(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	rng := rand.New(rand.NewPCG(11, 12))
	var reused histogram.FloatHistogram
	var valid, invalid, undecodable int
	for i := range n {
		data := randomHistogramCase(rng)
		want := referenceValidate(data)
		got := ValidateHistogram(data)
		if (got == nil) != (want == nil) {
			t.Fatalf("case %d: ValidateHistogram = %v, Prometheus says %v\n%x", i, got, want, data)
		}
		if got != nil && !errors.Is(got, ErrInvalidHistogram) {
			t.Fatalf("case %d: %v does not wrap ErrInvalidHistogram", i, got)
		}
		fh := &reused
		if rng.IntN(4) == 0 {
			fh = &histogram.FloatHistogram{}
		}
		if err := checkDecodeFloat(data, fh); err != nil {
			t.Fatalf("case %d: %v\n%x", i, err, data)
		}
		switch {
		case want == nil:
			valid++
		case errors.As(want, new(histogram.Error)):
			invalid++
		default:
			undecodable++
		}
	}
	t.Logf("%d valid, %d invalid, %d undecodable", valid, invalid, undecodable)
	if valid < n/5 || invalid < n/5 || undecodable < n/50 {
		t.Fatalf("the generator lost its balance: %d valid, %d invalid, %d undecodable", valid, invalid, undecodable)
	}
}

// checkDecodeFloat decodes data into fh and compares it with prompb's
// conversion: both fail, or both give the same histogram.
func checkDecodeFloat(data []byte, fh *histogram.FloatHistogram) error {
	want, wantErr := referenceFloat(data)
	err := DecodeFloatHistogram(data, fh)
	if (err == nil) != (wantErr == nil) {
		return fmt.Errorf("DecodeFloatHistogram = %v, gogo says %v", err, wantErr)
	}
	if err != nil {
		if !errors.Is(err, ErrInvalidHistogram) {
			return fmt.Errorf("%v does not wrap ErrInvalidHistogram", err)
		}
		return nil
	}
	return sameFloatHistogram(fh, want)
}

func sameFloatHistogram(got, want *histogram.FloatHistogram) error {
	sameBits := func(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }
	sameFloats := func(a, b []float64) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if !sameBits(a[i], b[i]) {
				return false
			}
		}
		return true
	}
	sameSpans := func(a, b []histogram.Span) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	}
	switch {
	case got.CounterResetHint != want.CounterResetHint:
		return fmt.Errorf("CounterResetHint %d, want %d", got.CounterResetHint, want.CounterResetHint)
	case got.Schema != want.Schema:
		return fmt.Errorf("Schema %d, want %d", got.Schema, want.Schema)
	case !sameBits(got.ZeroThreshold, want.ZeroThreshold):
		return fmt.Errorf("ZeroThreshold %v, want %v", got.ZeroThreshold, want.ZeroThreshold)
	case !sameBits(got.ZeroCount, want.ZeroCount):
		return fmt.Errorf("ZeroCount %v, want %v", got.ZeroCount, want.ZeroCount)
	case !sameBits(got.Count, want.Count):
		return fmt.Errorf("Count %v, want %v", got.Count, want.Count)
	case !sameBits(got.Sum, want.Sum):
		return fmt.Errorf("Sum %v, want %v", got.Sum, want.Sum)
	case !sameSpans(got.PositiveSpans, want.PositiveSpans):
		return fmt.Errorf("PositiveSpans %v, want %v", got.PositiveSpans, want.PositiveSpans)
	case !sameSpans(got.NegativeSpans, want.NegativeSpans):
		return fmt.Errorf("NegativeSpans %v, want %v", got.NegativeSpans, want.NegativeSpans)
	case !sameFloats(got.PositiveBuckets, want.PositiveBuckets):
		return fmt.Errorf("PositiveBuckets %v, want %v", got.PositiveBuckets, want.PositiveBuckets)
	case !sameFloats(got.NegativeBuckets, want.NegativeBuckets):
		return fmt.Errorf("NegativeBuckets %v, want %v", got.NegativeBuckets, want.NegativeBuckets)
	case !sameFloats(got.CustomValues, want.CustomValues):
		return fmt.Errorf("CustomValues %v, want %v", got.CustomValues, want.CustomValues)
	}
	return nil
}

func intHist(schema int32, count uint64, pos []prompb.BucketSpan, deltas ...int64) prompb.Histogram {
	return prompb.Histogram{
		Schema:         schema,
		Count:          &prompb.Histogram_CountInt{CountInt: count},
		PositiveSpans:  pos,
		PositiveDeltas: deltas,
		Timestamp:      1,
	}
}

func floatHist(schema int32, count float64, pos []prompb.BucketSpan, counts ...float64) prompb.Histogram {
	return prompb.Histogram{
		Schema:         schema,
		Count:          &prompb.Histogram_CountFloat{CountFloat: count},
		PositiveSpans:  pos,
		PositiveCounts: counts,
		Timestamp:      1,
	}
}

func spans(offLen ...int64) []prompb.BucketSpan {
	var ss []prompb.BucketSpan
	for i := 0; i < len(offLen); i += 2 {
		ss = append(ss, prompb.BucketSpan{Offset: int32(offLen[i]), Length: uint32(offLen[i+1])})
	}
	return ss
}

func marshalHistogram(t testing.TB, h prompb.Histogram) []byte {
	t.Helper()
	b, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestValidateHistogramRejects names the ways a histogram is invalid,
// starting with the one that crashed the merger: spans that claim five
// buckets and one delta.
func TestValidateHistogramRejects(t *testing.T) {
	fRaw := func(name string, data []byte, want string) {
		t.Helper()
		err := ValidateHistogram(data)
		if err == nil {
			t.Errorf("%s: ValidateHistogram accepts %x", name, data)
			return
		}
		if !errors.Is(err, ErrInvalidHistogram) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %q, want ErrInvalidHistogram with %q", name, err, want)
		}
		if referenceValidate(data) == nil {
			t.Errorf("%s: Prometheus accepts %x", name, data)
		}
		var fh histogram.FloatHistogram
		_ = DecodeFloatHistogram(data, &fh) // must not panic
	}
	f := func(name string, h prompb.Histogram, want string) {
		t.Helper()
		fRaw(name, marshalHistogram(t, h), want)
	}
	with := func(h prompb.Histogram, edit func(*prompb.Histogram)) prompb.Histogram {
		edit(&h)
		return h
	}

	f("spans claim 5 buckets, 1 delta", intHist(0, 1, spans(0, 5), 1), "positive spans need 5 buckets, have 1")
	f("float: spans claim 2 buckets", floatHist(3, 1, spans(0, 2), 1), "positive spans need 2 buckets, have 1")
	f("negative spans without buckets", with(intHist(0, 0, nil), func(h *prompb.Histogram) { h.NegativeSpans = spans(1, 2) }), "negative spans need 2 buckets, have 0")
	f("negative absolute count", intHist(0, 2, spans(0, 2), 2, -3), "positive bucket 2 has a negative count of -1")
	f("negative side negative count", with(intHist(0, 0, nil), func(h *prompb.Histogram) {
		h.NegativeSpans, h.NegativeDeltas = spans(0, 1), []int64{-1}
	}), "negative bucket 1 has a negative count of -1")
	f("float negative count", floatHist(0, 1, spans(0, 2), 1, -0.5), "positive bucket 2 has a negative count of -0.5")
	f("float negative total", floatHist(0, -1, nil), "count is negative")
	f("float negative zero count", with(floatHist(0, 1, nil), func(h *prompb.Histogram) {
		h.ZeroCount = &prompb.Histogram_ZeroCountFloat{ZeroCountFloat: -1}
	}), "zero bucket has a negative count of -1")
	f("count mismatch", intHist(0, 5, spans(0, 2), 1, 1), "count 5 does not match the 3 observations")
	f("count too small for NaN sum", with(intHist(0, 2, spans(0, 2), 1, 1), func(h *prompb.Histogram) { h.Sum = math.NaN() }), "count 2 is less than the 3 observations")
	f("no count", with(intHist(0, 0, spans(0, 1), 1), func(h *prompb.Histogram) { h.Count = nil }), "count 0 does not match the 1 observations")
	f("zero bucket counted", with(intHist(0, 1, nil), func(h *prompb.Histogram) {
		h.ZeroCount = &prompb.Histogram_ZeroCountInt{ZeroCountInt: 2}
	}), "count 1 does not match the 2 observations")
	for _, s := range []int32{-5, -9, -10, 53, 100, -52, -54, math.MinInt32, math.MaxInt32} {
		f(fmt.Sprintf("schema %d", s), intHist(s, 0, nil), fmt.Sprintf("unknown schema %d", s))
	}
	f("later span negative offset", intHist(0, 2, spans(0, 1, -1, 1), 1, 0), "positive span 2 has a negative offset of -1")
	f("first span at MinInt32", intHist(0, 0, spans(math.MinInt32, 0)), "positive span 1 starts at bucket index -2147483648")
	f("span beyond int32", intHist(0, 0, spans(math.MaxInt32, 1, 1, 0)), "positive span 2 ends at bucket index 2147483648")
	f("custom values on exponential", with(intHist(2, 0, nil), func(h *prompb.Histogram) { h.CustomValues = []float64{1, 2} }), "exponential schema 2 has 2 custom bounds")
	f("custom values on reserved schema", with(floatHist(20, 0, nil), func(h *prompb.Histogram) { h.CustomValues = []float64{1} }), "exponential schema 20 has 1 custom bounds")

	custom := func(count uint64, bounds []float64, pos []prompb.BucketSpan, deltas ...int64) prompb.Histogram {
		h := intHist(histogram.CustomBucketsSchema, count, pos, deltas...)
		h.CustomValues = bounds
		return h
	}
	f("NaN bound", custom(1, []float64{1, math.NaN()}, spans(0, 1), 1), "custom bounds contain NaN")
	f("bounds out of order", custom(1, []float64{1, 3, 2}, spans(0, 1), 1), "not strictly increasing: 2 after 3")
	f("equal bounds", custom(1, []float64{1, 1}, spans(0, 1), 1), "not strictly increasing: 1 after 1")
	f("+Inf bound", custom(1, []float64{1, math.Inf(1)}, spans(0, 1), 1), "the last custom bound is +Inf")
	f("too few bounds", custom(3, []float64{1}, spans(0, 3), 1, 0, 0), "1 custom bounds cannot cover spans of total length 3")
	f("too few bounds with offsets", custom(2, []float64{1, 2}, spans(1, 1, 1, 1), 1, 0), "2 custom bounds cannot cover spans of total length 4")
	f("custom negative offset", custom(2, []float64{1, 2}, spans(0, 1, -1, 1), 1, 0), "custom bucket span 2 has a negative offset of -1")
	f("custom spans vs buckets", custom(1, []float64{1, 2}, spans(0, 2), 1), "custom bucket spans need 2 buckets, have 1")
	f("custom zero count", with(custom(1, []float64{1}, spans(0, 1), 1), func(h *prompb.Histogram) {
		h.ZeroCount = &prompb.Histogram_ZeroCountInt{ZeroCountInt: 1}
	}), "custom buckets have a zero count of 1")
	f("custom float NaN zero count", with(floatHist(histogram.CustomBucketsSchema, 1, spans(0, 1), 1), func(h *prompb.Histogram) {
		h.ZeroCount = &prompb.Histogram_ZeroCountFloat{ZeroCountFloat: math.NaN()}
	}), "custom buckets have a zero count of NaN")
	f("custom zero threshold", with(custom(1, []float64{1}, spans(0, 1), 1), func(h *prompb.Histogram) { h.ZeroThreshold = 1e-128 }), "custom buckets have a zero threshold of 1e-128")
	f("custom negative spans", with(custom(1, []float64{1}, spans(0, 1), 1), func(h *prompb.Histogram) { h.NegativeSpans = spans(0, 0) }), "custom buckets have 1 negative spans")
	f("custom negative buckets", with(custom(1, []float64{1}, spans(0, 1), 1), func(h *prompb.Histogram) { h.NegativeDeltas = []int64{0} }), "custom buckets have 1 negative buckets")

	// What gogo itself cannot decode.
	valid := marshalHistogram(t, intHist(0, 1, spans(0, 1), 1))
	fRaw("field number 0", append([]byte{0x00, 0x00}, valid...), "illegal field number 0")
	fRaw("end group outside a group", append([]byte{0x0c}, valid...), "end-group tag outside a group")
	fRaw("schema as fixed64", append([]byte{0x21, 1, 2, 3, 4, 5, 6, 7, 8}, valid...), "field 4: wrong wire type")
	fRaw("spans as varint", append([]byte{0x58, 0x01}, valid...), "field 11: wrong wire type")
	fRaw("deltas as fixed32", append([]byte{0x65, 1, 2, 3, 4}, valid...), "field 12: wrong wire type")
	fRaw("truncated", valid[:len(valid)-1], "unexpected end of data")
	fRaw("truncated packed double", []byte{0x6a, 0x01, 0x00}, "field 13: unexpected end of data")
	fRaw("eleven-byte varint", []byte{0x78, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, "varint longer than ten bytes")
	fRaw("span field 0", []byte{0x5a, 0x02, 0x00, 0x00}, "field 11: span: illegal field number 0")
	fRaw("unterminated group", []byte{0x8b, 0x01, 0x08, 0x01}, "unexpected end of data")
	fRaw("illegal wire type", []byte{0x8e, 0x01}, "illegal wire type")
}

// TestValidateHistogramAccepts covers what is valid although it looks odd.
func TestValidateHistogramAccepts(t *testing.T) {
	f := func(name string, data []byte) {
		t.Helper()
		if err := referenceValidate(data); err != nil {
			t.Fatalf("%s: the case is wrong, Prometheus says %v", name, err)
		}
		if err := ValidateHistogram(data); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	h := func(h prompb.Histogram) []byte { return marshalHistogram(t, h) }
	f("empty message", nil)
	f("integer", h(intHist(0, 3, spans(-3, 2), 1, 1)))
	f("reserved schema 9", h(intHist(9, 1, spans(0, 1), 1)))
	f("reserved schema 52", h(floatHist(52, 1, spans(0, 1), 1)))
	f("schema -4", h(intHist(-4, 0, nil)))
	f("float count needs no match", h(floatHist(0, 100, spans(0, 2), 1, 2)))
	f("float NaN and +Inf buckets", h(floatHist(0, math.NaN(), spans(0, 2), math.NaN(), math.Inf(1))))
	f("NaN sum and a larger count", h(func() prompb.Histogram {
		x := intHist(0, 7, spans(0, 1), 3)
		x.Sum = math.NaN()
		return x
	}()))
	f("integer ignores float counts", h(func() prompb.Histogram {
		x := intHist(0, 1, spans(0, 1), 1)
		x.PositiveCounts = []float64{-1, -2, -3}
		return x
	}()))
	f("float ignores deltas", h(func() prompb.Histogram {
		x := floatHist(0, 1, spans(0, 1), 1)
		x.PositiveDeltas = []int64{-5, -6}
		return x
	}()))
	f("custom buckets", h(func() prompb.Histogram {
		x := intHist(histogram.CustomBucketsSchema, 2, spans(0, 1, 1, 2), 1, -1, 1)
		x.CustomValues = []float64{math.Inf(-1), 1, 2}
		return x
	}()))
	// Layouts: the count given twice (the last wins), an unpacked delta, an
	// empty packed field, an unknown group, and a packed field whose last
	// element runs past its end into the next field, which gogo reads.
	base := h(intHist(0, 1, spans(0, 1), 1))
	f("count twice", append([]byte{0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f}, append(base, 0x08, 0x01)...))
	f("unpacked delta", append(h(func() prompb.Histogram { x := intHist(0, 1, spans(0, 1)); return x }()), 0x60, 0x02))
	f("empty packed", append([]byte{0x62, 0x00, 0x6a, 0x00, 0x82, 0x01, 0x00}, base...))
	f("unknown group", append([]byte{0x8b, 0x01, 0x08, 0x01, 0x13, 0x14, 0x8c, 0x01}, base...))
	f("packed element past its end", []byte{0x08, 0x01, 0x5a, 0x02, 0x10, 0x01, 0x62, 0x01, 0x82, 0x00})
	f("field number beyond int32 reads as field 1", append(h(intHist(0, 1, spans(0, 1), 1)), 0x88, 0x80, 0x80, 0x80, 0x80, 0x02, 0x01))
}

// FuzzValidateHistogram: ValidateHistogram's verdict is Prometheus' on any
// input, and DecodeFloatHistogram decodes what prompb decodes; neither
// panics.
func FuzzValidateHistogram(f *testing.F) {
	rng := rand.New(rand.NewPCG(15, 16))
	for range 40 {
		f.Add(randomHistogramCase(rng))
	}
	for range 10 {
		h := randomValidHistogram(rng)
		f.Add(marshalHistogram(f, h))
	}
	f.Add([]byte{})
	f.Add([]byte{0x00, 0x00})
	f.Add([]byte{0x08, 0x01, 0x5a, 0x02, 0x10, 0x01, 0x62, 0x01, 0x82, 0x00})
	f.Add(marshalHistogram(f, intHist(0, 1, spans(0, 5), 1)))
	var reused histogram.FloatHistogram
	f.Fuzz(func(t *testing.T, data []byte) {
		want := referenceValidate(data)
		got := ValidateHistogram(data)
		if (got == nil) != (want == nil) {
			t.Fatalf("ValidateHistogram = %v, Prometheus says %v", got, want)
		}
		if err := checkDecodeFloat(data, &reused); err != nil {
			t.Fatal(err)
		}
	})
}

func TestHistogramAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	withBounds := intHist(histogram.CustomBucketsSchema, 2, spans(0, 1, 1, 2), 1, -1, 1)
	withBounds.CustomValues = []float64{0.1, 1, 2.5}
	floatBounds := floatHist(histogram.CustomBucketsSchema, 3, spans(0, 2), 1, 2)
	floatBounds.CustomValues = []float64{1, 2}
	negative := intHist(3, 4, spans(-2, 2, 3, 1), 1, 0, -1)
	negative.NegativeSpans, negative.NegativeDeltas = spans(0, 1), []int64{2}
	negative.Sum = 12.5
	cases := map[string]prompb.Histogram{
		"integer":        negative,
		"float":          floatHist(1, 7, spans(-1, 3, 2, 2), 1, 2, 0, 3.5, 0.5),
		"integer custom": withBounds,
		"float custom":   floatBounds,
	}
	for name, h := range cases {
		data := marshalHistogram(t, h)
		if err := ValidateHistogram(data); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n := testing.AllocsPerRun(100, func() { _ = ValidateHistogram(data) }); n != 0 {
			t.Errorf("%s: ValidateHistogram allocates %v times", name, n)
		}
		var fh histogram.FloatHistogram
		if err := DecodeFloatHistogram(data, &fh); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n := testing.AllocsPerRun(100, func() { _ = DecodeFloatHistogram(data, &fh) }); n != 0 {
			t.Errorf("%s: DecodeFloatHistogram into a warm histogram allocates %v times", name, n)
		}
	}
}

// TestDecodeFloatHistogramCustomValuesAreNotOverwritten: Prometheus shares
// custom values between histograms (FloatHistogram.Copy keeps them), so
// decoding must never write into the slice fh holds.
func TestDecodeFloatHistogramCustomValuesAreNotOverwritten(t *testing.T) {
	a := floatHist(histogram.CustomBucketsSchema, 1, spans(0, 1), 1)
	a.CustomValues = []float64{1, 2}
	b := a
	b.CustomValues = []float64{3, 4}
	var fh histogram.FloatHistogram
	if err := DecodeFloatHistogram(marshalHistogram(t, a), &fh); err != nil {
		t.Fatal(err)
	}
	shared := fh.Copy()
	if err := DecodeFloatHistogram(marshalHistogram(t, b), &fh); err != nil {
		t.Fatal(err)
	}
	if shared.CustomValues[0] != 1 || fh.CustomValues[0] != 3 {
		t.Fatalf("custom values: copy %v, decoded %v", shared.CustomValues, fh.CustomValues)
	}
}
