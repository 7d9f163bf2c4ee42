package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/config"
	"github.com/cardinal-gateway/cardinal/wire"
)

// receiverModel is what a TSDB holds: the newest sample of every series,
// applied in delivery order.
type receiverModel struct {
	last map[string]prompb.Sample
}

func (m *receiverModel) apply(labels string, smp prompb.Sample) {
	if old, ok := m.last[labels]; ok && old.Timestamp > smp.Timestamp {
		return // out of order: a TSDB refuses it
	}
	m.last[labels] = smp
}

// sumBy sums the live (not stale) series of name by the labels keep.
func (m *receiverModel) sumBy(name string, keep ...string) map[string]float64 {
	out := map[string]float64{}
	for ls, s := range m.last {
		if value.IsStaleNaN(s.Value) || !strings.HasPrefix(ls, name+"{") {
			continue
		}
		out[project(ls, keep)] += s.Value
	}
	return out
}

// live returns the live series of name.
func (m *receiverModel) live(name string) []string {
	var out []string
	for ls, s := range m.last {
		if !value.IsStaleNaN(s.Value) && strings.HasPrefix(ls, name+"{") {
			out = append(out, ls)
		}
	}
	slices.Sort(out)
	return out
}

func project(ls string, keep []string) string {
	var parts []string
	for _, kv := range strings.Split(strings.Trim(ls[strings.IndexByte(ls, '{'):], "{}"), ",") {
		name, _, _ := strings.Cut(kv, "=")
		if slices.Contains(keep, name) {
			parts = append(parts, kv)
		}
	}
	return strings.Join(parts, ",")
}

func labelString(name string, ls []prompb.Label) string {
	var parts []string
	for _, l := range ls {
		if l.Name != "__name__" {
			parts = append(parts, l.Name+"="+l.Value)
		}
	}
	slices.Sort(parts)
	return name + "{" + strings.Join(parts, ",") + "}"
}

type guardHarness struct {
	t      *testing.T
	g      *Gateway
	clock  *testClock
	sender *recordingSender
	model  receiverModel
	// truth is, per (app, code), the sum of the last value of every
	// counter series ever sent, as if x_header had been dropped.
	lastOf map[string]float64
	step   int
	// idsPerStep is how many new x_header values each exploding scrape
	// brings (6 unless set).
	idsPerStep int
}

func newGuardHarness(t *testing.T, yml string) *guardHarness {
	cfg, err := config.Parse([]byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	h := &guardHarness{t: t, clock: &testClock{t: time.UnixMilli(1_700_000_000_000)}, sender: &recordingSender{keep: true},
		model: receiverModel{last: map[string]prompb.Sample{}}, lastOf: map[string]float64{}}
	h.g, err = New(cfg, Options{
		Now:        h.clock.Now,
		Registerer: prometheus.NewRegistry(),
		NewSender: func(config.DownstreamConfig, prometheus.Registerer, *slog.Logger) (Sender, error) {
			return h.sender, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// scrape sends one scrape of req_total: a stable series per (app, code),
// and, while explode, fresh x_header values (ids) each scrape; the series
// of the previous scrape's ids end with a stale marker, as Prometheus sends
// for a series gone from its target.
func (h *guardHarness) scrape(explode bool, prevIDs []string) []string {
	h.t.Helper()
	ts := h.clock.Now().UnixMilli()
	pb := &prompb.WriteRequest{}
	add := func(app, code, id string, v float64) {
		s := series("req_total", "namespace", "ns", "app", app, "code", code, "x_header", id)
		s.Samples = []prompb.Sample{{Value: v, Timestamp: ts}}
		pb.Timeseries = append(pb.Timeseries, s)
		if !math.IsNaN(v) {
			h.lastOf[app+"\xff"+code+"\xff"+id] = v
		}
	}
	for _, app := range []string{"a", "b"} {
		for _, code := range []string{"200", "500"} {
			add(app, code, "stable", float64(10*(h.step+1)))
		}
	}
	for _, id := range prevIDs {
		app, code, id := splitID(id)
		add(app, code, id, math.Float64frombits(value.StaleNaN))
	}
	var ids []string
	if explode {
		n := h.idsPerStep
		if n == 0 {
			n = 6
		}
		for i := range n {
			app, code := []string{"a", "b"}[i%2], []string{"200", "500"}[i/2%2]
			id := fmt.Sprintf("id-%d-%d", h.step, i)
			add(app, code, id, float64(1+i))
			ids = append(ids, app+"\xff"+code+"\xff"+id)
		}
	}
	if _, err := h.g.Process(context.Background(), decode(h.t, pb)); err != nil {
		h.t.Fatal(err)
	}
	h.deliverPassThrough()
	h.g.EvaluateGuard()
	h.g.merger.Flush(context.Background(), h.captureMerged, false)
	h.clock.Add(15 * time.Second)
	h.step++
	return ids
}

func splitID(s string) (app, code, id string) {
	p := strings.Split(s, "\xff")
	return p[0], p[1], p[2]
}

func (h *guardHarness) deliverPassThrough() {
	h.sender.mu.Lock()
	reqs := h.sender.reqs
	h.sender.reqs = nil
	h.sender.mu.Unlock()
	for _, r := range reqs {
		h.apply(r)
	}
}

func (h *guardHarness) captureMerged(_ context.Context, req *wire.Request, _ func(int, string, error)) error {
	var pb prompb.WriteRequest
	if err := pb.Unmarshal(req.MarshalAppend(nil)); err != nil {
		h.t.Fatal(err)
	}
	h.apply(&pb)
	return nil
}

// apply delivers a request to the receiver model.
func (h *guardHarness) apply(r *prompb.WriteRequest) {
	for _, ts := range r.Timeseries {
		name := ""
		for _, l := range ts.Labels {
			if l.Name == "__name__" {
				name = l.Value
			}
		}
		for _, s := range ts.Samples {
			h.model.apply(labelString(name, ts.Labels), s)
		}
	}
}

// truth sums lastOf by (app, code), in project's format.
func (h *guardHarness) truth() map[string]float64 {
	out := map[string]float64{}
	for k, v := range h.lastOf {
		app, code, _ := splitID(k)
		out["app="+app+",code="+code] += v
	}
	return out
}

const guardYAML = `
downstream: {url: "http://127.0.0.1:1/w"}
merge: {staleness: 5m, flush_interval: 15s}
guard:
  mode: %s
  threshold: 12
  window: 4m
  lift_after: 1m
  workload_labels: [namespace, app]
  protect: [%s]
`

// The guard engages on the label nobody listed, and the receiver then
// holds the totals it would have had if the label had been dropped from
// the start: every counter's last value, including those of the series
// that ended before the guard engaged.
func TestGuardEnforceKeepsTotals(t *testing.T) {
	h := newGuardHarness(t, fmt.Sprintf(guardYAML, "enforce", "code"))
	var ids []string
	for range 8 {
		ids = h.scrape(true, ids)
	}
	st := h.g.Guard().Status()
	if len(st.Active) == 0 {
		t.Fatalf("the guard did not engage: %+v", st)
	}
	// The engaged groups' records were handed over and let go.
	if n := h.g.est.records.len(); n != 0 {
		t.Fatalf("%d records left after the takeover", n)
	}
	for _, m := range st.Active {
		if m.Label != "x_header" {
			t.Fatalf("mitigation of %q, want only x_header: %+v", m.Label, st.Active)
		}
	}
	// A few more scrapes for the aggregates to be emitted and the
	// replaced series to end.
	for range 3 {
		ids = h.scrape(true, ids)
	}
	got := h.model.sumBy("req_total", "app", "code")
	want := h.truth()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("totals per (app, code) at the receiver\n got %v\nwant %v\nlive %v", got, want, h.model.live("req_total"))
	}
	// Bounded: one live series per (app, code) once engaged.
	for _, ls := range h.model.live("req_total") {
		if strings.Contains(ls, "x_header=") {
			t.Fatalf("a series still carries the aggregated label: %s (live %v)", ls, h.model.live("req_total"))
		}
	}
}

// A label that grows slowly, one value a scrape: the series of its first
// values ended before the group was armed (a tenth of the threshold); their
// stale markers recorded them, and the aggregates take them over too.
func TestGuardTakesOverSeriesEndedBeforeArming(t *testing.T) {
	h := newGuardHarness(t, `
downstream: {url: "http://127.0.0.1:1/w"}
merge: {staleness: 30m, forget_after: 1h, flush_interval: 15s}
guard:
  mode: enforce
  threshold: 50
  window: 30m
  lift_after: 1h
  workload_labels: [namespace, app]
`)
	h.idsPerStep = 1
	var ids []string
	for range 60 {
		ids = h.scrape(true, ids)
	}
	if len(h.g.Guard().Status().Active) == 0 {
		t.Fatal("the guard did not engage")
	}
	for range 3 {
		ids = h.scrape(true, ids)
	}
	got := h.model.sumBy("req_total", "app", "code")
	if want := h.truth(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("totals per (app, code)\n got %v\nwant %v", got, want)
	}
}

func TestGuardDryRunChangesNothing(t *testing.T) {
	h := newGuardHarness(t, fmt.Sprintf(guardYAML, "dry_run", "code"))
	var ids []string
	for range 8 {
		ids = h.scrape(true, ids)
	}
	st := h.g.Guard().Status()
	if len(st.Events) == 0 || st.Events[len(st.Events)-1].Label != "x_header" || st.Events[len(st.Events)-1].Mode != "dry_run" {
		t.Fatalf("no dry_run event for x_header: %+v", st.Events)
	}
	live := h.model.live("req_total")
	ids6 := 0
	for _, ls := range live {
		if strings.Contains(ls, "x_header=id-7-") {
			ids6++
		}
	}
	if ids6 != 6 {
		t.Fatalf("dry_run changed the traffic: live %v", live)
	}
}

func TestGuardNeverTouchesProtected(t *testing.T) {
	h := newGuardHarness(t, fmt.Sprintf(guardYAML, "enforce", "x_header"))
	var ids []string
	for range 8 {
		ids = h.scrape(true, ids)
	}
	if st := h.g.Guard().Status(); len(st.Active) != 0 || len(st.Events) != 0 {
		t.Fatalf("the guard acted on a protected label: %+v", st)
	}
}

// Once the label has calmed down for lift_after, the mitigation lifts, the
// aggregate ends, and the series carry their own labels again; at no
// instant does the receiver hold both.
func TestGuardLifts(t *testing.T) {
	h := newGuardHarness(t, fmt.Sprintf(guardYAML, "enforce", "code"))
	var ids []string
	for range 8 {
		ids = h.scrape(true, ids)
	}
	if len(h.g.Guard().Status().Active) == 0 {
		t.Fatal("the guard did not engage")
	}
	// Calm: the window (4m) passes, then lift_after (1m). At no step does
	// the receiver hold an aggregate and one of the series it replaced.
	both := func() {
		t.Helper()
		agg, own := 0, 0
		for _, ls := range h.model.live("req_total") {
			if strings.Contains(ls, "x_header=") {
				own++
			} else {
				agg++
			}
		}
		if agg > 0 && own > 0 {
			t.Fatalf("step %d: aggregates and the series they replaced live at once: %v", h.step, h.model.live("req_total"))
		}
	}
	for range 30 {
		ids = h.scrape(false, ids)
		both()
		if len(h.g.Guard().Status().Active) == 0 {
			break
		}
	}
	st := h.g.Guard().Status()
	if len(st.Active) != 0 || st.Events[0].Action != "lifted" {
		t.Fatalf("not lifted: %+v", st)
	}
	for range 3 {
		ids = h.scrape(false, ids)
		both()
	}
	live := h.model.live("req_total")
	if len(live) != 4 {
		t.Fatalf("after lifting, want the 4 stable series with their own labels, live %v", live)
	}
	for _, ls := range live {
		if !strings.Contains(ls, "x_header=stable") {
			t.Fatalf("after lifting, live %v", live)
		}
	}
}

// The estimates and the guard add no allocation to a request in steady
// state: observing a known group and label reuses the sketches, and the
// guard's snapshots are read, not built, on the request path.
func TestEstimatesAndGuardAllocNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	g, _ := newTestGateway(t, fullConfig+`
cardinality: {enabled: true, window: 10m}
guard: {mode: enforce, threshold: 1000, workload_labels: [namespace, app]}
`, &recordingSender{})
	pb := &prompb.WriteRequest{}
	for i := range 400 {
		pb.Timeseries = append(pb.Timeseries, series("istio_requests_total",
			"namespace", "ns", "app", fmt.Sprintf("app-%d", i%8), "pod", fmt.Sprintf("pod-%d", i%40),
			"request_id", fmt.Sprint(i), "response_code", []string{"200", "503"}[i%7/6]))
	}
	assertProcessAllocsNothing(t, g, pb, "the pipeline with estimates and the guard")
}

// With a mitigation in force, guarded series (stripped, handed over once,
// then merged into their aggregate every scrape) allocate nothing either.
func TestGuardEngagedAllocNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	g, _ := newTestGateway(t, fullConfig+`
cardinality: {enabled: true, window: 10m}
guard: {mode: enforce, threshold: 10, workload_labels: [namespace, app], protect: [response_code]}
`, &recordingSender{})
	pb := &prompb.WriteRequest{}
	for i := range 400 {
		pb.Timeseries = append(pb.Timeseries, series("istio_requests_total",
			"namespace", "ns", "app", fmt.Sprintf("app-%d", i%4), "destination_workload", fmt.Sprintf("w-%d", i%50),
			"response_code", []string{"200", "503"}[i%7/6]))
	}
	if _, err := g.Process(context.Background(), decode(t, pb)); err != nil {
		t.Fatal(err)
	}
	g.EvaluateGuard()
	if len(g.Guard().Status().Active) == 0 {
		t.Fatalf("the guard did not engage: %+v", g.Guard().Status())
	}
	assertProcessAllocsNothing(t, g, pb, "the pipeline with a mitigation in force")
}
