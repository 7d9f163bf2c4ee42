package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cardinal-gateway/cardinal/internal/promtest"
	"github.com/cardinal-gateway/cardinal/tracesample"
)

// Families of the trace exporter: one carries a bare 32-hex trace id, the
// other a W3C traceparent (trace id and span id).
const (
	traceFamilyPlain  = "istio_requests_total"
	traceFamilyParent = "http_server_requests_total"
	traceRatio        = 0.25
	traceMalformed    = "not-a-trace"
)

// traceSeries is one exposed series carrying a trace label. It appears at
// scrape birth with value 1 and grows by 1 per scrape until the exporter
// freezes.
type traceSeries struct {
	family string
	app    string
	code   string // response_code (plain) or code (traceparent)
	value  string // the exposed trace label value
	// Parsed ids, lower-case hex; empty for the malformed series.
	traceID string
	spanID  string
	sampled bool // tracesample.NewSampler(traceRatio) keeps traceID
	birth   int
}

func (s *traceSeries) isError() bool { return s.code[0] == '5' }

func (s *traceSeries) codeLabel() string {
	if s.family == traceFamilyPlain {
		return "response_code"
	}
	return "code"
}

func (s *traceSeries) traceLabel() string {
	if s.family == traceFamilyPlain {
		return "trace_id"
	}
	return "traceparent"
}

// valueAt is the counter value exposed at step (0 before birth).
func (s *traceSeries) valueAt(step int) float64 {
	if step < s.birth {
		return 0
	}
	return float64(step - s.birth + 1)
}

// traceOutput is the label set (family, app, code label value) a series
// collapses into once its trace label is removed.
func (s *traceSeries) output() string {
	return traceOutputKey(s.family, s.app, s.code)
}

func traceOutputKey(family, app, code string) string {
	return family + "/" + app + "/" + code
}

// traceExporter serves a Prometheus text exposition in which every scrape
// up to lastStep brings new series with fresh trace ids (a trace header
// mis-mapped to a metric label), then freezes.
type traceExporter struct {
	series   []*traceSeries
	lastStep int
	scrapes  atomic.Int64
}

func (e *traceExporter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	step := min(int(e.scrapes.Add(1))-1, e.lastStep)
	var b bytes.Buffer
	for _, fam := range []string{traceFamilyPlain, traceFamilyParent} {
		fmt.Fprintf(&b, "# HELP %s Requests.\n# TYPE %s counter\n", fam, fam)
		for _, s := range e.series {
			if s.family != fam || s.birth > step {
				continue
			}
			fmt.Fprintf(&b, "%s{app=%q,%s=%q,%s=%q} %v\n", fam, s.app, s.codeLabel(), s.code, s.traceLabel(), s.value, s.valueAt(step))
		}
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(b.Bytes())
}

// newTraceExporter draws the series of every step. For each step, app and
// family it adds 200 series (the first forced to be sampled at traceRatio,
// the second forced not to be, the rest random) and one error series; the
// malformed series exist from step 0, one on a 200 and one on a 503 output.
func newTraceExporter(t testing.TB, lastStep int, seed uint64) *traceExporter {
	t.Helper()
	sampler, err := tracesample.NewSampler(traceRatio)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	seen := map[string]bool{}
	newID := func(force int) (id [16]byte) {
		for {
			for i := range id {
				id[i] = byte(rng.UintN(256))
			}
			// Byte 9 is the top of the 56-bit randomness; T at 0.25 is
			// 0xc0 << 48, so >= 0xc0 keeps the id and < 0xc0 drops it.
			switch force {
			case 1:
				id[9] = 0xc0 + byte(rng.UintN(0x40))
			case -1:
				id[9] = byte(rng.UintN(0xc0))
			}
			if h := hex.EncodeToString(id[:]); !seen[h] && id != [16]byte{} {
				seen[h] = true
				return id
			}
		}
	}
	e := &traceExporter{lastStep: lastStep}
	add := func(family, app, code string, birth, force int) {
		id := newID(force)
		s := &traceSeries{family: family, app: app, code: code, birth: birth, traceID: hex.EncodeToString(id[:])}
		s.sampled = sampler.Sample(id)
		if (force == 1 && !s.sampled) || (force == -1 && s.sampled) {
			t.Fatalf("test bug: forced sampling %d of %s disagrees with the sampler", force, s.traceID)
		}
		if family == traceFamilyPlain {
			// Upper case on some: header mappings do that; the exemplar
			// carries the canonical lower-case form.
			s.value = s.traceID
			if rng.UintN(4) == 0 {
				s.value = strings.ToUpper(s.traceID)
			}
		} else {
			var span [8]byte
			for span == [8]byte{} {
				for i := range span {
					span[i] = byte(rng.UintN(256))
				}
			}
			s.spanID = hex.EncodeToString(span[:])
			s.value = "00-" + s.traceID + "-" + s.spanID + "-01"
		}
		// The test's own parse must agree with what it generated.
		tc, ok := tracesample.Parse([]byte(s.value))
		if !ok || hex.EncodeToString(tc.TraceID[:]) != s.traceID || (s.spanID != "" && hex.EncodeToString(tc.SpanID[:]) != s.spanID) {
			t.Fatalf("test bug: Parse(%q) = %x, %v", s.value, tc.TraceID, ok)
		}
		e.series = append(e.series, s)
	}
	for step := 0; step <= lastStep; step++ {
		for _, app := range []string{"a", "b", "c"} {
			for i, force := range []int{1, -1, 0, 0} {
				add(traceFamilyPlain, app, "200", step, force)
				if i < 3 {
					add(traceFamilyParent, app, "200", step, force)
				}
			}
			add(traceFamilyPlain, app, "503", step, 0)
			add(traceFamilyParent, app, "500", step, 0)
		}
	}
	e.series = append(e.series,
		&traceSeries{family: traceFamilyPlain, app: "a", code: "200", value: traceMalformed},
		&traceSeries{family: traceFamilyPlain, app: "c", code: "503", value: traceMalformed},
	)
	return e
}

// truth returns the frozen value of every output (the sum of its inputs).
func (e *traceExporter) truth() map[string]float64 {
	out := map[string]float64{}
	for _, s := range e.series {
		out[s.output()] += s.valueAt(e.lastStep)
	}
	return out
}

// traceCheck is what one look at the receiver found.
type traceCheck struct {
	violations []string       // permanent failures: an exemplar that must not exist
	perOutput  map[string]int // exemplars per output
	sampled    int            // exemplars from non-error series (kept by the sampler)
	nan        []string       // exemplars whose value is NaN (made from stale markers)
	errors     int            // exemplars from error series
	total      int
}

// checkTraceExemplars validates every exemplar on the receiver against what
// the exporter exposed.
func checkTraceExemplars(es []promtest.ExemplarSeries, byID map[string]*traceSeries, lastStep int, notBefore, notAfter time.Time) traceCheck {
	c := traceCheck{perOutput: map[string]int{}}
	bad := func(format string, args ...any) {
		if len(c.violations) < 20 {
			c.violations = append(c.violations, fmt.Sprintf(format, args...))
		}
	}
	for _, ser := range es {
		sl := ser.SeriesLabels
		for _, l := range []string{"trace_id", "traceparent", "span_id"} {
			if _, ok := sl[l]; ok {
				bad("exemplar series %v carries label %s", sl, l)
			}
		}
		fam := sl["__name__"]
		code := sl["response_code"]
		if fam == traceFamilyParent {
			code = sl["code"]
		}
		key := traceOutputKey(fam, sl["app"], code)
		for _, ex := range ser.Exemplars {
			c.total++
			id := ex.Labels["trace_id"]
			s := byID[id]
			switch {
			case s == nil:
				bad("exemplar %v on %v: trace_id %q was never exposed (as a valid id)", ex.Labels, sl, id)
				continue
			case s.output() != key:
				bad("exemplar %v on %v: trace id %s was exposed on %s", ex.Labels, sl, id, s.output())
			case !s.sampled && !s.isError():
				bad("exemplar %v on %v: trace id %s is neither sampled at %v nor on an error series", ex.Labels, sl, id, traceRatio)
			}
			wantLabels := 1
			if s.spanID != "" {
				wantLabels = 2
				if got := ex.Labels["span_id"]; got != s.spanID {
					bad("exemplar %v on %v: span_id %q, exposed span %q", ex.Labels, sl, got, s.spanID)
				}
			}
			if len(ex.Labels) != wantLabels {
				bad("exemplar %v on %v: want exactly trace_id%s", ex.Labels, sl, map[bool]string{true: " and span_id"}[wantLabels == 2])
			}
			// The exemplar's value is one the input had: 1 .. its frozen value.
			if math.IsNaN(ex.Value) {
				c.nan = append(c.nan, fmt.Sprintf("%v on %v", ex.Labels, sl))
			} else if ex.Value < 1 || ex.Value != math.Trunc(ex.Value) || ex.Value > s.valueAt(lastStep) {
				bad("exemplar %v on %v: value %v is no value the input had", ex.Labels, sl, ex.Value)
			}
			if ex.Timestamp.Before(notBefore) || ex.Timestamp.After(notAfter) {
				bad("exemplar %v on %v: timestamp %v outside the test [%v, %v]", ex.Labels, sl, ex.Timestamp, notBefore, notAfter)
			}
			c.perOutput[key]++
			if s.isError() {
				c.errors++
			} else {
				c.sampled++
			}
		}
	}
	return c
}

// TestE2ETraceExemplars: an exporter leaks trace ids into metric labels (a
// bare trace_id and a W3C traceparent), new ones every scrape. A Prometheus
// agent scrapes it and remote-writes through Cardinal, with trace sampling
// on, into a Prometheus receiver with exemplar storage. The trace labels
// must be gone, the collapsed series merged to the sum of their inputs, and
// every exemplar the receiver holds must carry a trace id that was exposed on
// that output and that is sampled at the configured ratio or comes from an
// error series; every error output must have an exemplar.
func TestE2ETraceExemplars(t *testing.T) {
	promtest.Binary(t)
	testStart := time.Now()
	const lastStep = 5
	seed := uint64(time.Now().UnixNano())
	t.Logf("trace id seed %d", seed)
	exp := newTraceExporter(t, lastStep, seed)
	byID := map[string]*traceSeries{}
	var nSampled, nUnsampled, nError int
	for _, s := range exp.series {
		if s.traceID == "" {
			continue
		}
		byID[s.traceID] = s
		switch {
		case s.isError():
			nError++
		case s.sampled:
			nSampled++
		default:
			nUnsampled++
		}
	}
	t.Logf("exporter: %d series with valid trace ids (%d sampled 2xx, %d unsampled 2xx, %d error), 2 malformed", len(byID), nSampled, nUnsampled, nError)
	srv := httptest.NewServer(exp)
	t.Cleanup(srv.Close)
	want := exp.truth()

	receiver := promtest.Start(t, promtest.Options{RemoteWriteReceiver: true, Features: []string{"exemplar-storage"}})
	gw := startCardinal(t, fmt.Sprintf(`
downstream:
  url: %s
  max_retries: 5
trace_sampling:
  labels: [trace_id, traceparent]
  ratio: %v
  always_keep:
    - {label: response_code, regex: "5.."}
    - {label: code, regex: "5.."}
merge:
  flush_interval: 1s
`, receiver.WriteURL(), traceRatio))
	sender := promtest.Start(t, promtest.Options{
		Agent:          true,
		ScrapeTargets:  []string{strings.TrimPrefix(srv.URL, "http://")},
		RemoteWriteURL: gw.URL + "/api/v1/write",
		SendExemplars:  true,
	})

	ctx := context.Background()
	selector := fmt.Sprintf(`{__name__=~"%s|%s"}`, traceFamilyPlain, traceFamilyParent)
	var last traceCheck
	// A failed scrape (up = 0, e.g. a timeout on a loaded machine) makes the
	// agent send stale markers for every series. Cardinal must stay right
	// through that: merged counters keep their inputs' values, and no stale
	// marker becomes an exemplar. Logged to tell such runs apart.
	failedScrape := func() bool {
		up, err := receiver.Query(ctx, `min_over_time(up{job="mesh"}[10m])`)
		return err == nil && len(up) > 0 && up[0].Value == 0
	}
	promtest.Eventually(t, 90*time.Second, func() (bool, string) {
		if n := exp.scrapes.Load(); n <= int64(lastStep) {
			return false, fmt.Sprintf("%d scrapes so far", n)
		}
		// 1. The collapsed series, with the sum of their inputs.
		samples, err := receiver.Query(ctx, selector)
		if err != nil {
			return false, err.Error()
		}
		got := map[string]float64{}
		for _, s := range samples {
			for _, l := range []string{"trace_id", "traceparent"} {
				if _, ok := s.Labels[l]; ok {
					return false, fmt.Sprintf("series with %s at the receiver: %v", l, s.Labels)
				}
			}
			code := s.Labels["response_code"]
			if s.Labels["__name__"] == traceFamilyParent {
				code = s.Labels["code"]
			}
			k := traceOutputKey(s.Labels["__name__"], s.Labels["app"], code)
			if _, dup := got[k]; dup {
				return false, fmt.Sprintf("two series for output %s", k)
			}
			got[k] = s.Value
		}
		var diffs []string
		for k, w := range want {
			if g, ok := got[k]; !ok {
				diffs = append(diffs, k+" missing")
			} else if g != w {
				diffs = append(diffs, fmt.Sprintf("%s = %v, want %v", k, g, w))
			}
		}
		sort.Strings(diffs)
		if len(got) != len(want) || len(diffs) > 0 {
			return false, fmt.Sprintf("%d outputs at the receiver, want %d: %v", len(got), len(want), diffs)
		}
		// 2. and 3. The exemplars.
		es, err := receiver.QueryExemplars(ctx, selector, testStart.Add(-time.Minute), time.Now().Add(time.Minute))
		if err != nil {
			return false, err.Error()
		}
		last = checkTraceExemplars(es, byID, lastStep, testStart.Add(-5*time.Second), time.Now().Add(5*time.Second))
		if len(last.violations) > 0 {
			return true, "" // permanent: report below
		}
		var uncovered []string
		for k := range want {
			if strings.Contains(k, "/5") && last.perOutput[k] == 0 {
				uncovered = append(uncovered, k)
			}
		}
		if len(uncovered) > 0 || last.sampled == 0 {
			sort.Strings(uncovered)
			return false, fmt.Sprintf("%d exemplars (%d sampled, %d error); error outputs without exemplar: %v", last.total, last.sampled, last.errors, uncovered)
		}
		return true, ""
	})
	if failedScrape() {
		t.Logf("a scrape of the exporter failed (up = 0) during the test; Cardinal had to handle the stale markers")
	}
	if len(last.violations) > 0 {
		t.Fatalf("invalid exemplars at the receiver (%d exemplars seen):\n  %s", last.total, strings.Join(last.violations, "\n  "))
	}
	if len(last.nan) > 0 {
		t.Errorf("%d exemplars with value NaN, e.g. %v", len(last.nan), first(last.nan))
	}
	t.Logf("receiver: %d exemplars, %d from sampled ids, %d from error series; per output %v", last.total, last.sampled, last.errors, last.perOutput)

	for _, l := range []string{"trace_id", "traceparent", "span_id"} {
		series, err := receiver.Series(ctx, fmt.Sprintf(`{%s=~".+"}`, l))
		if err != nil {
			t.Fatal(err)
		}
		if len(series) > 0 {
			t.Errorf("label %s reached the receiver on %d series, e.g. %v", l, len(series), series[0])
		}
	}

	// 4. Cardinal's own counters.
	fams := scrapeMetrics(t, gw.URL)
	sampled := familyValue(fams, "cardinal_exemplars_added_total", "reason", "sampled")
	errs := familyValue(fams, "cardinal_exemplars_added_total", "reason", "error")
	malformed := familyValue(fams, "cardinal_trace_ids_malformed_total", "", "")
	t.Logf("cardinal: exemplars added sampled=%v error=%v, malformed trace ids=%v", sampled, errs, malformed)
	if sampled <= 0 || errs <= 0 {
		t.Errorf("cardinal_exemplars_added_total sampled=%v error=%v; want both > 0", sampled, errs)
	}
	if malformed <= 0 {
		t.Errorf("cardinal_trace_ids_malformed_total = %v, but %q was exposed every scrape", malformed, traceMalformed)
	}

	// 5. No refusals anywhere.
	codes := map[string]float64{}
	if f, ok := fams["cardinal_forward_requests_total"]; ok {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" {
					codes[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Logf("cardinal forward attempts by code: %v", codes)
	if codes["204"]+codes["200"] == 0 {
		t.Errorf("no successful forward attempt: %v", codes)
	}
	for code, v := range codes {
		if strings.HasPrefix(code, "4") && v > 0 {
			t.Errorf("downstream answered %s to %v forward attempts", code, v)
		}
	}
	for _, code := range []string{"400", "413", "415", "500", "502", "503"} {
		if v := familyValue(fams, "cardinal_received_requests_total", "code", code); v != 0 {
			t.Errorf("cardinal answered %s to %v requests", code, v)
		}
	}
	stats, err := sender.RemoteWriteStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Failed != 0 || stats.Dropped != 0 || stats.Succeeded() <= 0 {
		t.Errorf("sender: %+v; want no failed or dropped samples and some succeeded", stats)
	}
	// Absorbed into merged outputs is not lost; every other reason is.
	for _, reason := range []string{"relabel", "invalid", "limit", "merge_capacity", "rejected"} {
		if v := familyValue(fams, "cardinal_dropped_samples_total", "reason", reason); v != 0 {
			t.Errorf("cardinal_dropped_samples_total{reason=%q} = %v, want 0", reason, v)
		}
	}
	t.Logf("done in %s", time.Since(testStart).Round(time.Millisecond))
}
