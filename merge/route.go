package merge

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"

	"github.com/cardinal-gateway/cardinal/internal/bytesconv"
	"github.com/cardinal-gateway/cardinal/wire"
)

// output is what the Merger knows of one output label set.
type output struct {
	// input is the hash of the one input feeding the output while m is nil.
	input uint64
	// seen is the wall-clock time (ms) of the last sample routed here.
	seen int64
	// passTs is the largest timestamp passed through downstream (clamped
	// to MaxAhead): merged emissions must come after it.
	passTs int64
	// last float sample of the single input, to seed its state when the
	// output becomes merged; lastTs is noSample before the first. (A flag
	// would round the struct up to the next size class.)
	lastVal float64
	lastTs  int64

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

	inputs inputSet
	// hists holds the native histogram state of the live inputs that sent
	// one (input.hist), by input key: kept aside, it leaves the inputs
	// free of pointers, which the collector then never scans.
	hists map[uint64]*histInput
	// minSeen and minRetired bound from below the inputs' seen and the
	// retired inputs' at, so that a flush skips the scans that cannot
	// expire or forget anything. 0 means unknown: scan.
	minSeen, minRetired int64
	// retired holds counter inputs without a sample for the staleness
	// period: they keep contributing, and continue from their last value if
	// they come back. nil while there are none.
	retired  map[uint64]*retiredInput
	base     float64                   // counters: what forgotten inputs contributed
	baseHist *histogram.FloatHistogram // native histograms: the same

	// Emission. dataTs is the newest (clamped) data timestamp absorbed;
	// while dirty, the value changed since the last point was queued, and
	// windowStart is the data timestamp of the first change. points are
	// queued for delivery and not acknowledged yet, oldest first; lastTs is
	// the timestamp of the newest one queued (or the floor set by what
	// passed through or was emitted before a restart): every new point is
	// later. ended: the newest point is a stale marker.
	dataTs      int64
	windowStart int64
	dirty       bool
	ended       bool
	everQueued  bool
	// movedTo: the guard handed the output over to this one (Handover).
	// closedAt: the guard lifted the mitigation this aggregate served
	// (EndOutput) when this ticket was the last issued: samples of the
	// requests up to it (routed under the lifted mitigation) are dropped,
	// later requests start the outputs handed over to it again.
	movedTo  uint64
	closedAt uint64
	// pendingUntil: the output was restored from a state file saved before
	// a crash, its inputs are pending until they report again or this
	// wall-clock time passes (see LoadState).
	pendingUntil int64
	// scale doubles the data time between points per step, after the
	// queue was thinned (see queue); back to 0 once it drains.
	scale  uint8
	lastTs int64
	// lastV is the newest counter value queued: a counter never goes back
	// below it (a float sum of the same inputs in another order can differ
	// in its last bit, which rate() would read as a reset).
	lastV    float64
	points   []point
	exemplar *ownedExemplar // newest exemplar absorbed, not yet in a point
	spareEx  *ownedExemplar // one delivered point's, for reuse
}

// point is one emission of a merged output: its value at ts.
type point struct {
	ts    int64
	v     float64
	hasV  bool
	stale bool                      // a stale marker: the output ended
	h     *histogram.FloatHistogram // immutable once queued
	ex    *ownedExemplar            // immutable once queued
	// sent: the point is in a batch being delivered, or was in one whose
	// fate is unknown. It is resent exactly as it is (an identical
	// duplicate is harmless) and never replaced.
	sent bool
}

// input is one live input series of a merged output.
type input struct {
	key    uint64 // the hash of the input's labels
	seen   int64  // wall-clock ms of the last sample
	ts     int64  // timestamp of the last float sample (clamped)
	val    float64
	offset float64 // sum of values before resets
	has    bool
	// stale: the last float sample was a stale marker. The input leaves
	// gauge aggregates but keeps its counter state until it retires,
	// because a target that missed one scrape comes back with the same
	// cumulative value, which must add nothing.
	stale bool
	// pending: the input fed the output before it was merged, and its
	// value is not known yet (a native histogram passed through). The
	// output is not emitted until it reports, lest it dip and look reset.
	pending bool
	// hist: the input has native histogram state, in merged.hists (most
	// inputs are floats; see merged.hist).
	hist bool
}

// hist returns the native histogram state of ip, an input of mg, or nil.
func (mg *merged) hist(ip *input) *histInput {
	if !ip.hist {
		return nil
	}
	return mg.hists[ip.key]
}

// setHist makes h the native histogram state of ip (nil: none).
func (mg *merged) setHist(ip *input, h *histInput) {
	if h == nil {
		if ip.hist {
			delete(mg.hists, ip.key)
			ip.hist = false
		}
		return
	}
	if mg.hists == nil {
		mg.hists = map[uint64]*histInput{}
	}
	mg.hists[ip.key] = h
	ip.hist = true
}

// clearInputs removes every live input.
func (mg *merged) clearInputs() {
	for mg.inputs.len() > 0 {
		mg.inputs.removeAt(mg.inputs.len() - 1)
	}
	mg.hists = nil
}

// histInput is the native histogram state of an input: the last sample
// (hist, at ts; stale: it was a stale marker) and the sum of the values
// before counter resets (offset).
type histInput struct {
	ts     int64
	hist   *histogram.FloatHistogram
	offset *histogram.FloatHistogram
	stale  bool
}

// histOf returns h's histogram and offset; h may be nil.
func histOf(h *histInput) (hist, offset *histogram.FloatHistogram) {
	if h == nil {
		return nil, nil
	}
	return h.hist, h.offset
}

// retiredInput is the counter state of an input that stopped: what it
// contributes, and what it needs to continue if it comes back.
type retiredInput struct {
	at     int64 // wall-clock ms of its last sample
	ts     int64
	val    float64
	offset float64
	has    bool
	h      *histInput // stale is never set
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
	// Dropped: the samples could not be tracked (merge.max_inputs reached);
	// remove the series and count it. Forwarding it untracked could send
	// the downstream two values for one series and timestamp.
	Dropped
)

// NewInEpoch is a flag Route adds to Pass or Absorbed when the input had
// no sample since the epoch set by SetEpoch (or is new): the gateway then
// observes it for the estimates, once per input and half-window.
// NewOutInEpoch says the same of the output. NewInput is a flag Route adds
// to Absorbed when the input joined its merged output with this sample,
// neither live nor retired there before: its first sighting. Crowded, added
// with NewInput, says the output now has more than CrowdedAt live inputs:
// more than the pods of one workload, as when a label with a fresh value
// per request (a request id) collapsed.
const (
	NewInEpoch    Decision = 0x80
	NewOutInEpoch Decision = 0x40
	NewInput      Decision = 0x20
	Crowded       Decision = 0x10
)

// CrowdedAt is the number of live inputs past which Route reports Crowded.
const CrowdedAt = 64

// Base returns d without its flags.
func (d Decision) Base() Decision { return d &^ (NewInEpoch | NewOutInEpoch | NewInput | Crowded) }

// SetEpoch sets the start (wall-clock ms) of the estimates' half-window;
// 0, the default, never reports NewInEpoch.
func (m *Merger) SetEpoch(ms int64) { m.epoch.Store(ms) }

// newIn reports whether seen (the last sample of an input, 0 for none) is
// before the epoch.
func (m *Merger) newIn(seen int64) Decision {
	if e := m.epoch.Load(); e != 0 && seen < e {
		return NewInEpoch
	}
	return 0
}

// newOut is newIn for the output.
func (m *Merger) newOut(seen int64) Decision {
	if e := m.epoch.Load(); e != 0 && seen < e {
		return NewOutInEpoch
	}
	return 0
}

// Route decides for one series after relabeling. in and out are the hashes
// of its labels before and after relabeling; orig are the labels before
// relabeling (read only when an output becomes merged, to name the labels
// that collapsed it). nowMs is the wall-clock time of the request. With
// forceMerge the output is merged from its first input on and never passes
// through: the limiter's overflow series, which only ever carry merged
// values.
//
// For an output already known to have a single input, Route allocates
// nothing.
func (m *Merger) Route(tk Ticket, in, out uint64, orig []wire.Label, s *wire.Series, nowMs int64, forceMerge bool) Decision {
	sh := &m.shards[out%numShards]
	sh.mu.Lock()
	o := sh.outputs.get(out)
	var first Decision
	if o == nil {
		// Slow path: a series never seen.
		if m.full() {
			sh.mu.Unlock()
			return Dropped
		}
		first = m.newIn(0) | m.newOut(0)
		o = &output{input: in, seen: nowMs, lastTs: noSample}
		sh.outputs.put(out, o)
		if forceMerge {
			o.m = m.newMerged(s.Labels, 0)
		} else {
			m.tracked.Add(1)
		}
	}
	if o.m != nil && o.m.closedAt != 0 && tk.seq <= o.m.closedAt {
		// A request routed under a lifted mitigation: its sample would
		// revive the aggregate after its stale marker. The input's next
		// sample, under the rules in force, carries its value.
		sh.mu.Unlock()
		return Absorbed
	}
	if o.m != nil && o.m.movedTo != 0 {
		// Slow path: handed over by the guard (see Handover).
		to := o.m.movedTo
		sh.mu.Unlock()
		if m.routeMoved(tk, in, to, s, nowMs) {
			return Absorbed
		}
		// The aggregate is gone or closed: the output starts again.
		sh.mu.Lock()
		if cur := sh.outputs.get(out); cur == o {
			// Its stale marker, if still queued, would now come after the
			// samples that start it again: it goes.
			sh.outputs.del(out)
			m.pending.Add(-int64(len(o.m.points)))
			m.metrics.mergedSeries.Dec()
			m.merged.Add(-1)
		}
		sh.mu.Unlock()
		return m.Route(tk, in, out, orig, s, nowMs, forceMerge)
	}
	if o.m == nil {
		if o.input == in && !forceMerge {
			// Fast path: the single input of its output.
			if first == 0 {
				first = m.newIn(o.seen) | m.newOut(o.seen)
			}
			o.pass(s, nowMs, m.rules.Load().MaxAhead.Milliseconds())
			sh.mu.Unlock()
			return Pass | first
		}
		// Slow path: a second input collapses into the output. It takes a
		// slot of its own.
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
	ip := mg.inputs.get(in)
	if ip == nil {
		if m.full() {
			sh.mu.Unlock()
			return Dropped
		}
		first = m.newIn(0)
		fresh, revived := m.revive(mg, in)
		if !revived && mg.inputs.len() > 0 {
			m.metrics.collisions.Inc()
		}
		ip = mg.addInput(fresh)
		if !revived {
			first |= NewInput
			if mg.inputs.len() > CrowdedAt {
				first |= Crowded
			}
		}
		m.tracked.Add(1)
		m.metrics.mergeInputs.Inc()
		mg.noteCollapsed(m, orig, s.Labels)
	} else {
		first |= m.newIn(ip.seen)
	}
	first |= m.newOut(o.seen)
	o.seen = nowMs
	m.absorb(sh, mg, ip, s, nowMs)
	sh.mu.Unlock()
	return Absorbed | first
}

// RouteKnown absorbs the samples of s if input in is already a live input
// of the merged output out, and reports whether it was, with NewInEpoch as
// Route does (Absorbed, or Pass for "not known"). It never creates state, so
// s.Labels need not be the output's labels: the gateway's route cache calls
// it before relabeling, and relabels only when it returns Pass.
func (m *Merger) RouteKnown(in, out uint64, s *wire.Series, nowMs int64) Decision {
	sh := &m.shards[out%numShards]
	sh.mu.Lock()
	o := sh.outputs.get(out)
	if o == nil || o.m == nil || o.m.enc == nil || o.m.movedTo != 0 || o.m.closedAt != 0 {
		sh.mu.Unlock()
		return Pass
	}
	ip := o.m.inputs.get(in)
	if ip == nil {
		sh.mu.Unlock()
		return Pass
	}
	first := m.newIn(ip.seen) | m.newOut(o.seen)
	o.seen = nowMs
	m.absorb(sh, o.m, ip, s, nowMs)
	sh.mu.Unlock()
	return Absorbed | first
}

// PassKnown passes the samples of s through, as Route does, if input in
// is the single input of output out; it reports Pass with the epoch flags,
// and false (nothing done) otherwise. The gateway's route cache calls it for
// an input whose labels the rules leave as they are, without relabeling.
func (m *Merger) PassKnown(in, out uint64, s *wire.Series, nowMs int64) (Decision, bool) {
	sh := &m.shards[out%numShards]
	sh.mu.Lock()
	o := sh.outputs.get(out)
	if o == nil || o.m != nil || o.input != in {
		sh.mu.Unlock()
		return 0, false
	}
	first := m.newIn(o.seen) | m.newOut(o.seen)
	o.pass(s, nowMs, m.rules.Load().MaxAhead.Milliseconds())
	sh.mu.Unlock()
	return Pass | first, true
}

// Handover moves what the output from holds into the merged output to
// (labels toLabels, made merged if it is not), as the guard does when it
// aggregates a label away: a pass-through output's input carries its last
// value over, a merged output's inputs, retired inputs and base move as they
// are, so the aggregate has the totals it would have had if the label had
// been dropped from the start, and nothing is counted twice when the inputs
// report again. from then ends downstream with a stale marker (under
// fromLabels) after anything it emitted, and stays, for the staleness
// period, a pointer to to: a sample routed to it by a request still under
// the old rules joins the aggregate instead of starting it again. It
// reports whether from was there to move.
func (m *Merger) Handover(from, to uint64, toLabels, fromLabels []wire.Label, nowMs int64) bool {
	if from == to {
		return false
	}
	sh := &m.shards[from%numShards]
	sh.mu.Lock()
	o := sh.outputs.get(from)
	if o == nil || (o.m != nil && (o.m.movedTo != 0 || o.m.enc == nil)) {
		sh.mu.Unlock()
		return false
	}
	var moved []input
	var movedHists map[uint64]*histInput
	var retired map[uint64]*retiredInput
	var base float64
	var baseHist *histogram.FloatHistogram
	passed := o.m == nil
	single := input{key: o.input, seen: o.seen}
	floor := o.passTs
	if passed {
		if o.lastTs != noSample {
			single.ts, single.val, single.has = o.lastTs, o.lastVal, true
		} else {
			single.pending = true
		}
		moved = []input{single}
		// The pass-through output becomes a merged one of its own
		// labels: it only ever emits its stale marker.
		o.m = m.newMerged(fromLabels, floor)
		m.tracked.Add(-1) // the input moves
	} else {
		mg := o.m
		if mg.dirty {
			m.snapshot(mg, nowMs)
		}
		moved, movedHists = mg.inputs.clone(), mg.hists
		mg.clearInputs()
		retired, mg.retired = mg.retired, nil
		base, baseHist = mg.base, mg.baseHist
		mg.base, mg.baseHist = 0, nil
		floor = max(floor, mg.lastTs)
		m.tracked.Add(-int64(len(moved)))
		m.metrics.mergeInputs.Sub(float64(len(moved)))
	}
	tomb := o.m
	tomb.movedTo = to
	tomb.minSeen = 0
	if fromLabels != nil && (floor > 0 || tomb.everQueued) {
		tomb.lastTs = max(tomb.lastTs, floor)
		m.queueStaleMarker(tomb, nowMs)
	}
	tomb.ended = true
	o.seen = nowMs
	sh.mu.Unlock()

	sh = &m.shards[to%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.outputs.get(to)
	if t == nil {
		t = &output{input: single.key, seen: nowMs, lastTs: noSample}
		sh.outputs.put(to, t)
		t.m = m.newMerged(toLabels, 0)
	} else if t.m == nil {
		m.startMerging(t, nil, toLabels)
	}
	mg := t.m
	if mg.enc == nil {
		mg.learn(m, toLabels)
	}
	// Emissions must come after anything the inputs were sent under.
	mg.lastTs = max(mg.lastTs, floor)
	for _, in := range moved {
		if mg.inputs.get(in.key) != nil {
			continue // already there: the aggregate has its state
		}
		if r := mg.retired[in.key]; r != nil {
			delete(mg.retired, in.key)
			m.retired.Add(-1)
		}
		if in.has {
			mg.dataTs = max(mg.dataTs, min(in.ts, nowMs+m.rules.Load().MaxAhead.Milliseconds()))
			if !mg.dirty {
				mg.dirty, mg.windowStart = true, mg.dataTs
			}
			mg.ended = false
		}
		h := movedHists[in.key]
		in.hist = false
		mg.setHist(mg.addInput(in), h)
		m.tracked.Add(1)
		m.metrics.mergeInputs.Inc()
	}
	for k, r := range retired {
		if mg.inputs.get(k) != nil || mg.retired[k] != nil {
			m.retired.Add(-1)
			continue
		}
		if mg.retired == nil {
			mg.retired = map[uint64]*retiredInput{}
		}
		mg.retired[k] = r
	}
	if base != 0 || baseHist != nil {
		mg.base += base
		if baseHist != nil {
			if mg.baseHist == nil {
				mg.baseHist = baseHist
			} else {
				m.addHistogram(mg.baseHist, baseHist)
			}
		}
		mg.dirty = true
	}
	return true
}

// routeMoved absorbs s into the output to that a handed-over output points
// to, when to is still there and not closed, and reports whether it did
// (a sample of a request older than the closing is dropped, see closedAt).
func (m *Merger) routeMoved(tk Ticket, in, to uint64, s *wire.Series, nowMs int64) bool {
	sh := &m.shards[to%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.outputs.get(to)
	if t == nil || t.m == nil || t.m.enc == nil {
		return false
	}
	mg := t.m
	if mg.closedAt != 0 {
		return tk.seq <= mg.closedAt
	}
	ip := mg.inputs.get(in)
	if ip == nil {
		if m.full() {
			return false
		}
		fresh, _ := m.revive(mg, in)
		ip = mg.addInput(fresh)
		m.tracked.Add(1)
		m.metrics.mergeInputs.Inc()
	}
	t.seen = nowMs
	m.absorb(sh, mg, ip, s, nowMs)
	return true
}

// EndOutput ends the merged output out downstream now, as the guard does
// when it lifts a mitigation and the inputs go back to outputs of their
// own: it queues the output's stale marker and forgets its inputs, so
// that no instant sees both the aggregate and the series it had replaced.
// The caller has put the rules without the mitigation in force: requests
// issued before this call are taken to route under the old ones, and
// their samples for out are dropped (see merged.closedAt). It reports
// whether out was a merged output.
func (m *Merger) EndOutput(out uint64) bool {
	sh := &m.shards[out%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	o := sh.outputs.get(out)
	if o == nil || o.m == nil || o.m.enc == nil {
		return false
	}
	m.endLocked(o, m.tickets.issued(), m.now().UnixMilli())
	return true
}

// RaiseFloor makes every merged output created from now on emit only
// after ms (wall-clock milliseconds). A replica of a cluster raises it when
// workloads move to it: their old owner may have emitted, up to then, the
// outputs it now starts, and the receiver would refuse an older point.
func (m *Merger) RaiseFloor(ms int64) {
	for {
		cur := m.floor.Load()
		if ms <= cur || m.floor.CompareAndSwap(cur, ms) {
			return
		}
	}
}

// EndWhere ends, as EndOutput does, every merged output for which leaving
// reports true, given its hash and labels, and returns how many it ended.
// A replica of a cluster calls it when the workloads of those outputs
// moved to another replica: from then on only the new owner emits them.
func (m *Merger) EndWhere(leaving func(out uint64, labels []wire.Label) bool) int {
	n := 0
	issued := m.tickets.issued()
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		nowMs := m.now().UnixMilli()
		sh.outputs.each(func(out uint64, o *output) {
			if o.m == nil || o.m.enc == nil || o.m.ended || o.m.movedTo != 0 {
				return
			}
			ls, err := wire.DecodeLabels(o.m.enc)
			if err != nil || !leaving(out, ls) {
				return
			}
			m.endLocked(o, issued, nowMs)
			n++
		})
		sh.mu.Unlock()
	}
	return n
}

// endLocked ends the merged output o; its shard is locked.
func (m *Merger) endLocked(o *output, issued uint64, nowMs int64) {
	mg := o.m
	mg.closedAt = max(issued, 1)
	if mg.dirty {
		m.snapshot(mg, nowMs)
	}
	if !mg.ended && mg.everQueued {
		m.queueStaleMarker(mg, nowMs)
	}
	mg.ended = true
	n := int64(mg.inputs.len())
	mg.clearInputs()
	m.tracked.Add(-n)
	m.metrics.mergeInputs.Sub(float64(n))
	if r := int64(len(mg.retired)); r > 0 {
		m.retired.Add(-r)
		m.metrics.retiredInputs.Sub(float64(r))
		mg.retired = nil
	}
	mg.base, mg.baseHist = 0, nil
	// The stale marker ends the series: what may come after it starts
	// afresh, and must not be held up to the old value.
	mg.lastV = 0
	// It stays for the staleness period, its closing guarding it from
	// requests under the lifted mitigation; then it is forgotten.
	o.seen = nowMs
}

func (m *Merger) full() bool {
	return m.tracked.Load() >= int64(m.rules.Load().MaxInputs)
}

// noSample is output.lastTs before the output's first float sample.
const noSample = math.MinInt64

// pass records a pass-through series.
func (o *output) pass(s *wire.Series, nowMs, maxAhead int64) {
	o.seen = nowMs
	limit := nowMs + maxAhead
	for _, smp := range s.Samples {
		o.passTs = max(o.passTs, min(smp.Timestamp, limit))
		if smp.Timestamp >= o.lastTs && !math.IsNaN(smp.Value) {
			o.lastVal, o.lastTs = smp.Value, smp.Timestamp
		}
	}
	for _, h := range s.Histograms {
		o.passTs = max(o.passTs, min(h.Timestamp, limit))
	}
}

// newMerged returns the state of a merged output with labels out (nil for
// an output restored from the state file, whose labels come with its first
// input). Nothing it emits may be at or before floor.
func (m *Merger) newMerged(out []wire.Label, floor int64) *merged {
	mg := &merged{
		since:  m.tickets.issued(),
		lastTs: max(floor, m.floor.Load()),
	}
	if out != nil {
		mg.learn(m, out)
	}
	m.metrics.mergedSeries.Inc()
	m.merged.Add(1)
	return mg
}

// learn takes the output's labels and what follows from them.
func (mg *merged) learn(m *Merger, out []wire.Label) {
	mg.enc = wire.AppendEncodedLabels(make([]byte, 0, encodedSize(out)), out)
	name := wire.GetLabel(out, "__name__")
	mg.kind = m.kindOf(name, wire.GetLabel(out, "quantile") != nil)
	mg.policy = m.policyOf(name, mg.kind)
}

// startMerging turns a single-input output into a merged one. The single
// input keeps contributing its last known value.
func (m *Merger) startMerging(o *output, orig, out []wire.Label) {
	// Nothing of the output's values has been emitted by the merger; the
	// first emission must come after what passed through.
	mg := m.newMerged(out, o.passTs)
	first := input{key: o.input, seen: o.seen}
	if o.lastTs != noSample {
		first.ts, first.val, first.has = o.lastTs, o.lastVal, true
		mg.dataTs = min(o.lastTs, o.passTs)
		mg.dirty, mg.windowStart = true, mg.dataTs
	} else {
		first.pending = true
	}
	mg.addInput(first)
	m.metrics.mergeInputs.Inc()
	mg.noteCollapsed(m, orig, out)
	o.m = mg
}

// addInput adds a live input, keeping minSeen a lower bound.
func (mg *merged) addInput(in input) *input {
	mg.minSeen = min(mg.minSeen, in.seen)
	return mg.inputs.add(in)
}

// revive brings back a retired input that sends again: it continues from its
// last value, so nothing it counted before is counted twice. It returns a
// fresh input and false when the input is not retired.
func (m *Merger) revive(mg *merged, in uint64) (input, bool) {
	r := mg.retired[in]
	if r == nil {
		return input{key: in}, false
	}
	delete(mg.retired, in)
	m.retired.Add(-1)
	m.metrics.revived.Inc()
	ip := input{key: in, ts: r.ts, val: r.val, offset: r.offset, has: r.has}
	mg.setHist(&ip, r.h) // the input is added next, under the same key
	return ip, true
}

// absorb takes the samples of one input series into a merged output. The
// shard's lock is held.
func (m *Merger) absorb(sh *shard, mg *merged, ip *input, s *wire.Series, nowMs int64) {
	r := m.rules.Load()
	limit := nowMs + r.MaxAhead.Milliseconds()
	window := r.FlushInterval.Milliseconds()
	ip.seen = nowMs
	// pending ends with the first sample newer than what the input's state
	// holds: a resent older one says nothing new of its value.
	took := false
	for _, smp := range s.Samples {
		ts := smp.Timestamp
		if ts > limit {
			// A sender clock ahead, or a bogus timestamp: the value counts,
			// its time is clamped so that it cannot pin the output ahead.
			ts = limit
			m.metrics.future.Inc()
		}
		if (ip.has || ip.stale) && ts <= ip.ts {
			continue // already seen: a sender retry, or out of order
		}
		took = true
		m.advance(mg, ts, window, nowMs)
		if value.IsStaleNaN(smp.Value) {
			// The input disappeared from its target, perhaps for one
			// failed scrape only; see input.stale.
			ip.stale, ip.ts = true, ts
			continue
		}
		if math.IsNaN(smp.Value) {
			continue
		}
		if mg.kind == Counter && ip.has && smp.Value < ip.val {
			ip.offset += ip.val // reset of this input only
		}
		ip.val, ip.ts, ip.has, ip.stale = smp.Value, ts, true, false
		mg.ended = false
	}
	for i := range s.Histograms {
		h := &s.Histograms[i]
		ts := h.Timestamp
		if ts > limit {
			ts = limit
			m.metrics.future.Inc()
		}
		if hs := mg.hist(ip); hs != nil && (hs.hist != nil || hs.stale) && ts <= hs.ts {
			continue
		}
		// Decode into the shard's spare histogram: the input's previous one
		// becomes the spare, so a steady stream allocates nothing.
		fh := sh.spareHist
		if fh == nil {
			fh = &histogram.FloatHistogram{}
		}
		if err := decodeHistogramInto(h.Data, fh); err != nil {
			// Validated on ingest, but for a NaN zero threshold, which
			// Prometheus accepts and its arithmetic cannot add.
			sh.spareHist = fh
			m.metrics.histogramError.Inc()
			continue
		}
		took = true
		m.advance(mg, ts, window, nowMs)
		hs := mg.hist(ip)
		if hs == nil {
			hs = &histInput{}
			mg.setHist(ip, hs)
		}
		if value.IsStaleNaN(fh.Sum) {
			sh.spareHist = fh
			hs.stale, hs.ts = true, ts
			continue
		}
		old := hs.hist
		if fh.CounterResetHint != histogram.GaugeType && old != nil && fh.DetectReset(old) {
			if hs.offset == nil || !m.addHistogram(hs.offset, old) {
				// The first reset, or the input switched between
				// exponential and custom buckets: the offset starts afresh.
				hs.offset, old = old, nil
			}
		}
		hs.hist, hs.ts, hs.stale = fh, ts, false
		sh.spareHist = old
		mg.ended = false
	}
	if took {
		ip.pending = false
	}
	for i := range s.Exemplars {
		e := &s.Exemplars[i]
		switch {
		case mg.exemplar == nil:
			mg.exemplar = copyExemplar(mg.spareEx, e)
			mg.spareEx = nil
		case e.Timestamp > mg.exemplar.Timestamp:
			mg.exemplar = copyExemplar(mg.exemplar, e)
		}
	}
}

// advance notes that the output's value changes with data at ts. When the
// changes since the last point span a flush interval of data time (a sender
// catching up its backlog faster than the flusher runs), the value before
// this change becomes a point of its own, so that the output keeps the shape
// of its data instead of one spike.
func (m *Merger) advance(mg *merged, ts, window, nowMs int64) {
	if mg.dirty && ts > mg.dataTs && ts-mg.windowStart >= window<<mg.scale {
		m.snapshot(mg, nowMs)
	}
	if !mg.dirty {
		mg.dirty, mg.windowStart = true, ts
	}
	mg.dataTs = max(mg.dataTs, ts)
}

// addHistogram adds h to sum in place and reports whether it could; the
// failure is counted. Prometheus' arithmetic refuses to mix exponential and
// custom buckets.
func (m *Merger) addHistogram(sum, h *histogram.FloatHistogram) bool {
	if !mergeableZeroThreshold(sum) || !mergeableZeroThreshold(h) {
		m.metrics.histogramError.Inc()
		return false
	}
	if _, _, _, err := sum.Add(h); err != nil {
		m.metrics.histogramError.Inc()
		return false
	}
	return true
}

// kindOf decides how a metric's values combine: config first, then the
// sender's metadata, then Prometheus naming conventions. hasQuantile says
// whether the series has a quantile label.
func (m *Merger) kindOf(name []byte, hasQuantile bool) Kind {
	for _, r := range m.rules.Load().Types {
		if r.Match.Match(name) {
			return r.Kind
		}
	}
	family, suffix := name, ""
	for _, sfx := range []string{"_bucket", "_count", "_sum", "_total"} {
		if bytes.HasSuffix(name, []byte(sfx)) {
			family, suffix = name[:len(name)-len(sfx)], sfx
			break
		}
	}
	// The exact name first: a family may be called x_total.
	if t := m.metricType(name); t != 0 {
		return kindOfType(t, hasQuantile, "")
	}
	if suffix != "" {
		if t := m.metricType(family); t != 0 {
			return kindOfType(t, hasQuantile, suffix)
		}
		return Counter
	}
	if hasQuantile {
		return Quantile
	}
	return Gauge
}

// kindOfType maps a metadata type to a kind; suffix is what the series name
// adds to the family name.
func kindOfType(t int32, hasQuantile bool, suffix string) Kind {
	switch t {
	case typeCounter, typeHistogram:
		return Counter
	case typeSummary:
		if suffix == "" && hasQuantile {
			return Quantile
		}
		return Counter
	}
	return Gauge
}

func (m *Merger) policyOf(name []byte, k Kind) Policy {
	r := m.rules.Load()
	switch k {
	case Gauge:
		for _, g := range r.Gauges {
			if g.Match.Match(name) {
				return g.Policy
			}
		}
		return Sum
	case Quantile:
		for _, g := range r.Quantiles {
			if g.Match.Match(name) {
				return g.Policy
			}
		}
		return Max
	}
	return Sum
}

// noteCollapsed adds the names of labels that relabeling removed or
// rewrote.
func (mg *merged) noteCollapsed(m *Merger, orig, out []wire.Label) {
	var added []string
	j, c := 0, 0
	for _, l := range orig {
		// Fast path: a label relabeling kept as it was is the same pair of
		// slices in out, in the same order: no byte is compared.
		if j < len(out) && aliases(&out[j], &l) {
			j++
			continue
		}
		// Fast path: a name the output already has as collapsed, as it
		// has for every input after its first. orig and collapsed are
		// both sorted, so one walk finds them all. (Should orig not be
		// sorted, the walk misses names, which the slow path finds.)
		for c < len(mg.collapsed) && mg.collapsed[c] < string(l.Name) {
			c++
		}
		if c < len(mg.collapsed) && mg.collapsed[c] == string(l.Name) {
			c++
			continue
		}
		// Slow path: removed, rewritten, or moved by the rules.
		v := wire.GetLabel(out, bytesconv.String(l.Name))
		if v != nil && bytes.Equal(v, l.Value) {
			continue
		}
		if !hasName(mg.collapsed, l.Name) && !hasName(added, l.Name) {
			added = append(added, string(l.Name))
		}
	}
	if len(added) > 0 {
		mg.collapsed = m.nameSets.intern(append(slices.Clone(mg.collapsed), added...))
	}
}

// aliases reports whether a and b are the same slices: the same label,
// untouched.
func aliases(a, b *wire.Label) bool {
	return len(a.Name) == len(b.Name) && len(a.Value) == len(b.Value) && len(a.Name) > 0 && len(a.Value) > 0 &&
		&a.Name[0] == &b.Name[0] && &a.Value[0] == &b.Value[0]
}

// hasName reports whether name is in names; the sets are a few names long.
func hasName(names []string, name []byte) bool {
	for _, n := range names {
		if n == string(name) {
			return true
		}
	}
	return false
}

// nameSets interns the sets of collapsed label names: the outputs of one
// metric family, often thousands, collapse the same labels and share one
// sorted slice instead of a copy of each name apiece. Sets are immutable.
type nameSets struct {
	mu   sync.Mutex
	sets map[string][]string
}

// maxNameSets bounds the table: beyond it, sets are private copies.
const maxNameSets = 4096

// intern sorts set and returns the shared copy of it.
func (n *nameSets) intern(set []string) []string {
	slices.Sort(set)
	key := strings.Join(set, "\xff")
	n.mu.Lock()
	defer n.mu.Unlock()
	if shared, ok := n.sets[key]; ok {
		return shared
	}
	for i := range set {
		set[i] = strings.Clone(set[i]) // names may alias a request's buffer
	}
	if len(n.sets) < maxNameSets {
		if n.sets == nil {
			n.sets = map[string][]string{}
		}
		n.sets[key] = set
	}
	return set
}

func encodedSize(ls []wire.Label) int {
	n := 0
	for _, l := range ls {
		n += len(l.Name) + len(l.Value) + 8
	}
	return n
}

// ownedExemplar is an exemplar whose labels live in its own buffer, so that
// it outlives the request it came in.
type ownedExemplar struct {
	wire.Exemplar
	buf []byte
}

// copyExemplar copies src into dst's memory, reusing its buffers (dst may
// be nil), and returns it.
func copyExemplar(dst *ownedExemplar, src *wire.Exemplar) *ownedExemplar {
	if dst == nil {
		dst = &ownedExemplar{}
	}
	n := 0
	for _, l := range src.Labels {
		n += len(l.Name) + len(l.Value)
	}
	// Grow once, up front: the labels point into buf, which must not move
	// while they are being built. Prometheus bounds an exemplar's labels
	// to 128 characters, so most exemplars fit the first buffer.
	if cap(dst.buf) < n {
		dst.buf = make([]byte, 0, max(n, 160))
	}
	if cap(dst.Labels) < len(src.Labels) {
		dst.Labels = make([]wire.Label, 0, max(len(src.Labels), 4))
	}
	buf := dst.buf[:0]
	ls := dst.Labels[:0]
	for _, l := range src.Labels {
		start := len(buf)
		buf = append(buf, l.Name...)
		name := buf[start:len(buf):len(buf)]
		start = len(buf)
		buf = append(buf, l.Value...)
		ls = append(ls, wire.Label{Name: name, Value: buf[start:len(buf):len(buf)]})
	}
	dst.buf, dst.Labels = buf, ls
	dst.Value, dst.Timestamp = src.Value, src.Timestamp
	return dst
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
