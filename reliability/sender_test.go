package reliability

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// senderConfig shapes a promSender. The defaults are Prometheus 2.42's
// queue, scaled down so that a test run is short.
type senderConfig struct {
	URL string
	// Shards send concurrently; each input series always goes through the
	// same shard, one request at a time, in step order.
	Shards int
	// BatchSeries is the most series (samples) of one request
	// (max_samples_per_send).
	BatchSeries int
	// Steps are sent every Interval, with data timestamps Interval apart.
	Steps    int
	Interval time.Duration
	// AttemptTimeout bounds one POST (remote_timeout).
	AttemptTimeout time.Duration
	// MinBackoff doubles per retry up to MaxBackoff; a Retry-After, capped
	// at MaxRetryAfter, replaces it.
	MinBackoff, MaxBackoff, MaxRetryAfter time.Duration
	// MaxAttempts and RequestDeadline bound the retries of one request:
	// Prometheus retries a recoverable error forever, this sender gives up
	// (and records it) so that every run ends.
	MaxAttempts     int
	RequestDeadline time.Duration
	// Deadline bounds the whole run: requests not sent by then are
	// recorded as not sent.
	Deadline time.Duration
	// RetryOn429 is Prometheus' retry_on_http_429 (off by default: a 429
	// is dropped like any other 4xx).
	RetryOn429 bool
}

func (c *senderConfig) defaults() {
	if c.Shards == 0 {
		c.Shards = 4
	}
	if c.BatchSeries == 0 {
		c.BatchSeries = 500
	}
	if c.Interval == 0 {
		c.Interval = 250 * time.Millisecond
	}
	if c.AttemptTimeout == 0 {
		c.AttemptTimeout = 10 * time.Second
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 30 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = time.Second
	}
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = 5 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 12
	}
	if c.RequestDeadline == 0 {
		c.RequestDeadline = 20 * time.Second
	}
	if c.Deadline == 0 {
		c.Deadline = time.Duration(c.Steps)*c.Interval + 30*time.Second
	}
}

// outcome is what became of one request of the sender.
type outcome uint8

const (
	notSent outcome = iota // the run's deadline came first
	acked                  // answered 2xx
	dropped                // answered 4xx: Prometheus drops it
	gaveUp                 // retries exhausted (Prometheus would go on)
)

func (o outcome) String() string {
	return [...]string{"not sent", "acknowledged", "dropped (4xx)", "gave up"}[o]
}

// sentRequest is one remote-write request of the sender and its fate.
type sentRequest struct {
	step    int
	inputs  []int
	outcome outcome
	// absorbed: some attempt reached Cardinal's pipeline (any answer but a
	// shed 503 or a protocol error), so its merged samples are absorbed
	// whatever the answer was.
	absorbed bool
	attempts int
	// last is the last status Cardinal answered (0: transport error).
	last     int
	lastBody string
	latency  time.Duration // first attempt to final answer
}

// promSender sends meshTraffic like a Prometheus 2.42 remote-write queue:
// sharded by series, one request per shard at a time, 5xx and transport
// errors retried with capped exponential backoff, Retry-After honoured,
// 4xx dropped. It records per request and per sample what it was told.
type promSender struct {
	cfg    senderConfig
	tr     *meshTraffic
	client *http.Client
	t0     int64 // data timestamp of step 0, ms

	mu         sync.Mutex
	requests   []*sentRequest
	statuses   map[string]int // every attempt's answer: "204", "503", "transport error"
	attemptLat []time.Duration
}

func newPromSender(cfg senderConfig, tr *meshTraffic) *promSender {
	cfg.defaults()
	return &promSender{
		cfg: cfg,
		tr:  tr,
		client: &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: cfg.Shards,
			DisableCompression:  true,
		}},
		statuses: map[string]int{},
	}
}

// ts is the data timestamp of step.
func (s *promSender) ts(step int) int64 { return s.t0 + int64(step)*s.cfg.Interval.Milliseconds() }

// run sends every step and returns when all shards are done or the
// deadline passed.
func (s *promSender) run(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Deadline)
	defer cancel()
	defer s.client.CloseIdleConnections()
	start := time.Now()
	s.t0 = start.UnixMilli()

	// The batches of each shard, step by step.
	byShard := make([][]int, s.cfg.Shards)
	for i := range s.tr.inputs {
		sh := s.tr.inputs[i].shard
		byShard[sh] = append(byShard[sh], i)
	}
	queues := make([]chan *sentRequest, s.cfg.Shards)
	for sh := range queues {
		n := (len(byShard[sh]) + s.cfg.BatchSeries - 1) / s.cfg.BatchSeries
		queues[sh] = make(chan *sentRequest, s.cfg.Steps*n)
	}
	var wg sync.WaitGroup
	for sh := range queues {
		wg.Go(func() {
			var buf []byte
			for r := range queues[sh] {
				if ctx.Err() != nil {
					continue // recorded as not sent
				}
				buf = s.send(ctx, r, buf)
			}
		})
	}
	// The scraper: one step per interval, queued to every shard.
	for step := range s.cfg.Steps {
		if d := time.Until(start.Add(time.Duration(step) * s.cfg.Interval)); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		for sh, idx := range byShard {
			for len(idx) > 0 {
				n := min(len(idx), s.cfg.BatchSeries)
				r := &sentRequest{step: step, inputs: idx[:n:n]}
				idx = idx[n:]
				s.mu.Lock()
				s.requests = append(s.requests, r)
				s.mu.Unlock()
				queues[sh] <- r
			}
		}
	}
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
}

// encode builds the snappy-compressed body of r.
func (s *promSender) encode(r *sentRequest, buf []byte) ([]byte, []byte) {
	req := prompb.WriteRequest{Timeseries: make([]prompb.TimeSeries, len(r.inputs))}
	ts := s.ts(r.step)
	for k, i := range r.inputs {
		req.Timeseries[k] = prompb.TimeSeries{
			Labels:  s.tr.inputs[i].labels,
			Samples: []prompb.Sample{{Value: s.tr.values[r.step][i], Timestamp: ts}},
		}
	}
	n := req.Size()
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	m, _ := req.MarshalToSizedBuffer(buf[:n])
	return snappy.Encode(nil, buf[:m]), buf
}

// send delivers r with Prometheus' retry policy and records the outcome.
func (s *promSender) send(ctx context.Context, r *sentRequest, buf []byte) []byte {
	body, buf := s.encode(r, buf)
	start := time.Now()
	backoff := s.cfg.MinBackoff
	var out outcome
	for {
		t0 := time.Now()
		code, retryAfter, msg, err := s.post(ctx, body)
		lat := time.Since(t0)
		if ctx.Err() != nil && err != nil {
			break // the run ended during the attempt: not sent
		}
		r.attempts++
		r.last, r.lastBody = code, msg
		s.mu.Lock()
		s.attemptLat = append(s.attemptLat, lat)
		if err != nil {
			s.statuses["transport error"]++
		} else if retryAfter > 0 {
			s.statuses[strconv.Itoa(code)+" Retry-After"]++
		} else {
			s.statuses[strconv.Itoa(code)]++
		}
		s.mu.Unlock()
		if err == nil && code != http.StatusRequestEntityTooLarge && code != http.StatusUnsupportedMediaType &&
			!(code == http.StatusServiceUnavailable && strings.HasPrefix(msg, "overloaded")) {
			r.absorbed = true
		}
		var recoverable bool
		switch {
		case err != nil:
			recoverable = true
		case code/100 == 2:
			out = acked
		case code/100 == 5, code == http.StatusTooManyRequests && s.cfg.RetryOn429:
			recoverable = true
		default:
			out = dropped
		}
		if !recoverable {
			break
		}
		wait := backoff
		if retryAfter > 0 {
			wait = min(retryAfter, s.cfg.MaxRetryAfter)
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
		if r.attempts >= s.cfg.MaxAttempts || time.Since(start)+wait > s.cfg.RequestDeadline {
			out = gaveUp
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		if ctx.Err() != nil {
			out = gaveUp
			break
		}
	}
	r.latency = time.Since(start)
	s.mu.Lock()
	r.outcome = out
	s.mu.Unlock()
	return buf
}

// post sends one attempt and returns the status, the Retry-After the answer
// asked for and the start of its body.
func (s *promSender) post(ctx context.Context, body []byte) (int, time.Duration, string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, "", err
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	req.Header.Set("User-Agent", "Prometheus/2.42.0")
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, 0, "", err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After")), string(msg), nil
}

// parseRetryAfter reads delta-seconds or an HTTP date, as Prometheus'
// retryAfterDuration does; 0 when absent or malformed.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}

// senderReport summarizes what the sender was told.
type senderReport struct {
	Requests, Attempts int
	ByOutcome          map[outcome]int
	Statuses           map[string]int
	// Samples of acknowledged requests, of inputs of pass-through and of
	// merged outputs.
	AckedPass, AckedMerged int
	// AckedPassRequests counts acknowledged requests that carried a
	// pass-through series (the others carried merged series only).
	AckedPassRequests int
	SentSamples       int // samples in requests that were sent at least once
	P50, P99          time.Duration
	Transport         int // attempts without an answer
	// lastAbsorbed[i] and lastAcked[i] are the last step of input i that
	// reached the pipeline, and that was acknowledged (-1: none).
	lastAbsorbed, lastAcked []int
	// ackedAt[i] holds the acknowledged steps of input i.
	ackedAt []map[int]bool
	// firstDropped is the answer of one dropped request.
	firstDropped string
	// Slowest describes the request that took longest.
	Slowest           string
	MaxAttemptLatency time.Duration
}

func (s *promSender) report() senderReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.tr.inputs)
	rep := senderReport{
		ByOutcome:    map[outcome]int{},
		Statuses:     map[string]int{},
		lastAbsorbed: slices.Repeat([]int{-1}, n),
		lastAcked:    slices.Repeat([]int{-1}, n),
		ackedAt:      make([]map[int]bool, n),
	}
	for k, v := range s.statuses {
		rep.Statuses[k] = v
		rep.Attempts += v
	}
	rep.Transport = s.statuses["transport error"]
	var slowest *sentRequest
	for _, r := range s.requests {
		if slowest == nil || r.latency > slowest.latency {
			slowest = r
		}
		rep.Requests++
		rep.ByOutcome[r.outcome]++
		if r.attempts > 0 {
			rep.SentSamples += len(r.inputs)
		}
		if r.outcome == acked && slices.ContainsFunc(r.inputs, func(i int) bool { return !s.tr.inputs[i].out.merged }) {
			rep.AckedPassRequests++
		}
		if r.outcome == dropped && rep.firstDropped == "" {
			rep.firstDropped = strconv.Itoa(r.last) + " " + strings.TrimSpace(r.lastBody)
		}
		for _, i := range r.inputs {
			if r.absorbed {
				rep.lastAbsorbed[i] = max(rep.lastAbsorbed[i], r.step)
			}
			if r.outcome != acked {
				continue
			}
			rep.lastAcked[i] = max(rep.lastAcked[i], r.step)
			if rep.ackedAt[i] == nil {
				rep.ackedAt[i] = map[int]bool{}
			}
			rep.ackedAt[i][r.step] = true
			if s.tr.inputs[i].out.merged {
				rep.AckedMerged++
			} else {
				rep.AckedPass++
			}
		}
	}
	lat := slices.Clone(s.attemptLat)
	slices.Sort(lat)
	rep.P50, rep.P99 = percentile(lat, 0.5), percentile(lat, 0.99)
	if len(lat) > 0 {
		rep.MaxAttemptLatency = lat[len(lat)-1]
	}
	if slowest != nil {
		rep.Slowest = fmt.Sprintf("step %d, %d series: %s after %d attempts in %s (last answer %d %s)", slowest.step, len(slowest.inputs),
			slowest.outcome, slowest.attempts, slowest.latency.Round(time.Millisecond), slowest.last, strings.TrimSpace(slowest.lastBody))
	}
	return rep
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
