package relabel

import (
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/cardinal-gateway/cardinal/wire"
)

// meshSeries returns series shaped like Istio's istio_requests_total and
// request duration buckets: 13 or 14 labels each, with the request_id and
// user_agent labels a misconfigured sidecar injects.
func meshSeries() [][]labels.Label {
	base := func(name, src, dst, code string, extra ...string) []labels.Label {
		kv := []string{
			"__name__", name,
			"connection_security_policy", "mutual_tls",
			"destination_service", dst + ".default.svc.cluster.local",
			"destination_workload", dst + "-v1",
			"instance", "10.1.4.17:15020",
			"job", "kubernetes-pods",
			"namespace", "default",
			"pod", src + "-v1-7d4f9c8b6d-x9k2q",
			"reporter", "destination",
			"request_id", "6f1e2b3c-0d4a-4e5f-9a8b-7c6d5e4f3a2b",
			"response_code", code,
			"source_workload", src + "-v1",
			"user_agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
		}
		return sorted(pairs(append(kv, extra...)...))
	}
	return [][]labels.Label{
		base("istio_requests_total", "productpage", "reviews", "200"),
		base("istio_requests_total", "reviews", "ratings", "503"),
		base("istio_request_duration_milliseconds_bucket", "productpage", "details", "200", "le", "250"),
		base("istio_request_duration_milliseconds_bucket", "frontend", "cart", "404", "le", "+Inf"),
	}
}

const (
	allowlist     = `__name__|namespace|job|instance|destination_workload|source_workload|response_code|reporter|destination_service|le`
	allowlistRe   = `(__name__|namespace|job|instance|destination_workload|source_workload|response_code|reporter|destination_service|le)`
	allowlistRule = "- {regex: '" + allowlist + "', action: labelkeep}"
)

// zeroAllocPrograms are the rules Apply runs without allocating.
var zeroAllocPrograms = map[string]string{
	"labelkeep literal":   allowlistRule,
	"labelkeep regex":     "- {regex: '" + allowlistRe + "', action: labelkeep}",
	"labeldrop literal":   "- {regex: 'request_id|user_agent|trace_id', action: labeldrop}",
	"labeldrop regex":     "- {regex: 'request_.*|user_.*', action: labeldrop}",
	"keep literal":        "- {source_labels: [__name__], regex: 'istio_requests_total|istio_request_duration_milliseconds_bucket', action: keep}",
	"drop literal":        "- {source_labels: [response_code], regex: '404', action: drop}",
	"drop prefixes":       "- {source_labels: [__name__], regex: 'go_.*|process_.*|up', action: drop}",
	"keep regex":          "- {source_labels: [__name__], regex: 'istio_.*', action: keep}",
	"drop regex":          "- {source_labels: [response_code, reporter], regex: '5\\d\\d;source', action: drop}",
	"keepequal dropequal": "- {source_labels: [source_workload], target_label: destination_workload, action: dropequal}\n- {source_labels: [namespace], target_label: namespace, action: keepequal}",
	"replace copy":        "- {source_labels: [destination_workload], target_label: workload}",
	"replace static":      "- {source_labels: [reporter], regex: destination, target_label: side, replacement: server}",
	"replace join":        "- {source_labels: [namespace, destination_workload], separator: /, target_label: id}",
	"replace prefix":      "- {source_labels: [destination_service], regex: 'reviews(.*)', target_label: rest, replacement: 'r${1}'}",
	"replace template":    "- {source_labels: [reporter], target_label: 'is_${1}', replacement: 'yes'}",
	"replace delete":      "- {source_labels: [request_id], target_label: user_agent, replacement: ''}",
	"hashmod":             "- {source_labels: [pod, instance], target_label: shard, modulus: 16, action: hashmod}",
	"lowercase uppercase": "- {source_labels: [pod], target_label: pod, action: uppercase}\n- {source_labels: [pod], target_label: lower, action: lowercase}",
	"labelmap prefix":     "- {regex: 'destination_(.+)', replacement: 'dst_$1', action: labelmap}",
	"mixed": allowlistRule + `
- {source_labels: [__name__], regex: 'go_.*|process_.*', action: drop}
- {source_labels: [destination_workload], target_label: workload}
- {source_labels: [namespace, workload], separator: /, target_label: id}
- {source_labels: [id], target_label: shard, modulus: 8, action: hashmod}
- {target_label: cluster, replacement: eu-west-1}
- {target_label: env, replacement: prod}`,
}

// applyRun returns a function that applies p to a fresh copy of each of
// series, the way a request handler would.
func applyRun(tb testing.TB, p *Program, series [][]labels.Label) func() {
	tb.Helper()
	inputs := make([][]wire.Label, len(series))
	bufs := make([][]wire.Label, len(series))
	for i, ls := range series {
		inputs[i] = toWire(ls)
		bufs[i] = make([]wire.Label, len(ls))
	}
	var s Scratch
	return func() {
		s.Reset()
		for i, in := range inputs {
			copy(bufs[i], in)
			p.Apply(&s, bufs[i])
		}
	}
}

func TestApplyAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	series := meshSeries()
	f := func(name, rules string, want float64) {
		t.Helper()
		p, err := Compile(parseRules(t, rules))
		if err != nil {
			t.Fatal(err)
		}
		run := applyRun(t, p, series)
		run() // Warm up the Scratch and the regexp machine pools.
		if got := testing.AllocsPerRun(100, run); got != want {
			t.Errorf("%s: %v allocations per run of %d series, want %v", name, got, len(series), want)
		}
	}
	for name, rules := range zeroAllocPrograms {
		f(name, rules, 0)
	}
	// A replacement that needs a group of a real regex allocates the
	// submatch indexes, once per matching series.
	f("replace with a regex group",
		"- {source_labels: [pod], regex: '(.*)-[a-z0-9]+-[a-z0-9]+', target_label: workload}",
		float64(len(series)))
}
