package gateway

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/config"
	"github.com/cardinal-gateway/cardinal/merge"
)

// passConfig leaves series without pod or request_id as they are (the
// no-collision case): they pass through from the route cache.
const passConfig = `
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
relabel_configs:
  - {action: labeldrop, regex: "pod|request_id"}
limits:
  workload_labels: [namespace, app]
  max_series_per_workload: 1000
`

// TestUnchangedSeriesPassFromTheRouteCache: a series the rules leave as it
// is passes through from the route cache on its next samples, unchanged;
// when another input collapses into its output, the cached route gives way
// and the output is merged with both inputs' values.
func TestUnchangedSeriesPassFromTheRouteCache(t *testing.T) {
	sender := &recordingSender{keep: true}
	g, _ := newTestGateway(t, passConfig, sender)
	a := series("req_total", "app", "a", "namespace", "n")
	send := func(ts int64, v float64, ss ...prompb.TimeSeries) Result {
		t.Helper()
		pb := &prompb.WriteRequest{}
		for _, s := range ss {
			s.Samples = []prompb.Sample{{Value: v, Timestamp: ts}}
			pb.Timeseries = append(pb.Timeseries, s)
		}
		res, err := g.Process(context.Background(), decode(t, pb))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	send(1000, 1, a)
	if g.routes.len() != 1 {
		t.Fatalf("route cache holds %d routes after an unchanged series, want 1", g.routes.len())
	}
	in, _ := decode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{a}}).Series[0].InputHash(nil)
	if r, ok := g.routes.get(in, g.limiter.Clock()); !ok || !r.pass() {
		t.Fatalf("route %+v, %v: want a pass route", r, ok)
	}
	if res := send(2000, 2, a); res.Forwarded != 1 {
		t.Fatalf("second sample: %+v, want it forwarded", res)
	}
	if got := labelsString(sender.reqs[1].Timeseries[0].Labels); got != `{__name__="req_total", app="a", namespace="n"}` {
		t.Fatalf("forwarded %s", got)
	}
	if v := sender.reqs[1].Timeseries[0].Samples[0]; v.Value != 2 || v.Timestamp != 2000 {
		t.Fatalf("forwarded sample %+v", v)
	}
	// b collapses into a's output (pod dropped): a's output is merged; a's
	// next sample no longer passes through, it is absorbed.
	b := series("req_total", "app", "a", "namespace", "n", "pod", "p2")
	if res := send(3000, 5, b); res.Merged != 1 {
		t.Fatalf("b: %+v, want it merged", res)
	}
	if res := send(4000, 3, a); res.Merged != 1 || res.Forwarded != 0 {
		t.Fatalf("a after the collision: %+v, want it absorbed, not passed through", res)
	}
	if _, ok := g.routes.get(in, g.limiter.Clock()); !ok {
		t.Fatalf("a has no route after it was absorbed")
	} else if r, _ := g.routes.get(in, g.limiter.Clock()); r.pass() {
		t.Fatalf("a's route is still a pass route")
	}
	sender.reqs = nil
	g.merger.Flush(context.Background(), g.deliverMerged, true)
	var merged []float64
	for _, req := range sender.reqs {
		for _, ts := range req.Timeseries {
			for _, s := range ts.Samples {
				merged = append(merged, s.Value)
			}
		}
	}
	if len(merged) == 0 || merged[len(merged)-1] != 8 {
		t.Fatalf("merged %v, want 8 (a's 3 and b's 5)", merged)
	}
}

// TestChangedSeriesGetNoPassRoute: a series the rules change (pod dropped)
// is relabeled every time: no pass route.
func TestChangedSeriesGetNoPassRoute(t *testing.T) {
	g, _ := newTestGateway(t, passConfig, &recordingSender{})
	pb := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series("req_total", "app", "a", "namespace", "n", "pod", "p1")}}
	if _, err := g.Process(context.Background(), decode(t, pb)); err != nil {
		t.Fatal(err)
	}
	if g.routes.len() != 0 {
		t.Fatalf("%d routes cached for a series the rules change", g.routes.len())
	}
}

// TestPassRoutesAllocNothing: successive scrapes of series that pass
// through unchanged (the no-collision case) allocate nothing.
func TestPassRoutesAllocNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	g, _ := newTestGateway(t, passConfig, &recordingSender{})
	pb := &prompb.WriteRequest{}
	for i := range 500 {
		pb.Timeseries = append(pb.Timeseries, series("istio_requests_total",
			"app", fmt.Sprintf("app-%d", i%20), "namespace", "mesh", "instance", fmt.Sprintf("10.0.0.%d:15090", i), "response_code", "200"))
	}
	assertProcessAllocsNothing(t, g, pb, "pass routes")
	if n := g.routes.len(); n != 500 {
		t.Fatalf("%d routes, want a pass route for each of the 500 series", n)
	}
}

// TestKnownSeriesAfterInvalidOnes: series the route cache knows skip
// validation; when an invalid series before them is dropped, or a known
// one comes with its labels out of order, the others move, and each is
// still routed by its own route: known ones pass, the rest are checked.
func TestKnownSeriesAfterInvalidOnes(t *testing.T) {
	sender := &recordingSender{keep: true}
	g, _ := newTestGateway(t, passConfig, sender)
	a := series("req_total", "app", "a", "namespace", "n")
	b := series("req_total", "app", "b", "namespace", "n")
	noName := prompb.TimeSeries{Labels: []prompb.Label{{Name: "app", Value: "x"}}}
	send := func(ts int64, ss ...prompb.TimeSeries) Result {
		t.Helper()
		pb := &prompb.WriteRequest{}
		for i, s := range ss {
			s.Labels = append([]prompb.Label(nil), s.Labels...)
			s.Samples = []prompb.Sample{{Value: float64(ts + int64(i)), Timestamp: ts}}
			pb.Timeseries = append(pb.Timeseries, s)
		}
		res, err := g.Process(context.Background(), decode(t, pb))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	send(1000, a, b)
	if g.routes.len() != 2 {
		t.Fatalf("%d routes, want a pass route for a and b", g.routes.len())
	}
	// Out of order: b's labels as sent are not the bytes its route knows.
	bSwapped := b
	bSwapped.Labels = []prompb.Label{b.Labels[1], b.Labels[0], b.Labels[2]}
	for step, ss := range [][]prompb.TimeSeries{
		{noName, a, b},
		{a, noName, noName, b},
		{bSwapped, a},
	} {
		ts := int64(2000 + 1000*step)
		sender.reqs = nil
		res := send(ts, ss...)
		if res.Forwarded != 2 {
			t.Fatalf("step %d: %+v, want a and b forwarded", step, res)
		}
		got := map[string]float64{}
		for _, fs := range sender.reqs[0].Timeseries {
			got[labelsString(fs.Labels)] = fs.Samples[0].Value
		}
		for i, s := range ss {
			if len(s.Labels) < 2 {
				continue // invalid: dropped
			}
			want := labelsString(a.Labels)
			if s.Labels[1].Value == "b" || s.Labels[0].Value == "b" {
				want = labelsString(b.Labels)
			}
			if v, ok := got[want]; !ok || v != float64(ts+int64(i)) {
				t.Fatalf("step %d: %s forwarded with %v (%v), want %v; got %v", step, want, v, ok, float64(ts+int64(i)), got)
			}
		}
	}
}

// TestDeferLabelsFollowsTheTraffic: the gateway asks for deferred labels
// once most series of a request passed from the route cache without them,
// and stops when most need them (new inputs every request).
func TestDeferLabelsFollowsTheTraffic(t *testing.T) {
	g, _ := newTestGateway(t, passConfig, &recordingSender{})
	scrape := func(prefix string, ts int64) {
		t.Helper()
		pb := &prompb.WriteRequest{}
		for i := range 20 {
			s := series("req_total", "app", "a", "namespace", "n", "instance", fmt.Sprintf("%s%d", prefix, i))
			s.Samples[0].Timestamp = ts
			pb.Timeseries = append(pb.Timeseries, s)
		}
		if _, err := g.Process(context.Background(), decode(t, pb)); err != nil {
			t.Fatal(err)
		}
	}
	if g.DeferLabels() {
		t.Fatal("labels deferred before any traffic")
	}
	scrape("a", 1000)
	if g.DeferLabels() {
		t.Fatal("labels deferred after a request of new series, which all needed them")
	}
	scrape("a", 2000)
	if !g.DeferLabels() {
		t.Fatal("labels not deferred after a request whose series all passed from the route cache")
	}
	scrape("b", 3000)
	if g.DeferLabels() {
		t.Fatal("labels still deferred after a request of new series")
	}
}

// TestDroppedInputsSkipTheRules: an input the rules drop is dropped from
// the route cache on its next samples, without decoding its labels; after
// a reload the new rules decide again; and each shard holds at most
// maxDropRoutes of them.
func TestDroppedInputsSkipTheRules(t *testing.T) {
	const dropConfig = `
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
relabel_configs:
  - {action: drop, source_labels: [__name__], regex: "envoy_server_.*"}
  - {action: labeldrop, regex: pod}
`
	sender := &recordingSender{keep: true}
	g, _ := newTestGateway(t, dropConfig, sender)
	scrape := func(n int, ts int64) Result {
		t.Helper()
		pb := &prompb.WriteRequest{}
		for i := range n {
			s := series("envoy_server_live", "app", "a", "pod", fmt.Sprint(i))
			s.Samples[0].Timestamp = ts
			pb.Timeseries = append(pb.Timeseries, s)
		}
		res, err := g.Process(context.Background(), decode(t, pb))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := scrape(20, 1000); res.DroppedByRelabel != 20 || g.routes.len() != 20 {
		t.Fatalf("first request: %+v, %d routes; want 20 dropped and cached", res, g.routes.len())
	}
	if res := scrape(20, 2000); res.DroppedByRelabel != 20 || res.Forwarded != 0 {
		t.Fatalf("second request: %+v, want 20 dropped", res)
	}
	if !g.DeferLabels() {
		t.Fatal("labels not deferred after a request the route cache dropped whole")
	}
	cfg, err := config.Parse([]byte(`
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
relabel_configs:
  - {action: labeldrop, regex: pod}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	setSender(g, sender)
	if res := scrape(20, 3000); res.DroppedByRelabel != 0 || res.Forwarded+res.Merged != 20 {
		t.Fatalf("after the reload: %+v, want nothing dropped", res)
	}

	// The bound: inputs past it are still dropped, by the rules.
	g2, _ := newTestGateway(t, dropConfig, &recordingSender{keep: true})
	g = g2
	n := routeShards*maxDropRoutes + 5000
	if res := scrape(n, 1000); res.DroppedByRelabel != n {
		t.Fatalf("%d dropped, want %d", res.DroppedByRelabel, n)
	}
	if got := g.routes.len(); got > routeShards*maxDropRoutes || got < routeShards*maxDropRoutes/2 {
		t.Fatalf("%d routes cached, want at most %d (and most of them)", got, routeShards*maxDropRoutes)
	}
	for i := range g.routes.shards {
		if sh := &g.routes.shards[i]; sh.drops != sh.routes.Len() || sh.drops > maxDropRoutes {
			t.Fatalf("shard %d counts %d drop routes of %d, bound %d", i, sh.drops, sh.routes.Len(), maxDropRoutes)
		}
	}
	if res := scrape(n, 2000); res.DroppedByRelabel != n {
		t.Fatalf("again: %d dropped, want %d", res.DroppedByRelabel, n)
	}
	g.routes.sweep(1<<20, 1)
	for i := range g.routes.shards {
		if sh := &g.routes.shards[i]; sh.drops != 0 || sh.routes.Len() != 0 {
			t.Fatalf("shard %d after the sweep: %d drop routes counted, %d held", i, sh.drops, sh.routes.Len())
		}
	}
}

// TestKnownRoutesConfirmWithTheLimiterEverySeenStep: a known route skips
// the limiter between the route cache's refreshes of its last-seen (every
// seenStep seconds) when limits.window is at least lazyLimiterWindow, and
// is confirmed at every refresh, so that a series that keeps reporting
// never expires from the limiter and one the limiter forgot is counted
// again within seenStep. Under a shorter window every sample is confirmed.
func TestKnownRoutesConfirmWithTheLimiterEverySeenStep(t *testing.T) {
	for _, window := range []time.Duration{lazyLimiterWindow, lazyLimiterWindow - time.Second} {
		t.Run(window.String(), func(t *testing.T) {
			clock := &testClock{t: time.Unix(1_700_000_000, 0)}
			g := newClockedGateway(t, fmt.Sprintf(`
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
relabel_configs:
  - {action: labeldrop, regex: "pod"}
limits:
  workload_labels: [namespace, app]
  max_series_per_workload: 1000
  window: %s
`, window), clock)
			start := clock.Now()
			send := func() {
				t.Helper()
				s := series("req_total", "app", "a", "namespace", "n")
				s.Samples = []prompb.Sample{{Value: 1, Timestamp: clock.Now().UnixMilli()}}
				if _, err := g.Process(context.Background(), decode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{s}})); err != nil {
					t.Fatal(err)
				}
			}
			active := func() int64 {
				for _, r := range g.limiter.Cardinality(0) {
					if r.Workload == "n/a" {
						return r.ActiveSeries
					}
				}
				return 0
			}
			at := func(sec int) { clock.Set(start.Add(time.Duration(sec) * time.Second)) }
			lazy := window >= lazyLimiterWindow

			// Reporting every 10 s for five windows: never expired.
			for sec := 0; sec < 5*int(window/time.Second); sec += 10 {
				at(sec)
				send()
				g.limiter.Sweep()
				if n := active(); n != 1 {
					t.Fatalf("at %ds: %d active series in the limiter, want 1 while the series reports", sec, n)
				}
			}

			// The accounting forgotten behind the routes' back (a reset
			// comes with a configuration change, which makes every route
			// stale; this one does not).
			base := 5 * int(window/time.Second)
			at(base)
			send() // the route's last-seen is refreshed here
			set := *g.limiter.Settings()
			set.WorkloadLabels = []string{"namespace"}
			g.limiter.SetSettings(set)
			set.WorkloadLabels = []string{"namespace", "app"}
			g.limiter.SetSettings(set)
			at(base + 1)
			send()
			if n, want := active(), map[bool]int64{true: 0, false: 1}[lazy]; n != want {
				t.Fatalf("a sample within seenStep of the last confirmation: %d active series, want %d", n, want)
			}
			at(base + seenStep + 1)
			send()
			if n := active(); n != 1 {
				t.Fatalf("a sample seenStep after the last confirmation: %d active series, want 1", n)
			}
		})
	}
}

// TestCrowdedOutputInputsCachedOnSecondSighting: inputs that collapse into
// an output are cached at once while it has the few inputs of a workload's
// pods; past merge.CrowdedAt (a request id collapsed, one per request) a new
// input is cached only when it comes back.
func TestCrowdedOutputInputsCachedOnSecondSighting(t *testing.T) {
	g, _ := newTestGateway(t, passConfig, &recordingSender{keep: true})
	const n = merge.CrowdedAt + 8
	ins := make([]uint64, n)
	send := func(i int, ts int64) Result {
		t.Helper()
		s := series("req_total", "app", "a", "namespace", "n", "request_id", fmt.Sprint(i))
		s.Samples = []prompb.Sample{{Value: 1, Timestamp: ts}}
		req := decode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{s}})
		ins[i], _ = req.Series[0].InputHash(nil)
		res, err := g.Process(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	for i := range n {
		send(i, 1000)
	}
	for i := 1; i < n; i++ {
		_, cached := g.routes.get(ins[i], g.limiter.Clock())
		if crowded := i+1 > merge.CrowdedAt; cached == crowded {
			t.Fatalf("input %d of %d, seen once: cached %v, want %v", i+1, n, cached, !crowded)
		}
	}
	if res := send(n-1, 2000); res.Merged != 1 {
		t.Fatalf("the last input again: %+v, want it merged", res)
	}
	if r, ok := g.routes.get(ins[n-1], g.limiter.Clock()); !ok || r.pass() {
		t.Fatalf("the last input, seen twice: route %+v, %v; want a merge route", r, ok)
	}
}
