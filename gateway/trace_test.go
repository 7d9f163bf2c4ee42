package gateway

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/tracesample"
)

func traceConfig(ratio string) string {
	return `
downstream: {url: "http://127.0.0.1:1/"}
trace_sampling:
  labels: [trace_id, traceparent]
  ratio: ` + ratio + `
  always_keep:
    - {label: response_code, regex: "5.."}
    - {label: grpc_status, not_regex: "0|OK"}
`
}

func TestTraceIDsBecomeExemplars(t *testing.T) {
	const tid = "4bf92f3577b34da6a3ce929d0e0e4736"
	tests := []struct {
		name      string
		ratio     string
		labels    []string
		wantTrace string
		wantSpan  string
		wantLabel int // labels left on the series
	}{
		{"plain id sampled", "1", []string{"app", "a", "trace_id", tid}, tid, "", 2},
		{"traceparent with span", "1", []string{"app", "a", "traceparent", "00-" + tid + "-00f067aa0ba902b7-01"}, tid, "00f067aa0ba902b7", 2},
		{"not sampled", "0", []string{"app", "a", "trace_id", tid}, "", "", 2},
		{"error always kept", "0", []string{"app", "a", "response_code", "503", "trace_id", tid}, tid, "", 3},
		{"not_regex matcher", "0", []string{"app", "a", "grpc_status", "14", "trace_id", tid}, tid, "", 3},
		{"not_regex does not match", "0", []string{"app", "a", "grpc_status", "0", "trace_id", tid}, "", "", 3},
		{"malformed id", "1", []string{"app", "a", "trace_id", "not-a-trace"}, "", "", 2},
		{"no trace label", "1", []string{"app", "a"}, "", "", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sender := &recordingSender{keep: true}
			g, reg := newTestGateway(t, traceConfig(tt.ratio), sender)
			ts := series("req_total", tt.labels...)
			ts.Samples = []prompb.Sample{{Value: 3, Timestamp: 1000}, {Value: 7, Timestamp: 2000}}
			if _, err := g.Process(context.Background(), decode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{ts}})); err != nil {
				t.Fatal(err)
			}
			got := sender.reqs[0].Timeseries[0]
			if len(got.Labels) != tt.wantLabel {
				t.Fatalf("labels %v: trace labels must be removed", got.Labels)
			}
			for _, l := range got.Labels {
				if l.Name == "trace_id" || l.Name == "traceparent" {
					t.Fatalf("trace label %s left on the series", l.Name)
				}
			}
			if tt.wantTrace == "" {
				if len(got.Exemplars) != 0 {
					t.Fatalf("unexpected exemplar %+v", got.Exemplars)
				}
			} else {
				if len(got.Exemplars) != 1 {
					t.Fatalf("exemplars %+v, want 1", got.Exemplars)
				}
				e := got.Exemplars[0]
				if e.Value != 7 || e.Timestamp != 2000 {
					t.Errorf("exemplar %v@%d, want the last sample 7@2000", e.Value, e.Timestamp)
				}
				want := fmt.Sprintf("[[trace_id %s]]", tt.wantTrace)
				if tt.wantSpan != "" {
					want = fmt.Sprintf("[[trace_id %s] [span_id %s]]", tt.wantTrace, tt.wantSpan)
				}
				if gotL := fmt.Sprint(exemplarLabels(e.Labels)); gotL != want {
					t.Errorf("exemplar labels %s, want %s", gotL, want)
				}
			}
			malformed := metricValue(t, reg, "cardinal_trace_ids_malformed_total", "")
			if (tt.name == "malformed id") != (malformed == 1) {
				t.Errorf("cardinal_trace_ids_malformed_total = %v", malformed)
			}
		})
	}
}

func exemplarLabels(ls []prompb.Label) [][2]string {
	var out [][2]string
	for _, l := range ls {
		out = append(out, [2]string{l.Name, l.Value})
	}
	return out
}

// The decision must be the sampler's, so that every replica and every
// OpenTelemetry sampler at the same ratio agree.
func TestExemplarDecisionIsTheSamplers(t *testing.T) {
	const ratio = 0.3
	sampler, err := tracesample.NewSampler(ratio)
	if err != nil {
		t.Fatal(err)
	}
	sender := &recordingSender{keep: true}
	g, _ := newTestGateway(t, traceConfig(fmt.Sprint(ratio)), sender)
	pb := &prompb.WriteRequest{}
	want := map[string]bool{}
	for i := range 400 {
		tid := fmt.Sprintf("%016x%016x", uint64(i+1)*0x9E3779B97F4A7C15, uint64(i+1)*0xD1B54A32D192ED03)
		tc, ok := tracesample.Parse([]byte(tid))
		if !ok {
			t.Fatal(tid)
		}
		want[tid] = sampler.Sample(tc.TraceID)
		// Distinct outputs: the app label keeps them apart.
		pb.Timeseries = append(pb.Timeseries, series("req_total", "app", fmt.Sprint(i), "trace_id", tid))
	}
	if _, err := g.Process(context.Background(), decode(t, pb)); err != nil {
		t.Fatal(err)
	}
	kept := 0
	for _, ts := range sender.reqs[0].Timeseries {
		if len(ts.Exemplars) == 1 {
			tid := ts.Exemplars[0].Labels[0].Value
			if !want[tid] {
				t.Fatalf("exemplar for %s, which the sampler rejects", tid)
			}
			kept++
		}
	}
	wantKept := 0
	for _, k := range want {
		if k {
			wantKept++
		}
	}
	if kept != wantKept || kept == 0 {
		t.Fatalf("kept %d exemplars, the sampler keeps %d", kept, wantKept)
	}
}

func TestOneExemplarPerOutputPerRequest(t *testing.T) {
	sender := &recordingSender{keep: true}
	g, _ := newTestGateway(t, traceConfig("1"), sender)
	pb := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series("req_total", "app", "a", "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
		series("req_total", "app", "a", "trace_id", "5bf92f3577b34da6a3ce929d0e0e4737"),
	}}
	pb.Timeseries[0].Exemplars = []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: "sent-by-the-sender"}}, Value: 1, Timestamp: 1}}
	res, err := g.Process(context.Background(), decode(t, pb))
	if err != nil {
		t.Fatal(err)
	}
	// Both inputs collapse into one output: the first passes through with
	// the sender's exemplar and Cardinal's, the second is merged.
	if res.Forwarded != 1 || res.Merged != 1 {
		t.Fatalf("result %+v", res)
	}
	ex := sender.reqs[0].Timeseries[0].Exemplars
	if len(ex) != 2 || ex[0].Labels[0].Value != "sent-by-the-sender" {
		t.Fatalf("exemplars %+v: want the sender's, then one of Cardinal's", ex)
	}
}

func TestTraceSamplingAllocsNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	g, _ := newTestGateway(t, traceConfig("0.5")+`
relabel_configs:
  - {action: labeldrop, regex: request_id}
limits:
  workload_labels: [app]
  max_series_per_workload: 100
`, &recordingSender{})
	pb := &prompb.WriteRequest{}
	for i := range 500 {
		tid := fmt.Sprintf("%016x%016x", uint64(i+1)*0x9E3779B97F4A7C15, uint64(i)*0xD1B54A32D192ED03)
		pb.Timeseries = append(pb.Timeseries, series("istio_requests_total",
			"app", fmt.Sprintf("app-%d", i%4), "pod", fmt.Sprintf("pod-%d", i),
			"traceparent", "00-"+tid+"-00f067aa0ba902b7-01", "response_code", []string{"200", "503"}[i%7/6]))
	}
	assertProcessAllocsNothing(t, g, pb, "the full pipeline with trace sampling, caps and folding")
}

// Regression: a stale marker must not become an exemplar with a NaN value.
func TestNoExemplarFromStaleMarker(t *testing.T) {
	sender := &recordingSender{keep: true}
	g, reg := newTestGateway(t, traceConfig("1"), sender)
	ts := series("req_total", "app", "a", "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")
	ts.Samples = []prompb.Sample{{Value: 3, Timestamp: 1000}, {Value: math.Float64frombits(value.StaleNaN), Timestamp: 2000}}
	if _, err := g.Process(context.Background(), decode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{ts}})); err != nil {
		t.Fatal(err)
	}
	if ex := sender.reqs[0].Timeseries[0].Exemplars; len(ex) != 0 {
		t.Fatalf("exemplars %+v from a series whose last sample is a stale marker", ex)
	}
	if v := metricValue(t, reg, "cardinal_exemplars_added_total", "sampled"); v != 0 {
		t.Fatalf("cardinal_exemplars_added_total{reason=sampled} = %v", v)
	}
}

// countingSender counts what it is given, without allocating.
type countingSender struct{ bytes int }

func (s *countingSender) Send(_ context.Context, body []byte) error {
	s.bytes += len(body)
	return nil
}

func (s *countingSender) Close() {}

// An input the route cache knows is trace-sampled again on every request
// only when it carries a trace id; the others' labels stay encoded.
func TestKnownInputsSampledOnlyWithTraceIDs(t *testing.T) {
	sender := &recordingSender{keep: true}
	g, reg := newTestGateway(t, traceConfig("1")+`
relabel_configs:
  - {action: labeldrop, regex: pod}
`, sender)
	const tid = "4bf92f3577b34da6a3ce929d0e0e4736"
	for step := range 3 {
		pb := &prompb.WriteRequest{}
		for i := range 40 {
			ts := series("req_total", "app", "b", "pod", fmt.Sprint(i))
			if i%4 == 0 { // a quarter carry a trace id; all collapse by app
				ts = series("req_total", "app", "a", "pod", fmt.Sprint(i), "trace_id", tid)
			}
			ts.Samples = []prompb.Sample{{Value: float64(step + 1), Timestamp: int64(1000 * (step + 1))}}
			pb.Timeseries = append(pb.Timeseries, ts)
		}
		if _, err := g.Process(context.Background(), decode(t, pb)); err != nil {
			t.Fatal(err)
		}
		// One exemplar per output per request: app="a" every time, from
		// the cache's routes after the first.
		if got := metricValue(t, reg, "cardinal_exemplars_added_total", "sampled"); got != float64(step+1) {
			t.Fatalf("after request %d: %v exemplars added, want %d", step+1, got, step+1)
		}
		if step > 0 && !g.DeferLabels() {
			t.Fatalf("after request %d: labels not deferred, though only the traced quarter needs them", step+1)
		}
	}
}

// TestTracedInputsCachedOnSecondSighting: an input with a trace id that
// collapses into a merged output is cached only when it comes back (most
// live for one request: caching each would fill the route cache with
// routes never used), while its samples are merged either way and its
// next sample takes the cached route.
func TestTracedInputsCachedOnSecondSighting(t *testing.T) {
	sender := &recordingSender{keep: true}
	g, _ := newTestGateway(t, traceConfig("0"), sender)
	a := series("req_total", "app", "a", "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")
	b := series("req_total", "app", "a", "trace_id", "00f067aa0ba902b700f067aa0ba902b7")
	send := func(ts int64, v float64, s prompb.TimeSeries) (Result, uint64) {
		t.Helper()
		s.Samples = []prompb.Sample{{Value: v, Timestamp: ts}}
		req := decode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{s}})
		in, _ := req.Series[0].InputHash(nil)
		res, err := g.Process(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return res, in
	}
	if res, _ := send(1000, 1, a); res.Forwarded != 1 {
		t.Fatalf("a: %+v, want it forwarded, the single input of its output", res)
	}
	res, inB := send(1000, 2, b)
	if res.Merged != 1 {
		t.Fatalf("b: %+v, want it merged with a", res)
	}
	if _, ok := g.routes.get(inB, g.limiter.Clock()); ok {
		t.Fatalf("b, seen once, has a cached route")
	}
	if res, _ := send(2000, 5, b); res.Merged != 1 {
		t.Fatalf("b again: %+v, want it merged", res)
	}
	r, ok := g.routes.get(inB, g.limiter.Clock())
	if !ok || !r.traced() || r.pass() {
		t.Fatalf("b, seen twice: route %+v, %v; want a traced merge route", r, ok)
	}
	if res, _ := send(3000, 6, b); res.Merged != 1 {
		t.Fatalf("b from its cached route: %+v, want it merged", res)
	}
	sender.reqs = nil
	g.merger.Flush(context.Background(), g.deliverMerged, true)
	var last float64
	for _, req := range sender.reqs {
		for _, ts := range req.Timeseries {
			for _, s := range ts.Samples {
				last = s.Value
			}
		}
	}
	if last != 7 {
		t.Fatalf("merged %v, want 7 (a's 1 and b's 6)", last)
	}
}
