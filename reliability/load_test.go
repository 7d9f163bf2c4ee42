package reliability

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/bench/load"
	"github.com/cardinal-gateway/cardinal/bench/meshgen"
)

// workload is pre-encoded traffic: Bodies[step][i] is request i of step,
// snappy(prompb). Series are assigned to requests by the hash of their
// labels, as Prometheus assigns them to shards, so every request mixes
// pass-through and merged series and request i carries the same series at
// every step.
type workload struct {
	Bodies  [][][]byte
	Samples []int // samples (series) in request i
	Series  int
	Bytes   int64
}

// RequestsPerStep is the number of requests of one step.
func (w *workload) RequestsPerStep() int { return len(w.Samples) }

// newWorkload generates steps of cfg, 15s of data time apart and ending
// now, in requests of about seriesPerRequest series.
func newWorkload(t testing.TB, cfg meshgen.Config, steps, seriesPerRequest int) *workload {
	t.Helper()
	gen := meshgen.New(cfg)
	n := gen.NumSeries()
	reqs := (n + seriesPerRequest - 1) / seriesPerRequest
	w := &workload{Series: n, Samples: make([]int, reqs)}
	base := time.Now().Add(-time.Duration(steps) * 15 * time.Second).UnixMilli()
	var assign []int
	var raw []byte
	for step := range steps {
		series := gen.Series(step, base+int64(step)*15000)
		if assign == nil {
			assign = make([]int, len(series))
			for i := range series {
				assign[i] = int(fnvLabels(series[i].Labels) % uint64(reqs))
				w.Samples[assign[i]]++
			}
		}
		parts := make([][]prompb.TimeSeries, reqs)
		for i := range series {
			parts[assign[i]] = append(parts[assign[i]], series[i])
		}
		bodies := make([][]byte, reqs)
		for i, p := range parts {
			req := prompb.WriteRequest{Timeseries: p}
			size := req.Size()
			if cap(raw) < size {
				raw = make([]byte, size)
			}
			m, err := req.MarshalToSizedBuffer(raw[:size])
			if err != nil {
				t.Fatal(err)
			}
			bodies[i] = snappy.Encode(nil, raw[:m])
			w.Bytes += int64(len(bodies[i]))
		}
		w.Bodies = append(w.Bodies, bodies)
	}
	return w
}

// fnvLabels hashes a label set (FNV-1a, 0xff separators).
func fnvLabels(ls []prompb.Label) uint64 {
	h := uint64(14695981039346656037)
	for _, l := range ls {
		for _, s := range []string{l.Name, l.Value} {
			for i := 0; i < len(s); i++ {
				h = (h ^ uint64(s[i])) * 1099511628211
			}
			h = (h ^ 0xff) * 1099511628211
		}
	}
	return h
}

// sink is a downstream that reads every request and answers 204 after a
// fixed delay, counting what it got.
type sink struct {
	srv      *httptest.Server
	delay    time.Duration
	requests atomic.Int64
	bytes    atomic.Int64
}

func newSink(t testing.TB, delay time.Duration) *sink {
	s := &sink{delay: delay}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, 64<<20))
		s.bytes.Add(n)
		if n > 1 {
			s.requests.Add(1)
			select {
			case <-time.After(s.delay):
			case <-r.Context().Done():
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sink) URL() string { return s.srv.URL + "/api/v1/write" }

// resourceSampler samples a process' resident memory and its /metrics
// (goroutines, requests in flight) every interval.
type resourceSampler struct {
	c        *cardinalProc
	mu       sync.Mutex
	maxRSS   int64
	hwm      int64
	maxGor   float64
	maxInfl  float64
	maxHeap  float64 // go_memstats_heap_inuse_bytes
	maxBytes float64 // cardinal_inflight_bytes
	samples  int
	failures int
}

// sample runs until ctx ends.
func (r *resourceSampler) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		r.once()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *resourceSampler) once() {
	mem, err := load.ProcMemory(r.c.pid())
	m, merr := r.c.metrics()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples++
	if err != nil {
		r.failures++
		return
	}
	r.maxRSS, r.hwm = max(r.maxRSS, mem.RSS), max(r.hwm, mem.Peak)
	if merr == nil {
		r.maxGor = max(r.maxGor, m.value("go_goroutines", "", ""))
		r.maxInfl = max(r.maxInfl, m.value("cardinal_inflight_requests", "", ""))
		r.maxHeap = max(r.maxHeap, m.value("go_memstats_heap_inuse_bytes", "", ""))
		r.maxBytes = max(r.maxBytes, m.value("cardinal_inflight_bytes", "", ""))
	}
}

// resources are the maxima a resourceSampler saw in one phase.
type resources struct {
	maxRSS, hwm                           int64
	goroutines, inflight, heap, heldBytes float64
}

// reset starts a new phase: the maxima start again (VmHWM cannot).
func (r *resourceSampler) reset() resources {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := resources{maxRSS: r.maxRSS, hwm: r.hwm, goroutines: r.maxGor, inflight: r.maxInfl, heap: r.maxHeap, heldBytes: r.maxBytes}
	r.maxRSS, r.maxGor, r.maxInfl, r.maxHeap, r.maxBytes = 0, 0, 0, 0, 0
	return res
}

// loadStats is what a load phase's senders saw.
type loadStats struct {
	mu        sync.Mutex
	statuses  map[string]int
	accepted  []time.Duration // latency of 2xx answers
	shedLat   []time.Duration // latency of 503 answers
	samples   int64           // samples in 2xx answers
	notSent   int             // open loop: over the client's own concurrency cap
	start     time.Time
	elapsed   time.Duration
	firstShed string
	shedWhy   map[string]int
}

func newLoadStats() *loadStats {
	return &loadStats{statuses: map[string]int{}, shedWhy: map[string]int{}, start: time.Now()}
}

func (s *loadStats) record(code int, err error, lat time.Duration, samples int, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil:
		s.statuses["transport error"]++
	case code/100 == 2:
		s.statuses[strconv.Itoa(code)]++
		s.accepted = append(s.accepted, lat)
		s.samples += int64(samples)
	default:
		s.statuses[strconv.Itoa(code)]++
		if code == http.StatusServiceUnavailable {
			s.shedLat = append(s.shedLat, lat)
			if s.firstShed == "" {
				s.firstShed = strings.TrimSpace(msg)
			}
			// Why: Cardinal's overload messages name the bound.
			switch {
			case strings.Contains(msg, "too many requests"):
				s.shedWhy["requests in flight"]++
			case strings.Contains(msg, "too many bytes"):
				s.shedWhy["bytes in flight"]++
			case strings.Contains(msg, "memory near its limit"):
				s.shedWhy["heap"]++
			default:
				s.shedWhy["other"]++
			}
		}
	}
}

func (s *loadStats) done() { s.elapsed = time.Since(s.start) }

// total is the number of answered requests.
func (s *loadStats) total() int {
	n := 0
	for _, v := range s.statuses {
		n += v
	}
	return n
}

func (s *loadStats) acceptedPerSec() float64 { return float64(len(s.accepted)) / s.elapsed.Seconds() }

func (s *loadStats) percentiles() (p50, p99 time.Duration) {
	lat := slices.Clone(s.accepted)
	slices.Sort(lat)
	return percentile(lat, 0.5), percentile(lat, 0.99)
}

// shedFraction is the share of answers that were 503.
func (s *loadStats) shedFraction() float64 {
	if s.total() == 0 {
		return 0
	}
	return float64(s.statuses["503"]) / float64(s.total())
}

// post sends one remote-write body and returns the status, the
// Retry-After asked for and the start of the answer's body.
func post(ctx context.Context, client *http.Client, url string, body []byte) (int, time.Duration, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, 0, "", err
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, "", err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After")), string(msg), nil
}

func newLoadClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: conns,
			MaxIdleConns:        conns,
			DisableCompression:  true,
		},
	}
}

// closedLoop runs senders closed-loop senders for d: each sends its next
// body as soon as the last was answered, or after the Retry-After of a
// 503 (capped at maxWait), as a Prometheus shard does. Sender k owns the
// request indexes k, k+senders, ... of w and sends them step after step,
// wrapping around after the last step.
func closedLoop(ctx context.Context, url string, w *workload, senders int, d, maxWait time.Duration) *loadStats {
	st := newLoadStats()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	client := newLoadClient(senders)
	defer client.CloseIdleConnections()
	perStep := w.RequestsPerStep()
	var wg sync.WaitGroup
	for k := range senders {
		var own []int
		for idx := k; idx < perStep; idx += senders {
			own = append(own, idx)
		}
		if len(own) == 0 {
			own = []int{k % perStep}
		}
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				idx, step := own[n%len(own)], (n/len(own))%len(w.Bodies)
				t0 := time.Now()
				code, ra, msg, err := post(ctx, client, url, w.Bodies[step][idx])
				if ctx.Err() != nil {
					return // cut by the phase's end
				}
				st.record(code, err, time.Since(t0), w.Samples[idx], msg)
				if ra > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(min(ra, maxWait)):
					}
				}
			}
		})
	}
	wg.Wait()
	st.done()
	return st
}

// openLoop sends at rate requests per second for d, whatever the answers,
// with at most maxInFlight requests outstanding (more are counted as not
// sent). Bodies are taken from w in order, step after step.
func openLoop(ctx context.Context, url string, w *workload, rate float64, d time.Duration, maxInFlight int) *loadStats {
	st := newLoadStats()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	client := newLoadClient(maxInFlight)
	defer client.CloseIdleConnections()
	perStep := w.RequestsPerStep()
	interval := time.Duration(float64(time.Second) / rate)
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	next := time.Now()
	for n := 0; ; n++ {
		if dl := time.Until(next); dl > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(dl):
			}
		}
		if ctx.Err() != nil {
			break
		}
		next = next.Add(interval)
		select {
		case sem <- struct{}{}:
		default:
			st.mu.Lock()
			st.notSent++
			st.mu.Unlock()
			continue
		}
		step, idx := (n/perStep)%len(w.Bodies), n%perStep
		wg.Go(func() {
			defer func() { <-sem }()
			t0 := time.Now()
			// Each request has its own bound: the phase's end must not
			// cut the ones in flight into fake failures.
			rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer rcancel()
			code, _, msg, err := post(rctx, client, url, w.Bodies[step][idx])
			st.record(code, err, time.Since(t0), w.Samples[idx], msg)
		})
	}
	wg.Wait()
	st.done()
	return st
}

// mib formats bytes as MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

func sortDurations(d []time.Duration) { slices.Sort(d) }
