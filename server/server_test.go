package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
)

// waitFor bounds every wait in these tests.
const waitFor = 10 * time.Second

// downstream is a remote-write receiver on 127.0.0.1 that decodes with the
// reference prompb decoder and records what it received. Empty write
// requests are Cardinal's readiness probes: they are counted and answered
// with probeStatus.
type downstream struct {
	*httptest.Server

	probeStatus atomic.Int32
	probes      atomic.Int32

	// block, when set, holds every non-empty write until it is closed;
	// arrived receives one value per held write.
	block   chan struct{}
	arrived chan struct{}

	mu     sync.Mutex
	series []string // one "name=value,..." string per series received
	errs   []string
}

func newDownstream(t *testing.T) *downstream {
	t.Helper()
	d := &downstream{}
	d.probeStatus.Store(http.StatusNoContent)
	d.Server = httptest.NewServer(http.HandlerFunc(d.serve))
	t.Cleanup(d.Close)
	return d
}

// newBlockingDownstream holds non-empty writes until release is called.
func newBlockingDownstream(t *testing.T) (d *downstream, release func()) {
	t.Helper()
	d = &downstream{block: make(chan struct{}), arrived: make(chan struct{}, 16)}
	d.probeStatus.Store(http.StatusNoContent)
	d.Server = httptest.NewServer(http.HandlerFunc(d.serve))
	var once sync.Once
	release = func() { once.Do(func() { close(d.block) }) }
	// Cleanups run last-in first-out: release before Close, which waits for
	// held requests.
	t.Cleanup(d.Close)
	t.Cleanup(release)
	return d, release
}

func (d *downstream) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err == nil && r.Header.Get("Content-Encoding") != "snappy" {
		err = fmt.Errorf("Content-Encoding %q", r.Header.Get("Content-Encoding"))
	}
	var raw []byte
	if err == nil {
		raw, err = snappy.Decode(nil, body)
	}
	var wr prompb.WriteRequest
	if err == nil {
		err = wr.Unmarshal(raw)
	}
	if err != nil {
		d.mu.Lock()
		d.errs = append(d.errs, err.Error())
		d.mu.Unlock()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if len(wr.Timeseries) == 0 {
		d.probes.Add(1)
		w.WriteHeader(int(d.probeStatus.Load()))
		return
	}
	if d.block != nil {
		d.arrived <- struct{}{}
		<-d.block
	}
	d.mu.Lock()
	for _, ts := range wr.Timeseries {
		var sb strings.Builder
		for i, l := range ts.Labels {
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, "%s=%s", l.Name, l.Value)
		}
		for _, s := range ts.Samples {
			if value.IsStaleNaN(s.Value) {
				fmt.Fprintf(&sb, " stale@%d", s.Timestamp)
				continue
			}
			fmt.Fprintf(&sb, " %g@%d", s.Value, s.Timestamp)
		}
		d.series = append(d.series, sb.String())
	}
	d.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// take returns and forgets the series received so far.
func (d *downstream) take(t *testing.T) []string {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.errs) > 0 {
		t.Errorf("downstream could not decode what Cardinal sent: %v", d.errs)
	}
	s := d.series
	d.series = nil
	slices.Sort(s)
	return s
}

// writeConfig writes cardinal.yml into dir for the downstream at url, with
// extra YAML appended, and returns its path.
func writeConfig(t *testing.T, dir, url, extra string) string {
	t.Helper()
	path := filepath.Join(dir, "cardinal.yml")
	text := fmt.Sprintf("downstream:\n  url: %s/api/v1/write\n  max_retries: 0\n  min_backoff: 1ms\n  max_backoff: 1ms\n%s", url, extra)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newServer(t *testing.T, configFile string) (*Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(Options{ConfigFile: configFile, Registry: reg, ShutdownTimeout: waitFor})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Gateway().Close)
	return s, reg
}

// serveHandler serves s's handler on 127.0.0.1 without Serve's lifecycle
// (no readiness probe).
func serveHandler(t *testing.T, s *Server) string {
	t.Helper()
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts.URL
}

// sample is one series with one float sample.
type sample struct {
	labels []string // name, value, name, value...
	value  float64
	ts     int64
}

func encodeWrite(t *testing.T, samples ...sample) []byte {
	t.Helper()
	var wr prompb.WriteRequest
	for _, s := range samples {
		var ts prompb.TimeSeries
		for i := 0; i < len(s.labels); i += 2 {
			ts.Labels = append(ts.Labels, prompb.Label{Name: s.labels[i], Value: s.labels[i+1]})
		}
		ts.Samples = []prompb.Sample{{Value: s.value, Timestamp: s.ts}}
		wr.Timeseries = append(wr.Timeseries, ts)
	}
	raw, err := wr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

// client has a transport of its own: an httptest.Server closing in a
// parallel test closes http.DefaultTransport's idle connections, which
// breaks a request that just picked one of them up.
var client = &http.Client{Timeout: waitFor, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4}}

// remoteWrite posts samples to base's /api/v1/write and returns the status.
func remoteWrite(t *testing.T, base string, samples ...sample) (int, string) {
	t.Helper()
	return postWrite(base, encodeWrite(t, samples...))
}

func postWrite(base string, body []byte) (int, string) {
	req, err := http.NewRequest(http.MethodPost, base+"/api/v1/write", bytes.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func do(t *testing.T, method, url, auth string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// jsonError decodes an {"error": "..."} body.
func jsonError(t *testing.T, resp *http.Response, body string) string {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("body %q is not JSON: %v", body, err)
	}
	if e.Error == "" {
		t.Errorf("body %q has no error message", body)
	}
	return e.Error
}

func TestHealthy(t *testing.T) {
	t.Parallel()
	d := newDownstream(t)
	s, _ := newServer(t, writeConfig(t, t.TempDir(), d.URL, ""))
	base := serveHandler(t, s)

	resp, body := do(t, http.MethodGet, base+"/-/healthy", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Healthy") {
		t.Errorf("GET /-/healthy = %d %q, want 200 Healthy", resp.StatusCode, body)
	}
	// Without Serve nothing probed the downstream: not ready.
	resp, body = do(t, http.MethodGet, base+"/-/ready", "")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("GET /-/ready before any probe = %d %q, want 503", resp.StatusCode, body)
	}
	resp, _ = do(t, http.MethodGet, base+"/-/reload", "")
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /-/reload = %d, want 405", resp.StatusCode)
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	d := newDownstream(t)
	for _, tc := range []struct {
		name, extra, want string
		setup             func(dir string)
	}{
		{name: "bad config", extra: "bogus: 1\n", want: "bogus: unknown key"},
		{name: "rule fails to compile", extra: "relabel_configs:\n  - {action: hashmod, source_labels: [a], target_label: b, modulus: 0}\n", want: "relabel_configs"},
		{name: "missing token file", extra: "admin:\n  bearer_token_file: token\n", want: "admin.bearer_token_file"},
		{
			name: "empty token file", extra: "admin:\n  bearer_token_file: token\n", want: "is empty",
			setup: func(dir string) { _ = os.WriteFile(filepath.Join(dir, "token"), []byte(" \n"), 0o600) },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if tc.setup != nil {
				tc.setup(dir)
			}
			_, err := New(Options{ConfigFile: writeConfig(t, dir, d.URL, tc.extra), Registry: prometheus.NewRegistry()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New error = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := New(Options{ConfigFile: filepath.Join(t.TempDir(), "missing.yml")}); err == nil {
		t.Error("New with a missing config file: no error")
	}
}

func TestRemoteWriteRelabels(t *testing.T) {
	t.Parallel()
	d := newDownstream(t)
	cfg := writeConfig(t, t.TempDir(), d.URL, `relabel_configs:
  - action: drop
    source_labels: [__name__]
    regex: junk_.*
  - action: labeldrop
    regex: pod|trace_id
`)
	s, _ := newServer(t, cfg)
	base := serveHandler(t, s)

	code, body := remoteWrite(t, base,
		sample{labels: []string{"__name__", "http_requests_total", "app", "web", "pod", "web-1", "trace_id", "abc"}, value: 7, ts: 1000},
		sample{labels: []string{"__name__", "junk_total", "app", "web"}, value: 1, ts: 1000},
		sample{labels: []string{"__name__", "up", "job", "mesh"}, value: 1, ts: 2000},
	)
	if code != http.StatusNoContent {
		t.Fatalf("remote write = %d %q, want 204", code, body)
	}
	got := d.take(t)
	want := []string{
		"__name__=http_requests_total,app=web 7@1000",
		"__name__=up,job=mesh 1@2000",
	}
	if !slices.Equal(got, want) {
		t.Errorf("downstream received\n%q\nwant\n%q", got, want)
	}

	// A request that the rules empty entirely is acknowledged without
	// bothering the downstream.
	code, body = remoteWrite(t, base, sample{labels: []string{"__name__", "junk_a"}, value: 1, ts: 1})
	if code != http.StatusNoContent {
		t.Fatalf("remote write of dropped series = %d %q, want 204", code, body)
	}
	if got := d.take(t); len(got) != 0 {
		t.Errorf("downstream received %q for a fully dropped request", got)
	}

	// Not a remote-write request: refused, nothing forwarded.
	req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/write", strings.NewReader("hello"))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode >= 500 {
		t.Errorf("plain-text POST = %d, want 4xx", resp.StatusCode)
	}
}

func TestReloadForbiddenWithoutTokenFile(t *testing.T) {
	t.Parallel()
	d := newDownstream(t)
	s, _ := newServer(t, writeConfig(t, t.TempDir(), d.URL, ""))
	base := serveHandler(t, s)
	for _, auth := range []string{"", "Bearer ", "Bearer anything"} {
		resp, body := do(t, http.MethodPost, base+"/-/reload", auth)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST /-/reload (Authorization %q) = %d %q, want 403", auth, resp.StatusCode, body)
		}
		if msg := jsonError(t, resp, body); !strings.Contains(msg, "bearer_token_file") {
			t.Errorf("403 error %q does not say how to enable reloads", msg)
		}
	}
}

func TestReload(t *testing.T) {
	t.Parallel()
	d := newDownstream(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The token file is relative: it resolves against the config's directory,
	// not the test's working directory.
	admin := "admin:\n  bearer_token_file: token\n"
	rules := func(regex string) string {
		return admin + "relabel_configs:\n  - action: labeldrop\n    regex: " + regex + "\n"
	}
	cfg := writeConfig(t, dir, d.URL, rules("pod"))
	s, reg := newServer(t, cfg)
	base := serveHandler(t, s)

	in := sample{labels: []string{"__name__", "m", "app", "web", "pod", "p1", "zone", "z1"}, value: 1, ts: 1}
	check := func(step string, want string) {
		t.Helper()
		if code, body := remoteWrite(t, base, in); code != http.StatusNoContent {
			t.Fatalf("%s: remote write = %d %q, want 204", step, code, body)
		}
		if got := d.take(t); !slices.Equal(got, []string{want}) {
			t.Fatalf("%s: downstream received %q, want %q", step, got, want)
		}
	}
	reload := func(auth string) (*http.Response, string) {
		t.Helper()
		return do(t, http.MethodPost, base+"/-/reload", auth)
	}
	check("initial rules", "__name__=m,app=web,zone=z1 1@1")

	// The new file is in place, but nobody with the token asked for it.
	writeConfig(t, dir, d.URL, rules("pod|app"))
	for _, auth := range []string{"", "s3cret", "Bearer", "Bearer wrong", "Bearer  s3cret", "Basic s3cret", "Bearer s3cre", "Bearer s3crett"} {
		resp, body := reload(auth)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("reload with Authorization %q = %d %q, want 401", auth, resp.StatusCode, body)
			continue
		}
		jsonError(t, resp, body)
		if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without a Bearer WWW-Authenticate challenge: %q", resp.Header.Get("WWW-Authenticate"))
		}
	}
	check("after refused reloads", "__name__=m,app=web,zone=z1 1@1")

	resp, body := reload("Bearer s3cret")
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("reload with the token = %d %q, want 204", resp.StatusCode, body)
	}
	check("after reload", "__name__=m,zone=z1 1@1")

	// Broken files are refused with a JSON error; the running rules stay.
	for _, tc := range []struct{ name, extra, want string }{
		{"unknown key", rules("zone") + "bogus: true\n", "bogus: unknown key"},
		{"bad regex", rules(`"(["`), "error parsing regexp"},
		{"rule fails to compile", admin + "relabel_configs:\n  - {action: hashmod, source_labels: [a], target_label: b}\n", "modulus"},
		{"token file gone", "admin:\n  bearer_token_file: nope\n", "admin.bearer_token_file"},
	} {
		writeConfig(t, dir, d.URL, tc.extra)
		resp, body := reload("Bearer s3cret")
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%s: reload = %d %q, want 400", tc.name, resp.StatusCode, body)
		}
		if msg := jsonError(t, resp, body); !strings.Contains(msg, tc.want) {
			t.Errorf("%s: reload error %q, want %q", tc.name, msg, tc.want)
		}
		check("after failed reload: "+tc.name, "__name__=m,zone=z1 1@1")
	}

	// A reload can rotate the token: the old one stops working at once.
	if err := os.WriteFile(filepath.Join(dir, "token2"), []byte("n3w"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, dir, d.URL, "admin:\n  bearer_token_file: token2\n")
	if resp, body := reload("Bearer s3cret"); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("reload to rotate the token = %d %q, want 204", resp.StatusCode, body)
	}
	check("after reload without rules", "__name__=m,app=web,pod=p1,zone=z1 1@1")
	if resp, _ := reload("Bearer s3cret"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("reload with the old token after rotation = %d, want 401", resp.StatusCode)
	}
	if resp, body := reload("Bearer n3w"); resp.StatusCode != http.StatusNoContent {
		t.Errorf("reload with the new token = %d %q, want 204", resp.StatusCode, body)
	}

	fams := gather(t, reg)
	if got := metricValue(fams, "cardinal_config_reloads_total", "result", "success"); got != 3 {
		t.Errorf(`cardinal_config_reloads_total{result="success"} = %g, want 3`, got)
	}
	if got := metricValue(fams, "cardinal_config_reloads_total", "result", "failure"); got != 4 {
		t.Errorf(`cardinal_config_reloads_total{result="failure"} = %g, want 4`, got)
	}
}

func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// metricValue returns the counter or gauge value of family's series whose
// label name has value (any series if name is ""), or -1 if there is none.
func metricValue(fams map[string]*dto.MetricFamily, family, name, value string) float64 {
	mf, ok := fams[family]
	if !ok {
		return -1
	}
	for _, m := range mf.GetMetric() {
		match := name == ""
		for _, l := range m.GetLabel() {
			if l.GetName() == name && l.GetValue() == value {
				match = true
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return -1
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	d := newDownstream(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dir, d.URL, `admin: {bearer_token_file: token}
relabel_configs:
  - {action: drop, source_labels: [__name__], regex: junk}
`)
	s, _ := newServer(t, cfg)
	base := serveHandler(t, s)

	code, body := remoteWrite(t, base,
		sample{labels: []string{"__name__", "junk"}, value: 1, ts: 1},
		sample{labels: []string{"__name__", "junk", "a", "b"}, value: 1, ts: 1},
		sample{labels: []string{"__name__", "kept"}, value: 1, ts: 1},
	)
	if code != http.StatusNoContent {
		t.Fatalf("remote write = %d %q", code, body)
	}
	if resp, body := do(t, http.MethodPost, base+"/-/reload", "Bearer t"); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("reload = %d %q", resp.StatusCode, body)
	}

	resp, text := do(t, http.MethodGet, base+"/metrics", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("/metrics is not the text format: %v\n%s", err, text)
	}
	for _, tc := range []struct {
		family, label, value string
		want                 float64
	}{
		{"cardinal_received_requests_total", "code", "204", 1},
		{"cardinal_dropped_samples_total", "reason", "relabel", 2},
		{"cardinal_dropped_samples_total", "reason", "invalid", 0},
		{"cardinal_received_samples_total", "", "", 3},
		{"cardinal_forwarded_samples_total", "path", "passthrough", 1},
		{"cardinal_forward_duration_seconds", "", "", 1}, // histogram: count
		{"cardinal_config_reloads_total", "result", "success", 1},
	} {
		if got := metricValue(fams, tc.family, tc.label, tc.value); got != tc.want {
			t.Errorf("%s{%s=%q} = %g, want %g", tc.family, tc.label, tc.value, got, tc.want)
		}
	}
	if typ := fams["cardinal_forward_duration_seconds"].GetType(); typ != dto.MetricType_HISTOGRAM {
		t.Errorf("cardinal_forward_duration_seconds is a %s, want a histogram", typ)
	}
}

// serving is one run of Serve.
type serving struct {
	done chan struct{} // closed when Serve returned
	err  error         // Serve's result, once done is closed
}

// wait returns Serve's result, failing the test if it takes longer than
// waitFor.
func (sv *serving) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-sv.done:
		return sv.err
	case <-time.After(waitFor):
		t.Fatal("Serve did not return")
		return nil
	}
}

// startServe runs s.Serve on a fresh 127.0.0.1 listener until the returned
// cancel is called.
func startServe(t *testing.T, s *Server) (base string, cancel context.CancelFunc, sv *serving) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sv = &serving{done: make(chan struct{})}
	go func() {
		sv.err = s.Serve(ctx, ln)
		close(sv.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-sv.done:
		case <-time.After(waitFor):
			t.Error("Serve did not return after its context ended")
		}
	})
	return "http://" + ln.Addr().String(), cancel, sv
}

// readyStatus is GET /-/ready's status on a fresh connection, or 0 when no
// connection could be made.
func readyStatus(base string) int {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(base + "/-/ready")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// eventually polls cond every 10ms until it holds or waitFor passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitFor, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReadyFollowsDownstream(t *testing.T) {
	t.Parallel()
	d := newDownstream(t)
	d.probeStatus.Store(http.StatusInternalServerError)
	s, _ := newServer(t, writeConfig(t, t.TempDir(), d.URL, ""))
	base, cancel, sv := startServe(t, s)

	// Let the probe fail a couple of times: still not ready.
	eventually(t, "two failed probes", func() bool { return d.probes.Load() >= 2 })
	if got := readyStatus(base); got != http.StatusServiceUnavailable {
		t.Fatalf("/-/ready while the downstream answers 500 = %d, want 503", got)
	}
	if resp, _ := do(t, http.MethodGet, base+"/-/healthy", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("/-/healthy while not ready = %d, want 200", resp.StatusCode)
	}

	d.probeStatus.Store(http.StatusNoContent)
	eventually(t, "/-/ready 200", func() bool { return readyStatus(base) == http.StatusOK })
	probes := d.probes.Load()

	cancel()
	if err := sv.wait(t); err != nil {
		t.Errorf("Serve = %v, want nil after a clean shutdown", err)
	}
	if got := readyStatus(base); got == http.StatusOK {
		t.Errorf("/-/ready after shutdown = %d", got)
	}
	// Once ready, the probe stops.
	if got := d.probes.Load(); got != probes {
		t.Errorf("downstream got %d probes after ready, want none", got-probes)
	}
}

func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	d, release := newBlockingDownstream(t)
	s, _ := newServer(t, writeConfig(t, t.TempDir(), d.URL, ""))
	base, cancel, sv := startServe(t, s)
	eventually(t, "/-/ready 200", func() bool { return readyStatus(base) == http.StatusOK })

	type result struct {
		code int
		body string
	}
	inflight := make(chan result, 1)
	body := encodeWrite(t, sample{labels: []string{"__name__", "slow", "job", "j"}, value: 42, ts: 5})
	go func() {
		code, msg := postWrite(base, body)
		inflight <- result{code, msg}
	}()
	select {
	case <-d.arrived:
	case <-time.After(waitFor):
		t.Fatal("the write never reached the downstream")
	}

	cancel()
	// Not ready any more, or not even accepting connections.
	eventually(t, "/-/ready to turn 503 or the listener to close", func() bool {
		code := readyStatus(base)
		return code == http.StatusServiceUnavailable || code == 0
	})
	// Whatever the network shows, the handler itself reports not-ready now,
	// although the downstream was reached.
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/-/ready", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "shutting down") {
		t.Errorf("/-/ready during shutdown = %d %q, want 503 shutting down", rec.Code, rec.Body.String())
	}
	// The in-flight request holds the shutdown.
	select {
	case <-sv.done:
		t.Fatalf("Serve returned %v while a request was in flight", sv.err)
	case r := <-inflight:
		t.Fatalf("in-flight request answered %d %q before the downstream did", r.code, r.body)
	case <-time.After(50 * time.Millisecond):
	}

	release()
	select {
	case r := <-inflight:
		if r.code != http.StatusNoContent {
			t.Errorf("in-flight request = %d %q, want 204", r.code, r.body)
		}
	case <-time.After(waitFor):
		t.Fatal("in-flight request did not finish after the downstream answered")
	}
	if err := sv.wait(t); err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	if got := d.take(t); !slices.Equal(got, []string{"__name__=slow,job=j 42@5"}) {
		t.Errorf("downstream received %q", got)
	}
	// New connections are refused after shutdown.
	if code, _ := postWrite(base, body); code != 0 {
		t.Errorf("remote write after shutdown = %d, want a connection error", code)
	}
}

func TestServeListenerError(t *testing.T) {
	t.Parallel()
	d := newDownstream(t)
	s, _ := newServer(t, writeConfig(t, t.TempDir(), d.URL, ""))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close() // Serve fails at once and says so.
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(context.Background(), ln) }()
	select {
	case err := <-errc:
		if err == nil || errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve on a closed listener = %v, want the accept error", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Serve on a closed listener did not return")
	}
}
