// Package merge detects input series that relabeling collapses into one
// output series and merges them, so that the downstream gets one correct
// series instead of conflicting samples.
//
// An output fed by one input passes through unchanged. Once a second input
// appears, the output is merged: its inputs' samples are absorbed in memory
// and the merged value is emitted by Run, through the same delivery path as
// pass-through data (a Deliverer, normally the forward package):
//
//   - counters are the sum of their inputs' cumulative values, with per-input
//     reset handling; an input that stops keeps contributing its last value,
//     and one that comes back within Rules.ForgetAfter continues from it;
//   - gauges combine their fresh inputs by policy (sum by default);
//   - summary quantiles combine their fresh inputs by policy (max by default:
//     an upper bound of the pooled quantile; quantiles cannot be summed);
//   - native histograms are added with Prometheus' FloatHistogram arithmetic.
//
// Delivery is at least once: an output's value stays pending until a batch
// carrying it has been acknowledged, across as many flushes as it takes.
// Emissions carry data timestamps (the newest sample absorbed, never more than
// Rules.MaxAhead ahead of the wall clock), strictly increasing per output, and
// a sender catching up a backlog gets about one point per flush interval of
// data time rather than one spike.
//
// Routing a sample of a known input allocates nothing.
package merge

import (
	"bytes"
	"fmt"
	"github.com/cardinal-gateway/cardinal/internal/u64table"
	"log/slog"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/model/histogram"

	"github.com/cardinal-gateway/cardinal/internal/bytesconv"
	"github.com/cardinal-gateway/cardinal/internal/rematch"
	"github.com/cardinal-gateway/cardinal/wire"
)

// Kind is how a metric's values combine.
type Kind uint8

// Kinds.
const (
	Gauge Kind = iota
	Counter
	// Quantile is a summary's quantile series (label quantile, no _sum or
	// _count suffix): combined like a gauge, by its own policy.
	Quantile
)

func (k Kind) String() string {
	switch k {
	case Counter:
		return "counter"
	case Quantile:
		return "quantile"
	}
	return "gauge"
}

// Policy combines the values of a merged gauge or quantile.
type Policy uint8

// Policies.
const (
	Sum Policy = iota
	Max
	Min
	Last
)

func (p Policy) String() string {
	switch p {
	case Max:
		return "max"
	case Min:
		return "min"
	case Last:
		return "last"
	}
	return "sum"
}

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
	return 0, fmt.Errorf("unknown policy %q (want sum, max, min or last)", s)
}

// GaugeRule picks the policy of the gauges (or quantiles) whose metric name
// matches.
type GaugeRule struct {
	Match  *rematch.Matcher // fully anchored
	Policy Policy
}

// TypeRule forces the kind of the metrics whose name matches, overriding
// name suffixes and metadata.
type TypeRule struct {
	Match *rematch.Matcher // fully anchored
	Kind  Kind
}

// Defaults of Rules, applied by SetRules to zero fields.
const (
	DefaultStaleness         = 10 * time.Minute
	DefaultFlushInterval     = 15 * time.Second
	DefaultForgetAfter       = time.Hour
	DefaultMaxRetired        = 1_000_000
	DefaultMaxSamplesPerSend = 2000
	DefaultMaxBytesPerSend   = 4 << 20
	DefaultMaxAhead          = time.Minute
	// DefaultMaxPendingPoints bounds the points queued for delivery over all
	// outputs (a downstream outage, a sender catching up): past it, an
	// output's newest point replaces its last queued one, which costs
	// resolution, never totals.
	DefaultMaxPendingPoints = 1_000_000
	// maxPointsPerOutput bounds one output's queue the same way.
	maxPointsPerOutput = 64
)

// Rules are the settings that a config reload may change.
type Rules struct {
	// Staleness: an input without a sample for this long leaves gauge
	// aggregates and stops being live; a counter input is then retired.
	Staleness time.Duration
	// ForgetAfter: a retired counter input is remembered this long (at least
	// Staleness), so that if it comes back it continues from its last value
	// instead of counting its whole value again. Its contribution to the
	// output stays either way.
	ForgetAfter time.Duration
	// MaxInputs caps the number of live tracked input series; past it new
	// series are dropped (Dropped), never forwarded unmerged.
	MaxInputs int
	// MaxRetired caps the number of retired inputs remembered; past it an
	// input is forgotten when it retires.
	MaxRetired int
	// FlushInterval is how often merged outputs are emitted, and the data
	// time one emitted point stands for when a sender catches up.
	FlushInterval time.Duration
	// MaxSamplesPerSend and MaxBytesPerSend bound one batch of emissions
	// (bytes of the encoded, uncompressed request).
	MaxSamplesPerSend int
	MaxBytesPerSend   int
	// MaxAhead is how far ahead of the wall clock an emission may be
	// stamped; later sender timestamps are clamped to it and counted.
	MaxAhead time.Duration
	// MaxPendingPoints bounds the points queued for delivery.
	MaxPendingPoints int
	Gauges           []GaugeRule
	// Quantiles pick the policy of summary quantile series by metric name;
	// max applies to the rest.
	Quantiles []GaugeRule
	Types     []TypeRule
	// StateFile, if set, keeps the set of merged outputs across restarts
	// (see SaveState).
	StateFile string
}

func (r *Rules) withDefaults() {
	if r.Staleness <= 0 {
		r.Staleness = DefaultStaleness
	}
	if r.ForgetAfter <= 0 {
		r.ForgetAfter = DefaultForgetAfter
	}
	r.ForgetAfter = max(r.ForgetAfter, r.Staleness)
	if r.MaxRetired <= 0 {
		r.MaxRetired = DefaultMaxRetired
	}
	if r.FlushInterval <= 0 {
		r.FlushInterval = DefaultFlushInterval
	}
	if r.MaxSamplesPerSend <= 0 {
		r.MaxSamplesPerSend = DefaultMaxSamplesPerSend
	}
	if r.MaxBytesPerSend <= 0 {
		r.MaxBytesPerSend = DefaultMaxBytesPerSend
	}
	if r.MaxAhead <= 0 {
		r.MaxAhead = DefaultMaxAhead
	}
	if r.MaxPendingPoints <= 0 {
		r.MaxPendingPoints = DefaultMaxPendingPoints
	}
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
	logger  *slog.Logger
	now     func() time.Time
	rules   atomic.Pointer[Rules]
	shards  [numShards]shard
	tracked atomic.Int64 // live inputs, single and merged
	merged  atomic.Int64 // merged outputs
	retired atomic.Int64 // retired inputs remembered
	pending atomic.Int64 // points queued for delivery
	tickets tickets
	// nameSets holds the outputs' collapsed label names.
	nameSets nameSets
	// metadata maps a metric family name to what remote-write metadata
	// said of it.
	metaMu   sync.RWMutex
	metadata map[string]familyMeta
	// flushMu serializes flushes: emissions must reach the downstream in
	// the order their timestamps were chosen.
	flushMu sync.Mutex
	flusher flusher // guarded by flushMu
	// stopping is set when Run's context ends: a regular flush stops
	// between batches and leaves the rest to the final one.
	stopping atomic.Bool
	// failing: the last flush could not deliver (see DeliveryFailing).
	failing atomic.Bool
	// epoch (wall-clock ms) is where the estimates' half-window starts:
	// a series last seen before it is reported NewInEpoch (SetEpoch).
	epoch atomic.Int64
	// floor: no merged output created now emits at or before it
	// (RaiseFloor).
	floor atomic.Int64

	rejectLog logLimiter

	metrics metrics
}

type metrics struct {
	mergedSeries   prometheus.Gauge
	mergeInputs    prometheus.Gauge
	trackedInputs  prometheus.Gauge
	retiredInputs  prometheus.Gauge
	pendingSamples prometheus.Gauge
	collisions     prometheus.Counter
	emitted        prometheus.Counter
	flushes        *prometheus.CounterVec
	histogramError prometheus.Counter
	rejected       *prometheus.CounterVec
	future         prometheus.Counter
	forgotten      *prometheus.CounterVec
	staleMarkers   prometheus.Counter
	revived        prometheus.Counter
}

type shard struct {
	mu      sync.Mutex
	outputs outputTable
	// spareHist is where the next native histogram sample of this shard is
	// decoded; see absorb.
	spareHist *histogram.FloatHistogram
	_         [40]byte // keep shards on separate cache lines (128 bytes)
}

// outputTable maps output hashes to outputs. An open-addressing table
// (internal/u64table) takes 16-byte slots, probed from one cache line,
// where a Go map's lookups were the merger's largest cost on traffic that
// passes through.
type outputTable struct {
	t u64table.Table[*output]
}

func (ot *outputTable) get(k uint64) *output {
	if p := ot.t.Ptr(k); p != nil {
		return *p
	}
	return nil
}

func (ot *outputTable) put(k uint64, o *output) { ot.t.Put(k, o) }

func (ot *outputTable) del(k uint64) { ot.t.Delete(k) }

// each calls f for every output; f must not add or remove outputs.
func (ot *outputTable) each(f func(k uint64, o *output)) {
	ot.t.Range(func(k uint64, o *output) bool {
		f(k, o)
		return true
	})
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
	m := &Merger{logger: opts.Logger, now: opts.Now, metadata: map[string]familyMeta{}}
	m.rejectLog.interval = 10 * time.Second
	m.SetRules(opts.Rules)
	f := promauto.With(opts.Registerer)
	m.metrics = metrics{
		mergedSeries: f.NewGauge(prometheus.GaugeOpts{
			Name: "cardinal_merged_series",
			Help: "Output series currently fed by more than one input series and emitted merged.",
		}),
		mergeInputs: f.NewGauge(prometheus.GaugeOpts{
			Name: "cardinal_merge_inputs",
			Help: "Live input series currently feeding merged output series.",
		}),
		trackedInputs: f.NewGauge(prometheus.GaugeOpts{
			Name: "cardinal_merge_tracked_inputs",
			Help: "Live input series the merger tracks (ceiling: merge.max_inputs).",
		}),
		retiredInputs: f.NewGauge(prometheus.GaugeOpts{
			Name: "cardinal_merge_retired_inputs",
			Help: "Counter inputs without recent samples that the merger remembers, so that they continue where they stopped if they come back (ceiling: merge.max_retired_inputs).",
		}),
		pendingSamples: f.NewGauge(prometheus.GaugeOpts{
			Name: "cardinal_merge_pending_samples",
			Help: "Merged samples waiting for the downstream to acknowledge them.",
		}),
		collisions: f.NewCounter(prometheus.CounterOpts{
			Name: "cardinal_collisions_total",
			Help: "Input series that joined an output series already fed by another input.",
		}),
		emitted: f.NewCounter(prometheus.CounterOpts{
			Name: "cardinal_merge_emitted_samples_total",
			Help: "Merged samples the downstream acknowledged.",
		}),
		flushes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardinal_merge_flushes_total",
			Help: "Flushes of merged outputs, by result: success (everything pending was delivered or rejected), failure (the downstream could not take it; it stays pending).",
		}, []string{"result"}),
		histogramError: f.NewCounter(prometheus.CounterOpts{
			Name: "cardinal_merge_histogram_errors_total",
			Help: "Native histogram samples that could not be merged with the others of their output (exponential and custom buckets mixed); they are skipped.",
		}),
		rejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardinal_merge_rejected_samples_total",
			Help: "Merged samples the downstream refused on their own (isolated by splitting the batch), by reason.",
		}, []string{"reason"}),
		future: f.NewCounter(prometheus.CounterOpts{
			Name: "cardinal_merge_future_samples_total",
			Help: "Samples absorbed into merged outputs whose timestamp was more than merge.max_ahead ahead of the wall clock; their emission time is clamped.",
		}),
		forgotten: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardinal_merge_forgotten_inputs_total",
			Help: "Retired counter inputs forgotten, by reason: age (merge.forget_after passed) or capacity (merge.max_retired_inputs reached). Their contribution stays in the output; if one comes back it counts from zero.",
		}, []string{"reason"}),
		staleMarkers: f.NewCounter(prometheus.CounterOpts{
			Name: "cardinal_merge_stale_markers_total",
			Help: "Stale markers emitted for merged outputs whose inputs have all ended.",
		}),
		revived: f.NewCounter(prometheus.CounterOpts{
			Name: "cardinal_merge_revived_inputs_total",
			Help: "Retired counter inputs that came back and continued from their last value.",
		}),
	}
	return m
}

// SetRules swaps the rules in force; state is kept.
func (m *Merger) SetRules(r Rules) {
	r.withDefaults()
	m.rules.Store(&r)
}

// DeliveryFailing reports whether the last flush could not deliver what
// was queued: merged samples absorbed now are held in memory only, and the
// gateway tells their senders to retry rather than acknowledge them.
func (m *Merger) DeliveryFailing() bool { return m.failing.Load() }

// NoteDelivery records the outcome of a delivery to the same downstream
// outside the merger (pass-through data, the readiness probe): a failing
// downstream is known before the next flush finds it.
func (m *Merger) NoteDelivery(ok bool) { m.failing.Store(!ok) }

// HasMerged reports whether the merger holds any merged output: then every
// series must be routed, even under rules that cannot collapse any.
func (m *Merger) HasMerged() bool { return m.merged.Load() > 0 }

// Rules returns the rules in force, with defaults applied.
func (m *Merger) Rules() Rules { return *m.rules.Load() }

// Remote-write metadata types (prometheus.MetricMetadata.MetricType).
const (
	typeCounter        = 1
	typeGauge          = 2
	typeHistogram      = 3
	typeGaugeHistogram = 4
	typeSummary        = 5
)

// familyMeta is what a sender announced for a metric family.
type familyMeta struct {
	typ        int32
	help, unit string
}

func (f *familyMeta) same(md *wire.Metadata) bool {
	return f.typ == md.Type && f.help == bytesconv.String(md.Help) && f.unit == bytesconv.String(md.Unit)
}

// ObserveMetadata records the metric types a sender announced, so that
// merging can tell counters from gauges and quantiles without relying on
// name suffixes, and so that series sent on as remote write 2.0 carry their
// family's metadata (see LookupMetadata).
func (m *Merger) ObserveMetadata(md []wire.Metadata) {
	for i := range md {
		if md[i].Type == 0 && len(md[i].Help) == 0 && len(md[i].Unit) == 0 {
			continue
		}
		// Fast path: a family already known as it is; no string is built
		// for the lookup.
		m.metaMu.RLock()
		old, ok := m.metadata[bytesconv.String(md[i].FamilyName)]
		m.metaMu.RUnlock()
		if ok && old.same(&md[i]) {
			continue
		}
		m.metaMu.Lock()
		// A sender cannot grow the table without bound: past the ceiling
		// new families fall back to name conventions.
		if ok || len(m.metadata) < maxMetadataFamilies {
			m.metadata[string(md[i].FamilyName)] = familyMeta{typ: md[i].Type, help: string(md[i].Help), unit: string(md[i].Unit)}
		}
		m.metaMu.Unlock()
	}
}

// maxMetadataFamilies bounds the metadata table.
const maxMetadataFamilies = 100_000

// metricType returns the type the sender announced for a family, or 0.
// Only types that merging understands count.
func (m *Merger) metricType(family []byte) int32 {
	m.metaMu.RLock()
	defer m.metaMu.RUnlock()
	if t := m.metadata[bytesconv.String(family)].typ; t >= typeCounter && t <= typeSummary {
		return t
	}
	return 0
}

// LookupMetadata returns the metadata announced for the family of the
// series called name: its exact name first, then the name without a
// histogram's or summary's suffix. It implements wire.MetadataSource.
func (m *Merger) LookupMetadata(name []byte) wire.SeriesMetadata {
	m.metaMu.RLock()
	defer m.metaMu.RUnlock()
	f, ok := m.metadata[bytesconv.String(name)]
	if !ok {
		for _, sfx := range [...]string{"_bucket", "_count", "_sum"} {
			if bytes.HasSuffix(name, []byte(sfx)) {
				f, ok = m.metadata[bytesconv.String(name[:len(name)-len(sfx)])]
				if ok && f.typ != typeHistogram && f.typ != typeGaugeHistogram && f.typ != typeSummary {
					ok = false
				}
				break
			}
		}
	}
	if !ok {
		return wire.SeriesMetadata{}
	}
	// The strings are immutable: their bytes may be aliased.
	return wire.SeriesMetadata{Type: f.typ, Help: bytesconv.Bytes(f.help), Unit: bytesconv.Bytes(f.unit)}
}

// tickets identify the requests in flight, so that a newly merged output is
// not emitted before every request that may carry a pass-through sample of
// it has been forwarded.
//
// Every request takes one and gives it back, so there is no lock: a
// request claims a free slot and writes its ticket there. Only a flush
// reads all slots. More requests in flight than slots (admission normally
// keeps them far fewer) fall back to a locked table.
type tickets struct {
	seq   atomic.Uint64
	slots [ticketSlots]ticketSlot
	// overflow holds the tickets that found no free slot.
	mu       sync.Mutex
	overflow map[uint64]struct{}
}

// ticketSlot is on a cache line of its own: requests on different cores
// never write the same line.
type ticketSlot struct {
	v atomic.Uint64 // the ticket, claiming while it is taken, 0 when free
	_ [56]byte
}

const (
	ticketSlots = 256
	claiming    = math.MaxUint64 // a slot taken whose ticket is being issued
)

// Ticket is a request's registration with the Merger.
type Ticket struct {
	seq  uint64
	slot int32 // -1: in the overflow table
}

// Begin registers a request; End must follow after its forward finished.
func (m *Merger) Begin() Ticket {
	t := &m.tickets
	// Claim a slot before drawing the ticket: a flush that reads the
	// counter and then the slots either sees the claim or draws a lower
	// bound that covers the ticket (see oldestActive).
	start := int(t.seq.Load() % ticketSlots)
	for i := range ticketSlots {
		j := (start + i) % ticketSlots
		sl := &t.slots[j].v
		if sl.Load() == 0 && sl.CompareAndSwap(0, claiming) {
			seq := t.seq.Add(1)
			sl.Store(seq)
			return Ticket{seq: seq, slot: int32(j)}
		}
	}
	t.mu.Lock()
	seq := t.seq.Add(1)
	if t.overflow == nil {
		t.overflow = map[uint64]struct{}{}
	}
	t.overflow[seq] = struct{}{}
	t.mu.Unlock()
	return Ticket{seq: seq, slot: -1}
}

// End ends a request's registration.
func (m *Merger) End(tk Ticket) {
	t := &m.tickets
	if tk.slot >= 0 {
		t.slots[tk.slot].v.Store(0)
		return
	}
	t.mu.Lock()
	delete(t.overflow, tk.seq)
	t.mu.Unlock()
}

// issued returns the last ticket handed out.
func (t *tickets) issued() uint64 { return t.seq.Load() }

// oldestActive returns the oldest ticket in flight, or the next one to be
// issued when none is.
//
// The counter is read first. A request that registers during the scan
// either claimed its slot before the scan reached it (and the scan waits
// for its ticket) or draws a ticket above the counter read, which the
// result already excludes from "ended".
func (t *tickets) oldestActive() uint64 {
	oldest := t.seq.Load() + 1
	for i := range t.slots {
		v := t.slots[i].v.Load()
		for v == claiming {
			runtime.Gosched() // a ticket is being drawn: a few nanoseconds
			v = t.slots[i].v.Load()
		}
		if v != 0 {
			oldest = min(oldest, v)
		}
	}
	t.mu.Lock()
	for s := range t.overflow {
		oldest = min(oldest, s)
	}
	t.mu.Unlock()
	return oldest
}

// logLimiter lets one log line through per interval and counts the rest.
type logLimiter struct {
	mu         sync.Mutex
	interval   time.Duration
	last       time.Time
	suppressed int
}

func (l *logLimiter) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < l.interval {
		l.suppressed++
		return false, 0
	}
	l.last, suppressed, l.suppressed = now, l.suppressed, 0
	return true, suppressed
}
