package gateway

import (
	"context"
	"testing"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/wire"
)

// meshConfig keeps the mesh's standard labels plus pod and instance, so that
// the request path is measured without series collapsing.
var meshConfig = `
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
relabel_configs:
  - action: drop
    source_labels: [__name__]
    regex: envoy_server_.*
  - action: labelkeep
    regex: ` + meshgen.DefaultAllowlist + `|pod|instance|target_addr
`

// BenchmarkProcess is one 2000-series mesh request through decode, sanitize,
// relabel, encode and snappy, with a sender that does nothing.
func BenchmarkProcess(b *testing.B) {
	gen := meshgen.New(meshgen.Config{Workloads: 24, PodsPerWorkload: 3, Churn: true, Seed: 7})
	pb := gen.WriteRequests(1, 1_700_000_000_000, 2000)[0]
	src, err := pb.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	g, _ := newTestGateway(b, meshConfig, &recordingSender{})
	var req wire.Request
	samples := 0
	// Warm-up outside the measurement: the first request creates the
	// merger's per-series state and grows every pool.
	if err := req.Unmarshal(src); err != nil {
		b.Fatal(err)
	}
	if _, err := g.Process(context.Background(), &req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if err := req.Unmarshal(src); err != nil {
			b.Fatal(err)
		}
		samples = req.NumSamples()
		if _, err := g.Process(context.Background(), &req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(samples)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}

// fullConfig is the production shape: the mesh allowlist (pods and injected
// labels collapse and are merged), trace sampling and workload caps.
var fullConfig = `
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
relabel_configs:
  - action: drop
    source_labels: [__name__]
    regex: envoy_server_.*
  - action: labelkeep
    regex: ` + meshgen.DefaultAllowlist + `
trace_sampling:
  labels: [trace_id]
  ratio: 0.01
  always_keep: [{label: response_code, regex: "5.."}]
limits:
  workload_labels: [namespace, app]
  max_series_per_workload: 100000
`

// BenchmarkProcessFull is BenchmarkProcess with every stage on.
func BenchmarkProcessFull(b *testing.B) {
	gen := meshgen.New(meshgen.Config{Workloads: 24, PodsPerWorkload: 3, Seed: 7})
	pb := gen.WriteRequests(1, 1_700_000_000_000, 2000)[0]
	src, err := pb.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	g, _ := newTestGateway(b, fullConfig, &recordingSender{})
	var req wire.Request
	samples := 0
	if err := req.Unmarshal(src); err != nil {
		b.Fatal(err)
	}
	if _, err := g.Process(context.Background(), &req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if err := req.Unmarshal(src); err != nil {
			b.Fatal(err)
		}
		samples = req.NumSamples()
		if _, err := g.Process(context.Background(), &req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(samples)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}
