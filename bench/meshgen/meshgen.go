// Package meshgen generates deterministic, realistic service-mesh metrics:
// the Istio standard metrics, Envoy sidecar stats and Linkerd proxy metrics
// of a synthetic Kubernetes cluster, with a configurable share of series
// that carry injected high-cardinality labels (request ids, trace ids, user
// agents, paths) — the mistake Cardinal exists to repair.
//
// The same Config and step always yield the same series, in the same order,
// with the same values: counters grow monotonically from step to step,
// gauges wander, and classic histograms are cumulative per le with _count
// equal to the +Inf bucket. Output is available as prompb series, as
// remote-write requests, as Prometheus text exposition and over HTTP.
//
// Label sets are built once in New; a step only computes values (and, with
// Config.Churn, fresh injected label values). The package does no I/O of its
// own and keeps no global state besides constant tables.
package meshgen

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"
)

// Config describes the synthetic cluster. The zero value is valid and means
// the defaults.
type Config struct {
	// Workloads is the number of Deployments (default 200), spread
	// round-robin over twelve namespaces, eight on Istio and four on Linkerd.
	Workloads int
	// PodsPerWorkload is the number of replicas per Deployment (default 5).
	PodsPerWorkload int
	// HighCardShare is the share of series that carry the injected labels
	// (default 0.3 when zero; a negative value disables injection). The
	// share is met to within one series group; request-level series (the
	// ones a header-to-label mapping affects) are chosen before connection
	// and process series.
	HighCardShare float64
	// InjectedLabels are the high-cardinality label names injected into the
	// chosen series (default request_id, trace_id, user_agent, path when nil;
	// an empty non-nil slice disables injection).
	InjectedLabels []string
	// Variants is how many series each chosen series is split into, each with
	// its own injected values and its own part of the traffic (default 4).
	// Dropping the injected labels collapses the variants back into one.
	Variants int
	// Churn makes injected values change every step, as a header mapped to a
	// label does in production: every scrape brings new request ids. Without
	// Churn the injected values are fixed per series.
	Churn bool
	// Seed selects pod names, call edges, rates, distributions and injected
	// values.
	Seed uint64
	// ValueFuncs overrides the value generator of injected labels by name
	// (see DefaultValueFuncs); names without one use HexValue.
	ValueFuncs map[string]ValueFunc
}

// Defaults of Config.
const (
	DefaultWorkloads       = 200
	DefaultPodsPerWorkload = 5
	DefaultHighCardShare   = 0.3
	DefaultVariants        = 4
)

// DefaultInjectedLabels returns the default injected label names.
func DefaultInjectedLabels() []string {
	return []string{"request_id", "trace_id", "user_agent", "path"}
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.Workloads == 0 {
		c.Workloads = DefaultWorkloads
	}
	if c.PodsPerWorkload == 0 {
		c.PodsPerWorkload = DefaultPodsPerWorkload
	}
	if c.HighCardShare == 0 {
		c.HighCardShare = DefaultHighCardShare
	}
	if c.HighCardShare < 0 {
		c.HighCardShare = 0
	}
	if c.InjectedLabels == nil {
		c.InjectedLabels = DefaultInjectedLabels()
	}
	if c.Variants == 0 {
		c.Variants = DefaultVariants
	}
	return c
}

// Validate reports whether the Config can be generated.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Workloads < 0:
		return fmt.Errorf("invalid workloads %d: must not be negative", c.Workloads)
	case c.PodsPerWorkload < 0:
		return fmt.Errorf("invalid pods per workload %d: must not be negative", c.PodsPerWorkload)
	case c.HighCardShare > 1:
		return fmt.Errorf("invalid high-cardinality share %g: must be at most 1", c.HighCardShare)
	case c.Variants < 1:
		return fmt.Errorf("invalid variants %d: must be positive", c.Variants)
	}
	seen := map[string]bool{}
	for _, n := range c.InjectedLabels {
		switch {
		case !model.LegacyValidation.IsValidLabelName(n) || strings.HasPrefix(n, "__"):
			return fmt.Errorf("invalid injected label %q: not a plain label name", n)
		case slices.Contains(generatedLabelNames, n):
			return fmt.Errorf("invalid injected label %q: the generator already emits it", n)
		case seen[n]:
			return fmt.Errorf("invalid injected label %q: listed twice", n)
		}
		seen[n] = true
	}
	return nil
}

// Generator produces the series of a Config step by step. It is immutable
// after New and safe for concurrent use.
type Generator struct {
	cfg  Config
	fams *families
	inj  []string    // injected names, sorted
	injF []ValueFunc // generator per injected name

	units   []unit
	nSeries int
	nHCSets int // distinct injected value sets (group × variant)
	// labels of every output series, built once; for churned units the
	// injected values are filled per step instead.
	labels [][]prompb.Label
	// hcSeries is the number of series that carry injected labels and
	// hcLabels the size of the per-step label arena that churn needs.
	hcSeries, hcLabels int
}

// New builds the generator for cfg. It panics if cfg.Validate fails; call
// Validate first for configurations that come from users.
func New(cfg Config) *Generator {
	if err := cfg.Validate(); err != nil {
		panic("meshgen: " + err.Error())
	}
	cfg = cfg.withDefaults()
	g := &Generator{cfg: cfg, fams: newFamilies()}
	g.inj = slices.Clone(cfg.InjectedLabels)
	slices.Sort(g.inj)
	defaults := DefaultValueFuncs()
	for _, n := range g.inj {
		f := cfg.ValueFuncs[n]
		if f == nil {
			f = defaults[n]
		}
		if f == nil {
			f = HexValue
		}
		g.injF = append(g.injF, f)
	}
	if cfg.HighCardShare == 0 {
		g.inj, g.injF = nil, nil
	}
	g.build()
	return g
}

// Config returns the configuration with defaults applied.
func (g *Generator) Config() Config { return g.cfg }

// NumSeries returns the number of series of every step.
func (g *Generator) NumSeries() int { return g.nSeries }

// NumHighCardSeries returns how many series of every step carry the injected
// labels.
func (g *Generator) NumHighCardSeries() int { return g.hcSeries }

// traffic is a monotone counter trajectory: its value at step s is
// floor(base + rate*(s + jitter)) with jitter in [0, 0.5), so it never
// decreases. Units that share a traffic share the exact same counts.
type traffic struct {
	base, rate float64
	key        uint64
}

func (t traffic) at(step int) float64 {
	return math.Floor(t.base + t.rate*(float64(step)+0.5*unit01(mix(t.key, uint64(step), 0x57e9))))
}

// split returns the part of t carried by variant v of n.
func (t traffic) split(v, n int) traffic {
	return traffic{base: math.Floor(t.base / float64(n)), rate: t.rate / float64(n), key: mix(t.key, uint64(v), 0x7a41)}
}

type valueMode uint8

const (
	modeCounter   valueMode = iota // tr.at(step) * scale
	modeGauge                      // round(level * (0.8 + 0.4*h))
	modeConst                      // level
	modeHistogram                  // cumulative buckets from cdf, _sum = count * scale, _count
)

// unit is one counter, one gauge or one whole histogram of one label set.
type unit struct {
	fam   *family
	mode  valueMode
	tr    traffic
	scale float64   // counter: multiplier; histogram: mean observation
	level float64   // gauge level
	cdf   []float64 // histogram: cumulative share per le, last is 1
	base  []prompb.Label
	lePos int   // where le goes in base
	inj   []int // positions of injected labels in base, in g.inj order
	hc    int   // injected value set, or -1
	first int   // index of the unit's first series
}

// seriesCount is the number of series a unit emits.
func (u *unit) seriesCount() int {
	if u.mode == modeHistogram {
		return len(u.fam.le) + 2
	}
	return 1
}
