package reliability

import (
	"cmp"
	"fmt"
	"io"
	"math"
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
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
)

// actionKind is what the fault downstream does with one request.
type actionKind uint8

const (
	// actStore stores the samples (as a Prometheus 2.42 receiver does,
	// refusing the whole request with 400 for an out-of-order sample or a
	// different value at a stored timestamp) and answers 204.
	actStore actionKind = iota
	// actStatus answers status (with Retry-After and a message) and stores
	// nothing.
	actStatus
	// actResetBefore resets the connection without storing anything.
	actResetBefore
	// actResetAfter stores, then resets the connection: the answer is lost.
	actResetAfter
	// actHang stores nothing and answers nothing until the client gives up
	// (or hangMax passes, then 503).
	actHang
	// actHangAfterStore stores, then hangs: the data is in, the answer is
	// late.
	actHangAfterStore
	// actSlowBody stores and answers 200 with a 64-byte body trickled one
	// byte per 100ms.
	actSlowBody
)

func (k actionKind) String() string {
	return [...]string{"store", "status", "reset before storing", "reset after storing", "hang", "hang after storing", "slow body"}[k]
}

// action is one entry of a fault schedule.
type action struct {
	kind   actionKind
	status int
	// retryAfter returns the Retry-After header value (nil: none); it is
	// called when the answer is written, so an HTTP date can be relative
	// to then.
	retryAfter func() string
	msg        string
}

// schedule decides what the downstream does with the nth request (1, 2,
// ...) that arrives while faults are on; req is the decoded request.
type schedule func(n int, req *prompb.WriteRequest) action

// hangMax bounds a hang when the client does not give up.
const hangMax = 10 * time.Second

// faultDownstream is a remote-write receiver on 127.0.0.1 that stores what
// it accepts like a Prometheus 2.42 TSDB and injects faults from a
// schedule. Until faults are switched on it behaves (Cardinal's readiness
// probe must pass); empty requests are always answered 204 and not
// counted.
type faultDownstream struct {
	srv   *httptest.Server
	sched atomic.Pointer[schedule]
	seq   atomic.Int64

	mu       sync.Mutex
	series   map[string]*storedSeries
	samples  int            // distinct (series, timestamp) stored
	dups     int            // identical samples received again (accepted, not stored twice)
	answers  map[string]int // what the downstream did, by kind or status
	tsdbErrs map[string]int // requests refused as a TSDB would: "out of order", "duplicate"
	requests int
	// refused records every (series, timestamp) the downstream refused,
	// by fault or by TSDB rule, so that a test can tell a refusal it
	// injected from a loss.
	refused map[string][]int64
}

// storedSeries is one series the downstream holds.
type storedSeries struct {
	samples map[int64]float64
	maxTs   int64
	last    float64
}

func newFaultDownstream(t testing.TB) *faultDownstream {
	d := &faultDownstream{
		series:   map[string]*storedSeries{},
		answers:  map[string]int{},
		tsdbErrs: map[string]int{},
		refused:  map[string][]int64{},
	}
	d.srv = httptest.NewServer(d)
	t.Cleanup(d.srv.Close)
	return d
}

// URL is the write endpoint.
func (d *faultDownstream) URL() string { return d.srv.URL + "/api/v1/write" }

// setSchedule switches faults on (nil: off). Requests are numbered from 1
// again.
func (d *faultDownstream) setSchedule(s schedule) {
	d.seq.Store(0)
	if s == nil {
		d.sched.Store(nil)
		return
	}
	d.sched.Store(&s)
}

func (d *faultDownstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		d.note("body read error")
		return
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		d.note("400 corrupt")
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		d.note("400 corrupt")
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if len(req.Timeseries) == 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	act := action{kind: actStore}
	if s := d.sched.Load(); s != nil {
		act = (*s)(int(d.seq.Add(1)), &req)
	}
	d.mu.Lock()
	d.requests++
	d.mu.Unlock()
	switch act.kind {
	case actStatus:
		d.note(strconv.Itoa(act.status))
		if act.status/100 == 4 && act.status != http.StatusTooManyRequests {
			d.refuse(&req)
		}
		if act.retryAfter != nil {
			w.Header().Set("Retry-After", act.retryAfter())
		}
		http.Error(w, act.msg, act.status)
		return
	case actResetBefore:
		d.note("reset before storing")
		reset(w)
		return
	case actHang:
		d.note("hang")
		hang(w, r)
		return
	}
	if reason := d.store(&req); reason != "" {
		// What Prometheus 2.42 answers: the whole request is rolled back.
		d.note("400 " + reason)
		http.Error(w, reason+" sample", http.StatusBadRequest)
		return
	}
	switch act.kind {
	case actResetAfter:
		d.note("reset after storing")
		reset(w)
	case actHangAfterStore:
		d.note("hang after storing")
		hang(w, r)
	case actSlowBody:
		d.note("200 slow body")
		slowBody(w)
	default:
		d.note("204")
		w.WriteHeader(http.StatusNoContent)
	}
}

func (d *faultDownstream) note(what string) {
	d.mu.Lock()
	d.answers[what]++
	d.mu.Unlock()
}

// refuse records the samples of a request the schedule refused.
func (d *faultDownstream) refuse(req *prompb.WriteRequest) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range req.Timeseries {
		key := seriesKey(req.Timeseries[i].Labels)
		for _, s := range req.Timeseries[i].Samples {
			d.refused[key] = append(d.refused[key], s.Timestamp)
		}
	}
}

// store appends req as a Prometheus 2.42 head does, and returns "" or the
// reason it refused the whole request ("out of order", "duplicate"): a
// sample older than the series' newest, or at its newest timestamp with a
// different value. An identical sample at the newest timestamp is accepted
// and counted as a duplicate.
func (d *faultDownstream) store(req *prompb.WriteRequest) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	type pending struct {
		s   *storedSeries
		key string
		ts  int64
		v   float64
		dup bool
	}
	var add []pending
	maxTs := map[string]int64{} // within this request
	for i := range req.Timeseries {
		ts := &req.Timeseries[i]
		key := seriesKey(ts.Labels)
		s := d.series[key]
		for _, smp := range ts.Samples {
			newest, have := maxTs[key]
			if !have && s != nil {
				newest, have = s.maxTs, true
			}
			p := pending{s: s, key: key, ts: smp.Timestamp, v: smp.Value}
			switch {
			case !have || smp.Timestamp > newest:
			case smp.Timestamp == newest && s != nil && math.Float64bits(s.samples[smp.Timestamp]) == math.Float64bits(smp.Value):
				p.dup = true
			case smp.Timestamp == newest:
				d.tsdbErrs["duplicate"]++
				d.refuseLocked(req)
				return "duplicate"
			default:
				d.tsdbErrs["out of order"]++
				d.refuseLocked(req)
				return "out of order"
			}
			maxTs[key] = max(newest, smp.Timestamp)
			add = append(add, p)
		}
	}
	for _, p := range add {
		if p.dup {
			d.dups++
			continue
		}
		s := d.series[p.key]
		if s == nil {
			s = &storedSeries{samples: map[int64]float64{}, maxTs: math.MinInt64}
			d.series[p.key] = s
		}
		s.samples[p.ts] = p.v
		if p.ts > s.maxTs {
			s.maxTs, s.last = p.ts, p.v
		}
		d.samples++
	}
	return ""
}

func (d *faultDownstream) refuseLocked(req *prompb.WriteRequest) {
	for i := range req.Timeseries {
		key := seriesKey(req.Timeseries[i].Labels)
		for _, s := range req.Timeseries[i].Samples {
			d.refused[key] = append(d.refused[key], s.Timestamp)
		}
	}
}

// downstreamStats is a snapshot of what the downstream counted.
type downstreamStats struct {
	Requests, Samples, Duplicates int
	Answers, TSDBErrors           map[string]int
}

func (d *faultDownstream) stats() downstreamStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := downstreamStats{Requests: d.requests, Samples: d.samples, Duplicates: d.dups, Answers: map[string]int{}, TSDBErrors: map[string]int{}}
	for k, v := range d.answers {
		st.Answers[k] = v
	}
	for k, v := range d.tsdbErrs {
		st.TSDBErrors[k] = v
	}
	return st
}

// lookup returns a copy of a stored series' samples, sorted by timestamp.
func (d *faultDownstream) lookup(key string) []prompb.Sample {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.series[key]
	if s == nil {
		return nil
	}
	out := make([]prompb.Sample, 0, len(s.samples))
	for ts, v := range s.samples {
		out = append(out, prompb.Sample{Timestamp: ts, Value: v})
	}
	slices.SortFunc(out, func(a, b prompb.Sample) int { return cmp.Compare(a.Timestamp, b.Timestamp) })
	return out
}

// refusedAfter reports whether the downstream refused a sample of the
// series later than ts.
func (d *faultDownstream) refusedAfter(key string, ts int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.ContainsFunc(d.refused[key], func(r int64) bool { return r > ts })
}

// wasRefused reports whether the downstream refused the sample.
func (d *faultDownstream) wasRefused(key string, ts int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Contains(d.refused[key], ts)
}

// seriesKey is the canonical form of a label set, labels.Labels.String.
func seriesKey(ls []prompb.Label) string {
	var b labels.ScratchBuilder
	for _, l := range ls {
		b.Add(l.Name, l.Value)
	}
	b.Sort()
	return b.Labels().String()
}

// reset closes the connection with a TCP RST instead of answering.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "cannot hijack: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// hang waits for the client to give up, at most hangMax, then answers 503.
func hang(w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(hangMax):
		http.Error(w, "hung", http.StatusServiceUnavailable)
	}
}

// slowBody answers 200 with a body trickled one byte per 100ms, stopping
// when the client goes away.
func slowBody(w http.ResponseWriter) {
	const n = 64
	w.Header().Set("Content-Length", strconv.Itoa(n))
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	for range n {
		if _, err := w.Write([]byte{'.'}); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// retryAfterSeconds is a Retry-After in delta-seconds.
func retryAfterSeconds(s int) func() string {
	return func() string { return strconv.Itoa(s) }
}

// retryAfterDate is a Retry-After as an HTTP date d from now.
func retryAfterDate(d time.Duration) func() string {
	return func() string { return time.Now().Add(d).UTC().Format(http.TimeFormat) }
}

// hasSeries reports whether req carries a series matching pred.
func hasSeries(req *prompb.WriteRequest, pred func([]prompb.Label) bool) bool {
	return slices.ContainsFunc(req.Timeseries, func(ts prompb.TimeSeries) bool { return pred(ts.Labels) })
}

// labelIs returns a predicate: the label name has the value.
func labelIs(name, value string) func([]prompb.Label) bool {
	return func(ls []prompb.Label) bool {
		return slices.ContainsFunc(ls, func(l prompb.Label) bool { return l.Name == name && l.Value == value })
	}
}

// answersString renders a count map sorted by key: "204=12 503=3".
func answersString(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var sb strings.Builder
	for i, k := range keys {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%s: %d", k, m[k])
	}
	if sb.Len() == 0 {
		return "-"
	}
	return sb.String()
}
