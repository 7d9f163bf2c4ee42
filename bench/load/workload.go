package load

import (
	"fmt"
	"strings"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/internal/rw2conv"
)

// DroppedMetricsRegex is the metric-name rule both targets apply before the
// label allowlist: Envoy's server-internal gauges are dropped outright.
const DroppedMetricsRegex = "envoy_server_.*"

// WorkloadConfig sizes the pre-generated traffic.
type WorkloadConfig struct {
	Mesh             meshgen.Config
	Steps            int           // scrapes; each one is every series once, counters advance
	SeriesPerRequest int           // series per remote-write request
	StepInterval     time.Duration // timestamp distance between steps (default 15s)
	// KeepPods adds the per-pod labels (pod, instance, target_addr) to the
	// allowlist, so that no two series collide: the no-collision workload.
	KeepPods bool
	// BareAllowlist writes the allowlist without the parentheses people
	// put around it, to compare with builds that only recognised that
	// spelling as a set of names.
	BareAllowlist bool
	// RW2 encodes the requests as remote write 2.0 (Cardinal only).
	RW2 bool
}

// Workload is the traffic of a run, encoded before anything is measured: the
// snappy-compressed remote-write bodies of every step. Request i of every
// step carries the same input series (at their step's values), so a sender
// that owns request index i sends each series in order, as a Prometheus
// shard does.
type Workload struct {
	cfg    WorkloadConfig
	gen    *meshgen.Generator
	baseTS int64
	// Bodies[step][i] is request i of step, snappy(prompb).
	Bodies [][][]byte
	// Samples[i] is the number of samples in request i (the same every step);
	// Kept[i] the number that survive DroppedMetricsRegex.
	Samples, Kept []int
	// Bytes is the total size of all bodies.
	Bytes int64
}

// NewWorkload generates and encodes every request of cfg.
func NewWorkload(cfg WorkloadConfig) (*Workload, error) {
	if err := cfg.Mesh.Validate(); err != nil {
		return nil, err
	}
	if cfg.Steps < 1 {
		return nil, fmt.Errorf("invalid steps %d: must be positive", cfg.Steps)
	}
	if cfg.SeriesPerRequest < 1 {
		return nil, fmt.Errorf("invalid series per request %d: must be positive", cfg.SeriesPerRequest)
	}
	if cfg.StepInterval <= 0 {
		cfg.StepInterval = 15 * time.Second
	}
	w := &Workload{cfg: cfg, gen: meshgen.New(cfg.Mesh)}
	// Timestamps end now: every sample is in the (recent) past, as a
	// scrape's are, and the merger's flush time is later than all of them.
	w.baseTS = time.Now().Add(-time.Duration(cfg.Steps) * cfg.StepInterval).UnixMilli()
	var raw []byte
	for step := range cfg.Steps {
		reqs := w.gen.WriteRequests(step, w.ts(step), cfg.SeriesPerRequest)
		bodies := make([][]byte, len(reqs))
		for i, req := range reqs {
			var err error
			if cfg.RW2 {
				raw, err = rw2conv.FromV1(req).Marshal()
			} else {
				raw, err = marshalAppend(raw[:0], req)
			}
			if err != nil {
				return nil, fmt.Errorf("cannot encode request %d of step %d: %w", i, step, err)
			}
			bodies[i] = snappy.Encode(nil, raw)
			w.Bytes += int64(len(bodies[i]))
			if step == 0 {
				w.Samples = append(w.Samples, len(req.Timeseries))
				w.Kept = append(w.Kept, keptSamples(req.Timeseries))
			}
		}
		w.Bodies = append(w.Bodies, bodies)
	}
	return w, nil
}

func marshalAppend(dst []byte, req *prompb.WriteRequest) ([]byte, error) {
	n := req.Size()
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	m, err := req.MarshalToSizedBuffer(dst)
	return dst[:m], err
}

func (w *Workload) ts(step int) int64 {
	return w.baseTS + int64(step)*w.cfg.StepInterval.Milliseconds()
}

// Config returns the configuration with defaults applied.
func (w *Workload) Config() WorkloadConfig {
	c := w.cfg
	c.Mesh = w.gen.Config()
	return c
}

// NumSeries returns the input series per step.
func (w *Workload) NumSeries() int { return w.gen.NumSeries() }

// RequestsPerStep returns how many requests make one step.
func (w *Workload) RequestsPerStep() int { return len(w.Samples) }

// Denied returns the label names that must not reach the downstream: the
// injected ones and the per-pod labels the allowlist drops.
func (w *Workload) Denied() []string {
	if w.cfg.KeepPods {
		return w.gen.Config().InjectedLabels
	}
	return meshgen.DroppedByDefault(w.gen.Config().InjectedLabels)
}

// Allowlist returns the labelkeep regex both targets run, written as people
// paste it: inside parentheses.
func (w *Workload) Allowlist() string {
	a := meshgen.DefaultAllowlist
	if w.cfg.KeepPods {
		a += "|pod|instance|target_addr"
	}
	if w.cfg.BareAllowlist {
		return a
	}
	return "(" + a + ")"
}

func keptSamples(ts []prompb.TimeSeries) int {
	n := 0
	for i := range ts {
		if !droppedMetric(ts[i].Labels) {
			n += len(ts[i].Samples)
		}
	}
	return n
}

// droppedMetric reports whether DroppedMetricsRegex drops the series.
func droppedMetric(ls []prompb.Label) bool {
	for _, l := range ls {
		if l.Name == "__name__" {
			return strings.HasPrefix(l.Value, strings.TrimSuffix(DroppedMetricsRegex, ".*"))
		}
	}
	return false
}

// Truth returns the output series a collision-merging proxy must deliver
// after the inputs of request i were last accepted at step lastStep[i] (-1:
// never): the kept series, allowlist applied, values of collapsing inputs
// summed (meshgen.SumBy), keyed like labels.Labels.String.
//
// Every input series counts with the last value it was sent with. Without
// churn that is the one of request i's last step; with churn, series whose
// injected values changed also stay inputs of their output (a merger
// forgets an input only after merge.staleness, far longer than a run) with
// the values of the step that last carried them.
func (w *Workload) Truth(lastStep []int) map[string]float64 {
	churn := w.cfg.Mesh.Churn
	maxStep := -1
	for _, s := range lastStep {
		maxStep = max(maxStep, s)
	}
	latest := map[string]prompb.TimeSeries{}
	var key []byte
	for step := 0; step <= maxStep; step++ {
		var reqs []*prompb.WriteRequest
		for i, last := range lastStep {
			if last < step || (!churn && last != step) {
				continue
			}
			if reqs == nil {
				reqs = w.gen.WriteRequests(step, w.ts(step), w.cfg.SeriesPerRequest)
			}
			for _, ts := range reqs[i].Timeseries {
				if droppedMetric(ts.Labels) {
					continue
				}
				key = key[:0]
				for _, l := range ts.Labels {
					key = append(append(append(append(key, l.Name...), 0xff), l.Value...), 0xff)
				}
				// The generator may reuse its buffers from call to call.
				c := prompb.TimeSeries{
					Labels:  append([]prompb.Label(nil), ts.Labels...),
					Samples: append([]prompb.Sample(nil), ts.Samples...),
				}
				for j := range c.Labels {
					c.Labels[j].Name = strings.Clone(c.Labels[j].Name)
					c.Labels[j].Value = strings.Clone(c.Labels[j].Value)
				}
				latest[string(key)] = c
			}
		}
	}
	in := make([]prompb.TimeSeries, 0, len(latest))
	for _, ts := range latest {
		in = append(in, ts)
	}
	return meshgen.SumBy(in, w.Denied())
}

// HighCardSeries returns the input series per step with injected labels.
func (w *Workload) HighCardSeries() int { return w.gen.NumHighCardSeries() }
