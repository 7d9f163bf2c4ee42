// Package rw2conv converts remote-write 1.0 requests to 2.0 with
// Prometheus' own types, so that tests can send the same data in both
// versions. It is for tests and tools; the request path has its own codec
// (package wire).
package rw2conv

import (
	"os"
	"strings"

	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// EnvVersion set to "2" makes the test suites that honour it (Testing)
// send their requests as remote write 2.0.
const EnvVersion = "CARDINAL_TEST_RW"

// Testing reports whether tests should use remote write 2.0.
func Testing() bool { return os.Getenv(EnvVersion) == "2" }

// FromV1 converts pb to a 2.0 request: labels through a symbol table,
// histograms field for field (the messages share their numbering), and
// 1.0's per-family metadata attached to every series of its family (the
// family name itself, or with a _total, _bucket, _count or _sum suffix).
// Series keep their order; a series without samples stays without.
func FromV1(pb *prompb.WriteRequest) *writev2.Request {
	st := writev2.NewSymbolTable()
	meta := map[string]prompb.MetricMetadata{}
	for _, m := range pb.Metadata {
		meta[m.MetricFamilyName] = m
	}
	out := &writev2.Request{}
	for _, ts := range pb.Timeseries {
		var s writev2.TimeSeries
		name := ""
		for _, l := range ts.Labels {
			s.LabelsRefs = append(s.LabelsRefs, st.Symbolize(l.Name), st.Symbolize(l.Value))
			if l.Name == "__name__" {
				name = l.Value
			}
		}
		for _, smp := range ts.Samples {
			s.Samples = append(s.Samples, writev2.Sample{Value: smp.Value, Timestamp: smp.Timestamp})
		}
		for _, h := range ts.Histograms {
			b, err := h.Marshal()
			if err != nil {
				panic(err) // a prompb.Histogram always marshals
			}
			var vh writev2.Histogram
			if err := vh.Unmarshal(b); err != nil {
				panic(err)
			}
			s.Histograms = append(s.Histograms, vh)
		}
		for _, e := range ts.Exemplars {
			ve := writev2.Exemplar{Value: e.Value, Timestamp: e.Timestamp}
			for _, l := range e.Labels {
				ve.LabelsRefs = append(ve.LabelsRefs, st.Symbolize(l.Name), st.Symbolize(l.Value))
			}
			s.Exemplars = append(s.Exemplars, ve)
		}
		if m, ok := familyOf(meta, name); ok {
			s.Metadata = writev2.Metadata{
				Type:    writev2.Metadata_MetricType(m.Type),
				HelpRef: st.Symbolize(m.Help),
				UnitRef: st.Symbolize(m.Unit),
			}
		}
		out.Timeseries = append(out.Timeseries, s)
	}
	out.Symbols = st.Symbols()
	return out
}

func familyOf(meta map[string]prompb.MetricMetadata, name string) (prompb.MetricMetadata, bool) {
	if m, ok := meta[name]; ok {
		return m, true
	}
	for _, sfx := range []string{"_total", "_bucket", "_count", "_sum"} {
		if f, ok := strings.CutSuffix(name, sfx); ok {
			m, ok := meta[f]
			return m, ok
		}
	}
	return prompb.MetricMetadata{}, false
}

// MarshalV1AsV2 decodes a 1.0 encoding and returns its 2.0 encoding.
func MarshalV1AsV2(raw []byte) ([]byte, error) {
	var pb prompb.WriteRequest
	if err := pb.Unmarshal(raw); err != nil {
		return nil, err
	}
	return FromV1(&pb).Marshal()
}
