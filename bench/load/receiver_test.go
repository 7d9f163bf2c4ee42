package load

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

func series(samples []prompb.Sample, kv ...string) prompb.TimeSeries {
	var ls []prompb.Label
	for i := 0; i < len(kv); i += 2 {
		ls = append(ls, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return prompb.TimeSeries{Labels: ls, Samples: samples}
}

func smp(ts int64, v float64) []prompb.Sample { return []prompb.Sample{{Timestamp: ts, Value: v}} }

func post(t *testing.T, url string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func encode(t *testing.T, ts ...prompb.TimeSeries) []byte {
	t.Helper()
	raw, err := (&prompb.WriteRequest{Timeseries: ts}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

func TestReceiverCounts(t *testing.T) {
	r := NewReceiver([]string{"pod", "request_id"})
	srv := httptest.NewServer(r)
	defer srv.Close()

	// Two requests; the second repeats one series and timestamp in another
	// label order (a duplicate), sends an older sample (out of order) and a
	// series carrying a denied label.
	if code := post(t, srv.URL, encode(t,
		series(smp(1000, 5), "__name__", "a_total", "job", "x"),
		series(smp(1000, 1), "__name__", "g", "job", "x"),
	)); code != http.StatusNoContent {
		t.Fatalf("status %d", code)
	}
	if code := post(t, srv.URL, encode(t,
		series(smp(1000, 7), "job", "x", "__name__", "a_total"),
		series(smp(2000, 9), "__name__", "a_total", "job", "x"),
		series(smp(500, 3), "__name__", "g", "job", "x"),
		series(smp(1000, 1), "__name__", "b_total", "pod", "p-1"),
	)); code != http.StatusNoContent {
		t.Fatalf("status %d", code)
	}
	// Empty writes (readiness probes) count as requests and carry nothing.
	if code := post(t, srv.URL, encode(t)); code != http.StatusNoContent {
		t.Fatalf("status %d", code)
	}
	if code := post(t, srv.URL, []byte("not snappy")); code != http.StatusBadRequest {
		t.Fatalf("garbage: status %d, want 400", code)
	}

	st := r.Stats()
	check := func(name string, got, want int64) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	check("requests", st.Requests, 3)
	check("bad requests", st.BadRequests, 1)
	check("samples", st.Samples, 6)
	check("series entries", st.SeriesInReqs, 6)
	check("distinct series", int64(st.Series), 3)
	check("duplicates", st.Duplicates, 1)
	check("out of order", st.OutOfOrder, 1)
	check("denied series", st.DeniedSeries, 1)
	if !slices.Equal(st.DeniedNames, []string{"pod"}) {
		t.Errorf("denied names %v, want [pod]", st.DeniedNames)
	}
	if !slices.Equal(st.LabelNames, []string{"__name__", "job", "pod"}) {
		t.Errorf("label names %v", st.LabelNames)
	}
	if st.LastArrival.IsZero() {
		t.Error("last arrival not recorded")
	}

	c := r.Compare(map[string]float64{
		`{__name__="a_total", job="x"}`:   9,     // newest sample wins
		`{__name__="g", job="x"}`:         1,     // gauge: arrived, value not checked
		`{__name__="c_total", job="x"}`:   4,     // never arrived
		`{__name__="b_total", pod="p-1"}`: 1.005, // within 1%, not exact
	})
	want := Check{Expected: 4, Arrived: 3, Counters: 3, Within1pc: 2, Exact: 1, Unexpected: 0,
		Example: `{__name__="c_total", job="x"} missing, want 4`}
	if c != want {
		t.Errorf("Compare = %+v\nwant      %+v", c, want)
	}
}

func TestReceiverMethod(t *testing.T) {
	srv := httptest.NewServer(NewReceiver(nil))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: status %d, want 405", resp.StatusCode)
	}
}

func TestIsCounter(t *testing.T) {
	f := func(key string, want bool) {
		t.Helper()
		if got := isCounter(key); got != want {
			t.Fatalf("isCounter(%s) = %v, want %v", key, got, want)
		}
	}
	f(`{__name__="istio_requests_total", app="a"}`, true)
	f(`{__name__="istio_request_duration_milliseconds_bucket", le="+Inf"}`, true)
	f(`{__name__="x_sum"}`, true)
	f(`{__name__="x_count"}`, true)
	f(`{__name__="envoy_cluster_upstream_cx_active", app="total"}`, false)
	f(`{app="x_total"}`, false)
}
