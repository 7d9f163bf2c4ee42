package meshgen

import (
	"bufio"
	"bytes"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
)

// parseText parses exposition text with expfmt and flattens it into the
// SumBy key → value form, histograms expanded into _bucket/_sum/_count.
func parseText(t *testing.T, r io.Reader) map[string]float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("expfmt cannot parse the exposition: %v", err)
	}
	out := map[string]float64{}
	put := func(name string, m *dto.Metric, v float64, extra ...string) {
		var b labels.ScratchBuilder
		b.Add("__name__", name)
		for _, lp := range m.GetLabel() {
			b.Add(lp.GetName(), lp.GetValue())
		}
		for i := 0; i < len(extra); i += 2 {
			b.Add(extra[i], extra[i+1])
		}
		b.Sort()
		k := b.Labels().String()
		if _, dup := out[k]; dup {
			t.Fatalf("series %s parsed twice", k)
		}
		out[k] = v
	}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				put(name, m, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				put(name, m, m.GetGauge().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				sawInf := false
				for _, bk := range h.GetBucket() {
					sawInf = sawInf || math.IsInf(bk.GetUpperBound(), 1)
					put(name+"_bucket", m, float64(bk.GetCumulativeCount()), "le", labels.FormatOpenMetricsFloat(bk.GetUpperBound()))
				}
				if !sawInf {
					put(name+"_bucket", m, float64(h.GetSampleCount()), "le", "+Inf")
				}
				put(name+"_sum", m, h.GetSampleSum())
				put(name+"_count", m, float64(h.GetSampleCount()))
			default:
				t.Fatalf("family %s has unexpected type %v", name, mf.GetType())
			}
		}
	}
	return out
}

func TestWriteTextMatchesSeries(t *testing.T) {
	for _, cfg := range []Config{medium, {Workloads: 6, PodsPerWorkload: 2, Churn: true}} {
		g := New(cfg)
		for _, step := range []int{0, 5} {
			var buf bytes.Buffer
			if err := g.WriteText(&buf, step); err != nil {
				t.Fatal(err)
			}
			checkContiguous(t, buf.Bytes())
			got := parseText(t, bytes.NewReader(buf.Bytes()))
			want := SumBy(g.Series(step, testTS), []string{"job", "instance"})
			if len(got) != len(want) || len(want) != g.NumSeries() {
				t.Fatalf("%+v step %d: text has %d series, Series %d (%d without job/instance)", cfg, step, len(got), g.NumSeries(), len(want))
			}
			for k, v := range want {
				if gv, ok := got[k]; !ok || gv != v {
					t.Fatalf("%+v step %d: series %s: text %v (present %v), Series %v", cfg, step, k, gv, ok, v)
				}
			}
		}
	}
}

// checkContiguous checks that each family's samples follow its own # TYPE
// line and that no family appears twice.
func checkContiguous(t *testing.T, text []byte) {
	t.Helper()
	seen := map[string]bool{}
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			cur = strings.Fields(rest)[0]
			if seen[cur] {
				t.Fatalf("family %s appears twice", cur)
			}
			seen[cur] = true
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		base := name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suf); ok && b == cur {
				base = b
			}
		}
		if base != cur {
			t.Fatalf("sample %q outside its family (current %s)", name, cur)
		}
		if strings.Contains(line, `job="`) || strings.Contains(line, `instance="`) {
			t.Fatalf("text carries job or instance: %s", line)
		}
	}
}

func TestWriteTextEscapes(t *testing.T) {
	nasty := "a\"b\\c\nd{e=\"f\"}, é"
	g := New(Config{Workloads: 3, PodsPerWorkload: 1, InjectedLabels: []string{"user_agent"}, Variants: 1,
		ValueFuncs: map[string]ValueFunc{"user_agent": func(dst []byte, _ uint64) []byte { return append(dst, nasty...) }}})
	var buf bytes.Buffer
	if err := g.WriteText(&buf, 0); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `user_agent="a\"b\\c\nd{e=\"f\"}, é"`) {
		t.Fatal("label value not escaped as the text format requires")
	}
	got := parseText(t, &buf)
	want := SumBy(g.Series(0, testTS), []string{"job", "instance"})
	n := 0
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("series %s: text %v, Series %v", k, got[k], v)
		}
		if strings.Contains(k, strconv.Quote(nasty)) {
			n++
		}
	}
	if n == 0 || n != g.NumHighCardSeries() {
		t.Fatalf("%d parsed series carry the escaped value, want %d", n, g.NumHighCardSeries())
	}
}

func TestWriteTextError(t *testing.T) {
	g := New(Config{Workloads: 3, PodsPerWorkload: 2})
	if err := g.WriteText(failWriter{}, 0); err == nil {
		t.Fatal("WriteText did not report the writer's error")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestHandler(t *testing.T) {
	g := New(Config{Workloads: 3, PodsPerWorkload: 2, Churn: true})
	srv := httptest.NewServer(g.Handler())
	defer srv.Close()
	get := func(method string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+"/metrics", nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}
	if resp, _ := get(http.MethodHead); resp.Header.Get(StepHeader) != "0" {
		t.Fatalf("HEAD reported step %q, want 0", resp.Header.Get(StepHeader))
	}
	for want := 0; want < 3; want++ {
		resp, body := get(http.MethodGet)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != TextContentType {
			t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if got := resp.Header.Get(StepHeader); got != strconv.Itoa(want) {
			t.Fatalf("scrape %d served step %s", want, got)
		}
		var exp bytes.Buffer
		if err := g.WriteText(&exp, want); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(body, exp.Bytes()) {
			t.Fatalf("scrape %d: body differs from WriteText of step %d", want, want)
		}
	}
	if resp, _ := get(http.MethodPost); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: status %d", resp.StatusCode)
	}
}

func TestHandlerConcurrent(t *testing.T) {
	g := New(Config{Workloads: 3, PodsPerWorkload: 2})
	h := g.Handler()
	const n = 8
	steps := make(chan string, n)
	for i := 0; i < n; i++ {
		go func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
			steps <- rec.Header().Get(StepHeader)
		}()
	}
	seen := map[string]bool{}
	for i := 0; i < n; i++ {
		s := <-steps
		if seen[s] {
			t.Fatalf("step %s served twice", s)
		}
		seen[s] = true
	}
}

var sinkSeries []prompb.TimeSeries

func BenchmarkSeries(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
	}{{"defaults", Config{}}, {"defaults-churn", Config{Churn: true}}} {
		b.Run(bc.name, func(b *testing.B) {
			g := New(bc.cfg)
			buf := g.Series(0, testTS)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				buf = g.AppendSeries(buf[:0], i, testTS)
			}
			sinkSeries = buf
			b.ReportMetric(float64(g.NumSeries())*float64(b.N)/b.Elapsed().Seconds(), "series/s")
		})
	}
}

func BenchmarkNew(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = New(Config{})
	}
}

func BenchmarkWriteText(b *testing.B) {
	g := New(Config{})
	var cw countWriter
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := g.WriteText(&cw, i); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(cw.n / int64(b.N))
	b.ReportMetric(float64(g.NumSeries())*float64(b.N)/b.Elapsed().Seconds(), "series/s")
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
