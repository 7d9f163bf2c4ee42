package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/config"
	"github.com/cardinal-gateway/cardinal/forward"
	"github.com/cardinal-gateway/cardinal/internal/rw2conv"
	"github.com/cardinal-gateway/cardinal/wire"
)

// recordingSender keeps what it was asked to send, decoded by prompb (the
// reference decoder), and fails when err is set.
type recordingSender struct {
	mu   sync.Mutex
	reqs []*prompb.WriteRequest
	err  error
	keep bool
}

func (s *recordingSender) Send(_ context.Context, body []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if !s.keep {
		return nil
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		return err
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		return err
	}
	s.reqs = append(s.reqs, &req)
	return nil
}

func (s *recordingSender) Close() {}

const testConfig = `
downstream:
  url: http://127.0.0.1:1/api/v1/write
relabel_configs:
  - action: drop
    source_labels: [__name__]
    regex: envoy_server_.*
  - action: labelkeep
    regex: __name__|job|namespace|app|response_code
`

func newTestGateway(t testing.TB, yml string, sender *recordingSender) (*Gateway, *prometheus.Registry) {
	t.Helper()
	cfg, err := config.Parse([]byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	g, err := New(cfg, Options{
		Registerer: reg,
		NewSender: func(config.DownstreamConfig, prometheus.Registerer, *slog.Logger) (Sender, error) {
			return sender, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return g, reg
}

// setSender makes s the sender of g's configuration in force.
func setSender(g *Gateway, s Sender) {
	st := g.state.Load()
	st.sender, st.target = s, forward.NewTarget(s)
}

// decode turns pb into the request the gateway receives: remote write 1.0,
// or 2.0 when CARDINAL_TEST_RW=2 (make test runs the package both ways),
// so that every stage is tested on both encodings.
func decode(t testing.TB, pb *prompb.WriteRequest) *wire.Request {
	t.Helper()
	var r wire.Request
	if rw2conv.Testing() {
		b, err := rw2conv.FromV1(pb).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := r.UnmarshalV2(b); err != nil {
			t.Fatal(err)
		}
		r.FoldExemplars() // as ingest does
		return &r
	}
	b, err := pb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	r.SetDeferLabels(true) // as ingest does
	r.SetGuessLabels(true)
	if err := r.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	r.FoldExemplars()
	return &r
}

func series(name string, kv ...string) prompb.TimeSeries {
	ls := []prompb.Label{{Name: "__name__", Value: name}}
	for i := 0; i < len(kv); i += 2 {
		ls = append(ls, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Value: 1, Timestamp: 1000}}}
}

func TestProcessRelabelsAndForwards(t *testing.T) {
	sender := &recordingSender{keep: true}
	g, reg := newTestGateway(t, testConfig, sender)
	pb := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series("istio_requests_total", "app", "reviews", "namespace", "bookinfo", "request_id", "a1", "response_code", "200"),
		series("envoy_server_memory_allocated", "app", "reviews"),
		series("istio_requests_total", "app", "ratings", "user_agent", "curl/8"),
		{Labels: []prompb.Label{{Name: "app", Value: "no-name"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}, {Value: 2, Timestamp: 2}}},
	}}
	res, err := g.Process(context.Background(), decode(t, pb))
	if err != nil {
		t.Fatal(err)
	}
	if res.Forwarded != 2 || res.DroppedByRelabel != 1 || res.Invalid.DroppedSamples() != 2 {
		t.Fatalf("result = %+v", res)
	}
	if len(sender.reqs) != 1 {
		t.Fatalf("sent %d requests, want 1", len(sender.reqs))
	}
	got := sender.reqs[0].Timeseries
	want := []string{
		`{__name__="istio_requests_total", app="reviews", namespace="bookinfo", response_code="200"}`,
		`{__name__="istio_requests_total", app="ratings"}`,
	}
	if len(got) != len(want) {
		t.Fatalf("forwarded %d series, want %d", len(got), len(want))
	}
	for i := range got {
		if s := labelsString(got[i].Labels); s != want[i] {
			t.Errorf("series %d = %s, want %s", i, s, want[i])
		}
		if len(got[i].Samples) != 1 || got[i].Samples[0].Value != 1 || got[i].Samples[0].Timestamp != 1000 {
			t.Errorf("series %d samples = %+v", i, got[i].Samples)
		}
	}
	for reason, want := range map[string]float64{ReasonRelabel: 1, ReasonInvalid: 2} {
		if got := metricValue(t, reg, "cardinal_dropped_samples_total", reason); got != want {
			t.Errorf("dropped{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if got := metricValue(t, reg, "cardinal_forwarded_samples_total", PathPassthrough); got != 2 {
		t.Errorf("forwarded = %v, want 2", got)
	}
}

// metricValue returns the counter called name whose only label has the
// value label ("" for a counter without labels).
func metricValue(t testing.TB, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label) {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("metric %s{%s} not found", name, label)
	return 0
}

func labelsString(ls []prompb.Label) string {
	s := "{"
	for i, l := range ls {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s=%q", l.Name, l.Value)
	}
	return s + "}"
}

func TestProcessDropsSeriesThatLoseTheirName(t *testing.T) {
	sender := &recordingSender{keep: true}
	g, _ := newTestGateway(t, `
downstream: {url: "http://127.0.0.1:1/"}
relabel_configs:
  - {action: labeldrop, regex: __name__}
`, sender)
	res, err := g.Process(context.Background(), decode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series("up", "job", "a")}}))
	if err != nil {
		t.Fatal(err)
	}
	if res.DroppedByRelabel != 1 || len(sender.reqs) != 0 {
		t.Fatalf("a series without a name must be dropped, not forwarded: %+v, %d sent", res, len(sender.reqs))
	}
}

func TestProcessReturnsSenderError(t *testing.T) {
	want := errors.New("downstream down")
	g, reg := newTestGateway(t, testConfig, &recordingSender{err: want})
	_, err := g.Process(context.Background(), decode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series("up")}}))
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	if n := metricValue(t, reg, "cardinal_forwarded_samples_total", PathPassthrough); n != 0 {
		t.Fatalf("forwarded = %v after a failed send", n)
	}
}

func TestApplyKeepsOldConfigOnError(t *testing.T) {
	sender := &recordingSender{keep: true}
	g, _ := newTestGateway(t, testConfig, sender)
	old := g.Config()
	bad := *old
	bad.RelabelConfigs = []*relabelConfig{{Action: "hashmod", TargetLabel: "x", Modulus: 0, Separator: ";", Regex: defaultRegex(), Replacement: "$1"}}
	if err := g.Apply(&bad); err == nil {
		t.Fatal("Apply accepted hashmod with modulus 0")
	}
	if g.Config() != old {
		t.Fatal("a failed Apply replaced the running config")
	}
}

func TestEmptyResultIsNotForwarded(t *testing.T) {
	sender := &recordingSender{keep: true}
	g, _ := newTestGateway(t, testConfig, sender)
	res, err := g.Process(context.Background(), decode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series("envoy_server_uptime")}}))
	if err != nil || res.Forwarded != 0 || len(sender.reqs) != 0 {
		t.Fatalf("res=%+v err=%v sent=%d", res, err, len(sender.reqs))
	}
}

func TestProcessAllocsNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	g, _ := newTestGateway(t, testConfig, &recordingSender{})
	pb := &prompb.WriteRequest{}
	for i := range 500 {
		pb.Timeseries = append(pb.Timeseries, series("istio_requests_total",
			"app", fmt.Sprintf("app-%d", i%20), "namespace", "mesh", "pod", fmt.Sprintf("pod-%d", i),
			"request_id", fmt.Sprintf("%032x", i), "response_code", "200"))
	}
	assertProcessAllocsNothing(t, g, pb, "decode+sanitize+relabel+encode+compress")
}

// assertProcessAllocsNothing runs pb through g as successive scrapes: every
// run carries the same series with new timestamps and larger values, so
// merged outputs absorb new samples rather than skip a replay. After a few
// warm-up scrapes, a scrape must allocate nothing.
func assertProcessAllocsNothing(t *testing.T, g *Gateway, pb *prompb.WriteRequest, what string) {
	t.Helper()
	const runs = 24
	bodies, compressed := make([][]byte, runs), make([][]byte, runs)
	for i := range bodies {
		for j := range pb.Timeseries {
			for k := range pb.Timeseries[j].Samples {
				pb.Timeseries[j].Samples[k].Timestamp += 15_000
				pb.Timeseries[j].Samples[k].Value++
			}
		}
		src, err := pb.Marshal()
		if rw2conv.Testing() {
			src, err = rw2conv.FromV1(pb).Marshal()
		}
		if err != nil {
			t.Fatal(err)
		}
		bodies[i] = src
		compressed[i] = snappy.Encode(nil, src)
	}
	var req wire.Request
	req.SetDeferLabels(true) // as ingest does
	req.SetGuessLabels(true)
	// run sends scrape i; the merger flushes after it, off the count, as it
	// does between scrapes in production.
	run := func(i int) uint64 {
		err := req.Unmarshal(bodies[i])
		if rw2conv.Testing() {
			err = req.UnmarshalV2(bodies[i])
		}
		if err != nil {
			t.Fatal(err)
		}
		// As ingest does: an unchanged request goes as it came.
		req.Original = compressed[i]
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err = g.Process(context.Background(), &req)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		g.merger.Flush(context.Background(), discardDelivery, false)
		return after.Mallocs - before.Mallocs
	}
	// Warm-up: pools, per-series state and the merger's recycled
	// exemplars reach their steady state.
	// A collection empties sync.Pools (regexp keeps its matchers in one);
	// refilling them is not the request path's doing: collect before the
	// last warm-up scrape, and not during the measurement.
	// sync.Pool keeps one cache per P (regexp keeps its matchers in one);
	// a goroutine that moves to another P finds it empty. One P makes the
	// count deterministic; the refills it avoids are amortised, not
	// per-request work.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const warmup = 4
	for i := range warmup {
		if i == warmup-1 {
			runtime.GC()
		}
		run(i)
	}
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var got []uint64
	for i := warmup; i < runs; i++ {
		got = append(got, run(i))
	}
	for _, n := range got {
		if n != 0 {
			t.Fatalf("%s: scrapes %d..%d allocate %v times", what, warmup, runs-1, got)
		}
	}
}

// Two inputs that the rules collapse into one output must not both be
// forwarded: the downstream would reject the duplicate timestamp.
func TestCollapsedSeriesAreMergedNotDuplicated(t *testing.T) {
	sender := &recordingSender{keep: true}
	g, reg := newTestGateway(t, `
downstream: {url: "http://127.0.0.1:1/"}
relabel_configs:
  - {action: labeldrop, regex: pod}
`, sender)
	pb := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series("req_total", "app", "a", "pod", "p1"),
		series("req_total", "app", "a", "pod", "p2"),
		series("req_total", "app", "b", "pod", "p1"),
	}}
	res, err := g.Process(context.Background(), decode(t, pb))
	if err != nil {
		t.Fatal(err)
	}
	if res.Forwarded != 2 || res.Merged != 1 {
		t.Fatalf("result %+v: want 2 forwarded (first input of app=a, app=b) and 1 merged", res)
	}
	got := sender.reqs[0].Timeseries
	if len(got) != 2 || labelsString(got[0].Labels) == labelsString(got[1].Labels) {
		t.Fatalf("forwarded %v", got)
	}
	if c := g.Collisions(10); len(c) != 1 || c[0].Inputs != 2 || c[0].CollapsedLabels[0] != "pod" {
		t.Fatalf("collisions %+v", c)
	}
	if v := metricValue(t, reg, "cardinal_collisions_total", ""); v != 1 {
		t.Fatalf("cardinal_collisions_total = %v, want 1", v)
	}
}
