package forward

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/cardinal-gateway/cardinal/wire"
)

func TestParseProtocol(t *testing.T) {
	for s, want := range map[string]Protocol{"": ProtocolV1, "v1": ProtocolV1, "v2": ProtocolV2, "auto": ProtocolAuto} {
		if got, err := ParseProtocol(s); err != nil || got != want {
			t.Errorf("ParseProtocol(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if _, err := ParseProtocol("2.0"); err == nil {
		t.Error("ParseProtocol(2.0) accepted")
	}
}

// TestAutoFallsBack: under ProtocolAuto a downstream that does not speak
// 2.0, whether it says so with 415 or stores nothing and answers 204 without
// Written headers, gets everything again as 1.0, and every later request as
// 1.0 only.
func TestAutoFallsBack(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		name := map[bool]string{false: "204 without Written headers", true: "415"}[refuse]
		t.Run(name, func(t *testing.T) {
			d := newDownstream(t)
			d.refuseV2 = refuse
			srv := httptest.NewServer(d)
			t.Cleanup(srv.Close)
			c, reg := newClient(t, Options{URL: srv.URL, Protocol: ProtocolAuto})
			if !c.SendsV2() {
				t.Fatal("auto starts with 1.0")
			}
			specs := specsFor(5, none)
			req, _ := buildRequest(t, specs, prompb.MetricMetadata{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "istio_requests_total"})
			var sc Scratch
			rep, err := Deliver(testCtx(t), c, req, &sc, nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.SendsV2() || d.v2Bodies != 1 || rep.DeliveredSeries != 5 || d.metadata != 1 {
				t.Fatalf("after fallback: v2=%v, 2.0 bodies %d, delivered %d series and %d metadata; want 1.0, 1, 5, 1", c.SendsV2(), d.v2Bodies, rep.DeliveredSeries, d.metadata)
			}
			for _, s := range specs {
				if d.accepted[s.id] != 1 {
					t.Fatalf("series %s accepted %d times", s.id, d.accepted[s.id])
				}
			}
			if _, err := Deliver(testCtx(t), c, req, &sc, nil); err != nil {
				t.Fatal(err)
			}
			if d.v2Bodies != 1 {
				t.Fatalf("%d 2.0 bodies after the fallback, want none more", d.v2Bodies-1)
			}
			if got := testutil.ToFloat64(c.m.fallbacks); got != 1 {
				t.Fatalf("fallbacks = %v", got)
			}
			if got, _ := testutil.GatherAndCount(reg, "cardinal_forward_remote_write_version"); got != 1 || testutil.ToFloat64(c.m.version) != 1 {
				t.Fatalf("version gauge = %v", testutil.ToFloat64(c.m.version))
			}
		})
	}
}

// TestForcedV2Misconfigured: with ProtocolV2 the same answers keep the data
// with the sender (502) instead of acknowledging what was not stored.
func TestForcedV2Misconfigured(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		d := newDownstream(t)
		d.refuseV2 = refuse
		srv := httptest.NewServer(d)
		t.Cleanup(srv.Close)
		c, _ := newClient(t, Options{URL: srv.URL, Protocol: ProtocolV2})
		req, _ := buildRequest(t, specsFor(3, none))
		var sc Scratch
		_, err := Deliver(testCtx(t), c, req, &sc, nil)
		if e := asError(t, err, http.StatusBadGateway); e == nil {
			t.Fatal("no error")
		}
		if !c.SendsV2() {
			t.Fatal("ProtocolV2 fell back")
		}
	}
}

// TestV2DeliveryIsolatesPoisonedSeries: a 2.0 downstream gets 2.0, and a
// refused series is isolated as with 1.0.
func TestV2DeliveryIsolatesPoisonedSeries(t *testing.T) {
	d := newDownstream(t)
	d.speaksV2 = true
	c := newDownstreamClient(t, d, Options{Protocol: ProtocolV2})
	specs := specsFor(16, only("ooo", 5, 11))
	req, _ := buildRequest(t, specs)
	var sc Scratch
	var rj rejections
	rep, err := Deliver(testCtx(t), c, req, &sc, rj.add)
	if err != nil {
		t.Fatal(err)
	}
	if d.v2Bodies != 0 || rep.DeliveredSeries != 14 || rep.RejectedSeries != 2 {
		t.Fatalf("delivered %d, rejected %d (fallback bodies %d)", rep.DeliveredSeries, rep.RejectedSeries, d.v2Bodies)
	}
	checkDelivery(t, d, specs, rep, rj.list)
}

type typeSource map[string]int32

func (m typeSource) LookupMetadata(name []byte) wire.SeriesMetadata {
	return wire.SeriesMetadata{Type: m[string(name)]}
}

// TestV2CarriesMetadata: series sent as 2.0 carry the
// metadata of their family from Scratch.Metadata.
func TestV2CarriesMetadata(t *testing.T) {
	var got writev2.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := make([]byte, r.ContentLength)
		_, _ = r.Body.Read(body)
		raw, err := snappy.Decode(nil, body)
		if err == nil {
			err = got.Unmarshal(raw)
		}
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		w.Header().Set("X-Prometheus-Remote-Write-Samples-Written", "2")
		w.WriteHeader(204)
	}))
	t.Cleanup(srv.Close)
	c, _ := newClient(t, Options{URL: srv.URL, Protocol: ProtocolV2})
	req, _ := buildRequest(t, specsFor(2, none))
	sc := Scratch{Metadata: typeSource{"istio_requests_total": 1}}
	if _, err := Deliver(testCtx(t), c, req, &sc, nil); err != nil {
		t.Fatal(err)
	}
	if len(got.Timeseries) != 2 || got.Timeseries[1].Metadata.Type != writev2.Metadata_METRIC_TYPE_COUNTER {
		t.Fatalf("got %+v", got.Timeseries)
	}
}

// TestDeliverDropsRefusedExemplars: a downstream that refuses a series for
// its exemplar (Prometheus 3: "out of order exemplar") gets the series once
// more without it, and the series counts as delivered.
func TestDeliverDropsRefusedExemplars(t *testing.T) {
	var bodies, withExemplars int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := make([]byte, r.ContentLength)
		_, _ = io.ReadFull(r.Body, body)
		raw, _ := snappy.Decode(nil, body)
		var req prompb.WriteRequest
		_ = req.Unmarshal(raw)
		bodies++
		for _, ts := range req.Timeseries {
			if len(ts.Exemplars) > 0 && ts.Labels[1].Value == "1" {
				withExemplars++
				http.Error(w, "out of order exemplar for series", http.StatusBadRequest)
				return
			}
		}
		w.WriteHeader(204)
	}))
	t.Cleanup(srv.Close)
	c, _ := newClient(t, Options{URL: srv.URL})
	req, _ := buildRequest(t, specsFor(3, none))
	for i := range req.Series {
		req.Series[i].Exemplars = []wire.Exemplar{{Value: 1, Timestamp: 1}}
	}
	m, err := NewDeliverMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	var sc Scratch
	var rj rejections
	rep, err := m.Deliver(testCtx(t), NewTarget(c), req, &sc, rj.add)
	if err != nil {
		t.Fatal(err)
	}
	if rep.DeliveredSeries != 3 || rep.RejectedSeries != 0 || len(rj.list) != 0 {
		t.Fatalf("delivered %d, rejected %d; want all 3 delivered", rep.DeliveredSeries, rep.RejectedSeries)
	}
	if got := testutil.ToFloat64(m.refusedExemplars); got != 1 {
		t.Fatalf("refused exemplars = %v, want 1", got)
	}
}
