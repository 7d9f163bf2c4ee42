// Package guard stops the next cardinality explosion without a rule written
// for it: when one label's distinct values within one workload and metric
// exceed a threshold within the estimates' window, the guard aggregates
// that label away for that metric (the gateway drops it, and the merger
// merges the series that collapse, so totals stay right), and lifts the
// mitigation once the label has stayed below the threshold for LiftAfter.
//
// The guard decides off the request path: Evaluate reads the estimates
// (package cardinality) every few seconds. The request path reads the
// mitigations in force from an immutable snapshot (Active), one atomic
// load and, for a guarded group, one map lookup.
package guard

import (
	"cmp"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cardinal-gateway/cardinal/cardinality"
)

// Mode says whether the guard acts.
type Mode uint8

// Modes.
const (
	Off Mode = iota
	// DryRun records events and mitigations but changes nothing.
	DryRun
	// Enforce aggregates the label away.
	Enforce
)

func (m Mode) String() string {
	switch m {
	case DryRun:
		return "dry_run"
	case Enforce:
		return "enforce"
	}
	return "off"
}

// ParseMode reads a mode as written in the config ("" is Off).
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "off":
		return Off, nil
	case "dry_run":
		return DryRun, nil
	case "enforce":
		return Enforce, nil
	}
	return Off, fmt.Errorf("unknown guard mode %q (want enforce or dry_run)", s)
}

// Settings configure the guard.
type Settings struct {
	Mode Mode
	// Threshold is the number of distinct values of one label, within one
	// workload and metric and within the window, that engages the guard.
	Threshold int
	// LiftAfter is how long the label must stay below Threshold before the
	// mitigation is lifted.
	LiftAfter time.Duration
	// Never are the labels never aggregated away: guard.protect, the
	// workload labels, and the names Settings.Normalize adds.
	Never []string
}

// AlwaysProtected are never aggregated away: the metric name, and the
// labels that give histograms and summaries their meaning.
var AlwaysProtected = []string{"__name__", "le", "quantile"}

// Normalize adds AlwaysProtected and sorts Never.
func (s *Settings) Normalize() {
	for _, n := range AlwaysProtected {
		if !slices.Contains(s.Never, n) {
			s.Never = append(s.Never, n)
		}
	}
	slices.Sort(s.Never)
	s.Never = slices.Compact(s.Never)
}

// Mitigation is one label aggregated away (or, in dry_run, that would be).
type Mitigation struct {
	Workload string    `json:"workload"`
	Metric   string    `json:"metric"`
	Label    string    `json:"label"`
	Mode     string    `json:"mode"`
	Since    time.Time `json:"since"`
	// Values is the estimated distinct values of the label when the guard
	// engaged; ValuesNow the latest estimate.
	Values    uint64 `json:"estimated_values"`
	ValuesNow uint64 `json:"estimated_values_now"`
	// SeriesSaved estimates the series the mitigation collapses: the
	// group's series less the series left once the label is dropped.
	SeriesSaved uint64 `json:"series_saved"`
	// BelowSince is when the label went below the threshold (nil while it
	// is above): the mitigation lifts at BelowSince + LiftAfter.
	BelowSince *time.Time `json:"below_since,omitempty"`

	group uint64
}

// Event is one engagement or lifting.
type Event struct {
	Time        time.Time `json:"time"`
	Action      string    `json:"action"` // "engaged" or "lifted"
	Mode        string    `json:"mode"`
	Workload    string    `json:"workload"`
	Metric      string    `json:"metric"`
	Label       string    `json:"label"`
	Values      uint64    `json:"estimated_values"`
	SeriesSaved uint64    `json:"series_saved"`
}

// MaxEvents is how many events the guard keeps, newest first.
const MaxEvents = 256

// Status is what GET /api/v1/guard answers.
type Status struct {
	Mode             string       `json:"mode"`
	Threshold        int          `json:"threshold"`
	WindowSeconds    float64      `json:"window_seconds"`
	LiftAfterSeconds float64      `json:"lift_after_seconds"`
	Protected        []string     `json:"protected"`
	Active           []Mitigation `json:"active"`
	Events           []Event      `json:"events"`
}

// Active is the immutable set of enforced mitigations the request path
// reads: the labels to drop, by group.
type Active struct {
	byGroup map[uint64][]string
	gen     uint64
}

// Labels returns the labels to drop for group, nil for none.
func (a *Active) Labels(group uint64) []string {
	if a == nil || len(a.byGroup) == 0 {
		return nil
	}
	return a.byGroup[group]
}

// Empty reports whether nothing is enforced.
func (a *Active) Empty() bool { return a == nil || len(a.byGroup) == 0 }

// Gen changes whenever the set does.
func (a *Active) Gen() uint64 {
	if a == nil {
		return 0
	}
	return a.gen
}

// Guard keeps the mitigations and events. Its methods are safe for
// concurrent use.
type Guard struct {
	mu       sync.Mutex
	settings Settings
	window   time.Duration
	active   map[key]*Mitigation
	events   []Event // oldest first, at most MaxEvents
	gen      uint64
	snapshot atomic.Pointer[Active]
	logger   *slog.Logger
	metrics  *Metrics
	armed    atomic.Pointer[Armed]
}

// Armed is the immutable set of groups with a label past ArmFraction of
// the threshold and not yet aggregated: the gateway records their series,
// so that when the guard engages, the aggregate also takes over the series
// that ended in between (see the gateway's records).
type Armed struct {
	groups map[uint64]struct{}
}

// Has reports whether group is armed.
func (a *Armed) Has(group uint64) bool {
	if a == nil || len(a.groups) == 0 {
		return false
	}
	_, ok := a.groups[group]
	return ok
}

// Empty reports whether no group is armed.
func (a *Armed) Empty() bool { return a == nil || len(a.groups) == 0 }

// ArmFraction: a group is armed once one of its labels has 1/ArmFraction
// of the threshold's distinct values.
const ArmFraction = 10

// Armed returns the armed groups.
func (g *Guard) Armed() *Armed { return g.armed.Load() }

// Result is what one evaluation changed.
type Result struct {
	// Engaged and Lifted are the enforced mitigations engaged and lifted
	// now: the caller hands the series over to the aggregates, or ends the
	// aggregates, once Active is in force.
	Engaged, Lifted []Change
	// Changed: the enforced set changed (Active is new).
	Changed bool
}

type key struct {
	group uint64
	label string
}

// Change names an enforced mitigation engaged or lifted: the group and the
// label aggregated away.
type Change struct {
	Group uint64
	Label string
}

// New returns a Guard; metrics may be nil.
func New(s Settings, window time.Duration, logger *slog.Logger, metrics *Metrics) *Guard {
	s.Normalize()
	g := &Guard{settings: s, window: window, active: map[key]*Mitigation{}, logger: logger, metrics: metrics}
	g.snapshot.Store(&Active{})
	g.armed.Store(&Armed{})
	return g
}

// SetSettings changes the settings (a configuration reload). Mitigations
// of another mode, or of a label now protected, are lifted at the next
// evaluation.
func (g *Guard) SetSettings(s Settings, window time.Duration) {
	s.Normalize()
	g.mu.Lock()
	g.settings, g.window = s, window
	g.mu.Unlock()
}

// Active returns the enforced mitigations.
func (g *Guard) Active() *Active { return g.snapshot.Load() }

// Protected reports whether label may never be aggregated away.
func (s *Settings) Protected(label string) bool {
	_, found := slices.BinarySearch(s.Never, label)
	return found
}

// Evaluate engages and lifts mitigations from the estimates at now.
func (g *Guard) Evaluate(now time.Time, est *cardinality.Estimator) Result {
	g.mu.Lock()
	defer g.mu.Unlock()
	var res Result
	changed := false
	s := g.settings
	groups := est.Report(now.UnixMilli(), cardinality.Filter{})
	seen := map[key]bool{}
	armed := map[uint64]struct{}{}
	armAt := uint64(max(s.Threshold/ArmFraction, 2))
	for i := range groups {
		gr := &groups[i]
		for _, l := range gr.Labels {
			k := key{gr.Key(), l.Name}
			m := g.active[k]
			if m == nil {
				if s.Mode == Off || !gr.Guardable || s.Protected(l.Name) {
					continue
				}
				if l.ValuesOut <= uint64(s.Threshold) {
					if s.Mode == Enforce && l.ValuesOut >= armAt {
						armed[k.group] = struct{}{}
					}
					continue
				}
				m = &Mitigation{
					Workload: gr.Workload, Metric: gr.Metric, Label: l.Name, Mode: s.Mode.String(),
					Since: now, Values: l.ValuesOut, SeriesSaved: saved(gr.SeriesOut, l.ValuesOut), group: k.group,
				}
				g.active[k] = m
				g.record(now, "engaged", m)
				if s.Mode == Enforce {
					changed = true
					res.Engaged = append(res.Engaged, Change{Group: k.group, Label: l.Name})
				}
			}
			seen[k] = true
			m.ValuesNow = l.ValuesOut
			if l.ValuesOut > uint64(s.Threshold) {
				m.BelowSince = nil
				continue
			}
			if m.BelowSince == nil {
				t := now
				m.BelowSince = &t
			}
		}
	}
	for k, m := range g.active {
		if !seen[k] {
			// The group or label saw nothing within the window: below.
			m.ValuesNow = 0
			if m.BelowSince == nil {
				t := now
				m.BelowSince = &t
			}
		}
		lift := m.BelowSince != nil && now.Sub(*m.BelowSince) >= s.LiftAfter
		// A reload that changed the mode or protected the label lifts it.
		lift = lift || m.Mode != s.Mode.String() || s.Protected(m.Label)
		if !lift {
			continue
		}
		delete(g.active, k)
		g.record(now, "lifted", m)
		if m.Mode == Enforce.String() {
			changed = true
			res.Lifted = append(res.Lifted, Change{Group: m.group, Label: m.Label})
		}
	}
	if changed {
		g.publish()
	}
	g.armed.Store(&Armed{groups: armed})
	g.metrics.set(g.active)
	res.Changed = changed
	return res
}

// saved estimates the series that dropping a label with values distinct
// values saves a group of series: at least series/values remain.
func saved(series, values uint64) uint64 {
	if values == 0 || series == 0 {
		return 0
	}
	return series - max(series/values, 1)
}

func (g *Guard) publish() {
	g.gen++
	a := &Active{byGroup: map[uint64][]string{}, gen: g.gen}
	for k, m := range g.active {
		if m.Mode == Enforce.String() {
			a.byGroup[k.group] = append(a.byGroup[k.group], k.label)
		}
	}
	for _, ls := range a.byGroup {
		slices.Sort(ls)
	}
	g.snapshot.Store(a)
}

func (g *Guard) record(now time.Time, action string, m *Mitigation) {
	e := Event{Time: now, Action: action, Mode: m.Mode, Workload: m.Workload, Metric: m.Metric, Label: m.Label, Values: m.ValuesNow, SeriesSaved: m.SeriesSaved}
	if action == "engaged" {
		e.Values = m.Values
	}
	if len(g.events) == MaxEvents {
		g.events = append(g.events[:0], g.events[1:]...)
	}
	g.events = append(g.events, e)
	g.metrics.event(action, m.Mode)
	if g.logger != nil {
		// Once per engagement and once per lifting: the event is the log.
		g.logger.Warn("guard "+action, "mode", m.Mode, "workload", m.Workload, "metric", m.Metric,
			"label", m.Label, "estimated_values", e.Values, "series_saved", m.SeriesSaved)
	}
}

// Status returns the settings, the mitigations and the events, newest
// first.
func (g *Guard) Status() Status {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := Status{
		Mode: g.settings.Mode.String(), Threshold: g.settings.Threshold,
		WindowSeconds: g.window.Seconds(), LiftAfterSeconds: g.settings.LiftAfter.Seconds(),
		Protected: slices.Clone(g.settings.Never),
		Active:    []Mitigation{}, Events: []Event{},
	}
	for _, m := range g.active {
		c := *m
		if m.BelowSince != nil {
			t := *m.BelowSince
			c.BelowSince = &t
		}
		st.Active = append(st.Active, c)
	}
	slices.SortFunc(st.Active, func(a, b Mitigation) int {
		if c := b.Since.Compare(a.Since); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.Workload, b.Workload), cmp.Compare(a.Metric, b.Metric), cmp.Compare(a.Label, b.Label))
	})
	for i := len(g.events) - 1; i >= 0; i-- {
		st.Events = append(st.Events, g.events[i])
	}
	return st
}
