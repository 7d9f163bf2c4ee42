package gateway

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/cardinality"
	"github.com/cardinal-gateway/cardinal/relabel"
	"github.com/cardinal-gateway/cardinal/wire"
)

type exactGroup struct {
	in, out             map[string]bool
	valuesIn, valuesOut map[string]map[string]bool
}

func (e *exactGroup) add(ls []wire.Label, in bool) {
	key := fmt.Sprint(ls)
	series, values := e.out, e.valuesOut
	if in {
		series, values = e.in, e.valuesIn
	}
	series[key] = true
	for _, l := range ls {
		if values[string(l.Name)] == nil {
			values[string(l.Name)] = map[string]bool{}
		}
		values[string(l.Name)][string(l.Value)] = true
	}
}

// withinError: exact up to SmallMax, within four standard errors beyond.
func withinError(got uint64, want int) bool {
	if want <= cardinality.SmallMax {
		return int(got) == want
	}
	return math.Abs(float64(got)-float64(want)) <= 4*cardinality.RelativeError*float64(want)
}

// The estimates on the demo's mesh traffic (Istio, Envoy and Linkerd with
// injected request and trace ids, fresh every scrape) against exact counts
// of the same series: per workload and metric, series before and after the
// rules and distinct values of every label.
func TestEstimatesMatchExactCountsOnMeshTraffic(t *testing.T) {
	clock := &testClock{t: time.UnixMilli(1_700_000_000_000)}
	g := newClockedGateway(t, fullConfig+"cardinality: {enabled: true, window: 10m}\n", clock)
	gen := meshgen.New(meshgen.Config{Workloads: 16, PodsPerWorkload: 3, Churn: true, Seed: 11})
	exact := map[string]*exactGroup{}
	st := g.state.Load()
	var scratch relabel.Scratch
	for step := range 4 {
		ts := clock.Now().UnixMilli()
		for _, pb := range gen.WriteRequests(step, ts, 2000) {
			req := decode(t, pb)
			// The labels are read here, so first checked as Process
			// would (see wire.Request.SetGuessLabels).
			if _, err := req.Verify(nil); err != nil {
				t.Fatal(err)
			}
			req.DecodeAllLazy()
			for _, s := range req.Series {
				orig := append([]wire.Label(nil), s.Labels...)
				scratch.Reset()
				out, keep := st.relabel.Apply(&scratch, append([]wire.Label(nil), s.Labels...))
				if !keep || wire.GetLabel(out, "__name__") == nil {
					continue
				}
				out = st.trace.strip(out)
				key := string(wire.GetLabel(out, "namespace")) + "/" + string(wire.GetLabel(out, "app")) + "\xff" + string(wire.GetLabel(out, "__name__"))
				e := exact[key]
				if e == nil {
					e = &exactGroup{in: map[string]bool{}, out: map[string]bool{}, valuesIn: map[string]map[string]bool{}, valuesOut: map[string]map[string]bool{}}
					exact[key] = e
				}
				e.add(orig, true)
				e.add(out, false)
			}
			if _, err := g.Process(context.Background(), req); err != nil {
				t.Fatal(err)
			}
		}
		g.merger.Flush(context.Background(), discardDelivery, false)
		clock.Add(15 * time.Second)
	}
	groups := g.Estimator().Report(clock.Now().UnixMilli(), cardinality.Filter{})
	if len(groups) != len(exact) {
		t.Fatalf("%d groups estimated, %d in the traffic", len(groups), len(exact))
	}
	checked, dense := 0, 0
	for _, r := range groups {
		e := exact[r.Workload+"\xff"+r.Metric]
		if e == nil {
			t.Fatalf("group %s %s not in the traffic", r.Workload, r.Metric)
		}
		if !withinError(r.SeriesIn, len(e.in)) || !withinError(r.SeriesOut, len(e.out)) {
			t.Errorf("%s %s: series in %d out %d, exact %d and %d", r.Workload, r.Metric, r.SeriesIn, r.SeriesOut, len(e.in), len(e.out))
		}
		for _, l := range r.Labels {
			if !withinError(l.ValuesIn, len(e.valuesIn[l.Name])) || !withinError(l.ValuesOut, len(e.valuesOut[l.Name])) {
				t.Errorf("%s %s label %s: values in %d out %d, exact %d and %d", r.Workload, r.Metric, l.Name,
					l.ValuesIn, l.ValuesOut, len(e.valuesIn[l.Name]), len(e.valuesOut[l.Name]))
			}
			checked++
			if len(e.valuesIn[l.Name]) > cardinality.SmallMax {
				dense++
			}
		}
		if len(r.Labels) != len(e.valuesIn) {
			t.Errorf("%s %s: %d labels estimated, %d in the traffic", r.Workload, r.Metric, len(r.Labels), len(e.valuesIn))
		}
	}
	if dense == 0 {
		t.Fatal("no label beyond the exact range: the traffic does not test the HyperLogLog part")
	}
	t.Logf("%d groups, %d label counts checked, %d of them beyond the exact range", len(groups), checked, dense)
}
