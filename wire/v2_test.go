package wire

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/cardinal-gateway/cardinal/internal/rw2conv"
)

// toV2Histogram converts a 1.0 histogram through its encoding: the two
// messages share their fields.
func toV2Histogram(t testing.TB, h prompb.Histogram) writev2.Histogram {
	t.Helper()
	b, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var out writev2.Histogram
	if err := out.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	return out
}

// randomRequestV2 builds a 2.0 request exercising every field: a symbol
// table, label references (now and then out of range or odd in number),
// samples with start timestamps, integer, float and custom-bucket
// histograms, exemplars and metadata. Series are sometimes left without
// samples. bad turns those invalid cases on.
func randomRequestV2(t testing.TB, rng *rand.Rand, nSeries int, bad bool) *writev2.Request {
	return v2FromV1(t, rng, randomRequest(rng, nSeries, false), bad, true)
}

// v2FromV1 converts a 1.0 request to 2.0 with rw2conv (after naming every
// series), then adds start timestamps, histograms with custom buckets,
// metadata and, when bad, spec violations; see randomRequestV2.
func v2FromV1(t testing.TB, rng *rand.Rand, v1 *prompb.WriteRequest, bad, extraHistograms bool) *writev2.Request {
	for i := range v1.Timeseries {
		ts := &v1.Timeseries[i]
		ts.Labels = append([]prompb.Label{{Name: "__name__", Value: fmt.Sprint("m", i%5)}}, ts.Labels...)
	}
	req := rw2conv.FromV1(v1)
	// Symbolizing the table in order gives every symbol its own index
	// back, so that the extras can add symbols of their own.
	st := writev2.NewSymbolTable()
	for _, sym := range req.Symbols {
		st.Symbolize(sym)
	}
	for i := range req.Timeseries {
		out := &req.Timeseries[i]
		for j := range out.Samples {
			if rng.IntN(3) == 0 {
				out.Samples[j].StartTimestamp = out.Samples[j].Timestamp - rng.Int64N(1e6)
			}
		}
		for j := range out.Histograms {
			if rng.IntN(4) == 0 {
				out.Histograms[j].StartTimestamp = out.Histograms[j].Timestamp - 1000
			}
		}
		if extraHistograms && rng.IntN(4) == 0 {
			out.Histograms = append(out.Histograms, toV2Histogram(t, randomValidHistogram(rng)))
		}
		if rng.IntN(2) == 0 {
			out.Metadata = writev2.Metadata{
				Type:    writev2.Metadata_MetricType(rng.IntN(8)),
				HelpRef: st.Symbolize(fmt.Sprint("help ", rng.IntN(3))),
				UnitRef: st.Symbolize([]string{"", "seconds", "bytes"}[rng.IntN(3)]),
			}
		}
		if bad {
			switch rng.IntN(12) {
			case 0:
				out.LabelsRefs = append(out.LabelsRefs, 1)
			case 1:
				out.LabelsRefs = append(out.LabelsRefs, 1, 1<<20)
			case 2:
				out.Metadata.HelpRef = 1 << 30
			case 3:
				out.Samples, out.Histograms = nil, nil
			case 4:
				out.Exemplars = append(out.Exemplars, writev2.Exemplar{LabelsRefs: []uint32{0, 5000}})
			}
		}
	}
	req.Symbols = st.Symbols()
	return req
}

func mustMarshalV2(t testing.TB, req *writev2.Request) []byte {
	t.Helper()
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// v2Invalid returns the reason Prometheus' receiver refuses the series for
// on the way in, or -1.
func v2Invalid(ts *writev2.TimeSeries, symbols []string) InvalidReason {
	refsOK := func(refs []uint32) bool {
		if len(refs)%2 != 0 {
			return false
		}
		for _, r := range refs {
			if int(r) >= len(symbols) {
				return false
			}
		}
		return true
	}
	if !refsOK(ts.LabelsRefs) || int(ts.Metadata.HelpRef) >= len(symbols) || int(ts.Metadata.UnitRef) >= len(symbols) {
		return InvalidReference
	}
	for _, e := range ts.Exemplars {
		if !refsOK(e.LabelsRefs) {
			return InvalidReference
		}
	}
	if len(ts.Samples) == 0 && len(ts.Histograms) == 0 && len(ts.Exemplars) == 0 {
		return InvalidNoSamples
	}
	return -1
}

// foldReference applies to Prometheus' decoding what foldExemplars does:
// a valid series carrying only exemplars gives them to the first valid
// series with the same labels and samples or histograms, and goes.
func foldReference(pb *writev2.Request) {
	key := func(ts *writev2.TimeSeries) string {
		var sb strings.Builder
		for _, r := range ts.LabelsRefs {
			sb.WriteString(pb.Symbols[r])
			sb.WriteByte(0xff)
		}
		return sb.String()
	}
	data := func(ts *writev2.TimeSeries) bool { return len(ts.Samples) > 0 || len(ts.Histograms) > 0 }
	first := map[string]int{}
	for i := range pb.Timeseries {
		ts := &pb.Timeseries[i]
		if v2Invalid(ts, pb.Symbols) < 0 && data(ts) {
			if _, ok := first[key(ts)]; !ok {
				first[key(ts)] = i
			}
		}
	}
	var out []writev2.TimeSeries
	folded := map[int]bool{}
	for i := range pb.Timeseries {
		ts := &pb.Timeseries[i]
		if v2Invalid(ts, pb.Symbols) >= 0 || data(ts) {
			continue
		}
		if j, ok := first[key(ts)]; ok {
			pb.Timeseries[j].Exemplars = append(pb.Timeseries[j].Exemplars, ts.Exemplars...)
			folded[i] = true
		}
	}
	for i, ts := range pb.Timeseries {
		if !folded[i] {
			out = append(out, ts)
		}
	}
	pb.Timeseries = out
}

// sameAsWritev2 compares a decoded request with Prometheus' own decoding
// of it: series by series, labels resolved through the symbol table,
// samples with start timestamps, histograms field by field, exemplars and
// metadata; a series Prometheus would refuse must be marked invalid.
func sameAsWritev2(r *Request, pb *writev2.Request) error {
	if len(r.Series) != len(pb.Timeseries) {
		return fmt.Errorf("%d series, want %d", len(r.Series), len(pb.Timeseries))
	}
	resolve := func(refs []uint32) []Label {
		var ls []Label
		for k := 0; k+1 < len(refs); k += 2 {
			ls = append(ls, Label{Name: []byte(pb.Symbols[refs[k]]), Value: []byte(pb.Symbols[refs[k+1]])})
		}
		return ls
	}
	sameLabels := func(got, want []Label) error {
		if len(got) != len(want) {
			return fmt.Errorf("%d labels, want %d", len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i].Name, want[i].Name) || !bytes.Equal(got[i].Value, want[i].Value) {
				return fmt.Errorf("label %d = %q=%q, want %q=%q", i, got[i].Name, got[i].Value, want[i].Name, want[i].Value)
			}
		}
		return nil
	}
	for i := range r.Series {
		s, want := &r.Series[i], &pb.Timeseries[i]
		if reason := v2Invalid(want, pb.Symbols); reason >= 0 {
			if s.invalid != uint8(reason)+1 {
				return fmt.Errorf("series %d: marked %d, want reason %d (%s)", i, s.invalid, reason+1, reason)
			}
			continue
		}
		if s.invalid != 0 {
			return fmt.Errorf("series %d: marked invalid (%s), Prometheus takes it", i, InvalidReason(s.invalid-1))
		}
		if err := sameLabels(s.Labels, resolve(want.LabelsRefs)); err != nil {
			return fmt.Errorf("series %d: %w", i, err)
		}
		if len(s.Samples) != len(want.Samples) || len(s.Exemplars) != len(want.Exemplars) || len(s.Histograms) != len(want.Histograms) {
			return fmt.Errorf("series %d: counts differ", i)
		}
		for j, smp := range s.Samples {
			w := want.Samples[j]
			if math.Float64bits(smp.Value) != math.Float64bits(w.Value) || smp.Timestamp != w.Timestamp || smp.StartTimestamp != w.StartTimestamp {
				return fmt.Errorf("series %d sample %d = %+v, want %+v", i, j, smp, w)
			}
		}
		for j, e := range s.Exemplars {
			w := want.Exemplars[j]
			if err := sameLabels(e.Labels, resolve(w.LabelsRefs)); err != nil {
				return fmt.Errorf("series %d exemplar %d: %w", i, j, err)
			}
			if math.Float64bits(e.Value) != math.Float64bits(w.Value) || e.Timestamp != w.Timestamp {
				return fmt.Errorf("series %d exemplar %d = %v@%d, want %v@%d", i, j, e.Value, e.Timestamp, w.Value, w.Timestamp)
			}
		}
		for j, h := range s.Histograms {
			var got writev2.Histogram
			if err := got.Unmarshal(h.Data); err != nil {
				return fmt.Errorf("series %d histogram %d: %w", i, j, err)
			}
			w := want.Histograms[j]
			// Compared as Prometheus encodes them: NaN is not DeepEqual.
			got.XXX_unrecognized, w.XXX_unrecognized = nil, nil
			gb, err1 := got.Marshal()
			wb, err2 := w.Marshal()
			if h.Timestamp != w.Timestamp || err1 != nil || err2 != nil || !bytes.Equal(gb, wb) {
				return fmt.Errorf("series %d histogram %d = %+v, want %+v", i, j, got, w)
			}
		}
		m := want.Metadata
		if s.Meta.Type != int32(m.Type) || string(s.Meta.Help) != pb.Symbols[m.HelpRef] || string(s.Meta.Unit) != pb.Symbols[m.UnitRef] {
			return fmt.Errorf("series %d metadata = %d %q %q, want %+v", i, s.Meta.Type, s.Meta.Help, s.Meta.Unit, m)
		}
	}
	return nil
}

func TestUnmarshalV2MatchesPrometheus(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	var r Request
	for i := range 1000 {
		pb := randomRequestV2(t, rng, rng.IntN(12), i%2 == 1)
		src := mustMarshalV2(t, pb)
		if err := r.UnmarshalV2(src); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		var back writev2.Request
		if err := back.Unmarshal(src); err != nil {
			t.Fatal(err)
		}
		if err := sameAsWritev2(&r, &back); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		r.FoldExemplars()
		foldReference(&back)
		if err := sameAsWritev2(&r, &back); err != nil {
			t.Fatalf("case %d, folded: %v", i, err)
		}
	}
}

// TestUnmarshalV2SeriesValidation: each spec violation of a series costs
// that series only, with its reason, and the others are kept.
func TestUnmarshalV2SeriesValidation(t *testing.T) {
	good := writev2.TimeSeries{LabelsRefs: []uint32{1, 2}, Samples: []writev2.Sample{{Value: 1, Timestamp: 1}}}
	for name, tc := range map[string]struct {
		ts     writev2.TimeSeries
		reason InvalidReason
	}{
		"odd label references":      {writev2.TimeSeries{LabelsRefs: []uint32{1, 2, 1}, Samples: good.Samples}, InvalidReference},
		"label reference past end":  {writev2.TimeSeries{LabelsRefs: []uint32{1, 9}, Samples: good.Samples}, InvalidReference},
		"help reference past end":   {writev2.TimeSeries{LabelsRefs: []uint32{1, 2}, Samples: good.Samples, Metadata: writev2.Metadata{HelpRef: 3}}, InvalidReference},
		"exemplar reference":        {writev2.TimeSeries{LabelsRefs: []uint32{1, 2}, Samples: good.Samples, Exemplars: []writev2.Exemplar{{LabelsRefs: []uint32{1}}}}, InvalidReference},
		"no samples, no histograms": {writev2.TimeSeries{LabelsRefs: []uint32{1, 2}}, InvalidNoSamples},
		"no metric name":            {writev2.TimeSeries{LabelsRefs: []uint32{2, 2}, Samples: good.Samples}, InvalidNoName},
	} {
		t.Run(name, func(t *testing.T) {
			pb := &writev2.Request{Symbols: []string{"", "__name__", "up"}, Timeseries: []writev2.TimeSeries{good, tc.ts, good}}
			var r Request
			if err := r.UnmarshalV2(mustMarshalV2(t, pb)); err != nil {
				t.Fatal(err)
			}
			var st SanitizeStats
			r.Sanitize(&st)
			if len(r.Series) != 2 || st.DroppedSeries() != 1 || st.Series[tc.reason] != 1 {
				t.Fatalf("kept %d series, dropped %s; want the bad one dropped for %q", len(r.Series), st.Describe(), tc.reason)
			}
		})
	}
}

func TestUnmarshalV2RejectsNonEmptyFirstSymbol(t *testing.T) {
	pb := &writev2.Request{Symbols: []string{"x", "__name__", "up"}, Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{1, 2}, Samples: []writev2.Sample{{Value: 1}}}}}
	var r Request
	err := r.UnmarshalV2(mustMarshalV2(t, pb))
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v, want a malformed-request error", err)
	}
}

// TestMarshalAppendV2MatchesModel encodes decoded 1.0 requests as 2.0 and
// reads them back with Prometheus' decoder: every label, sample, exemplar
// and histogram must be there, symbols[0] empty and every symbol once.
func TestMarshalAppendV2MatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	var r Request
	var st SymbolTable
	var out []byte
	for i := range 1000 {
		pb := randomRequest(rng, rng.IntN(20), true)
		if err := r.Unmarshal(mustMarshal(t, pb)); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 && len(r.Series) > 0 {
			// A series carrying its labels encoded, as merged outputs do.
			r.Series[0].SetEncodedLabels(AppendEncodedLabels(nil, r.Series[0].Labels))
		}
		out = r.MarshalAppendV2(out[:0], &st, nil)
		var back writev2.Request
		if err := back.Unmarshal(out); err != nil {
			t.Fatalf("case %d: Prometheus cannot decode the encoding: %v", i, err)
		}
		if len(back.Symbols) == 0 || back.Symbols[0] != "" {
			t.Fatalf("case %d: symbols[0] = %q", i, back.Symbols)
		}
		seen := map[string]bool{}
		for _, s := range back.Symbols {
			if seen[s] {
				t.Fatalf("case %d: symbol %q written twice", i, s)
			}
			seen[s] = true
		}
		// Compare through the decoder already proven against Prometheus.
		var got Request
		if err := got.UnmarshalV2(out); err != nil {
			t.Fatal(err)
		}
		if err := sameSeries(&got, sendable(&r)); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
	}
}

// sameSeries compares the series of two requests: labels, samples,
// exemplars, histogram bytes and metadata. Empty label values and
// (invalid) series without samples compare as they are.
func sameSeries(got, want *Request) error {
	if len(got.Series) != len(want.Series) {
		return fmt.Errorf("%d series, want %d", len(got.Series), len(want.Series))
	}
	for i := range want.Series {
		g, w := &got.Series[i], &want.Series[i]
		wl := w.Labels
		if w.encodedOnly {
			var err error
			if wl, err = DecodeLabels(w.rawLabels); err != nil {
				return err
			}
		}
		if fmt.Sprint(labelStrings(g.Labels)) != fmt.Sprint(labelStrings(wl)) {
			return fmt.Errorf("series %d labels %v, want %v", i, labelStrings(g.Labels), labelStrings(wl))
		}
		if len(g.Samples) != len(w.Samples) || len(g.Histograms) != len(w.Histograms) || len(g.Exemplars) != len(w.Exemplars) {
			return fmt.Errorf("series %d: counts differ", i)
		}
		for j := range w.Samples {
			a, b := g.Samples[j], w.Samples[j]
			if math.Float64bits(a.Value) != math.Float64bits(b.Value) || a.Timestamp != b.Timestamp || a.StartTimestamp != b.StartTimestamp {
				return fmt.Errorf("series %d sample %d = %+v, want %+v", i, j, a, b)
			}
		}
		for j := range w.Histograms {
			if !bytes.Equal(g.Histograms[j].Data, w.Histograms[j].Data) {
				return fmt.Errorf("series %d histogram %d differs", i, j)
			}
		}
		for j := range w.Exemplars {
			a, b := g.Exemplars[j], w.Exemplars[j]
			if fmt.Sprint(labelStrings(a.Labels)) != fmt.Sprint(labelStrings(b.Labels)) ||
				math.Float64bits(a.Value) != math.Float64bits(b.Value) || a.Timestamp != b.Timestamp {
				return fmt.Errorf("series %d exemplar %d differs", i, j)
			}
		}
		if g.Meta.Type != w.Meta.Type || !bytes.Equal(g.Meta.Help, w.Meta.Help) || !bytes.Equal(g.Meta.Unit, w.Meta.Unit) {
			return fmt.Errorf("series %d metadata %+v, want %+v", i, g.Meta, w.Meta)
		}
	}
	return nil
}

// sendable is r without the series AppendV2 leaves out: those without
// samples or histograms.
func sendable(r *Request) *Request {
	out := &Request{}
	for _, s := range r.Series {
		if len(s.Samples) > 0 || len(s.Histograms) > 0 {
			out.Series = append(out.Series, s)
		}
	}
	return out
}

func labelStrings(ls []Label) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = string(l.Name) + "=" + string(l.Value)
	}
	return out
}

// TestV2RoundTrip: a valid 2.0 request decoded and encoded again decodes to
// the same series, metadata included.
func TestV2RoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 26))
	var r, back Request
	var st SymbolTable
	var out []byte
	for i := range 500 {
		if err := r.UnmarshalV2(mustMarshalV2(t, randomRequestV2(t, rng, rng.IntN(12), false))); err != nil {
			t.Fatal(err)
		}
		out = r.MarshalAppendV2(out[:0], &st, nil)
		if err := back.UnmarshalV2(out); err != nil {
			t.Fatal(err)
		}
		if err := sameSeries(&back, sendable(&r)); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
	}
}

type metaMap map[string]SeriesMetadata

func (m metaMap) LookupMetadata(name []byte) SeriesMetadata { return m[string(name)] }

// TestV2MetadataBothWays: 2.0 metadata becomes 1.0 family metadata named as
// Prometheus names families, and 1.0 series get their family's metadata
// from the source when encoded as 2.0.
func TestV2MetadataBothWays(t *testing.T) {
	pb := &writev2.Request{
		Symbols: []string{"", "__name__", "rq_bucket", "le", "1", "rq_count", "Requests.", "seconds", "up"},
		Timeseries: []writev2.TimeSeries{
			{LabelsRefs: []uint32{1, 2, 3, 4}, Samples: []writev2.Sample{{Value: 1}}, Metadata: writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_HISTOGRAM, HelpRef: 6, UnitRef: 7}},
			{LabelsRefs: []uint32{1, 5}, Samples: []writev2.Sample{{Value: 1}}, Metadata: writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_HISTOGRAM, HelpRef: 6, UnitRef: 7}},
			{LabelsRefs: []uint32{1, 8}, Samples: []writev2.Sample{{Value: 1}}, Metadata: writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_GAUGE}},
		},
	}
	var r Request
	if err := r.UnmarshalV2(mustMarshalV2(t, pb)); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range r.Metadata {
		got = append(got, fmt.Sprintf("%s/%d/%s/%s", m.FamilyName, m.Type, m.Help, m.Unit))
	}
	if want := []string{"rq/3/Requests./seconds", "up/2//"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("derived metadata %q, want %q", got, want)
	}

	var v1 Request
	if err := v1.Unmarshal(mustMarshal(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "__name__", Value: "up"}}, Samples: []prompb.Sample{{Value: 1}}},
	}})); err != nil {
		t.Fatal(err)
	}
	var st SymbolTable
	out := v1.MarshalAppendV2(nil, &st, metaMap{"up": {Type: 2, Help: []byte("Up.")}})
	var back writev2.Request
	if err := back.Unmarshal(out); err != nil {
		t.Fatal(err)
	}
	m := back.Timeseries[0].Metadata
	if m.Type != writev2.Metadata_METRIC_TYPE_GAUGE || back.Symbols[m.HelpRef] != "Up." {
		t.Fatalf("metadata %+v (symbols %q), want the source's gauge with its help", m, back.Symbols)
	}
}

func TestAllocsSteadyStateV2(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	rng := rand.New(rand.NewPCG(27, 28))
	var bodies [][]byte
	for range 3 {
		bodies = append(bodies, mustMarshalV2(t, v2FromV1(t, rng, validRequest(rng, 300), false, false)))
	}
	var r Request
	var st SymbolTable
	var stats SanitizeStats
	var out []byte
	for _, b := range bodies {
		if err := r.UnmarshalV2(b); err != nil {
			t.Fatal(err)
		}
		out = r.MarshalAppendV2(out[:0], &st, nil)
	}
	k := 0
	if n := testing.AllocsPerRun(50, func() {
		if err := r.UnmarshalV2(bodies[k%len(bodies)]); err != nil {
			t.Fatal(err)
		}
		r.Sanitize(&stats)
		k++
	}); n != 0 {
		t.Errorf("UnmarshalV2 and Sanitize allocate %v times per request", n)
	}
	if n := testing.AllocsPerRun(50, func() { out = r.MarshalAppendV2(out[:0], &st, nil) }); n != 0 {
		t.Errorf("MarshalAppendV2 allocates %v times per request", n)
	}
}

// FuzzUnmarshalV2: no input may panic; Cardinal rejects a body exactly when
// gogo (Prometheus' decoder) does, or when its symbols[0] is not empty; what
// it accepts decodes as Prometheus decodes it, series Prometheus refuses
// marked, and re-encodes to the same series.
func FuzzUnmarshalV2(f *testing.F) {
	rng := rand.New(rand.NewPCG(29, 30))
	for i := range 8 {
		f.Add(mustMarshalV2(f, randomRequestV2(f, rng, rng.IntN(4), i%2 == 0)))
	}
	f.Add([]byte{})
	f.Add([]byte{0x22, 0x00})                         // symbols [""]
	f.Add([]byte{0x22, 0x00, 0x2a, 0x02, 0x08, 0x00}) // unpacked label reference
	f.Add([]byte{0x2a, 0x03, 0x0a, 0x01, 0x80})       // truncated packed reference
	f.Add([]byte{0x0a, 0x00})                         // a 1.0 series: reserved here
	f.Fuzz(func(t *testing.T, src []byte) {
		var r Request
		err := r.UnmarshalV2(src)
		var pb writev2.Request
		pbErr := pb.Unmarshal(src)
		wantOK := pbErr == nil && (len(pb.Symbols) == 0 || pb.Symbols[0] == "")
		if (err == nil) != wantOK {
			t.Fatalf("Cardinal says %v, gogo says %v (symbols %q)", err, pbErr, pb.Symbols)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("%v does not wrap ErrMalformed", err)
			}
			return
		}
		if err := sameAsWritev2(&r, &pb); err != nil {
			t.Fatalf("decoded differently from Prometheus: %v", err)
		}
		// Folded, it is what foldReference makes of Prometheus' decoding.
		r.FoldExemplars()
		foldReference(&pb)
		if err := sameAsWritev2(&r, &pb); err != nil {
			t.Fatalf("decoded differently from Prometheus: %v", err)
		}
		// Re-encode what Prometheus would keep.
		var keep Request
		for _, s := range r.Series {
			if s.invalid == 0 {
				keep.Series = append(keep.Series, s)
			}
		}
		var st SymbolTable
		var backKeep Request
		if err := backKeep.UnmarshalV2(keep.MarshalAppendV2(nil, &st, nil)); err != nil {
			t.Fatalf("cannot read Cardinal's encoding: %v", err)
		}
		if err := sameSeries(&backKeep, sendable(&keep)); err != nil {
			t.Fatalf("re-encoding changed the request: %v", err)
		}
	})
}

// TestUnmarshalV2FoldsExemplarSeries: Prometheus 3 sends an exemplar as a
// series of its own; it joins the series with the same labels and samples,
// and one without a counterpart in the request stays (valid, exemplars only).
func TestUnmarshalV2FoldsExemplarSeries(t *testing.T) {
	ex := []writev2.Exemplar{{LabelsRefs: []uint32{3, 4}, Value: 1, Timestamp: 5}}
	pb := &writev2.Request{
		Symbols: []string{"", "__name__", "up", "trace_id", "abc", "down"},
		Timeseries: []writev2.TimeSeries{
			{LabelsRefs: []uint32{1, 2}, Exemplars: ex},
			{LabelsRefs: []uint32{1, 2}, Samples: []writev2.Sample{{Value: 1, Timestamp: 5}}},
			{LabelsRefs: []uint32{1, 5}, Exemplars: ex},
		},
	}
	var r Request
	if err := r.UnmarshalV2(mustMarshalV2(t, pb)); err != nil {
		t.Fatal(err)
	}
	r.FoldExemplars()
	var st SanitizeStats
	r.Sanitize(&st)
	if st.DroppedSeries() != 0 || len(r.Series) != 2 {
		t.Fatalf("%d series, dropped %s; want 2, none", len(r.Series), st.Describe())
	}
	if got := r.Series[0]; string(GetLabel(got.Labels, "__name__")) != "up" || len(got.Samples) != 1 || len(got.Exemplars) != 1 || string(got.Exemplars[0].Labels[0].Value) != "abc" {
		t.Fatalf("up = %+v, want its sample and the folded exemplar", got)
	}
	if got := r.Series[1]; string(GetLabel(got.Labels, "__name__")) != "down" || len(got.Exemplars) != 1 {
		t.Fatalf("down = %+v, want its exemplar kept", got)
	}
}

// TestUnmarshalV2UTF8: a series whose label is not valid UTF-8 is dropped;
// a request of ASCII symbols skips the per-label check and keeps its series.
func TestUnmarshalV2UTF8(t *testing.T) {
	for _, tc := range []struct {
		value   string
		dropped int
	}{{"ok", 0}, {"\xff", 1}, {"é", 0}} {
		pb := &writev2.Request{
			Symbols:    []string{"", "__name__", "up", "v", tc.value},
			Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{1, 2, 3, 4}, Samples: []writev2.Sample{{Value: 1}}}},
		}
		var r Request
		if err := r.UnmarshalV2(mustMarshalV2(t, pb)); err != nil {
			t.Fatal(err)
		}
		var st SanitizeStats
		r.Sanitize(&st)
		if st.Series[InvalidUTF8] != tc.dropped {
			t.Errorf("value %q: dropped %s, want %d for UTF-8", tc.value, st.Describe(), tc.dropped)
		}
	}
}

// TestLargeSeriesLengths: series of 16 KiB and more take patchLength's slow
// path in both encoders and still decode as Prometheus decodes them.
func TestLargeSeriesLengths(t *testing.T) {
	for _, n := range []int{100, 16 << 10, 3 << 20} {
		pb := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
			{Labels: []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "big", Value: strings.Repeat("x", n)}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 2}}},
			{Labels: []prompb.Label{{Name: "__name__", Value: "up"}}, Samples: []prompb.Sample{{Value: 3, Timestamp: 4}}},
		}}
		var r Request
		if err := r.Unmarshal(mustMarshal(t, pb)); err != nil {
			t.Fatal(err)
		}
		r.Series[0].rawLabels = nil // force the encoder to write the labels
		if got, want := r.MarshalAppend(nil), mustMarshal(t, pb); !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: 1.0 encoding differs from gogo's", n)
		}
		var st SymbolTable
		var back writev2.Request
		if err := back.Unmarshal(r.MarshalAppendV2(nil, &st, nil)); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if len(back.Timeseries) != 2 || len(back.Symbols[back.Timeseries[0].LabelsRefs[3]]) != n || back.Timeseries[1].Samples[0].Value != 3 {
			t.Fatalf("%d bytes: decoded %d series", n, len(back.Timeseries))
		}
	}
}

// TestCountSeries: the series counted without decoding are the series
// decoded, for both versions.
func TestCountSeries(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	var r Request
	for i := range 200 {
		src := mustMarshal(t, randomRequest(rng, rng.IntN(30), false))
		if err := r.Unmarshal(src); err != nil {
			t.Fatal(err)
		}
		if got := CountSeries(src, false); got != len(r.Series) {
			t.Fatalf("1.0 case %d: counted %d, decoded %d", i, got, len(r.Series))
		}
		src = mustMarshalV2(t, randomRequestV2(t, rng, rng.IntN(30), i%2 == 0))
		if err := r.UnmarshalV2(src); err != nil {
			t.Fatal(err)
		}
		if got := CountSeries(src, true); got != len(r.Series) {
			t.Fatalf("2.0 case %d: counted %d, decoded %d", i, got, len(r.Series))
		}
	}
	empty := bytes.Repeat([]byte{0x0a, 0x00}, 1000)
	if n := CountSeries(empty, false); n != 1000 {
		t.Fatalf("empty series: counted %d", n)
	}
	if !raceEnabled {
		if n := testing.AllocsPerRun(20, func() { CountSeries(empty, false) }); n != 0 {
			t.Fatalf("CountSeries allocates %v times", n)
		}
	}
}
