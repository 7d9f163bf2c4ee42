package reliability

import (
	"fmt"
	"hash/fnv"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/prompb"
	yaml "go.yaml.in/yaml/v2"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
)

// mergedFamilies are the metric names whose pods collapse: the rules below
// remove pod and instance from them only, so their series merge while the
// other families keep both labels and pass through unchanged.
const mergedFamilies = "istio_.*|envoy_cluster_upstream_cx_active"

// relabelRules is the relabel_configs of every test of the suite: the
// mesh allowlist (meshgen.DefaultAllowlist, which drops pod and instance)
// plus pod and instance for all but mergedFamilies. Both kinds of output
// are exercised: pass-through series (acknowledged after the downstream
// acknowledged them) and merged ones (acknowledged once absorbed).
func relabelRules() string {
	return fmt.Sprintf(`
  - source_labels: [__name__]
    regex: %[1]q
    target_label: pod
    replacement: ""
  - source_labels: [__name__]
    regex: %[1]q
    target_label: instance
    replacement: ""
  - action: labelkeep
    regex: %[2]q
`, mergedFamilies, meshgen.DefaultAllowlist+"|pod|instance")
}

// referenceRelabel parses relabelRules with Prometheus' own parser, to
// compute what Cardinal must make of every input with model/relabel.
func referenceRelabel(t testing.TB) []*relabel.Config {
	t.Helper()
	var cfgs []*relabel.Config
	if err := yaml.UnmarshalStrict([]byte(relabelRules()), &cfgs); err != nil {
		t.Fatal(err)
	}
	for _, c := range cfgs {
		if err := c.Validate(model.UTF8Validation); err != nil {
			t.Fatal(err)
		}
	}
	return cfgs
}

// meshInput is one input series of the traffic.
type meshInput struct {
	labels []prompb.Label
	key    string // canonical input labels
	out    *meshOutput
	shard  int
}

// meshOutput is one series after relabeling, fed by one input (passes
// through) or several (merged).
type meshOutput struct {
	key     string
	inputs  []int
	merged  bool
	counter bool // merged as a counter (name suffix)
}

// meshTraffic is the deterministic stream of the fault tests: steps of a
// meshgen cluster, every input series once per step, and what each input
// becomes after relabeling.
type meshTraffic struct {
	gen     *meshgen.Generator
	inputs  []meshInput
	outputs map[string]*meshOutput
	// values[step][i] is input i's value at step.
	values [][]float64
}

// newMeshTraffic generates steps of cfg and maps every input to its output
// with Prometheus' relabeling. shards is the number of sender shards; each
// input goes to one by the hash of its labels, as in Prometheus.
func newMeshTraffic(t testing.TB, cfg meshgen.Config, steps, shards int) *meshTraffic {
	return newMeshTrafficAs(t, cfg, steps, shards, nil)
}

// newMeshTrafficAs is newMeshTraffic for inputs whose labels reach Cardinal
// as asSent makes them (nil: as generated), e.g. after a scrape.
func newMeshTrafficAs(t testing.TB, cfg meshgen.Config, steps, shards int, asSent func([]prompb.Label) []prompb.Label) *meshTraffic {
	t.Helper()
	rules := referenceRelabel(t)
	gen := meshgen.New(cfg)
	tr := &meshTraffic{gen: gen, outputs: map[string]*meshOutput{}}
	for step := range steps {
		series := gen.Series(step, 0)
		vals := make([]float64, len(series))
		for i := range series {
			vals[i] = series[i].Samples[0].Value
		}
		tr.values = append(tr.values, vals)
		if step > 0 {
			continue
		}
		for i, s := range series {
			if asSent != nil {
				s.Labels = asSent(s.Labels)
			}
			var b labels.ScratchBuilder
			for _, l := range s.Labels {
				b.Add(l.Name, l.Value)
			}
			b.Sort()
			in := b.Labels()
			lb := labels.NewBuilder(in)
			keep := relabel.ProcessBuilder(lb, rules...)
			out := lb.Labels()
			if !keep {
				t.Fatalf("the rules drop %s", in)
			}
			h := fnv.New64a()
			h.Write([]byte(in.String()))
			okey := out.String()
			o := tr.outputs[okey]
			if o == nil {
				name := out.Get(model.MetricNameLabel)
				o = &meshOutput{key: okey, counter: isCounterName(name)}
				tr.outputs[okey] = o
			}
			o.inputs = append(o.inputs, i)
			tr.inputs = append(tr.inputs, meshInput{labels: s.Labels, key: in.String(), out: o, shard: int(h.Sum64() % uint64(shards))})
		}
	}
	for _, o := range tr.outputs {
		o.merged = len(o.inputs) > 1
	}
	return tr
}

// counts returns the number of pass-through outputs, merged outputs and
// the inputs that feed them.
func (tr *meshTraffic) counts() (pass, merged, mergedInputs int) {
	for _, o := range tr.outputs {
		if o.merged {
			merged++
			mergedInputs += len(o.inputs)
		} else {
			pass++
		}
	}
	return pass, merged, mergedInputs
}

// isCounterName says whether the merger sums a series as a counter by its
// name (meshgen sends no metadata).
func isCounterName(name string) bool {
	for _, suffix := range []string{"_total", "_count", "_sum", "_bucket"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}
