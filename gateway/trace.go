package gateway

import (
	"fmt"
	"math"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardinal-gateway/cardinal/config"
	"github.com/cardinal-gateway/cardinal/internal/bytesconv"
	"github.com/cardinal-gateway/cardinal/internal/rematch"
	"github.com/cardinal-gateway/cardinal/tracesample"
	"github.com/cardinal-gateway/cardinal/wire"
)

// Exemplar label names and the reasons an exemplar is kept.
const (
	exemplarTraceID = "trace_id"
	exemplarSpanID  = "span_id"
	keptSampled     = "sampled"
	keptError       = "error"
)

// traceRules is the compiled trace_sampling section.
type traceRules struct {
	labels []string
	// lengths has bit n set when a trace label name is n bytes long (n <
	// 64), so that most label names are rejected without a comparison.
	lengths    uint64
	long       bool // a trace label name of 64 bytes or more
	sampler    tracesample.Sampler
	alwaysKeep []traceMatcher
}

type traceMatcher struct {
	label  string
	re     *rematch.Matcher
	negate bool
}

func compileTrace(c config.TraceConfig) (*traceRules, error) {
	if len(c.Labels) == 0 {
		return nil, nil
	}
	s, err := tracesample.NewSampler(c.Ratio)
	if err != nil {
		return nil, fmt.Errorf("trace_sampling: %w", err)
	}
	tr := &traceRules{labels: c.Labels, sampler: s}
	for _, l := range c.Labels {
		if len(l) < 64 {
			tr.lengths |= 1 << len(l)
		} else {
			tr.long = true
		}
	}
	for i, m := range c.AlwaysKeep {
		expr, negate := m.Regex, false
		if m.NotRegex != "" {
			expr, negate = m.NotRegex, true
		}
		re, err := rematch.Compile(config.Anchor(expr))
		if err != nil {
			return nil, fmt.Errorf("trace_sampling.always_keep[%d]: %w", i, err)
		}
		tr.alwaysKeep = append(tr.alwaysKeep, traceMatcher{label: m.Label, re: re, negate: negate})
	}
	return tr, nil
}

// traceMetrics count what trace sampling did.
type traceMetrics struct {
	addedSampled prometheus.Counter
	addedError   prometheus.Counter
	malformed    prometheus.Counter
}

// find returns the value of the first label in ls that is a trace label,
// or nil.
func (tr *traceRules) find(ls []wire.Label) []byte {
	for i := range ls {
		if tr.isTraceLabel(ls[i].Name) {
			return ls[i].Value
		}
	}
	return nil
}

// errorSeries reports whether ls matches an always_keep matcher.
func (tr *traceRules) errorSeries(ls []wire.Label) bool {
	for i := range tr.alwaysKeep {
		m := &tr.alwaysKeep[i]
		v := wire.GetLabel(ls, m.label)
		if v == nil {
			continue
		}
		if m.re.Match(v) != m.negate {
			return true
		}
	}
	return false
}

// strip removes the trace labels from ls in place, so that the series
// collapses as if the rules had dropped them.
func (tr *traceRules) strip(ls []wire.Label) []wire.Label {
	for i := range ls {
		if tr.isTraceLabel(ls[i].Name) {
			// Slow path: the rules left a trace label in.
			out := ls[:i]
			for _, l := range ls[i+1:] {
				if !tr.isTraceLabel(l.Name) {
					out = append(out, l)
				}
			}
			return out
		}
	}
	return ls
}

func (tr *traceRules) isTraceLabel(name []byte) bool {
	if n := len(name); n < 64 && tr.lengths&(1<<n) == 0 || n >= 64 && !tr.long {
		return false
	}
	for _, l := range tr.labels {
		if l == string(name) {
			return true
		}
	}
	return false
}

// exemplify turns the trace id in the series' original labels into an
// exemplar on s, when the trace is sampled or the series is an error, at
// most once per output series per request (outHash). orig are the labels
// before relabeling. It reports whether orig carries a trace-id label at
// all, sampled or not.
func (g *Gateway) exemplify(tr *traceRules, ws *workspace, orig []wire.Label, s *wire.Series, outHash uint64) (traced bool) {
	v := tr.find(orig)
	if v == nil {
		return false
	}
	tc, ok := tracesample.Parse(v)
	if !ok {
		g.traceMetrics.malformed.Inc()
		return true
	}
	if len(s.Samples) == 0 {
		return true // exemplars go with float samples
	}
	last := s.Samples[0]
	for _, smp := range s.Samples[1:] {
		if smp.Timestamp >= last.Timestamp {
			last = smp
		}
	}
	if math.IsNaN(last.Value) {
		// A stale marker: the series is going away; an exemplar with a NaN
		// value would only hide a real one.
		return true
	}
	isError := tr.errorSeries(orig)
	if !isError && !tr.sampler.Sample(tc.TraceID) {
		return true
	}
	if _, done := ws.exemplified[outHash]; done {
		return true
	}
	ws.exemplified[outHash] = struct{}{}
	// Labels and hex live in per-request arenas; earlier windows stay
	// valid when an arena grows, because they keep the old array.
	labelsStart := len(ws.exLabels)
	start := len(ws.exBytes)
	ws.exBytes = tracesample.AppendTraceID(ws.exBytes, &tc)
	ws.exLabels = append(ws.exLabels, wire.Label{Name: bytesconv.Bytes(exemplarTraceID), Value: ws.exBytes[start:len(ws.exBytes):len(ws.exBytes)]})
	if tc.HasSpan {
		start = len(ws.exBytes)
		ws.exBytes = tracesample.AppendSpanID(ws.exBytes, &tc)
		ws.exLabels = append(ws.exLabels, wire.Label{Name: bytesconv.Bytes(exemplarSpanID), Value: ws.exBytes[start:len(ws.exBytes):len(ws.exBytes)]})
	}
	e := wire.Exemplar{
		Labels:    ws.exLabels[labelsStart:len(ws.exLabels):len(ws.exLabels)],
		Value:     last.Value,
		Timestamp: last.Timestamp,
	}
	exStart := len(ws.exemplars)
	ws.exemplars = append(ws.exemplars, s.Exemplars...) // exemplars the sender sent pass through
	ws.exemplars = append(ws.exemplars, e)
	s.Exemplars = ws.exemplars[exStart:len(ws.exemplars):len(ws.exemplars)]
	if isError {
		g.traceMetrics.addedError.Inc()
	} else {
		g.traceMetrics.addedSampled.Inc()
	}
	return true
}
