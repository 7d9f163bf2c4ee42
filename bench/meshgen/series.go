package meshgen

import (
	"math"
	"slices"

	"github.com/prometheus/prometheus/prompb"
)

// Series returns the series of step (0, 1, 2, ...) with one sample each at
// timestamp ts (milliseconds). See AppendSeries for the ownership of the
// returned labels.
func (g *Generator) Series(step int, ts int64) []prompb.TimeSeries {
	return g.AppendSeries(nil, step, ts)
}

// AppendSeries appends the series of step to dst and returns the extended
// slice. Series are grouped by family in a fixed order; a histogram's
// buckets come in ascending le order followed by _sum and _count. Label
// names are sorted and include __name__, job, instance, namespace, app, pod
// and version.
//
// The Labels slices are shared with the Generator and with every other call
// (except the labels of churned series, which are fresh per call): treat them
// as read-only and copy before modifying. Samples are written into the
// Samples capacity left in dst's unused elements when there is any, so a
// caller that passes the previous result back as dst[:0] reuses it.
func (g *Generator) AppendSeries(dst []prompb.TimeSeries, step int, ts int64) []prompb.TimeSeries {
	start := len(dst)
	dst = slices.Grow(dst, g.nSeries)[:start+g.nSeries]
	out := dst[start:]

	// Slow path: churned injected values are new every step, so their
	// series' labels are rebuilt into a per-call arena.
	var vals []string
	var arena []prompb.Label
	if g.cfg.Churn && g.hcSeries > 0 {
		vals = g.injectedValues(step)
		arena = make([]prompb.Label, 0, g.hcLabels)
	}
	var samples []prompb.Sample
	for i := range g.units {
		u := &g.units[i]
		ser := out[u.first : u.first+u.seriesCount()]
		if u.hc >= 0 && vals != nil {
			arena = u.appendChurned(arena, vals[u.hc*len(g.inj):(u.hc+1)*len(g.inj)], ser)
		} else {
			for j := range ser {
				ser[j].Labels = g.labels[u.first+j]
			}
		}
		for j := range ser {
			s := &ser[j]
			s.Exemplars, s.Histograms = nil, nil
			if cap(s.Samples) == 0 {
				if len(samples) == 0 {
					samples = make([]prompb.Sample, g.nSeries-u.first)
				}
				s.Samples, samples = samples[:1:1], samples[1:]
			}
			s.Samples = s.Samples[:1]
			s.Samples[0].Timestamp = ts
		}
		u.values(step, ser)
	}
	return dst
}

// appendChurned builds the labels of u's series with the injected values vals
// into arena without touching u, which other goroutines may be reading.
func (u *unit) appendChurned(arena []prompb.Label, vals []string, ser []prompb.TimeSeries) []prompb.Label {
	start := len(arena)
	arena = append(arena, u.base...)
	base := arena[start:len(arena):len(arena)]
	for j, p := range u.inj {
		base[p].Value = vals[j]
	}
	tmp := *u
	tmp.base = base
	out := make([][]prompb.Label, len(ser))
	arena = tmp.appendLabels(arena, out)
	for j := range ser {
		ser[j].Labels = out[j]
	}
	return arena
}

// values writes the sample values of u's series for step.
func (u *unit) values(step int, ser []prompb.TimeSeries) {
	switch u.mode {
	case modeCounter:
		ser[0].Samples[0].Value = u.tr.at(step) * u.scale
	case modeGauge:
		h := unit01(mix(u.tr.key, uint64(step), 0x6a))
		ser[0].Samples[0].Value = math.Round(u.level * (0.8 + 0.4*h))
	case modeConst:
		ser[0].Samples[0].Value = u.level
	case modeHistogram:
		count := u.tr.at(step)
		for k, c := range u.cdf {
			ser[k].Samples[0].Value = math.Floor(count * c)
		}
		ser[len(u.cdf)-1].Samples[0].Value = count
		ser[len(u.cdf)].Samples[0].Value = count * u.scale
		ser[len(u.cdf)+1].Samples[0].Value = count
	}
}

// WriteRequests returns the series of step split into remote-write requests
// of at most seriesPerRequest series each (all in one request when
// seriesPerRequest <= 0). The requests share memory with each other and with
// the Generator as described at AppendSeries.
func (g *Generator) WriteRequests(step int, ts int64, seriesPerRequest int) []*prompb.WriteRequest {
	all := g.Series(step, ts)
	if seriesPerRequest <= 0 {
		seriesPerRequest = max(len(all), 1)
	}
	reqs := make([]*prompb.WriteRequest, 0, (len(all)+seriesPerRequest-1)/seriesPerRequest)
	for len(all) > 0 {
		n := min(seriesPerRequest, len(all))
		reqs = append(reqs, &prompb.WriteRequest{Timeseries: all[:n:n]})
		all = all[n:]
	}
	return reqs
}
