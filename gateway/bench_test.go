package gateway

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/config"
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
    regex: (` + meshgen.DefaultAllowlist + `|pod|instance|target_addr)
`

// fullConfig is the production shape: the mesh allowlist (pods and injected
// labels collapse and are merged), trace sampling and workload caps.
var fullConfig = `
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
relabel_configs:
  - action: drop
    source_labels: [__name__]
    regex: envoy_server_.*
  - action: labelkeep
    regex: (` + meshgen.DefaultAllowlist + `)
trace_sampling:
  labels: [trace_id]
  ratio: 0.01
  always_keep: [{label: response_code, regex: "5.."}]
limits:
  workload_labels: [namespace, app]
  max_series_per_workload: 100000
`

// BenchmarkProcess is one 2000-series mesh request through decode, sanitize,
// relabel, encode and snappy, with a sender that does nothing, on
// successive scrapes with fresh request ids (no series collapse).
func BenchmarkProcess(b *testing.B) {
	benchScrapes(b, meshConfig, meshgen.Config{Workloads: 24, PodsPerWorkload: 3, Churn: true, Seed: 7})
}

// BenchmarkProcessFull is BenchmarkProcess with every stage on (fullConfig):
// pods and injected labels collapse, and the merger absorbs them.
func BenchmarkProcessFull(b *testing.B) {
	benchScrapes(b, fullConfig, meshgen.Config{Workloads: 24, PodsPerWorkload: 3, Churn: true, Seed: 7})
}

// BenchmarkProcessFullEstimates is BenchmarkProcessFull with the estimates
// and the guard (enforce) on: their cost on the request path is the
// difference.
func BenchmarkProcessFullEstimates(b *testing.B) {
	benchScrapes(b, fullConfig+estimatesConfig, meshgen.Config{Workloads: 24, PodsPerWorkload: 3, Churn: true, Seed: 7})
}

const estimatesConfig = `
cardinality: {enabled: true, window: 10m}
guard: {mode: enforce, threshold: 1000}
`

// benchScrapes runs the gateway over successive scrapes of mesh traffic,
// one request per iteration, never the same body twice: every scrape has
// new timestamps and, with Churn, new request and trace ids. Generating the
// traffic and flushing the merger between scrapes happen off the clock.
func benchScrapes(b *testing.B, cfg string, mesh meshgen.Config) {
	gen := meshgen.New(mesh)
	clock := &testClock{t: time.UnixMilli(1_700_000_000_000)}
	g := newClockedGateway(b, cfg, clock)
	var (
		req     wire.Request
		raw     []byte
		bodies  [][]byte
		step    int
		bytes   int64
		samples int64
	)
	next := func() []byte {
		if len(bodies) == 0 {
			b.StopTimer()
			g.merger.Flush(context.Background(), discardDelivery, false)
			clock.Add(15 * time.Second)
			for _, r := range gen.WriteRequests(step, clock.Now().UnixMilli(), 2000) {
				src, err := r.Marshal()
				if err != nil {
					b.Fatal(err)
				}
				bodies = append(bodies, snappy.Encode(nil, src))
			}
			step++
			b.StartTimer()
		}
		body := bodies[0]
		bodies = bodies[1:]
		return body
	}
	run := func() {
		body := next()
		var err error
		if raw, err = snappy.Decode(raw[:cap(raw)], body); err != nil {
			b.Fatal(err)
		}
		if err := req.Unmarshal(raw); err != nil {
			b.Fatal(err)
		}
		bytes += int64(len(body))
		samples += int64(req.NumSamples())
		if _, err := g.Process(context.Background(), &req); err != nil {
			b.Fatal(err)
		}
	}
	// Warm-up off the clock: the first scrapes create the per-series state
	// and grow every pool.
	for range 8 {
		run()
	}
	bytes, samples = 0, 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		run()
	}
	b.StopTimer()
	b.SetBytes(bytes / int64(b.N))
	b.ReportMetric(float64(samples)/b.Elapsed().Seconds(), "samples/s")
}

func newClockedGateway(b testing.TB, yml string, clock *testClock) *Gateway {
	cfg, err := config.Parse([]byte(yml))
	if err != nil {
		b.Fatal(err)
	}
	g, err := New(cfg, Options{
		Now: clock.Now,
		NewSender: func(config.DownstreamConfig, prometheus.Registerer, *slog.Logger) (Sender, error) {
			return &countingSender{}, nil
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	return g
}

func discardDelivery(context.Context, *wire.Request, func(int, string, error)) error { return nil }

// BenchmarkRequestPath is everything Cardinal does with one compressed
// 2000-series mesh request in production shape (fullConfig), except HTTP:
// snappy decode, decode, sanitize, relabel, trace sampling, limiter,
// merge routing, encode and snappy encode of what is forwarded, on
// successive scrapes. BenchmarkRequestFloor is the unavoidable part of one
// such request; the ratio of the two is the gateway's cost over the codec
// floor.
func BenchmarkRequestPath(b *testing.B) {
	benchScrapes(b, fullConfig, meshgen.Config{Workloads: 24, PodsPerWorkload: 3, Churn: true, Seed: 7})
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
	setSender(g, sender)
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
