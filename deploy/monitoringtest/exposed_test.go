package monitoringtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/internal/promtest"
	"github.com/cardinal-gateway/cardinal/internal/rwclient"
)

// Bounds of the end-to-end test.
const (
	// readyTimeout bounds the wait for Cardinal's /-/ready.
	readyTimeout = 30 * time.Second
	// stopTimeout bounds the wait for Cardinal to exit after SIGTERM.
	stopTimeout = 20 * time.Second
	// exposeTimeout bounds the traffic loop that waits for every metric
	// to be exposed (the estimates and the guard report periodically).
	exposeTimeout = 2 * time.Minute
	// minSteps is how many scrapes of mesh traffic are sent at least, so
	// that churned request ids cross the guard's threshold.
	minSteps = 4
	// settleTimeout bounds the wait for the replicas to see each other up
	// and for the handover of their start to end.
	settleTimeout = 30 * time.Second
	// replicas is how many Cardinals run, as one cluster. The cluster
	// metrics exist only with --cluster.peers; a one-member cluster exposes
	// the gauges, but never forwards, so its labelled counters
	// (cardinal_cluster_forwarded_samples_total,
	// cardinal_cluster_peer_errors_total) would never get a series.
	replicas = 2
)

// clusterArgs are the cluster flags of the replica at self: every replica
// lists all of addrs. Fast probes and a short handover (at least two probe
// intervals) keep the wait for a settled cluster short.
func clusterArgs(addrs []string, self string) []string {
	return []string{
		"--cluster.peers=" + strings.Join(addrs, ","), "--cluster.self=" + self,
		"--cluster.probe-interval=200ms", "--cluster.handover-delay=1s",
	}
}

// cardinalConfig is what Cardinal runs with: the mesh rules of the presets
// (deploy/examples/istio.yml's drop of Envoy's internal stats, then a
// labelkeep of the standard Istio, Envoy and Linkerd labels, which drops
// pod and instance so that pods collapse and are merged), except that
// request_id slips through the allowlist (the mistake the guard exists to
// catch); a cap of 50 series per workload, so that folding happens; merged
// series flushed every second; and the cardinality estimates and the guard
// on, in dry_run. The first %s is the downstream's write URL, the second
// the allowlist.
const cardinalConfig = `downstream:
  url: %s
  timeout: 10s
  max_retries: 2
receive:
  memory_limit: 2147483648
relabel_configs:
  - action: drop
    source_labels: [__name__]
    regex: envoy_(server|cluster_manager|listener_manager|runtime)_.*
  - action: labelkeep
    regex: %s|request_id
trace_sampling:
  labels: [trace_id]
  ratio: 0.5
  always_keep:
    - {label: response_code, regex: "5.."}
merge:
  flush_interval: 1s
limits:
  workload_labels: [namespace, app]
  max_series_per_workload: 50
  window: 10m
  mode: enforce
cardinality:
  enabled: true
  window: 10m
  top: 20
guard:
  mode: dry_run
  threshold: 5
  window: 10m
  lift_after: 30m
  workload_labels: [namespace, app]
`

// TestMetricsExposedByCardinal runs the real binary between generated mesh
// traffic and a real Prometheus 2.42 and checks that every metric the
// dashboard and the alerts select is on its /metrics. The receiver also
// scrapes Cardinal and evaluates every expression: each must be valid
// for Prometheus 2.42, not only for the parser of this module's version.
//
// Two replicas run as one cluster, both writing to the receiver. The mesh
// traffic is spread over them, and each hands the series of the workloads
// the other owns to it; what is checked is the union of their /metrics, as
// the dashboard shows the tier (a workload's merged series, folds and
// refusals are on its owner, whichever it is).
func TestMetricsExposedByCardinal(t *testing.T) {
	promtest.Binary(t) // skip, or fail under CARDINAL_E2E=require
	d := loadDashboard(t)
	qs := append(dashboardQueries(t, d), rulesQueries(loadRules(t))...)
	names, nameMatchers := usedMetrics(t, qs)
	if t.Failed() {
		return
	}
	bin := buildCardinal(t)

	addrs := freeAddrs(t, replicas)
	receiver := promtest.Start(t, promtest.Options{
		RemoteWriteReceiver: true,
		ScrapeTargets:       addrs,
	})
	cfg := fmt.Sprintf(cardinalConfig, receiver.WriteURL(), meshgen.DefaultAllowlist)
	gws := make([]*cardinalProc, len(addrs))
	for i, addr := range addrs {
		gws[i] = startCardinal(t, bin, cfg, addr, clusterArgs(addrs, addr)...)
	}
	// A replica answers 503 for the share of a member it has not seen up
	// yet, and for its own share during the handover of its start.
	waitSettled(t, gws)

	ctx := context.Background()
	client := &http.Client{Timeout: 30 * time.Second}
	codes := map[int]int{}
	post := func(to *cardinalProc, req *prompb.WriteRequest) int {
		t.Helper()
		raw, err := req.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		code, err := rwclient.Post(ctx, client, to.url+"/api/v1/write", snappy.Encode(nil, raw))
		if err != nil {
			t.Fatalf("remote write to cardinal %s: %v", to.url, err)
		}
		codes[code]++
		return code
	}
	gen := meshgen.New(meshgen.Config{Workloads: 12, PodsPerWorkload: 2, Churn: true, Seed: 15})

	var missing []string
	deadline := time.Now().Add(exposeTimeout)
	for step := 0; ; step++ {
		// The requests of a scrape are spread over the replicas, as a load
		// balancer spreads senders: whichever replica owns every
		// workload, the other one hands series over.
		for i, req := range gen.WriteRequests(step, time.Now().UnixMilli(), 1000) {
			post(gws[i%len(gws)], req)
		}
		if step == 0 {
			// A series the downstream refuses on its own (an out-of-order
			// sample), so that the refusal metrics exist. The series has
			// one owner; the second out-of-order sample goes to each
			// replica, so that the other one hands it over and counts
			// the owner's refusal (cardinal_cluster_peer_errors_total).
			now := time.Now().UnixMilli()
			first := post(gws[0], probe(now))
			var then []int
			for _, r := range gws {
				then = append(then, post(r, probe(now-60_000)))
			}
			t.Logf("out-of-order probe: answered %d, then %v by the replicas", first, then)
		}
		fams := tierMetrics(t, gws)
		missing = missingMetrics(fams, names, nameMatchers)
		// The traffic must also exercise what the panels show: folding at
		// the cap, merging, the guard engaging on request_id, and series
		// handed to the replica that owns their workload.
		for _, c := range []struct{ name, label, value string }{
			{"cardinal_series_limit_reached_total", "", ""},
			{"cardinal_merged_series", "", ""},
			{"cardinal_guard_events_total", "action", "engaged"},
			{"cardinal_guard_mitigations", "mode", "dry_run"},
			{"cardinal_owned_workloads", "", ""},
			{"cardinal_cluster_forwarded_samples_total", "result", "ok"},
			{"cardinal_forwarded_samples_total", "path", "peer"},
		} {
			if familySum(fams, c.name, c.label, c.value) == 0 {
				missing = append(missing, fmt.Sprintf("%s{%s=%q} is 0: the traffic does not exercise its panels", c.name, c.label, c.value))
			}
		}
		if step+1 >= minSteps && len(missing) == 0 {
			t.Logf("every metric exposed after %d scrapes of mesh traffic (%d series each) in %s",
				step+1, gen.NumSeries(), time.Since(deadline.Add(-exposeTimeout)).Round(time.Second))
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	t.Logf("cardinal answered: %v", codes)
	for _, r := range gws {
		fams := scrape(t, r.url)
		t.Logf("replica %s: owns %v workloads, handed %v samples to its peer (%v failed), %v peer errors",
			r.url, familySum(fams, "cardinal_owned_workloads", "", ""),
			familySum(fams, "cardinal_cluster_forwarded_samples_total", "result", "ok"),
			familySum(fams, "cardinal_cluster_forwarded_samples_total", "result", "error"),
			familySum(fams, "cardinal_cluster_peer_errors_total", "", ""))
	}
	if codes[http.StatusNoContent] == 0 {
		t.Errorf("cardinal accepted no request: %v", codes)
	}
	for _, m := range missing {
		t.Error(m)
	}

	// The receiver scraped Cardinal meanwhile; give it the scrapes that
	// $__rate_interval (1m here) needs, then evaluate everything.
	promtest.Eventually(t, 30*time.Second, func() (bool, string) {
		s, err := receiver.Query(ctx, `count_over_time(cardinal_received_samples_total[1m])`)
		if err != nil {
			return false, err.Error()
		}
		if len(s) == 0 || s[0].Value < 3 {
			return false, fmt.Sprintf("receiver has %v scrapes of cardinal", s)
		}
		return true, ""
	})
	eval := newSubstituter(d)
	eval.multi = func(string) string { return ".+" }
	empty := 0
	for _, q := range qs {
		expr, err := eval.substitute(q.raw)
		if err != nil {
			t.Errorf("%s: %v", q.where, err)
			continue
		}
		s, err := receiver.Query(ctx, expr)
		if err != nil {
			t.Errorf("%s: prometheus 2.42 refuses %s: %v", q.where, expr, err)
			continue
		}
		if len(s) == 0 {
			empty++
			t.Logf("%s: no data now: %s", q.where, expr)
		}
	}
	t.Logf("evaluated %d expressions at the receiver, %d without data now (alerts below their thresholds, filters)", len(qs), empty)
}

// probe is one sample of a series outside the mesh at ts.
func probe(ts int64) *prompb.WriteRequest {
	return &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "monitoringtest_probe_total"}, {Name: "job", Value: "monitoringtest"}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: ts}},
	}}}
}

// missingMetrics returns, for each name or name matcher that fams does not
// expose, a message saying where it is used.
func missingMetrics(fams map[string]*dto.MetricFamily, names map[string][]string, matchers map[*labels.Matcher]string) []string {
	var out []string
	for name, where := range names {
		if err := exposed(fams, name); err != nil {
			out = append(out, fmt.Sprintf("%v; used by %s", err, strings.Join(where, ", ")))
		}
	}
	for m, where := range matchers {
		found := false
		for fam := range fams {
			for _, n := range seriesNames(fams[fam]) {
				found = found || m.Matches(n)
			}
		}
		if !found {
			out = append(out, fmt.Sprintf("no exposed metric matches %s; used by %s", m, where))
		}
	}
	sort.Strings(out)
	return out
}

// exposed reports whether a selector of name finds series in fams: a
// counter, gauge or untyped family of that name, or the _bucket, _sum or
// _count series of a histogram (_sum and _count of a summary).
func exposed(fams map[string]*dto.MetricFamily, name string) error {
	if f, ok := fams[name]; ok && len(f.GetMetric()) > 0 {
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM, dto.MetricType_SUMMARY:
			return fmt.Errorf("%s is a %s: select its _bucket, _sum or _count series", name, f.GetType())
		}
		return nil
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		f, ok := fams[base]
		if !ok || len(f.GetMetric()) == 0 {
			break
		}
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			return nil
		case dto.MetricType_SUMMARY:
			if suffix != "_bucket" {
				return nil
			}
		}
		return fmt.Errorf("%s: %s is a %s, which has no %s series", name, base, f.GetType(), suffix)
	}
	return fmt.Errorf("cardinal does not expose %s", name)
}

// familySum sums the values of the counter or gauge family name, only of
// its series with label=value when label is set.
func familySum(fams map[string]*dto.MetricFamily, name, label, value string) float64 {
	sum := 0.0
	for _, m := range fams[name].GetMetric() {
		if label != "" && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == label && l.GetValue() == value }) {
			continue
		}
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
	}
	return sum
}

// seriesNames returns the names of the series a family is exposed as.
func seriesNames(f *dto.MetricFamily) []string {
	n := f.GetName()
	switch f.GetType() {
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return []string{n + "_bucket", n + "_sum", n + "_count"}
	case dto.MetricType_SUMMARY:
		return []string{n, n + "_sum", n + "_count"}
	}
	return []string{n}
}

// TestExposed checks exposed on families whose answer is known.
func TestExposed(t *testing.T) {
	text := `# TYPE c_total counter
c_total 1
# TYPE h_seconds histogram
h_seconds_bucket{le="+Inf"} 1
h_seconds_sum 1
h_seconds_count 1
# TYPE s summary
s{quantile="0.5"} 1
s_sum 1
s_count 1
`
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	for name, ok := range map[string]bool{
		"c_total": true, "h_seconds_bucket": true, "h_seconds_count": true, "s_sum": true,
		"h_seconds": false, "s_bucket": false, "c_total_bucket": false, "absent": false, "c": false,
	} {
		if err := exposed(fams, name); (err == nil) != ok {
			t.Errorf("exposed(%s) = %v, want ok %v", name, err, ok)
		}
	}
	re := labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, "h_.*_count")
	none := labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, "x_.*")
	got := missingMetrics(fams, map[string][]string{"c_total": {"a"}, "gone": {"b"}}, map[*labels.Matcher]string{re: "c", none: "d"})
	if len(got) != 2 || !strings.Contains(got[0], "gone") || !strings.Contains(got[1], "x_.*") {
		t.Errorf("missingMetrics = %q, want gone and x_.* reported", got)
	}
}

// scrape reads and parses Cardinal's /metrics.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape cardinal: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape cardinal: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse cardinal's /metrics: %v", err)
	}
	return fams
}

// buildCardinal builds ./cmd/cardinal into the test's temporary directory.
func buildCardinal(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cardinal")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/cardinal")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/cardinal: %v\n%s", err, out)
	}
	return bin
}

// freeAddrs returns n distinct 127.0.0.1 addresses whose ports were free a
// moment ago (all held open together, so that none is handed out twice).
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}

// tierMetrics scrapes every replica and merges their families, as the
// dashboard sums the tier. Each replica must see all of them as members.
func tierMetrics(t *testing.T, gws []*cardinalProc) map[string]*dto.MetricFamily {
	t.Helper()
	out := map[string]*dto.MetricFamily{}
	for _, gw := range gws {
		fams := scrape(t, gw.url)
		if n := familySum(fams, "cardinal_cluster_members", "", ""); n != float64(len(gws)) {
			t.Errorf("cardinal %s: cardinal_cluster_members = %v, want %d: the replicas do not form one cluster", gw.url, n, len(gws))
		}
		for name, f := range fams {
			m, ok := out[name]
			if !ok {
				out[name] = &dto.MetricFamily{Name: f.Name, Help: f.Help, Type: f.Type, Unit: f.Unit, Metric: slices.Clone(f.Metric)}
				continue
			}
			if m.GetType() != f.GetType() {
				t.Errorf("%s is a %s on one replica and a %s on another", name, m.GetType(), f.GetType())
				continue
			}
			m.Metric = append(m.Metric, f.Metric...)
		}
	}
	return out
}

// clusterStatus is the part of GET /api/v1/cluster waitSettled reads.
type clusterStatus struct {
	Enabled bool `json:"enabled"`
	Members []struct {
		Address string `json:"address"`
		State   string `json:"state"`
	} `json:"members"`
	Handover bool `json:"handover_in_progress"`
}

// waitSettled waits until every replica lists all of them as members, none
// down, and no handover is in progress: until then some of the traffic is
// answered 503 by design.
func waitSettled(t *testing.T, gws []*cardinalProc) {
	t.Helper()
	promtest.Eventually(t, settleTimeout, func() (bool, string) {
		for _, gw := range gws {
			var st clusterStatus
			if err := getJSON(gw.url+"/api/v1/cluster", &st); err != nil {
				return false, err.Error()
			}
			if !st.Enabled || len(st.Members) != len(gws) || st.Handover {
				return false, fmt.Sprintf("cardinal %s: %+v", gw.url, st)
			}
			for _, m := range st.Members {
				if m.State == "down" {
					return false, fmt.Sprintf("cardinal %s sees member %s down", gw.url, m.Address)
				}
			}
		}
		return true, ""
	})
}

func getJSON(url string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// cardinalProc is a running `cardinal serve`.
type cardinalProc struct {
	url string
	cmd *exec.Cmd
	log *promtest.LogBuffer
}

// startCardinal writes cfg next to the test and runs `cardinal serve` on
// addr, with args, until the test ends, waiting for /-/ready (which needs
// the downstream). Its log is printed if the test fails.
func startCardinal(t *testing.T, bin, cfg, addr string, args ...string) *cardinalProc {
	t.Helper()
	file := filepath.Join(t.TempDir(), "cardinal.yml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &cardinalProc{url: "http://" + addr, log: &promtest.LogBuffer{}}
	c.cmd = exec.Command(bin, append([]string{"serve", "--config.file=" + file, "--web.listen-address=" + addr}, args...)...)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(stopTimeout):
			_ = c.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("cardinal %s %s, config:\n%s\ncardinal %s log:\n%s", addr, strings.Join(args, " "), cfg, addr, c.log.String())
		}
	})
	deadline := time.Now().Add(readyTimeout)
	for {
		err := ready(c.url)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("cardinal not ready within %s: %v", readyTimeout, err)
		}
		select {
		case err := <-done:
			done <- err // for the cleanup
			t.Fatalf("cardinal exited during start: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func ready(base string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/-/ready", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}

// promtoolBinary finds promtool: $PROMTOOL_BINARY, /usr/bin/promtool, PATH.
// Without one the test skips, or fails under CARDINAL_E2E=require.
func promtoolBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PROMTOOL_BINARY"); p != "" {
		return p
	}
	for _, p := range []string{"/usr/bin/promtool"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	msg := "promtool not found in $PROMTOOL_BINARY, /usr/bin or PATH; install the prometheus package (Debian: apt-get install prometheus)"
	if os.Getenv(promtest.EnvE2E) == promtest.EnvE2ERequire {
		t.Fatalf("%s; %s=%s forbids skipping", msg, promtest.EnvE2E, promtest.EnvE2ERequire)
	}
	t.Skip(msg)
	return ""
}

// TestPromtool runs `promtool check rules` on the rules and `promtool test
// rules` on their unit tests.
func TestPromtool(t *testing.T) {
	promtool := promtoolBinary(t)
	for _, args := range [][]string{
		{"check", "rules", filepath.Base(rulesFile)},
		{"test", "rules", filepath.Base(rulesTestFile)},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, promtool, args...)
		cmd.Dir = filepath.Dir(rulesFile) // rule_files are relative to the test file
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		if !regexp.MustCompile(`SUCCESS`).Match(out) {
			t.Errorf("promtool %s printed no SUCCESS:\n%s", strings.Join(args, " "), out)
		}
	}
}
