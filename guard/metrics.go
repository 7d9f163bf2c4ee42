package guard

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the guard's: mitigations in force, events, series saved.
type Metrics struct {
	mitigations *prometheus.GaugeVec
	events      *prometheus.CounterVec
	saved       prometheus.Gauge
}

// NewMetrics registers the guard's metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		mitigations: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cardinal_guard_mitigations",
			Help: "Labels the guard aggregates away right now (dry_run: would), by mode.",
		}, []string{"mode"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cardinal_guard_events_total",
			Help: "Guard engagements and liftings, by action (engaged, lifted) and mode.",
		}, []string{"action", "mode"}),
		saved: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cardinal_guard_series_saved",
			Help: "Estimated series the enforced mitigations collapse.",
		}),
	}
	for _, mode := range []string{DryRun.String(), Enforce.String()} {
		m.mitigations.WithLabelValues(mode)
		for _, a := range []string{"engaged", "lifted"} {
			m.events.WithLabelValues(a, mode)
		}
	}
	if reg != nil {
		reg.MustRegister(m.mitigations, m.events, m.saved)
	}
	return m
}

func (m *Metrics) event(action, mode string) {
	if m != nil {
		m.events.WithLabelValues(action, mode).Inc()
	}
}

func (m *Metrics) set(active map[key]*Mitigation) {
	if m == nil {
		return
	}
	counts := map[string]float64{DryRun.String(): 0, Enforce.String(): 0}
	saved := uint64(0)
	for _, a := range active {
		counts[a.Mode]++
		if a.Mode == Enforce.String() {
			saved += a.SeriesSaved
		}
	}
	for mode, n := range counts {
		m.mitigations.WithLabelValues(mode).Set(n)
	}
	m.saved.Set(float64(saved))
}
