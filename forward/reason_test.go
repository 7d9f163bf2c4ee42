package forward

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
)

// TestClassifyRejection feeds the messages real receivers answer with.
// Prometheus' are copied from storage/interface.go and storage/errors.go of
// v0.316.0 (importing storage would pull in modules go.mod does not have);
// the histogram ones come from its error values.
func TestClassifyRejection(t *testing.T) {
	t.Parallel()
	f := func(code int, msg, want string) {
		t.Helper()
		if got := classifyRejection(code, []byte(msg)); got != want {
			t.Errorf("classifyRejection(%d, %q) = %q, want %q", code, msg, got, want)
		}
	}
	// Prometheus' receiver answers 400 with http.Error(w, err.Error(), 400).
	f(400, "out of order sample\n", ReasonOutOfOrder)           // storage.ErrOutOfOrderSample
	f(400, "duplicate sample for timestamp\n", ReasonDuplicate) // storage.ErrDuplicateSampleForTimestamp
	f(400, "duplicate sample for timestamp 1700000000000; overrides not allowed: existing 1, new value 2\n", ReasonDuplicate)
	f(400, "duplicate sample for timestamp 1700000000000; overrides not allowed: existing is a histogram, new value 2\n", ReasonDuplicate)
	f(400, "out of bounds\n", ReasonOutOfBounds)                                     // storage.ErrOutOfBounds
	f(400, "out of bounds: timestamp is too far in the future\n", ReasonOutOfBounds) // timeLimitAppender
	f(400, "too old sample\n", ReasonOutOfBounds)                                    // storage.ErrTooOldSample
	f(400, histogram.ErrHistogramCountNotBigEnough.Error()+"\n", ReasonInvalid)
	f(400, histogram.ErrHistogramSpanIndexOutOfRange.Error()+"\n", ReasonInvalid)
	f(400, "proto: wrong wireType = 2 for field Timestamp\n", ReasonInvalid)
	f(400, "", ReasonInvalid)

	// Thanos receive: the same errors wrapped, answered 409; label errors
	// mention order too but are about the label set.
	f(409, "add 3 samples: out of order sample", ReasonOutOfOrder)
	f(409, "store locally for endpoint 127.0.0.1:10901: add 1 samples: duplicate sample for timestamp", ReasonDuplicate)
	f(409, "add 2 samples: out of bounds", ReasonOutOfBounds)
	f(409, "add 1 samples: too old sample", ReasonOutOfBounds)
	f(409, "add 1 series: out of order labels", ReasonInvalid)
	f(409, "add 1 series: duplicate labels", ReasonInvalid)

	// Mimir (pkg/ingester/errors_test.go); its 413 (pkg/distributor/push_test.go).
	f(400, `the sample has been rejected because another sample with a more recent timestamp has already been ingested and out-of-order samples are not allowed (err-mimir-sample-out-of-order). The affected sample has timestamp 1970-01-19T05:30:43.969Z and is from series {__name__="test"}`, ReasonOutOfOrder)
	f(400, `the sample has been rejected because another sample with the same timestamp, but a different value, has already been ingested (err-mimir-sample-duplicate-timestamp). The affected sample has timestamp 1970-01-19T05:30:43.969Z and is from series {__name__="test"}`, ReasonDuplicate)
	f(400, `the sample has been rejected because its timestamp is too old (err-mimir-sample-timestamp-too-old). The affected sample has timestamp 1970-01-19T05:30:43.969Z and is from series {__name__="test"}`, ReasonOutOfBounds)
	f(400, `the sample has been rejected because another sample with a more recent timestamp has already been ingested and this sample is beyond the out-of-order time window of 2h (err-mimir-sample-timestamp-too-old). The affected sample has timestamp 1970-01-19T05:30:43.969Z and is from series {__name__="test"}`, ReasonOutOfBounds)
	f(400, `received a sample whose timestamp is too far in the future (err-mimir-too-far-in-future). The affected sample has timestamp 1970-01-19T05:30:43.969Z and is from series {__name__="test"}`, ReasonOutOfBounds)
	f(413, `the incoming push request has been rejected because its message size of 100 bytes is larger than the allowed limit of 50 bytes (err-mimir-distributor-max-write-message-size). To adjust the related limit, configure -distributor.max-recv-msg-size, or contact your service administrator.`, ReasonTooLarge)
	f(400, `received a series whose label value length exceeds the limit, label: 'path', value: 'aaaa' (truncated) series: 'http_requests_total{path="aaaa"}' (err-mimir-label-value-too-long)`, ReasonInvalid)
	f(400, `received a series with duplicate label name, label: 'job' series: 'up{job="a", job="b"}' (err-mimir-duplicate-label-names)`, ReasonInvalid)

	// VictoriaMetrics (lib/protoparser) and Go's http.MaxBytesReader.
	f(400, "too big packed request; mustn't exceed -maxInsertRequestSize=33554432 bytes; got 40000000 bytes", ReasonTooLarge)
	f(400, "too big unpacked request; mustn't exceed `-maxInsertRequestSize=33554432` bytes", ReasonTooLarge)
	f(400, "cannot decompress request with length 12: snappy: corrupt input", ReasonInvalid)
	f(400, "http: request body too large\n", ReasonTooLarge)

	// 413 wins whatever the body says; case does not matter.
	f(413, "", ReasonTooLarge)
	f(413, "out of order sample", ReasonTooLarge)
	f(400, "OUT OF ORDER SAMPLE", ReasonOutOfOrder)
	f(400, "Too Old Sample", ReasonOutOfBounds)
}

func TestContainsFold(t *testing.T) {
	t.Parallel()
	f := func(s, sub string, want bool) {
		t.Helper()
		if got := containsFold([]byte(s), sub); got != want {
			t.Errorf("containsFold(%q, %q) = %v, want %v", s, sub, got, want)
		}
	}
	f("", "", true)
	f("abc", "", true)
	f("", "a", false)
	f("ab", "abc", false)
	f("xxABCxx", "abc", true)
	f("xxABxCx", "abc", false)
	f("aab", "ab", true)
	f("abc", "abc", true)
	f("\xff\xfeout of order", "out of order", true)
}

// TestSendSetsCodeAndReason: every *Error of Send carries the downstream's
// code, and rejections their Reason.
func TestSendSetsCodeAndReason(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code       int
		body       string
		wantStatus int
		wantReason string
	}{
		{400, "out of order sample\n", 400, ReasonOutOfOrder},
		{400, "duplicate sample for timestamp 1700000000000; overrides not allowed: existing 1, new value 2\n", 400, ReasonDuplicate},
		{400, "too old sample", 400, ReasonOutOfBounds},
		{409, "add 1 samples: out of bounds", 400, ReasonOutOfBounds},
		{413, "", 400, ReasonTooLarge},
		{400, "bad labels", 400, ReasonInvalid},
		{401, "out of order sample", 502, ""},
		{404, "", 502, ""},
		{503, "too old sample", 503, ""},
		{429, "", 503, ""},
	} {
		t.Run(fmt.Sprint(tc.code, " ", tc.body), func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
				w.WriteHeader(tc.code)
				_, _ = io.WriteString(w, tc.body)
			})
			c, _ := newClient(t, Options{URL: srv.URL, MaxRetries: -1})
			e := asError(t, c.Send(testCtx(t), testBody), tc.wantStatus)
			if e.Code != tc.code || e.Reason != tc.wantReason {
				t.Errorf("Code, Reason = %d, %q; want %d, %q", e.Code, e.Reason, tc.code, tc.wantReason)
			}
		})
	}

	t.Run("transport error has code 0", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, status(200))
		url := srv.URL
		srv.Close()
		c, _ := newClient(t, Options{URL: url, MaxRetries: -1})
		e := asError(t, c.Send(testCtx(t), testBody), http.StatusServiceUnavailable)
		if e.Code != 0 || e.Reason != "" {
			t.Errorf("Code, Reason = %d, %q; want 0, \"\"", e.Code, e.Reason)
		}
		if e.Err == nil {
			t.Error("Err = nil, want the transport error")
		}
	})
}
