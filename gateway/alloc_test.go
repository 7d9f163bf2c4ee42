package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/config"
	"github.com/cardinal-gateway/cardinal/internal/rw2conv"
	"github.com/cardinal-gateway/cardinal/wire"
)

// scrapeTraffic is the traffic the product is for, scrape after scrape: the
// mesh generator's series with fresh request ids and trace ids every step
// (Churn), plus native histograms of every pod, which the allowlist
// collapses and the merger adds. Each step is a set of compressed requests
// with timestamps one scrape interval apart.
type scrapeTraffic struct {
	gen      *meshgen.Generator
	interval time.Duration
	start    int64
	perReq   int
}

func newScrapeTraffic(churn bool) *scrapeTraffic {
	return &scrapeTraffic{
		gen:      meshgen.New(meshgen.Config{Workloads: 12, PodsPerWorkload: 1, Churn: churn, Seed: 3}),
		interval: 15 * time.Second,
		start:    1_700_000_000_000,
		perReq:   2000,
	}
}

// step returns the compressed requests of one scrape.
func (st *scrapeTraffic) step(t testing.TB, step int) [][]byte {
	t.Helper()
	ts := st.start + int64(step)*st.interval.Milliseconds()
	reqs := st.gen.WriteRequests(step, ts, st.perReq)
	// Native histograms: one per pod of every workload, exponential
	// buckets growing every scrape.
	var native []prompb.TimeSeries
	for w := range 12 {
		for pod := range 3 {
			h := &histogram.Histogram{
				Schema: 3, Count: uint64(10*step + pod + 3), Sum: float64(step) * 1.5,
				ZeroThreshold: 1e-128, ZeroCount: 1,
				PositiveSpans:   []histogram.Span{{Offset: 0, Length: 2}},
				PositiveBuckets: []int64{int64(5*step + 1), int64(5*step + pod + 1 - (5*step + 1))},
			}
			h.Count = h.ZeroCount + uint64(5*step+1) + uint64(5*step+pod+1)
			native = append(native, prompb.TimeSeries{
				Labels: []prompb.Label{
					{Name: "__name__", Value: "rpc_server_duration_seconds"},
					{Name: "app", Value: fmt.Sprintf("native-%d", w)},
					{Name: "namespace", Value: "bookinfo"},
					{Name: "pod", Value: fmt.Sprintf("native-%d-%d", w, pod)},
				},
				Histograms: []prompb.Histogram{prompb.FromIntHistogram(ts, h)},
			})
		}
	}
	reqs[len(reqs)-1].Timeseries = append(reqs[len(reqs)-1].Timeseries, native...)
	out := make([][]byte, len(reqs))
	for i, r := range reqs {
		raw, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = snappy.Encode(nil, raw)
	}
	return out
}

// testClock is a settable clock for the gateway.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// allocRun drives a gateway with scrapeTraffic and counts, per request, the
// heap allocations of Process alone (the flush between scrapes runs outside
// the count) and the inputs it had never seen.
type allocRun struct {
	g       *Gateway
	clock   *testClock
	sender  *countingSender
	traffic *scrapeTraffic
	seen    map[uint64]bool
	reg     *prometheus.Registry
	req     wire.Request
	raw     []byte
	hashBuf []byte
}

func newAllocRun(t testing.TB, yml string, churn bool) *allocRun {
	t.Helper()
	cfg, err := config.Parse([]byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	clock := &testClock{t: time.UnixMilli(1_700_000_000_000)}
	sender := &countingSender{}
	reg := prometheus.NewRegistry()
	g, err := New(cfg, Options{
		Now:        clock.Now,
		Registerer: reg,
		NewSender: func(config.DownstreamConfig, prometheus.Registerer, *slog.Logger) (Sender, error) {
			return sender, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &allocRun{g: g, clock: clock, sender: sender, traffic: newScrapeTraffic(churn), seen: map[uint64]bool{}, reg: reg}
}

// scrape sends one scrape's requests and flushes the merger; it returns the
// allocations of each request's Process and the new inputs it carried.
func (a *allocRun) scrape(t testing.TB, step int) (allocs, newInputs []uint64, res Result) {
	t.Helper()
	for _, body := range a.traffic.step(t, step) {
		var err error
		if a.raw, err = snappy.Decode(a.raw[:cap(a.raw)], body); err != nil {
			t.Fatal(err)
		}
		if rw2conv.Testing() {
			// Converted before the count: the gateway sees 2.0.
			if a.raw, err = rw2conv.MarshalV1AsV2(a.raw); err != nil {
				t.Fatal(err)
			}
			err = a.req.UnmarshalV2(a.raw)
		} else {
			// As ingest decodes for the gateway.
			a.req.SetDeferLabels(a.g.DeferLabels())
			a.req.SetGuessLabels(a.g.GuessLabels())
			err = a.req.Unmarshal(a.raw)
		}
		if err != nil {
			t.Fatal(err)
		}
		// As ingest does: a request that loses series but changes none
		// goes downstream cut from its body (cutOriginal).
		a.req.Original = body
		fresh := uint64(0)
		for i := range a.req.Series {
			var in uint64
			in, a.hashBuf = a.req.Series[i].InputHash(a.hashBuf)
			if !a.seen[in] {
				a.seen[in] = true
				fresh++
			}
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r, err := a.g.Process(context.Background(), &a.req)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		allocs = append(allocs, after.Mallocs-before.Mallocs)
		newInputs = append(newInputs, fresh)
		res.Forwarded += r.Forwarded
		res.Merged += r.Merged
		res.Folded += r.Folded
	}
	a.clock.Add(a.traffic.interval)
	a.g.merger.Flush(context.Background(), func(_ context.Context, req *wire.Request, _ func(int, string, error)) error {
		a.sender.bytes += req.Size()
		return nil
	}, false)
	return allocs, newInputs, res
}

// allocBudgetPerNewInput is what a series never seen before may cost: its
// input state in the merger and its route cache entry (map growth is
// amortised over many inputs).
const allocBudgetPerNewInput = 2

// dropConfig drops Envoy's server metrics and passes the rest as they
// are: the requests that lose series but change none, which go downstream
// cut from the body they came in.
const dropConfig = `
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
relabel_configs:
  - {source_labels: [__name__], regex: "envoy_server_.*", action: drop}
limits:
  workload_labels: [namespace, app]
  max_series_per_workload: 1000000
`

// TestCutRequestsAllocateNothing: the requests forwarded cut from their
// body (cutOriginal) allocate nothing in steady state either.
func TestCutRequestsAllocateNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	if rw2conv.Testing() {
		t.Skip("only remote write 1.0 bodies are cut")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	a := newAllocRun(t, dropConfig, false)
	// Several requests a scrape: the last carries the native histograms,
	// which no body is forwarded as it came with.
	a.traffic.perReq = 300
	const warmup, steps = 3, 8
	for step := range steps {
		if step == warmup-1 {
			runtime.GC()
		}
		allocs, _, _ := a.scrape(t, step)
		if step < warmup {
			continue
		}
		for i, n := range allocs {
			if n != 0 {
				t.Errorf("scrape %d request %d: %d allocations", step, i, n)
			}
		}
	}
	if n := metricValue(t, a.reg, "cardinal_forward_cut_requests_total", ""); n < steps-warmup {
		t.Fatalf("cardinal_forward_cut_requests_total = %v after %d scrapes: the proof proves nothing", n, steps)
	}
}

// TestSuccessiveScrapesAllocate is issue 10's proof that the request path
// allocates nothing in steady state, on the traffic Cardinal exists for:
// successive scrapes, the request ids and trace ids changing every scrape,
// merged outputs absorbing new samples, exemplars made from trace ids and
// native histograms added by the merger, with every stage on (fullConfig:
// allowlist, trace sampling, workload caps, merging). The merger flushes
// between scrapes, outside the count. Budget: requests without series never
// seen before allocate nothing; new inputs (every scrape brings fresh
// request ids) cost at most allocBudgetPerNewInput allocations each,
// amortised over the run. Outside the proof, and allocating per request:
// the net/http server and client.
func TestSuccessiveScrapesAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	// A collection empties sync.Pools (regexp keeps its matchers in one),
	// and refilling them is not the request path's doing: collect before,
	// not during, the measurement.
	// sync.Pool keeps one cache per P (regexp keeps its matchers in one);
	// a goroutine that moves to another P finds it empty. One P makes the
	// count deterministic; the refills it avoids are amortised, not
	// per-request work.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for _, churn := range []bool{false, true} {
		t.Run(fmt.Sprintf("churn=%v", churn), func(t *testing.T) {
			a := newAllocRun(t, fullConfig, churn)
			const warmup, steps = 4, 12
			var total, fresh uint64
			var res Result
			for step := range steps {
				if step == warmup-1 {
					runtime.GC()
				}
				allocs, newInputs, r := a.scrape(t, step)
				if step < warmup {
					continue
				}
				res.Merged += r.Merged
				res.Forwarded += r.Forwarded
				for i := range allocs {
					total += allocs[i]
					fresh += newInputs[i]
					if newInputs[i] == 0 && allocs[i] != 0 {
						t.Errorf("scrape %d request %d: %d allocations without any new input", step, i, allocs[i])
					}
				}
			}
			if !churn && fresh != 0 {
				t.Fatalf("%d new inputs without churn", fresh)
			}
			if churn && fresh == 0 {
				t.Fatal("churn brought no new inputs: the proof proves nothing")
			}
			if total > allocBudgetPerNewInput*fresh {
				t.Errorf("%d allocations for %d new inputs: %.2f per new input, budget %d", total, fresh, float64(total)/float64(fresh), allocBudgetPerNewInput)
			}
			if res.Merged == 0 || res.Forwarded == 0 || a.sender.bytes == 0 {
				t.Fatalf("the traffic must exercise pass-through and merging: %+v, %d bytes", res, a.sender.bytes)
			}
			t.Logf("churn=%v: %d allocations for %d new inputs over %d scrapes (%d samples merged, %d forwarded)",
				churn, total, fresh, steps-warmup, res.Merged, res.Forwarded)
		})
	}
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}
