package gateway

import (
	"context"
	"fmt"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/forward"
	"github.com/cardinal-gateway/cardinal/wire"
)

// Issue 12, "counters that add up": a Linkerd instance showed 9 forwarded
// samples against 2,979 received, because merged emissions were not
// counted. Now every received sample is either forwarded as it came or
// dropped for a reason, received = forwarded{path="passthrough"} + sum of
// dropped{reason}, and merged emissions are forwarded{path="merged"}.
func TestReceivedSamplesReconcile(t *testing.T) {
	cfg := `
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
relabel_configs:
  - {action: drop, source_labels: [__name__], regex: "drop_me"}
  - {action: labeldrop, regex: pod}
limits:
  workload_labels: [app]
  max_series_per_workload: 4
`
	g, reg := newTestGateway(t, cfg, &recordingSender{})
	setSender(g, refusingSender{label: "refuse"})
	pb := &prompb.WriteRequest{}
	for i := range 12 {
		app := fmt.Sprintf("app-%d", i%3)
		pb.Timeseries = append(pb.Timeseries,
			series("req_total", "app", app, "pod", fmt.Sprintf("pod-%d", i), "code", fmt.Sprint(200+i%2)), // two pods per output: merged; some folded
			series("up", "app", app, "instance", fmt.Sprint(i)),                                           // passes
		)
	}
	pb.Timeseries = append(pb.Timeseries,
		series("drop_me", "app", "x"),
		series("bad"), // no workload label: fine; invalid needs no name
		prompb.TimeSeries{Labels: []prompb.Label{{Name: "job", Value: "noname"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}},
		series("refuse", "app", "app-r", "refuse", "yes"),
	)
	var req *wire.Request
	for step := range 3 {
		for j := range pb.Timeseries {
			for k := range pb.Timeseries[j].Samples {
				pb.Timeseries[j].Samples[k].Timestamp = int64(1000 + step*15000)
			}
		}
		req = decode(t, pb)
		_, _ = g.Process(context.Background(), req)
	}
	g.merger.Flush(context.Background(), g.deliverMerged, true)

	received := metricValue(t, reg, "cardinal_received_samples_total", "")
	passthrough := labeled(t, reg, "cardinal_forwarded_samples_total", "path", "passthrough")
	merged := labeled(t, reg, "cardinal_forwarded_samples_total", "path", "merged")
	dropped := 0.0
	byReason := map[string]float64{}
	for _, r := range []string{ReasonRelabel, ReasonInvalid, ReasonLimit, ReasonMergeCapacity, ReasonMerged, ReasonRejected} {
		v := labeled(t, reg, "cardinal_dropped_samples_total", "reason", r)
		byReason[r] = v
		dropped += v
	}
	if received != passthrough+dropped {
		t.Fatalf("received %v != forwarded{passthrough} %v + dropped %v %v", received, passthrough, dropped, byReason)
	}
	for _, r := range []string{ReasonRelabel, ReasonInvalid, ReasonLimit, ReasonMerged, ReasonRejected} {
		if byReason[r] == 0 {
			t.Errorf("the traffic never dropped for reason %s: %v", r, byReason)
		}
	}
	if merged == 0 {
		t.Error("no merged emission counted in forwarded{path=merged}")
	}
	t.Logf("received %v = passthrough %v + dropped %v; merged emissions %v", received, passthrough, byReason, merged)
}

// refusingSender refuses, as Prometheus refuses an out-of-order sample,
// every body holding a series with the label.
type refusingSender struct{ label string }

func (s refusingSender) Send(_ context.Context, body []byte) error {
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		return err
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		return err
	}
	for _, ts := range req.Timeseries {
		for _, l := range ts.Labels {
			if l.Name == s.label {
				return &forward.Error{Status: 400, Code: 400, Reason: forward.ReasonOutOfOrder, Msg: "out of order sample"}
			}
		}
	}
	return nil
}

func (refusingSender) Close() {}

// labeled reads one labelled series of a counter family (0 when absent).
func labeled(t *testing.T, reg *prometheus.Registry, family, name, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == name && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
