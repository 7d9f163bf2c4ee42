package merge

import (
	"cmp"
	"context"
	"math"
	"slices"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/wire"
)

// Sender delivers one encoded, snappy-compressed remote-write body.
type Sender func(ctx context.Context, body []byte) error

// flusher holds the buffers of emission; only Run's goroutine uses it.
type flusher struct {
	req        wire.Request
	samples    []wire.Sample
	histograms []wire.Histogram
	exemplars  []wire.Exemplar
	histBuf    []byte
	encoded    []byte
	compressed []byte
}

// Run emits merged outputs every flush interval and expires stale state,
// until ctx ends; then it flushes once more so that a graceful shutdown
// delivers what was absorbed.
func (m *Merger) Run(ctx context.Context, send Sender) {
	var f flusher
	interval := m.rules.Load().FlushInterval
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	lastSave := m.now()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			m.Flush(final, send, &f, true)
			cancel()
			m.saveState()
			return
		case <-ticker.C:
		}
		m.Flush(ctx, send, &f, false)
		if m.now().Sub(lastSave) >= stateSaveInterval {
			m.saveState()
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

func (m *Merger) saveState() {
	path := m.rules.Load().StateFile
	if path == "" {
		return
	}
	if err := m.SaveState(path); err != nil {
		m.logger.Error("cannot save merge state", "err", err)
	}
}

// Flush emits every merged output that changed since its last emission and
// expires state older than the staleness period. With final set it also
// emits outputs whose pass-through requests are still in flight (at
// shutdown they have been answered). f may be nil.
func (m *Merger) Flush(ctx context.Context, send Sender, f *flusher, final bool) {
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	if f == nil {
		f = &flusher{}
	}
	now := m.now()
	nowMs := now.UnixMilli()
	stale := m.rules.Load().Staleness.Milliseconds()
	oldest := m.tickets.oldestActive()
	f.reset()
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		for key, o := range sh.outputs {
			if o.m == nil {
				if nowMs-o.seen > stale {
					delete(sh.outputs, key)
					m.tracked.Add(-1)
				}
				continue
			}
			m.expire(o.m, nowMs, stale)
			if len(o.m.inputs) == 0 && nowMs-o.seen > stale {
				delete(sh.outputs, key)
				m.metrics.mergedSeries.Dec()
				continue
			}
			if o.m.dirty && (final || o.m.since < oldest) {
				f.emit(m, o, nowMs, stale)
			}
		}
		sh.mu.Unlock()
	}
	m.metrics.trackedInputs.Set(float64(m.tracked.Load()))
	if len(f.req.Series) == 0 {
		return
	}
	f.encoded = f.req.MarshalAppend(f.encoded[:0])
	f.compressed = snappy.Encode(f.compressed[:cap(f.compressed)], f.encoded)
	// Retry until the next flush would supersede this one: a merged series
	// carries its whole value in every emission, so only the newest matters.
	deadline := now.Add(m.rules.Load().FlushInterval)
	backoff := 100 * time.Millisecond
	for {
		err := send(ctx, f.compressed)
		if err == nil {
			m.metrics.flushes.WithLabelValues("success").Inc()
			m.metrics.emitted.Add(float64(len(f.req.Series)))
			return
		}
		if ctx.Err() != nil || m.now().Add(backoff).After(deadline) {
			m.metrics.flushes.WithLabelValues("failure").Inc()
			m.logger.Warn("cannot deliver merged series; the next flush carries their values", "series", len(f.req.Series), "err", err)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// expire forgets inputs without a sample within the staleness period.
func (m *Merger) expire(mg *merged, nowMs, stale int64) {
	for key, ip := range mg.inputs {
		if nowMs-ip.seen <= stale {
			continue
		}
		m.retire(mg, ip)
		delete(mg.inputs, key)
		m.tracked.Add(-1)
		m.metrics.mergeInputs.Dec()
	}
}

func (f *flusher) reset() {
	f.req.Reset()
	f.samples = f.samples[:0]
	f.histograms = f.histograms[:0]
	f.exemplars = f.exemplars[:0]
	f.histBuf = f.histBuf[:0]
}

// emit appends the current value of a merged output to the flush request.
// The shard lock is held; labels are immutable, so the request may keep
// pointing at them after the lock is released.
func (f *flusher) emit(m *Merger, o *output, nowMs, stale int64) {
	mg := o.m
	if mg.enc == nil {
		return // restored, no input seen yet
	}
	for _, ip := range mg.inputs {
		if ip.pending {
			return // wait until its value is known; it expires if it never comes
		}
	}
	ts := max(nowMs, mg.lastEmit+1, o.passTs+1)
	var s wire.Series
	s.SetEncodedLabels(mg.enc)
	if v, ok := mg.floatValue(nowMs, stale); ok {
		start := len(f.samples)
		f.samples = append(f.samples, wire.Sample{Value: v, Timestamp: ts})
		s.Samples = f.samples[start:len(f.samples):len(f.samples)]
	}
	if h := m.histogramValue(mg, nowMs, stale); h != nil {
		ph := prompb.FromFloatHistogram(ts, h)
		start := len(f.histBuf)
		var err error
		f.histBuf = slices.Grow(f.histBuf, ph.Size())
		n, err := ph.MarshalToSizedBuffer(f.histBuf[start : start+ph.Size()])
		if err == nil && n == ph.Size() {
			f.histBuf = f.histBuf[:start+n]
			hs := len(f.histograms)
			f.histograms = append(f.histograms, wire.Histogram{Timestamp: ts, Data: f.histBuf[start : start+n]})
			s.Histograms = f.histograms[hs:len(f.histograms):len(f.histograms)]
		}
	}
	if len(s.Samples) == 0 && len(s.Histograms) == 0 {
		mg.dirty = false
		return
	}
	if mg.exemplar != nil {
		e := *mg.exemplar
		e.Timestamp = min(e.Timestamp, ts)
		start := len(f.exemplars)
		f.exemplars = append(f.exemplars, e)
		s.Exemplars = f.exemplars[start:len(f.exemplars):len(f.exemplars)]
		mg.exemplar = nil
	}
	f.req.Series = append(f.req.Series, s)
	mg.lastEmit = ts
	mg.dirty = false
}

// floatValue combines the float samples of the inputs.
func (mg *merged) floatValue(nowMs, stale int64) (float64, bool) {
	if mg.kind == Counter {
		v, any := mg.base, mg.base != 0
		for _, ip := range mg.inputs {
			if ip.has {
				v += ip.offset + ip.val
				any = true
			}
		}
		return v, any
	}
	var (
		v      float64
		lastTs int64 = math.MinInt64
		n      int
	)
	for _, ip := range mg.inputs {
		if !ip.has || ip.stale || nowMs-ip.seen > stale {
			continue
		}
		switch {
		case n == 0:
			v, lastTs = ip.val, ip.ts
		case mg.policy == Sum:
			v += ip.val
		case mg.policy == Max:
			v = max(v, ip.val)
		case mg.policy == Min:
			v = min(v, ip.val)
		case mg.policy == Last && ip.ts > lastTs:
			v, lastTs = ip.val, ip.ts
		}
		n++
	}
	if n == 0 || value.IsStaleNaN(v) {
		return 0, false
	}
	return v, true
}

// histogramValue sums the native histograms of the inputs.
func (m *Merger) histogramValue(mg *merged, nowMs, stale int64) *histogram.FloatHistogram {
	var sum *histogram.FloatHistogram
	add := func(h *histogram.FloatHistogram) {
		if h == nil {
			return
		}
		if sum == nil {
			sum = h.Copy()
			return
		}
		if _, _, _, err := sum.Add(h); err != nil {
			m.metrics.histogramError.Inc()
		}
	}
	add(mg.baseHist)
	for _, ip := range mg.inputs {
		if ip.hist == nil {
			continue
		}
		if ip.hist.CounterResetHint == histogram.GaugeType {
			if !ip.histStale && nowMs-ip.seen <= stale {
				add(ip.hist)
			}
			continue
		}
		add(ip.histOffset)
		add(ip.hist)
	}
	if sum != nil {
		// Merged data is the sum of inputs: Prometheus must not read a reset
		// hint of one input into it.
		if sum.CounterResetHint != histogram.GaugeType {
			sum.CounterResetHint = histogram.NotCounterReset
		}
	}
	return sum
}

// Collision describes one merged output for the collisions report.
type Collision struct {
	Series          string   `json:"series"`
	Inputs          int      `json:"inputs"`
	CollapsedLabels []string `json:"collapsed_labels"`
	Kind            string   `json:"kind"`
}

// Collisions returns the top merged outputs by number of inputs.
func (m *Merger) Collisions(top int) []Collision {
	var out []Collision
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		for _, o := range sh.outputs {
			if o.m == nil {
				continue
			}
			active := 0
			for _, ip := range o.m.inputs {
				if !ip.stale && !ip.histStale {
					active++
				}
			}
			desc := "{}"
			if ls, err := wire.DecodeLabels(o.m.enc); err == nil && o.m.enc != nil {
				desc = labelsString(ls)
			}
			out = append(out, Collision{
				Series:          desc,
				Inputs:          active,
				CollapsedLabels: slices.Clone(o.m.collapsed),
				Kind:            o.m.kind.String(),
			})
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b Collision) int {
		if c := cmp.Compare(b.Inputs, a.Inputs); c != 0 {
			return c
		}
		return cmp.Compare(a.Series, b.Series)
	})
	if top > 0 && len(out) > top {
		out = out[:top]
	}
	return out
}
