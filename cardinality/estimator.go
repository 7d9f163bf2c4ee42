// Package cardinality estimates, in line, how many series each workload and
// metric has before and after the rules, how many distinct values each of
// their labels takes, and how fast their series churn.
//
// Estimates cover a sliding window made of two half-windows (generations):
// a count is the union of the current and the previous one, so it covers
// between half a window and a whole one of history. Every count is a
// sketch (see sketch): exact up to SmallMax distinct values, then a
// HyperLogLog with a relative standard error of RelativeError. Dense
// sketches are budgeted (Options.MaxDense); a sketch that cannot get one
// reports a lower bound and says so (Saturated).
//
// The gateway observes an input once per half-window (Observe; the merger
// tells it which inputs are new in the half-window), so the estimates cost
// per series and half-window, not per sample.
package cardinality

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/cardinal-gateway/cardinal/wire"
)

// Options configure an Estimator.
type Options struct {
	// Window is the span the estimates cover; 10 minutes by default.
	Window time.Duration
	// MaxGroups bounds the (workload, metric) groups tracked; 10 000 by
	// default. New groups beyond it are counted in DroppedGroups.
	MaxGroups int
	// MaxDense bounds the dense sketches, 4 KiB each; 8192 (32 MiB) by
	// default.
	MaxDense int
}

// MaxLabels bounds the label names tracked per group and generation.
const MaxLabels = 64

const numShards = 32

// Estimator holds the sketches. It is safe for concurrent use; groups are
// sharded, so requests for different groups do not contend.
type Estimator struct {
	halfMs    int64
	maxGroups int64
	groups    atomic.Int64
	dropped   atomic.Uint64
	shards    [numShards]shard
}

type shard struct {
	mu     sync.Mutex
	groups map[uint64]*group
	dense  budget
	_      [40]byte // keep shards on separate cache lines
}

type group struct {
	workload, metric string
	guardable        bool
	epoch            int64 // half-window index of gens[cur]
	cur              int
	gens             [2]generation
}

type generation struct {
	in, out sketch
	labels  []labelSketch
	// labelsFull: a label name beyond MaxLabels was not tracked.
	labelsFull bool
}

type labelSketch struct {
	name    string
	in, out sketch
}

// New returns an Estimator.
func New(o Options) *Estimator {
	if o.Window <= 0 {
		o.Window = 10 * time.Minute
	}
	if o.MaxGroups <= 0 {
		o.MaxGroups = 10000
	}
	if o.MaxDense <= 0 {
		o.MaxDense = 8192
	}
	e := &Estimator{halfMs: max(o.Window.Milliseconds()/2, 1), maxGroups: int64(o.MaxGroups)}
	for i := range e.shards {
		e.shards[i].groups = map[uint64]*group{}
		e.shards[i].dense.max = max(o.MaxDense/numShards, 1)
	}
	return e
}

// Window returns the span the estimates cover.
func (e *Estimator) Window() time.Duration { return time.Duration(2*e.halfMs) * time.Millisecond }

// EpochStart returns the start (ms) of the half-window nowMs is in: an
// input last seen before it must be observed again.
func (e *Estimator) EpochStart(nowMs int64) int64 { return nowMs / e.halfMs * e.halfMs }

// Observation is one series, observed once per half-window.
type Observation struct {
	// Group identifies the (workload, metric) pair; Workload and Metric
	// name it (read only when the group is new).
	Group            uint64
	Workload, Metric []byte
	// In and Out identify the series before the rules and as forwarded.
	In, Out uint64
	// InLabels are the labels before the rules, OutLabels after them
	// (before the guard, whose work the page shows apart).
	InLabels, OutLabels []wire.Label
	NowMs               int64
	// Guardable: the series is in the guard's scope, which makes its
	// group a candidate for the guard (see GroupReport.Guardable).
	Guardable bool
	// OutKnown: the output was already observed in this half-window,
	// through another input: only what the rules removed or rewrote is new
	// (the output's labels define it, so every input of it shares them).
	OutKnown bool
}

// GroupKey returns the identity of a (workload, metric) pair.
func GroupKey(workload, metric []byte) uint64 {
	var d xxhash.Digest
	d.Reset()
	_, _ = d.Write(workload)
	_, _ = d.Write([]byte{0xff})
	_, _ = d.Write(metric)
	return d.Sum64()
}

// Observe adds one series. It allocates only for a new group or label name.
func (e *Estimator) Observe(o *Observation) {
	sh := &e.shards[o.Group%numShards]
	epoch := o.NowMs / e.halfMs
	sh.mu.Lock()
	g := sh.groups[o.Group]
	if g == nil {
		if e.groups.Load() >= e.maxGroups {
			sh.mu.Unlock()
			e.dropped.Add(1)
			return
		}
		e.groups.Add(1)
		g = &group{workload: string(o.Workload), metric: string(o.Metric), epoch: epoch}
		sh.groups[o.Group] = g
	}
	g.guardable = g.guardable || o.Guardable
	gen := g.rotate(epoch, &sh.dense)
	gen.in.insert(o.In, &sh.dense)
	if !o.OutKnown {
		gen.out.insert(o.Out, &sh.dense)
	}
	// In and out labels are both sorted by name, and the rules mostly keep
	// or drop labels: walk them together, and hash a value kept as it was
	// once for both. The labels of one group come in the same order every
	// time, so the next sketch is almost always where the last one ended.
	hint, j := 0, 0
	out := o.OutLabels
	if o.OutKnown {
		out = nil // seen with the output; kept labels are skipped below
	}
	for i := range o.InLabels {
		l := &o.InLabels[i]
		// A label the rules kept as it was is usually the same memory in
		// both: no byte needs comparing.
		kept := j < len(o.OutLabels) && aliases(&o.OutLabels[j], l)
		same := kept
		if !kept {
			for j < len(o.OutLabels) && string(o.OutLabels[j].Name) < string(l.Name) {
				if out != nil {
					e.observeOut(gen, &o.OutLabels[j], &hint, &sh.dense)
				}
				j++
			}
			kept = j < len(o.OutLabels) && string(o.OutLabels[j].Name) == string(l.Name)
			same = kept && string(o.OutLabels[j].Value) == string(l.Value)
		}
		if same && o.OutKnown {
			j++
			continue // observed with the output's first input
		}
		ls := gen.label(l.Name, &hint)
		h := xxhash.Sum64(l.Value)
		if ls != nil {
			ls.in.insert(h, &sh.dense)
		}
		if kept {
			if !same {
				h = xxhash.Sum64(o.OutLabels[j].Value)
			}
			if ls != nil && out != nil {
				ls.out.insert(h, &sh.dense)
			}
			j++
		}
	}
	for ; j < len(out); j++ {
		e.observeOut(gen, &out[j], &hint, &sh.dense)
	}
	sh.mu.Unlock()
}

// aliases reports whether a and b are the same name and value slices.
func aliases(a, b *wire.Label) bool {
	return len(a.Name) == len(b.Name) && len(a.Value) == len(b.Value) && len(a.Name) > 0 && len(a.Value) > 0 &&
		&a.Name[0] == &b.Name[0] && &a.Value[0] == &b.Value[0]
}

// observeOut adds an output label the input did not have (or had
// elsewhere in its order).
func (e *Estimator) observeOut(gen *generation, l *wire.Label, hint *int, b *budget) {
	if ls := gen.label(l.Name, hint); ls != nil {
		ls.out.insert(xxhash.Sum64(l.Value), b)
	}
}

// rotate moves g to the half-window epoch and returns its current
// generation.
func (g *group) rotate(epoch int64, b *budget) *generation {
	switch {
	case epoch == g.epoch:
	case epoch == g.epoch+1:
		g.cur ^= 1
		g.gens[g.cur].reset(b)
		g.epoch = epoch
	case epoch > g.epoch:
		g.gens[0].reset(b)
		g.gens[1].reset(b)
		g.epoch = epoch
	}
	// An older epoch (a clock step back) counts into the current one.
	return &g.gens[g.cur]
}

// release gives the generation's dense sketches back.
func (gen *generation) release(b *budget) {
	gen.in.release(b)
	gen.out.release(b)
	for i := range gen.labels {
		gen.labels[i].in.release(b)
		gen.labels[i].out.release(b)
	}
}

func (gen *generation) reset(b *budget) {
	gen.in.reset(b)
	gen.out.reset(b)
	// Names stay: the same labels come back, without allocating.
	for i := range gen.labels {
		gen.labels[i].in.reset(b)
		gen.labels[i].out.reset(b)
	}
	gen.labelsFull = false
}

// label returns the sketches of name, adding them; nil beyond MaxLabels.
// *hint is where to look first; it is left after the sketch found.
func (gen *generation) label(name []byte, hint *int) *labelSketch {
	if h := *hint; h < len(gen.labels) && gen.labels[h].name == string(name) {
		*hint = h + 1
		return &gen.labels[h]
	}
	for i := range gen.labels {
		if gen.labels[i].name == string(name) {
			*hint = i + 1
			return &gen.labels[i]
		}
	}
	if len(gen.labels) >= MaxLabels {
		gen.labelsFull = true
		return nil
	}
	gen.labels = append(gen.labels, labelSketch{name: string(name)})
	*hint = len(gen.labels)
	return &gen.labels[len(gen.labels)-1]
}

// DroppedGroups returns how many observations found no room for their
// group.
func (e *Estimator) DroppedGroups() uint64 { return e.dropped.Load() }

// Groups returns the number of groups tracked.
func (e *Estimator) Groups() int { return int(e.groups.Load()) }

// GroupReport is the estimate of one (workload, metric) group within the
// window.
type GroupReport struct {
	Workload string `json:"workload"`
	Metric   string `json:"metric"`
	// SeriesIn are the series before the rules, SeriesOut those forwarded.
	SeriesIn  uint64 `json:"series_in"`
	SeriesOut uint64 `json:"series_out"`
	// Churn is the share of the series forwarded in the current
	// half-window that were not in the previous one (0 without one).
	Churn  float64       `json:"churn"`
	Labels []LabelReport `json:"labels,omitempty"`
	// Saturated: the dense sketch budget was spent or a label name was
	// beyond MaxLabels; some counts are lower bounds.
	Saturated bool `json:"saturated,omitempty"`
	// Guardable: series of the group are in the guard's scope.
	Guardable bool `json:"-"`

	key uint64
}

// Key returns the group's identity (GroupKey).
func (r *GroupReport) Key() uint64 { return r.key }

// LabelReport is the estimated number of distinct values of one label name
// within a group, before the rules and after them.
type LabelReport struct {
	Name      string `json:"name"`
	ValuesIn  uint64 `json:"values_in"`
	ValuesOut uint64 `json:"values_out"`
}

// Filter selects groups for Report.
type Filter struct {
	Workload, Metric string // "" matches every one
	// TopLabels keeps the labels with the most values after the rules
	// (then before); <= 0 keeps them all, sorted.
	TopLabels int
}

// Report returns the groups that match f, estimated at nowMs, with the
// most series before the rules first.
func (e *Estimator) Report(nowMs int64, f Filter) []GroupReport {
	epoch := nowMs / e.halfMs
	var out []GroupReport
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		for key, g := range sh.groups {
			if (f.Workload != "" && g.workload != f.Workload) || (f.Metric != "" && g.metric != f.Metric) {
				continue
			}
			r, ok := g.report(epoch)
			if !ok {
				continue
			}
			r.key = key
			if f.TopLabels > 0 && len(r.Labels) > f.TopLabels {
				r.Labels = r.Labels[:f.TopLabels]
			}
			out = append(out, r)
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b GroupReport) int {
		if c := cmp.Compare(b.SeriesIn, a.SeriesIn); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Workload, b.Workload); c != 0 {
			return c
		}
		return cmp.Compare(a.Metric, b.Metric)
	})
	return out
}

// report estimates g within the window ending in half-window epoch; false
// when g saw nothing within it.
func (g *group) report(epoch int64) (GroupReport, bool) {
	var cur, prev *generation
	switch g.epoch {
	case epoch:
		cur, prev = &g.gens[g.cur], &g.gens[g.cur^1]
	case epoch - 1:
		cur, prev = &emptyGen, &g.gens[g.cur]
	default:
		return GroupReport{}, false
	}
	r := GroupReport{Workload: g.workload, Metric: g.metric, Guardable: g.guardable}
	r.SeriesIn = union(&cur.in, &prev.in)
	r.SeriesOut = union(&cur.out, &prev.out)
	if r.SeriesIn == 0 && r.SeriesOut == 0 {
		return r, false
	}
	if p, c := prev.out.count(), cur.out.count(); p > 0 && c > 0 {
		newer := float64(r.SeriesOut) - float64(p)
		r.Churn = min(max(newer/float64(c), 0), 1)
	}
	r.Saturated = cur.saturated() || prev.saturated()
	byName := map[string]int{}
	add := func(gen *generation, other *generation) {
		for i := range gen.labels {
			ls := &gen.labels[i]
			if _, done := byName[ls.name]; done {
				continue
			}
			lr := LabelReport{Name: ls.name}
			if o := other.find(ls.name); o != nil {
				lr.ValuesIn, lr.ValuesOut = union(&ls.in, &o.in), union(&ls.out, &o.out)
			} else {
				lr.ValuesIn, lr.ValuesOut = ls.in.count(), ls.out.count()
			}
			if lr.ValuesIn == 0 && lr.ValuesOut == 0 {
				continue
			}
			byName[ls.name] = len(r.Labels)
			r.Labels = append(r.Labels, lr)
		}
	}
	add(cur, prev)
	add(prev, cur)
	slices.SortFunc(r.Labels, func(a, b LabelReport) int {
		if c := cmp.Compare(b.ValuesOut, a.ValuesOut); c != 0 {
			return c
		}
		if c := cmp.Compare(b.ValuesIn, a.ValuesIn); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return r, true
}

var emptyGen generation

func (gen *generation) find(name string) *labelSketch {
	for i := range gen.labels {
		if gen.labels[i].name == name {
			return &gen.labels[i]
		}
	}
	return nil
}

func (gen *generation) saturated() bool {
	if gen.labelsFull || gen.in.saturated || gen.out.saturated {
		return true
	}
	for i := range gen.labels {
		if gen.labels[i].in.saturated || gen.labels[i].out.saturated {
			return true
		}
	}
	return false
}

// Sweep forgets the groups that saw nothing within the window, returning
// their dense sketches to the budget.
func (e *Estimator) Sweep(nowMs int64) {
	epoch := nowMs / e.halfMs
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		for key, g := range sh.groups {
			if g.epoch < epoch-1 {
				g.gens[0].release(&sh.dense)
				g.gens[1].release(&sh.dense)
				delete(sh.groups, key)
				e.groups.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
}

// WorkloadReport sums a workload's groups.
type WorkloadReport struct {
	Workload  string  `json:"workload"`
	SeriesIn  uint64  `json:"series_in"`
	SeriesOut uint64  `json:"series_out"`
	Churn     float64 `json:"churn"`
	Metrics   int     `json:"metrics"`
}

// Workloads sums the groups of each workload (metrics partition a
// workload's series, so their estimates add up); churn is weighted by
// series. Largest first by series before the rules.
func Workloads(groups []GroupReport) []WorkloadReport {
	idx := map[string]int{}
	var out []WorkloadReport
	for _, g := range groups {
		i, ok := idx[g.Workload]
		if !ok {
			i = len(out)
			idx[g.Workload] = i
			out = append(out, WorkloadReport{Workload: g.Workload})
		}
		w := &out[i]
		w.Churn = (w.Churn*float64(w.SeriesOut) + g.Churn*float64(g.SeriesOut)) / max(float64(w.SeriesOut+g.SeriesOut), 1)
		w.SeriesIn += g.SeriesIn
		w.SeriesOut += g.SeriesOut
		w.Metrics++
	}
	slices.SortFunc(out, func(a, b WorkloadReport) int {
		if c := cmp.Compare(b.SeriesIn, a.SeriesIn); c != 0 {
			return c
		}
		return cmp.Compare(a.Workload, b.Workload)
	})
	return out
}
