package guard

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cardinal-gateway/cardinal/cardinality"
	"github.com/cardinal-gateway/cardinal/wire"
)

func feed(est *cardinality.Estimator, now time.Time, label string, values int) uint64 {
	group := cardinality.GroupKey([]byte("ns/a"), []byte("req_total"))
	for i := range values {
		ls := []wire.Label{{Name: []byte("__name__"), Value: []byte("req_total")}, {Name: []byte(label), Value: []byte(fmt.Sprint(i))}}
		h, _ := wire.HashLabels(nil, ls)
		est.Observe(&cardinality.Observation{Group: group, Workload: []byte("ns/a"), Metric: []byte("req_total"),
			In: h, Out: h, InLabels: ls, OutLabels: ls, NowMs: now.UnixMilli(), Guardable: true})
	}
	return group
}

func TestEngageAndLift(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := New(Settings{Mode: Enforce, Threshold: 50, LiftAfter: time.Minute, Never: []string{"app"}}, 10*time.Minute, nil, NewMetrics(reg))
	est := cardinality.New(cardinality.Options{Window: 10 * time.Minute})
	now := time.UnixMilli(1_700_000_000_000)
	group := feed(est, now, "x_id", 49)
	if res := g.Evaluate(now, est); res.Changed || !g.Armed().Has(group) {
		t.Fatalf("below the threshold: %+v, armed %v", res, g.Armed().Has(group))
	}
	feed(est, now, "x_id", 51)
	res := g.Evaluate(now, est)
	if !res.Changed || len(res.Engaged) != 1 || fmt.Sprint(g.Active().Labels(group)) != "[x_id]" {
		t.Fatalf("at the threshold: %+v, active %v", res, g.Active().Labels(group))
	}
	if got := testutil.ToFloat64(g.metrics.mitigations.WithLabelValues("enforce")); got != 1 {
		t.Fatalf("cardinal_guard_mitigations{mode=enforce} = %v", got)
	}
	// The window passes with the label quiet: below since then, lifted
	// lift_after later, and reported one evaluation after that.
	later := now.Add(11 * time.Minute)
	if res := g.Evaluate(later, est); res.Changed {
		t.Fatalf("lifted before lift_after: %+v", res)
	}
	res = g.Evaluate(later.Add(time.Minute), est)
	if !res.Changed || g.Active().Labels(group) != nil || len(res.Lifted) != 1 {
		t.Fatalf("not lifted after lift_after: %+v", res)
	}
	st := g.Status()
	if len(st.Events) != 2 || st.Events[0].Action != "lifted" || st.Events[1].Action != "engaged" || st.Events[1].Values <= 50 {
		t.Fatalf("events %+v", st.Events)
	}
	if got := testutil.ToFloat64(g.metrics.events.WithLabelValues("engaged", "enforce")); got != 1 {
		t.Fatalf("engaged events %v", got)
	}
}

func TestProtectedAndDryRun(t *testing.T) {
	est := cardinality.New(cardinality.Options{})
	now := time.UnixMilli(1_700_000_000_000)
	feed(est, now, "le", 500)
	feed(est, now, "app", 500)
	g := New(Settings{Mode: Enforce, Threshold: 10, Never: []string{"app"}}, 10*time.Minute, nil, nil)
	if res := g.Evaluate(now, est); res.Changed || len(g.Status().Events) != 0 {
		t.Fatalf("a protected label engaged the guard: %+v", g.Status())
	}
	group := feed(est, now, "x_id", 500)
	d := New(Settings{Mode: DryRun, Threshold: 10, Never: []string{"app"}}, 10*time.Minute, nil, nil)
	if res := d.Evaluate(now, est); res.Changed || !d.Active().Empty() || len(res.Engaged) != 0 {
		t.Fatalf("dry_run enforces: %+v", res)
	}
	st := d.Status()
	if len(st.Active) != 1 || st.Active[0].Label != "x_id" || st.Active[0].Mode != "dry_run" || d.Armed().Has(group) {
		t.Fatalf("dry_run status %+v", st)
	}
	for _, p := range AlwaysProtected {
		if !strings.Contains(fmt.Sprint(st.Protected), p) {
			t.Fatalf("%s not protected: %v", p, st.Protected)
		}
	}
}
