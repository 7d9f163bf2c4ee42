package selector

import (
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/cardinal-gateway/cardinal/wire"
)

func wl(kv ...string) []wire.Label {
	var ls []wire.Label
	for i := 0; i < len(kv); i += 2 {
		ls = append(ls, wire.Label{Name: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	return ls
}

func TestMatches(t *testing.T) {
	f := func(sel []string, ls []wire.Label, want bool) {
		t.Helper()
		s, err := Parse(sel)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Matches(ls); got != want {
			t.Errorf("%v on %v = %v, want %v", sel, ls, got, want)
		}
	}
	mesh := []string{`{__name__=~"istio_.*|envoy_.*"}`}
	f(mesh, wl("__name__", "istio_requests_total", "app", "a"), true)
	f(mesh, wl("__name__", "envoy_cluster_upstream_rq_total"), true)
	f(mesh, wl("__name__", "net_conntrack_dialer_conn_failed_total", "dialer_name", "x"), false)
	f(mesh, wl("__name__", "xistio_requests_total"), false)
	f([]string{`{job="linkerd-proxy"}`, `up`}, wl("__name__", "up", "job", "x"), true)
	f([]string{`{job="linkerd-proxy"}`}, wl("__name__", "request_total", "job", "linkerd-proxy"), true)
	f([]string{`{job!="linkerd-proxy"}`}, wl("__name__", "request_total"), true) // absent is ""
	f([]string{`{pod=""}`}, wl("__name__", "x"), true)
	f(nil, wl("__name__", "x"), false)
}

// Differential: the same answer as Prometheus' matchers on labels.Labels.
func TestMatchesLikePrometheus(t *testing.T) {
	sels := []string{`{__name__=~"istio_.*|envoy_.*"}`, `{job=~"a|b", code!~"5.."}`, `http_requests_total{code="200"}`, `{__name__=~".+_total", x!=""}`}
	sets := [][]string{
		{"__name__", "istio_requests_total", "job", "a", "code", "200"},
		{"__name__", "http_requests_total", "code", "200"},
		{"__name__", "http_requests_total", "code", "500", "job", "b"},
		{"__name__", "up", "job", "b"},
		{"__name__", "foo_total", "x", "1"},
		{"__name__", "foo_total"},
	}
	p := parser.NewParser(parser.Options{})
	for _, sel := range sels {
		s, err := Parse([]string{sel})
		if err != nil {
			t.Fatal(err)
		}
		ms, _ := p.ParseMetricSelector(sel)
		for _, kv := range sets {
			ls := labels.FromStrings(kv...)
			want := true
			for _, m := range ms {
				if !m.Matches(ls.Get(m.Name)) {
					want = false
				}
			}
			if got := s.Matches(wl(kv...)); got != want {
				t.Errorf("%s on %v: %v, Prometheus says %v", sel, kv, got, want)
			}
		}
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := Parse([]string{`{__name__=~"("}`}); err == nil {
		t.Error("a bad regex parsed")
	}
	if _, err := Parse([]string{`rate(x[5m])`}); err == nil {
		t.Error("an expression parsed as a selector")
	}
}

func TestMatchesAllocatesNothing(t *testing.T) {
	s, _ := Parse([]string{`{__name__=~"istio_.*|envoy_.*"}`, `{job="linkerd-proxy"}`})
	ls := wl("__name__", "net_conntrack_dialer_conn_failed_total", "job", "prometheus")
	if n := testing.AllocsPerRun(100, func() { s.Matches(ls) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}
