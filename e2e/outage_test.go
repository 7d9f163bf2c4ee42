package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/internal/promtest"
)

// outageExporter serves the generator's exposition. While advancing, every
// scrape serves the next step (up to the last one rendered); while held, it
// serves the same step again, so that the truth stands still. Every step is
// rendered up front, so serving is one Write. It records, for every scrape
// answered completely, the step served and when.
type outageExporter struct {
	texts  [][]byte
	values []map[string]exposedSeries // by step
	// outputOf maps an exposed series to its output (mergeOutputKey);
	// order lists the exposed series in the exposition's order.
	outputOf map[string]string
	order    []string

	advancing atomic.Bool
	cur       atomic.Int64 // step of the last scrape; -1 before the first

	mu     sync.Mutex
	served []outageScrape
}

type outageScrape struct {
	step int
	at   time.Time
}

func newOutageExporter(t testing.TB, gen *meshgen.Generator, steps int) *outageExporter {
	t.Helper()
	e := &outageExporter{}
	e.cur.Store(-1)
	e.advancing.Store(true)
	e.outputOf = map[string]string{}
	for step := range steps {
		var buf bytes.Buffer
		if err := gen.WriteText(&buf, step); err != nil {
			t.Fatal(err)
		}
		values := map[string]exposedSeries{}
		for _, s := range gen.Series(step, 0) {
			m := make(map[string]string, len(s.Labels))
			for _, l := range s.Labels {
				if l.Name != "job" && l.Name != "instance" {
					m[l.Name] = l.Value
				}
			}
			key := labels.FromMap(m).String()
			values[key] = exposedSeries{labels: m, value: s.Samples[0].Value}
			if _, ok := e.outputOf[key]; !ok {
				e.outputOf[key] = mergeOutputKey(m)
				e.order = append(e.order, key)
			}
		}
		e.texts, e.values = append(e.texts, buf.Bytes()), append(e.values, values)
	}
	return e
}

// ServeHTTP is called by one scrape loop, one scrape at a time.
func (e *outageExporter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	step := e.cur.Load()
	if step < 0 || (e.advancing.Load() && int(step) < len(e.texts)-1) {
		step = e.cur.Add(1)
	}
	w.Header().Set("Content-Type", meshgen.TextContentType)
	if _, err := w.Write(e.texts[step]); err != nil {
		return // Prometheus gave up on the scrape: it saw none of it.
	}
	e.mu.Lock()
	e.served = append(e.served, outageScrape{step: int(step), at: time.Now()})
	e.mu.Unlock()
}

// scrapes returns a copy of the scrapes answered so far.
func (e *outageExporter) scrapes() []outageScrape {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.served)
}

// stepAt returns the step of the last scrape answered at or before t, or -1.
func (e *outageExporter) stepAt(t time.Time) int {
	step := -1
	for _, s := range e.scrapes() {
		if !s.at.After(t) {
			step = s.step
		}
	}
	return step
}

// holdAndWait stops advancing and returns the held step once a scrape of it
// has been answered after the hold (so the sender holds it too).
func (e *outageExporter) holdAndWait(t testing.TB) int {
	t.Helper()
	e.advancing.Store(false)
	n := len(e.scrapes())
	var step int
	promtest.Eventually(t, 15*time.Second, func() (bool, string) {
		s := e.scrapes()
		if len(s) <= n {
			return false, fmt.Sprintf("no scrape answered since the hold (%d in all)", len(s))
		}
		step = s[len(s)-1].step
		return true, ""
	})
	return step
}

// truth groups the series exposed at step by output: the counter outputs'
// truth (the sum of their inputs' values, added in a fixed order so that
// equal inputs give equal sums), every output, and how many inputs each has.
func (e *outageExporter) truth(step int) (counters map[string]float64, outputs map[string]bool, inputs map[string]int) {
	counters, outputs, inputs = map[string]float64{}, map[string]bool{}, map[string]int{}
	for _, k := range e.order {
		s, ok := e.values[step][k]
		if !ok {
			continue
		}
		out := e.outputOf[k]
		outputs[out] = true
		inputs[out]++
		if isCounterName(s.labels["__name__"]) {
			counters[out] += s.value
		}
	}
	return counters, outputs, inputs
}

// outageCompare checks got (the receiver's latest values) against the
// truth: every output present and nothing else, and every counter output
// equal to its truth, exactly where the truth is an integer (sums of
// integers are exact in float64), within 1e-9 relative otherwise (the float
// _sum series, whose merged sum depends on the order of addition).
func outageCompare(got, counters map[string]float64, outputs map[string]bool) string {
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
		exact := w == math.Trunc(w) && math.Abs(w) < 1<<53
		if g != w && (exact || math.Abs(g-w) > 1e-9*math.Abs(w)) {
			wrong = append(wrong, fmt.Sprintf("%s = %v, want %v", k, g, w))
		}
	}
	for k := range got {
		if !outputs[k] {
			extra = append(extra, k)
		}
	}
	if len(missing)+len(wrong)+len(extra) == 0 {
		return ""
	}
	sort.Strings(missing)
	sort.Strings(wrong)
	sort.Strings(extra)
	return fmt.Sprintf("%d series received, %d expected (%d counters): %d missing (e.g. %v), %d wrong (e.g. %v), %d unexpected (e.g. %v)",
		len(got), len(outputs), len(counters), len(missing), first(missing), len(wrong), first(wrong), len(extra), first(extra))
}

// outageLatest reads the receiver's latest value of every exporter series,
// keyed like mergeOutputKey.
func outageLatest(ctx context.Context, receiver *promtest.Prometheus) (map[string]float64, error) {
	samples, err := receiver.Query(ctx, `last_over_time({job="mesh"}[10m])`)
	if err != nil {
		return nil, err
	}
	got := map[string]float64{}
	for _, s := range samples {
		if name := s.Labels["__name__"]; name == "up" || strings.HasPrefix(name, "scrape_") {
			continue
		}
		if s.Labels["job"] != "mesh" {
			return nil, fmt.Errorf("series without job=\"mesh\": %v", s.Labels)
		}
		delete(s.Labels, "job")
		got[labels.FromMap(s.Labels).String()] = s.Value
	}
	return got, nil
}

// outagePoint is one raw sample stored by the receiver.
type outagePoint struct {
	ts time.Time
	v  float64
}

// outageRaw returns the raw samples of the range selector expr evaluated at
// at, by series keyed like mergeOutputKey (job removed).
func outageRaw(ctx context.Context, receiver *promtest.Prometheus, expr string, at time.Time) (map[string][]outagePoint, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	series, err := receiver.QueryMatrix(ctx, expr, at)
	if err != nil {
		return nil, err
	}
	out := map[string][]outagePoint{}
	for _, s := range series {
		delete(s.Labels, "job")
		pts := make([]outagePoint, len(s.Points))
		for i, p := range s.Points {
			pts[i] = outagePoint{ts: p.T, v: p.V}
		}
		out[labels.FromMap(s.Labels).String()] = pts
	}
	return out, nil
}

// outageShape is what the receiver holds of one merged counter output over
// the outage window (stopped, up].
type outageShape struct {
	points   int     // points with a data timestamp inside the window
	increase float64 // from the last point before the window to the last inside
	maxStep  float64 // the largest increase between two consecutive points of it
	truth    float64 // what the inputs counted over the window
	// promIncrease is the increase PromQL reads over the same points: a
	// decrease is a counter reset, after which the whole value counts.
	promIncrease float64
	// first and last are the data timestamps of the first and last point
	// inside the window; maxGap is the largest data time between two
	// consecutive points from the last one before the window on.
	first, last time.Time
	maxGap      time.Duration
	changes     int // exporter steps of the window at which the truth moved
	// The first decrease of the whole series (a counter reset for PromQL),
	// split by size: a rounding one is within 1e-12 relative (the order of
	// a float sum changed), a drop is anything larger.
	rounding, drop string
}

// outageShapeOf measures pts (sorted) over the window (stopped, up].
func outageShapeOf(pts []outagePoint, stopped, up time.Time) outageShape {
	var sh outageShape
	for i := 1; i < len(pts); i++ {
		prev, cur := pts[i-1], pts[i]
		if !(cur.v < prev.v) {
			continue
		}
		desc := fmt.Sprintf("%v at %s after %v at %s; around it: %s",
			cur.v, cur.ts.Format("15:04:05.000"), prev.v, prev.ts.Format("15:04:05.000"), outagePoints(pts[max(i-3, 0):min(i+4, len(pts))]))
		if prev.v-cur.v <= 1e-12*math.Abs(prev.v) {
			if sh.rounding == "" {
				sh.rounding = desc
			}
		} else if sh.drop == "" {
			sh.drop = desc
		}
	}
	before := -1
	for i, p := range pts {
		if !p.ts.After(stopped) {
			before = i
			continue
		}
		if p.ts.After(up) {
			break
		}
		sh.points++
		if sh.first.IsZero() {
			sh.first = p.ts
		}
		sh.last = p.ts
		if before >= 0 {
			prev := pts[i-1]
			sh.maxStep = max(sh.maxStep, p.v-prev.v)
			sh.increase = p.v - pts[before].v
			sh.maxGap = max(sh.maxGap, p.ts.Sub(prev.ts))
			if p.v >= prev.v {
				sh.promIncrease += p.v - prev.v
			} else {
				sh.promIncrease += p.v
			}
		}
	}
	return sh
}

func outagePoints(pts []outagePoint) string {
	var sb strings.Builder
	for i, p := range pts {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%s=%v", p.ts.Format("05.000"), p.v)
	}
	return sb.String()
}

// TestE2ESenderOutage (issue 10, "merged outputs delivered at least once,
// with data timestamps"): a Prometheus 2.42 agent scrapes a mesh whose pods
// collapse into merged outputs and remote-writes through Cardinal to a
// Prometheus receiver. Cardinal is stopped (SIGTERM, it must exit 0) for an
// outage spanning many flush intervals while the agent keeps scraping into
// its WAL and retrying, then restarted with the same config and state file
// on the same port. The agent catches up its backlog at once; the merged
// outputs must nevertheless keep the shape of their data: points at data
// timestamps throughout the outage, about one per flush interval, the
// outage's increase spread over them rather than one step after the
// restart, never decreasing, and ending exactly on the truth. Nobody may
// refuse or drop anything on the way.
func TestE2ESenderOutage(t *testing.T) {
	promtest.Binary(t)
	start := time.Now()
	const (
		flush  = time.Second
		outage = 25 * time.Second
		steps  = 90 // more than the test can scrape; then the last one is held
	)
	gen := meshgen.New(meshgen.Config{Workloads: 4, PodsPerWorkload: 3, Variants: 1, HighCardShare: -1, Seed: 11})
	exp := newOutageExporter(t, gen, steps)
	exporter := httptest.NewServer(exp)
	t.Cleanup(exporter.Close)

	stateFile := filepath.Join(t.TempDir(), "merge.state")
	receiver := promtest.Start(t, promtest.Options{RemoteWriteReceiver: true})
	gw := startCardinal(t, fmt.Sprintf(`
downstream:
  url: %s
  max_retries: 5
relabel_configs:
  - action: labelkeep
    regex: %s
merge:
  flush_interval: %s
  state_file: %s
`, receiver.WriteURL(), meshgen.DefaultAllowlist, flush, stateFile))
	sender := promtest.Start(t, promtest.Options{
		Agent:          true,
		ScrapeTargets:  []string{strings.TrimPrefix(exporter.URL, "http://")},
		ScrapeInterval: time.Second,
		RemoteWriteURL: gw.URL + "/api/v1/write",
	})
	ctx := context.Background()
	t.Logf("processes up after %v; %d series per scrape", time.Since(start).Round(time.Millisecond), gen.NumSeries())
	lap := func(what string) { t.Logf("%-34s at %v", what, time.Since(start).Round(time.Millisecond)) }

	converge := func(stage string, step int) (map[string]float64, map[string]int) {
		t.Helper()
		counters, outputs, inputs := exp.truth(step)
		promtest.Eventually(t, 45*time.Second, func() (bool, string) {
			got, err := outageLatest(ctx, receiver)
			if err != nil {
				return false, err.Error()
			}
			diff := outageCompare(got, counters, outputs)
			return diff == "", fmt.Sprintf("%s, step %d: %s", stage, step, diff)
		})
		return counters, inputs
	}

	// 1. Converge: a few steps, then hold one until the receiver has it.
	promtest.Eventually(t, 20*time.Second, func() (bool, string) {
		n := exp.cur.Load()
		return n >= 3, fmt.Sprintf("exporter at step %d", n)
	})
	held := exp.holdAndWait(t)
	counters, inputs := converge("before the outage", held)
	merged := 0
	for k := range counters {
		if inputs[k] > 1 {
			merged++
		}
	}
	if merged == 0 {
		t.Fatalf("no counter output has more than one input: nothing is merged")
	}
	lap(fmt.Sprintf("converged on step %d", held))

	// 2. Outage: the data moves again, Cardinal stops and stays down.
	exp.advancing.Store(true)
	promtest.Eventually(t, 10*time.Second, func() (bool, string) {
		n := exp.cur.Load()
		return n >= int64(held)+2, fmt.Sprintf("exporter at step %d", n)
	})
	oldFams := scrapeMetrics(t, gw.URL)
	if err := gw.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("cardinal did not exit cleanly on SIGTERM: %v", err)
	}
	stopped := time.Now()
	lap("cardinal stopped")
	time.Sleep(outage)

	// 3. Restart on the same port with the same config and state file.
	gw = restartCardinal(t, gw)
	up := time.Now()
	window := up.Sub(stopped)
	lap(fmt.Sprintf("cardinal back after %v", window.Round(time.Millisecond)))
	if l := gw.log.String(); !strings.Contains(l, "merged outputs restored") {
		t.Errorf("restarted cardinal did not restore merged outputs from %s", stateFile)
	}

	// The agent catches up; a few more steps, then the final one is held.
	promtest.Eventually(t, 30*time.Second, func() (bool, string) {
		sent, err := sender.Metric(ctx, promtest.MetricHighestSentTimestamp)
		if err != nil {
			return false, err.Error()
		}
		return sent >= float64(up.Unix()), fmt.Sprintf("sender's newest sent sample is from %s, cardinal was back at %s",
			time.Unix(int64(sent), 0).Format("15:04:05"), up.Format("15:04:05"))
	})
	caughtUp := time.Now()
	lap("sender caught up")
	time.Sleep(2 * time.Second)
	final := exp.holdAndWait(t)
	counters, inputs = converge("after the restart", final)
	lap(fmt.Sprintf("converged on step %d", final))

	// 4b. The shape of the merged outputs over the outage window.
	raw, err := outageRaw(ctx, receiver,
		fmt.Sprintf(`{job="mesh",__name__=~".+(_total|_count|_sum|_bucket)"}[%ds]`, int(time.Since(start).Seconds())+10), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	stepStop, stepUp := exp.stepAt(stopped), exp.stepAt(up)
	truthAt := map[int]map[string]float64{} // by step, over the window
	for s := stepStop; s <= stepUp; s++ {
		truthAt[s], _, _ = exp.truth(s)
	}
	var (
		shapes  = map[string]outageShape{}
		keys    []string
		maxWant = int(1.5*window.Seconds()/flush.Seconds()) + 3
	)
	// A loaded machine delays or skips scrapes: the points can only be as
	// dense as the data. A point is at most two scrapes after the previous
	// one (merge.flush_interval is the scrape interval).
	var scraped int
	var scrapeGap time.Duration
	prevScrape := time.Time{}
	for _, s := range exp.scrapes() {
		if s.at.Before(stopped.Add(-3*time.Second)) || s.at.After(up) {
			continue
		}
		if s.at.After(stopped) {
			scraped++
		}
		if !prevScrape.IsZero() {
			scrapeGap = max(scrapeGap, s.at.Sub(prevScrape))
		}
		prevScrape = s.at
	}
	minWant := int(0.4 * min(window.Seconds()/flush.Seconds(), float64(scraped)))
	maxGap := max(5*flush, 2*scrapeGap+time.Second)
	for k := range counters {
		if inputs[k] < 2 {
			continue
		}
		sh := outageShapeOf(raw[k], stopped, up)
		sh.truth = truthAt[stepUp][k] - truthAt[stepStop][k]
		for s := stepStop + 1; s <= stepUp; s++ {
			if truthAt[s][k] != truthAt[s-1][k] {
				sh.changes++
			}
		}
		shapes[k] = sh
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var (
		counts     []int
		spreadable int
		badCount   []string
		badSpread  []string
		drops      []string
		badCover   []string
		overcount  []string
		rounding   []string
	)
	for _, k := range keys {
		sh := shapes[k]
		counts = append(counts, sh.points)
		if sh.drop != "" {
			drops = append(drops, fmt.Sprintf("%s: %s", k, sh.drop))
		}
		if sh.rounding != "" {
			rounding = append(rounding, fmt.Sprintf("%s: %s", k, sh.rounding))
		}
		if sh.points < minWant || sh.points > maxWant {
			badCount = append(badCount, fmt.Sprintf("%s: %d points", k, sh.points))
		}
		// The points cover the window: no hole in data time, none at its
		// ends (a scrape is 1s, a point at most a few scrapes apart).
		if sh.points == 0 || sh.first.Sub(stopped) > maxGap || up.Sub(sh.last) > maxGap || sh.maxGap > maxGap {
			badCover = append(badCover, fmt.Sprintf("%s: %d points from %s to %s, largest gap %v",
				k, sh.points, sh.first.Format("15:04:05.000"), sh.last.Format("15:04:05.000"), sh.maxGap))
		}
		// Only an output whose inputs moved at many steps can show spread.
		if sh.changes >= 8 {
			spreadable++
			if !(sh.increase > 0) || sh.maxStep > sh.increase/2 {
				badSpread = append(badSpread, fmt.Sprintf("%s: increase %v (truth %v) over %d points, largest step %v",
					k, sh.increase, sh.truth, sh.points, sh.maxStep))
			}
			// The window's ends fall between scrapes: a step or two of
			// slack on either side.
			if sh.promIncrease > 1.5*sh.truth+5 {
				overcount = append(overcount, fmt.Sprintf("%s: PromQL increase %v over the outage, truth %v",
					k, sh.promIncrease, sh.truth))
			}
		}
	}
	slices.Sort(counts)
	t.Logf("outage window %v (%s to %s, steps %d to %d, %d scrapes, largest gap %v): %d merged counter outputs; points per output in the window min %d, median %d, max %d (want %d to %d, one per %v is %d)",
		window.Round(time.Millisecond), stopped.Format("15:04:05.000"), up.Format("15:04:05.000"), stepStop, stepUp, scraped, scrapeGap.Round(time.Millisecond),
		len(keys), counts[0], counts[len(counts)/2], counts[len(counts)-1], minWant, maxWant, flush, int(window/flush))
	for _, k := range keys[:min(len(keys), 3)] {
		sh := shapes[k]
		t.Logf("  e.g. %s: %d points from %s to %s (largest gap %v), increase %v (PromQL %v, truth %v, moved at %d steps), largest step %v",
			k, sh.points, sh.first.Format("05.000"), sh.last.Format("05.000"), sh.maxGap, sh.increase, sh.promIncrease, sh.truth, sh.changes, sh.maxStep)
	}
	var worst, over outageShape
	for _, k := range keys {
		sh := shapes[k]
		if sh.changes < 8 {
			continue
		}
		if sh.increase > 0 && sh.maxStep/sh.increase > worst.maxStep/math.Max(worst.increase, 1e-300) {
			worst = sh
		}
		if sh.truth > 0 && sh.promIncrease/sh.truth > over.promIncrease/math.Max(over.truth, 1e-300) {
			over = sh
		}
	}
	t.Logf("  %d outputs moved at 8+ steps; the most concentrated: largest step %v of an increase %v (truth %v, %d points); the most overcounted: PromQL increase %v, truth %v",
		spreadable, worst.maxStep, worst.increase, worst.truth, worst.points, over.promIncrease, over.truth)
	if spreadable == 0 {
		t.Errorf("no merged counter output moved at 8 or more steps of the outage: the spread check checked nothing")
	}
	if len(badCount) > 0 {
		t.Errorf("%d of %d merged counter outputs have a number of points in the outage window outside [%d, %d], e.g. %v",
			len(badCount), len(keys), minWant, maxWant, first(badCount))
	}
	if len(badCover) > 0 {
		t.Errorf("%d of %d merged counter outputs do not cover the outage window (%s to %s) with points at most %v apart, e.g. %v",
			len(badCover), len(keys), stopped.Format("15:04:05.000"), up.Format("15:04:05.000"), maxGap, first(badCover))
	}
	if len(overcount) > 0 {
		t.Errorf("%d of %d merged counter outputs show PromQL more than 1.5 times the outage's true increase, e.g. %v",
			len(overcount), spreadable, first(overcount))
	}
	if len(badSpread) > 0 {
		t.Errorf("%d of %d merged counter outputs carry more than half of the outage's increase in one step, e.g. %v",
			len(badSpread), spreadable, first(badSpread))
	}
	// A merged counter never decreases (merge/doc.go): PromQL reads any
	// decrease as a reset and counts the whole value again.
	if len(drops) > 0 {
		t.Errorf("%d of %d merged counter outputs drop at the receiver (a counter reset downstream), e.g. %v",
			len(drops), len(keys), first(drops))
	}
	if len(rounding) > 0 {
		t.Errorf("%d of %d merged counter outputs decrease by a rounding error at the receiver (still a counter reset downstream), e.g. %v",
			len(rounding), len(keys), first(rounding))
	}

	// 4c. Nobody refused anything: 4xx from the receiver, merged samples
	// rejected, samples the receiver logged as refused.
	for _, proc := range []struct {
		name string
		fams map[string]*dto.MetricFamily
	}{{"stopped cardinal", oldFams}, {"restarted cardinal", scrapeMetrics(t, gw.URL)}} {
		codes := mergeForwardCodes(proc.fams)
		if _, ok := proc.fams["cardinal_forward_requests_total"]; !ok {
			t.Errorf("%s: no cardinal_forward_requests_total on /metrics", proc.name)
		}
		if refused := mergeRefusals(codes); refused != 0 {
			t.Errorf("%s: the receiver refused %v requests (by code: %v)", proc.name, refused, codes)
		}
		if v := familyValue(proc.fams, "cardinal_merge_rejected_samples_total", "", ""); v != 0 {
			t.Errorf("%s: cardinal_merge_rejected_samples_total = %v, want 0", proc.name, v)
		}
		t.Logf("%s: forward requests by code %v; merge flushes ok %v, failed %v; merged samples emitted %v; merged series %v",
			proc.name, codes,
			familyValue(proc.fams, "cardinal_merge_flushes_total", "result", "success"),
			familyValue(proc.fams, "cardinal_merge_flushes_total", "result", "failure"),
			familyValue(proc.fams, "cardinal_merge_emitted_samples_total", "", ""),
			familyValue(proc.fams, "cardinal_merged_series", "", ""))
	}
	if lines := receiverRejections(receiver.Log()); len(lines) > 0 {
		t.Errorf("receiver log reports %d rejected samples, e.g. %s", len(lines), lines[0])
	}

	// 4d. The agent lost nothing: it retried through the outage.
	stats, err := sender.RemoteWriteStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Failed != 0 || stats.Dropped != 0 || stats.Succeeded() <= 0 {
		t.Errorf("sender: %+v; want no failed or dropped samples and some succeeded", stats)
	}
	if stats.Retried == 0 {
		t.Errorf("sender: %+v; it retried nothing, so the outage did not hold its data back", stats)
	}
	shards, _ := sender.Metric(ctx, "prometheus_remote_storage_shards")
	t.Logf("sender %+v, %v shards; caught up %v after the restart; total %v",
		stats, shards, caughtUp.Sub(up).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
