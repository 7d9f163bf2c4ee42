package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/internal/promtest"
	"github.com/cardinal-gateway/cardinal/merge"
)

// churnFamily is the counter family the churn layer adds request-level
// series to.
const churnFamily = "istio_requests_total"

// churnSeries is one request-level series of the churn layer: a real
// workload's istio_requests_total labels plus a fresh request_id. It is
// exposed from scrape birth for life scrapes, starting at start and growing
// by inc per scrape, then it disappears for good.
type churnSeries struct {
	labels      map[string]string
	birth, life int
	start, inc  float64
}

func (c *churnSeries) alive(step int) bool { return step >= c.birth && step < c.birth+c.life }

func (c *churnSeries) value(step int) float64 { return c.start + c.inc*float64(step-c.birth) }

// churnExporter serves the generator's exposition plus the churn layer, one
// step further on every scrape until lastStep, then the text of lastStep
// forever. Every step is rendered before the first scrape, so that serving
// is one Write and a scrape never times out on the exporter's side. It
// records the last value it exposed of every series, keyed by the series'
// labels as exposed (without job and instance, which the scrape adds).
type churnExporter struct {
	gen      *meshgen.Generator
	lastStep int
	churn    []churnSeries
	scrapes  atomic.Int64               // requests received
	served   atomic.Int64               // responses written completely and recorded
	texts    [][]byte                   // by step
	values   []map[string]exposedSeries // by step
	failed   atomic.Int64               // responses not written completely

	mu   sync.Mutex
	last map[string]exposedSeries
}

type exposedSeries struct {
	labels map[string]string
	value  float64
}

// newChurnExporter picks the churn outputs and draws the churn layer.
//
// Churn goes to two kinds of outputs, both real workloads' request counters:
// churnOnly outputs are the label set of a real istio_requests_total series
// with response_code 503 and response_flags UF, which no stable series has,
// so their whole value comes from short-lived request_id series (an output
// that starts as a single pass-through input and becomes merged); mixed
// outputs are the label set of a stable series, so request_id series join an
// output that the pods already merge. Both kinds draw on the same workloads.
func newChurnExporter(t testing.TB, gen *meshgen.Generator, lastStep, churnOnly, mixed, perStep int, seed uint64) *churnExporter {
	e := &churnExporter{gen: gen, lastStep: lastStep, last: map[string]exposedSeries{}}
	// One base series per distinct workload-level output, all pods of it.
	type base struct{ pods []map[string]string }
	var bases []*base
	byOutput := map[string]*base{}
	for _, s := range gen.Series(0, 0) {
		m := map[string]string{}
		for _, l := range s.Labels {
			if l.Name != "job" && l.Name != "instance" {
				m[l.Name] = l.Value
			}
		}
		if m["__name__"] != churnFamily || m["response_code"] != "200" || m["pod"] == "" {
			continue
		}
		key := mergeOutputKey(m)
		b := byOutput[key]
		if b == nil {
			b = &base{}
			byOutput[key] = b
			bases = append(bases, b)
		}
		b.pods = append(b.pods, m)
	}
	if len(bases) < max(churnOnly, mixed) {
		t.Fatalf("only %d distinct %s outputs, want %d", len(bases), churnFamily, max(churnOnly, mixed))
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	targets := slices.Concat(bases[:churnOnly], bases[:mixed])
	for i, b := range targets {
		for step := range lastStep {
			for range perStep {
				pod := b.pods[rng.IntN(len(b.pods))]
				m := make(map[string]string, len(pod)+1)
				for k, v := range pod {
					m[k] = v
				}
				if i < churnOnly {
					m["response_code"], m["response_flags"] = "503", "UF"
				}
				m["request_id"] = fmt.Sprintf("%016x", rng.Uint64())
				e.churn = append(e.churn, churnSeries{
					labels: m,
					birth:  step,
					life:   1 + rng.IntN(3),
					start:  float64(1 + rng.IntN(3)),
					inc:    float64(1 + rng.IntN(2)),
				})
			}
		}
	}
	for step := range lastStep + 1 {
		text, values, err := e.render(step)
		if err != nil {
			t.Fatal(err)
		}
		e.texts, e.values = append(e.texts, text), append(e.values, values)
	}
	return e
}

func (e *churnExporter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	step := min(int(e.scrapes.Add(1))-1, e.lastStep)
	w.Header().Set("Content-Type", meshgen.TextContentType)
	if _, err := w.Write(e.texts[step]); err != nil {
		// Prometheus gave up on the scrape: it saw none of these values.
		e.failed.Add(1)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, v := range e.values[step] {
		e.last[k] = v
	}
	e.served.Add(1)
}

// render returns the exposition of step and the values it exposes.
func (e *churnExporter) render(step int) ([]byte, map[string]exposedSeries, error) {
	var buf bytes.Buffer
	if err := e.gen.WriteText(&buf, step); err != nil {
		return nil, nil, err
	}
	values := map[string]exposedSeries{}
	for _, s := range e.gen.Series(step, 0) {
		m := make(map[string]string, len(s.Labels))
		for _, l := range s.Labels {
			if l.Name != "job" && l.Name != "instance" {
				m[l.Name] = l.Value
			}
		}
		values[labels.FromMap(m).String()] = exposedSeries{labels: m, value: s.Samples[0].Value}
	}
	// The churned series go inside their family's block, after its last
	// sample, so the exposition stays one block per family.
	var lines []byte
	for i := range e.churn {
		c := &e.churn[i]
		if !c.alive(step) {
			continue
		}
		v := c.value(step)
		lines = appendSample(lines, c.labels, v)
		values[labels.FromMap(c.labels).String()] = exposedSeries{labels: c.labels, value: v}
	}
	text := buf.Bytes()
	typeLine := []byte("# TYPE " + churnFamily + " counter\n")
	at := bytes.Index(text, typeLine)
	if at < 0 {
		return nil, nil, fmt.Errorf("no %q in the exposition", typeLine)
	}
	at += len(typeLine)
	if next := bytes.Index(text[at:], []byte("\n# HELP ")); next >= 0 {
		at += next + 1
	} else {
		at = len(text)
	}
	return slices.Concat(text[:at], lines, text[at:]), values, nil
}

// exposed returns a copy of the last exposed value of every series.
func (e *churnExporter) exposed() map[string]exposedSeries {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]exposedSeries, len(e.last))
	for k, v := range e.last {
		out[k] = v
	}
	return out
}

// finalExposed is what exposed returns once every step was served: the
// last value of every series of the run, known before it starts.
func (e *churnExporter) finalExposed() map[string]exposedSeries {
	out := map[string]exposedSeries{}
	for _, values := range e.values {
		for k, v := range values {
			out[k] = v
		}
	}
	return out
}

// appendSample appends one text exposition line with sorted labels.
func appendSample(dst []byte, m map[string]string, v float64) []byte {
	names := make([]string, 0, len(m))
	for k := range m {
		if k != "__name__" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	dst = append(dst, m["__name__"]...)
	dst = append(dst, '{')
	for i, n := range names {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, n...)
		dst = append(dst, `="`...)
		dst = append(dst, strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(m[n])...)
		dst = append(dst, '"')
	}
	dst = append(dst, "} "...)
	dst = strconv.AppendFloat(dst, v, 'g', -1, 64)
	return append(dst, '\n')
}

// mergeAllowlist is meshgen.DefaultAllowlist as the labelkeep rule applies it.
var mergeAllowlist = regexp.MustCompile("^(?:" + meshgen.DefaultAllowlist + ")$")

// mergeOutputKey is the output label set of an exposed series: the labels the
// allowlist keeps, without job (the scrape sets job="mesh"; the comparison
// checks it separately).
func mergeOutputKey(exposed map[string]string) string {
	m := make(map[string]string, len(exposed))
	for k, v := range exposed {
		if k != "job" && mergeAllowlist.MatchString(k) {
			m[k] = v
		}
	}
	return labels.FromMap(m).String()
}

// isCounterName says whether merging sums a series as a counter by its name.
func isCounterName(name string) bool {
	for _, suffix := range []string{"_total", "_count", "_sum", "_bucket"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

// mergeTruth computes what the receiver must hold: for every counter output
// the sum over all inputs ever exposed of their last value (a vanished input
// keeps contributing, a new one counts from zero), and the set of all
// outputs, gauges included.
func mergeTruth(exposed map[string]exposedSeries) (counters map[string]float64, outputs map[string]bool) {
	counters, outputs = map[string]float64{}, map[string]bool{}
	for _, s := range exposed {
		key := mergeOutputKey(s.labels)
		outputs[key] = true
		if isCounterName(s.labels["__name__"]) {
			counters[key] += s.value
		}
	}
	return counters, outputs
}

// compareMerged checks the receiver's latest values: every expected counter
// output present and within tol relative of the truth, every output present
// and nothing else. It also returns the largest relative deviation seen.
func compareMerged(got, counters map[string]float64, outputs map[string]bool, tol float64) (diff string, maxRel float64) {
	var missing, wrong, extra []string
	for k := range outputs {
		g, ok := got[k]
		if !ok {
			missing = append(missing, k)
			continue
		}
		w, isCounter := counters[k]
		if !isCounter {
			continue
		}
		rel := math.Abs(g-w) / math.Max(math.Abs(w), 1e-300)
		if g == w {
			rel = 0
		}
		maxRel = max(maxRel, rel)
		if !(rel <= tol) {
			wrong = append(wrong, fmt.Sprintf("%s = %v, want %v", k, g, w))
		}
	}
	for k := range got {
		if !outputs[k] {
			extra = append(extra, k)
		}
	}
	if len(missing)+len(wrong)+len(extra) == 0 {
		return "", maxRel
	}
	sort.Strings(missing)
	sort.Strings(wrong)
	sort.Strings(extra)
	return fmt.Sprintf("%d series received, %d expected (%d counters): %d missing (e.g. %v), %d wrong (e.g. %v), %d unexpected (e.g. %v)",
		len(got), len(outputs), len(counters), len(missing), first(missing), len(wrong), first(wrong), len(extra), first(extra)), maxRel
}

// TestE2EMerge (issue "Collision-safe label dropping"): Prometheus agent
// scrapes a mesh exporter whose pods collapse into one series per workload
// once the allowlist drops pod and instance, plus request-level series that
// carry a fresh request_id every scrape, live one to three scrapes and
// vanish (Prometheus then sends stale markers). Cardinal merges every
// collapsed output; the receiver must hold each counter output's true sum,
// must never have refused a sample (duplicates or out-of-order samples are
// 400s), and the sender must have lost nothing.
func TestE2EMerge(t *testing.T) {
	promtest.Binary(t)
	start := time.Now()
	const (
		lastStep  = 8
		churnOnly = 4 // outputs fed by request-level series only
		mixed     = 2 // outputs fed by pods and request-level series
		perStep   = 2 // new request ids per churned output and scrape
	)
	gen := meshgen.New(meshgen.Config{Workloads: 6, PodsPerWorkload: 3, Variants: 1, HighCardShare: -1, Seed: 7})
	exp := newChurnExporter(t, gen, lastStep, churnOnly, mixed, perStep, 7)
	exporter := httptest.NewServer(exp)
	t.Cleanup(exporter.Close)

	receiver := promtest.Start(t, promtest.Options{RemoteWriteReceiver: true})
	gw := startCardinal(t, fmt.Sprintf(`
downstream:
  url: %s
  max_retries: 5
relabel_configs:
  - action: labelkeep
    regex: %s
merge:
  flush_interval: 1s
`, receiver.WriteURL(), meshgen.DefaultAllowlist))
	sender := promtest.Start(t, promtest.Options{
		Agent:          true,
		ScrapeTargets:  []string{strings.TrimPrefix(exporter.URL, "http://")},
		RemoteWriteURL: gw.URL + "/api/v1/write",
	})
	ctx := context.Background()
	t.Logf("processes up after %v", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		// Registered after the processes start, so it runs before they stop.
		if t.Failed() {
			t.Logf("on failure: %s", mergeDiagnosis(ctx, gw, sender, receiver, exp))
		}
	})

	var (
		counters map[string]float64
		outputs  map[string]bool
		maxRel   float64
	)
	// receivedValues reads the receiver's latest value of every exporter
	// series, keyed like mergeOutputKey. An output whose inputs have all
	// ended (the churn series die) ends with a stale marker: its last value
	// is the one that must be right.
	receivedValues := func() (map[string]float64, error) {
		samples, err := receiver.Query(ctx, `last_over_time({job="mesh"}[10m])`)
		if err != nil {
			return nil, err
		}
		got := map[string]float64{}
		for _, s := range samples {
			if name := s.Labels["__name__"]; name == "up" || strings.HasPrefix(name, "scrape_") {
				continue // The scrape's own series, not the exporter's.
			}
			if s.Labels["job"] != "mesh" {
				return nil, fmt.Errorf("series without job=\"mesh\": %v", s.Labels)
			}
			delete(s.Labels, "job")
			got[labels.FromMap(s.Labels).String()] = s.Value
		}
		return got, nil
	}
	promtest.Eventually(t, 60*time.Second, func() (bool, string) {
		if n := exp.served.Load(); n <= lastStep {
			return false, fmt.Sprintf("%d scrapes served so far", n)
		}
		if counters == nil {
			// The frozen step has been served and recorded: the truth is final.
			counters, outputs = mergeTruth(exp.exposed())
		}
		got, err := receivedValues()
		if err != nil {
			return false, err.Error()
		}
		var diff string
		diff, maxRel = compareMerged(got, counters, outputs, 0.01)
		if diff != "" {
			// A failed scrape makes Prometheus send stale markers for every
			// series: say so, it changes what went through Cardinal.
			diff += "; " + scrapeFailures(ctx, receiver, exp)
		}
		return diff == "", diff
	})
	t.Logf("receiver matches the truth after %v (%d scrapes, %d outputs, %d counters, max relative deviation %g)",
		time.Since(start).Round(time.Millisecond), exp.scrapes.Load(), len(outputs), len(counters), maxRel)

	// The churn-only outputs are small integers, exact or wrong: name them.
	churned := 0
	for k, w := range counters {
		if strings.Contains(k, `response_code="503"`) {
			churned++
			if w < float64(lastStep) {
				t.Errorf("churn-only output %s: truth %v is implausibly small", k, w)
			}
		}
	}
	if churned != churnOnly {
		t.Errorf("%d churn-only outputs in the truth, want %d", churned, churnOnly)
	}

	// The frozen inputs keep being scraped: the merged values must hold, not
	// drift, over a few more scrapes and flushes.
	time.Sleep(3 * time.Second)
	if got, err := receivedValues(); err != nil {
		t.Errorf("second read: %v", err)
	} else if diff, rel := compareMerged(got, counters, outputs, 0.01); diff != "" {
		t.Errorf("values drifted after convergence: %s", diff)
	} else {
		t.Logf("3s later: max relative deviation %g", rel)
	}

	// No dropped label on any series that reached the receiver.
	for _, name := range []string{"request_id", "pod", "instance", "target_addr"} {
		series, err := receiver.Series(ctx, fmt.Sprintf(`{%s=~".+"}`, name))
		if err != nil {
			t.Fatal(err)
		}
		if len(series) > 0 {
			t.Errorf("dropped label %s reached the receiver on %d series, e.g. %v", name, len(series), series[0])
		}
	}

	// The receiver never refused a sample: a duplicate timestamp or an
	// out-of-order sample is a 400 to Cardinal.
	fams := scrapeMetrics(t, gw.URL)
	codes := mergeForwardCodes(fams)
	if _, ok := fams["cardinal_forward_requests_total"]; !ok {
		t.Errorf("no cardinal_forward_requests_total on /metrics")
	}
	if refused := mergeRefusals(codes); refused != 0 || codes["400"]+codes["409"]+codes["413"] != 0 {
		t.Errorf("the receiver refused %v requests from cardinal (by code: %v)", refused, codes)
	}
	if codes["204"]+codes["200"] == 0 {
		t.Errorf("no successful forward (by code: %v)", codes)
	}
	if lines := receiverRejections(receiver.Log()); len(lines) > 0 {
		t.Errorf("receiver log reports %d rejected samples, e.g. %s", len(lines), lines[0])
	}

	stats, err := sender.RemoteWriteStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Failed != 0 || stats.Dropped != 0 || stats.Succeeded() <= 0 {
		t.Errorf("sender: %+v; want no failed or dropped samples and some succeeded", stats)
	}

	// The collisions report names merged outputs and what collapsed them.
	code, body := httpGet(gw.URL + "/api/v1/collisions?top=5")
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/collisions?top=5: %d %s", code, body)
	}
	var collisions []merge.Collision
	if err := json.Unmarshal([]byte(body), &collisions); err != nil {
		t.Fatalf("cannot decode collisions %q: %v", body, err)
	}
	if len(collisions) != 5 {
		t.Errorf("%d collisions listed, want 5: %s", len(collisions), body)
	}
	sawRequestID := false
	for _, c := range collisions {
		if c.Inputs < 2 || !(slices.Contains(c.CollapsedLabels, "pod") || slices.Contains(c.CollapsedLabels, "instance")) {
			t.Errorf("collision %+v: want at least 2 inputs and pod or instance collapsed", c)
		}
		sawRequestID = sawRequestID || slices.Contains(c.CollapsedLabels, "request_id")
	}
	if !sawRequestID {
		t.Errorf("no top collision collapsed request_id, though churned outputs have the most inputs: %s", body)
	}

	if v := familyValue(fams, "cardinal_collisions_total", "", ""); v <= 0 {
		t.Errorf("cardinal_collisions_total = %v, want > 0", v)
	}
	if v := familyValue(fams, "cardinal_merged_series", "", ""); v <= 0 {
		t.Errorf("cardinal_merged_series = %v, want > 0", v)
	}
	t.Logf("forward requests by code %v; flushes ok %v, failed %v; merged series %v; collisions %v; sender %+v; total %v",
		codes,
		familyValue(fams, "cardinal_merge_flushes_total", "result", "success"),
		familyValue(fams, "cardinal_merge_flushes_total", "result", "failure"),
		familyValue(fams, "cardinal_merged_series", "", ""),
		familyValue(fams, "cardinal_collisions_total", "", ""),
		stats, time.Since(start).Round(time.Millisecond))
}

// mergeForwardCodes sums cardinal_forward_requests_total by status code.
func mergeForwardCodes(fams map[string]*dto.MetricFamily) map[string]float64 {
	codes := map[string]float64{}
	for _, m := range fams["cardinal_forward_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "code" {
				codes[l.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	return codes
}

// mergeRefusals counts the 4xx answers among codes.
func mergeRefusals(codes map[string]float64) float64 {
	var n float64
	for code, v := range codes {
		if strings.HasPrefix(code, "4") {
			n += v
		}
	}
	return n
}

// receiverRejections returns the lines of a Prometheus log that report samples
// its remote-write receiver refused.
func receiverRejections(log string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		l := strings.ToLower(line)
		if strings.Contains(l, "out of order") || strings.Contains(l, "duplicate sample") || strings.Contains(l, "out of bounds") {
			out = append(out, line)
		}
	}
	return out
}

// mergeDiagnosis summarizes, for a failed run, what each hop saw: Cardinal's
// forward status codes and flushes, the sender's counters and the receiver's
// rejections. It must not fail the test itself.
func mergeDiagnosis(ctx context.Context, gw *cardinal, sender, receiver *promtest.Prometheus, exp *churnExporter) string {
	var sb strings.Builder
	if code, body := httpGet(gw.URL + "/metrics"); code == http.StatusOK {
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
		if err == nil {
			fmt.Fprintf(&sb, "cardinal forward requests by code %v, merge flushes ok %v failed %v, merged series %v, collisions %v; ",
				mergeForwardCodes(fams),
				familyValue(fams, "cardinal_merge_flushes_total", "result", "success"),
				familyValue(fams, "cardinal_merge_flushes_total", "result", "failure"),
				familyValue(fams, "cardinal_merged_series", "", ""),
				familyValue(fams, "cardinal_collisions_total", "", ""))
		}
	}
	if stats, err := sender.RemoteWriteStats(ctx); err == nil {
		fmt.Fprintf(&sb, "sender %+v; ", stats)
	}
	sb.WriteString(scrapeFailures(ctx, receiver, exp) + "; ")
	lines := receiverRejections(receiver.Log())
	fmt.Fprintf(&sb, "receiver log: %d rejections, e.g. %v", len(lines), first(lines))
	return sb.String()
}

// scrapeFailures reports the failed scrapes of the exporter, as the
// receiver's up series (which passes through Cardinal unmerged) and the
// exporter itself saw them.
func scrapeFailures(ctx context.Context, receiver *promtest.Prometheus, exp *churnExporter) string {
	failed := "unknown"
	if samples, err := receiver.Query(ctx, `count_over_time(up{job="mesh"}[10m]) - sum_over_time(up{job="mesh"}[10m])`); err == nil && len(samples) == 1 {
		failed = strconv.FormatFloat(samples[0].Value, 'g', -1, 64)
	}
	return fmt.Sprintf("%d scrapes served, %d not written completely, %s failed according to up", exp.scrapes.Load(), exp.failed.Load(), failed)
}
