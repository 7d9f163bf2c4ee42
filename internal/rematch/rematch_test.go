package rematch

import (
	"fmt"
	"math/rand/v2"
	"regexp/syntax"
	"strings"
	"testing"

	"github.com/grafana/regexp"
)

// harnessAllowlist is the labelkeep allowlist of the load harness,
// written as people paste it: with its outer parentheses.
const harnessAllowlist = `(__name__|app|namespace|workload|source_workload|source_workload_namespace|` +
	`destination_workload|destination_workload_namespace|destination_service|destination_service_name|` +
	`destination_service_namespace|source_app|destination_app|source_version|destination_version|` +
	`request_protocol|response_code|response_flags|grpc_response_status|connection_security_policy|` +
	`reporter|direction|authority|deployment|pod_template_hash|le|quantile|tls|status_code|classification|` +
	`route_name|envoy_cluster_name|envoy_http_conn_manager_prefix|envoy_response_code|envoy_listener_address|srv_port|target_addr|target_ip|dst_namespace|dst_deployment)`

// relabelAnchor is how Prometheus' relabel.NewRegexp anchors an expression.
func relabelAnchor(expr string) string { return "^(?s:" + expr + ")$" }

// configAnchor is how the config anchors its other matchers.
func configAnchor(expr string) string { return "^(?:" + expr + ")$" }

// cases are expressions with the kind of fast path they must get ("" for
// the engine).
var cases = []struct {
	expr string
	fast bool
}{
	{harnessAllowlist, true},
	{strings.Trim(harnessAllowlist, "()"), true},
	{"__name__|job|instance", true},
	{"(?:__name__|(job|(instance)))", true},
	{"^(__name__|job)$", true},
	{"(?i)istio_requests_total", true},
	{"(?i)(istio_requests_total|envoy_cluster_upstream_rq)", true},
	{"(?i:Kelvin)|s", true},
	{"foo.*", true},
	{".*_total", true},
	{".*_total|.*_bucket|.*_count|go_.*|process_.*|up", true},
	{"(go|process|promhttp)_.*", true},
	{"istio_(requests|request_bytes|response_bytes)_(total|bucket|sum|count)", true},
	{".*grpc.*", true},
	{"envoy_.*_rq_.+", true},
	{"a.+b.*c", true},
	{"x?yz", true},
	{"[ab]c", true},
	{"", true},
	{"(.*)", true},
	{"(.+)", true},
	{".+", true},
	{"foo(.*)", true},
	{"prefix_(.+)", true},
	{"a.*.*b", true},
	{"a.+.+b", false},
	{"a|(?i)b", true},
	{"(?i)ab.*", false},
	{"[a-z]+_total", false},
	{"a\\b", false},
	{"\\d+", false},
	{"a{2,4}", true},
	{"(?m)^a$", false},
	{"\uFFFD", false},
	{"^a|b$", true},
	{"a^b", false},
	{"[^a]", false},
	{".", true},
	{"5..", true},
	{"(?s)5..", true},
	{"5..|4.9|200", true},
	{".x.", true},
	{"a.?b", true},
	{"a(?s:.)(.)b", true},
	{"4.{2}", true},
	{"5..+", false},
	{"5...*x", false},
	{"(?i)5..", true},
	{"(?i)a..", false},
}

// inputs returns strings to try against expr: its literals, their
// neighbours and hostile bytes.
func inputs(t testing.TB, expr string, rng *rand.Rand) []string {
	base := []string{"", "\n", "a", "b", "ab", "abc", "x", "\xff", "\xc3", "é", "K", "k", "\u212a", "s", "S", "\u017f",
		"_total", "foo", "go_", "go_x", "up", "upx", "process_\n", "grpc", "\ngrpc\n", "a\nb", "a\nbc", "yz", "xyz", "c",
		"\xff_total", "foo\xff", "KELVIN", "kelvin", "\u212aelvin", "500", "5xx", "50", "5000", "5\n0", "5é0", "5\xff\xff", "5\xc3\xa9",
		"5\xc3", "a\xc3b", "4\n9", "a\u212ab"}
	tree, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		t.Fatal(err)
	}
	var lits []string
	var walk func(*syntax.Regexp)
	walk = func(re *syntax.Regexp) {
		if re.Op == syntax.OpLiteral {
			lits = append(lits, string(re.Rune))
		}
		for _, s := range re.Sub {
			walk(s)
		}
	}
	walk(tree)
	out := append([]string(nil), base...)
	for _, l := range lits {
		out = append(out, l, strings.ToUpper(l), strings.ToLower(l), l+"x", "x"+l, l+"\n", "\n"+l, l+"\xff", l[:len(l)/2])
	}
	for range 400 {
		var b strings.Builder
		for range rng.IntN(4) {
			switch rng.IntN(6) {
			case 0:
				b.WriteString(base[rng.IntN(len(base))])
			default:
				if len(lits) > 0 {
					l := lits[rng.IntN(len(lits))]
					if rng.IntN(3) == 0 {
						l = strings.ToUpper(l)
					}
					b.WriteString(l)
				}
			}
		}
		out = append(out, b.String())
	}
	return out
}

func TestMatchesTheEngine(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range cases {
		for _, anchored := range []string{relabelAnchor(c.expr), configAnchor(c.expr)} {
			re := regexp.MustCompile(anchored)
			m := New(re)
			if m.Fast() != c.fast {
				t.Errorf("%q: fast = %v (%s), want %v", anchored, m.Fast(), m.Describe(), c.fast)
			}
			for _, in := range inputs(t, c.expr, rng) {
				if got, want := m.MatchString(in), re.MatchString(in); got != want {
					t.Errorf("%q (%s) on %q: got %v, want %v", anchored, m.Describe(), in, got, want)
				}
				if got, want := m.Match([]byte(in)), re.MatchString(in); got != want {
					t.Errorf("%q Match(%q): got %v, want %v", anchored, in, got, want)
				}
			}
		}
	}
}

func TestHarnessAllowlistIsASet(t *testing.T) {
	m := MustCompile(relabelAnchor(harnessAllowlist))
	want := fmt.Sprintf("%d literals", strings.Count(harnessAllowlist, "|")+1)
	if got := m.Describe(); got != want {
		t.Errorf("harness allowlist is decided by %q, want %q", got, want)
	}
}

func TestCaptures(t *testing.T) {
	for _, c := range []struct {
		expr        string
		whole       int
		restFrom    int
		restCapture bool
	}{
		{"a|b", 0, 0, false},
		{"(a|b)", 1, 0, false},
		{"((a|b))", 2, 0, false},
		{"(a)|(b)", -1, 0, false},
		{"(.*)", 1, 0, true},
		{"(.+)", 1, 0, true},
		{"foo(.*)", -1, 3, true},
		{"é(.+)", -1, 2, true},
		{"(?i)foo(.*)", -1, 0, false},
		{"foo(.*)bar", -1, 0, false},
		{"(foo)(.*)", -1, 0, false},
	} {
		m := MustCompile(relabelAnchor(c.expr))
		if got := m.WholeCaptures(); got != c.whole {
			t.Errorf("%q: WholeCaptures = %d, want %d", c.expr, got, c.whole)
		}
		from, ok := m.RestCapture()
		if ok != c.restCapture || (ok && from != c.restFrom) {
			t.Errorf("%q: RestCapture = %d, %v; want %d, %v", c.expr, from, ok, c.restFrom, c.restCapture)
		}
		// The claims must agree with the engine's submatches.
		for _, in := range []string{"a", "b", "foo", "foox", "foo\nbar", "éx", "é", "fooxbar"} {
			idx := m.Regexp().FindStringSubmatchIndex(in)
			if idx == nil {
				continue
			}
			if n := m.WholeCaptures(); n >= 0 {
				for g := 0; g <= n; g++ {
					if idx[2*g] != 0 || idx[2*g+1] != len(in) {
						t.Errorf("%q on %q: group %d is %v, claimed whole", c.expr, in, g, idx)
					}
				}
			}
			if from, ok := m.RestCapture(); ok && (idx[2] != from || idx[3] != len(in)) {
				t.Errorf("%q on %q: group 1 is %v, claimed [%d %d]", c.expr, in, idx[2:4], from, len(in))
			}
		}
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under -race")
	}
	for _, expr := range []string{harnessAllowlist, "(?i)(istio_requests_total|up)", ".*_total|go_.*|a.*b.*c", "[a-z]+", "5..|4.9"} {
		m := MustCompile(relabelAnchor(expr))
		in := []string{"destination_workload", "ISTIO_REQUESTS_TOTAL", "x_total", "axbxc", "nope", "\u212a", "503", "4x9"}
		if n := testing.AllocsPerRun(100, func() {
			for _, s := range in {
				m.MatchString(s)
			}
		}); n != 0 {
			t.Errorf("%q: %v allocations per run", expr, n)
		}
	}
}

// FuzzMatch checks the fast paths against the engine on any expression and
// input.
func FuzzMatch(f *testing.F) {
	for _, c := range cases {
		f.Add(c.expr, "destination_workload")
		f.Add(c.expr, "a\nb")
	}
	f.Fuzz(func(t *testing.T, expr, in string) {
		for _, anchored := range []string{relabelAnchor(expr), configAnchor(expr)} {
			re, err := regexp.Compile(anchored)
			if err != nil {
				return
			}
			m := New(re)
			if got, want := m.MatchString(in), re.MatchString(in); got != want {
				t.Fatalf("%q (%s) on %q: got %v, want %v", anchored, m.Describe(), in, got, want)
			}
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	for _, c := range []struct{ name, expr string }{
		{"allowlist", harnessAllowlist},
		{"prefix", "(go|process|promhttp)_.*"},
		{"suffix", ".*_total"},
		{"fold", "(?i)istio_requests_total"},
	} {
		in := []string{"destination_workload", "request_id", "go_gc_duration_seconds", "istio_requests_total", "trace_id", "pod"}
		b.Run(c.name+"/fast", func(b *testing.B) {
			m := MustCompile(relabelAnchor(c.expr))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				m.MatchString(in[i%len(in)])
			}
		})
		b.Run(c.name+"/regexp", func(b *testing.B) {
			re := regexp.MustCompile(relabelAnchor(c.expr))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				re.MatchString(in[i%len(in)])
			}
		})
	}
}
