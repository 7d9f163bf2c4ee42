package gateway

import (
	"fmt"
	"github.com/cardinal-gateway/cardinal/cardinality"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	promrelabel "github.com/prometheus/prometheus/model/relabel"
	"go.yaml.in/yaml/v2"

	"github.com/cardinal-gateway/cardinal/internal/rematch"
	"github.com/cardinal-gateway/cardinal/relabel"
	"github.com/cardinal-gateway/cardinal/wire"
)

// regexCost says how a rule's regex is matched, for the actions that use it:
// a regex the fast paths cannot take runs the regex engine on every label
// or value it sees, which is worth knowing before the traffic does.
func regexCost(rc *promrelabel.Config) string {
	switch rc.Action {
	case promrelabel.Replace, promrelabel.Keep, promrelabel.Drop, promrelabel.LabelMap, promrelabel.LabelDrop, promrelabel.LabelKeep:
	default:
		return ""
	}
	if rc.Regex.Regexp == nil {
		return ""
	}
	m := rematch.New(rc.Regex.Regexp)
	if !m.Fast() {
		return " [regex: the regex engine runs on every match]"
	}
	return " [regex: matched as " + m.Describe() + ", without the regex engine]"
}

// Explain writes what the compiled configuration will do, section by
// section, in words: what `cardinal check config` prints after the
// effective configuration.
func (c *Compiled) Explain(w io.Writer) {
	cfg := c.Config
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	d := cfg.Downstream
	p("downstream: forward to %s; a forward may take %s with up to %d retries (backoff %s to %s), then the sender gets 503",
		d.URL, time.Duration(d.Timeout), d.MaxRetries, time.Duration(d.MinBackoff), time.Duration(d.MaxBackoff))
	switch d.ProtobufMessage {
	case "v2":
		p("downstream.protobuf_message: remote write 2.0; if the downstream does not speak it (415, or 2xx without Written headers) the sender gets 502 and keeps the data")
	case "auto":
		p("downstream.protobuf_message: remote write 2.0 until the downstream shows it does not speak it (415, or 2xx without Written headers), then 1.0 for good")
	default:
		p("downstream.protobuf_message: remote write 1.0, which every receiver speaks (2.0 input keeps its data and metadata; start timestamps are lost)")
	}
	if c.Scope == nil {
		p("scope: rules, trace sampling and caps apply to every series")
	} else {
		p("scope: rules, trace sampling and caps apply to the series matching %s; every other series passes through untouched and unlimited", c.Scope)
	}
	if len(cfg.RelabelConfigs) == 0 {
		p("relabel_configs: none; series keep their labels")
	}
	for i, rc := range cfg.RelabelConfigs {
		p("relabel_configs[%d]: %s%s", i, describeRule(rc.Action, rc.SourceLabels, rc.Regex.String(), rc.TargetLabel, rc.Replacement), regexCost(rc))
	}
	if len(cfg.ExternalLabels) > 0 {
		var pairs []string
		for _, rc := range cfg.ExternalRelabelConfigs() {
			pairs = append(pairs, fmt.Sprintf("%s=%q", rc.TargetLabel, cfg.ExternalLabels[rc.TargetLabel]))
		}
		p("external_labels: after the rules, %s is added to every series in scope that lacks it (merged outputs included): the outputs of this instance stay apart from other instances'", strings.Join(pairs, ", "))
	}
	if tr := cfg.TraceSampling; len(tr.Labels) == 0 {
		p("trace_sampling: off")
	} else {
		keep := []string{}
		for _, m := range tr.AlwaysKeep {
			if m.Regex != "" {
				keep = append(keep, fmt.Sprintf("%s=~%q", m.Label, m.Regex))
			} else {
				keep = append(keep, fmt.Sprintf("%s!~%q", m.Label, m.NotRegex))
			}
		}
		always := ""
		if len(keep) > 0 {
			always = ", and always for series with " + strings.Join(keep, " or ")
		}
		p("trace_sampling: the labels %s become exemplars {trace_id, span_id} on %.4g %% of the traces (consistent by trace id)%s; the labels are removed",
			strings.Join(tr.Labels, ", "), 100*tr.Ratio, always)
	}
	l := cfg.Limits
	switch {
	case len(l.WorkloadLabels) == 0:
		p("limits: off; no series cap")
	default:
		limit := "unlimited"
		if l.MaxSeriesPerWorkload > 0 {
			limit = fmt.Sprint(l.MaxSeriesPerWorkload)
		}
		action := "new series over the cap are folded into their workload's overflow series (cardinal_overflow=\"true\")"
		if l.Mode == "dry_run" {
			action = "dry run: over the cap nothing is folded, only counted"
		}
		p("limits: a workload is %s; each may have %s active series (active: a sample within %s), %d overrides; %s; at most %d workloads",
			strings.Join(l.WorkloadLabels, "/"), limit, time.Duration(l.Window), len(l.Overrides), action, l.MaxWorkloads)
	}
	switch {
	case !cfg.EstimatesEnabled():
		p("cardinality: estimates off (cardinality.enabled: true turns them on)")
	default:
		p("cardinality: series per workload (%s) and metric before and after the rules, distinct values per label and churn, over the last %s (exact to %d values, then HyperLogLog, %.1f %% error); GET /api/v1/cardinality/labels",
			strings.Join(cfg.EstimateWorkloadLabels(), "/"), cfg.EstimateWindow(), cardinality.SmallMax, 100*cardinality.RelativeError)
	}
	if gd := cfg.Guard; gd.Mode != "" {
		what := "aggregates it away for that metric (the series collapse and are merged, totals kept)"
		if gd.Mode == "dry_run" {
			what = "records that it would aggregate it away, changing nothing (dry run)"
		}
		scope := "every series in scope"
		if len(gd.Scope) > 0 {
			scope = "the series matching " + strings.Join(gd.Scope, " or ")
		}
		gs := guardSettings(cfg)
		gs.Normalize()
		p("guard: on %s, when a label takes more than %d distinct values within one workload and metric in %s, Cardinal %s; it lifts after %s at or below; never touched: %s",
			scope, gd.GuardThreshold(), cfg.EstimateWindow(), what, gd.GuardLiftAfter(), strings.Join(gs.Never, ", "))
	}
	m := c.Merge
	p("merge: series that collapse into one are merged and emitted every %s (data timestamps, at most %s ahead), in batches of %d samples or %d bytes; an input without samples for %s leaves gauges, a stopped counter input is remembered for %s; at most %d live inputs",
		m.FlushInterval, m.MaxAhead, m.MaxSamplesPerSend, m.MaxBytesPerSend, m.Staleness, m.ForgetAfter, m.MaxInputs)
	for _, g := range m.Gauges {
		p("merge.gauges: %s combine by %s", strings.TrimSuffix(strings.TrimPrefix(g.Match.String(), "^(?:"), ")$"), g.Policy)
	}
	p("merge: other gauges combine by sum, summary quantiles by max (an upper bound of the pooled quantile)")
	for _, q := range m.Quantiles {
		p("merge.quantiles: %s combine by %s", strings.TrimSuffix(strings.TrimPrefix(q.Match.String(), "^(?:"), ")$"), q.Policy)
	}
	for _, t := range m.Types {
		p("merge.types: %s is a %s", strings.TrimSuffix(strings.TrimPrefix(t.Match.String(), "^(?:"), ")$"), t.Kind)
	}
	if m.StateFile == "" {
		p("merge.state_file: none: a restart loses the merged values (set one in production)")
	} else {
		p("merge.state_file: %s keeps the merged outputs across restarts", m.StateFile)
	}
	r := cfg.Receive
	p("receive: requests up to %d bytes decompressed; a body must arrive within %s (no byte for %s: 408)",
		r.MaxRequestBytes, time.Duration(r.BodyTimeout), time.Duration(r.BodyStallTimeout))
	memory := "the memory limit comes from CARDINAL_MEMORY_LIMIT or the cgroup, at start"
	if r.MemoryLimit > 0 {
		memory = fmt.Sprintf("a memory limit of %d bytes", r.MemoryLimit)
	}
	p("receive: %s; requests past the in-flight bounds (max_inflight_requests %s, max_inflight_bytes %s) or with the heap near the limit get 503",
		memory, orDerived(int64(r.MaxInflightRequests), "8 per core, at least 16"), orDerived(r.MaxInflightBytes, "30 % of the memory limit"))
	a := cfg.Admin
	if a.BearerTokenFile == "" {
		p("admin: mutating calls disabled (no admin.bearer_token_file)")
	} else {
		p("admin: mutating calls need the token in %s", a.BearerTokenFile)
	}
}

func orDerived(v int64, derived string) string {
	if v > 0 {
		return fmt.Sprint(v)
	}
	return derived
}

func describeRule(action promrelabel.Action, source model.LabelNames, regex, target, replacement string) string {
	src := make([]string, len(source))
	for i, s := range source {
		src[i] = string(s)
	}
	joined := strings.Join(src, ";")
	switch string(action) {
	case "keep":
		return fmt.Sprintf("keep only series whose %s matches %s", joined, regex)
	case "drop":
		return fmt.Sprintf("drop series whose %s matches %s", joined, regex)
	case "labelkeep":
		return fmt.Sprintf("keep only the labels matching %s", regex)
	case "labeldrop":
		return fmt.Sprintf("remove the labels matching %s", regex)
	case "replace":
		return fmt.Sprintf("set %s to %q where %s matches %s", target, replacement, joined, regex)
	case "labelmap":
		return fmt.Sprintf("copy labels matching %s to %q", regex, replacement)
	}
	return fmt.Sprintf("%s (source %s, regex %s, target %s)", action, joined, regex, target)
}

// Warnings lists what in the configuration is probably a mistake, found by
// running the compiled rules on typical series: a rule that removes
// __name__ (every series would then be dropped as invalid), rules that drop
// every series, and rules that remove le from histogram buckets (the
// buckets of a histogram collapse into one series and histogram_quantile
// breaks). Each names the first rule responsible.
func (c *Compiled) Warnings() []string {
	probes := [][]string{
		{"__name__", "http_request_duration_seconds_bucket", "app", "web", "instance", "10.0.0.1:8080", "job", "web", "le", "0.5", "namespace", "shop", "pod", "web-1"},
		{"__name__", "istio_requests_total", "app", "reviews", "destination_app", "ratings", "instance", "10.0.0.2:15090", "job", "kubernetes-pods", "namespace", "bookinfo", "pod", "reviews-1", "response_code", "200"},
		{"__name__", "up", "instance", "10.0.0.3:9090", "job", "prometheus"},
		{"__name__", "request_total", "deployment", "web", "direction", "inbound", "namespace", "emojivoto", "pod", "web-1"},
	}
	rules := c.Config.RelabelConfigs
	var warnings []string
	// firstRule returns the index of the first rule after which bad holds.
	firstRule := func(probe []string, bad func(ls []wire.Label, keep bool) bool) int {
		for k := 1; k <= len(rules); k++ {
			prog, err := relabel.Compile(rules[:k])
			if err != nil {
				return -1
			}
			ls, keep := prog.Apply(&relabel.Scratch{}, probeLabels(probe))
			if bad(ls, keep) {
				return k - 1
			}
		}
		return -1
	}
	noName := func(ls []wire.Label, keep bool) bool { return keep && wire.GetLabel(ls, "__name__") == nil }
	noLe := func(ls []wire.Label, keep bool) bool { return keep && wire.GetLabel(ls, "le") == nil }
	var unnamed []string
	nameRule, leRule := -1, -1
	dropped := 0
	for _, probe := range probes {
		if c.Scope != nil && !c.Scope.Matches(probeLabels(probe)) {
			continue
		}
		ls, keep := c.Relabel.Apply(&relabel.Scratch{}, probeLabels(probe))
		if !keep {
			dropped++
		}
		if noName(ls, keep) {
			unnamed = append(unnamed, probe[1])
			if nameRule < 0 {
				nameRule = firstRule(probe, noName)
			}
		}
		if probe[1] == "http_request_duration_seconds_bucket" && noLe(ls, keep) {
			leRule = firstRule(probe, noLe)
		}
	}
	if len(unnamed) > 0 {
		warnings = append(warnings, fmt.Sprintf("relabel_configs[%d] removes __name__: every series it applies to would be dropped as invalid (tried: %s)", nameRule, strings.Join(unnamed, ", ")))
	}
	if leRule >= 0 {
		warnings = append(warnings, fmt.Sprintf("relabel_configs[%d] removes le from histogram buckets: a histogram's buckets collapse into one series and histogram_quantile breaks", leRule))
	}
	if n := inScope(c, probes); dropped > 0 && dropped == n {
		warnings = append(warnings, fmt.Sprintf("relabel_configs drop every typical series tried (%d of %d): check the keep and drop rules", dropped, n))
	}
	return warnings
}

func inScope(c *Compiled, probes [][]string) int {
	n := 0
	for _, p := range probes {
		if c.Scope == nil || c.Scope.Matches(probeLabels(p)) {
			n++
		}
	}
	return n
}

// probeLabels builds sorted wire labels from name, value pairs.
func probeLabels(kv []string) []wire.Label {
	ls := make([]wire.Label, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		ls = append(ls, wire.Label{Name: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	slices.SortFunc(ls, wire.CompareLabelNames)
	return ls
}

// EffectiveYAML returns the configuration with every default filled in, as
// YAML (secrets are shown as <secret>).
func (c *Compiled) EffectiveYAML() ([]byte, error) { return yaml.Marshal(c.Config) }
