package reliability

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
)

// faultsMesh is the cluster of the fault tests: 3,696 input series per
// step, 960 passing through and 2,736 merged into 912 outputs.
var faultsMesh = meshgen.Config{Workloads: 12, PodsPerWorkload: 3, Variants: 1, HighCardShare: -1, Seed: 11}

// faultsCardinalConfig is Cardinal's configuration for the fault tests:
// short downstream timeout and few retries, so that the faults reach the
// sender, and a 1s merge flush.
func faultsCardinalConfig(downstream string) string {
	return fmt.Sprintf(`
downstream:
  url: %s
  timeout: 2s
  max_retries: 2
  min_backoff: 50ms
  max_backoff: 500ms
relabel_configs:%s
merge:
  flush_interval: 1s
`, downstream, relabelRules())
}

// expect is what a fault case must end with, beyond the invariants every
// case checks (no acknowledged sample lost, no sample stored twice with
// different values or out of order, no merged counter going down, merged
// values equal to what was absorbed unless the downstream refused their
// last point).
type expect uint8

const (
	// expectAll: every request acknowledged, every sample delivered.
	expectAll expect = iota
	// expectRefused: the downstream refuses some series on their own;
	// the sender is told 400 for the requests that carried them, and
	// everything else is delivered.
	expectRefused
	// expectNothing: the downstream refuses everything (401, 404): the
	// sender is told 502 for every request with a pass-through series, so
	// it keeps its data, and nothing is delivered. A request whose series
	// are all merged is answered 204 (its samples are absorbed): see
	// README.md, it is lost at the next restart.
	expectNothing
)

// faultCase is one fault and its schedule.
type faultCase struct {
	name  string
	quick bool // part of the quick suite
	sched schedule
	// heal turns the faults off this long after sending started (0: when
	// the sender is done).
	heal time.Duration
	// permanent keeps the faults on through shutdown.
	permanent bool
	expect    expect
	// sawFault checks that the downstream did inject the fault: a case
	// whose fault never happened proves nothing.
	sawFault func(r *faultRun) string
}

// Poison series: the downstream refuses any request that carries one, as a
// Prometheus refuses a request with one bad sample.
var (
	// A pass-through family of one workload: 3 series (one per pod).
	poisonPass = func(ls []prompb.Label) bool {
		return labelIs("__name__", "envoy_cluster_upstream_cx_total")(ls) && labelIs("app", "reviews")(ls)
	}
	// A merged family of the same workload: 2 outputs (without pod: what
	// Cardinal forwards, not what it receives).
	poisonMerged = func(ls []prompb.Label) bool {
		return labelIs("__name__", "istio_requests_total")(ls) && labelIs("app", "reviews")(ls) &&
			!slices.ContainsFunc(ls, func(l prompb.Label) bool { return l.Name == "pod" })
	}
)

func faultCases() []faultCase {
	status := func(code int, ra func() string, msg string) action {
		return action{kind: actStatus, status: code, retryAfter: ra, msg: msg}
	}
	ok := action{kind: actStore}
	in := func(n, period, from, to int) bool { m := n % period; return m >= from && m <= to }
	// The schedules are by request count at the downstream, so the fault
	// happens in every run; whether a given request of the sender meets it
	// depends on timing, so what the sender was told is a figure, not a
	// requirement.
	sawDown := func(keys ...string) func(r *faultRun) string {
		return func(r *faultRun) string {
			for _, key := range keys {
				if r.down.Answers[key] > 0 {
					return ""
				}
			}
			return fmt.Sprintf("the downstream never did %q (answers %v)", keys, answersString(r.down.Answers))
		}
	}
	return []faultCase{
		{name: "no fault", quick: true, sched: func(int, *prompb.WriteRequest) action { return ok }},
		{
			name: "5xx bursts", quick: true, sawFault: sawDown("500", "502", "503"),
			// Bursts of 8 (500, 502, 503 in turn): longer than Cardinal's 3
			// attempts, so some reach the sender as 503.
			sched: func(n int, _ *prompb.WriteRequest) action {
				if in(n, 20, 1, 8) {
					return status([]int{500, 502, 503}[n%3], nil, "injected failure")
				}
				return ok
			},
		},
		{
			name: "429 without Retry-After", sawFault: sawDown("429"),
			sched: func(n int, _ *prompb.WriteRequest) action {
				if in(n, 10, 1, 4) {
					return status(http.StatusTooManyRequests, nil, "rate limited")
				}
				return ok
			},
		},
		{
			name: "429 Retry-After: 1 (seconds)", quick: true, sawFault: sawDown("429"),
			sched: func(n int, _ *prompb.WriteRequest) action {
				if in(n, 10, 1, 2) {
					return status(http.StatusTooManyRequests, retryAfterSeconds(1), "rate limited")
				}
				return ok
			},
		},
		{
			name: "429 Retry-After: HTTP date +2s", sawFault: sawDown("429"),
			sched: func(n int, _ *prompb.WriteRequest) action {
				if in(n, 10, 1, 2) {
					return status(http.StatusTooManyRequests, retryAfterDate(2*time.Second), "rate limited")
				}
				return ok
			},
		},
		{
			name: "connection reset before storing", sawFault: sawDown("reset before storing"),
			sched: func(n int, _ *prompb.WriteRequest) action {
				if in(n, 5, 1, 2) {
					return action{kind: actResetBefore}
				}
				return ok
			},
		},
		{
			name: "connection reset after storing", quick: true, sawFault: sawDown("reset after storing"),
			sched: func(n int, _ *prompb.WriteRequest) action {
				if in(n, 5, 1, 2) {
					return action{kind: actResetAfter}
				}
				return ok
			},
		},
		{
			name: "hang past the timeout", quick: true, sawFault: sawDown("hang"),
			sched: func(n int, _ *prompb.WriteRequest) action {
				if n%15 == 1 {
					return action{kind: actHang}
				}
				return ok
			},
		},
		{
			name: "hang after storing", sawFault: sawDown("hang after storing"),
			sched: func(n int, _ *prompb.WriteRequest) action {
				if n%15 == 1 {
					return action{kind: actHangAfterStore}
				}
				return ok
			},
		},
		{
			name: "slow response body (6.4s)", sawFault: sawDown("200 slow body"),
			sched: func(n int, _ *prompb.WriteRequest) action {
				if n%6 == 1 {
					return action{kind: actSlowBody}
				}
				return ok
			},
		},
		{
			name: "413 for requests over 100 series", permanent: true, sawFault: sawDown("413"),
			sched: func(_ int, req *prompb.WriteRequest) action {
				if len(req.Timeseries) > 100 {
					return status(http.StatusRequestEntityTooLarge, nil, "request body too large")
				}
				return ok
			},
		},
		{
			// Transient: the halves of a refused request get other numbers,
			// so splitting delivers everything.
			name: "409 on every 7th request", permanent: true, sawFault: sawDown("409"),
			sched: func(n int, _ *prompb.WriteRequest) action {
				if n%7 == 1 {
					return status(http.StatusConflict, nil, "add 1 samples: out of order sample")
				}
				return ok
			},
		},
		{
			name: "400 for some series", quick: true, permanent: true, expect: expectRefused, sawFault: sawDown("400"),
			sched: func(_ int, req *prompb.WriteRequest) action {
				if hasSeries(req, poisonPass) || hasSeries(req, poisonMerged) {
					return status(http.StatusBadRequest, nil, "out of bounds")
				}
				return ok
			},
		},
		{
			name: "401 for 3s, then fixed", heal: 3 * time.Second, sawFault: sawDown("401"),
			sched: func(int, *prompb.WriteRequest) action {
				return status(http.StatusUnauthorized, nil, "bad credentials")
			},
		},
		{
			name: "401 permanent", quick: true, permanent: true, expect: expectNothing, sawFault: sawDown("401"),
			sched: func(int, *prompb.WriteRequest) action {
				return status(http.StatusUnauthorized, nil, "bad credentials")
			},
		},
		{
			name: "404 permanent", permanent: true, expect: expectNothing, sawFault: sawDown("404"),
			sched: func(int, *prompb.WriteRequest) action {
				return status(http.StatusNotFound, nil, "404 page not found")
			},
		},
	}
}

// faultRun is what one case measured.
type faultRun struct {
	c        faultCase
	sender   senderReport
	down     downstreamStats
	cardinal promMetrics // scraped after sending, before SIGTERM
	check    faultCheck
	stop     time.Duration // SIGTERM to exit
	exitErr  error
	elapsed  time.Duration
}

// faultCheck is the comparison of what the sender was told with what the
// downstream holds.
type faultCheck struct {
	// Pass-through samples: acknowledged, delivered (distinct samples of
	// pass-through series at the downstream), acknowledged but missing,
	// delivered though the sender was not told 2xx, refused by the
	// downstream, and neither delivered nor acknowledged for another
	// reason (the sender gave up or the run ended).
	ackedPass, deliveredPass, lostPass, deliveredUnacked, refusedPass, unsentPass int
	// Dropped-request samples the downstream did not refuse but does not
	// hold: Cardinal told the sender "the other series were accepted".
	droppedNotDelivered int
	corrupt             int // stored values that are not what was sent
	// Merged outputs: points delivered, outputs whose final value equals
	// what was absorbed (bit for bit, within 1e-9), outputs whose last
	// point the downstream refused, wrong ones, counters that went down.
	mergedPoints, mergedExact, mergedClose, mergedRefused, mergedWrong, mergedDecreasing int
	mergedAckedBelow                                                                     int // outputs whose absorbed truth exceeds the acknowledged one
	examples                                                                             []string
}

func (c *faultCheck) example(format string, args ...any) {
	if len(c.examples) < 6 {
		c.examples = append(c.examples, fmt.Sprintf(format, args...))
	}
}

// short abbreviates a series key for a log line: the name and the labels
// that tell mesh series apart.
func short(key string) string {
	var b strings.Builder
	for _, l := range []string{"__name__", "app", "pod", "destination_app", "response_code", "le"} {
		if i := strings.Index(key, l+`="`); i >= 0 {
			v := key[i+len(l)+2:]
			v = v[:strings.IndexByte(v, '"')]
			fmt.Fprintf(&b, "%s=%q ", l, v)
		}
	}
	return "{" + strings.TrimSpace(b.String()) + " ...}"
}

// TestFaults runs the meshgen stream through Cardinal into a downstream
// that fails on a schedule, one fault per subtest, and compares what the
// sender was told with what the downstream holds after Cardinal's graceful
// stop (SIGTERM: last merge flush). Quick cases run by default, all of
// them with CARDINAL_RELIABILITY=full.
func TestFaults(t *testing.T) {
	start := time.Now()
	steps := 12
	if fullMode() {
		steps = 24
	}
	tr := newMeshTraffic(t, faultsMesh, steps, 4)
	pass, merged, mergedInputs := tr.counts()
	t.Logf("traffic: %d steps of %d input series every 250ms (%d pass through, %d merged into %d outputs), 4 sender shards of 500-series requests",
		steps, len(tr.inputs), pass, mergedInputs, merged)
	var (
		mu   sync.Mutex
		runs []*faultRun
	)
	for _, fc := range faultCases() {
		if !fc.quick && !fullMode() {
			continue
		}
		t.Run(fc.name, func(t *testing.T) {
			r := runFault(t, fc, tr, steps)
			mu.Lock()
			runs = append(runs, r)
			mu.Unlock()
		})
	}
	t.Logf("figures (%s part, %s):\n%s", map[bool]string{true: "full", false: "quick"}[fullMode()], time.Since(start).Round(time.Second), faultTable(runs))
}

func runFault(t *testing.T, fc faultCase, tr *meshTraffic, steps int) *faultRun {
	start := time.Now()
	down := newFaultDownstream(t)
	c := startCardinal(t, faultsCardinalConfig(down.URL()))
	down.setSchedule(fc.sched)
	if fc.heal > 0 {
		heal := time.AfterFunc(fc.heal, func() { down.setSchedule(nil) })
		defer heal.Stop()
	}
	sc := senderConfig{URL: c.URL + "/api/v1/write", Steps: steps}
	if fc.expect == expectNothing {
		// Nothing will get through: bound the wait.
		sc.Deadline = time.Duration(steps)*250*time.Millisecond + 5*time.Second
	}
	s := newPromSender(sc, tr)
	s.run(context.Background())
	if !fc.permanent {
		down.setSchedule(nil)
	}
	r := &faultRun{c: fc, sender: s.report()}
	m, err := c.metrics()
	if err != nil {
		t.Fatal(err)
	}
	r.cardinal = m
	// The graceful stop flushes the merged series a last time.
	t0 := time.Now()
	r.exitErr = c.stop(syscall.SIGTERM)
	r.stop = time.Since(t0)
	r.down = down.stats()
	r.check = checkFault(tr, s, r.sender, down)
	r.elapsed = time.Since(start)
	t.Logf("sender: %d requests, %d attempts, outcomes %v, answers {%s}, attempt latency p50 %s p99 %s max %s; slowest request: %s",
		r.sender.Requests, r.sender.Attempts, outcomesString(r.sender.ByOutcome), answersString(r.sender.Statuses),
		r.sender.P50.Round(time.Millisecond), r.sender.P99.Round(time.Millisecond), r.sender.MaxAttemptLatency.Round(time.Millisecond), r.sender.Slowest)
	t.Logf("downstream: %d requests, answers {%s}, %d samples stored, %d duplicates, tsdb refusals %v",
		r.down.Requests, answersString(r.down.Answers), r.down.Samples, r.down.Duplicates, r.down.TSDBErrors)
	t.Logf("cardinal: forward attempts {%s}, retries %v, split %v, rejected series %v, merge flushes ok %v failed %v, merged samples emitted %v rejected %v; stop took %s",
		answersString(intMap(m.by("cardinal_forward_requests_total", "code"))), m.value("cardinal_forward_retries_total", "", ""),
		m.value("cardinal_forward_split_requests_total", "", ""), m.value("cardinal_forward_rejected_series_total", "", ""),
		m.value("cardinal_merge_flushes_total", "result", "success"), m.value("cardinal_merge_flushes_total", "result", "failure"),
		m.value("cardinal_merge_emitted_samples_total", "", ""), m.value("cardinal_merge_rejected_samples_total", "", ""), r.stop.Round(time.Millisecond))
	ck := r.check
	t.Logf("pass-through samples: %d acknowledged, %d delivered, %d lost, %d delivered though not acknowledged, %d refused by the downstream, %d never acknowledged (sender gave up or run ended); merged: %d points, %d/%d outputs bit-exact (%d within 1e-9, %d whose last point the downstream refused), %d decreasing counters, %d outputs absorbed more than was acknowledged",
		ck.ackedPass, ck.deliveredPass, ck.lostPass, ck.deliveredUnacked, ck.refusedPass, ck.unsentPass, ck.mergedPoints, ck.mergedExact, len(mergedOutputs(tr)), ck.mergedClose, ck.mergedRefused, ck.mergedDecreasing, ck.mergedAckedBelow)

	// Invariants of every case.
	if r.exitErr != nil {
		t.Errorf("cardinal did not exit 0 after SIGTERM: %v", r.exitErr)
	}
	if ck.lostPass > 0 {
		t.Errorf("%d acknowledged pass-through samples are not at the downstream", ck.lostPass)
	}
	if ck.droppedNotDelivered > 0 {
		t.Errorf("%d samples of requests answered 400 (\"the other series were accepted\") are neither delivered nor refused", ck.droppedNotDelivered)
	}
	if ck.corrupt > 0 {
		t.Errorf("%d stored samples differ from what was sent", ck.corrupt)
	}
	if n := r.down.TSDBErrors["out of order"] + r.down.TSDBErrors["duplicate"]; n > 0 {
		t.Errorf("the downstream refused %d requests as a Prometheus TSDB would (out of order or conflicting duplicate): %v", n, r.down.TSDBErrors)
	}
	if ck.mergedWrong > 0 {
		t.Errorf("%d merged outputs end with a value other than the sum of their inputs' last absorbed values", ck.mergedWrong)
	}
	if ck.mergedDecreasing > 0 {
		t.Errorf("%d merged counters went down at the downstream", ck.mergedDecreasing)
	}
	if r.sender.Transport > 0 {
		t.Errorf("%d sender attempts got no answer from cardinal", r.sender.Transport)
	}
	if fc.sawFault != nil {
		if msg := fc.sawFault(r); msg != "" {
			t.Errorf("the fault did not show: %s", msg)
		}
	}
	// What the fault must end with.
	switch fc.expect {
	case expectAll:
		if n := r.sender.ByOutcome[acked]; n != r.sender.Requests {
			t.Errorf("%d of %d requests acknowledged (%v), want all", n, r.sender.Requests, outcomesString(r.sender.ByOutcome))
		}
		if ck.mergedExact+ck.mergedClose != len(mergedOutputs(tr)) {
			t.Errorf("%d of %d merged outputs right, want all", ck.mergedExact+ck.mergedClose, len(mergedOutputs(tr)))
		}
	case expectRefused:
		if r.sender.ByOutcome[dropped] == 0 || ck.refusedPass == 0 {
			t.Errorf("no request dropped (%v) or no sample refused (%d)", outcomesString(r.sender.ByOutcome), ck.refusedPass)
		}
		if n := r.sender.ByOutcome[dropped] + r.sender.ByOutcome[acked]; n != r.sender.Requests {
			t.Errorf("%d of %d requests acknowledged or dropped (%v), want all", n, r.sender.Requests, outcomesString(r.sender.ByOutcome))
		}
		if !strings.Contains(r.sender.firstDropped, "the downstream refused") {
			t.Errorf("a dropped request was told %q, want it to name the refused series", r.sender.firstDropped)
		}
	case expectNothing:
		// Merged-only requests are answered 503 while the downstream
		// refuses everything: acknowledged, they would live in memory only.
		for code := range r.sender.Statuses {
			if code != "502" && !strings.HasPrefix(code, "503") {
				t.Errorf("the sender got %s, want only 502 (it must keep its data) and 503 for merged-only requests", code)
			}
		}
		if n := r.sender.ByOutcome[acked]; n != 0 {
			t.Errorf("%d requests acknowledged though nothing can be delivered", n)
		}
		if r.sender.AckedPassRequests != 0 {
			t.Errorf("%d requests with pass-through series acknowledged, want none", r.sender.AckedPassRequests)
		}
		if r.down.Samples != 0 {
			t.Errorf("%d samples stored, want none", r.down.Samples)
		}
		t.Logf("acknowledged though undeliverable: %d requests carrying only merged series (%d samples)", r.sender.ByOutcome[acked], r.sender.AckedMerged)
	}
	for _, e := range ck.examples {
		t.Logf("  e.g. %s", e)
	}
	return r
}

// mergedOutputs lists the merged outputs of tr.
func mergedOutputs(tr *meshTraffic) []*meshOutput {
	var out []*meshOutput
	for _, o := range tr.outputs {
		if o.merged {
			out = append(out, o)
		}
	}
	return out
}

// checkFault compares the sender's record with the downstream's store.
func checkFault(tr *meshTraffic, s *promSender, rep senderReport, down *faultDownstream) faultCheck {
	var ck faultCheck
	interval := s.cfg.Interval.Milliseconds()
	// Requests the sender was told 400 for: which (input, step) they held.
	droppedAt := map[[2]int]bool{}
	for _, r := range s.requests {
		if r.outcome == dropped {
			for _, i := range r.inputs {
				droppedAt[[2]int{i, r.step}] = true
			}
		}
	}
	for i := range tr.inputs {
		in := &tr.inputs[i]
		if in.out.merged {
			continue
		}
		stored := map[int64]float64{}
		for _, smp := range down.lookup(in.out.key) {
			stored[smp.Timestamp] = smp.Value
			step := int((smp.Timestamp - s.t0) / interval)
			if step < 0 || step >= len(tr.values) || s.ts(step) != smp.Timestamp || tr.values[step][i] != smp.Value {
				ck.corrupt++
				ck.example("%s: stored %v at %d, not a sent sample", short(in.out.key), smp.Value, smp.Timestamp)
				continue
			}
			ck.deliveredPass++
			if !rep.ackedAt[i][step] {
				ck.deliveredUnacked++
			}
		}
		for step := range tr.values {
			ts := s.ts(step)
			_, have := stored[ts]
			switch {
			case rep.ackedAt[i][step]:
				ck.ackedPass++
				if !have {
					ck.lostPass++
					ck.example("%s at step %d: acknowledged, not delivered", short(in.out.key), step)
				}
			case have:
			case down.wasRefused(in.out.key, ts):
				ck.refusedPass++
			case droppedAt[[2]int{i, step}]:
				ck.droppedNotDelivered++
				ck.example("%s at step %d: in a request answered 400, neither delivered nor refused", short(in.out.key), step)
			default:
				ck.unsentPass++
			}
		}
	}
	for _, o := range mergedOutputs(tr) {
		var truth, ackedTruth float64
		any := false
		for _, i := range o.inputs {
			if st := rep.lastAbsorbed[i]; st >= 0 {
				truth += tr.values[st][i]
				any = true
			}
			if st := rep.lastAcked[i]; st >= 0 {
				ackedTruth += tr.values[st][i]
			}
		}
		if truth > ackedTruth {
			ck.mergedAckedBelow++
		}
		pts := down.lookup(o.key)
		ck.mergedPoints += len(pts)
		if o.counter {
			for k := 1; k < len(pts); k++ {
				if pts[k].Value < pts[k-1].Value {
					ck.mergedDecreasing++
					ck.example("%s went down from %v to %v at %d", short(o.key), pts[k-1].Value, pts[k].Value, pts[k].Timestamp)
					break
				}
			}
		}
		var got float64
		var lastTs int64 = math.MinInt64
		if len(pts) > 0 {
			got, lastTs = pts[len(pts)-1].Value, pts[len(pts)-1].Timestamp
		}
		switch {
		case !any && len(pts) == 0:
			ck.mergedExact++ // nothing absorbed, nothing delivered
		case len(pts) > 0 && math.Float64bits(got) == math.Float64bits(truth):
			ck.mergedExact++
		case len(pts) > 0 && math.Abs(got-truth) <= 1e-9*math.Max(1, math.Abs(truth)):
			ck.mergedClose++
		case down.refusedAfter(o.key, lastTs):
			ck.mergedRefused++
		default:
			ck.mergedWrong++
			if len(pts) == 0 {
				ck.example("%s: absent, want %v (acknowledged %v)", short(o.key), truth, ackedTruth)
			} else {
				ck.example("%s = %v at %d, want %v (acknowledged %v)", short(o.key), got, lastTs, truth, ackedTruth)
			}
		}
	}
	return ck
}

func outcomesString(m map[outcome]int) string {
	s := map[string]int{}
	for k, v := range m {
		s[k.String()] = v
	}
	return answersString(s)
}

func intMap(m map[string]float64) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = int(v)
	}
	return out
}

// faultTable renders the figures of the runs as a Markdown table.
func faultTable(runs []*faultRun) string {
	var sb strings.Builder
	sb.WriteString("| fault | sender: requests (attempts) | sender was told | pass-through acked / delivered / lost | delivered unacked | refused | merged exact | merged points | duplicates | downstream did | cardinal forward attempts | stop | run |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		ck := r.check
		nm := ck.mergedExact + ck.mergedClose + ck.mergedRefused + ck.mergedWrong
		fmt.Fprintf(&sb, "| %s | %d (%d) | %s | %d / %d / %d | %d | %d | %d/%d | %d | %d | %s | %s | %s | %s |\n",
			r.c.name, r.sender.Requests, r.sender.Attempts, answersString(r.sender.Statuses),
			ck.ackedPass, ck.deliveredPass, ck.lostPass, ck.deliveredUnacked, ck.refusedPass,
			ck.mergedExact+ck.mergedClose, nm, ck.mergedPoints, r.down.Duplicates,
			answersString(r.down.Answers), answersString(intMap(r.cardinal.by("cardinal_forward_requests_total", "code"))),
			r.stop.Round(10*time.Millisecond), r.elapsed.Round(100*time.Millisecond))
	}
	return sb.String()
}
