package gateway

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/wire"
)

// keptBodies keeps every body it is given, as it was given.
type keptBodies struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (s *keptBodies) Send(_ context.Context, body []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bodies = append(s.bodies, body)
	return nil
}

func (s *keptBodies) Close() {}

// last returns the last body and what prompb decodes from it.
func (s *keptBodies) last(t *testing.T) ([]byte, *prompb.WriteRequest) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.bodies) == 0 {
		t.Fatal("nothing was sent")
	}
	body := s.bodies[len(s.bodies)-1]
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	var pb prompb.WriteRequest
	if err := pb.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	return body, &pb
}

// sameArray reports whether a and b start at the same byte of memory: the
// body was handed on, not rebuilt.
func sameArray(a, b []byte) bool {
	return len(a) > 0 && len(b) > 0 && &a[0] == &b[0]
}

// processAsIngest runs pb's 1.0 body (with tail appended) through Process
// as ingest does, its compressed form kept as the request's Original,
// which it returns.
func processAsIngest(t *testing.T, g *Gateway, pb *prompb.WriteRequest, tail ...byte) []byte {
	t.Helper()
	raw, err := pb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	raw = append(raw, tail...)
	var req wire.Request
	if err := req.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	req.Original = snappy.Encode(nil, raw)
	if _, err := g.Process(context.Background(), &req); err != nil {
		t.Fatal(err)
	}
	return req.Original
}

// TestUnchangedRequestsGoDownstreamAsTheyCame: a remote write 1.0 request
// whose every series passes from the route cache unchanged is forwarded in
// the body it came in; one that any stage changed, or whose body holds
// something the encoder would not write, is encoded again. Either way the
// downstream decodes what the gateway meant to send.
func TestUnchangedRequestsGoDownstreamAsTheyCame(t *testing.T) {
	sender := &keptBodies{}
	g, reg := newTestGateway(t, passConfig, &recordingSender{})
	setSender(g, sender)
	meta := []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "req_total", Help: "Requests."}}
	scrape := func(step int, extra ...prompb.TimeSeries) *prompb.WriteRequest {
		pb := &prompb.WriteRequest{Metadata: meta}
		for i := range 50 {
			s := series("req_total", "app", fmt.Sprintf("a%d", i%5), "instance", fmt.Sprintf("10.0.0.%d:80", i), "namespace", "n")
			s.Samples = []prompb.Sample{{Value: float64(step*100 + i), Timestamp: int64(step) * 15_000}}
			pb.Timeseries = append(pb.Timeseries, s)
		}
		pb.Timeseries = append(pb.Timeseries, extra...)
		return pb
	}
	// process sends raw (a 1.0 body, with tail appended before
	// compression) as ingest does, and reports whether the body that went
	// downstream is the one that came.
	process := func(pb *prompb.WriteRequest, tail ...byte) (verbatim bool, got *prompb.WriteRequest) {
		t.Helper()
		original := processAsIngest(t, g, pb, tail...)
		body, got := sender.last(t)
		return sameArray(body, original), got
	}
	verbatimCount := func() float64 {
		return metricValue(t, reg, "cardinal_forward_verbatim_requests_total", "")
	}

	// The first scrape takes the full path, which finds every series as
	// it came (the rules leave them as they are); the second passes from
	// the route cache.
	if v, _ := process(scrape(1)); !v {
		t.Fatal("first scrape of series the rules leave as they are was encoded again, want it forwarded as it came")
	}
	want := scrape(2)
	v, got := process(want)
	if !v {
		t.Fatal("second scrape of unchanged series was encoded again, want it forwarded as it came")
	}
	if !slices.EqualFunc(got.Timeseries, want.Timeseries, func(a, b prompb.TimeSeries) bool { return a.String() == b.String() }) ||
		len(got.Metadata) != 1 || got.Metadata[0].Help != "Requests." {
		t.Fatalf("downstream decoded %v, want %v", got, want)
	}
	if n := verbatimCount(); n != 2 {
		t.Fatalf("cardinal_forward_verbatim_requests_total = %v, want 2", n)
	}

	// A series the rules change (pod dropped): the request is rebuilt.
	changed := series("req_total", "app", "a0", "instance", "10.9.9.9:80", "namespace", "n", "pod", "p")
	changed.Samples = []prompb.Sample{{Value: 7, Timestamp: 3 * 15_000}}
	if v, got := process(scrape(3, changed)); v {
		t.Fatal("a request with a series the rules change went as it came")
	} else {
		for _, ts := range got.Timeseries {
			for _, l := range ts.Labels {
				if l.Name == "pod" {
					t.Fatalf("downstream got the dropped label: %v", ts)
				}
			}
		}
	}

	// Bodies that decode to the same series but hold what the encoder
	// would not write, or that Sanitize must change.
	unknown := []byte{0x58, 0x01} // field 11, varint 1: no field of WriteRequest
	if v, got := process(scrape(4), unknown...); v {
		t.Fatal("a body with an unknown field went as it came")
	} else if len(got.Timeseries) != 50 {
		t.Fatalf("downstream got %d series, want 50", len(got.Timeseries))
	}
	unsorted := scrape(5)
	ls := unsorted.Timeseries[0].Labels
	ls[0], ls[1] = ls[1], ls[0]
	if v, _ := process(unsorted); v {
		t.Fatal("a body with unsorted labels went as it came")
	}
	empty := scrape(6)
	empty.Timeseries[1].Labels = append(empty.Timeseries[1].Labels, prompb.Label{Name: "zone", Value: ""})
	if v, _ := process(empty); v {
		t.Fatal("a body with an empty label value went as it came")
	}
	invalid := scrape(7, prompb.TimeSeries{Labels: []prompb.Label{{Name: "app", Value: "no-name"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}})
	if v, got := process(invalid); v {
		t.Fatal("a body with a series Sanitize drops went as it came")
	} else if len(got.Timeseries) != 50 {
		t.Fatalf("downstream got %d series, want the 50 valid ones", len(got.Timeseries))
	}
	withExemplar := scrape(8)
	withExemplar.Timeseries[2].Exemplars = []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: "t"}}, Value: 1, Timestamp: 8 * 15_000}}
	if v, _ := process(withExemplar); v {
		t.Fatal("a body with an exemplar went as it came")
	}
	// And back to plain scrapes: as they came again.
	if v, _ := process(scrape(9)); !v {
		t.Fatal("a plain scrape after the others was encoded again")
	}
	if n := verbatimCount(); n != 3 {
		t.Fatalf("cardinal_forward_verbatim_requests_total = %v, want 3", n)
	}
}

// cutConfig drops one metric and passes the others as they are.
const cutConfig = `
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
relabel_configs:
  - {source_labels: [__name__], regex: "dropped_.*", action: drop}
  - {action: labeldrop, regex: "pod"}
limits:
  workload_labels: [namespace, app]
  max_series_per_workload: 1000
`

// TestRequestsThatLoseSeriesAreCut: a Plain request whose kept series all
// pass from the route cache unchanged goes downstream as the body it came
// in with the series it lost cut out, whatever removed them (a drop rule,
// the merger absorbing collapsing inputs); one with any kept series
// changed, or whose cut would break too many of the body's copies, is
// encoded again. The downstream decodes exactly what the gateway meant to
// send either way.
func TestRequestsThatLoseSeriesAreCut(t *testing.T) {
	sender := &keptBodies{}
	g, reg := newTestGateway(t, cutConfig, &recordingSender{})
	setSender(g, sender)
	meta := []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "req_total", Help: "Requests."}}
	// scrape interleaves runs of kept series, dropped ones and (with pods)
	// inputs that collapse into merged outputs once pod is dropped, the
	// way a scrape's metric families follow each other. With alike, the
	// removed series share the kept ones' label values, so that the body's
	// copies of the kept series refer to them.
	scrape := func(step int, pods, alike bool) (*prompb.WriteRequest, []prompb.TimeSeries) {
		pb := &prompb.WriteRequest{Metadata: meta}
		var kept []prompb.TimeSeries
		for i := range 200 {
			var s prompb.TimeSeries
			keep := false
			switch {
			case i/10%5 == 1 && alike:
				// The labels of the kept series after them.
				s = series("dropped_total", "app", fmt.Sprintf("a%d", i%5), "instance", fmt.Sprintf("10.0.0.%d:80", i+10), "namespace", "n")
			case i/10%5 == 1:
				s = series("dropped_total", "app", "dropper", "instance", fmt.Sprintf("192.168.0.%d:80", i), "namespace", "other")
			case pods && i/10%5 == 3:
				s = series("merged_total", "app", "m", "namespace", "other", "pod", fmt.Sprintf("p%d", i))
			default:
				s, keep = series("req_total", "app", fmt.Sprintf("a%d", i%5), "instance", fmt.Sprintf("10.0.0.%d:80", i), "namespace", "n"), true
			}
			s.Samples = []prompb.Sample{{Value: float64(step*100 + i), Timestamp: int64(step) * 15_000}}
			pb.Timeseries = append(pb.Timeseries, s)
			if keep {
				kept = append(kept, s)
			}
		}
		return pb, kept
	}
	process := func(pb *prompb.WriteRequest) *prompb.WriteRequest {
		t.Helper()
		processAsIngest(t, g, pb)
		_, got := sender.last(t)
		return got
	}
	cutCount := func() float64 {
		return metricValue(t, reg, "cardinal_forward_cut_requests_total", "")
	}
	sameSeries := func(got, want []prompb.TimeSeries) bool {
		return slices.EqualFunc(got, want, func(a, b prompb.TimeSeries) bool { return a.String() == b.String() })
	}
	check := func(step int, got *prompb.WriteRequest, want []prompb.TimeSeries, cuts float64) {
		t.Helper()
		if !sameSeries(got.Timeseries, want) {
			t.Fatalf("step %d: downstream got %d series %v, want the %d kept ones as they came", step, len(got.Timeseries), got.Timeseries, len(want))
		}
		if len(got.Metadata) != 1 || got.Metadata[0].Help != "Requests." {
			t.Fatalf("step %d: metadata %v", step, got.Metadata)
		}
		if n := cutCount(); n != cuts {
			t.Fatalf("step %d: cardinal_forward_cut_requests_total = %v, want %v", step, n, cuts)
		}
	}

	// The first of the collapsing inputs passes through before the others
	// make its output merged, and everything takes the full path, which
	// may rewrite series: nothing is cut.
	pb, _ := scrape(1, true, false)
	process(pb)
	if n := cutCount(); n != 0 {
		t.Fatalf("first scrape was cut (count %v)", n)
	}
	pb, kept := scrape(2, true, false)
	check(2, process(pb), kept, 1)
	if n := metricValue(t, reg, "cardinal_forward_verbatim_requests_total", ""); n != 0 {
		t.Fatalf("cardinal_forward_verbatim_requests_total = %v, want 0: every request lost series", n)
	}

	// A kept series the rules change (pod dropped, but nothing collapses
	// with it): the request is encoded again.
	pb, kept = scrape(3, false, false)
	changed := series("req_total", "app", "solo", "namespace", "n", "pod", "p")
	changed.Samples = []prompb.Sample{{Value: 7, Timestamp: 3 * 15_000}}
	pb.Timeseries = append(pb.Timeseries, changed)
	want := append(slices.Clone(kept), series("req_total", "app", "solo", "namespace", "n"))
	want[len(want)-1].Samples = changed.Samples
	check(3, process(pb), want, 1)

	// Every series dropped but one at each end, and the metadata kept.
	pb, _ = scrape(4, false, false)
	first, last := pb.Timeseries[0], pb.Timeseries[len(pb.Timeseries)-1]
	for i := 1; i < len(pb.Timeseries)-1; i++ {
		pb.Timeseries[i] = series("dropped_total", "app", "a", "instance", fmt.Sprintf("10.1.0.%d:80", i), "namespace", "n")
		pb.Timeseries[i].Samples = []prompb.Sample{{Value: 1, Timestamp: 4 * 15_000}}
	}
	check(4, process(pb), []prompb.TimeSeries{first, last}, 2)

	// Removed series the kept ones copy from: the cut would be larger than
	// compressing, so the request is encoded again.
	pb, kept = scrape(5, false, true)
	check(5, process(pb), kept, 2)
	pb, kept = scrape(6, false, false)
	check(6, process(pb), kept, 3)

	// Series never seen, which the full path finds as they came, among
	// dropped ones: cut as well.
	pb, kept = scrape(7, false, false)
	for i := range pb.Timeseries {
		for j := range pb.Timeseries[i].Labels {
			if l := &pb.Timeseries[i].Labels[j]; l.Name == "instance" {
				l.Value = "new-" + l.Value
			}
		}
	}
	check(7, process(pb), kept, 4)
}
