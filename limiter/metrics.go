package limiter

import (
	"cmp"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// TopWorkloads is how many workloads the per-workload metrics name; the
// rest are summed under workload="_other", so that a workload label gone
// wrong cannot explode Cardinal's own metrics.
const TopWorkloads = 20

var (
	activeDesc = prometheus.NewDesc("cardinal_active_series",
		"Active series admitted per workload (top workloads; the rest summed as _other).", []string{"workload"}, nil)
	limitDesc = prometheus.NewDesc("cardinal_series_limit_reached_total",
		"New series folded, and tracked as folded, because their workload was at its cap or their histogram or summary was folded (counted only in dry_run), per workload (top workloads; the rest summed as _other).", []string{"workload"}, nil)
	untrackedDesc = prometheus.NewDesc("cardinal_untracked_folds_total",
		"Arrivals of series folded untracked because their workload was saturated: it tracked as many folded series as it may (counted only in dry_run), per workload (top workloads; the rest summed as _other).", []string{"workload"}, nil)
	foldedDesc = prometheus.NewDesc("cardinal_folded_samples_total",
		"Samples of series over their workload's cap, folded into its overflow series (counted only in dry_run), per workload (top workloads; the rest summed as _other).", []string{"workload"}, nil)
)

// Collector returns a collector of the per-workload metrics.
func (l *Limiter) Collector() prometheus.Collector { return collector{l} }

type collector struct{ l *Limiter }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- activeDesc
	ch <- limitDesc
	ch <- foldedDesc
	ch <- untrackedDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.l.wlMu.RLock()
	ws := make([]*Workload, 0, len(c.l.byName))
	for _, w := range c.l.byID {
		if w != nil {
			ws = append(ws, w)
		}
	}
	c.l.wlMu.RUnlock()
	emitTop(ch, ws, activeDesc, prometheus.GaugeValue, func(w *Workload) float64 { return float64(w.active.Load()) })
	emitTop(ch, ws, limitDesc, prometheus.CounterValue, func(w *Workload) float64 { return float64(w.limitReached.Load()) })
	emitTop(ch, ws, foldedDesc, prometheus.CounterValue, func(w *Workload) float64 { return float64(w.foldedSamples.Load()) })
	emitTop(ch, ws, untrackedDesc, prometheus.CounterValue, func(w *Workload) float64 { return float64(w.untrackedFolds.Load()) })
}

// emitTop sends the TopWorkloads largest non-zero values by workload and the
// sum of the others.
func emitTop(ch chan<- prometheus.Metric, ws []*Workload, desc *prometheus.Desc, vt prometheus.ValueType, value func(*Workload) float64) {
	type entry struct {
		name string
		v    float64
	}
	entries := make([]entry, 0, len(ws))
	for _, w := range ws {
		if v := value(w); v != 0 {
			entries = append(entries, entry{w.Name, v})
		}
	}
	slices.SortFunc(entries, func(a, b entry) int {
		if c := cmp.Compare(b.v, a.v); c != 0 {
			return c
		}
		return cmp.Compare(a.name, b.name)
	})
	other := 0.0
	for i, e := range entries {
		if i < TopWorkloads && e.name != OtherWorkload {
			ch <- prometheus.MustNewConstMetric(desc, vt, e.v, e.name)
			continue
		}
		other += e.v
	}
	if other != 0 {
		ch <- prometheus.MustNewConstMetric(desc, vt, other, OtherWorkload)
	}
}
