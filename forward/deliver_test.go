package forward

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/cardinal-gateway/cardinal/wire"
)

// poisonAnswer is what the fake Prometheus answers for a series carrying the
// label poison=kind, and the Reason the answer must be classified as.
func poisonAnswer(kind string) (code int, msg, reason string) {
	switch kind {
	case "ooo":
		return 400, "out of order sample", ReasonOutOfOrder
	case "dup":
		return 400, "duplicate sample for timestamp 1700000000000; overrides not allowed: existing 1, new value 2", ReasonDuplicate
	case "oob":
		return 400, "out of bounds", ReasonOutOfBounds
	case "future":
		return 400, "out of bounds: timestamp is too far in the future", ReasonOutOfBounds
	case "old":
		return 400, "too old sample", ReasonOutOfBounds
	case "hist":
		return 400, "histogram's observation count should be at least the number of observations found in the buckets", ReasonInvalid
	case "thanos":
		return 409, "add 1 samples: out of order sample", ReasonOutOfOrder
	}
	panic("unknown poison " + kind)
}

var poisonKinds = []string{"ooo", "dup", "oob", "future", "old", "hist", "thanos"}

// downstream is a fake receiver with Prometheus' semantics: it decodes each
// body with gogo and rolls back the whole request (answering with the first
// bad series' error) when any series carries a poison label, or when its
// metadata names the family "poisoned". It records what it accepted, and
// every body it refused, to catch a refused body sent again.
type downstream struct {
	t *testing.T
	// maxBody, when positive, is the largest compressed body accepted;
	// bigger ones get Mimir's 413.
	maxBody int
	// failAt, when positive, is the 1-based request answered with failCode.
	failAt   int
	failCode int

	mu       sync.Mutex
	requests int
	accepted map[string]int // series id label -> times accepted
	metadata int            // metadata entries accepted
	refused  map[[32]byte]bool
	resent   int // refused bodies received again

	// speaksV2: 2.0 bodies are judged like 1.0 ones and answered with
	// Written headers. Otherwise they are answered 204 without them, or
	// 415 when refuseV2 is set, and counted in v2Bodies.
	speaksV2, refuseV2 bool
	v2Bodies           int
}

func newDownstream(t *testing.T) *downstream {
	return &downstream{t: t, accepted: map[string]int{}, refused: map[[32]byte]bool{}}
}

// answer judges one compressed 1.0 body; code 204 means accepted.
func (d *downstream) answer(body []byte) (code int, msg string) {
	return d.answerAs(body, false)
}

// answerAs judges one compressed body, 2.0 when v2 is set.
func (d *downstream) answerAs(body []byte, v2 bool) (code int, msg string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.requests++
	sum := sha256.Sum256(body)
	if d.refused[sum] {
		d.resent++
	}
	refuse := func(code int, msg string) (int, string) {
		d.refused[sum] = true
		return code, msg
	}
	if d.failAt > 0 && d.requests == d.failAt {
		return d.failCode, "stub failure"
	}
	if d.maxBody > 0 && len(body) > d.maxBody {
		return refuse(413, fmt.Sprintf("the incoming push request has been rejected because its message size of %d bytes is larger than the allowed limit of %d bytes (err-mimir-distributor-max-write-message-size).", len(body), d.maxBody))
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		return refuse(400, err.Error())
	}
	var req prompb.WriteRequest
	if v2 {
		var r2 writev2.Request
		if err := r2.Unmarshal(raw); err != nil {
			return refuse(400, err.Error())
		}
		for _, ts := range r2.Timeseries {
			var ls []prompb.Label
			for k := 0; k+1 < len(ts.LabelsRefs); k += 2 {
				ls = append(ls, prompb.Label{Name: r2.Symbols[ts.LabelsRefs[k]], Value: r2.Symbols[ts.LabelsRefs[k+1]]})
			}
			req.Timeseries = append(req.Timeseries, prompb.TimeSeries{Labels: ls})
		}
	} else if err := req.Unmarshal(raw); err != nil {
		return refuse(400, err.Error())
	}
	for _, ts := range req.Timeseries {
		for _, l := range ts.Labels {
			if l.Name == "poison" {
				code, msg, _ := poisonAnswer(l.Value)
				return refuse(code, msg)
			}
		}
	}
	for _, m := range req.Metadata {
		if m.MetricFamilyName == "poisoned" {
			return refuse(400, "invalid metadata")
		}
	}
	for _, ts := range req.Timeseries {
		for _, l := range ts.Labels {
			if l.Name == "id" {
				d.accepted[l.Value]++
			}
		}
	}
	d.metadata += len(req.Metadata)
	return 204, ""
}

func (d *downstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(599)
		return
	}
	v2 := strings.Contains(r.Header.Get("Content-Type"), "write.v2")
	if v2 && !d.speaksV2 {
		// What Prometheus 2.x and VictoriaMetrics do: a 2.0 body read as
		// an empty 1.0 one, or refused by its content type.
		d.mu.Lock()
		d.v2Bodies++
		d.mu.Unlock()
		if d.refuseV2 {
			http.Error(w, "unsupported proto", http.StatusUnsupportedMediaType)
		} else {
			w.WriteHeader(204)
		}
		return
	}
	code, msg := d.answerAs(body, v2)
	if v2 {
		w.Header().Set("X-Prometheus-Remote-Write-Samples-Written", "1")
	}
	if code == 204 {
		w.WriteHeader(code)
		return
	}
	http.Error(w, msg, code)
}

// Send makes d a BodySender in process, answering as Client would.
func (d *downstream) Send(_ context.Context, body []byte) error {
	code, msg := d.answer(body)
	switch {
	case code == 204:
		return nil
	case code == 400 || code == 409 || code == 413:
		return &Error{Status: 400, Code: code, Reason: classifyRejection(code, []byte(msg)), Msg: msg}
	case code == 503 || code == 429:
		return &Error{Status: 503, Code: code, Msg: msg}
	}
	return &Error{Status: 502, Code: code, Msg: msg}
}

// newDownstreamClient serves d over HTTP and returns a Client for it.
func newDownstreamClient(t *testing.T, d *downstream, opts Options) *Client {
	t.Helper()
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	opts.URL = srv.URL
	c, _ := newClient(t, opts)
	return c
}

// only poisons the series at the given indexes with kind.
func only(kind string, idx ...int) func(int) string {
	return func(i int) string {
		if slices.Contains(idx, i) {
			return kind
		}
		return ""
	}
}

func none(int) string { return "" }

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// spec describes one series of a test request.
type spec struct {
	id      string
	poison  string // poison kind, "" for a good series
	samples int    // float samples; 0 means 1
	hist    bool   // add a native histogram sample
	pad     string // an extra label value, to make the series big
}

// buildRequest encodes specs with gogo and decodes them into a wire.Request,
// as the gateway would receive them.
func buildRequest(t testing.TB, specs []spec, meta ...prompb.MetricMetadata) (*wire.Request, *prompb.WriteRequest) {
	t.Helper()
	pb := &prompb.WriteRequest{Metadata: meta}
	for _, s := range specs {
		ls := []prompb.Label{{Name: "__name__", Value: "istio_requests_total"}, {Name: "id", Value: s.id}}
		if s.pad != "" {
			ls = append(ls, prompb.Label{Name: "pad", Value: s.pad})
		}
		if s.poison != "" {
			ls = append(ls, prompb.Label{Name: "poison", Value: s.poison})
		}
		ts := prompb.TimeSeries{Labels: ls}
		// Samples depend on the spec only, so that repeated specs encode alike.
		for j := range max(s.samples, 1) {
			ts.Samples = append(ts.Samples, prompb.Sample{Value: float64(len(s.id)) + float64(j)/4, Timestamp: 1_700_000_000_000 + int64(j)*15_000})
		}
		if s.hist {
			ts.Histograms = append(ts.Histograms, prompb.Histogram{
				Count: &prompb.Histogram_CountInt{CountInt: 3}, Sum: 1.5, Schema: 3,
				ZeroThreshold: 1e-128, ZeroCount: &prompb.Histogram_ZeroCountInt{ZeroCountInt: 1},
				PositiveSpans: []prompb.BucketSpan{{Offset: 0, Length: 2}}, PositiveDeltas: []int64{1, 0},
				Timestamp: 1_700_000_000_000,
			})
		}
		pb.Timeseries = append(pb.Timeseries, ts)
	}
	raw, err := pb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	req := &wire.Request{}
	if err := req.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	return req, pb
}

// specsFor builds n series with ids "0".."n-1", poisoned where poison
// returns a kind.
func specsFor(n int, poison func(i int) string) []spec {
	specs := make([]spec, n)
	for i := range specs {
		specs[i] = spec{id: fmt.Sprint(i), poison: poison(i), samples: 1 + i%3, hist: i%7 == 3}
	}
	return specs
}

// rejections records onReject calls and checks they come in order.
type rejections struct {
	t    *testing.T
	list []Rejection
}

func (r *rejections) add(rj Rejection) {
	if n := len(r.list); n > 0 && rj.Series <= r.list[n-1].Series {
		r.t.Errorf("onReject(series %d) after series %d: not in order", rj.Series, r.list[n-1].Series)
	}
	r.list = append(r.list, rj)
}

// ceilLog2 returns ⌈log₂n⌉ for n ≥ 1.
func ceilLog2(n int) int { return bits.Len(uint(n - 1)) }

// checkDelivery asserts Deliver's promises for specs delivered to d: every
// good series arrived exactly once, every poisoned one was reported exactly
// once with the right reason, no refused body was sent again, and the
// number of sends is within the bound.
func checkDelivery(t *testing.T, d *downstream, specs []spec, rep Report, rj []Rejection) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	reported := map[int]Rejection{}
	for _, r := range rj {
		if _, dup := reported[r.Series]; dup {
			t.Errorf("series %d reported twice", r.Series)
		}
		reported[r.Series] = r
	}
	var good, bad, goodSamples, badSamples int
	for i, s := range specs {
		n := max(s.samples, 1)
		if s.hist {
			n++
		}
		if s.poison == "" {
			good++
			goodSamples += n
			if got := d.accepted[s.id]; got != 1 {
				t.Errorf("good series %d arrived %d times, want 1", i, got)
			}
			if _, ok := reported[i]; ok {
				t.Errorf("good series %d reported as rejected", i)
			}
			continue
		}
		bad++
		badSamples += n
		if got := d.accepted[s.id]; got != 0 {
			t.Errorf("poisoned series %d accepted %d times", i, got)
		}
		r, ok := reported[i]
		if !ok {
			t.Errorf("poisoned series %d (%s) not reported", i, s.poison)
			continue
		}
		code, _, reason := poisonAnswer(s.poison)
		if r.Err == nil || r.Err.Status != 400 || r.Err.Code != code || r.Err.Reason != reason {
			t.Errorf("series %d (%s): Err = %+v, want Status 400, Code %d, Reason %q", i, s.poison, r.Err, code, reason)
		}
		if r.Samples != n {
			t.Errorf("series %d: Samples = %d, want %d", i, r.Samples, n)
		}
	}
	if len(reported) != bad {
		t.Errorf("%d rejections reported, want %d", len(reported), bad)
	}
	if d.resent != 0 {
		t.Errorf("%d refused bodies were sent again", d.resent)
	}
	if rep.Sends != d.requests {
		t.Errorf("Report.Sends = %d, downstream saw %d", rep.Sends, d.requests)
	}
	if n := len(specs); n > 0 && rep.Sends > 2*n-1 {
		t.Errorf("%d sends for %d series, want at most %d", rep.Sends, n, 2*n-1)
	}
	if n := len(specs); bad == 1 && rep.Sends > 1+2*ceilLog2(n) {
		t.Errorf("%d sends to isolate one bad series among %d, want at most %d", rep.Sends, n, 1+2*ceilLog2(n))
	}
	want := Report{
		Sends: rep.Sends, Split: bad > 0 && len(specs) > 1,
		DeliveredSeries: good, DeliveredSamples: goodSamples,
		RejectedSeries: bad, RejectedSamples: badSamples,
	}
	if rep != want {
		t.Errorf("Report = %+v\nwant     %+v", rep, want)
	}
}

func TestDeliverIsolatesPoisonedSeries(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 2, 3, 10, 100, 2000} {
		rng := rand.New(rand.NewPCG(uint64(n), 1))
		several := map[int]bool{}
		for range max(n/20, 2) {
			several[rng.IntN(n)] = true
		}
		kind := func(i int) string { return poisonKinds[i%len(poisonKinds)] }
		for _, tc := range []struct {
			name   string
			poison func(i int) string
		}{
			{"none", none},
			{"first", only("ooo", 0)},
			{"middle", only("dup", n/2)},
			{"last", only("future", n-1)},
			{"several", func(i int) string {
				if several[i] {
					return kind(i)
				}
				return ""
			}},
			{"all", kind},
		} {
			t.Run(fmt.Sprintf("%d series %s", n, tc.name), func(t *testing.T) {
				t.Parallel()
				d := newDownstream(t)
				c := newDownstreamClient(t, d, Options{})
				m, err := NewDeliverMetrics(prometheus.NewPedanticRegistry())
				if err != nil {
					t.Fatal(err)
				}
				specs := specsFor(n, tc.poison)
				req, _ := buildRequest(t, specs)
				rj := &rejections{t: t}
				var sc Scratch
				rep, err := m.Deliver(testCtx(t), NewTarget(c), req, &sc, rj.add)
				if err != nil {
					t.Fatalf("Deliver: %v", err)
				}
				checkDelivery(t, d, specs, rep, rj.list)

				wantSplits := 0.0
				if rep.Split {
					wantSplits = 1
				}
				if got := testutil.ToFloat64(m.splits); got != wantSplits {
					t.Errorf("split_requests_total = %v, want %v", got, wantSplits)
				}
				byReason := map[string]float64{}
				for _, s := range specs {
					if s.poison != "" {
						_, _, reason := poisonAnswer(s.poison)
						byReason[reason]++
					}
				}
				for _, r := range []string{ReasonOutOfOrder, ReasonDuplicate, ReasonOutOfBounds, ReasonTooLarge, ReasonInvalid} {
					if got := testutil.ToFloat64(m.rejectedSeries[reasonIndex(r)]); got != byReason[r] {
						t.Errorf("rejected_series_total{reason=%q} = %v, want %v", r, got, byReason[r])
					}
				}
				if len(sc.refused) != 0 {
					t.Errorf("Scratch keeps %d refused bodies after Deliver, want them cleared", len(sc.refused))
				}
			})
		}
	}
}

// TestDeliverRandomized runs many random requests through the in-process
// downstream, with poison rates from none to all.
func TestDeliverRandomized(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	var sc Scratch // reused, as a gateway goroutine would
	for i := range 300 {
		n := 1 + rng.IntN(300)
		rate := []float64{0, 0.01, 0.1, 0.5, 1}[rng.IntN(5)]
		specs := specsFor(n, func(int) string {
			if rng.Float64() < rate {
				return poisonKinds[rng.IntN(len(poisonKinds))]
			}
			return ""
		})
		req, _ := buildRequest(t, specs)
		d := newDownstream(t)
		rj := &rejections{t: t}
		rep, err := Deliver(context.Background(), d, req, &sc, rj.add)
		if err != nil {
			t.Fatalf("case %d: Deliver: %v", i, err)
		}
		checkDelivery(t, d, specs, rep, rj.list)
		if t.Failed() {
			t.Fatalf("case %d: %d series, poison rate %v", i, n, rate)
		}
	}
}

// TestDeliverRepeatedSeries: a request that holds the same series twice
// yields identical bodies; one refused is never sent again.
func TestDeliverRepeatedSeries(t *testing.T) {
	t.Parallel()
	a := spec{id: "a", poison: "ooo"}
	b := spec{id: "b"}
	c := spec{id: "c"}
	for _, tc := range []struct {
		name       string
		specs      []spec
		wantSends  int
		wantB      int
		wantReject []int
	}{
		// [abab] -> ab -> a, b; ab again is known, split at once; a again
		// is known; b is sent again (accepted bodies may repeat).
		{"abab", []spec{a, b, a, b}, 5, 2, []int{0, 2}},
		// [ababc] -> [ab] -> a, b; [abc] -> a is known, [bc].
		{"ababc", []spec{a, b, a, b, c}, 6, 2, []int{0, 2}},
		{"aa", []spec{a, a}, 2, 0, []int{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newDownstream(t)
			req, _ := buildRequest(t, tc.specs)
			rj := &rejections{t: t}
			var sc Scratch
			rep, err := Deliver(testCtx(t), d, req, &sc, rj.add)
			if err != nil {
				t.Fatal(err)
			}
			if d.resent != 0 {
				t.Errorf("%d refused bodies sent again", d.resent)
			}
			if rep.Sends != tc.wantSends || d.requests != tc.wantSends {
				t.Errorf("sends = %d (downstream %d), want %d", rep.Sends, d.requests, tc.wantSends)
			}
			if d.accepted["b"] != tc.wantB {
				t.Errorf("b accepted %d times, want %d", d.accepted["b"], tc.wantB)
			}
			var got []int
			for _, r := range rj.list {
				got = append(got, r.Series)
				if r.Err == nil || r.Err.Reason != ReasonOutOfOrder {
					t.Errorf("series %d: Err = %+v", r.Series, r.Err)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantReject) {
				t.Errorf("rejected %v, want %v", got, tc.wantReject)
			}
		})
	}
}

// TestDeliverTooLarge: a downstream with a size limit gets parts until they
// fit; a single series above the limit is reported as too_large.
func TestDeliverTooLarge(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	noise := func(n int) string {
		const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	var specs []spec
	for i := range 300 {
		specs = append(specs, spec{id: fmt.Sprint(i), pad: noise(20 + rng.IntN(60))})
	}
	// Random text does not compress: this one alone exceeds the limit.
	specs[123].pad = noise(4000)
	d := newDownstream(t)
	d.maxBody = 2000
	c := newDownstreamClient(t, d, Options{})
	req, _ := buildRequest(t, specs)
	rj := &rejections{t: t}
	var sc Scratch
	rep, err := Deliver(testCtx(t), c, req, &sc, rj.add)
	if err != nil {
		t.Fatal(err)
	}
	if len(rj.list) != 1 || rj.list[0].Series != 123 {
		t.Fatalf("rejections = %+v, want series 123 only", rj.list)
	}
	if e := rj.list[0].Err; e.Code != 413 || e.Reason != ReasonTooLarge {
		t.Errorf("Err = %+v, want Code 413, Reason too_large", e)
	}
	for i, s := range specs {
		if want := b2i(i != 123); d.accepted[s.id] != want {
			t.Errorf("series %d arrived %d times, want %d", i, d.accepted[s.id], want)
		}
	}
	if d.resent != 0 {
		t.Errorf("%d refused bodies sent again", d.resent)
	}
	if rep.Sends > 2*len(specs)-1 || !rep.Split || rep.DeliveredSeries != 299 || rep.RejectedSeries != 1 {
		t.Errorf("Report = %+v", rep)
	}
	t.Logf("%d sends for 300 series under a %d-byte limit", rep.Sends, d.maxBody)
}

// TestDeliverStopsOnFailure: a retryable failure or a misconfiguration in
// the middle of a split stops the delivery and is returned; what was
// delivered stays delivered and nothing more is sent.
func TestDeliverStopsOnFailure(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		code       int
		wantStatus int
	}{
		{"503", 503, http.StatusServiceUnavailable},
		{"429", 429, http.StatusServiceUnavailable},
		{"401", 401, http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Series 0 and 5 of 8 are poisoned. Sends: [0,8) refused,
			// [0,4) refused, [0,2) refused, [0] refused, [1] accepted,
			// [2,4) accepted, [4,8) fails.
			specs := specsFor(8, only("ooo", 0, 5))
			d := newDownstream(t)
			d.failAt, d.failCode = 7, tc.code
			c := newDownstreamClient(t, d, Options{MaxRetries: -1})
			req, _ := buildRequest(t, specs)
			rj := &rejections{t: t}
			var sc Scratch
			rep, err := Deliver(testCtx(t), c, req, &sc, rj.add)
			e := asError(t, err, tc.wantStatus)
			if e.Code != tc.code {
				t.Errorf("Code = %d, want %d", e.Code, tc.code)
			}
			if d.requests != 7 || rep.Sends != 7 {
				t.Errorf("sends = %d (downstream %d), want 7", rep.Sends, d.requests)
			}
			if len(rj.list) != 1 || rj.list[0].Series != 0 {
				t.Errorf("rejections = %+v, want series 0 only", rj.list)
			}
			want := Report{Sends: 7, Split: true, DeliveredSeries: 3, DeliveredSamples: 2 + 3 + 1 + 1, RejectedSeries: 1, RejectedSamples: 1}
			if rep != want {
				t.Errorf("Report = %+v\nwant     %+v", rep, want)
			}
			for i, s := range specs[:4] {
				if want := b2i(i != 0); d.accepted[s.id] != want {
					t.Errorf("series %d arrived %d times, want %d", i, d.accepted[s.id], want)
				}
			}
		})
	}

	t.Run("retried by Send", func(t *testing.T) {
		t.Parallel()
		// The same failure with retries left: Send absorbs it.
		specs := specsFor(8, only("ooo", 0, 5))
		d := newDownstream(t)
		d.failAt, d.failCode = 7, 503
		c := newDownstreamClient(t, d, Options{})
		req, _ := buildRequest(t, specs)
		rj := &rejections{t: t}
		var sc Scratch
		rep, err := Deliver(testCtx(t), c, req, &sc, rj.add)
		if err != nil {
			t.Fatal(err)
		}
		if rep.RejectedSeries != 2 || rep.DeliveredSeries != 6 || rep.Sends != d.requests-1 {
			t.Errorf("Report = %+v, downstream saw %d requests", rep, d.requests)
		}
	})

	t.Run("not an *Error", func(t *testing.T) {
		t.Parallel()
		boom := errors.New("boom")
		req, _ := buildRequest(t, specsFor(4, none))
		rep, err := Deliver(testCtx(t), senderFunc(func([]byte) error { return boom }), req, &Scratch{}, nil)
		if err != boom || rep.Sends != 1 {
			t.Errorf("Deliver = %+v, %v; want 1 send, boom", rep, err)
		}
	})

	t.Run("context ends mid-split", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		req, _ := buildRequest(t, specsFor(4, func(int) string { return "ooo" }))
		refuse := &Error{Status: 400, Code: 400, Reason: ReasonOutOfOrder}
		sends := 0
		rep, err := Deliver(ctx, senderFunc(func([]byte) error {
			sends++
			cancel() // the sender went away while the first answer came in
			return refuse
		}), req, &Scratch{}, nil)
		e := asError(t, err, http.StatusServiceUnavailable)
		if !errors.Is(e, context.Canceled) || sends != 1 || rep.Sends != 1 {
			t.Errorf("Deliver = %+v, %v after %d sends; want context.Canceled after 1", rep, err, sends)
		}
	})
}

type senderFunc func(body []byte) error

func (f senderFunc) Send(_ context.Context, body []byte) error { return f(body) }

func TestDeliverMetadata(t *testing.T) {
	t.Parallel()
	meta := prompb.MetricMetadata{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "istio_requests_total", Help: "Requests.", Unit: "requests"}
	bad := prompb.MetricMetadata{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "poisoned"}
	for _, tc := range []struct {
		name         string
		specs        []spec
		meta         []prompb.MetricMetadata
		wantMeta     int // metadata entries accepted
		wantRejected []int
		wantSends    int
	}{
		{"only metadata", nil, []prompb.MetricMetadata{meta, meta}, 2, nil, 1},
		{"only refused metadata", nil, []prompb.MetricMetadata{meta, bad}, 0, []int{MetadataSeries}, 1},
		{"metadata and a bad series", specsFor(5, only("old", 3)),
			[]prompb.MetricMetadata{meta}, 1, []int{3}, 0},
		{"refused metadata and a bad series", specsFor(5, only("old", 0)),
			[]prompb.MetricMetadata{bad}, 0, []int{MetadataSeries, 0}, 0},
		{"refused metadata and good series", specsFor(100, none),
			[]prompb.MetricMetadata{bad}, 0, []int{MetadataSeries}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newDownstream(t)
			c := newDownstreamClient(t, d, Options{})
			req, _ := buildRequest(t, tc.specs, tc.meta...)
			rj := &rejections{t: t}
			var sc Scratch
			rep, err := Deliver(testCtx(t), c, req, &sc, rj.add)
			if err != nil {
				t.Fatal(err)
			}
			if d.metadata != tc.wantMeta {
				t.Errorf("downstream accepted %d metadata entries, want %d", d.metadata, tc.wantMeta)
			}
			var got []int
			for _, r := range rj.list {
				got = append(got, r.Series)
				if r.Series == MetadataSeries && (r.Samples != 0 || r.Err.Reason != ReasonInvalid) {
					t.Errorf("metadata rejection = %+v", r)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantRejected) {
				t.Errorf("rejected %v, want %v", got, tc.wantRejected)
			}
			if rep.RejectedMetadata != (len(got) > 0 && got[0] == MetadataSeries) {
				t.Errorf("Report.RejectedMetadata = %v", rep.RejectedMetadata)
			}
			if tc.wantSends > 0 && rep.Sends != tc.wantSends {
				t.Errorf("sends = %d, want %d", rep.Sends, tc.wantSends)
			}
			if items := len(tc.specs) + 1; rep.Sends > 2*items-1 {
				t.Errorf("%d sends for %d items", rep.Sends, items)
			}
			if d.resent != 0 {
				t.Errorf("%d refused bodies sent again", d.resent)
			}
			for i, s := range tc.specs {
				want := b2i(s.poison == "")
				if d.accepted[s.id] != want {
					t.Errorf("series %d arrived %d times, want %d", i, d.accepted[s.id], want)
				}
			}
		})
	}

	t.Run("empty request sends nothing", func(t *testing.T) {
		t.Parallel()
		rep, err := Deliver(testCtx(t), senderFunc(func([]byte) error {
			t.Error("Send called for an empty request")
			return nil
		}), &wire.Request{}, &Scratch{}, nil)
		if err != nil || rep != (Report{}) {
			t.Errorf("Deliver = %+v, %v", rep, err)
		}
	})
}

// TestEncodeRangeMatchesGogo: the encoding of a sub-range is byte for byte
// what gogo writes for a WriteRequest holding just those series, and what
// MarshalAppend writes for the same request decoded.
func TestEncodeRangeMatchesGogo(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range 300 {
		n := rng.IntN(40)
		specs := make([]spec, n)
		for j := range specs {
			specs[j] = spec{id: strings.Repeat("x", rng.IntN(200)) + fmt.Sprint(j), samples: 1 + rng.IntN(4), hist: rng.IntN(3) == 0}
			if rng.IntN(10) == 0 {
				// Over 16 KiB: the encoder's slow path for long series.
				specs[j].pad = strings.Repeat("p", 17<<10)
			}
		}
		var meta []prompb.MetricMetadata
		for range rng.IntN(3) {
			meta = append(meta, prompb.MetricMetadata{Type: prompb.MetricMetadata_HISTOGRAM, MetricFamilyName: fmt.Sprint("f", i), Help: "h"})
		}
		req, pb := buildRequest(t, specs, meta...)
		from := rng.IntN(n + 1)
		to := from + rng.IntN(n-from+1)
		withMeta := rng.IntN(2) == 0

		sub := &prompb.WriteRequest{Timeseries: pb.Timeseries[from:to]}
		if withMeta {
			sub.Metadata = meta
		}
		want, err := sub.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		prefix := []byte("prefix")
		got := EncodeRange(prefix, req, from, to, withMeta)
		if string(got[:len(prefix)]) != "prefix" || string(got[len(prefix):]) != string(want) {
			t.Fatalf("case %d [%d:%d] meta=%v: EncodeRange differs from gogo", i, from, to, withMeta)
		}
		var decoded wire.Request
		if err := decoded.Unmarshal(want); err != nil {
			t.Fatal(err)
		}
		if again := decoded.MarshalAppend(nil); string(again) != string(got[len(prefix):]) {
			t.Fatalf("case %d: EncodeRange differs from MarshalAppend of the sub-request", i)
		}
	}
}

func TestDeliverMetricsRegistration(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m1, err := NewDeliverMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	// A second set on the same registry, as after a config reload, shares
	// the collectors instead of failing.
	m2, err := NewDeliverMetrics(reg)
	if err != nil {
		t.Fatalf("second NewDeliverMetrics on the same registry: %v", err)
	}
	d := newDownstream(t)
	specs := specsFor(10, func(i int) string {
		switch i {
		case 2:
			return "ooo"
		case 5:
			return "old"
		}
		return ""
	})
	req, _ := buildRequest(t, specs)
	var sc Scratch
	for _, m := range []*DeliverMetrics{m1, m2} {
		if _, err := m.Deliver(testCtx(t), NewTarget(d), req, &sc, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Series 2 and 5 hold 3 samples each, and the request went twice.
	want := `
# HELP cardinal_forward_rejected_samples_total Samples of the series the downstream refused on their own, by reason.
# TYPE cardinal_forward_rejected_samples_total counter
cardinal_forward_rejected_samples_total{reason="duplicate"} 0
cardinal_forward_rejected_samples_total{reason="invalid"} 0
cardinal_forward_rejected_samples_total{reason="out_of_bounds"} 6
cardinal_forward_rejected_samples_total{reason="out_of_order"} 6
cardinal_forward_rejected_samples_total{reason="too_large"} 0
# HELP cardinal_forward_rejected_series_total Series the downstream refused on their own, by reason; they were isolated and not sent again.
# TYPE cardinal_forward_rejected_series_total counter
cardinal_forward_rejected_series_total{reason="duplicate"} 0
cardinal_forward_rejected_series_total{reason="invalid"} 0
cardinal_forward_rejected_series_total{reason="out_of_bounds"} 2
cardinal_forward_rejected_series_total{reason="out_of_order"} 2
cardinal_forward_rejected_series_total{reason="too_large"} 0
# HELP cardinal_forward_split_requests_total Requests the downstream rejected as a whole that were split to isolate the series it refuses.
# TYPE cardinal_forward_split_requests_total counter
cardinal_forward_split_requests_total 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "cardinal_forward_rejected_samples_total",
		"cardinal_forward_rejected_series_total", "cardinal_forward_split_requests_total"); err != nil {
		t.Error(err)
	}
}

// firstBody is a BodySender that keeps the first body it is sent and
// passes every body on to d.
type firstBody struct {
	d     *downstream
	first []byte
}

func (f *firstBody) Send(ctx context.Context, body []byte) error {
	if f.first == nil {
		f.first = body
	}
	return f.d.Send(ctx, body)
}

// TestDeliverVerbatim: a Verbatim body is what the fast path sends, as it
// is; when the downstream refuses it, the split encodes the request and
// isolates the poisoned series as it would have. A 2.0 delivery encodes
// whatever Verbatim says. Deliver clears Verbatim.
func TestDeliverVerbatim(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		poison func(i int) string
	}{
		{"clean", none},
		{"poisoned", only("ooo", 7)},
		{"two poisoned", only("dup", 3, 40)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDownstream(t)
			m, err := NewDeliverMetrics(prometheus.NewPedanticRegistry())
			if err != nil {
				t.Fatal(err)
			}
			specs := specsFor(64, tc.poison)
			req, pb := buildRequest(t, specs, prompb.MetricMetadata{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "istio_requests_total"})
			raw, err := pb.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			verbatim := snappy.Encode(nil, raw)
			sc := Scratch{Verbatim: verbatim}
			f := &firstBody{d: d}
			rj := &rejections{t: t}
			rep, err := m.Deliver(testCtx(t), NewTarget(f), req, &sc, rj.add)
			if err != nil {
				t.Fatalf("Deliver: %v", err)
			}
			if len(f.first) == 0 || &f.first[0] != &verbatim[0] {
				t.Fatal("the first body sent is not the Verbatim one")
			}
			if sc.Verbatim != nil {
				t.Fatal("Verbatim is still set after Deliver")
			}
			if got := testutil.ToFloat64(m.verbatim); got != 1 {
				t.Fatalf("verbatim_requests_total = %v, want 1", got)
			}
			checkDelivery(t, d, specs, rep, rj.list)
		})
	}
	t.Run("2.0", func(t *testing.T) {
		d := newDownstream(t)
		d.speaksV2 = true
		c := newDownstreamClient(t, d, Options{Protocol: ProtocolV2})
		specs := specsFor(8, none)
		req, _ := buildRequest(t, specs)
		// A body that is not this request: a 2.0 delivery must not send it.
		sc := Scratch{Verbatim: []byte("not a body")}
		rep, err := Deliver(testCtx(t), c, req, &sc, nil)
		if err != nil {
			t.Fatalf("Deliver: %v", err)
		}
		if d.v2Bodies != 0 || rep.DeliveredSeries != 8 || sc.Verbatim != nil {
			t.Fatalf("2.0 delivery: %+v, %d bodies refused, Verbatim %q", rep, d.v2Bodies, sc.Verbatim)
		}
	})
}
