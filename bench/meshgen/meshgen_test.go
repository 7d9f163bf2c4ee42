package meshgen

import (
	"bytes"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
)

const testTS = 1_700_000_000_000

// medium covers every namespace of the catalogue at a fraction of the defaults.
var medium = Config{Workloads: 36, PodsPerWorkload: 2, Seed: 7}

func marshalAll(t *testing.T, g *Generator, step int) []byte {
	t.Helper()
	var out []byte
	for _, r := range g.WriteRequests(step, testTS, 500) {
		b, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

func TestDeterminism(t *testing.T) {
	for _, cfg := range []Config{medium, {Workloads: 3, PodsPerWorkload: 2, Churn: true, Seed: 1}} {
		a, b := New(cfg), New(cfg)
		for _, step := range []int{0, 3} {
			if !bytes.Equal(marshalAll(t, a, step), marshalAll(t, b, step)) {
				t.Fatalf("%+v step %d: two generators produced different series", cfg, step)
			}
			if !bytes.Equal(marshalAll(t, a, step), marshalAll(t, a, step)) {
				t.Fatalf("%+v step %d: one generator produced different series on a second call", cfg, step)
			}
			var ta, tb bytes.Buffer
			if err := a.WriteText(&ta, step); err != nil {
				t.Fatal(err)
			}
			if err := b.WriteText(&tb, step); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ta.Bytes(), tb.Bytes()) {
				t.Fatalf("%+v step %d: text differs", cfg, step)
			}
		}
	}
	other := medium
	other.Seed++
	if bytes.Equal(marshalAll(t, New(medium), 0), marshalAll(t, New(other), 0)) {
		t.Fatal("a different seed produced the same series")
	}
}

func TestLabelsValid(t *testing.T) {
	constant := func(dst []byte, _ uint64) []byte { return append(dst, "same"...) }
	for _, cfg := range []Config{
		medium,
		{Workloads: 3, PodsPerWorkload: 2, Churn: true},
		// Variants must not collide even when the values cannot tell them apart.
		{Workloads: 12, PodsPerWorkload: 2, InjectedLabels: []string{"user_agent"}, Variants: 8, HighCardShare: 0.9},
		{Workloads: 12, PodsPerWorkload: 2, InjectedLabels: []string{"x_tenant"}, Variants: 3, Churn: true,
			ValueFuncs: map[string]ValueFunc{"x_tenant": constant}},
	} {
		g := New(cfg)
		seen := map[string]bool{}
		for i, s := range g.Series(2, testTS) {
			ls := s.Labels
			if len(ls) == 0 || ls[0].Name != "__name__" {
				t.Fatalf("series %d: first label is not __name__: %v", i, ls)
			}
			if !model.LegacyValidation.IsValidMetricName(ls[0].Value) {
				t.Fatalf("series %d: invalid metric name %q", i, ls[0].Value)
			}
			var names []string
			for j, l := range ls {
				if j > 0 && ls[j-1].Name >= l.Name {
					t.Fatalf("series %d: labels not strictly sorted at %q, %q", i, ls[j-1].Name, l.Name)
				}
				if !model.LegacyValidation.IsValidLabelName(l.Name) {
					t.Fatalf("series %d: invalid label name %q", i, l.Name)
				}
				if l.Value == "" {
					t.Fatalf("series %d: label %q has an empty value", i, l.Name)
				}
				names = append(names, l.Name)
			}
			for _, want := range []string{"namespace", "app", "pod", "version", "job", "instance"} {
				if !slices.Contains(names, want) {
					t.Fatalf("series %d %s: no %s label", i, ls[0].Value, want)
				}
			}
			for _, n := range names {
				if !slices.Contains(generatedLabelNames, n) && !slices.Contains(g.inj, n) {
					t.Fatalf("series %d: label %q is not in generatedLabelNames", i, n)
				}
			}
			key := labelsKey(ls, nil)
			if seen[key] {
				t.Fatalf("series %d: duplicate label set %s", i, key)
			}
			seen[key] = true
			if len(s.Samples) != 1 || s.Samples[0].Timestamp != testTS || math.IsNaN(s.Samples[0].Value) || s.Samples[0].Value < 0 {
				t.Fatalf("series %d: bad samples %v", i, s.Samples)
			}
		}
	}
}

func labelsKey(ls []prompb.Label, drop []string) string {
	var b labels.ScratchBuilder
	for _, l := range ls {
		if !slices.Contains(drop, l.Name) {
			b.Add(l.Name, l.Value)
		}
	}
	b.Sort()
	return b.Labels().String()
}

func TestValuesAcrossSteps(t *testing.T) {
	g := New(medium)
	const steps = 6
	all := make([][]prompb.TimeSeries, steps)
	for s := range all {
		all[s] = g.Series(s, testTS+int64(s)*15000)
	}
	gaugesMoved := 0
	for ui := range g.units {
		u := &g.units[ui]
		for s := 0; s < steps; s++ {
			ser := all[s][u.first : u.first+u.seriesCount()]
			if s > 0 && !labelsEqual(ser[0].Labels, all[s-1][u.first].Labels) {
				t.Fatalf("%s: labels changed between steps without churn", u.fam.name)
			}
			switch u.mode {
			case modeCounter:
				if s > 0 && ser[0].Samples[0].Value < all[s-1][u.first].Samples[0].Value {
					t.Fatalf("counter %v decreased at step %d", ser[0].Labels, s)
				}
			case modeGauge:
				if s > 0 && ser[0].Samples[0].Value != all[s-1][u.first].Samples[0].Value {
					gaugesMoved++
				}
			case modeHistogram:
				nb := len(u.fam.le)
				for k := 0; k < nb; k++ {
					v := ser[k].Samples[0].Value
					if k > 0 && v < ser[k-1].Samples[0].Value {
						t.Fatalf("histogram %v: bucket %s below the previous one", ser[k].Labels, u.fam.le[k])
					}
					if s > 0 && v < all[s-1][u.first+k].Samples[0].Value {
						t.Fatalf("histogram bucket %v decreased at step %d", ser[k].Labels, s)
					}
				}
				inf, sum, count := ser[nb-1].Samples[0].Value, ser[nb].Samples[0].Value, ser[nb+1].Samples[0].Value
				if inf != count {
					t.Fatalf("histogram %s: +Inf bucket %g != _count %g", u.fam.name, inf, count)
				}
				if ser[nb].Labels[0].Value != u.fam.sumN || ser[nb+1].Labels[0].Value != u.fam.countN {
					t.Fatalf("histogram %s: _sum/_count out of place", u.fam.name)
				}
				if count > 0 && (sum <= 0 || sum/count > 1e7) {
					t.Fatalf("histogram %s: implausible _sum %g for _count %g", u.fam.name, sum, count)
				}
			}
		}
		if u.mode == modeCounter && u.fam == g.fams.istioRequests &&
			all[steps-1][u.first].Samples[0].Value <= all[0][u.first].Samples[0].Value {
			t.Fatalf("istio_requests_total %v did not grow in %d steps", all[0][u.first].Labels, steps)
		}
	}
	if gaugesMoved == 0 {
		t.Fatal("no gauge changed between steps")
	}
}

func hasInjected(ls []prompb.Label, inj []string) bool {
	for _, l := range ls {
		if slices.Contains(inj, l.Name) {
			return true
		}
	}
	return false
}

func TestHighCardShare(t *testing.T) {
	f := func(cfg Config, want, tol float64) {
		t.Helper()
		g := New(cfg)
		ss := g.Series(0, testTS)
		n := 0
		for _, s := range ss {
			if hasInjected(s.Labels, g.Config().InjectedLabels) {
				n++
			}
		}
		if n != g.NumHighCardSeries() {
			t.Fatalf("%+v: %d series carry injected labels, NumHighCardSeries says %d", cfg, n, g.NumHighCardSeries())
		}
		got := float64(n) / float64(len(ss))
		if math.Abs(got-want) > tol {
			t.Fatalf("%+v: high-cardinality share %.4f, want %.2f±%.2f", cfg, got, want, tol)
		}
	}
	f(medium, 0.3, 0.02)
	f(Config{Workloads: 36, PodsPerWorkload: 2, HighCardShare: 0.1}, 0.1, 0.02)
	f(Config{Workloads: 36, PodsPerWorkload: 2, HighCardShare: 0.7, Variants: 2}, 0.7, 0.02)
	f(Config{Workloads: 36, PodsPerWorkload: 2, HighCardShare: 1}, 1, 0)
	f(Config{Workloads: 36, PodsPerWorkload: 2, HighCardShare: -1}, 0, 0)
	f(Config{Workloads: 36, PodsPerWorkload: 2, InjectedLabels: []string{}}, 0, 0)
	f(Config{Workloads: 3, PodsPerWorkload: 2}, 0.3, 0.1) // coarse: few groups
}

func TestVariantsCollapse(t *testing.T) {
	g := New(medium)
	ss := g.Series(1, testTS)
	sums := SumBy(ss, g.Config().InjectedLabels)
	want := g.NumSeries() - g.NumHighCardSeries() + g.NumHighCardSeries()/g.Config().Variants
	if len(sums) != want {
		t.Fatalf("dropping the injected labels left %d series, want %d", len(sums), want)
	}
	// Dropping the per-pod labels as well collapses each workload's pods.
	byDefault := SumBy(ss, DroppedByDefault(g.Config().InjectedLabels))
	if len(byDefault) >= len(sums)/medium.PodsPerWorkload+len(sums)/10 {
		t.Fatalf("dropping pod labels left %d of %d series", len(byDefault), len(sums))
	}
	var total, totalSum float64
	for _, s := range ss {
		total += s.Samples[0].Value
	}
	for _, v := range byDefault {
		totalSum += v
	}
	if math.Abs(total-totalSum) > 1e-9*total {
		t.Fatalf("sums do not add up: %g vs %g", totalSum, total)
	}
}

func TestChurn(t *testing.T) {
	for _, churn := range []bool{false, true} {
		cfg := medium
		cfg.Churn = churn
		g := New(cfg)
		s0, s1 := g.Series(0, testTS), g.Series(1, testTS)
		changed, unchanged := 0, 0
		for i := range s0 {
			hc := hasInjected(s0[i].Labels, g.inj)
			same := labelsEqual(s0[i].Labels, s1[i].Labels)
			switch {
			case !hc && !same:
				t.Fatalf("churn=%v: labels of a series without injected labels changed: %v", churn, s0[i].Labels)
			case hc && same:
				unchanged++
			case hc && !same:
				changed++
				// Only the injected values may differ.
				if labelsKey(s0[i].Labels, g.inj) != labelsKey(s1[i].Labels, g.inj) {
					t.Fatalf("churn changed more than the injected labels: %v", s1[i].Labels)
				}
			}
		}
		if churn && (changed == 0 || unchanged > 0) {
			t.Fatalf("churn: %d injected series changed, %d did not", changed, unchanged)
		}
		if !churn && changed > 0 {
			t.Fatalf("no churn: %d injected series changed", changed)
		}
	}
}

func TestSumBy(t *testing.T) {
	ts := func(v float64, kv ...string) prompb.TimeSeries {
		s := prompb.TimeSeries{Samples: []prompb.Sample{{Value: v, Timestamp: 1}}}
		for i := 0; i < len(kv); i += 2 {
			s.Labels = append(s.Labels, prompb.Label{Name: kv[i], Value: kv[i+1]})
		}
		return s
	}
	f := func(in []prompb.TimeSeries, drop []string, want map[string]float64) {
		t.Helper()
		got := SumBy(in, drop)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("SumBy(%v) = %v, want %v", drop, got, want)
		}
	}
	in := []prompb.TimeSeries{
		ts(1, "__name__", "req_total", "pod", "a-1", "path", "/x"),
		ts(2, "pod", "a-2", "__name__", "req_total", "path", "/y"), // unsorted input
		ts(4, "__name__", "req_total", "pod", "a-2", "path", "/x"),
		ts(8, "__name__", "other", "pod", "a-1"),
		{Labels: []prompb.Label{{Name: "__name__", Value: "empty"}}},
	}
	f(in, nil, map[string]float64{
		`{__name__="req_total", path="/x", pod="a-1"}`: 1,
		`{__name__="req_total", path="/y", pod="a-2"}`: 2,
		`{__name__="req_total", path="/x", pod="a-2"}`: 4,
		`{__name__="other", pod="a-1"}`:                8,
	})
	f(in, []string{"path"}, map[string]float64{
		`{__name__="req_total", pod="a-1"}`: 1,
		`{__name__="req_total", pod="a-2"}`: 6,
		`{__name__="other", pod="a-1"}`:     8,
	})
	f(in, []string{"path", "pod"}, map[string]float64{`{__name__="req_total"}`: 7, `{__name__="other"}`: 8})
	// The latest sample counts.
	multi := ts(1, "__name__", "x")
	multi.Samples = append(multi.Samples, prompb.Sample{Value: 5, Timestamp: 3}, prompb.Sample{Value: 9, Timestamp: 2})
	f([]prompb.TimeSeries{multi}, nil, map[string]float64{`{__name__="x"}`: 5})
}

func TestShape(t *testing.T) {
	if testing.Short() {
		t.Skip("generates the default configuration")
	}
	for _, seed := range []uint64{0, 1, 42} {
		g := New(Config{Seed: seed})
		ss := g.Series(0, testTS)
		raw := 0
		for i := range ss {
			raw += ss[i].Size()
		}
		comp, reqs := 0, g.WriteRequests(0, testTS, 2000)
		for _, r := range reqs {
			b, err := r.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			comp += len(snappy.Encode(nil, b))
		}
		n := float64(len(ss))
		rawPer, compPer, share := float64(raw)/n, float64(comp)/n, float64(g.NumHighCardSeries())/n
		t.Logf("defaults seed %d: %d series/step, %.1f%% with injected labels, %.0f B raw/series, %.1f B snappy/series (%d requests of 2000)",
			seed, len(ss), 100*share, rawPer, compPer, len(reqs))
		if len(ss) < 30_000 || len(ss) > 120_000 {
			t.Errorf("seed %d: %d series per step, want 30k–120k", seed, len(ss))
		}
		if rawPer < 700 || rawPer > 1100 {
			t.Errorf("seed %d: %.0f raw bytes per series, want 700–1100", seed, rawPer)
		}
		if compPer < 60 || compPer > 100 {
			t.Errorf("seed %d: %.1f snappy bytes per series, want 60–100", seed, compPer)
		}
		if math.Abs(share-0.3) > 0.01 {
			t.Errorf("seed %d: share %.3f, want 0.3", seed, share)
		}
	}
	small := New(Config{Workloads: 3, PodsPerWorkload: 2})
	if n := small.NumSeries(); n < 100 || n > 1000 {
		t.Errorf("small config: %d series, want a few hundred", n)
	}
	t.Logf("Workloads 3 × 2 pods: %d series; Workloads 6 × 2 pods: %d series", small.NumSeries(), New(Config{Workloads: 6, PodsPerWorkload: 2}).NumSeries())
}

func TestSmallConfigCoversMeshes(t *testing.T) {
	f := func(cfg Config, want ...string) {
		t.Helper()
		names := map[string]bool{}
		for _, s := range New(cfg).Series(0, testTS) {
			names[s.Labels[0].Value] = true
		}
		for _, n := range want {
			if !names[n] {
				t.Fatalf("%+v: no %s series", cfg, n)
			}
		}
	}
	f(Config{Workloads: 3, PodsPerWorkload: 2}, "istio_requests_total", "istio_request_duration_milliseconds_bucket", "envoy_cluster_upstream_rq_total")
	f(Config{Workloads: 6, PodsPerWorkload: 2}, "istio_requests_total", "request_total", "response_latency_ms_bucket", "tcp_open_connections")
	f(medium, "istio_tcp_sent_bytes_total", "istio_request_messages_total", "envoy_server_memory_allocated")
}

func TestResponseCodes(t *testing.T) {
	g := New(Config{Workloads: 60, PodsPerWorkload: 2})
	byCode := map[string]float64{}
	var total float64
	failures := 0
	for _, s := range g.Series(0, testTS) {
		m := labelMap(s.Labels)
		switch m["__name__"] {
		case "istio_requests_total":
			byCode[m["response_code"][:1]] += s.Samples[0].Value
			total += s.Samples[0].Value
		case "response_total":
			if m["classification"] == "failure" {
				failures++
				if m["status_code"][0] != '5' && m["grpc_status"] == "" {
					t.Fatalf("Linkerd failure for status %s", m["status_code"])
				}
			}
		}
	}
	if s := byCode["5"] / total; s < 0.005 || s > 0.05 {
		t.Fatalf("5xx share of Istio requests %.3f, want about 2%%", s)
	}
	if s := byCode["2"] / total; s < 0.9 {
		t.Fatalf("2xx share of Istio requests %.3f, want most", s)
	}
	if byCode["4"] == 0 || failures == 0 {
		t.Fatalf("no 404s (%g) or no Linkerd failures (%d)", byCode["4"], failures)
	}
}

func labelMap(ls []prompb.Label) map[string]string {
	m := make(map[string]string, len(ls))
	for _, l := range ls {
		m[l.Name] = l.Value
	}
	return m
}

func TestValueFuncs(t *testing.T) {
	f := func(fn ValueFunc, re string) {
		t.Helper()
		r := regexp.MustCompile("^" + re + "$")
		seen := map[string]bool{}
		for key := uint64(0); key < 200; key++ {
			v := string(fn(nil, key))
			if !r.MatchString(v) {
				t.Fatalf("value %q does not match %s", v, re)
			}
			if string(fn([]byte("prefix"), key)) != "prefix"+v {
				t.Fatalf("value func does not append")
			}
			seen[v] = true
		}
		if len(seen) < 10 {
			t.Fatalf("only %d distinct values for %s", len(seen), re)
		}
	}
	f(RequestIDValue, `[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}`)
	f(TraceIDValue, `[0-9a-f]{32}`)
	f(SpanIDValue, `[0-9a-f]{16}`)
	f(TraceParentValue, `00-[0-9a-f]{32}-[0-9a-f]{16}-01`)
	f(HexValue, `[0-9a-f]{16}`)
	f(UserAgentValue, `[A-Za-z].+`)
	f(PathValue, `/\S+`)
	// The second half of a trace id is as random as the first.
	if a, b := string(TraceIDValue(nil, 1)), string(TraceIDValue(nil, 2)); a[16:] == b[16:] {
		t.Fatalf("trace ids share their low half: %s %s", a, b)
	}

	g := New(Config{Workloads: 3, PodsPerWorkload: 2, InjectedLabels: []string{"traceparent", "x_b3_sampled"},
		ValueFuncs: map[string]ValueFunc{"x_b3_sampled": func(dst []byte, key uint64) []byte { return append(dst, '1') }}})
	for _, s := range g.Series(0, testTS) {
		m := labelMap(s.Labels)
		if v, ok := m["x_b3_sampled"]; ok && v != "1" {
			t.Fatalf("custom value func not used: %q", v)
		}
		if v, ok := m["traceparent"]; ok && !strings.HasPrefix(v, "00-") {
			t.Fatalf("traceparent value %q", v)
		}
	}
}

func TestValidate(t *testing.T) {
	f := func(cfg Config, wantErr string) {
		t.Helper()
		err := cfg.Validate()
		if wantErr == "" {
			if err != nil {
				t.Fatalf("%+v: unexpected error %v", cfg, err)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("%+v: error %v, want it to contain %q", cfg, err, wantErr)
		}
	}
	f(Config{}, "")
	f(Config{Workloads: -1}, "invalid workloads -1")
	f(Config{PodsPerWorkload: -2}, "invalid pods per workload")
	f(Config{HighCardShare: 1.5}, "must be at most 1")
	f(Config{Variants: -1}, "invalid variants")
	f(Config{InjectedLabels: []string{"pod"}}, "already emits it")
	f(Config{InjectedLabels: []string{"__trace"}}, "not a plain label name")
	f(Config{InjectedLabels: []string{"user-agent"}}, "not a plain label name")
	f(Config{InjectedLabels: []string{"path", "path"}}, "listed twice")
	defer func() {
		if recover() == nil {
			t.Fatal("New accepted an invalid config")
		}
	}()
	New(Config{Workloads: -1})
}

func TestAllowlist(t *testing.T) {
	re := regexp.MustCompile("^(?:" + DefaultAllowlist + ")$")
	perPod := DroppedByDefault(nil)
	for _, n := range generatedLabelNames {
		if re.MatchString(n) == slices.Contains(perPod, n) {
			t.Errorf("label %q: in allowlist %v, per-pod %v", n, re.MatchString(n), slices.Contains(perPod, n))
		}
	}
	for _, n := range DefaultInjectedLabels() {
		if re.MatchString(n) {
			t.Errorf("injected label %q is in the allowlist", n)
		}
	}
	if !strings.Contains(ExampleRelabelYAML(), "regex: "+DefaultAllowlist+"\n") {
		t.Fatal("ExampleRelabelYAML does not carry the allowlist")
	}
}

func TestZeroAllocReuse(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	g := New(medium)
	buf := g.Series(0, testTS)
	step := 1
	allocs := testing.AllocsPerRun(20, func() {
		buf = g.AppendSeries(buf[:0], step, testTS)
		step++
	})
	if allocs != 0 {
		t.Fatalf("AppendSeries into a reused slice allocated %.1f times", allocs)
	}
}

func labelsEqual(a, b []prompb.Label) bool {
	return slices.EqualFunc(a, b, func(x, y prompb.Label) bool { return x.Name == y.Name && x.Value == y.Value })
}
