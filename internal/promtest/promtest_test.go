package promtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// exporter serves body on /metrics with the given content type and returns
// the host:port to scrape.
func exporter(t *testing.T, contentType, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", contentType)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestAgentRemoteWritesToReceiver(t *testing.T) {
	t.Parallel()
	target := exporter(t, "text/plain; version=0.0.4; charset=utf-8",
		"# TYPE test_counter_total counter\ntest_counter_total{a=\"b\"} 5\n")
	begin := time.Now()
	recv := Start(t, Options{RemoteWriteReceiver: true})
	sender := Start(t, Options{
		Agent:          true,
		ScrapeTargets:  []string{target},
		RemoteWriteURL: recv.WriteURL(),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	Eventually(t, 25*time.Second, func() (bool, string) {
		got, err := recv.Query(ctx, `test_counter_total{a="b"}`)
		if err != nil {
			return false, err.Error()
		}
		if len(got) != 1 {
			return false, fmt.Sprintf("got %d series, want 1: %v", len(got), got)
		}
		s := got[0]
		if s.Value != 5 || s.Labels["job"] != ScrapeJob || s.Labels["instance"] != target {
			return false, fmt.Sprintf("got %v, want value 5 with job=%q instance=%q", s, ScrapeJob, target)
		}
		return true, ""
	})
	t.Logf("first sample arrived %s after the receiver was started", time.Since(begin).Round(time.Millisecond))

	series, err := recv.Series(ctx, `{__name__="test_counter_total"}`)
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 1 || series[0]["a"] != "b" {
		t.Fatalf("Series: got %v, want one series with a=b", series)
	}

	// The queue counts a batch just before it is sent, so by now it is
	// counted; failures or retries would have happened on that batch.
	st, err := sender.RemoteWriteStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sender stats: %+v", st)
	if st.Failed != 0 || st.Dropped != 0 || st.Retried != 0 {
		t.Errorf("got failed=%v dropped=%v retried=%v, want all 0", st.Failed, st.Dropped, st.Retried)
	}
	if st.Succeeded() <= 0 || st.In <= 0 {
		t.Errorf("got succeeded=%v in=%v, want > 0", st.Succeeded(), st.In)
	}
	total, err := sender.Metric(ctx, MetricSamplesTotal)
	if err != nil {
		t.Fatal(err)
	}
	if total < st.Total {
		t.Errorf("%s went back from %v to %v", MetricSamplesTotal, st.Total, total)
	}
	if _, err := sender.Metric(ctx, "no_such_metric"); !errors.Is(err, ErrMetricNotFound) {
		t.Errorf("Metric(no_such_metric): got %v, want ErrMetricNotFound", err)
	}
}

func TestExemplarsReachReceiver(t *testing.T) {
	t.Parallel()
	target := exporter(t, "application/openmetrics-text; version=1.0.0; charset=utf-8",
		"# TYPE test_exemplar counter\ntest_exemplar_total{a=\"b\"} 7 # {trace_id=\"abc123\"} 1.5\n# EOF\n")
	recv := Start(t, Options{RemoteWriteReceiver: true, Features: []string{"exemplar-storage"}})
	sender := Start(t, Options{
		Agent:          true,
		ScrapeTargets:  []string{target},
		RemoteWriteURL: recv.WriteURL(),
		SendExemplars:  true,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	Eventually(t, 25*time.Second, func() (bool, string) {
		now := time.Now()
		got, err := recv.QueryExemplars(ctx, `test_exemplar_total`, now.Add(-time.Minute), now.Add(time.Minute))
		if err != nil {
			return false, err.Error()
		}
		if len(got) != 1 || len(got[0].Exemplars) == 0 {
			return false, fmt.Sprintf("got %+v, want one series with exemplars", got)
		}
		e := got[0].Exemplars[0]
		if got[0].SeriesLabels["a"] != "b" || e.Labels["trace_id"] != "abc123" || e.Value != 1.5 {
			return false, fmt.Sprintf("got %+v, want series a=b with exemplar trace_id=abc123 value 1.5", got)
		}
		if d := time.Since(e.Timestamp); d < -time.Minute || d > time.Minute {
			return false, fmt.Sprintf("exemplar timestamp %v is off by %v", e.Timestamp, d)
		}
		return true, ""
	})
	for _, name := range []string{MetricExemplarsFailed, MetricExemplarsDropped} {
		v, err := sender.Metric(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if v != 0 {
			t.Errorf("%s = %v, want 0", name, v)
		}
	}
	if v, err := sender.Metric(ctx, MetricExemplarsTotal); err != nil || v <= 0 {
		t.Errorf("%s = %v (err %v), want > 0", MetricExemplarsTotal, v, err)
	}
}

func TestStopIsIdempotentAndFreesPort(t *testing.T) {
	t.Parallel()
	p := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := p.Query(ctx, "1+1")
	if err != nil || len(got) != 1 || got[0].Value != 2 {
		t.Fatalf("Query(1+1): got %v, %v; want 2", got, err)
	}

	stopped := time.Now()
	p.Stop()
	p.Stop()
	t.Logf("stop took %s", time.Since(stopped).Round(time.Millisecond))
	if p.Running() {
		t.Fatal("Running after Stop")
	}
	if _, err := p.Query(ctx, "1"); err == nil {
		t.Fatal("Query after Stop succeeded")
	}
	l, err := net.Listen("tcp", p.Addr)
	if err != nil {
		t.Fatalf("port not freed after Stop: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	url := p.URL
	p.Restart()
	if p.URL != url || !p.Running() {
		t.Fatalf("after Restart: URL %s running %v, want %s running", p.URL, p.Running(), url)
	}
	if got, err := p.Query(ctx, "3"); err != nil || len(got) != 1 || got[0].Value != 3 {
		t.Fatalf("Query(3) after Restart: got %v, %v", got, err)
	}
	p.Kill()
	p.Kill()
	p.Stop()
	if p.Running() {
		t.Fatal("Running after Kill")
	}
	if strings.Count(p.Log(), "Server is ready to receive web requests") != 2 {
		t.Fatalf("log should show two starts:\n%s", p.Log())
	}
}

func TestConfigYAML(t *testing.T) {
	f := func(opts Options, want []string, wantErr string) {
		t.Helper()
		got, err := configYAML(opts)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("got error %v, want %q", err, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(string(got), w) {
				t.Fatalf("config lacks %q:\n%s", w, got)
			}
		}
	}
	f(Options{}, []string{"scrape_interval: 1s"}, "")
	f(Options{ScrapeTargets: []string{"127.0.0.1:1"}, ScrapeInterval: 2 * time.Second},
		[]string{"job_name: mesh", "- 127.0.0.1:1", "scrape_interval: 2s"}, "")
	f(Options{RemoteWriteURL: "http://127.0.0.1:2/api/v1/write", SendExemplars: true},
		[]string{"url: http://127.0.0.1:2/api/v1/write", "send_exemplars: true",
			"batch_send_deadline: 1s", "min_backoff: 10ms", "max_backoff: 100ms"}, "")
	f(Options{
		ScrapeTargets: []string{"127.0.0.1:1"},
		ExtraConfig:   "scrape_configs:\n- job_name: other\n  static_configs: [{targets: ['127.0.0.1:3']}]\n",
	}, []string{"job_name: mesh", "job_name: other"}, "")
	f(Options{ExtraConfig: "global: {scrape_interval: 5s}"}, nil, "generated already")
	f(Options{ExtraConfig: "[not a map"}, nil, "cannot parse ExtraConfig")
}

func TestMajorVersion(t *testing.T) {
	f := func(v string, want int) {
		t.Helper()
		if got := majorVersion(v); got != want {
			t.Fatalf("majorVersion(%q) = %d, want %d", v, got, want)
		}
	}
	f("2.42.0+ds", 2)
	f("3.1.0", 3)
	f("", 0)
	f("x.y", 0)
}

func TestPointJSON(t *testing.T) {
	f := func(in string, wantT time.Time, wantV float64, wantErr bool) {
		t.Helper()
		var pt pointJSON
		err := pt.UnmarshalJSON([]byte(in))
		if (err != nil) != wantErr {
			t.Fatalf("%s: err %v, wantErr %v", in, err, wantErr)
		}
		if err == nil && (!pt.t.Equal(wantT) || pt.v != wantV) {
			t.Fatalf("%s: got %v %v, want %v %v", in, pt.t, pt.v, wantT, wantV)
		}
	}
	f(`[1795646139.943,"5"]`, time.UnixMilli(1795646139943), 5, false)
	f(`[1,"-2.5"]`, time.Unix(1, 0), -2.5, false)
	f(`[1,5]`, time.Time{}, 0, true)
	f(`[1,"x"]`, time.Time{}, 0, true)
}

// fakeTB records Fatalf and Skip and ends the calling goroutine as the real
// ones do.
type fakeTB struct {
	testing.TB
	mu     sync.Mutex
	fatal  string
	skip   string
	logged []string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Logf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logged = append(f.logged, fmt.Sprintf(format, args...))
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}
func (f *fakeTB) Skip(args ...any) {
	f.mu.Lock()
	f.skip = fmt.Sprint(args...)
	f.mu.Unlock()
	runtime.Goexit()
}

// run calls fn with a fake TB in its own goroutine and waits for it.
func run(t *testing.T, fn func(tb testing.TB)) *fakeTB {
	t.Helper()
	fake := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(fake)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("fake test did not finish")
	}
	return fake
}

func TestEventually(t *testing.T) {
	t.Parallel()
	calls := 0
	fake := run(t, func(tb testing.TB) {
		Eventually(tb, time.Second, func() (bool, string) {
			calls++
			return calls == 3, fmt.Sprintf("call %d", calls)
		})
	})
	if fake.fatal != "" || calls != 3 {
		t.Fatalf("got fatal %q after %d calls, want success on call 3", fake.fatal, calls)
	}

	start := time.Now()
	fake = run(t, func(tb testing.TB) {
		Eventually(tb, 600*time.Millisecond, func() (bool, string) { return false, "still 0 series" })
	})
	if !strings.Contains(fake.fatal, "still 0 series") {
		t.Fatalf("got fatal %q, want the last message", fake.fatal)
	}
	if d := time.Since(start); d < 600*time.Millisecond || d > 3*time.Second {
		t.Fatalf("timeout took %s, want about 600ms", d)
	}
}

func TestBinaryMissing(t *testing.T) {
	// Not parallel: t.Setenv.
	missing := t.TempDir() + "/no-prometheus"
	t.Setenv(EnvBinary, missing)

	t.Setenv(EnvE2E, "")
	fake := run(t, func(tb testing.TB) { Binary(tb) })
	if fake.fatal != "" || !strings.Contains(fake.skip, EnvBinary) {
		t.Fatalf("without %s: got fatal %q skip %q, want a skip naming %s", EnvE2E, fake.fatal, fake.skip, EnvBinary)
	}

	t.Setenv(EnvE2E, EnvE2ERequire)
	fake = run(t, func(tb testing.TB) { Binary(tb) })
	if fake.skip != "" || !strings.Contains(fake.fatal, EnvE2ERequire) {
		t.Fatalf("with %s=%s: got fatal %q skip %q, want a failure", EnvE2E, EnvE2ERequire, fake.fatal, fake.skip)
	}
}

func TestBinaryFound(t *testing.T) {
	if _, err := os.Stat(DefaultBinary); err != nil {
		t.Skip("no " + DefaultBinary)
	}
	path, version := BinaryVersion(t)
	if path == "" || majorVersion(version) < 2 {
		t.Fatalf("got %q version %q", path, version)
	}
}

func TestPortClashIsDetected(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := newPrometheus(t, Options{})
	err = p.start(l.Addr().String())
	if !errors.Is(err, errPortInUse) {
		t.Fatalf("start on a taken port: got %v, want errPortInUse", err)
	}
	if p.Running() {
		t.Fatal("Running after a failed start")
	}
}
