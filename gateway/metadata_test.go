package gateway

import (
	"context"
	"math"
	"testing"

	"github.com/prometheus/prometheus/prompb"

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
