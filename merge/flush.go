package merge

import (
	"context"
	"math"
	"slices"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/wire"
)

// Deliverer sends one batch of merged outputs downstream. It returns nil
// when every series of req was either acknowledged or refused on its own by
// the downstream, and reports each refused series (its index in req.Series)
// to onReject. Any other error means the batch could not be delivered now;
// its outputs stay pending. The gateway's implementation is the forward
// package's Deliver, the same path as pass-through data.
type Deliverer func(ctx context.Context, req *wire.Request, onReject func(series int, reason string, err error)) error

// flusher holds the buffers of emission; Flush's caller holds flushMu.
type flusher struct {
	entries    []entry
	sorted     []entry // sortByLayer's scratch
	layers     []int   // the same
	rejected   []bool
	req        wire.Request
	samples    []wire.Sample
	histograms []wire.Histogram
	exemplars  []wire.Exemplar
	histBuf    []byte
}

// entry is one point of one output in a flush. p is a copy: the output's
// queue may move while the batch is delivered, the point's memory does not.
type entry struct {
	sh    *shard
	mg    *merged
	p     point
	layer int // the point's place in its output's queue
}

// Run emits merged outputs every flush interval and expires stale state,
// until ctx ends; then it flushes once more so that a graceful shutdown
// delivers what was absorbed.
func (m *Merger) Run(ctx context.Context, deliver Deliverer) {
	// A batch in flight when shutdown begins is finished rather than cut
	// (cutting it could leave the downstream holding what Cardinal does
	// not know it holds); the flush stops after it and the final flush
	// delivers the rest.
	go func() {
		<-ctx.Done()
		m.stopping.Store(true)
	}()
	deliveries := context.WithoutCancel(ctx)
	interval := m.rules.Load().FlushInterval
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	lastSave := m.now()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			m.Flush(final, deliver, true)
			cancel()
			m.saveState(true)
			return
		case <-ticker.C:
		}
		m.Flush(deliveries, deliver, false)
		if m.now().Sub(lastSave) >= stateSaveInterval {
			m.saveState(false)
			lastSave = m.now()
		}
		if next := m.rules.Load().FlushInterval; next != interval {
			interval = next
			ticker.Reset(interval)
		}
	}
}

// stateSaveInterval bounds what a crash forgets of the merged outputs.
const stateSaveInterval = time.Minute

// saveState saves the state file; clean says that it is the last save of
// a process that delivered what it could and stops (see LoadState).
func (m *Merger) saveState(clean bool) {
	path := m.rules.Load().StateFile
	if path == "" {
		return
	}
	if err := m.saveStateFile(path, clean); err != nil {
		m.logger.Error("cannot save merge state", "err", err)
	}
}

// Flush expires old state, queues the current value of every merged output
// that changed, and delivers every queued point, oldest first per output, in
// batches bounded by Rules.MaxSamplesPerSend and MaxBytesPerSend. A point is
// removed only when a batch carrying it was acknowledged (or the downstream
// refused that one series on its own); when a batch fails, the flush stops
// and everything not delivered stays queued for the next one. With final set
// it also emits outputs whose pass-through requests are still in flight (at
// shutdown they have been answered). It reports whether everything queued
// was delivered.
func (m *Merger) Flush(ctx context.Context, deliver Deliverer, final bool) bool {
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	f := &m.flusher
	m.collect(f, final)
	ok := m.deliverAll(ctx, f, deliver, final)
	m.release(f)
	m.metrics.trackedInputs.Set(float64(m.tracked.Load()))
	m.metrics.retiredInputs.Set(float64(m.retired.Load()))
	m.metrics.pendingSamples.Set(float64(m.pending.Load()))
	return ok
}

// collect expires state and gathers the points to deliver into f.entries,
// sorted by layer: every output's first point, then every second one...
// Each batch then holds at most one point per output, so a batch resent
// whole after a lost answer is at worst an identical duplicate, never out of
// order.
func (m *Merger) collect(f *flusher, final bool) {
	r := m.rules.Load()
	nowMs := m.now().UnixMilli()
	stale := r.Staleness.Milliseconds()
	oldest := m.tickets.oldestActive()
	// Sized once for what is queued and what the outputs may snapshot now
	// (one point each): grown by append, a flush of a hundred thousand
	// points spent more copying entries than collecting them.
	f.entries = slices.Grow(f.entries[:0], int(m.pending.Load()+m.merged.Load()))
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		sh.outputs.t.Sweep(func(_ uint64, o *output) bool {
			if o.m == nil {
				if nowMs-o.seen > stale {
					m.tracked.Add(-1)
					return false
				}
				return true
			}
			mg := o.m
			if mg.pendingUntil != 0 && nowMs > mg.pendingUntil {
				// Restored inputs that never reported again: their saved
				// values stand.
				for i := range mg.inputs.len() {
					mg.inputs.at(i).pending = false
				}
				mg.pendingUntil = 0
			}
			m.expire(mg, nowMs, r)
			if mg.enc != nil {
				if mg.dirty {
					m.snapshot(mg, nowMs)
				}
				if mg.everQueued && !mg.ended && mg.allEnded() {
					m.queueStaleMarker(mg, nowMs)
				}
			}
			if mg.inputs.len() == 0 && len(mg.retired) == 0 && len(mg.points) == 0 && nowMs-o.seen > stale {
				m.metrics.mergedSeries.Dec()
				m.merged.Add(-1)
				// The downstream still holds what it emitted: should the
				// output come back with older data (a sender replaying,
				// or wrong clocks), it must not emit before that. Its
				// last emission is at least the staleness period old,
				// so the floor holds back no output with current data.
				m.RaiseFloor(mg.lastTs)
				return false
			}
			if len(mg.points) == 0 || (!final && mg.since >= oldest) {
				return true
			}
			for k := range mg.points {
				mg.points[k].sent = true
				f.entries = append(f.entries, entry{sh: sh, mg: mg, p: mg.points[k], layer: k})
			}
			return true
		})
		sh.mu.Unlock()
	}
	f.sortByLayer()
}

// sortByLayer orders f.entries by layer, keeping the order of the entries
// of one layer: a counting sort, since layers are few (an output's queue is
// short) and most flushes hold one point per output.
func (f *flusher) sortByLayer() {
	f.layers = f.layers[:0]
	sorted := true
	for i := range f.entries {
		l := f.entries[i].layer
		for len(f.layers) <= l {
			f.layers = append(f.layers, 0)
		}
		f.layers[l]++
		sorted = sorted && (i == 0 || f.entries[i-1].layer <= l)
	}
	if sorted {
		return
	}
	at := 0
	for l, n := range f.layers {
		f.layers[l] = at
		at += n
	}
	f.sorted = slices.Grow(f.sorted[:0], len(f.entries))[:len(f.entries)]
	for _, e := range f.entries {
		f.sorted[f.layers[e.layer]] = e
		f.layers[e.layer]++
	}
	// The two buffers trade places; the old one, cleared, keeps no
	// output alive.
	clear(f.entries)
	f.entries, f.sorted = f.sorted, f.entries
}

// allEnded reports whether no input of the output is live any more: each
// sent a stale marker or expired.
func (mg *merged) allEnded() bool {
	for i := range mg.inputs.len() {
		ip := mg.inputs.at(i)
		if ip.pending || (ip.has && !ip.stale) {
			return false
		}
		if h := mg.hist(ip); h != nil && h.hist != nil && !h.stale {
			return false
		}
	}
	return true
}

// expire retires the inputs without a sample within the staleness period
// and forgets the retired ones older than ForgetAfter.
func (m *Merger) expire(mg *merged, nowMs int64, r *Rules) {
	stale := r.Staleness.Milliseconds()
	if mg.minSeen == 0 || nowMs-mg.minSeen > stale {
		oldest := int64(math.MaxInt64)
		for i := 0; i < mg.inputs.len(); {
			ip := *mg.inputs.at(i)
			if nowMs-ip.seen <= stale {
				oldest = min(oldest, ip.seen)
				i++
				continue
			}
			mg.inputs.removeAt(i) // the last input moves to i: look at it next
			m.tracked.Add(-1)
			m.metrics.mergeInputs.Dec()
			m.retire(mg, ip.key, &ip, r)
		}
		mg.minSeen = oldest
	}
	forget := r.ForgetAfter.Milliseconds()
	if len(mg.retired) > 0 && (mg.minRetired == 0 || nowMs-mg.minRetired > forget) {
		oldest := int64(math.MaxInt64)
		for key, ri := range mg.retired {
			if nowMs-ri.at <= forget {
				oldest = min(oldest, ri.at)
				continue
			}
			delete(mg.retired, key)
			m.retired.Add(-1)
			hist, offset := histOf(ri.h)
			m.forget(mg, ri.val+ri.offset, ri.has, hist, offset)
			m.metrics.forgotten.WithLabelValues("age").Inc()
		}
		mg.minRetired = oldest
	}
}

// retire ends a live input. A gauge simply leaves the aggregate. A counter
// keeps contributing: it is remembered, so that if it comes back it
// continues from its last value, or, past Rules.MaxRetired, forgotten with
// its contribution moved into the output's base.
func (m *Merger) retire(mg *merged, key uint64, ip *input, r *Rules) {
	h := mg.hist(ip)
	mg.setHist(ip, nil) // it leaves the live inputs
	hist, _ := histOf(h)
	counterHist := hist != nil && hist.CounterResetHint != histogram.GaugeType
	if mg.kind != Counter {
		ip.has = false // a gauge's float value leaves with it
	}
	if !ip.has && !counterHist {
		mg.dirty = mg.dirty || mg.kind != Counter
		return
	}
	if !counterHist {
		h = nil
	}
	if m.retired.Load() >= int64(r.MaxRetired) {
		hist, offset := histOf(h)
		m.forget(mg, ip.val+ip.offset, ip.has, hist, offset)
		m.metrics.forgotten.WithLabelValues("capacity").Inc()
		return
	}
	if mg.retired == nil {
		mg.retired = map[uint64]*retiredInput{}
	}
	if h != nil {
		h.stale = false // a retired input's histogram keeps counting
	}
	mg.retired[key] = &retiredInput{at: ip.seen, ts: ip.ts, val: ip.val, offset: ip.offset, has: ip.has, h: h}
	mg.minRetired = min(mg.minRetired, ip.seen)
	m.retired.Add(1)
}

// forget moves what a counter input contributes into the output's base,
// where it stays for good.
func (m *Merger) forget(mg *merged, v float64, has bool, h, offset *histogram.FloatHistogram) {
	if has {
		mg.base += v
	}
	for _, x := range []*histogram.FloatHistogram{offset, h} {
		if x == nil {
			continue
		}
		if mg.baseHist == nil {
			mg.baseHist = x.Copy()
		} else {
			m.addHistogram(mg.baseHist, x)
		}
	}
}

// deliverAll sends f.entries in batches, layer by layer. It reports whether
// every batch was delivered.
func (m *Merger) deliverAll(ctx context.Context, f *flusher, deliver Deliverer, final bool) bool {
	if len(f.entries) == 0 {
		m.failing.Store(false)
		return true
	}
	r := m.rules.Load()
	for start := 0; start < len(f.entries); {
		if !final && m.stopping.Load() {
			return false // the final flush takes over
		}
		end, bytes := start, 0
		for end < len(f.entries) && end-start < r.MaxSamplesPerSend &&
			f.entries[end].layer == f.entries[start].layer &&
			(end == start || bytes+entrySize(&f.entries[end]) <= r.MaxBytesPerSend) {
			bytes += entrySize(&f.entries[end])
			end++
		}
		batch := f.entries[start:end]
		m.buildBatch(f, batch)
		f.rejected = slices.Grow(f.rejected[:0], len(batch))[:len(batch)]
		clear(f.rejected)
		err := deliver(ctx, &f.req, func(i int, reason string, err error) {
			if i >= 0 && i < len(batch) && !f.rejected[i] {
				f.rejected[i] = true
				m.noteRejected(&batch[i], reason, err)
			}
		})
		if err != nil {
			m.failing.Store(true)
			m.metrics.flushes.WithLabelValues("failure").Inc()
			if ok, suppressed := m.rejectLog.allow(m.now()); ok {
				m.logger.Warn("cannot deliver merged series; they stay pending for the next flush",
					"pending", len(f.entries)-start, "err", err, "suppressed", suppressed)
			}
			return false
		}
		delivered := 0
		for i := range batch {
			if m.ack(&batch[i]) && !f.rejected[i] {
				delivered++
			}
		}
		m.metrics.emitted.Add(float64(delivered))
		start = end
	}
	m.failing.Store(false)
	m.metrics.flushes.WithLabelValues("success").Inc()
	return true
}

// entrySize estimates the encoded size of one entry's series.
func entrySize(e *entry) int {
	n := len(e.mg.enc) + 24
	if e.p.h != nil {
		n += 64 + 12*(len(e.p.h.PositiveBuckets)+len(e.p.h.NegativeBuckets)+len(e.p.h.CustomValues))
	}
	if e.p.ex != nil {
		n += 32
		for _, l := range e.p.ex.Labels {
			n += len(l.Name) + len(l.Value) + 6
		}
	}
	return n
}

// buildBatch fills f.req with the series of batch.
func (m *Merger) buildBatch(f *flusher, batch []entry) {
	f.req.Reset()
	f.samples = slices.Grow(f.samples[:0], len(batch))
	f.histograms = f.histograms[:0]
	f.exemplars = f.exemplars[:0]
	f.histBuf = f.histBuf[:0]
	for i := range batch {
		e := &batch[i]
		var s wire.Series
		s.SetEncodedLabels(e.mg.enc)
		if e.p.hasV {
			start := len(f.samples)
			f.samples = append(f.samples, wire.Sample{Value: e.p.v, Timestamp: e.p.ts})
			s.Samples = f.samples[start:len(f.samples):len(f.samples)]
		}
		if e.p.h != nil && !e.p.stale {
			ph := prompb.FromFloatHistogram(e.p.ts, e.p.h)
			size := ph.Size()
			start := len(f.histBuf)
			f.histBuf = slices.Grow(f.histBuf, size)[:start+size]
			if n, err := ph.MarshalToSizedBuffer(f.histBuf[start:]); err == nil && n == size {
				hs := len(f.histograms)
				f.histograms = append(f.histograms, wire.Histogram{Timestamp: e.p.ts, Data: f.histBuf[start : start+size : start+size]})
				s.Histograms = f.histograms[hs:len(f.histograms):len(f.histograms)]
			} else {
				f.histBuf = f.histBuf[:start]
			}
		}
		if e.p.ex != nil {
			start := len(f.exemplars)
			f.exemplars = append(f.exemplars, e.p.ex.Exemplar)
			s.Exemplars = f.exemplars[start:len(f.exemplars):len(f.exemplars)]
		}
		f.req.Series = append(f.req.Series, s)
	}
	// A buffer that grew moved, but what was written before stays valid
	// where it is: each series points at memory that lives as long as it.
}

// ack removes a delivered (or refused) point from its output's queue and
// reports whether it was still there. The output may have moved on while
// the batch was in flight; only the exact point sent is removed.
func (m *Merger) ack(e *entry) bool {
	e.sh.mu.Lock()
	defer e.sh.mu.Unlock()
	mg := e.mg
	if len(mg.points) == 0 || mg.points[0].ts != e.p.ts || !mg.points[0].sent {
		return false
	}
	if ex := mg.points[0].ex; ex != nil && mg.spareEx == nil {
		mg.spareEx = ex
	}
	copy(mg.points, mg.points[1:])
	mg.points[len(mg.points)-1] = point{}
	mg.points = mg.points[:len(mg.points)-1]
	m.pending.Add(-1)
	if len(mg.points) == 0 {
		mg.scale = 0
	}
	return true
}

// noteRejected counts a point the downstream refused on its own and logs
// it, at most once per interval.
func (m *Merger) noteRejected(e *entry, reason string, err error) {
	if reason == "" {
		reason = "invalid"
	}
	m.metrics.rejected.WithLabelValues(reason).Inc()
	if ok, suppressed := m.rejectLog.allow(m.now()); ok {
		desc := "{}"
		if ls, derr := wire.DecodeLabels(e.mg.enc); derr == nil {
			desc = labelsString(ls)
		}
		m.logger.Warn("downstream refused a merged sample; it is dropped, the rest of the batch was delivered",
			"series", desc, "timestamp", e.p.ts, "reason", reason, "err", err, "suppressed", suppressed)
	}
}

// release ends a flush: the points that were collected but not delivered
// may be replaced again by newer values.
func (m *Merger) release(f *flusher) {
	for i := range f.entries {
		e := &f.entries[i]
		e.sh.mu.Lock()
		for k := range e.mg.points {
			e.mg.points[k].sent = false
		}
		e.sh.mu.Unlock()
	}
	clear(f.entries)
	f.entries = f.entries[:0]
	f.req.Reset()
}
