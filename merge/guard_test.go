package merge

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/value"

	"github.com/cardinal-gateway/cardinal/wire"
)

// routeAt routes one sample of the series ls (input and output the same,
// or output out when given) under ticket tk.
func routeAt(m *Merger, tk Ticket, ls, outLabels []wire.Label, v float64, ts int64, force bool) Decision {
	in, _ := wire.HashLabels(nil, ls)
	oh, _ := wire.HashLabels(nil, outLabels)
	s := wire.Series{Labels: outLabels, Samples: []wire.Sample{{Value: v, Timestamp: ts}}}
	return m.Route(tk, in, oh, ls, &s, m.now().UnixMilli(), force)
}

// Handover carries a pass-through series' last value into the aggregate,
// ends the series with a stale marker after what it passed, and a sample a
// request under the old rules still routes to it joins the aggregate.
func TestHandoverCarriesTheLastValue(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{})
	a := lbls("__name__", "req_total", "x_id", "a")
	b := lbls("__name__", "req_total", "x_id", "b")
	agg := lbls("__name__", "req_total")
	tk := m.Begin()
	routeAt(m, tk, a, a, 5, 1000, false)
	routeAt(m, tk, b, b, 7, 1000, false) // b then ends
	m.End(tk)
	c.Add(15 * time.Second)
	aggH, _ := wire.HashLabels(nil, agg)
	for _, ls := range [][]wire.Label{a, b} {
		h, _ := wire.HashLabels(nil, ls)
		if !m.Handover(h, aggH, agg, ls, m.now().UnixMilli()) {
			t.Fatalf("handover of %v refused", ls)
		}
	}
	// a reports again, under the guard; a late request under the old rules
	// routes b's stale marker to b's old output.
	tk = m.Begin()
	if d := routeAt(m, tk, a, agg, 6, 16000, true); d.Base() != Absorbed {
		t.Fatalf("decision %d", d)
	}
	if d := routeAt(m, tk, b, b, math.Float64frombits(value.StaleNaN), 16000, false); d.Base() != Absorbed {
		t.Fatalf("a sample for a handed-over output: decision %d, want it absorbed by the aggregate", d)
	}
	m.End(tk)
	flush(m, s)
	if v, _ := emitted(s, "req_total"); len(v) == 0 {
		t.Fatal("nothing emitted")
	}
	var aggV []float64
	stale := map[string]bool{}
	for _, ts := range s.all() {
		if len(ts.Labels) == 1 {
			for _, smp := range ts.Samples {
				aggV = append(aggV, smp.Value)
			}
			continue
		}
		for _, smp := range ts.Samples {
			if value.IsStaleNaN(smp.Value) && smp.Timestamp > 1000 {
				stale[ts.Labels[1].Value] = true
			}
		}
	}
	if len(aggV) == 0 || aggV[len(aggV)-1] != 6+7 {
		t.Fatalf("aggregate %v, want 13 (a's 6 and b's last 7)", aggV)
	}
	if !stale["a"] || !stale["b"] {
		t.Fatalf("stale markers after what passed through: %v", stale)
	}
}

// After EndOutput, requests issued before it (under the lifted mitigation)
// no longer feed the aggregate; later ones may use its labels afresh.
func TestEndOutputDropsOlderRequests(t *testing.T) {
	m, c, s := newTestMerger(t, Rules{})
	agg := lbls("__name__", "req_total")
	a := lbls("__name__", "req_total", "x_id", "a")
	tk := m.Begin()
	routeAt(m, tk, a, agg, 5, 1000, true)
	m.End(tk)
	flush(m, s)
	old := m.Begin() // in flight across the lifting
	aggH, _ := wire.HashLabels(nil, agg)
	if !m.EndOutput(aggH) {
		t.Fatal("EndOutput refused a merged output")
	}
	c.Add(15 * time.Second)
	routeAt(m, old, a, agg, 9, 16000, true)
	m.End(old)
	flush(m, s)
	vals, _ := emitted(s, "req_total")
	if len(vals) != 2 || vals[0] != 5 || !value.IsStaleNaN(vals[1]) {
		t.Fatalf("emitted %v, want 5 then the stale marker, nothing from the older request", vals)
	}
	tk = m.Begin()
	routeAt(m, tk, agg, agg, 3, 31000, false)
	m.End(tk)
	c.Add(15 * time.Second)
	flush(m, s)
	if vals, _ = emitted(s, "req_total"); len(vals) != 3 || vals[2] != 3 {
		t.Fatalf("a later request under the new rules: emitted %v, want it after the stale marker", vals)
	}
}

// TestRaiseFloorLiftsNewOutputs: a merged output created after RaiseFloor
// emits after the floor, however old its data; an output that existed
// keeps its data timestamps.
func TestRaiseFloorLiftsNewOutputs(t *testing.T) {
	m, _, s := newTestMerger(t, Rules{})
	old := lbls("__name__", "req_total", "o", "old")
	moved := lbls("__name__", "req_total", "o", "moved")
	tk := m.Begin()
	routeAt(m, tk, old, old, 1, 1000, true)
	m.End(tk)
	m.RaiseFloor(5000)
	m.RaiseFloor(4000) // never lowered
	tk = m.Begin()
	routeAt(m, tk, moved, moved, 1, 1000, true)
	routeAt(m, tk, old, old, 2, 2000, true)
	m.End(tk)
	flush(m, s)
	first := map[string]int64{}
	for _, ts := range s.all() {
		if _, seen := first[ts.Labels[1].Value]; !seen && len(ts.Samples) > 0 {
			first[ts.Labels[1].Value] = ts.Samples[0].Timestamp
		}
	}
	if first["old"] != 2000 || first["moved"] != 5001 {
		t.Fatalf("first emissions %v: want old at its data time 2000, moved after the floor, 5001", first)
	}
}
