package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/prometheus/model/labels"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/cardinal-gateway/cardinal/internal/promtest"
	"github.com/cardinal-gateway/cardinal/wire"
)

// The remote write 2.0 exporter: a mesh counter whose request_id label
// Cardinal drops (so its series merge), a native histogram and a gauge, with
// exemplars, all fixed once served so that the truth is exact.
const (
	rw2Counter   = "istio_requests_total"
	rw2Histogram = "mesh_request_duration_seconds"
	rw2Gauge     = "mesh_connections"
	rw2Apps      = 3
	rw2Pods      = 2
	rw2Requests  = 4 // request ids per pod, merged away
)

// rw2Truth is what the receiver must hold, by app (and pod for counters).
type rw2Truth struct {
	counters   map[string]float64 // "app/pod" -> sum over request ids
	histCounts map[string]float64 // app -> observations
	gauges     map[string]float64 // app -> value
}

func rw2Exporter(t testing.TB) (*httptest.Server, rw2Truth) {
	t.Helper()
	reg := prometheus.NewRegistry()
	counter := prometheus.NewCounterVec(prometheus.CounterOpts{Name: rw2Counter, Help: "Requests by pod and request."}, []string{"app", "pod", "request_id"})
	hist := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: rw2Histogram, Help: "Request latency.",
		NativeHistogramBucketFactor: 1.1, NativeHistogramMaxBucketNumber: 100,
	}, []string{"app"})
	gauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: rw2Gauge, Help: "Open connections."}, []string{"app"})
	reg.MustRegister(counter, hist, gauge)
	truth := rw2Truth{counters: map[string]float64{}, histCounts: map[string]float64{}, gauges: map[string]float64{}}
	for a := range rw2Apps {
		app := fmt.Sprint("app-", a)
		for p := range rw2Pods {
			pod := fmt.Sprintf("%s-pod-%d", app, p)
			for r := range rw2Requests {
				v := float64(1 + a*100 + p*10 + r)
				counter.WithLabelValues(app, pod, fmt.Sprintf("%032x", a*1000+p*100+r)).(prometheus.ExemplarAdder).
					AddWithExemplar(v, prometheus.Labels{"trace_id": fmt.Sprintf("%032x", 1+a*1000+p*100+r)})
				truth.counters[app+"/"+pod] += v
			}
		}
		for i := range 5 + a {
			hist.WithLabelValues(app).(prometheus.ExemplarObserver).
				ObserveWithExemplar(0.01*float64(i+1), prometheus.Labels{"trace_id": fmt.Sprintf("%032x", 9000+a*10+i)})
			truth.histCounts[app]++
		}
		gauge.WithLabelValues(app).Set(float64(7 + a))
		truth.gauges[app] = float64(7 + a)
	}
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	t.Cleanup(srv.Close)
	return srv, truth
}

// rw2Sender is a Prometheus scraping the exporter in protobuf (native
// histograms, exemplars) and sending remote write as message says, with
// per-series metadata; bin "" is Prometheus 2.42.
func rw2Sender(t testing.TB, bin, target, url, message string) *promtest.Prometheus {
	t.Helper()
	features := []string{"exemplar-storage"}
	scrape, rw := "", ""
	if bin == "" {
		// 2.42 scrapes protobuf when native histograms are on, and knows
		// neither scrape_protocols nor protobuf_message.
		features = append(features, "native-histograms")
	} else {
		features = append(features, "metadata-wal-records") // 2.0 metadata comes from the WAL
		scrape = "\n    scrape_protocols: [PrometheusProto, OpenMetricsText1.0.0, PrometheusText0.0.4]\n    scrape_native_histograms: true"
		rw = "\n    protobuf_message: " + message
	}
	return promtest.Start(t, promtest.Options{
		Binary:   bin,
		Agent:    true,
		Features: features,
		ExtraConfig: fmt.Sprintf(`
scrape_configs:
  - job_name: mesh
    scrape_interval: 1s
    scrape_timeout: 1s%s
    static_configs:
      - targets: [%q]
remote_write:
  - url: %s%s
    send_exemplars: true
    send_native_histograms: true
    remote_timeout: 5s
    metadata_config:
      send: true
      send_interval: 1s
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 10ms
      max_backoff: 100ms
`, scrape, target, url, rw),
	})
}

// rw2Receiver is a Prometheus taking both messages, with exemplar storage,
// and on 3.x type-and-unit-labels so that received metadata shows as the
// __type__ label; bin "" is Prometheus 2.42.
func rw2Receiver(t testing.TB, bin string) *promtest.Prometheus {
	t.Helper()
	opts := promtest.Options{Binary: bin, RemoteWriteReceiver: true, Features: []string{"exemplar-storage"}}
	if bin == "" {
		opts.Features = append(opts.Features, "native-histograms")
	} else {
		opts.Features = append(opts.Features, "type-and-unit-labels")
		opts.Args = []string{
			"--web.remote-write-receiver.accepted-protobuf-messages=prometheus.WriteRequest",
			"--web.remote-write-receiver.accepted-protobuf-messages=io.prometheus.write.v2.Request",
		}
	}
	return promtest.Start(t, opts)
}

// Metadata checks of rw2Check.
type rw2Types int

const (
	typesNone   rw2Types = iota // the receiver cannot show metadata
	typesAll                    // every series carries its type
	typesLatest                 // the series carry it once the sender sent it
)

// rw2Check compares the receiver with the truth: merged counter sums,
// native histogram counts, gauges, exemplars of the merged counter and the
// histogram and the metric types received as metadata (Prometheus 3 with
// type-and-unit-labels shows them as the __type__ label). A 1.0 sender
// sends metadata apart from samples, so its first series may arrive
// untyped (typesLatest): values are then read from the typed ones.
// exemplarsOn names the metrics whose exemplars must arrive (Prometheus
// 2.42 does not scrape exemplars of native histograms).
func rw2Check(ctx context.Context, receiver *promtest.Prometheus, truth rw2Truth, types rw2Types, exemplarsOn ...string) (bool, string) {
	values := func(expr string, key func(map[string]string) string) (map[string]float64, error) {
		samples, err := receiver.Query(ctx, expr)
		if err != nil {
			return nil, err
		}
		out := map[string]float64{}
		for _, s := range samples {
			out[key(s.Labels)] = s.Value
		}
		return out, nil
	}
	byPod := func(l map[string]string) string { return l["app"] + "/" + l["pod"] }
	byApp := func(l map[string]string) string { return l["app"] }
	typed := func(name, typ string) string {
		if types == typesLatest {
			return name + `{__type__="` + typ + `"}`
		}
		return name
	}
	for _, c := range []struct {
		expr string
		key  func(map[string]string) string
		want map[string]float64
	}{
		{typed(rw2Counter, "counter"), byPod, truth.counters},
		{"histogram_count(" + typed(rw2Histogram, "histogram") + ")", byApp, truth.histCounts},
		{typed(rw2Gauge, "gauge"), byApp, truth.gauges},
	} {
		got, err := values(c.expr, c.key)
		if err != nil {
			return false, err.Error()
		}
		if d := compareValues(got, c.want); d != "" {
			return false, c.expr + ": " + d
		}
	}
	// No series may keep the merged-away label.
	series, err := receiver.Series(ctx, rw2Counter)
	if err != nil {
		return false, err.Error()
	}
	for _, s := range series {
		if _, ok := s["request_id"]; ok {
			return false, fmt.Sprintf("series %v kept request_id", s)
		}
		if types == typesAll && s["__type__"] != "counter" {
			return false, fmt.Sprintf("series %v: __type__ %q, want counter (metadata lost)", s, s["__type__"])
		}
	}
	if types == typesAll {
		for name, typ := range map[string]string{rw2Histogram: "histogram", rw2Gauge: "gauge"} {
			ss, err := receiver.Series(ctx, name)
			if err != nil {
				return false, err.Error()
			}
			if len(ss) == 0 || ss[0]["__type__"] != typ {
				return false, fmt.Sprintf("%s series %v, want __type__=%q", name, ss, typ)
			}
		}
	}
	now := time.Now()
	for _, name := range exemplarsOn {
		ex, err := receiver.QueryExemplars(ctx, name, now.Add(-10*time.Minute), now.Add(time.Minute))
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, s := range ex {
			for _, e := range s.Exemplars {
				if len(e.Labels["trace_id"]) == 32 {
					n++
				}
			}
		}
		if n == 0 {
			return false, fmt.Sprintf("no exemplar with a trace_id on %s (%d series with exemplars)", name, len(ex))
		}
	}
	return true, ""
}

const rw2CardinalConfig = `
downstream:
  url: %s
  protobuf_message: %s
  max_retries: 5
relabel_configs:
  - action: labeldrop
    regex: request_id
merge:
  flush_interval: 1s
`

// rw2Cardinal starts Cardinal with the mesh rule and merging, forwarding
// as message says.
func rw2Cardinal(t testing.TB, downstream, message string) *cardinal {
	return startCardinal(t, fmt.Sprintf(rw2CardinalConfig, downstream, message))
}

// rw2Quiet checks that nothing was refused for good: no 4xx from Cardinal
// to the sender, no series the receiver refused (Prometheus 3 refuses an
// out-of-order exemplar with 400 while it stores the sample; Cardinal sends
// the series again without it), and no remote write failure in the sender.
func rw2Quiet(ctx context.Context, t *testing.T, gw *cardinal, sender *promtest.Prometheus) {
	t.Helper()
	fams := scrapeMetrics(t, gw.URL)
	if v := familyValue(fams, "cardinal_forward_rejected_series_total", "", ""); v != 0 {
		t.Errorf("the receiver refused %v series", v)
	}
	for _, family := range []string{"cardinal_received_requests_total"} {
		if f, ok := fams[family]; ok {
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "code" && strings.HasPrefix(l.GetValue(), "4") && m.GetCounter().GetValue() > 0 {
						t.Errorf("%s{code=%q} = %v", family, l.GetValue(), m.GetCounter().GetValue())
					}
				}
			}
		}
	}
	if failed, err := sender.Metric(ctx, "prometheus_remote_storage_samples_failed_total"); err == nil && failed > 0 {
		t.Errorf("the sender failed %v samples", failed)
	}
	if strings.Contains(sender.Log(), "PRW 2.0 response header statistics") {
		t.Errorf("the sender found Cardinal's Written headers wrong:\n%s", sender.Log())
	}
}

// TestE2ERemoteWrite2 runs remote write 2.0 end to end through Cardinal with
// its mesh rule and merging: Prometheus 3 to Prometheus 3 in 2.0, a 2.0
// sender to Prometheus 2.42 through downstream.protobuf_message auto (which
// must fall back to 1.0 and lose nothing), and a 1.0 sender to a 2.0
// receiver. The receivers' APIs must show the merged counter totals, native
// histograms, exemplars and, where the receiver can show it, metadata.
func TestE2ERemoteWrite2(t *testing.T) {
	prom3 := promtest.Binary3(t)
	promtest.Binary(t)
	ctx := context.Background()
	exporter, truth := rw2Exporter(t)
	target := strings.TrimPrefix(exporter.URL, "http://")

	t.Run("2.0 to 2.0", func(t *testing.T) {
		receiver := rw2Receiver(t, prom3)
		gw := rw2Cardinal(t, receiver.WriteURL(), "v2")
		sender := rw2Sender(t, prom3, target, gw.URL+"/api/v1/write", "io.prometheus.write.v2.Request")
		promtest.Eventually(t, 60*time.Second, func() (bool, string) { return rw2Check(ctx, receiver, truth, typesAll, rw2Counter, rw2Histogram) })
		rw2Quiet(ctx, t, gw, sender)
		fams := scrapeMetrics(t, gw.URL)
		if v := familyValue(fams, "cardinal_forward_remote_write_version", "", ""); v != 2 {
			t.Errorf("cardinal_forward_remote_write_version = %v, want 2", v)
		}
	})

	t.Run("2.0 to Prometheus 2.42 through auto", func(t *testing.T) {
		receiver := rw2Receiver(t, "")
		gw := rw2Cardinal(t, receiver.WriteURL(), "auto")
		sender := rw2Sender(t, prom3, target, gw.URL+"/api/v1/write", "io.prometheus.write.v2.Request")
		// 2.42 keeps received metadata nowhere it can be queried.
		promtest.Eventually(t, 60*time.Second, func() (bool, string) { return rw2Check(ctx, receiver, truth, typesNone, rw2Counter, rw2Histogram) })
		rw2Quiet(ctx, t, gw, sender)
		fams := scrapeMetrics(t, gw.URL)
		if v := familyValue(fams, "cardinal_forward_protocol_fallbacks_total", "", ""); v != 1 {
			t.Errorf("cardinal_forward_protocol_fallbacks_total = %v, want 1", v)
		}
		if v := familyValue(fams, "cardinal_forward_remote_write_version", "", ""); v != 1 {
			t.Errorf("cardinal_forward_remote_write_version = %v, want 1", v)
		}
	})

	t.Run("1.0 to 2.0", func(t *testing.T) {
		receiver := rw2Receiver(t, prom3)
		gw := rw2Cardinal(t, receiver.WriteURL(), "v2")
		sender := rw2Sender(t, "", target, gw.URL+"/api/v1/write", "prometheus.WriteRequest")
		promtest.Eventually(t, 60*time.Second, func() (bool, string) { return rw2Check(ctx, receiver, truth, typesLatest, rw2Counter) })
		rw2Quiet(ctx, t, gw, sender)
	})
}

// TestE2ERemoteWrite2RealRequests decodes what a real Prometheus 3 sends
// (exemplars, native histograms, metadata, start timestamps as it sets
// them) with Cardinal's decoder and with Prometheus' own, request by
// request: they must agree on every series.
func TestE2ERemoteWrite2RealRequests(t *testing.T) {
	prom3 := promtest.Binary3(t)
	exporter, _ := rw2Exporter(t)
	var (
		mu       sync.Mutex
		checked  int
		series   int
		problems []string
	)
	capture := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		raw, err2 := snappy.Decode(nil, body)
		mu.Lock()
		defer mu.Unlock()
		if err != nil || err2 != nil {
			problems = append(problems, fmt.Sprint("cannot read a body: ", err, err2))
			return
		}
		n, diff := rw2Differ(raw)
		if diff != "" {
			problems = append(problems, diff)
		}
		checked++
		series += n
		w.Header().Set("X-Prometheus-Remote-Write-Samples-Written", "1")
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(capture.Close)
	rw2Sender(t, prom3, strings.TrimPrefix(exporter.URL, "http://"), capture.URL, "io.prometheus.write.v2.Request")
	promtest.Eventually(t, 30*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return checked >= 5, fmt.Sprintf("%d requests checked", checked)
	})
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("%d real requests, %d series: Cardinal's decoding is Prometheus'", checked, series)
}

// rw2Differ decodes raw with wire.UnmarshalV2 and with writev2 and returns
// the number of series and where they differ ("" when they agree).
func rw2Differ(raw []byte) (int, string) {
	var r wire.Request
	err := r.UnmarshalV2(raw)
	var pb writev2.Request
	pbErr := pb.Unmarshal(raw)
	if err != nil || pbErr != nil {
		return 0, fmt.Sprintf("Cardinal: %v, Prometheus: %v", err, pbErr)
	}
	if len(r.Series) != len(pb.Timeseries) {
		return 0, fmt.Sprintf("%d series, Prometheus %d", len(r.Series), len(pb.Timeseries))
	}
	b := labels.NewScratchBuilder(8)
	for i := range r.Series {
		s, ts := &r.Series[i], &pb.Timeseries[i]
		ls, err := ts.ToLabels(&b, pb.Symbols)
		if err != nil {
			return 0, err.Error()
		}
		got := labels.NewScratchBuilder(len(s.Labels))
		for _, l := range s.Labels {
			got.Add(string(l.Name), string(l.Value))
		}
		if g := got.Labels(); !labels.Equal(g, ls) {
			return 0, fmt.Sprintf("series %d: labels %s, Prometheus %s", i, g, ls)
		}
		if len(s.Samples) != len(ts.Samples) || len(s.Histograms) != len(ts.Histograms) || len(s.Exemplars) != len(ts.Exemplars) {
			return 0, fmt.Sprintf("series %d (%s): counts differ", i, ls)
		}
		for j, smp := range ts.Samples {
			if g := s.Samples[j]; math.Float64bits(g.Value) != math.Float64bits(smp.Value) || g.Timestamp != smp.Timestamp || g.StartTimestamp != smp.StartTimestamp {
				return 0, fmt.Sprintf("series %d sample %d: %+v, Prometheus %+v", i, j, g, smp)
			}
		}
		for j, h := range ts.Histograms {
			want, _ := h.Marshal()
			var back writev2.Histogram
			if err := back.Unmarshal(s.Histograms[j].Data); err != nil {
				return 0, err.Error()
			}
			if gotb, _ := back.Marshal(); !bytes.Equal(gotb, want) {
				return 0, fmt.Sprintf("series %d histogram %d differs", i, j)
			}
		}
		for j, e := range ts.Exemplars {
			want, err := e.ToExemplar(&b, pb.Symbols)
			if err != nil {
				return 0, err.Error()
			}
			g := s.Exemplars[j]
			gl := labels.NewScratchBuilder(len(g.Labels))
			for _, l := range g.Labels {
				gl.Add(string(l.Name), string(l.Value))
			}
			if math.Float64bits(g.Value) != math.Float64bits(want.Value) || g.Timestamp != want.Ts || !labels.Equal(gl.Labels(), want.Labels) {
				return 0, fmt.Sprintf("series %d exemplar %d: %v %v@%d, Prometheus %v", i, j, gl.Labels(), g.Value, g.Timestamp, want)
			}
		}
		m, _ := ts.ToMetadata(pb.Symbols)
		if string(s.Meta.Help) != m.Help || string(s.Meta.Unit) != m.Unit || s.Meta.Type != int32(ts.Metadata.Type) {
			return 0, fmt.Sprintf("series %d: metadata %+v, Prometheus %+v", i, s.Meta, m)
		}
	}
	return len(r.Series), ""
}
