package merge

import (
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cardinal-gateway/cardinal/wire"
)

// Kind is how a metric's values combine.
type Kind uint8

// Kinds.
const (
	Gauge Kind = iota
	Counter
)

func (k Kind) String() string {
	if k == Counter {
		return "counter"
	}
	return "gauge"
}

// Policy combines the values of a merged gauge.
type Policy uint8

// Gauge policies.
const (
	Sum Policy = iota
	Max
	Min
	Last
)

// ParsePolicy reads a policy name as written in the config.
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "sum":
		return Sum, nil
	case "max":
		return Max, nil
	case "min":
		return Min, nil
	case "last":
		return Last, nil
	}
	return 0, fmt.Errorf("unknown gauge policy %q (want sum, max, min or last)", s)
}

// GaugeRule picks the policy of the gauges whose metric name matches.
type GaugeRule struct {
	Match  *regexp.Regexp // fully anchored
	Policy Policy
}

// TypeRule forces the kind of the metrics whose name matches, overriding
// name suffixes and metadata.
type TypeRule struct {
	Match *regexp.Regexp // fully anchored
	Kind  Kind
}

// Rules are the settings that a config reload may change.
type Rules struct {
	// Staleness: an input without a sample for this long leaves gauges and
	// is forgotten (its counter contribution stays in the output).
	Staleness time.Duration
	// MaxInputs caps the number of tracked input series.
	MaxInputs int
	// FlushInterval is how often merged outputs are emitted.
	FlushInterval time.Duration
	Gauges        []GaugeRule
	Types         []TypeRule
	// StateFile, if set, keeps the set of merged outputs across restarts
	// (see SaveState).
	StateFile string
}

// Options configure a Merger.
type Options struct {
	Rules      Rules
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now is the clock; nil means time.Now. Tests inject their own.
	Now func() time.Time
}

const numShards = 256

// Merger tracks which inputs feed which outputs and holds the state of
// merged outputs. It is safe for concurrent use.
type Merger struct {
	logger   *slog.Logger
	now      func() time.Time
	rules    atomic.Pointer[Rules]
	shards   [numShards]shard
	tracked  atomic.Int64 // inputs tracked, single and merged
	tickets  tickets
	metadata sync.Map // metric family name → Kind, from remote-write metadata
	// flushMu serializes flushes: emissions must reach the downstream in
	// the order their timestamps were chosen.
	flushMu sync.Mutex

	metrics metrics
}

type metrics struct {
	mergedSeries   prometheus.Gauge
	mergeInputs    prometheus.Gauge
	trackedInputs  prometheus.Gauge
	collisions     prometheus.Counter
	untracked      prometheus.Counter
	emitted        prometheus.Counter
	flushes        *prometheus.CounterVec
	histogramError prometheus.Counter
}

type shard struct {
	mu      sync.Mutex
	outputs map[uint64]*output
	_       [40]byte // keep shards on separate cache lines
}

// New returns a Merger. Call Run to emit merged outputs.
func New(opts Options) *Merger {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Merger{logger: opts.Logger, now: opts.Now}
	m.SetRules(opts.Rules)
	for i := range m.shards {
		m.shards[i].outputs = map[uint64]*output{}
	}
	m.tickets.active = map[uint64]struct{}{}
	f := promauto.With(opts.Registerer)
	m.metrics = metrics{
		mergedSeries: f.NewGauge(prometheus.GaugeOpts{
			Name: "cardinal_merged_series",
			Help: "Output series currently fed by more than one input series and emitted merged.",
		}),
		mergeInputs: f.NewGauge(prometheus.GaugeOpts{
			Name: "cardinal_merge_inputs",
			Help: "Input series currently feeding merged output series.",
		}),
		trackedInputs: f.NewGauge(prometheus.GaugeOpts{
			Name: "cardinal_merge_tracked_inputs",
			Help: "Input series the merger tracks (ceiling: merge.max_inputs).",
		}),
		collisions: f.NewCounter(prometheus.CounterOpts{
			Name: "cardinal_collisions_total",
			Help: "Input series that joined an output series already fed by another input.",
		}),
		untracked: f.NewCounter(prometheus.CounterOpts{
			Name: "cardinal_merge_untracked_samples_total",
			Help: "Samples of new series passed through without collision tracking because merge.max_inputs was reached.",
		}),
		emitted: f.NewCounter(prometheus.CounterOpts{
			Name: "cardinal_merge_emitted_samples_total",
			Help: "Merged samples emitted downstream.",
		}),
		flushes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardinal_merge_flushes_total",
			Help: "Flushes of merged outputs, by result.",
		}, []string{"result"}),
		histogramError: f.NewCounter(prometheus.CounterOpts{
			Name: "cardinal_merge_histogram_errors_total",
			Help: "Native histogram samples that could not be merged (incompatible custom buckets, corrupt data).",
		}),
	}
	return m
}

// SetRules swaps the rules in force; state is kept.
func (m *Merger) SetRules(r Rules) {
	if r.Staleness <= 0 {
		r.Staleness = 10 * time.Minute
	}
	if r.FlushInterval <= 0 {
		r.FlushInterval = 10 * time.Second
	}
	m.rules.Store(&r)
}

// ObserveMetadata records the metric types a sender announced, so that
// merging can tell counters from gauges without relying on name suffixes.
func (m *Merger) ObserveMetadata(md []wire.Metadata) {
	for i := range md {
		var k Kind
		switch md[i].Type {
		case 1, 3, 5: // COUNTER, HISTOGRAM, SUMMARY
			k = Counter
		case 2, 4: // GAUGE, GAUGEHISTOGRAM
			k = Gauge
		default:
			continue
		}
		name := string(md[i].FamilyName)
		if old, ok := m.metadata.Load(name); !ok || old.(Kind) != k {
			m.metadata.Store(name, k)
		}
	}
}

// tickets identify the requests in flight, so that a newly merged output is
// not emitted before every request that may carry a pass-through sample of
// it has been forwarded.
type tickets struct {
	mu     sync.Mutex
	seq    uint64
	active map[uint64]struct{}
}

// Ticket is a request's registration with the Merger.
type Ticket uint64

// Begin registers a request; End must follow after its forward finished.
func (m *Merger) Begin() Ticket {
	t := &m.tickets
	t.mu.Lock()
	t.seq++
	seq := t.seq
	t.active[seq] = struct{}{}
	t.mu.Unlock()
	return Ticket(seq)
}

// End ends a request's registration.
func (m *Merger) End(tk Ticket) {
	t := &m.tickets
	t.mu.Lock()
	delete(t.active, uint64(tk))
	t.mu.Unlock()
}

// issued returns the last ticket handed out.
func (t *tickets) issued() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.seq
}

// oldestActive returns the oldest ticket in flight, or the next one to be
// issued when none is.
func (t *tickets) oldestActive() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	oldest := t.seq + 1
	for s := range t.active {
		oldest = min(oldest, s)
	}
	return oldest
}
