package gateway

import (
	"context"
	"testing"

	"github.com/golang/snappy"

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
	benchProcess(b, meshConfig, meshgen.Config{Workloads: 24, PodsPerWorkload: 3, Churn: true, Seed: 7})
}

func benchProcess(b *testing.B, cfg string, mesh meshgen.Config) {
	src, err := meshgen.New(mesh).WriteRequests(1, 1_700_000_000_000, 2000)[0].Marshal()
	if err != nil {
		b.Fatal(err)
	}
	g, _ := newTestGateway(b, cfg, &recordingSender{})
	var req wire.Request
	samples := 0
	run := func() {
		if err := req.Unmarshal(src); err != nil {
			b.Fatal(err)
		}
		samples = req.NumSamples()
		if _, err := g.Process(context.Background(), &req); err != nil {
			b.Fatal(err)
		}
	}
	// Warm-up outside the measurement: the first request creates the
	// merger's per-series state and grows every pool.
	run()
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		run()
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
	benchProcess(b, fullConfig, meshgen.Config{Workloads: 24, PodsPerWorkload: 3, Seed: 7})
}

// BenchmarkRequestPath is everything Cardinal does with one compressed
// 2000-series mesh request in production shape (fullConfig), except HTTP:
// snappy decode, decode, sanitize, relabel, trace sampling, limiter,
// merge routing, encode and snappy encode of what is forwarded.
// BenchmarkRequestFloor is the unavoidable part of the same request; the
// ratio of the two is the gateway's cost over the codec floor.
func BenchmarkRequestPath(b *testing.B) {
	compressed, _ := requestFixture(b)
	g, _ := newTestGateway(b, fullConfig, &recordingSender{})
	var req wire.Request
	var raw []byte
	run := func() {
		var err error
		if raw, err = snappy.Decode(raw[:cap(raw)], compressed); err != nil {
			b.Fatal(err)
		}
		if err := req.Unmarshal(raw); err != nil {
			b.Fatal(err)
		}
		if _, err := g.Process(context.Background(), &req); err != nil {
			b.Fatal(err)
		}
	}
	run()
	b.ReportAllocs()
	b.SetBytes(int64(len(compressed)))
	for b.Loop() {
		run()
	}
	b.ReportMetric(2000*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}

// BenchmarkRequestFloor: snappy decode, one decoding pass, and snappy
// encode of as many bytes as the gateway forwards for the same request.
func BenchmarkRequestFloor(b *testing.B) {
	compressed, forwarded := requestFixture(b)
	out := make([]byte, len(forwarded))
	var req wire.Request
	var raw, enc []byte
	b.ReportAllocs()
	b.SetBytes(int64(len(compressed)))
	for b.Loop() {
		var err error
		if raw, err = snappy.Decode(raw[:cap(raw)], compressed); err != nil {
			b.Fatal(err)
		}
		if err := req.Unmarshal(raw); err != nil {
			b.Fatal(err)
		}
		copy(out, forwarded)
		enc = snappy.Encode(enc[:cap(enc)], out)
	}
}

// requestFixture returns a compressed 2000-series mesh request and the
// uncompressed body the gateway forwards for it under fullConfig.
func requestFixture(b *testing.B) (compressed, forwarded []byte) {
	b.Helper()
	gen := meshgen.New(meshgen.Config{Workloads: 24, PodsPerWorkload: 3, Seed: 7})
	src, err := gen.WriteRequests(1, 1_700_000_000_000, 2000)[0].Marshal()
	if err != nil {
		b.Fatal(err)
	}
	sender := &bodySender{}
	g, _ := newTestGateway(b, fullConfig, &recordingSender{})
	g.state.Load().sender = sender
	var req wire.Request
	if err := req.Unmarshal(src); err != nil {
		b.Fatal(err)
	}
	if _, err := g.Process(context.Background(), &req); err != nil {
		b.Fatal(err)
	}
	raw, err := snappy.Decode(nil, sender.body)
	if err != nil {
		b.Fatal(err)
	}
	return snappy.Encode(nil, src), raw
}

// bodySender keeps a copy of the last body it was given.
type bodySender struct{ body []byte }

func (s *bodySender) Send(_ context.Context, body []byte) error {
	s.body = append(s.body[:0], body...)
	return nil
}

func (s *bodySender) Close() {}
