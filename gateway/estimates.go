package gateway

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/value"

	"github.com/cardinal-gateway/cardinal/cardinality"
	"github.com/cardinal-gateway/cardinal/config"
	"github.com/cardinal-gateway/cardinal/guard"
	"github.com/cardinal-gateway/cardinal/internal/selector"
	"github.com/cardinal-gateway/cardinal/wire"
)

// estState is the compiled estimates and guard part of a configuration.
type estState struct {
	workloadLabels []string
	// guardScope: nil when the guard covers every series in scope.
	guardScope *selector.Set
	guardOn    bool
	// enforce: the guard aggregates (dry_run records nothing for it).
	enforce bool
	// active are the guard's enforced mitigations when the state was
	// published; a change publishes a new state (see republish), so that
	// the routes cached under the old mitigations die with their gen.
	active *guard.Active
}

func compileEstimates(cfg *config.Config) (*estState, error) {
	if !cfg.EstimatesEnabled() {
		return nil, nil
	}
	es := &estState{workloadLabels: cfg.EstimateWorkloadLabels(), guardOn: cfg.Guard.Mode != "", enforce: cfg.Guard.Mode == config.ModeEnforce}
	sc, err := selector.Parse(cfg.Guard.Scope)
	if err != nil {
		return nil, err
	}
	if !sc.Empty() {
		es.guardScope = sc
	}
	return es, nil
}

func guardSettings(cfg *config.Config) guard.Settings {
	mode, _ := guard.ParseMode(string(cfg.Guard.Mode))
	s := guard.Settings{Mode: mode, Threshold: cfg.Guard.GuardThreshold(), LiftAfter: cfg.Guard.GuardLiftAfter()}
	s.Never = append(slices.Clone(cfg.Guard.Protect), cfg.EstimateWorkloadLabels()...)
	return s
}

// estimates owns the estimator, the guard and the aggregates the guard's
// mitigations route to.
type estimates struct {
	mu     sync.Mutex
	est    atomic.Pointer[cardinality.Estimator]
	guard  *guard.Guard
	window time.Duration
	// aggregates are the merged outputs of enforced mitigations, by
	// group: ended when the mitigation lifts.
	aggMu      sync.Mutex
	aggregates map[uint64]map[uint64]struct{}
	collector  *estimateCollector
	records    records
}

// records remember, by their output and with their labels after the
// rules, the series of armed groups (guard.Armed) and, in every group the
// guard covers, the series that ended with a stale marker (Prometheus
// sends one the scrape after a series disappeared): when the guard
// engages, the aggregates take over the series that ended within the
// staleness period, which no request brings back. Live series are handed
// over when they next report.
type records struct {
	mu      sync.Mutex
	byGroup map[uint64]map[uint64]*record
	n       int
}

type record struct {
	labels []wire.Label // own copy
	seenMs int64
	ended  bool // recorded for its stale marker, armed or not
}

// MaxRecords bounds the series recorded for the guard, in all groups:
// about 300 bytes each with mesh labels.
const MaxRecords = 200_000

// note records the series out (labels ls) of group; ended: it just ended.
func (r *records) note(group, out uint64, ls []wire.Label, nowMs int64, ended bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byGroup == nil {
		r.byGroup = map[uint64]map[uint64]*record{}
	}
	m := r.byGroup[group]
	if m == nil {
		m = map[uint64]*record{}
		r.byGroup[group] = m
	}
	if rec := m[out]; rec != nil {
		rec.seenMs = nowMs
		rec.ended = rec.ended || ended
		return
	}
	if r.n >= MaxRecords {
		return
	}
	m[out] = &record{labels: cloneLabels(ls), seenMs: nowMs, ended: ended}
	r.n++
}

// len returns the number of records.
func (r *records) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// take removes and returns group's records.
func (r *records) take(group uint64) map[uint64]*record {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.byGroup[group]
	delete(r.byGroup, group)
	r.n -= len(m)
	return m
}

// prune drops the records not seen within maxAgeMs (the merger forgot
// their outputs), and those of live series in groups no longer armed.
func (r *records) prune(armed *guard.Armed, nowMs, maxAgeMs int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for group, m := range r.byGroup {
		keepLive := armed.Has(group)
		for out, rec := range m {
			if nowMs-rec.seenMs > maxAgeMs || (!keepLive && !rec.ended) {
				delete(m, out)
				r.n--
			}
		}
		if len(m) == 0 {
			delete(r.byGroup, group)
		}
	}
}

// endsStale reports whether the newest float sample of s is a stale
// marker: its series just ended.
func endsStale(s *wire.Series) bool {
	return len(s.Samples) > 0 && value.IsStaleNaN(s.Samples[len(s.Samples)-1].Value)
}

func cloneLabels(ls []wire.Label) []wire.Label {
	n := 0
	for _, l := range ls {
		n += len(l.Name) + len(l.Value)
	}
	buf := make([]byte, 0, n)
	out := make([]wire.Label, len(ls))
	for i, l := range ls {
		start := len(buf)
		buf = append(buf, l.Name...)
		out[i].Name = buf[start:len(buf):len(buf)]
		start = len(buf)
		buf = append(buf, l.Value...)
		out[i].Value = buf[start:len(buf):len(buf)]
	}
	return out
}

// maxAggregates bounds the outputs remembered per group.
const maxAggregates = 100_000

// applyEstimates makes the estimator and the guard follow cfg.
func (g *Gateway) applyEstimates(cfg *config.Config) {
	e := &g.est
	e.mu.Lock()
	defer e.mu.Unlock()
	if !cfg.EstimatesEnabled() {
		return // an estimator once made stays, idle: its metrics keep their series
	}
	w := cfg.EstimateWindow()
	if e.est.Load() == nil || e.window != w {
		e.est.Store(cardinality.New(cardinality.Options{Window: w, MaxGroups: cfg.Cardinality.MaxGroups}))
		e.window = w
	}
	if e.collector == nil {
		e.collector = &estimateCollector{g: g}
		if g.opts.Registerer != nil {
			g.opts.Registerer.MustRegister(e.collector)
		}
	}
	top := cfg.Cardinality.Top
	if top <= 0 {
		top = config.DefaultCardinalityTop
	}
	e.collector.setTop(top)
	if e.guard == nil {
		e.guard = guard.New(guardSettings(cfg), w, g.logger, guard.NewMetrics(g.opts.Registerer))
	} else {
		e.guard.SetSettings(guardSettings(cfg), w)
	}
}

// Estimator returns the estimates, nil when they are off.
func (g *Gateway) Estimator() *cardinality.Estimator {
	g.est.mu.Lock()
	defer g.est.mu.Unlock()
	if st := g.state.Load(); st == nil || st.est == nil {
		return nil
	}
	return g.est.est.Load()
}

// Guard returns the guard, nil when it is off.
func (g *Gateway) Guard() *guard.Guard {
	g.est.mu.Lock()
	defer g.est.mu.Unlock()
	if st := g.state.Load(); st == nil || st.est == nil || !st.est.guardOn {
		return nil
	}
	return g.est.guard
}

// runGuard evaluates the guard every guard.evaluation_interval (of the
// configuration in force) until ctx ends.
func (g *Gateway) runGuard(ctx context.Context) {
	t := time.NewTimer(g.Config().Guard.GuardEvaluationInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.EvaluateGuard()
			t.Reset(g.Config().Guard.GuardEvaluationInterval())
		}
	}
}

// EvaluateGuard runs one evaluation of the guard now (Run does it every
// guard.evaluation_interval), and sweeps the estimates.
func (g *Gateway) EvaluateGuard() {
	est, gd := g.Estimator(), g.Guard()
	if est == nil {
		return
	}
	now := g.now()
	est.Sweep(now.UnixMilli())
	if gd == nil {
		return
	}
	res := gd.Evaluate(now, est)
	if res.Changed {
		g.republish()
	}
	g.takeOver(res.Engaged, now.UnixMilli())
	g.est.records.prune(gd.Armed(), now.UnixMilli(), g.merger.Rules().Staleness.Milliseconds())
	// Lifted: with the rules without the mitigation in force, the
	// aggregates end now (what requests under the old rules still bring
	// them is dropped, see merge.Merger.EndOutput), before their inputs'
	// own series reach the downstream.
	for _, l := range res.Lifted {
		g.est.aggMu.Lock()
		aggs := g.est.aggregates[l.Group]
		delete(g.est.aggregates, l.Group)
		g.est.aggMu.Unlock()
		for out := range aggs {
			g.merger.EndOutput(out)
		}
	}
}

// takeOver hands the recorded series of the groups just engaged over to
// their aggregates (the live ones would be handed over as they report; the
// ended ones only this way).
func (g *Gateway) takeOver(engaged []guard.Change, nowMs int64) {
	st := g.state.Load()
	if st == nil || st.est == nil {
		return
	}
	var hashBuf []byte
	var stripped []wire.Label
	done := map[uint64]bool{}
	for _, e := range engaged {
		if done[e.Group] {
			continue
		}
		done[e.Group] = true
		drop := st.est.active.Labels(e.Group)
		if drop == nil {
			continue
		}
		for pre, rec := range g.est.records.take(e.Group) {
			stripped = stripped[:0]
			for _, l := range rec.labels {
				if _, found := slices.BinarySearch(drop, string(l.Name)); !found {
					stripped = append(stripped, l)
				}
			}
			// The aggregate keeps the labels: its own copy.
			agg := cloneLabels(stripped)
			var out uint64
			out, hashBuf = wire.HashLabels(hashBuf, agg)
			if g.merger.Handover(pre, out, agg, rec.labels, nowMs) {
				g.est.noteAggregate(e.Group, out)
			}
		}
	}
}

// republish swaps in a copy of the state with the guard's mitigations in
// force and a new gen.
func (g *Gateway) republish() {
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	old := g.state.Load()
	if old == nil || old.est == nil {
		return
	}
	ns := *old
	es := *old.est
	es.active = g.est.guard.Active()
	ns.est = &es
	ns.gen = g.gens.Add(1)
	g.state.Store(&ns)
}

func (e *estimates) noteAggregate(group, out uint64) {
	e.aggMu.Lock()
	if e.aggregates == nil {
		e.aggregates = map[uint64]map[uint64]struct{}{}
	}
	m := e.aggregates[group]
	if m == nil {
		m = map[uint64]struct{}{}
		e.aggregates[group] = m
	}
	if len(m) < maxAggregates {
		m[out] = struct{}{}
	}
	e.aggMu.Unlock()
}

// groupOf returns the (workload, metric) group of labels ls, and the
// workload's name in ws.wlBuf. The guard, its records and the estimates
// all ask for the group of one series' labels after the rules: it is
// computed once per series (route clears ws.grpOK for each).
func (ws *workspace) groupOf(es *estState, ls []wire.Label) (uint64, []byte, []byte) {
	if ws.grpOK {
		return ws.grpKey, ws.wlBuf, ws.grpName
	}
	ws.wlBuf = ws.wlBuf[:0]
	for i, n := range es.workloadLabels {
		if i > 0 {
			ws.wlBuf = append(ws.wlBuf, '/')
		}
		ws.wlBuf = append(ws.wlBuf, wire.GetLabel(ls, n)...)
	}
	ws.grpName = wire.GetLabel(ls, "__name__")
	ws.grpKey, ws.grpOK = cardinality.GroupKey(ws.wlBuf, ws.grpName), true
	return ws.grpKey, ws.wlBuf, ws.grpName
}

// observe adds one series to the estimates; out are its labels after the
// rules (before the guard), outHash its identity as forwarded.
func (g *Gateway) observe(es *estState, ws *workspace, in uint64, inLabels, out []wire.Label, outHash uint64, nowMs int64, guardable, outKnown bool) {
	est := g.est.est.Load()
	if est == nil {
		return
	}
	group, wl, name := ws.groupOf(es, out)
	ws.obs = cardinality.Observation{
		Group: group, Workload: wl, Metric: name, In: in, Out: outHash,
		InLabels: inLabels, OutLabels: out, NowMs: nowMs, Guardable: guardable, OutKnown: outKnown,
	}
	est.Observe(&ws.obs)
	ws.obs = cardinality.Observation{}
}

// guardStrip removes the labels the guard aggregates away for ls's group;
// it returns ls unchanged and 0 when none.
func (ws *workspace) guardStrip(es *estState, ls []wire.Label) ([]wire.Label, uint64) {
	group, _, _ := ws.groupOf(es, ls)
	drop := es.active.Labels(group)
	if drop == nil {
		return ls, 0
	}
	start := len(ws.overflow)
	for _, l := range ls {
		if _, found := slices.BinarySearch(drop, string(l.Name)); !found {
			ws.overflow = append(ws.overflow, l)
		}
	}
	return ws.overflow[start:len(ws.overflow):len(ws.overflow)], group
}

// estimateCollector exposes the estimates as metrics bounded to the top N.
type estimateCollector struct {
	g   *Gateway
	mu  sync.Mutex
	top int
}

var (
	seriesDesc = prometheus.NewDesc("cardinal_cardinality_series",
		"Estimated active series within the estimates' window, before the rules (stage=in) and as forwarded (stage=out), for the top workloads.",
		[]string{"workload", "stage"}, nil)
	labelValuesDesc = prometheus.NewDesc("cardinal_cardinality_label_values",
		"Estimated distinct values of a label within the window, after the rules and before the guard, for the top (workload, metric, label).",
		[]string{"workload", "metric", "label"}, nil)
	churnDesc = prometheus.NewDesc("cardinal_cardinality_churn_ratio",
		"Share of a workload's forwarded series new within the last half-window, for the top workloads.",
		[]string{"workload"}, nil)
	groupsDesc = prometheus.NewDesc("cardinal_cardinality_groups",
		"(workload, metric) groups the estimates track.", nil, nil)
	droppedGroupsDesc = prometheus.NewDesc("cardinal_cardinality_dropped_groups_total",
		"Observations of a new group beyond cardinality.max_groups, not estimated.", nil, nil)
	recordedDesc = prometheus.NewDesc("cardinal_guard_recorded_series",
		"Series of armed groups recorded for the guard's takeover (at most 200000).", nil, nil)
)

func (c *estimateCollector) setTop(n int) {
	c.mu.Lock()
	c.top = n
	c.mu.Unlock()
}

func (c *estimateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- seriesDesc
	ch <- labelValuesDesc
	ch <- churnDesc
	ch <- groupsDesc
	ch <- droppedGroupsDesc
	ch <- recordedDesc
}

func (c *estimateCollector) Collect(ch chan<- prometheus.Metric) {
	est := c.g.Estimator()
	if est == nil {
		return
	}
	c.mu.Lock()
	top := c.top
	c.mu.Unlock()
	groups := est.Report(c.g.now().UnixMilli(), cardinality.Filter{})
	ch <- prometheus.MustNewConstMetric(groupsDesc, prometheus.GaugeValue, float64(est.Groups()))
	ch <- prometheus.MustNewConstMetric(droppedGroupsDesc, prometheus.CounterValue, float64(est.DroppedGroups()))
	ch <- prometheus.MustNewConstMetric(recordedDesc, prometheus.GaugeValue, float64(c.g.est.records.len()))
	wls := cardinality.Workloads(groups)
	for i, w := range wls {
		if i >= top {
			break
		}
		ch <- prometheus.MustNewConstMetric(seriesDesc, prometheus.GaugeValue, float64(w.SeriesIn), w.Workload, "in")
		ch <- prometheus.MustNewConstMetric(seriesDesc, prometheus.GaugeValue, float64(w.SeriesOut), w.Workload, "out")
		ch <- prometheus.MustNewConstMetric(churnDesc, prometheus.GaugeValue, w.Churn, w.Workload)
	}
	type lv struct {
		g *cardinality.GroupReport
		l cardinality.LabelReport
	}
	var all []lv
	for i := range groups {
		for _, l := range groups[i].Labels {
			if l.ValuesOut > 0 && l.Name != "__name__" {
				all = append(all, lv{&groups[i], l})
			}
		}
	}
	slices.SortFunc(all, func(a, b lv) int {
		switch {
		case a.l.ValuesOut > b.l.ValuesOut:
			return -1
		case a.l.ValuesOut < b.l.ValuesOut:
			return 1
		}
		return 0
	})
	for i, x := range all {
		if i >= top {
			break
		}
		ch <- prometheus.MustNewConstMetric(labelValuesDesc, prometheus.GaugeValue, float64(x.l.ValuesOut), x.g.Workload, x.g.Metric, x.l.Name)
	}
}
