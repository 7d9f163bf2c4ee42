package merge

import (
	"math"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/wire"
)

// output is what the Merger knows of one output label set.
type output struct {
	// input is the hash of the one input feeding the output while m is nil.
	input uint64
	// seen is the wall-clock time (ms) of the last sample routed here.
	seen int64
	// passTs is the largest timestamp passed through downstream.
	passTs int64
	// last float sample of the single input, to seed its state when the
	// output becomes merged.
	lastVal float64
	lastTs  int64
	hasLast bool

	m *merged
}

// merged is the state of an output fed by several inputs.
type merged struct {
	// enc holds the output's labels, encoded (wire.AppendEncodedLabels):
	// half the memory of a []wire.Label copy, and the encoder copies it
	// as it is. nil until the labels are known (a restored output).
	enc       []byte
	collapsed []string // label names relabeling removed or rewrote, sorted
	kind      Kind
	policy    Policy
	// since is the last request ticket issued when the output became
	// merged; it is first emitted once all requests up to it have ended.
	since uint64

	inputs   map[uint64]*input
	base     float64                   // counters: what expired inputs contributed
	baseHist *histogram.FloatHistogram // native histograms: the same
	lastEmit int64
	dirty    bool
	exemplar *wire.Exemplar // owned copy, emitted once
}

// input is one input series of a merged output.
type input struct {
	seen   int64 // wall-clock ms of the last sample
	ts     int64 // timestamp of the last float sample
	val    float64
	offset float64 // sum of values before resets
	has    bool
	// stale: the last float sample was a stale marker. The input leaves
	// gauge aggregates but keeps its counter state until it expires, because
	// a target that missed one scrape comes back with the same cumulative
	// value, which must add nothing.
	stale bool
	// pending: the input fed the output before it was merged, and its
	// value is not known yet (a native histogram passed through). The
	// output is not emitted until it reports, lest it dip and look reset.
	pending bool

	histTs     int64
	hist       *histogram.FloatHistogram
	histOffset *histogram.FloatHistogram
	histStale  bool
}

// Decision says what happened to a routed series.
type Decision uint8

// Decisions of Route.
const (
	// Pass: forward the series unchanged, now.
	Pass Decision = iota
	// Absorbed: the merger took the samples; remove the series from the
	// request.
	Absorbed
	// Dropped: the samples could not be tracked (max_inputs reached on a
	// merged output); remove the series and count it.
	Dropped
)

// Route decides for one series after relabeling. in and out are the hashes
// of its labels before and after relabeling; orig are the labels before
// relabeling (read only when an output becomes merged, to name the labels
// that collapsed it). nowMs is the wall-clock time of the request. With
// forceMerge the output is merged from its first input on and never passes
// through: the limiter's overflow series, which only ever carry merged
// values and flush timestamps.
//
// For an output already known to have a single input, Route allocates
// nothing.
func (m *Merger) Route(tk Ticket, in, out uint64, orig []wire.Label, s *wire.Series, nowMs int64, forceMerge bool) Decision {
	sh := &m.shards[out%numShards]
	sh.mu.Lock()
	o := sh.outputs[out]
	if o == nil {
		// Slow path: a series never seen.
		if m.full() {
			sh.mu.Unlock()
			if forceMerge {
				return Dropped
			}
			m.metrics.untracked.Add(float64(len(s.Samples) + len(s.Histograms)))
			return Pass
		}
		o = &output{input: in, seen: nowMs}
		sh.outputs[out] = o
		if forceMerge {
			o.m = m.newMerged(s.Labels, o.passTs)
		} else {
			m.tracked.Add(1)
		}
	}
	if o.m == nil {
		if o.input == in && !forceMerge {
			// Fast path: the single input of its output.
			o.pass(s, nowMs)
			sh.mu.Unlock()
			return Pass
		}
		// Slow path: a second input collapses into the output.
		if m.full() {
			sh.mu.Unlock()
			return Dropped
		}
		m.startMerging(o, orig, s.Labels)
	}
	mg := o.m
	if mg.enc == nil {
		// An output restored from the state file meets its first input.
		mg.learn(m, s.Labels)
	}
	ip := mg.inputs[in]
	if ip == nil {
		if m.full() {
			sh.mu.Unlock()
			return Dropped
		}
		if len(mg.inputs) > 0 {
			m.metrics.collisions.Inc()
		}
		ip = &input{}
		mg.inputs[in] = ip
		m.tracked.Add(1)
		m.metrics.mergeInputs.Inc()
		mg.noteCollapsed(orig, s.Labels)
	}
	o.seen = nowMs
	m.absorb(mg, ip, s, nowMs)
	sh.mu.Unlock()
	return Absorbed
}

// RouteKnown absorbs the samples of s if input in is already a known input
// of the merged output out, and reports whether it was. It never creates
// state, so s.Labels need not be the output's labels: the gateway's route
// cache calls it before relabeling, and relabels only when it returns false.
func (m *Merger) RouteKnown(in, out uint64, s *wire.Series, nowMs int64) bool {
	sh := &m.shards[out%numShards]
	sh.mu.Lock()
	o := sh.outputs[out]
	if o == nil || o.m == nil || o.m.enc == nil {
		sh.mu.Unlock()
		return false
	}
	ip := o.m.inputs[in]
	if ip == nil {
		sh.mu.Unlock()
		return false
	}
	o.seen = nowMs
	m.absorb(o.m, ip, s, nowMs)
	sh.mu.Unlock()
	return true
}

func (m *Merger) full() bool {
	return m.tracked.Load() >= int64(m.rules.Load().MaxInputs)
}

// pass records a pass-through series.
func (o *output) pass(s *wire.Series, nowMs int64) {
	o.seen = nowMs
	for _, smp := range s.Samples {
		o.passTs = max(o.passTs, smp.Timestamp)
		if smp.Timestamp >= o.lastTs && !math.IsNaN(smp.Value) {
			o.lastVal, o.lastTs, o.hasLast = smp.Value, smp.Timestamp, true
		}
	}
	for _, h := range s.Histograms {
		o.passTs = max(o.passTs, h.Timestamp)
	}
}

// newMerged returns the state of a merged output with labels out (nil for
// an output restored from the state file, whose labels come with its first
// input). Nothing it emits may be at or before lastEmit.
func (m *Merger) newMerged(out []wire.Label, lastEmit int64) *merged {
	mg := &merged{
		since:    m.tickets.issued(),
		inputs:   make(map[uint64]*input, 4),
		lastEmit: lastEmit,
	}
	if out != nil {
		mg.learn(m, out)
	}
	m.metrics.mergedSeries.Inc()
	return mg
}

// learn takes the output's labels and what follows from them.
func (mg *merged) learn(m *Merger, out []wire.Label) {
	mg.enc = wire.AppendEncodedLabels(make([]byte, 0, encodedSize(out)), out)
	name := string(wire.GetLabel(out, "__name__"))
	mg.kind = m.kindOf(name)
	mg.policy = m.policyOf(name)
}

// startMerging turns a single-input output into a merged one. The single
// input keeps contributing its last known value.
func (m *Merger) startMerging(o *output, orig, out []wire.Label) {
	// Nothing of the output's values has been emitted by the merger; the
	// first emission must come after what passed through.
	mg := m.newMerged(out, o.passTs)
	first := &input{seen: o.seen}
	if o.hasLast {
		first.ts, first.val, first.has = o.lastTs, o.lastVal, true
		mg.dirty = true
	} else {
		first.pending = true
	}
	mg.inputs[o.input] = first
	m.metrics.mergeInputs.Inc()
	mg.noteCollapsed(orig, out)
	o.m = mg
}

// absorb takes the samples of one input series into a merged output.
func (m *Merger) absorb(mg *merged, ip *input, s *wire.Series, nowMs int64) {
	ip.seen = nowMs
	ip.pending = false
	for _, smp := range s.Samples {
		if (ip.has || ip.stale) && smp.Timestamp <= ip.ts {
			continue // already seen: a sender retry, or out of order
		}
		if value.IsStaleNaN(smp.Value) {
			// The input disappeared from its target, perhaps for one
			// failed scrape only; see input.stale.
			ip.stale, ip.ts = true, smp.Timestamp
			mg.dirty = true
			continue
		}
		if math.IsNaN(smp.Value) {
			continue
		}
		if mg.kind == Counter && ip.has && smp.Value < ip.val {
			ip.offset += ip.val // reset of this input only
		}
		ip.val, ip.ts, ip.has, ip.stale = smp.Value, smp.Timestamp, true, false
		mg.dirty = true
	}
	for _, h := range s.Histograms {
		if (ip.hist != nil || ip.histStale) && h.Timestamp <= ip.histTs {
			continue
		}
		fh, err := decodeHistogram(h.Data)
		if err != nil {
			m.metrics.histogramError.Inc()
			continue
		}
		if value.IsStaleNaN(fh.Sum) {
			ip.histStale, ip.histTs = true, h.Timestamp
			mg.dirty = true
			continue
		}
		if fh.CounterResetHint != histogram.GaugeType && ip.hist != nil && fh.DetectReset(ip.hist) {
			if ip.histOffset == nil {
				ip.histOffset = ip.hist
			} else if _, _, _, err := ip.histOffset.Add(ip.hist); err != nil {
				m.metrics.histogramError.Inc()
			}
		}
		ip.hist, ip.histTs, ip.histStale = fh, h.Timestamp, false
		mg.dirty = true
	}
	for i := range s.Exemplars {
		if mg.exemplar == nil || s.Exemplars[i].Timestamp > mg.exemplar.Timestamp {
			mg.exemplar = cloneExemplar(&s.Exemplars[i])
		}
	}
}

// retire ends an expired input: for counters its contribution moves into
// the base, for gauges it simply leaves the aggregate.
func (m *Merger) retire(mg *merged, ip *input) {
	if mg.kind == Counter && ip.has {
		mg.base += ip.offset + ip.val
	}
	if ip.hist != nil && ip.hist.CounterResetHint != histogram.GaugeType {
		contribution := ip.hist
		if ip.histOffset != nil {
			if _, _, _, err := ip.histOffset.Add(ip.hist); err == nil {
				contribution = ip.histOffset
			}
		}
		if mg.baseHist == nil {
			mg.baseHist = contribution.Copy()
		} else if _, _, _, err := mg.baseHist.Add(contribution); err != nil {
			m.metrics.histogramError.Inc()
		}
	}
	*ip = input{seen: ip.seen}
	mg.dirty = true
}

func decodeHistogram(data []byte) (*histogram.FloatHistogram, error) {
	var h prompb.Histogram
	if err := h.Unmarshal(data); err != nil {
		return nil, err
	}
	if h.IsFloatHistogram() {
		return h.ToFloatHistogram(), nil
	}
	return h.ToIntHistogram().ToFloat(nil), nil
}

// kindOf decides whether a metric is a counter: config first, then the
// sender's metadata, then Prometheus naming conventions.
func (m *Merger) kindOf(name string) Kind {
	for _, r := range m.rules.Load().Types {
		if r.Match.MatchString(name) {
			return r.Kind
		}
	}
	family := name
	for _, suffix := range []string{"_bucket", "_count", "_sum", "_total"} {
		if f, ok := strings.CutSuffix(name, suffix); ok {
			family = f
			break
		}
	}
	for _, n := range []string{name, family} {
		if k, ok := m.metadata.Load(n); ok {
			return k.(Kind)
		}
	}
	if family != name {
		return Counter
	}
	return Gauge
}

func (m *Merger) policyOf(name string) Policy {
	for _, r := range m.rules.Load().Gauges {
		if r.Match.MatchString(name) {
			return r.Policy
		}
	}
	return Sum
}

// noteCollapsed adds the names of labels that relabeling removed or
// rewrote.
func (mg *merged) noteCollapsed(orig, out []wire.Label) {
	for _, l := range orig {
		v := wire.GetLabel(out, string(l.Name))
		if v != nil && string(v) == string(l.Value) {
			continue
		}
		if _, found := slices.BinarySearch(mg.collapsed, string(l.Name)); !found {
			mg.collapsed = append(mg.collapsed, string(l.Name))
			slices.Sort(mg.collapsed)
		}
	}
}

func encodedSize(ls []wire.Label) int {
	n := 0
	for _, l := range ls {
		n += len(l.Name) + len(l.Value) + 8
	}
	return n
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

func cloneExemplar(e *wire.Exemplar) *wire.Exemplar {
	return &wire.Exemplar{Labels: cloneLabels(e.Labels), Value: e.Value, Timestamp: e.Timestamp}
}

func labelsString(ls []wire.Label) string {
	var sb strings.Builder
	sb.WriteByte('{')
	for i, l := range ls {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.Write(l.Name)
		sb.WriteString(`="`)
		sb.Write(l.Value)
		sb.WriteByte('"')
	}
	sb.WriteByte('}')
	return sb.String()
}
