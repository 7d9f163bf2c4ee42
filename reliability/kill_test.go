package reliability

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/internal/promtest"
)

// stepExporter serves the meshgen exposition one step further on every
// scrape until lastStep, then lastStep forever, and records every scrape
// it answered completely.
type stepExporter struct {
	gen      *meshgen.Generator
	lastStep int
	next     atomic.Int64

	mu     sync.Mutex
	served []servedScrape
}

type servedScrape struct {
	step int
	at   time.Time
}

func (e *stepExporter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	step := min(int(e.next.Add(1))-1, e.lastStep)
	var buf bytes.Buffer
	_ = e.gen.WriteText(&buf, step)
	w.Header().Set("Content-Type", meshgen.TextContentType)
	if _, err := w.Write(buf.Bytes()); err != nil {
		return // Prometheus gave up on the scrape: it saw none of it.
	}
	e.mu.Lock()
	e.served = append(e.served, servedScrape{step: step, at: time.Now()})
	e.mu.Unlock()
}

func (e *stepExporter) scrapes() []servedScrape {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.served)
}

// asScraped returns the labels meshgen's series have once a Prometheus has
// scraped them from addr: the exposition has no job and instance, the
// scrape adds job="mesh" and instance=addr.
func asScraped(addr string) func([]prompb.Label) []prompb.Label {
	return func(ls []prompb.Label) []prompb.Label {
		out := make([]prompb.Label, 0, len(ls))
		for _, l := range ls {
			if l.Name != "job" && l.Name != "instance" {
				out = append(out, l)
			}
		}
		return append(out, prompb.Label{Name: "job", Value: promtest.ScrapeJob}, prompb.Label{Name: "instance", Value: addr})
	}
}

// rawPoint is one stored sample.
type rawPoint struct {
	ts int64
	v  float64
}

// queryRaw returns every sample of the series matching selector stored in
// the 15 minutes up to at, by series (canonical labels), oldest first.
func queryRaw(ctx context.Context, receiver *promtest.Prometheus, selector string, at time.Time) (map[string][]rawPoint, error) {
	series, err := receiver.QueryMatrix(ctx, selector+"[15m]", at)
	if err != nil {
		return nil, err
	}
	out := map[string][]rawPoint{}
	for _, s := range series {
		pts := make([]rawPoint, len(s.Points))
		for i, p := range s.Points {
			pts[i] = rawPoint{ts: p.T.UnixMilli(), v: p.V}
		}
		out[labels.FromMap(s.Labels).String()] = pts
	}
	return out, nil
}

// killParams shape one kill -9 run.
type killParams struct {
	lastStep int
	// afterSave: kill 3s after the merge state file was first written;
	// otherwise at killAt after the start.
	afterSave bool
	killAt    time.Duration
	// downtime is how long Cardinal stays down before the restart (a
	// container restart takes seconds).
	downtime time.Duration
}

// killFigures is what one kill -9 run measured.
type killFigures struct {
	scrapes, killStep         int
	restartGap, converged     time.Duration
	passSeries, passSamples   int
	passMissing, passWrong    int
	scrapeTimestamps          int
	merged, mergedExact       int
	mergedClose, mergedWrong  int
	mergedResets              int     // merged counters that went down at the receiver
	resetOutputs              int     // outputs with at least one reset
	overcount, trueIncrease   float64 // what increase() over the run adds up to beyond the truth
	maxGap                    int64   // ms between consecutive merged points, worst
	receiverCodes             map[string]int
	truncatedBodies           int            // writes the receiver could not decode: cut short by the kill
	oldCodes, newCodes        map[string]int // cardinal_forward_requests_total of each process
	mergeRejected             float64
	forwardRejected           float64
	senderFailed, senderRetry float64
	stateBytes                int64
	rejectionLines            []string
	examples                  []string
}

// TestKill9 (issue 11, item 8): a real Prometheus 2.42 agent scrapes a
// meshgen exporter every second and remote-writes through Cardinal (merge
// state file on) into a real Prometheus 2.42 receiver. Cardinal is killed
// with SIGKILL mid-run, after its state file was saved, and restarted on
// the same port with the same state file; the agent's WAL redelivers.
//
// Exact, and asserted: every pass-through series holds one sample per
// scrape the exporter served up to the cutoff, with the exporter's values
// (0 missing, 0 wrong); every merged output ends at the sum of its inputs'
// last values; the agent dropped nothing; and, as README.md promises for a
// crash ("only the points in between are missing"), no merged counter goes
// down at the receiver and the receiver refuses no write. Measured: how
// many went down, what increase() makes of it, the refusals.
func TestKill9(t *testing.T) {
	requireFull(t)
	f := runKill(t, killParams{lastStep: 100, afterSave: true, downtime: 3 * time.Second})
	if f == nil {
		return
	}
	if f.passMissing+f.passWrong > 0 {
		t.Errorf("pass-through: %d samples missing, %d wrong, want 0", f.passMissing, f.passWrong)
	}
	if f.mergedWrong > 0 {
		t.Errorf("%d of %d merged outputs do not end at the sum of their inputs", f.mergedWrong, f.merged)
	}
	for code, n := range f.receiverCodes {
		if code == "400" {
			// A body the kill cut short reaches the receiver truncated
			// ("Error decoding remote write request"): refused, and never
			// acknowledged to anyone. Only those are expected.
			n -= f.truncatedBodies
		}
		if strings.HasPrefix(code, "4") && n > 0 {
			t.Errorf("the receiver answered %d writes with %s (%d merged samples refused): the restarted Cardinal stamps points with timestamps the killed one had already emitted, with other values", n, code, int(f.mergeRejected))
		}
	}
	if f.resetOutputs > 0 {
		t.Errorf("%d of %d merged counters went down at the receiver after the restart (increase() over the run overcounts by %.2f%%): their first points mix inputs restored from the state file (up to a minute old) with fresh ones", f.resetOutputs, f.merged, 100*f.overcount/math.Max(f.trueIncrease, 1))
	}
	if f.senderFailed > 0 {
		t.Errorf("the agent dropped %v samples (4xx)", f.senderFailed)
	}
}

// TestKill9BeforeStateSave is TestKill9 with the kill 20s after the start,
// before the merge state file was first saved (it is saved every minute):
// the restarted Cardinal does not know which outputs were merged. What it
// costs is measured; asserted is that nothing passing through is lost and
// that merged outputs still end right.
func TestKill9BeforeStateSave(t *testing.T) {
	requireFull(t)
	f := runKill(t, killParams{lastStep: 45, killAt: 20 * time.Second, downtime: 3 * time.Second})
	if f == nil {
		return
	}
	if f.passMissing+f.passWrong > 0 {
		t.Errorf("pass-through: %d samples missing, %d wrong, want 0", f.passMissing, f.passWrong)
	}
	if f.mergedWrong > 0 {
		t.Errorf("%d of %d merged outputs do not end at the sum of their inputs", f.mergedWrong, f.merged)
	}
}

func runKill(t *testing.T, p killParams) *killFigures {
	promtest.Binary(t)
	start := time.Now()
	ctx := context.Background()
	gen := meshgen.New(faultsMesh)
	exp := &stepExporter{gen: gen, lastStep: p.lastStep}
	exporter := httptest.NewServer(exp)
	t.Cleanup(exporter.Close)
	addr := strings.TrimPrefix(exporter.URL, "http://")
	tr := newMeshTrafficAs(t, faultsMesh, p.lastStep+1, 1, asScraped(addr))

	receiver := promtest.Start(t, promtest.Options{RemoteWriteReceiver: true})
	downURL := receiver.WriteURL()
	var trace killTrace
	if os.Getenv(EnvTrace) != "" {
		traceCardinal := newRecordingProxy(func() string { return receiver.WriteURL() })
		trace.cardinal = traceCardinal
		t.Cleanup(traceCardinal.srv.Close)
		downURL = traceCardinal.srv.URL + "/api/v1/write"
	}
	stateFile := filepath.Join(t.TempDir(), "merge.state")
	c := startCardinal(t, fmt.Sprintf(`
downstream:
  url: %s
  timeout: 5s
relabel_configs:%s
merge:
  flush_interval: 1s
  state_file: %s
`, downURL, relabelRules(), stateFile))
	writeURL := c.URL + "/api/v1/write"
	var cur atomic.Pointer[cardinalProc]
	cur.Store(c)
	if os.Getenv(EnvTrace) != "" {
		traceAgent := newRecordingProxy(func() string { return cur.Load().URL + "/api/v1/write" })
		trace.agent = traceAgent
		t.Cleanup(traceAgent.srv.Close)
		writeURL = traceAgent.srv.URL + "/api/v1/write"
	}
	// The agent's queue as Prometheus 2.42 ships it (min_backoff 30ms,
	// max_backoff 5s, 500 samples a request), with 4 shards from the start:
	// a production Prometheus runs several, and each retries on its own.
	agent := promtest.Start(t, promtest.Options{
		Agent:         true,
		ScrapeTargets: []string{addr},
		ExtraConfig: fmt.Sprintf(`
remote_write:
  - url: %s
    name: %s
    remote_timeout: 5s
    queue_config:
      capacity: 2500
      max_samples_per_send: 500
      batch_send_deadline: 1s
      min_backoff: 30ms
      max_backoff: 5s
      min_shards: 4
      max_shards: 4
`, writeURL, promtest.RemoteWriteName),
	})
	t.Logf("processes up after %s; exporter at %s, %d series a scrape", time.Since(start).Round(time.Millisecond), addr, len(tr.inputs))

	// When to kill.
	if p.afterSave {
		promtest.Eventually(t, 100*time.Second, func() (bool, string) {
			if _, err := os.Stat(stateFile); err != nil {
				return false, "merge state file not written yet: " + err.Error()
			}
			return true, ""
		})
		time.Sleep(3 * time.Second)
	} else {
		time.Sleep(p.killAt - time.Since(start))
	}
	f := &killFigures{}
	if st, err := os.Stat(stateFile); err == nil {
		f.stateBytes = st.Size()
	}
	m1, err := c.metrics()
	if err != nil {
		t.Fatal(err)
	}
	// Kill while the agent sends: its sends follow each scrape.
	n := len(exp.scrapes())
	for deadline := time.Now().Add(3 * time.Second); len(exp.scrapes()) == n && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	f.killStep = len(exp.scrapes()) - 1
	killed := time.Now()
	_ = c.stop(syscall.SIGKILL)
	time.Sleep(p.downtime)
	c2 := c.restart(t)
	cur.Store(c2)
	f.restartGap = time.Since(killed)
	t.Logf("killed cardinal at step %d (%s after the start; state file %d bytes), down %s, ready again after %s",
		f.killStep, killed.Sub(start).Round(time.Millisecond), f.stateBytes, p.downtime, f.restartGap.Round(time.Millisecond))

	// The cutoff: after the frozen step has been served 5 times.
	var served []servedScrape
	promtest.Eventually(t, time.Duration(p.lastStep)*time.Second+60*time.Second, func() (bool, string) {
		served = exp.scrapes()
		return len(served) >= p.lastStep+6, fmt.Sprintf("%d scrapes served", len(served))
	})
	served = served[:p.lastStep+6]
	cutoff := served[len(served)-1].at.Add(400 * time.Millisecond)
	f.scrapes = len(served)
	time.Sleep(time.Until(cutoff))

	var got map[string][]rawPoint
	convergeStart := time.Now()
	deadline := convergeStart.Add(60 * time.Second)
	for {
		got, err = queryRaw(ctx, receiver, `{job="mesh"}`, cutoff)
		if err == nil {
			*f = checkKill(tr, served, got, *f, trace)
			if f.passMissing+f.passWrong+f.mergedWrong == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	f.converged = time.Since(convergeStart)
	if err != nil {
		t.Fatalf("cannot read the receiver: %v", err)
	}

	m2, err := c2.metrics()
	if err != nil {
		t.Fatal(err)
	}
	f.oldCodes = intMap(m1.by("cardinal_forward_requests_total", "code"))
	f.newCodes = intMap(m2.by("cardinal_forward_requests_total", "code"))
	f.mergeRejected = m1.value("cardinal_merge_rejected_samples_total", "", "") + m2.value("cardinal_merge_rejected_samples_total", "", "")
	f.forwardRejected = m1.value("cardinal_forward_rejected_series_total", "", "") + m2.value("cardinal_forward_rejected_series_total", "", "")
	rm, err := scrape(receiver.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	f.receiverCodes = map[string]int{}
	for _, s := range rm["prometheus_http_requests_total"].GetMetric() {
		var handler, code string
		for _, l := range s.GetLabel() {
			switch l.GetName() {
			case "handler":
				handler = l.GetValue()
			case "code":
				code = l.GetValue()
			}
		}
		if handler == "/api/v1/write" {
			f.receiverCodes[code] += int(s.GetCounter().GetValue())
		}
	}
	stats, err := agent.RemoteWriteStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.senderFailed, f.senderRetry = stats.Failed, stats.Retried
	for _, line := range strings.Split(receiver.Log(), "\n") {
		l := strings.ToLower(line)
		if strings.Contains(l, "error decoding remote write request") {
			f.truncatedBodies++
		}
		if strings.Contains(l, "out of order") || strings.Contains(l, "duplicate sample") || strings.Contains(l, "out of bounds") {
			f.rejectionLines = append(f.rejectionLines, line)
		}
	}

	t.Logf("%d scrapes to the cutoff (step %d frozen from scrape %d); receiver complete after %s more", f.scrapes, p.lastStep, p.lastStep+1, f.converged.Round(time.Millisecond))
	t.Logf("pass-through: %d series, %d samples at the receiver, %d scrape timestamps, %d missing, %d wrong",
		f.passSeries, f.passSamples, f.scrapeTimestamps, f.passMissing, f.passWrong)
	t.Logf("merged: %d outputs, %d bit-exact, %d within 1e-9, %d wrong; %d counters went down at the receiver (%d outputs), increase() over the run overcounts by %.0f (%.4f%% of the true increase %.0f); longest gap between merged points %s",
		f.merged, f.mergedExact, f.mergedClose, f.mergedWrong, f.mergedResets, f.resetOutputs, f.overcount, 100*f.overcount/math.Max(f.trueIncrease, 1), f.trueIncrease, time.Duration(f.maxGap)*time.Millisecond)
	t.Logf("receiver write answers {%s} (%d bodies cut short by the kill), %d rejection lines in its log; cardinal forward attempts before the kill {%s}, after {%s}; merged samples refused %v, series refused %v; agent: failed %v, retried %v samples",
		answersString(f.receiverCodes), f.truncatedBodies, len(f.rejectionLines), answersString(f.oldCodes), answersString(f.newCodes), f.mergeRejected, f.forwardRejected, f.senderFailed, f.senderRetry)
	for _, l := range f.rejectionLines[:min(3, len(f.rejectionLines))] {
		t.Logf("  receiver: %s", strings.TrimSpace(l))
	}
	for _, e := range f.examples {
		t.Logf("  e.g. %s", e)
	}
	t.Logf("figures:\n| kill at | restart | pass-through samples (series) | missing | wrong | merged exact | counters gone down | increase() overcount | receiver answers | merged refused | agent failed / retried | total |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n| step %d | %s | %d (%d) | %d | %d | %d/%d | %d | %.4f%% | %s | %v | %v / %v | %s |",
		f.killStep, f.restartGap.Round(time.Millisecond), f.passSamples, f.passSeries, f.passMissing, f.passWrong,
		f.mergedExact+f.mergedClose, f.merged, f.mergedResets, 100*f.overcount/math.Max(f.trueIncrease, 1),
		answersString(f.receiverCodes), f.mergeRejected, f.senderFailed, f.senderRetry, time.Since(start).Round(time.Second))
	if err := c2.stop(syscall.SIGTERM); err != nil {
		t.Errorf("restarted cardinal did not exit 0: %v", err)
	}
	return f
}

// checkKill compares the receiver's samples up to the cutoff with what the
// exporter served.
func checkKill(tr *meshTraffic, served []servedScrape, got map[string][]rawPoint, f killFigures, trace killTrace) killFigures {
	f.passSeries, f.passSamples, f.passMissing, f.passWrong = 0, 0, 0, 0
	f.merged, f.mergedExact, f.mergedClose, f.mergedWrong = 0, 0, 0, 0
	f.mergedResets, f.resetOutputs, f.overcount, f.trueIncrease, f.maxGap = 0, 0, 0, 0, 0
	f.examples = nil
	example := func(format string, args ...any) {
		if len(f.examples) < 20 {
			f.examples = append(f.examples, fmt.Sprintf(format, args...))
		}
	}
	// The scrape timestamps: every pass-through sample of one scrape has
	// the scrape's timestamp.
	stamps := map[int64]bool{}
	for _, o := range tr.outputs {
		if !o.merged {
			for _, pt := range got[o.key] {
				stamps[pt.ts] = true
			}
		}
	}
	f.scrapeTimestamps = len(stamps)
	// Scrape k (served[k]) has the k-th timestamp.
	order := make([]int64, 0, len(stamps))
	for ts := range stamps {
		order = append(order, ts)
	}
	slices.Sort(order)
	stepAt := map[int64]int{}
	for k, ts := range order {
		if k < len(served) {
			stepAt[ts] = served[k].step
		}
	}
	for _, o := range tr.outputs {
		pts := got[o.key]
		if o.merged {
			continue
		}
		f.passSeries++
		f.passSamples += len(pts)
		i := o.inputs[0]
		if miss := len(served) - len(pts); miss > 0 {
			f.passMissing += miss
			example("%s: %d samples, %d scrapes served", short(o.key), len(pts), len(served))
			continue
		}
		for k, pt := range pts[:min(len(pts), len(served))] {
			if want := tr.values[served[k].step][i]; pt.v != want {
				f.passWrong++
				example("%s: sample %d = %v, want %v (step %d)", short(o.key), k, pt.v, want, served[k].step)
				break
			}
		}
		if len(pts) > len(served) {
			f.passWrong += len(pts) - len(served)
			example("%s: %d samples, only %d scrapes served", short(o.key), len(pts), len(served))
		}
	}
	if f.scrapeTimestamps != len(served) {
		example("%d distinct pass-through timestamps, %d scrapes served", f.scrapeTimestamps, len(served))
	}
	last := served[len(served)-1].step
	for _, o := range tr.outputs {
		if !o.merged {
			continue
		}
		f.merged++
		pts := got[o.key]
		var truth float64
		for _, i := range o.inputs {
			truth += tr.values[last][i]
		}
		if len(pts) == 0 {
			f.mergedWrong++
			example("%s: absent, want %v", short(o.key), truth)
			continue
		}
		v := pts[len(pts)-1].v
		switch {
		case math.Float64bits(v) == math.Float64bits(truth):
			f.mergedExact++
		case math.Abs(v-truth) <= 1e-9*math.Max(1, math.Abs(truth)):
			f.mergedClose++
		default:
			f.mergedWrong++
			example("%s = %v, want %v", short(o.key), v, truth)
		}
		for k := 1; k < len(pts); k++ {
			f.maxGap = max(f.maxGap, pts[k].ts-pts[k-1].ts)
		}
		if !o.counter {
			continue
		}
		// What increase() over the whole run computes: every drop is read
		// as a counter reset, and the value after it counts in full.
		inc, resets := 0.0, 0
		for k := 1; k < len(pts); k++ {
			if d := pts[k].v - pts[k-1].v; d >= 0 {
				inc += d
			} else {
				inc += pts[k].v
				resets++
			}
		}
		f.trueIncrease += pts[len(pts)-1].v - pts[0].v
		f.overcount += inc - (pts[len(pts)-1].v - pts[0].v)
		if resets > 0 {
			f.mergedResets += resets
			f.resetOutputs++
			if f.resetOutputs <= 3 {
				truthAt := func(ts int64) string {
					st, ok := stepAt[ts]
					if !ok {
						return "?"
					}
					var sum float64
					for _, i := range o.inputs {
						sum += tr.values[st][i]
					}
					return fmt.Sprintf("%v", sum)
				}
				example("%s went down %d times: %s", short(o.key), resets, dips(pts, truthAt))
				// The inputs' values at the scrapes around the drop, to
				// tell which mix of them the point after it holds.
				for k := 1; k < len(pts); k++ {
					if pts[k].v < pts[k-1].v {
						st := stepAt[pts[k].ts]
						var sb strings.Builder
						for s := max(0, st-4); s <= min(st+1, len(tr.values)-1); s++ {
							fmt.Fprintf(&sb, "step %d:", s)
							for _, i := range o.inputs {
								fmt.Fprintf(&sb, " %v", tr.values[s][i])
							}
							sb.WriteString("; ")
						}
						example("  inputs: %s", sb.String())
						if traceAgent, traceCardinal := trace.agent, trace.cardinal; traceAgent != nil {
							traceAgent.mu.Lock()
							for _, i := range o.inputs {
								var sb strings.Builder
								for _, e := range traceAgent.log[tr.inputs[i].key] {
									if e.at.UnixMilli() > pts[k].ts-3000 && e.at.UnixMilli() < pts[k].ts+8000 {
										fmt.Fprintf(&sb, "[req %d %s ts %s v %v -> %d] ", e.req, e.at.Format("05.000"), time.UnixMilli(e.ts).Format("05.000"), e.v, e.status)
									}
								}
								example("  the agent sent for input %d: %s", i, sb.String())
							}
							traceAgent.mu.Unlock()
							traceCardinal.mu.Lock()
							var sb strings.Builder
							for _, e := range traceCardinal.log[o.key] {
								if e.at.UnixMilli() > pts[k].ts-3000 && e.at.UnixMilli() < pts[k].ts+8000 {
									fmt.Fprintf(&sb, "[req %d %s ts %s v %v -> %d] ", e.req, e.at.Format("05.000"), time.UnixMilli(e.ts).Format("05.000"), e.v, e.status)
								}
							}
							example("  cardinal sent for the output: %s", sb.String())
							traceCardinal.mu.Unlock()
						}
						break
					}
				}
			}
		}
	}
	return f
}

// dips renders the points around the first drop of pts, each with the
// truth at its timestamp's scrape.
func dips(pts []rawPoint, truthAt func(int64) string) string {
	for k := 1; k < len(pts); k++ {
		if pts[k].v < pts[k-1].v {
			from, to := max(0, k-4), min(len(pts), k+8)
			var sb strings.Builder
			for _, p := range pts[from:to] {
				fmt.Fprintf(&sb, "%v@%s (truth %s); ", p.v, time.UnixMilli(p.ts).Format("15:04:05.000"), truthAt(p.ts))
			}
			return sb.String()
		}
	}
	return ""
}

// EnvTrace, when set, puts a recording proxy between the agent and Cardinal
// and another between Cardinal and the receiver in the kill -9 tests, and
// prints, for the first merged counters that went down, every sample sent
// for them around the restart (which process sent what, and what was
// acknowledged).
const EnvTrace = "CARDINAL_RELIABILITY_TRACE"

// killTrace holds the recording proxies of a traced run (nil: none).
type killTrace struct {
	agent    *recordingProxy // between the agent and Cardinal
	cardinal *recordingProxy // between Cardinal and the receiver
}

// recordingProxy forwards remote-write requests to target and records, per
// series, every sample that went through and the answer it got.
type recordingProxy struct {
	srv    *httptest.Server
	target func() string
	mu     sync.Mutex
	seq    int
	log    map[string][]recorded
}

type recorded struct {
	ts     int64
	v      float64
	status int // 0: no answer
	at     time.Time
	req    int
}

func newRecordingProxy(target func() string) *recordingProxy {
	p := &recordingProxy{target: target, log: map[string][]recorded{}}
	client := &http.Client{Timeout: 10 * time.Second}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<20))
		raw, _ := snappy.Decode(nil, body)
		var req prompb.WriteRequest
		_ = req.Unmarshal(raw)
		out, err := http.NewRequestWithContext(r.Context(), http.MethodPost, p.target(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out.Header = r.Header.Clone()
		resp, err := client.Do(out)
		status := 0
		if err == nil {
			status = resp.StatusCode
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
		}
		p.mu.Lock()
		p.seq++
		for _, ts := range req.Timeseries {
			k := seriesKey(ts.Labels)
			for _, smp := range ts.Samples {
				p.log[k] = append(p.log[k], recorded{ts: smp.Timestamp, v: smp.Value, status: status, at: time.Now(), req: p.seq})
			}
		}
		p.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(status)
	}))
	return p
}
