package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/internal/promtest"
)

// nonMeshExposition is what a sidecar next to Prometheus receives besides
// the mesh: Prometheus' own metrics, Kubernetes', the applications'. It
// has pods, instances and reasons that the presets' allowlists would drop,
// and more series per namespace/app than the presets' caps allow, so that a
// preset touching it shows.
func nonMeshExposition() (string, map[string]float64) {
	var sb strings.Builder
	want := map[string]float64{}
	add := func(name string, v float64, kv ...string) {
		ls := labels.FromStrings(append([]string{"__name__", name}, kv...)...)
		want[ls.String()] = v
		sb.WriteString(name)
		sb.WriteByte('{')
		for i := 0; i < len(kv); i += 2 {
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, "%s=%q", kv[i], kv[i+1])
		}
		fmt.Fprintf(&sb, "} %g\n", v)
	}
	for i := range 24 {
		add("net_conntrack_dialer_conn_failed_total", float64(i), "dialer_name", fmt.Sprintf("dialer-%d", i%6), "reason", []string{"refused", "timeout", "unknown", "resolution"}[i%4], "pod", fmt.Sprintf("prometheus-%d", i/12))
	}
	for i := range 30 {
		add("kube_pod_container_status_restarts_total", float64(i%3), "namespace", "shop", "app", "cart", "pod", fmt.Sprintf("cart-%d", i), "container", "app")
	}
	for _, le := range []string{"0.1", "1", "+Inf"} {
		add("http_request_duration_seconds_bucket", 7, "handler", "/api", "le", le, "pod", "web-0", "request_id", "5f1c")
	}
	add("go_goroutines", 42, "pod", "web-0")
	return sb.String(), want
}

// TestE2EPresetsLeaveOtherMetricsAlone: the shipped Istio and Linkerd
// presets, run as written (downstream.url aside), on a stream that holds
// mesh and non-mesh series: the mesh's are collapsed and merged, every
// non-mesh series arrives exactly as it was exposed (issue 12).
func TestE2EPresetsLeaveOtherMetricsAlone(t *testing.T) {
	promtest.Binary(t)
	for _, tc := range []struct{ preset, mesh string }{
		{"istio.yml", "istio_.*|envoy_.*"},
		{"linkerd.yml", "request_total|response_total|response_latency_ms_.*|tcp_.*"},
	} {
		preset := tc.preset
		t.Run(preset, func(t *testing.T) {
			text, want := nonMeshExposition()
			gen := meshgen.New(meshgen.Config{Workloads: 12, PodsPerWorkload: 2, Variants: 2, Seed: 5})
			exporter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", meshgen.TextContentType)
				if err := gen.WriteText(w, 1); err != nil {
					// Prometheus gave up on the scrape (its timeout is 1 s, which a
					// loaded machine can exceed) and closed the connection: its
					// next scrape comes, and the test judges what arrives.
					t.Logf("exporter: %v", err)
				}
				fmt.Fprint(w, text)
			}))
			t.Cleanup(exporter.Close)
			receiver := promtest.Start(t, promtest.Options{RemoteWriteReceiver: true})
			raw, err := os.ReadFile("../deploy/examples/" + preset)
			if err != nil {
				t.Fatal(err)
			}
			cfg := strings.Replace(string(raw), "url: http://127.0.0.1:9090/api/v1/write", "url: "+receiver.WriteURL(), 1)
			cfg = strings.Replace(cfg, "flush_interval: 15s", "flush_interval: 1s", 1)
			if cfg == string(raw) {
				t.Fatal("the preset's downstream.url was not found to replace")
			}
			gw := startCardinal(t, cfg)
			promtest.Start(t, promtest.Options{
				Agent:          true,
				ScrapeTargets:  []string{strings.TrimPrefix(exporter.URL, "http://")},
				RemoteWriteURL: gw.URL + "/api/v1/write",
			})
			ctx := context.Background()
			promtest.Eventually(t, 60*time.Second, func() (bool, string) {
				samples, err := receiver.Query(ctx, `{job="mesh"}`)
				if err != nil {
					return false, err.Error()
				}
				got := map[string]float64{}
				for _, s := range samples {
					delete(s.Labels, "job")
					delete(s.Labels, "instance")
					got[labels.FromMap(s.Labels).String()] = s.Value
				}
				var missing []string
				for k, v := range want {
					if g, ok := got[k]; !ok || g != v {
						missing = append(missing, fmt.Sprintf("%s (got %v, %v)", k, g, ok))
					}
				}
				if len(missing) > 0 {
					return false, fmt.Sprintf("%d of %d non-mesh series not as exposed, e.g. %s", len(missing), len(want), missing[0])
				}
				return true, ""
			})
			// The mesh's own series were processed: no pod label left on
			// them, and the merger merged some.
			series, err := receiver.Series(ctx, fmt.Sprintf(`{__name__=~%q, pod!=""}`, tc.mesh))
			if err != nil {
				t.Fatal(err)
			}
			if len(series) > 0 {
				t.Errorf("%d mesh series kept their pod label, e.g. %v", len(series), series[0])
			}
			fams := scrapeMetrics(t, gw.URL)
			if v := familyValue(fams, "cardinal_merged_series", "", ""); v == 0 {
				t.Errorf("no merged series: the preset did not touch the mesh")
			}
			for _, code := range []string{"400", "500", "503"} {
				if v := familyValue(fams, "cardinal_received_requests_total", "code", code); v != 0 {
					t.Errorf("cardinal answered %s to %v requests", code, v)
				}
			}
		})
	}
}
