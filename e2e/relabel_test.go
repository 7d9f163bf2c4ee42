package e2e

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/internal/promtest"
)

// frozenExporter serves the generator's text exposition, one step further on
// every scrape until lastStep, then lastStep forever, so that a test can
// compare the receiver's latest values with a known step.
func frozenExporter(t testing.TB, gen *meshgen.Generator, lastStep int) (*httptest.Server, *atomic.Int64) {
	var scrapes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		step := min(int(scrapes.Add(1))-1, lastStep)
		w.Header().Set("Content-Type", meshgen.TextContentType)
		if err := gen.WriteText(w, step); err != nil {
			// Prometheus gave up on the scrape (its timeout is 1 s, which a
			// loaded machine can exceed) and closed the connection: its
			// next scrape comes, and the test judges what arrives.
			t.Logf("exporter: %v", err)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &scrapes
}

// TestE2ERelabel: Prometheus agent scrapes a mesh exporter and remote-writes
// through Cardinal into a Prometheus receiver. Rules that do not collapse
// series: the injected request-level labels are dropped (each series exists
// once per scrape without them), Envoy's server gauges are dropped entirely.
func TestE2ERelabel(t *testing.T) {
	promtest.Binary(t)
	const lastStep = 4
	injected := meshgen.DefaultInjectedLabels()
	gen := meshgen.New(meshgen.Config{Workloads: 3, PodsPerWorkload: 2, Variants: 1, Seed: 42})
	exporter, scrapes := frozenExporter(t, gen, lastStep)

	receiver := promtest.Start(t, promtest.Options{RemoteWriteReceiver: true})
	gw := startCardinal(t, fmt.Sprintf(`
downstream:
  url: %s
  max_retries: 5
relabel_configs:
  - action: drop
    source_labels: [__name__]
    regex: envoy_server_.*
  - action: labeldrop
    regex: %s
`, receiver.WriteURL(), strings.Join(injected, "|")))
	sender := promtest.Start(t, promtest.Options{
		Agent:          true,
		ScrapeTargets:  []string{strings.TrimPrefix(exporter.URL, "http://")},
		RemoteWriteURL: gw.URL + "/api/v1/write",
	})

	// What must arrive: the exporter's last step without the injected labels
	// and without envoy_server_*. The generator's own job and instance labels
	// are left out of the comparison: the exposition does not carry them and
	// the scrape adds its own.
	want := map[string]float64{}
	for key, v := range meshgen.SumBy(gen.Series(lastStep, 0), append(injected, "job", "instance")) {
		if strings.Contains(key, `__name__="envoy_server_`) {
			continue
		}
		want[key] = v
	}
	if len(want) < 100 {
		t.Fatalf("only %d expected series: the workload is too small to mean anything", len(want))
	}

	ctx := context.Background()
	var got map[string]float64
	promtest.Eventually(t, 90*time.Second, func() (bool, string) {
		if scrapes.Load() <= lastStep {
			return false, fmt.Sprintf("%d scrapes so far", scrapes.Load())
		}
		samples, err := receiver.Query(ctx, `{job="mesh"}`)
		if err != nil {
			return false, err.Error()
		}
		got = map[string]float64{}
		for _, s := range samples {
			if s.Labels["instance"] == "" {
				return false, fmt.Sprintf("series without instance: %v", s.Labels)
			}
			if name := s.Labels["__name__"]; name == "up" || strings.HasPrefix(name, "scrape_") {
				continue // The scrape's own series, not the exporter's.
			}
			delete(s.Labels, "job")
			delete(s.Labels, "instance")
			got[labels.FromMap(s.Labels).String()] = s.Value
		}
		if diff := compareValues(got, want); diff != "" {
			return false, diff
		}
		return true, ""
	})

	for _, name := range injected {
		series, err := receiver.Series(ctx, fmt.Sprintf(`{%s=~".+"}`, name))
		if err != nil {
			t.Fatal(err)
		}
		if len(series) > 0 {
			t.Errorf("denied label %s reached the receiver on %d series, e.g. %v", name, len(series), series[0])
		}
	}
	if series, err := receiver.Series(ctx, `{__name__=~"envoy_server_.*"}`); err != nil || len(series) > 0 {
		t.Errorf("dropped family reached the receiver: %d series, err %v", len(series), err)
	}

	stats, err := sender.RemoteWriteStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Failed != 0 || stats.Dropped != 0 || stats.Succeeded() <= 0 {
		t.Errorf("sender: %+v; want no failed or dropped samples and some succeeded", stats)
	}
	fams := scrapeMetrics(t, gw.URL)
	for _, code := range []string{"400", "413", "415", "500", "502", "503"} {
		if v := familyValue(fams, "cardinal_received_requests_total", "code", code); v != 0 {
			t.Errorf("cardinal answered %s to %v requests", code, v)
		}
	}
	if v := familyValue(fams, "cardinal_dropped_samples_total", "reason", "relabel"); v == 0 {
		t.Errorf("cardinal_dropped_samples_total{reason=relabel} = 0, but envoy_server_* was dropped")
	}

	// Graceful shutdown: SIGTERM ends the process with exit code 0.
	if err := gw.stop(syscall.SIGTERM); err != nil {
		t.Errorf("cardinal did not exit cleanly on SIGTERM: %v", err)
	}
}

// compareValues returns "" when got and want hold the same series with the
// same values (relative tolerance 1e-9: values cross the text format).
func compareValues(got, want map[string]float64) string {
	var missing, wrong, extra []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case !(g == w || math.Abs(g-w) <= 1e-9*math.Max(math.Abs(g), math.Abs(w)) || (math.IsNaN(g) && math.IsNaN(w))):
			wrong = append(wrong, fmt.Sprintf("%s = %v, want %v", k, g, w))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			extra = append(extra, k)
		}
	}
	if len(missing)+len(wrong)+len(extra) == 0 {
		return ""
	}
	sort.Strings(missing)
	sort.Strings(wrong)
	sort.Strings(extra)
	return fmt.Sprintf("%d series received, %d expected: %d missing (e.g. %v), %d wrong (e.g. %v), %d unexpected (e.g. %v)",
		len(got), len(want), len(missing), first(missing), len(wrong), first(wrong), len(extra), first(extra))
}

func first(s []string) []string { return s[:min(len(s), 2)] }

// scrapeMetrics reads and parses a /metrics endpoint.
func scrapeMetrics(t testing.TB, baseURL string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := httpGet(baseURL + "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d %s", baseURL, code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// familyValue sums the counter or gauge series of a family whose label name
// has value (all series when name is "").
func familyValue(fams map[string]*dto.MetricFamily, family, name, value string) float64 {
	f, ok := fams[family]
	if !ok {
		return 0
	}
	sum := 0.0
	for _, m := range f.GetMetric() {
		if name != "" && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == name && l.GetValue() == value }) {
			continue
		}
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
	}
	return sum
}
