package gateway

import (
	"context"
	"math"
	"testing"

	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/internal/rw2conv"
	"github.com/cardinal-gateway/cardinal/wire"
)

// TestMetadataDecidesKind: the type a sender announces decides how merged
// inputs combine, whatever the name says: conn_total announced as a gauge
// merges by the gauge policy (max here), not as a counter sum. Under
// CARDINAL_TEST_RW=2 the type comes as 2.0 per-series metadata.
func TestMetadataDecidesKind(t *testing.T) {
	for _, tc := range []struct {
		typ  prompb.MetricMetadata_MetricType
		want float64
	}{
		{prompb.MetricMetadata_GAUGE, 7},    // max(3, 7)
		{prompb.MetricMetadata_COUNTER, 10}, // 3 + 7
	} {
		g, _ := newTestGateway(t, `
downstream: {url: "http://127.0.0.1:1/"}
merge: {flush_interval: 1h, gauges: [{match: "conn_total", policy: max}]}
relabel_configs:
  - {action: labeldrop, regex: pod}
`, &recordingSender{})
		a := series("conn_total", "app", "a", "pod", "p1")
		b := series("conn_total", "app", "a", "pod", "p2")
		a.Samples[0].Value, b.Samples[0].Value = 3, 7
		pb := &prompb.WriteRequest{
			Timeseries: []prompb.TimeSeries{a, b},
			Metadata:   []prompb.MetricMetadata{{Type: tc.typ, MetricFamilyName: "conn_total", Help: "Connections."}},
		}
		// The first request finds the collision, the second is merged whole.
		for step, wantMerged := range []int{1, 2} {
			for i := range pb.Timeseries {
				pb.Timeseries[i].Samples[0].Timestamp = int64(1000 + 15000*step)
			}
			if res, err := g.Process(context.Background(), decode(t, pb)); err != nil || res.Merged != wantMerged {
				t.Fatalf("%v, request %d: res %+v, err %v; want %d merged", tc.typ, step, res, err, wantMerged)
			}
		}
		var got []float64
		var meta wire.SeriesMetadata
		g.merger.Flush(context.Background(), func(_ context.Context, req *wire.Request, _ func(int, string, error)) error {
			for _, s := range req.Series {
				for _, smp := range s.Samples {
					if !math.IsNaN(smp.Value) {
						got = append(got, smp.Value)
					}
				}
			}
			meta = g.merger.LookupMetadata([]byte("conn_total"))
			return nil
		}, false)
		if len(got) == 0 || got[len(got)-1] != tc.want {
			t.Fatalf("%v: merged output %v, want [%v]", tc.typ, got, tc.want)
		}
		if meta.Type != int32(tc.typ) || string(meta.Help) != "Connections." {
			t.Fatalf("%v: metadata for 2.0 output %+v", tc.typ, meta)
		}
	}
}

// TestV2ToV1KeepsEverything: a 2.0 request forwarded to a 1.0 downstream
// keeps its samples, exemplars, native histograms and metadata (as 1.0
// family metadata).
func TestV2ToV1KeepsEverything(t *testing.T) {
	sender := &recordingSender{keep: true}
	g, _ := newTestGateway(t, `downstream: {url: "http://127.0.0.1:1/"}`, sender)
	h := prompb.Histogram{
		Count: &prompb.Histogram_CountInt{CountInt: 2}, Sum: 3, Schema: 0, ZeroThreshold: 1e-128,
		ZeroCount: &prompb.Histogram_ZeroCountInt{ZeroCountInt: 0}, Timestamp: 1000,
		PositiveSpans: []prompb.BucketSpan{{Offset: 1, Length: 1}}, PositiveDeltas: []int64{2},
	}
	pb := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{Labels: []prompb.Label{{Name: "__name__", Value: "req_total"}, {Name: "app", Value: "a"}},
				Samples:   []prompb.Sample{{Value: 5, Timestamp: 1000}},
				Exemplars: []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: "abc"}}, Value: 1, Timestamp: 900}}},
			{Labels: []prompb.Label{{Name: "__name__", Value: "lat_seconds"}, {Name: "app", Value: "a"}},
				Histograms: []prompb.Histogram{h}},
		},
		Metadata: []prompb.MetricMetadata{
			{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "req_total", Help: "Requests."},
			{Type: prompb.MetricMetadata_HISTOGRAM, MetricFamilyName: "lat_seconds", Help: "Latency.", Unit: "seconds"},
		},
	}
	raw, err := rw2conv.FromV1(pb).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var req wire.Request
	if err := req.UnmarshalV2(raw); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Process(context.Background(), &req); err != nil {
		t.Fatal(err)
	}
	if len(sender.reqs) != 1 {
		t.Fatalf("%d requests forwarded", len(sender.reqs))
	}
	got := sender.reqs[0]
	if len(got.Timeseries) != 2 || got.Timeseries[0].Samples[0].Value != 5 || len(got.Timeseries[0].Exemplars) != 1 ||
		len(got.Timeseries[1].Histograms) != 1 || got.Timeseries[1].Histograms[0].GetCountInt() != 2 {
		t.Fatalf("forwarded %+v", got.Timeseries)
	}
	if len(got.Metadata) != 2 || got.Metadata[0].MetricFamilyName != "req_total" || got.Metadata[1].Unit != "seconds" || got.Metadata[1].Type != prompb.MetricMetadata_HISTOGRAM {
		t.Fatalf("forwarded metadata %+v", got.Metadata)
	}
}
