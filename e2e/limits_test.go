package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/cardinal-gateway/cardinal/internal/promtest"
	"github.com/cardinal-gateway/cardinal/limiter"
)

// limFamily is the counter family the limits exporter serves.
const limFamily = "http_requests_total"

// limSeries is one series of the limits exporter: a workload and a path. Its
// value grows by inc per scrape until the exporter's lastStep, then stays.
type limSeries struct {
	namespace, app, path string
	base, inc            float64
}

// limExporter serves http_requests_total for a set of series that the test
// can grow while it runs. Scrape n (from 0) exposes step min(n, lastStep).
type limExporter struct {
	lastStep int
	scrapes  atomic.Int64

	mu     sync.Mutex
	series []limSeries
}

func (e *limExporter) add(namespace, app string, from, to int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := from; i < to; i++ {
		// Distinct integer values: exact in float64 and in the text format.
		e.series = append(e.series, limSeries{
			namespace: namespace, app: app, path: fmt.Sprintf("/p%d", i),
			base: float64(1000 * (i + 1)), inc: float64(i + 1),
		})
	}
}

func (s *limSeries) value(step int) float64 { return s.base + s.inc*float64(step) }

func (e *limExporter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	step := min(int(e.scrapes.Add(1))-1, e.lastStep)
	e.mu.Lock()
	var b []byte
	b = append(b, "# TYPE "+limFamily+" counter\n"...)
	for i := range e.series {
		s := &e.series[i]
		b = fmt.Appendf(b, "%s{namespace=%q,app=%q,path=%q} %s\n", limFamily, s.namespace, s.app, s.path,
			strconv.FormatFloat(s.value(step), 'f', -1, 64))
	}
	e.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = w.Write(b)
}

// truth returns the frozen value (at lastStep) of every series of a workload
// by path, and their sum.
func (e *limExporter) truth(namespace, app string) (map[string]float64, float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	byPath := map[string]float64{}
	sum := 0.0
	for i := range e.series {
		s := &e.series[i]
		if s.namespace == namespace && s.app == app {
			v := s.value(e.lastStep)
			byPath[s.path] = v
			sum += v
		}
	}
	return byPath, sum
}

// restartCardinal starts `cardinal serve` again with the config file and
// listen address of c, which must have exited, and waits until it is ready.
func restartCardinal(t testing.TB, c *cardinal) *cardinal {
	t.Helper()
	n := &cardinal{t: t, URL: c.URL, addr: c.addr, config: c.config, args: c.args, log: &promtest.LogBuffer{}, done: make(chan error, 1)}
	n.cmd = exec.Command(cardinalBinary(t), append([]string{"serve", "--config.file=" + c.config, "--web.listen-address=" + c.addr, "--log.level=debug"}, c.args...)...)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.done <- n.cmd.Wait() }()
	t.Cleanup(func() {
		n.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("log of the restarted cardinal:\n%s", n.log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := httpGet(n.URL + "/-/ready"); code == http.StatusOK {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted cardinal not ready after 30s; log:\n%s", n.log.String())
		}
		select {
		case err := <-n.done:
			t.Fatalf("restarted cardinal exited during start: %v; log:\n%s", err, n.log.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// limStopAfterScrape returns right after the exporter was scraped.
func limStopAfterScrape(t testing.TB, _ *cardinal, scrapes *atomic.Int64) {
	t.Helper()
	n := scrapes.Load()
	for deadline := time.Now().Add(3 * time.Second); scrapes.Load() == n && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
	}
}

// limStopMidStream returns (bounded) at a moment a busy gateway is usually
// in: the sender holds samples it scraped after its last request to Cardinal
// and has not sent, and Cardinal's merger has emitted, or will emit at
// shutdown, the overflow series later than those samples' timestamps (no
// flush came between the sender's last request and the scrape). The
// unsent samples then reach the next process. The relative phase of the
// sender's batch timer, the scrapes and the merger's flush ticker decides
// whether that moment exists; limStopAfterScrape before the previous start
// sets the flush ticker so that it does.
func limStopMidStream(t testing.TB, c *cardinal, scrapes *atomic.Int64) {
	t.Helper()
	counters := func() (received, flushes float64) {
		fams := scrapeMetrics(t, c.URL)
		return familyValue(fams, "cardinal_received_samples_total", "", ""), familyValue(fams, "cardinal_merge_flushes_total", "", "")
	}
	waitFor := func(cond func() bool) bool {
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			if cond() {
				return true
			}
		}
		return false
	}
	for attempt := 1; attempt <= 5; attempt++ {
		r0, _ := counters()
		var flushes float64
		if !waitFor(func() bool {
			var r float64
			r, flushes = counters()
			return r > r0
		}) {
			continue
		}
		n := scrapes.Load()
		if !waitFor(func() bool { return scrapes.Load() > n }) {
			continue
		}
		if _, f := counters(); f == flushes {
			time.Sleep(10 * time.Millisecond) // the sender appends the scrape
			t.Logf("stopping cardinal mid-stream (attempt %d): a scrape not sent yet, no flush since the last request", attempt)
			return
		}
	}
	t.Logf("could not catch cardinal mid-stream in 5 attempts; stopping it anyway")
}

// limDo makes one admin API call with an optional bearer token.
func limDo(t testing.TB, method, url, token, body string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

type limLimits struct {
	Default   int            `json:"default"`
	Overrides map[string]int `json:"overrides"`
}

func limGetLimits(t testing.TB, baseURL string) limLimits {
	t.Helper()
	code, body := httpGet(baseURL + "/api/v1/limits")
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/limits: %d %s", code, body)
	}
	var l limLimits
	if err := json.Unmarshal([]byte(body), &l); err != nil {
		t.Fatalf("GET /api/v1/limits: %v: %s", err, body)
	}
	return l
}

// limWorkload returns the cardinality report line of workload (ok false when
// it is not among the top entries).
func limWorkload(t testing.TB, baseURL, workload string, top int) (limiter.Report, bool, string) {
	t.Helper()
	code, body := httpGet(fmt.Sprintf("%s/api/v1/cardinality?top=%d", baseURL, top))
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/cardinality: %d %s", code, body)
	}
	var reports []limiter.Report
	if err := json.Unmarshal([]byte(body), &reports); err != nil {
		t.Fatalf("GET /api/v1/cardinality: %v: %s", err, body)
	}
	for _, r := range reports {
		if r.Workload == workload {
			return r, true, body
		}
	}
	return limiter.Report{}, false, body
}

// limForward4xx sums cardinal_forward_requests_total over 4xx codes.
func limForward4xx(fams map[string]*dto.MetricFamily) float64 {
	sum := 0.0
	for _, m := range fams["cardinal_forward_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "code" && strings.HasPrefix(l.GetValue(), "4") {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// limSnapshot is what the receiver holds of one workload: the latest value
// and sample timestamp of every series, by path ("" for the overflow
// series), plus the number of overflow series.
type limSnapshot struct {
	values    map[string]float64
	ts        map[string]time.Time
	overflows int
	other     []string // series that are neither a path series nor the overflow
}

func limQueryWorkload(ctx context.Context, receiver *promtest.Prometheus, namespace, app string) (limSnapshot, error) {
	sel := fmt.Sprintf(`{namespace=%q,app=%q}`, namespace, app)
	samples, err := receiver.Query(ctx, sel)
	if err != nil {
		return limSnapshot{}, err
	}
	stamps, err := receiver.Query(ctx, "timestamp("+sel+")")
	if err != nil {
		return limSnapshot{}, err
	}
	snap := limSnapshot{values: map[string]float64{}, ts: map[string]time.Time{}}
	for _, s := range samples {
		if name := s.Labels["__name__"]; name == "up" || strings.HasPrefix(name, "scrape_") {
			continue
		}
		switch {
		case s.Labels[limiter.OverflowLabel] == "true" && s.Labels["path"] == "" && s.Labels["__name__"] == limFamily:
			snap.overflows++
			snap.values[""] += s.Value
		case s.Labels[limiter.OverflowLabel] == "" && s.Labels["path"] != "" && s.Labels["__name__"] == limFamily:
			if _, dup := snap.values[s.Labels["path"]]; dup {
				snap.other = append(snap.other, fmt.Sprint(s.Labels))
			}
			snap.values[s.Labels["path"]] = s.Value
		default:
			snap.other = append(snap.other, fmt.Sprint(s.Labels))
		}
	}
	// timestamp() drops the metric name; the path tells the series apart.
	for _, s := range stamps {
		if s.Labels[limiter.OverflowLabel] == "" && s.Labels["path"] != "" {
			snap.ts[s.Labels["path"]] = time.UnixMilli(int64(math.Round(s.Value * 1000)))
		}
	}
	return snap, nil
}

func (s limSnapshot) paths() []string {
	var out []string
	for p := range s.values {
		if p != "" {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// diff returns "" when the snapshot holds exactly one overflow series, only
// series the exporter exposes with their values, and an overflow value that
// is the sum of every exposed series not admitted as its own (so the
// workload's total is exact); otherwise it says what differs.
func (s limSnapshot) diff(truth map[string]float64, sum float64) string {
	if len(s.other) > 0 {
		return fmt.Sprintf("unexpected series %v", first(s.other))
	}
	if s.overflows != 1 {
		return fmt.Sprintf("%d overflow series, want 1", s.overflows)
	}
	admitted := 0.0
	for _, p := range s.paths() {
		want, ok := truth[p]
		if !ok || s.values[p] != want {
			return fmt.Sprintf("series %s = %v, want %v (exposed %v)", p, s.values[p], want, ok)
		}
		admitted += want
	}
	if want := sum - admitted; !relClose(s.values[""], want, 1e-9) {
		return fmt.Sprintf("overflow series = %v, want %v, the sum of the %d series not admitted (%d admitted)",
			s.values[""], want, len(truth)-len(s.paths()), len(s.paths()))
	}
	return ""
}

// limCheckSum asserts that the receiver's total of shop/cart is within 1% of
// the exporter's.
func limCheckSum(t testing.TB, ctx context.Context, receiver *promtest.Prometheus, want float64) {
	t.Helper()
	sums, err := receiver.Query(ctx, fmt.Sprintf(`sum by (namespace, app) (%s{namespace="shop",app="cart"})`, limFamily))
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) != 1 || !relClose(sums[0].Value, want, 0.01) {
		t.Errorf("receiver: sum by (namespace, app) of shop/cart = %v, want %v within 1%%", sums, want)
	}
}

// limLastLine returns the last line of log that contains substr.
func limLastLine(log, substr string) string {
	last := "(no line with " + strconv.Quote(substr) + ")"
	for line := range strings.Lines(log) {
		if strings.Contains(line, substr) {
			last = strings.TrimSpace(line)
		}
	}
	return last
}

// relClose reports whether got is within rel of want.
func relClose(got, want, rel float64) bool {
	return math.Abs(got-want) <= rel*math.Max(math.Abs(want), 1)
}

// TestE2ELimits: a Prometheus agent scrapes a workload with more series than
// its cap and a control workload under it, and remote-writes through
// Cardinal into a Prometheus receiver. New series over the cap fold into the
// workload's overflow series, whose merged value keeps the workload's total
// right. The admin API raises and lowers the cap at run time (new series
// follow the new cap within a scrape or two, admitted series keep flowing),
// and the override survives restarts through admin.state_file, with the
// sender losing nothing across them.
func TestE2ELimits(t *testing.T) {
	promtest.Binary(t)
	const (
		lastStep = 3
		capped   = 60 // series of shop/cart at start
		limit    = 20 // default cap
		control  = 5  // series of shop/search
		raised   = 100
		lowered  = 10
	)
	testStart := time.Now()
	phase := testStart
	lap := func(name string) {
		t.Logf("phase %-28s %6s (total %s)", name, time.Since(phase).Round(10*time.Millisecond), time.Since(testStart).Round(10*time.Millisecond))
		phase = time.Now()
	}

	exp := &limExporter{lastStep: lastStep}
	exp.add("shop", "cart", 0, capped)
	exp.add("shop", "search", 0, control)
	exporter := httptest.NewServer(exp)
	t.Cleanup(exporter.Close)

	dir := t.TempDir()
	const token = "s3cret-admin-token"
	tokenFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stateFile := filepath.Join(dir, "limits.json")

	receiver := promtest.Start(t, promtest.Options{RemoteWriteReceiver: true})
	gw := startCardinal(t, fmt.Sprintf(`
downstream:
  url: %s
  max_retries: 5
merge:
  flush_interval: 1s
  state_file: %s
limits:
  workload_labels: [namespace, app]
  max_series_per_workload: %d
  window: 1h
admin:
  bearer_token_file: %s
  state_file: %s
`, receiver.WriteURL(), filepath.Join(dir, "merge.state"), limit, tokenFile, stateFile))
	sender := promtest.Start(t, promtest.Options{
		Agent:          true,
		ScrapeTargets:  []string{strings.TrimPrefix(exporter.URL, "http://")},
		RemoteWriteURL: gw.URL + "/api/v1/write",
	})
	lap("start")
	ctx := context.Background()

	// 1. The capped workload arrives as cap admitted series plus one overflow
	// series, and its total is right; the control workload arrives intact.
	cartTruth, cartSum := exp.truth("shop", "cart")
	searchTruth, _ := exp.truth("shop", "search")
	var cart limSnapshot
	promtest.Eventually(t, 45*time.Second, func() (bool, string) {
		if n := exp.scrapes.Load(); n <= lastStep+1 {
			return false, fmt.Sprintf("%d scrapes so far", n)
		}
		var err error
		if cart, err = limQueryWorkload(ctx, receiver, "shop", "cart"); err != nil {
			return false, err.Error()
		}
		if msg := cart.diff(cartTruth, cartSum); msg != "" {
			return false, "shop/cart: " + msg
		}
		search, err := limQueryWorkload(ctx, receiver, "shop", "search")
		if err != nil {
			return false, err.Error()
		}
		got := map[string]float64{}
		for p, v := range search.values {
			got[p] = v
		}
		if diff := compareValues(got, searchTruth); diff != "" || search.overflows != 0 || len(search.other) > 0 {
			return false, fmt.Sprintf("control workload shop/search: %s; %d overflow series, other series %v", diff, search.overflows, search.other)
		}
		return true, ""
	})
	if n := len(cart.paths()) + cart.overflows; n > limit+1 {
		t.Errorf("shop/cart: %d series downstream, want at most %d (cap) + 1 (overflow)", n, limit)
	}
	if n := len(cart.paths()); n != limit {
		t.Errorf("shop/cart: %d admitted series downstream, want exactly the cap %d (60 exposed)", n, limit)
	}
	limCheckSum(t, ctx, receiver, cartSum)
	t.Logf("shop/cart downstream: %d admitted + %d overflow (value %v), workload total %v",
		len(cart.paths()), cart.overflows, cart.values[""], cartSum)
	lap("1 cap and overflow")

	// 2. Nothing was rejected on the way.
	checkNoLoss := func(stage string, c *cardinal) {
		t.Helper()
		fams := scrapeMetrics(t, c.URL)
		if v := limForward4xx(fams); v != 0 {
			t.Errorf("%s: the receiver answered 4xx to %v of Cardinal's forwards; cardinal: %s; receiver: %s", stage, v,
				limLastLine(c.log.String(), "downstream rejected"), limLastLine(receiver.Log(), "from remote write"))
		}
		if familyValue(fams, "cardinal_forward_requests_total", "code", "200")+familyValue(fams, "cardinal_forward_requests_total", "code", "204") == 0 {
			t.Errorf("%s: no 2xx forward recorded in cardinal_forward_requests_total", stage)
		}
		stats, err := sender.RemoteWriteStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if stats.Failed != 0 || stats.Dropped != 0 || stats.Succeeded() <= 0 {
			t.Errorf("%s: sender %+v; want no failed or dropped samples and some succeeded", stage, stats)
		}
	}
	checkNoLoss("after fold", gw)
	if v := familyValue(scrapeMetrics(t, gw.URL), "cardinal_dropped_samples_total", "reason", "limit"); v <= 0 {
		t.Errorf("cardinal_dropped_samples_total{reason=limit} = %v, want > 0", v)
	}

	// 3. The cardinality report.
	rep, ok, body := limWorkload(t, gw.URL, "shop/cart", 5)
	switch {
	case !ok:
		t.Errorf("GET /api/v1/cardinality?top=5 has no shop/cart: %s", body)
	case rep.ActiveSeries != limit || rep.Limit != limit || rep.DroppedSeries != capped-limit || rep.DroppedSamples == 0:
		t.Errorf("cardinality of shop/cart = %+v; want active %d, limit %d, dropped series %d, dropped samples > 0",
			rep, limit, limit, capped-limit)
	}
	if rep, ok, body := limWorkload(t, gw.URL, "shop/search", 5); !ok || rep.ActiveSeries != control || rep.DroppedSeries != 0 {
		t.Errorf("cardinality of shop/search = %+v (found %v), want %d active and none dropped: %s", rep, ok, control, body)
	}
	lap("2-3 metrics and report")

	// 4a. Mutations need the token, and a refused one changes nothing.
	limitURL := gw.URL + "/api/v1/limits/" + "shop%2Fcart"
	for _, tok := range []string{"", "wrong-token"} {
		if code, body := limDo(t, http.MethodPut, limitURL, tok, fmt.Sprintf(`{"max_series": %d}`, raised)); code != http.StatusUnauthorized {
			t.Errorf("PUT limits with token %q: %d %s, want 401", tok, code, body)
		}
	}
	if l := limGetLimits(t, gw.URL); len(l.Overrides) != 0 || l.Default != limit {
		t.Errorf("after refused PUTs: limits %+v, want default %d and no overrides", l, limit)
	}
	if rep, _, _ := limWorkload(t, gw.URL, "shop/cart", 5); rep.Limit != limit {
		t.Errorf("after refused PUTs: shop/cart limit %d, want %d", rep.Limit, limit)
	}
	if _, err := os.Stat(stateFile); !os.IsNotExist(err) {
		t.Errorf("after refused PUTs the state file exists (err %v)", err)
	}

	// 4b. Raising the cap admits new series within a scrape or two.
	if code, body := limDo(t, http.MethodPut, limitURL, token, fmt.Sprintf(`{"max_series": %d}`, raised)); code != http.StatusOK {
		t.Fatalf("PUT limits with the token: %d %s", code, body)
	}
	if l := limGetLimits(t, gw.URL); l.Overrides["shop/cart"] != raised {
		t.Errorf("after PUT %d: limits %+v", raised, l)
	}
	exp.add("shop", "cart", capped, capped+10)
	addedAt := time.Now()
	newPaths := func(from, to int) []string {
		var out []string
		for i := from; i < to; i++ {
			out = append(out, fmt.Sprintf("/p%d", i))
		}
		return out
	}
	raisedPaths := newPaths(capped, capped+10)
	cartTruth, cartSum = exp.truth("shop", "cart")
	promtest.Eventually(t, 10*time.Second, func() (bool, string) {
		snap, err := limQueryWorkload(ctx, receiver, "shop", "cart")
		if err != nil {
			return false, err.Error()
		}
		var missing []string
		for _, p := range raisedPaths {
			if snap.values[p] != cartTruth[p] {
				missing = append(missing, p)
			}
		}
		if len(missing) > 0 {
			return false, fmt.Sprintf("after raising the cap to %d, new series not (yet) downstream as their own: %v", raised, missing)
		}
		cart = snap
		return true, ""
	})
	t.Logf("raising the cap: the 10 new series arrived as their own series %s after they were first exposed",
		time.Since(addedAt).Round(10*time.Millisecond))
	if n := len(cart.paths()); n != limit+10 {
		t.Errorf("after raising: %d admitted series of shop/cart downstream, want %d", n, limit+10)
	}
	lap("4b raise")

	// 4c. Lowering the cap below the active series: new series fold, the
	// admitted ones keep flowing.
	if code, body := limDo(t, http.MethodPut, limitURL, token, fmt.Sprintf(`{"max_series": %d}`, lowered)); code != http.StatusOK {
		t.Fatalf("PUT limits %d: %d %s", lowered, code, body)
	}
	admitted := cart.paths()
	before, err := limQueryWorkload(ctx, receiver, "shop", "cart")
	if err != nil {
		t.Fatal(err)
	}
	exp.add("shop", "cart", capped+10, capped+20)
	foldedPaths := newPaths(capped+10, capped+20)
	cartTruth, cartSum = exp.truth("shop", "cart")
	promtest.Eventually(t, 15*time.Second, func() (bool, string) {
		rep, ok, body := limWorkload(t, gw.URL, "shop/cart", 5)
		if !ok || rep.DroppedSeries != capped-limit+10 {
			return false, "the 10 newest series are not all folded yet: " + body
		}
		snap, err := limQueryWorkload(ctx, receiver, "shop", "cart")
		if err != nil {
			return false, err.Error()
		}
		if msg := snap.diff(cartTruth, cartSum); msg != "" {
			return false, "after lowering the cap, shop/cart: " + msg
		}
		return true, ""
	})
	limCheckSum(t, ctx, receiver, cartSum)
	if rep, _, body := limWorkload(t, gw.URL, "shop/cart", 5); rep.ActiveSeries != limit+10 || rep.Limit != lowered {
		t.Errorf("after lowering to %d: cardinality of shop/cart = %+v, want %d active (admitted ones stay) and limit %d: %s",
			lowered, rep, limit+10, lowered, body)
	}
	for _, p := range foldedPaths {
		series, err := receiver.Series(ctx, fmt.Sprintf(`{namespace="shop",app="cart",path=%q}`, p))
		if err != nil {
			t.Fatal(err)
		}
		if len(series) > 0 {
			t.Errorf("series %s, new over the lowered cap, reached the receiver as its own series: %v", p, series)
		}
	}
	promtest.Eventually(t, 10*time.Second, func() (bool, string) {
		after, err := limQueryWorkload(ctx, receiver, "shop", "cart")
		if err != nil {
			return false, err.Error()
		}
		var stuck []string
		for _, p := range admitted {
			if !after.ts[p].After(before.ts[p]) {
				stuck = append(stuck, fmt.Sprintf("%s (%s -> %s)", p, before.ts[p].Format(time.StampMilli), after.ts[p].Format(time.StampMilli)))
			}
		}
		if len(stuck) > 0 {
			return false, fmt.Sprintf("%d of %d admitted series stopped advancing after the cap was lowered: %v", len(stuck), len(admitted), first(stuck))
		}
		if got := after.paths(); !slices.Equal(got, admitted) {
			return false, fmt.Sprintf("admitted series downstream %v, want %v", got, admitted)
		}
		return true, ""
	})
	checkNoLoss("after lowering", gw)
	lap("4c lower")

	// 5. Restart: the override survives through the state file.
	raw, err := os.ReadFile(stateFile)
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	var state struct {
		Version   int            `json:"version"`
		Overrides map[string]int `json:"overrides"`
	}
	if err := json.Unmarshal(raw, &state); err != nil || state.Overrides["shop/cart"] != lowered {
		t.Errorf("state file %s = %s (err %v), want the override shop/cart: %d", stateFile, raw, err, lowered)
	}
	// Two restarts. The first one comes right after a scrape; besides
	// checking persistence, it starts the next process' flush ticker just
	// after the scrape, before the sender sends it. The second one stops that
	// process while the sender still holds samples scraped before Cardinal's
	// last emission of the overflow series, which is how a busy gateway is
	// usually stopped (see limStopMidStream).
	allSeries := capped + 20
	for i, stopper := range []func(testing.TB, *cardinal, *atomic.Int64){limStopAfterScrape, limStopMidStream} {
		stage := fmt.Sprintf("after restart %d", i+1)
		statsBefore, err := sender.RemoteWriteStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stopper(t, gw, &exp.scrapes)
		if err := gw.stop(syscall.SIGTERM); err != nil {
			t.Errorf("%s: cardinal did not exit cleanly on SIGTERM: %v", stage, err)
		}
		gw = restartCardinal(t, gw)
		restartedAt := time.Now()
		if l := limGetLimits(t, gw.URL); l.Overrides["shop/cart"] != lowered || l.Default != limit {
			t.Errorf("%s: limits %+v, want default %d and override shop/cart: %d", stage, l, limit, lowered)
		}
		promtest.Eventually(t, 20*time.Second, func() (bool, string) {
			stats, err := sender.RemoteWriteStats(ctx)
			if err != nil {
				return false, err.Error()
			}
			// A few scrapes' worth delivered through the new process.
			if d := stats.Succeeded() - statsBefore.Succeeded(); d < float64(3*(allSeries+control)) {
				return false, fmt.Sprintf("sender delivered %v samples since the restart", d)
			}
			rep, ok, body := limWorkload(t, gw.URL, "shop/cart", 5)
			if !ok || rep.ActiveSeries+rep.DroppedSeries != int64(allSeries) {
				return false, "restarted limiter has not seen every series of shop/cart yet: " + body
			}
			return true, ""
		})
		if rep, _, body := limWorkload(t, gw.URL, "shop/cart", 5); rep.Limit != lowered || rep.ActiveSeries != lowered {
			t.Errorf("%s: cardinality of shop/cart = %+v, want the persisted cap %d in force: %s", stage, rep, lowered, body)
		}
		checkNoLoss(stage, gw)
		t.Logf("%s: sender delivered 3 scrapes through the new process %s after it was ready",
			stage, time.Since(restartedAt).Round(10*time.Millisecond))
		lap(fmt.Sprintf("5 restart %d", i+1))
	}
	if raw2, err := os.ReadFile(stateFile); err != nil || string(raw2) != string(raw) {
		t.Errorf("state file after the restarts = %s (err %v), want it unchanged: %s", raw2, err, raw)
	}

	if err := gw.stop(syscall.SIGTERM); err != nil {
		t.Errorf("restarted cardinal did not exit cleanly on SIGTERM: %v", err)
	}
}
