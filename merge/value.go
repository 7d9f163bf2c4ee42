package merge

import (
	"errors"
	"math"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"

	"github.com/cardinal-gateway/cardinal/wire"
)

// snapshot queues the output's current value as a point. The shard lock is
// held.
func (m *Merger) snapshot(mg *merged, nowMs int64) {
	r := m.rules.Load()
	for i := range mg.inputs.len() {
		ip := mg.inputs.at(i)
		if ip.pending {
			return // wait until its value is known; it expires if it never comes
		}
	}
	stale := r.Staleness.Milliseconds()
	p := point{ts: max(min(mg.dataTs, nowMs+r.MaxAhead.Milliseconds()), mg.lastTs+1)}
	p.v, p.hasV = mg.floatValue(nowMs, stale)
	p.h = m.histogramValue(mg, nowMs, stale, m.reusableHistogram(mg))
	if !p.hasV && p.h == nil {
		// Nothing to say: a gauge without fresh inputs. If every input has
		// ended, expire queues the stale marker.
		mg.dirty = false
		return
	}
	if mg.kind == Counter && p.hasV {
		p.v = max(p.v, mg.lastV)
	}
	if mg.exemplar != nil {
		p.ex, mg.exemplar = mg.exemplar, nil
		p.ex.Timestamp = min(p.ex.Timestamp, p.ts)
	}
	m.queue(mg, p)
}

// reusableHistogram returns the histogram of the output's last queued
// point if queue is going to replace that point, so that its memory is
// reused; otherwise nil.
func (m *Merger) reusableHistogram(mg *merged) *histogram.FloatHistogram {
	if m.replacesLast(mg) {
		return mg.points[len(mg.points)-1].h
	}
	return nil
}

// replacesLast reports whether the next point queued replaces the last one
// instead of being appended: the global budget of pending points is spent,
// and the last point is not in a delivery.
func (m *Merger) replacesLast(mg *merged) bool {
	n := len(mg.points)
	return n > 0 && !mg.points[n-1].sent && m.pending.Load() >= int64(m.rules.Load().MaxPendingPoints)
}

// queue appends p to the output's points. Queues are bounded: an output
// whose queue is full drops every other point not in a delivery and from
// then on takes points twice as far apart in data time; when the global
// budget is spent, p replaces the output's last point. Both lose
// resolution (the dropped points were intermediate values), never totals,
// and the thinning keeps the shape of the data.
func (m *Merger) queue(mg *merged, p point) {
	if len(mg.points) >= maxPointsPerOutput {
		m.thin(mg)
	}
	if m.replacesLast(mg) {
		last := &mg.points[len(mg.points)-1]
		if p.ex == nil {
			p.ex = last.ex
		} else if last.ex != nil && mg.spareEx == nil {
			mg.spareEx = last.ex
		}
		*last = p
	} else {
		mg.points = append(mg.points, p)
		m.pending.Add(1)
	}
	mg.lastTs = p.ts
	if mg.kind == Counter && p.hasV && !p.stale {
		mg.lastV = p.v
	}
	mg.dirty = false
	mg.ended = p.stale
	mg.everQueued = true
}

// thin halves the points of an output that are not in a delivery, keeping
// the newest, and doubles the data time between the output's future points.
func (m *Merger) thin(mg *merged) {
	first := 0
	for first < len(mg.points) && mg.points[first].sent {
		first++
	}
	keep := mg.points[:first]
	unsent := mg.points[first:]
	// Keep the newest and every second one before it.
	start := (len(unsent) - 1) % 2
	for i := start; i < len(unsent); i += 2 {
		keep = append(keep, unsent[i])
	}
	removed := len(mg.points) - len(keep)
	clear(mg.points[len(keep):])
	mg.points = keep
	m.pending.Add(-int64(removed))
	if mg.scale < maxScale {
		mg.scale++
	}
}

// maxScale bounds the thinning: points at most 2^maxScale flush intervals
// apart.
const maxScale = 10

// queueStaleMarker ends the output downstream: its inputs have all ended.
func (m *Merger) queueStaleMarker(mg *merged, nowMs int64) {
	r := m.rules.Load()
	p := point{
		ts:    max(min(mg.dataTs, nowMs+r.MaxAhead.Milliseconds()), mg.lastTs+1),
		v:     math.Float64frombits(value.StaleNaN),
		hasV:  true,
		stale: true,
	}
	if mg.exemplar != nil {
		mg.spareEx, mg.exemplar = mg.exemplar, nil
	}
	m.queue(mg, p)
	m.metrics.staleMarkers.Inc()
}

// floatValue combines the float samples of the inputs.
func (mg *merged) floatValue(nowMs, stale int64) (float64, bool) {
	if mg.kind == Counter {
		v, any := mg.base, mg.base != 0
		for i := range mg.inputs.len() {
			ip := mg.inputs.at(i)
			if ip.has {
				v += ip.offset + ip.val
				any = true
			}
		}
		for _, r := range mg.retired {
			if r.has {
				v += r.offset + r.val
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
	for i := range mg.inputs.len() {
		ip := mg.inputs.at(i)
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

// histogramValue sums the native histograms of the inputs into dst (nil:
// a new histogram) and returns it, or nil when there is none. An input
// whose histogram cannot be added to the others is counted and skipped.
func (m *Merger) histogramValue(mg *merged, nowMs, stale int64, dst *histogram.FloatHistogram) *histogram.FloatHistogram {
	var sum *histogram.FloatHistogram
	add := func(h *histogram.FloatHistogram) {
		if h == nil {
			return
		}
		if sum == nil {
			if dst == nil {
				dst = &histogram.FloatHistogram{}
			}
			h.CopyTo(dst)
			sum = dst
			return
		}
		m.addHistogram(sum, h)
	}
	add(mg.baseHist)
	for i := range mg.inputs.len() {
		ip := mg.inputs.at(i)
		h := mg.hist(ip)
		if h == nil || h.hist == nil {
			continue
		}
		if h.hist.CounterResetHint == histogram.GaugeType {
			if !h.stale && nowMs-ip.seen <= stale {
				add(h.hist)
			}
			continue
		}
		add(h.offset)
		add(h.hist)
	}
	for _, r := range mg.retired {
		hist, offset := histOf(r.h)
		add(offset)
		add(hist)
	}
	if sum != nil && sum.CounterResetHint != histogram.GaugeType {
		// Merged data is the sum of inputs: Prometheus must not read a reset
		// hint of one input into it.
		sum.CounterResetHint = histogram.NotCounterReset
	}
	return sum
}

// errNaNZeroThreshold: see mergeableZeroThreshold.
var errNaNZeroThreshold = errors.New("native histogram with a NaN zero threshold cannot be merged")

// mergeableZeroThreshold reports whether Prometheus' histogram arithmetic
// can add fh to another: FloatHistogram.Add reconciles the two zero
// thresholds in a loop that runs until they are equal, which a NaN never
// is, so a NaN threshold (which Prometheus' receiver accepts) would hang
// the merger.
func mergeableZeroThreshold(fh *histogram.FloatHistogram) bool {
	return !math.IsNaN(fh.ZeroThreshold)
}

// decodeHistogramInto decodes an encoded prometheus.Histogram into fh,
// reusing its memory. A schema above 8 (9 to 52, which Prometheus accepts
// and reduces on receipt) is reduced to 8 as Prometheus does: its
// arithmetic only knows the schemas up to 8.
func decodeHistogramInto(data []byte, fh *histogram.FloatHistogram) error {
	if err := wire.DecodeFloatHistogram(data, fh); err != nil {
		return err
	}
	if !mergeableZeroThreshold(fh) {
		return errNaNZeroThreshold
	}
	if fh.Schema > histogram.ExponentialSchemaMax && !fh.UsesCustomBuckets() {
		return fh.ReduceResolution(histogram.ExponentialSchemaMax)
	}
	return nil
}
