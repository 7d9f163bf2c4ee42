package wire

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/internal/rw2conv"
)

// meshRequest returns a 2000-series request of realistic mesh traffic, 30 %
// of it carrying injected request-level labels, encoded by gogo.
func meshRequest(tb testing.TB) (*prompb.WriteRequest, []byte) {
	tb.Helper()
	gen := meshgen.New(meshgen.Config{Workloads: 24, PodsPerWorkload: 3, Churn: true, Seed: 7})
	req := gen.WriteRequests(1, 1_700_000_000_000, 2000)[0]
	return req, mustMarshal(tb, req)
}

func TestRoundTripMeshTraffic(t *testing.T) {
	_, src := meshRequest(t)
	var r Request
	if err := r.Unmarshal(src); err != nil {
		t.Fatal(err)
	}
	if len(r.Series) != 2000 {
		t.Fatalf("decoded %d series, want 2000", len(r.Series))
	}
	if out := r.MarshalAppend(nil); !bytes.Equal(out, src) {
		t.Fatal("re-encoding of mesh traffic differs from gogo's encoding")
	}
}

func BenchmarkUnmarshal(b *testing.B) { benchUnmarshal(b, false) }

// BenchmarkUnmarshalDeferred is Unmarshal leaving the labels encoded, as
// ingest decodes traffic whose series are mostly known.
func BenchmarkUnmarshalDeferred(b *testing.B) { benchUnmarshal(b, true) }

// BenchmarkUnmarshalGuessed is Unmarshal guessing where the labels end
// (SetGuessLabels), as ingest decodes for the gateway, which verifies the
// series it does not know (here: none).
func BenchmarkUnmarshalGuessed(b *testing.B) { benchUnmarshalGuess(b, true, true) }

func benchUnmarshal(b *testing.B, deferLabels bool) { benchUnmarshalGuess(b, deferLabels, false) }

func benchUnmarshalGuess(b *testing.B, deferLabels, guess bool) {
	_, src := meshRequest(b)
	var r Request
	r.SetDeferLabels(deferLabels)
	r.SetGuessLabels(guess)
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if err := r.Unmarshal(src); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(r.Series))*float64(b.N)/b.Elapsed().Seconds(), "series/s")
}

func BenchmarkMarshalAppend(b *testing.B) {
	_, src := meshRequest(b)
	var r Request
	if err := r.Unmarshal(src); err != nil {
		b.Fatal(err)
	}
	var out []byte
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		out = r.MarshalAppend(out[:0])
	}
	b.ReportMetric(float64(len(r.Series))*float64(b.N)/b.Elapsed().Seconds(), "series/s")
}

// meshRequestV2 is meshRequest's request as remote write 2.0.
func meshRequestV2(tb testing.TB) []byte {
	tb.Helper()
	req, _ := meshRequest(tb)
	src, err := rw2conv.FromV1(req).Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return src
}

func BenchmarkUnmarshalV2(b *testing.B) {
	src := meshRequestV2(b)
	var r Request
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if err := r.UnmarshalV2(src); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(r.Series))*float64(b.N)/b.Elapsed().Seconds(), "series/s")
}

func BenchmarkMarshalAppendV2(b *testing.B) {
	_, src := meshRequest(b)
	var r Request
	if err := r.Unmarshal(src); err != nil {
		b.Fatal(err)
	}
	var out []byte
	var st SymbolTable
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		out = r.MarshalAppendV2(out[:0], &st, nil)
	}
	b.ReportMetric(float64(len(r.Series))*float64(b.N)/b.Elapsed().Seconds(), "series/s")
}

// BenchmarkGogoUnmarshal is the reference decoder on the same payload, for
// comparison.
func BenchmarkGogoUnmarshal(b *testing.B) {
	_, src := meshRequest(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		var pb prompb.WriteRequest
		if err := pb.Unmarshal(src); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCodecFloor is the work no remote-write proxy can avoid: snappy
// decode of the input, one pass over every field (the cheapest full scan
// this repository has is Unmarshal itself), and snappy encode of an output
// of the same size. The gateway's cost is stated as a multiple of it.
func BenchmarkCodecFloor(b *testing.B) {
	_, src := meshRequest(b)
	compressed := snappy.Encode(nil, src)
	raw := make([]byte, len(src))
	out := make([]byte, snappy.MaxEncodedLen(len(src)))
	var r Request
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		var err error
		if raw, err = snappy.Decode(raw[:cap(raw)], compressed); err != nil {
			b.Fatal(err)
		}
		if err := r.Unmarshal(raw); err != nil {
			b.Fatal(err)
		}
		out = snappy.Encode(out[:cap(out)], raw)
	}
}

// nativeHistogramRequest is a request of 500 series, each carrying two valid
// native histograms of the kinds randomValidHistogram makes.
func nativeHistogramRequest(tb testing.TB) []byte {
	tb.Helper()
	rng := rand.New(rand.NewPCG(17, 18))
	req := &prompb.WriteRequest{}
	for i := range 500 {
		req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
			Labels:     []prompb.Label{{Name: "__name__", Value: "rpc_latency_seconds"}, {Name: "pod", Value: fmt.Sprint("pod-", i)}},
			Histograms: []prompb.Histogram{randomValidHistogram(rng), randomValidHistogram(rng)},
		})
	}
	return mustMarshal(tb, req)
}

// BenchmarkUnmarshalNativeHistograms: Unmarshal parses every histogram
// whole, to reject what gogo would.
func BenchmarkUnmarshalNativeHistograms(b *testing.B) {
	src := nativeHistogramRequest(b)
	var r Request
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if err := r.Unmarshal(src); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(r.Series))*float64(b.N)/b.Elapsed().Seconds(), "series/s")
}

// BenchmarkSanitizeNativeHistograms: Unmarshal and Sanitize, which
// validates every histogram, of the same request.
func BenchmarkSanitizeNativeHistograms(b *testing.B) {
	src := nativeHistogramRequest(b)
	var r Request
	var st SanitizeStats
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if err := r.Unmarshal(src); err != nil {
			b.Fatal(err)
		}
		r.Sanitize(&st)
	}
	if st.DroppedSeries() != 0 {
		b.Fatalf("dropped: %s", st.Describe())
	}
	b.ReportMetric(float64(len(r.Series))*float64(b.N)/b.Elapsed().Seconds(), "series/s")
}

func histogramBenchCases(tb testing.TB) map[string][]byte {
	withBounds := floatHist(histogram.CustomBucketsSchema, 30, spans(0, 10), 1, 2, 3, 4, 5, 6, 7, 0, 1, 1)
	withBounds.CustomValues = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}
	exp := intHist(3, 0, spans(-10, 8, 2, 6, 4, 6))
	var c int64
	for k := range 20 {
		d := int64(k%5) - 2
		if c+d < 0 {
			d = 0
		}
		c += d
		exp.PositiveDeltas = append(exp.PositiveDeltas, d)
	}
	exp.Count = &prompb.Histogram_CountInt{CountInt: uint64(sumCounts(exp.PositiveDeltas))}
	exp.Sum, exp.ZeroThreshold = 1234.5, 1e-128
	return map[string][]byte{"integer20": marshalHistogram(tb, exp), "customFloat10": marshalHistogram(tb, withBounds)}
}

func sumCounts(deltas []int64) int64 {
	var c, sum int64
	for _, d := range deltas {
		c += d
		sum += c
	}
	return sum
}

func BenchmarkValidateHistogram(b *testing.B) {
	for name, data := range histogramBenchCases(b) {
		b.Run(name, func(b *testing.B) {
			if err := ValidateHistogram(data); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				_ = ValidateHistogram(data)
			}
		})
	}
}

func BenchmarkDecodeFloatHistogram(b *testing.B) {
	for name, data := range histogramBenchCases(b) {
		b.Run(name, func(b *testing.B) {
			var fh histogram.FloatHistogram
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if err := DecodeFloatHistogram(data, &fh); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGogoDecodeFloatHistogram is the reference on the same input.
func BenchmarkGogoDecodeFloatHistogram(b *testing.B) {
	for name, data := range histogramBenchCases(b) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := referenceFloat(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCountSeries is the walk ingest makes before decoding, to refuse
// bodies whose series headers could not fit; compare with BenchmarkUnmarshal.
func BenchmarkCountSeries(b *testing.B) {
	_, src := meshRequest(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if CountSeries(src, false) != 2000 {
			b.Fatal("miscounted")
		}
	}
}
