package wire

import (
	"bytes"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
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

func BenchmarkUnmarshal(b *testing.B) {
	_, src := meshRequest(b)
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
