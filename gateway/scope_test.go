package gateway

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/wire"
)

// Issue 12: with the Istio preset, Prometheus' and Cardinal's own metrics
// were collapsed too (net_conntrack_dialer_conn_failed_total merged from 24
// inputs, its dialer_name, instance and reason dropped) and fell under the
// workload caps. With scope, the rules, trace sampling and caps apply to
// the mesh's series only; everything else arrives exactly as sent.
func TestScopeLeavesOtherSeriesUntouched(t *testing.T) {
	cfg := `
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
scope: ['{__name__=~"istio_.*|envoy_.*"}']
relabel_configs:
  - {action: labelkeep, regex: "__name__|app|namespace|le"}
trace_sampling:
  labels: [trace_id]
  ratio: 1
limits:
  workload_labels: [namespace, app]
  max_series_per_workload: 1
`
	sender := &recordingSender{keep: true}
	g, _ := newTestGateway(t, cfg, sender)
	pb := &prompb.WriteRequest{}
	for i := range 4 {
		pb.Timeseries = append(pb.Timeseries,
			series("istio_requests_total", "app", "a", "namespace", "n", "pod", fmt.Sprint(i)),
			series("net_conntrack_dialer_conn_failed_total", "dialer_name", "alertmanager", "instance", fmt.Sprintf("10.0.0.%d:9090", i), "reason", "refused", "trace_id", fmt.Sprintf("%032x", i+1)),
		)
	}
	if _, err := g.Process(context.Background(), decode(t, pb)); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range sender.reqs {
		for _, ts := range r.Timeseries {
			got[labelsString(ts.Labels)] = true
			if len(ts.Exemplars) != 0 {
				t.Errorf("an out-of-scope series got an exemplar: %v", ts.Labels)
			}
		}
	}
	for i := range 4 {
		want := labelsString(series("net_conntrack_dialer_conn_failed_total", "dialer_name", "alertmanager", "instance", fmt.Sprintf("10.0.0.%d:9090", i), "reason", "refused", "trace_id", fmt.Sprintf("%032x", i+1)).Labels)
		if !got[want] {
			t.Errorf("out-of-scope series %s did not arrive as sent; got %v", want, got)
		}
	}
	for k := range got {
		if k == labelsString(series("istio_requests_total", "app", "a", "namespace", "n", "pod", "0").Labels) {
			t.Errorf("an in-scope series kept its pod label: %s", k)
		}
	}
}

// Regression (issue 11, reliability suite): with a downstream refusing
// every request (401), requests whose series were all merged were still
// answered 204: their samples lived in memory only. While the merger
// cannot deliver, such requests are answered 503 so the sender keeps them;
// its retry adds nothing (the samples are known by their timestamps).
func TestMergedSamplesAreNotAcknowledgedWhileUndeliverable(t *testing.T) {
	g, _ := newTestGateway(t, "downstream: {url: 'http://127.0.0.1:1/w'}\nrelabel_configs:\n  - {action: labeldrop, regex: pod}\n", &recordingSender{})
	req := func(v float64, ts int64) *prompb.WriteRequest {
		pb := &prompb.WriteRequest{}
		for _, pod := range []string{"a", "b"} {
			s := series("req_total", "pod", pod)
			s.Samples[0].Value, s.Samples[0].Timestamp = v, ts
			pb.Timeseries = append(pb.Timeseries, s)
		}
		return pb
	}
	ctx := context.Background()
	if _, err := g.Process(ctx, decode(t, req(1, 1000))); err != nil {
		t.Fatal(err)
	}
	down := func(context.Context, *wire.Request, func(int, string, error)) error { return errors.New("401") }
	g.merger.Flush(ctx, down, true)
	if _, err := g.Process(ctx, decode(t, req(2, 2000))); err == nil {
		t.Fatal("merged samples acknowledged while the merger cannot deliver")
	}
	g.merger.Flush(ctx, discardDelivery, true)
	if _, err := g.Process(ctx, decode(t, req(3, 3000))); err != nil {
		t.Fatalf("after a delivery: %v", err)
	}
}
