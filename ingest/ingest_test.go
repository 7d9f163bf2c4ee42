package ingest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/cardinal-gateway/cardinal/admission"
	"github.com/cardinal-gateway/cardinal/forward"
	"github.com/cardinal-gateway/cardinal/gateway"
	"github.com/cardinal-gateway/cardinal/wire"
)

// fakeProcessor records what reached the pipeline and answers as told.
type fakeProcessor struct {
	limit  int
	err    error
	series []string // label sets seen, as strings
	calls  int
}

func (p *fakeProcessor) MaxRequestBytes() int { return p.limit }

func (p *fakeProcessor) Process(_ context.Context, req *wire.Request) (gateway.Result, error) {
	p.calls++
	var res gateway.Result
	req.Sanitize(&res.Invalid)
	for _, s := range req.Series {
		var sb strings.Builder
		for _, l := range s.Labels {
			sb.WriteString(string(l.Name) + "=" + string(l.Value) + ",")
		}
		p.series = append(p.series, sb.String())
	}
	return res, p.err
}

func encode(t testing.TB, pb *prompb.WriteRequest) []byte {
	t.Helper()
	raw, err := pb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

func validBody(t testing.TB) []byte {
	return encode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "job", Value: "a"}, {Name: "__name__", Value: "up"}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: 1}},
	}}})
}

func post(h http.Handler, body []byte, mutate func(*http.Request)) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body))
	r.Header.Set("Content-Encoding", "snappy")
	r.Header.Set("Content-Type", "application/x-protobuf")
	r.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	if mutate != nil {
		mutate(r)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// validBodyV2 is validBody's series as remote write 2.0, with an exemplar
// and metadata.
func validBodyV2(t testing.TB) []byte {
	pb := &writev2.Request{
		Symbols: []string{"", "__name__", "up", "job", "a", "trace_id", "abc"},
		Timeseries: []writev2.TimeSeries{{
			LabelsRefs: []uint32{1, 2, 3, 4},
			Samples:    []writev2.Sample{{Value: 1, Timestamp: 1}},
			Exemplars:  []writev2.Exemplar{{LabelsRefs: []uint32{5, 6}, Value: 1, Timestamp: 1}},
			Metadata:   writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_GAUGE},
		}},
	}
	raw, err := pb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

const ctV2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"

func TestStatusCodes(t *testing.T) {
	valid := validBody(t)
	validV2 := validBodyV2(t)
	bigRaw := make([]byte, 2048)
	tests := []struct {
		name     string
		body     []byte
		mutate   func(*http.Request)
		procErr  error
		want     int
		wantMsg  string
		wantCall bool
	}{
		{name: "ok", body: valid, want: 204, wantCall: true},
		{name: "content type with proto v1", body: valid, mutate: setHeader("Content-Type", "application/x-protobuf;proto=prometheus.WriteRequest"), want: 204, wantCall: true},
		{name: "GET", body: valid, mutate: func(r *http.Request) { r.Method = http.MethodGet }, want: 405, wantMsg: "POST"},
		{name: "no encoding", body: valid, mutate: setHeader("Content-Encoding", ""), want: 415, wantMsg: "snappy"},
		{name: "gzip", body: valid, mutate: setHeader("Content-Encoding", "gzip"), want: 415, wantMsg: "gzip"},
		{name: "json", body: valid, mutate: setHeader("Content-Type", "application/json"), want: 415, wantMsg: "application/json"},
		{name: "no content type", body: valid, mutate: setHeader("Content-Type", ""), want: 415},
		{name: "rw 2.0", body: validV2, mutate: setHeader("Content-Type", ctV2), want: 204, wantCall: true},
		{name: "rw 2.0, media type in other case, spaces, quoted", body: validV2, mutate: setHeader("Content-Type", `Application/X-Protobuf ; Proto="io.prometheus.write.v2.Request"`), want: 204, wantCall: true},
		{name: "rw 2.0, proto in other case", body: validV2, mutate: setHeader("Content-Type", "application/x-protobuf;proto=IO.Prometheus.Write.V2.Request"), want: 204, wantCall: true},
		{name: "rw 1.0 body announced as 2.0", body: valid, mutate: setHeader("Content-Type", ctV2), want: 400, wantMsg: "the body is a remote write 1.0"},
		{name: "rw 2.0 body announced as 1.0", body: validV2, want: 400, wantMsg: "the body is a remote write 2.0"},
		{name: "rw 2.0, symbols[0] not empty", body: snappy.Encode(nil, []byte{0x22, 0x01, 'x'}), mutate: setHeader("Content-Type", ctV2), want: 400, wantMsg: "symbols[0]"},
		{name: "empty rw 2.0", body: snappy.Encode(nil, nil), mutate: setHeader("Content-Type", ctV2), want: 204, wantCall: true},
		{name: "unknown proto", body: valid, mutate: setHeader("Content-Type", "application/x-protobuf;proto=foo"), want: 415, wantMsg: "foo"},
		{name: "corrupt snappy", body: []byte{0xff, 0xff, 0xff}, want: 400, wantMsg: "snappy"},
		{name: "snappy ok, protobuf corrupt", body: snappy.Encode(nil, []byte{0x0a, 0x05, 0x0a}), want: 400, wantMsg: "decode"},
		{name: "decoded size over limit", body: snappy.Encode(nil, bigRaw), want: 400, wantMsg: "max_request_bytes"},
		{name: "body over limit", body: make([]byte, 4096), want: 413},
		{name: "body over limit, no content length", body: make([]byte, 4096), mutate: func(r *http.Request) { r.ContentLength = -1 }, want: 413},
		{name: "downstream unavailable", body: valid, procErr: &forward.Error{Status: 503, RetryAfter: 3 * time.Second, Msg: "downstream 500"}, want: 503, wantMsg: "downstream 500", wantCall: true},
		{name: "downstream rejected", body: valid, procErr: &forward.Error{Status: 400, Msg: "out of order"}, want: 400, wantMsg: "out of order", wantCall: true},
		{name: "sender gone", body: valid, procErr: context.Canceled, want: 503, wantCall: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakeProcessor{limit: 1024, err: tt.procErr}
			h := New(Options{Processor: p, Registerer: prometheus.NewRegistry()})
			w := post(h, tt.body, tt.mutate)
			if w.Code != tt.want {
				t.Fatalf("status %d (%q), want %d", w.Code, w.Body.String(), tt.want)
			}
			if !strings.Contains(w.Body.String(), tt.wantMsg) {
				t.Errorf("body %q does not mention %q", w.Body.String(), tt.wantMsg)
			}
			if (p.calls > 0) != tt.wantCall {
				t.Errorf("pipeline called %d times, want call=%v", p.calls, tt.wantCall)
			}
			if tt.want == 503 && tt.procErr != nil {
				if ra := w.Header().Get("Retry-After"); tt.name == "downstream unavailable" && ra != "3" {
					t.Errorf("Retry-After = %q, want 3", ra)
				}
			}
			if tt.want == 405 && w.Header().Get("Allow") != "POST" {
				t.Errorf("405 without Allow: POST")
			}
			if tt.want == 204 && w.Header().Get("X-Prometheus-Remote-Write-Samples-Written") == "" {
				t.Errorf("204 without Written headers: %v", w.Header())
			}
		})
	}
}

// TestWrittenHeaders: every 2xx says what was written, for both versions;
// invalid series do not count, series the pipeline merges or drops on
// purpose do.
func TestWrittenHeaders(t *testing.T) {
	v1 := encode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "__name__", Value: "up"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}, {Value: 2, Timestamp: 2}},
			Exemplars: []prompb.Exemplar{{Value: 1, Timestamp: 1}}},
		{Labels: []prompb.Label{{Name: "__name__", Value: "h"}}, Histograms: []prompb.Histogram{{Count: &prompb.Histogram_CountInt{CountInt: 0}, ZeroCount: &prompb.Histogram_ZeroCountInt{}, Timestamp: 1}}},
		{Labels: []prompb.Label{{Name: "job", Value: "no name"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}},
	}})
	for name, tc := range map[string]struct {
		body    []byte
		ct      string
		want    int
		s, h, e string
	}{
		// The series without a name is invalid: 400 for it, the rest written.
		"1.0":                   {v1, "", 400, "2", "1", "1"},
		"2.0":                   {validBodyV2(t), ctV2, 204, "1", "0", "1"},
		"2.0 with a bad series": {snappy.Encode(nil, mustV2(t, &writev2.Request{Symbols: []string{"", "__name__", "up"}, Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{1, 2}, Samples: []writev2.Sample{{Value: 1}}}, {LabelsRefs: []uint32{1, 7}, Samples: []writev2.Sample{{Value: 1}}}}})), ctV2, 400, "1", "0", "0"},
	} {
		t.Run(name, func(t *testing.T) {
			p := &fakeProcessor{limit: 1 << 20}
			h := New(Options{Processor: p, Registerer: prometheus.NewRegistry()})
			w := post(h, tc.body, setHeader("Content-Type", cmpOr(tc.ct, "application/x-protobuf")))
			if w.Code != tc.want {
				t.Fatalf("status %d (%q), want %d", w.Code, w.Body.String(), tc.want)
			}
			got := [3]string{w.Header().Get("X-Prometheus-Remote-Write-Samples-Written"), w.Header().Get("X-Prometheus-Remote-Write-Histograms-Written"), w.Header().Get("X-Prometheus-Remote-Write-Exemplars-Written")}
			if got != [3]string{tc.s, tc.h, tc.e} {
				t.Fatalf("written samples/histograms/exemplars = %q, want %q", got, [3]string{tc.s, tc.h, tc.e})
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func mustV2(t testing.TB, pb *writev2.Request) []byte {
	t.Helper()
	raw, err := pb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func setHeader(k, v string) func(*http.Request) {
	return func(r *http.Request) {
		if v == "" {
			r.Header.Del(k)
			return
		}
		r.Header.Set(k, v)
	}
}

// A forged snappy header announcing a huge size must be refused before
// anything of that size is allocated.
func TestForgedDecodedLengthAllocatesNothingLarge(t *testing.T) {
	p := &fakeProcessor{limit: 1 << 20}
	h := New(Options{Processor: p})
	// Varint for 1 GiB followed by garbage.
	body := []byte{0x80, 0x80, 0x80, 0x80, 0x04, 0x00, 0x01}
	var ms1, ms2 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	w := post(h, body, nil)
	runtime.ReadMemStats(&ms2)
	if w.Code != 400 {
		t.Fatalf("status %d, want 400", w.Code)
	}
	if grew := ms2.TotalAlloc - ms1.TotalAlloc; grew > 1<<20 {
		t.Fatalf("allocated %d bytes for a forged header", grew)
	}
}

func TestInvalidSeriesAreDroppedAndTheRestForwarded(t *testing.T) {
	body := encode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "__name__", Value: "good"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}},
		{Labels: []prompb.Label{{Name: "job", Value: "x"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}},
		{Labels: []prompb.Label{{Name: "__name__", Value: "dup"}, {Name: "a", Value: "1"}, {Name: "a", Value: "2"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}},
	}})
	p := &fakeProcessor{limit: 1 << 20}
	w := post(New(Options{Processor: p}), body, nil)
	if w.Code != 400 {
		t.Fatalf("status %d, want 400", w.Code)
	}
	msg := w.Body.String()
	for _, want := range []string{"dropped 2 invalid series", "no __name__", "duplicate label name"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if len(p.series) != 1 || p.series[0] != "__name__=good," {
		t.Fatalf("forwarded %q, want only the valid series", p.series)
	}
}

func TestUnsortedLabelsAreSorted(t *testing.T) {
	p := &fakeProcessor{limit: 1 << 20}
	w := post(New(Options{Processor: p}), validBody(t), nil)
	if w.Code != 204 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if len(p.series) != 1 || p.series[0] != "__name__=up,job=a," {
		t.Fatalf("series = %q", p.series)
	}
}

func TestReadBody(t *testing.T) {
	f := func(in string, max int, wantErr error) {
		t.Helper()
		got, err := readBody(nil, iotestOneByte(strings.NewReader(in)), max, bodyDeadline{})
		if err != wantErr {
			t.Fatalf("readBody(%q, %d) err = %v, want %v", in, max, err, wantErr)
		}
		if err == nil && string(got) != in {
			t.Fatalf("readBody(%q) = %q", in, got)
		}
	}
	f("", 10, nil)
	f("abc", 3, nil)
	f("abcd", 3, errTooLarge)
	f(strings.Repeat("x", 1000), 1000, nil)
	f(strings.Repeat("x", 1001), 1000, errTooLarge)
}

// iotestOneByte returns a reader that reads one byte at a time, to exercise
// the growth loop.
func iotestOneByte(r io.Reader) io.Reader { return &oneByteReader{r} }

type oneByteReader struct{ r io.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

// FuzzHandler: no body and no header combination may panic, and every
// answer is one the protocol allows.
func FuzzHandler(f *testing.F) {
	f.Add(validBody(f), "application/x-protobuf", "snappy")
	f.Add([]byte{0x80, 0x80, 0x80, 0x80, 0x04}, "application/x-protobuf", "snappy")
	f.Add(snappy.Encode(nil, []byte{0x0a, 0x02, 0x0a, 0x00}), "application/x-protobuf; proto=prometheus.WriteRequest", "SNAPPY")
	f.Add([]byte{}, "text/plain; charset=\"", "")
	f.Add(validBodyV2(f), ctV2, "snappy")
	f.Add(validBodyV2(f), "application/x-protobuf", "snappy")
	h := New(Options{Processor: &fakeProcessor{limit: 1 << 16}})
	f.Fuzz(func(t *testing.T, body []byte, contentType, encoding string) {
		w := post(h, body, func(r *http.Request) {
			r.Header.Set("Content-Type", contentType)
			r.Header.Set("Content-Encoding", encoding)
		})
		switch w.Code {
		case 204, 400, 413, 415:
		default:
			t.Fatalf("status %d for body %x: %s", w.Code, body, w.Body)
		}
	})
}

// TestServeAllocsNothing covers everything of a request that Cardinal owns:
// header checks, body read, snappy, decode and the pipeline call. The
// net/http server's own allocations (request, headers, response) are outside
// it and not counted.
func TestServeAllocsNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, tc := range []struct {
		name, ct string
		body     []byte
	}{
		{"1.0", "application/x-protobuf", validBody(t)},
		{"2.0", ctV2, validBodyV2(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &nopProcessor{limit: 1 << 20}
			h := New(Options{Processor: p})
			rd := bytes.NewReader(tc.body)
			r := httptest.NewRequest(http.MethodPost, "/api/v1/write", rd)
			r.Header.Set("Content-Encoding", "snappy")
			r.Header.Set("Content-Type", tc.ct)
			ws := h.pool.Get()
			run := func() {
				rd.Reset(tc.body)
				// No ResponseWriter: a recorder cannot take read deadlines
				// and says so with an allocated error; a real connection
				// takes them without allocating.
				if herr := h.serve(ws, nil, r); herr != nil {
					t.Fatal(herr)
				}
			}
			run()
			if n := testing.AllocsPerRun(100, run); n != 0 {
				t.Fatalf("serve allocates %v times per request", n)
			}
			if p.samples == 0 {
				t.Fatal("the pipeline saw no samples")
			}
		})
	}
}

type nopProcessor struct {
	limit   int
	samples int
}

func (p *nopProcessor) MaxRequestBytes() int { return p.limit }

func (p *nopProcessor) Process(_ context.Context, req *wire.Request) (gateway.Result, error) {
	p.samples += req.NumSamples()
	return gateway.Result{}, nil
}

// TestAdmissionCountsTheDecodedModel: a 2.0 request decodes into several
// times its own size; the bytes in flight are corrected to that once it is
// decoded, and a request that then no longer fits beside the others is
// shed with 503.
func TestAdmissionCountsTheDecodedModel(t *testing.T) {
	pb := &writev2.Request{Symbols: []string{"", "__name__", "up", "a", "b"}}
	for range 2000 {
		pb.Timeseries = append(pb.Timeseries, writev2.TimeSeries{LabelsRefs: []uint32{1, 2, 3, 4, 4, 3}, Samples: []writev2.Sample{{Value: 1, Timestamp: 1}}})
	}
	raw := mustV2(t, pb)
	body := snappy.Encode(nil, raw)
	var req wire.Request
	if err := req.UnmarshalV2(raw); err != nil {
		t.Fatal(err)
	}
	estimate := admission.Cost(len(body), len(raw))
	real := admission.DecodedCost(len(body), len(raw), req.DecodedBytes())
	if real <= estimate {
		t.Fatalf("decoded cost %d not above the estimate %d: the test proves nothing", real, estimate)
	}
	// Room for the estimate beside another request in flight, not for the
	// real cost.
	const other = 1000
	adm := admission.New(admission.Options{MaxBytes: other + (estimate+real)/2})
	if adm.Acquire(other) != admission.Admitted {
		t.Fatal("the other request was not admitted")
	}
	p := &fakeProcessor{limit: 1 << 20}
	h := New(Options{Processor: p, Admission: adm, Registerer: prometheus.NewRegistry()})
	w := post(h, body, setHeader("Content-Type", ctV2))
	if w.Code != http.StatusServiceUnavailable || p.calls != 0 {
		t.Fatalf("status %d, pipeline called %d times; want 503 before the pipeline", w.Code, p.calls)
	}
	if _, bytes := adm.InFlight(); bytes != other {
		t.Fatalf("%d bytes in flight after the answer, want %d", bytes, other)
	}
	adm.Release(other)
	// Alone, it is admitted whatever its size.
	if w := post(h, body, setHeader("Content-Type", ctV2)); w.Code != http.StatusNoContent {
		t.Fatalf("alone: status %d: %s", w.Code, w.Body)
	}
}

// TestManyEmptySeriesRefused: a body of empty series (two bytes each,
// a series header each when decoded) that could never be decoded within the
// in-flight byte budget is refused with 413 before decoding allocates, even
// alone; real requests of the same size are not.
func TestManyEmptySeriesRefused(t *testing.T) {
	hostile := snappy.Encode(nil, bytes.Repeat([]byte{0x0a, 0x00}, 100_000)) // 200 kB, 100 000 series
	adm := admission.New(admission.Options{MaxBytes: 4 << 20})
	p := &fakeProcessor{limit: 1 << 20}
	h := New(Options{Processor: p, Admission: adm, Registerer: prometheus.NewRegistry()})
	if w := post(h, hostile, nil); w.Code != http.StatusRequestEntityTooLarge || p.calls != 0 {
		t.Fatalf("status %d (%s), pipeline called %d times; want 413 before the pipeline", w.Code, w.Body, p.calls)
	}
	if w := post(h, validBody(t), nil); w.Code != http.StatusNoContent {
		t.Fatalf("a real request: status %d", w.Code)
	}
	if _, b := adm.InFlight(); b != 0 {
		t.Fatalf("%d bytes left in flight", b)
	}
}

// deferringProcessor asks for deferred labels when told to, and records
// whether the series it got had them left encoded.
type deferringProcessor struct {
	fakeProcessor
	deferLabels bool
	lazy        []bool
}

func (p *deferringProcessor) DeferLabels() bool { return p.deferLabels }

func (p *deferringProcessor) Process(ctx context.Context, req *wire.Request) (gateway.Result, error) {
	for i := range req.Series {
		p.lazy = append(p.lazy, req.Series[i].Lazy())
	}
	return p.fakeProcessor.Process(ctx, req)
}

// TestLabelsDeferredWhenTheProcessorAsks: a LabelDeferrer decides, per
// request, whether the labels reach it still encoded; either way they
// decode to what was sent.
func TestLabelsDeferredWhenTheProcessorAsks(t *testing.T) {
	body := encode(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "a"}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: 1}},
	}}})
	for _, on := range []bool{true, false, true} {
		p := &deferringProcessor{fakeProcessor: fakeProcessor{limit: 1 << 20}, deferLabels: on}
		h := New(Options{Processor: p})
		if rec := post(h, body, nil); rec.Code != http.StatusNoContent {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if len(p.lazy) != 1 || p.lazy[0] != on {
			t.Fatalf("DeferLabels %v: the series came lazy %v", on, p.lazy)
		}
		if len(p.series) != 1 || p.series[0] != "__name__=up,job=a," {
			t.Fatalf("DeferLabels %v: labels %q after Sanitize", on, p.series)
		}
	}
}
