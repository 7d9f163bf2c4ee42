package load

import (
	"cmp"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// maxReceiveBytes bounds one request the receiver accepts, compressed and
// decompressed.
const maxReceiveBytes = 256 << 20

// Receiver is a counting remote-write 1.0 receiver: it decodes every request
// with the reference decoder (snappy, then prompb with gogo), answers 204 and
// tallies samples, series and label names. It also checks what a downstream
// would hold against the system under test: label names on the deny list
// that arrived, and samples that arrived twice for one series and timestamp
// (a Prometheus receiver rejects their whole request) or went back in time.
//
// It keeps one entry per distinct series and per (series, timestamp), so its
// memory grows with what it receives; it is meant for bounded runs.
type Receiver struct {
	denied map[string]bool
	seed   maphash.Seed

	mu          sync.Mutex
	series      map[uint64]*seriesState
	seen        map[sampleKey]struct{}
	names       map[string]int64 // label name → series that carried it
	st          ReceiverStats
	lastArrival time.Time
}

type seriesState struct {
	key     string // labels.Labels.String of the sorted labels
	lastTS  int64
	lastVal float64
}

type sampleKey struct {
	series uint64
	ts     int64
}

// ReceiverStats is what a Receiver has counted so far.
type ReceiverStats struct {
	Requests     int64 // requests answered 204
	BadRequests  int64 // requests answered 400
	Samples      int64 // float samples
	Histograms   int64 // native histogram samples
	Exemplars    int64
	SeriesInReqs int64 // series entries over all requests
	Series       int   // distinct label sets
	// Duplicates counts samples whose series already had a sample with the
	// same timestamp; OutOfOrder those older than the series' newest.
	Duplicates, OutOfOrder int64
	// DeniedSeries counts series entries that carried a denied label name;
	// DeniedNames lists which names arrived.
	DeniedSeries int64
	DeniedNames  []string
	// LabelNames lists every label name that arrived, sorted.
	LabelNames []string
	// LastArrival is when the last request with samples was tallied.
	LastArrival time.Time
}

// NewReceiver returns a receiver that flags the label names in denied.
func NewReceiver(denied []string) *Receiver {
	r := &Receiver{
		denied: map[string]bool{},
		seed:   maphash.MakeSeed(),
		series: map[uint64]*seriesState{},
		seen:   map[sampleKey]struct{}{},
		names:  map[string]int64{},
	}
	for _, n := range denied {
		r.denied[n] = true
	}
	return r
}

// ServeHTTP implements the remote-write endpoint; any path is accepted.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "only POST", http.StatusMethodNotAllowed)
		return
	}
	v2 := strings.Contains(req.Header.Get("Content-Type"), "io.prometheus.write.v2.Request")
	wr, err := decodeWriteRequest(http.MaxBytesReader(w, req.Body, maxReceiveBytes), v2)
	if err != nil {
		r.mu.Lock()
		r.st.BadRequests++
		r.mu.Unlock()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.add(wr)
	if v2 {
		// What a 2.0 receiver says; the load tool counts on its own.
		w.Header().Set("X-Prometheus-Remote-Write-Samples-Written", "0")
	}
	w.WriteHeader(http.StatusNoContent)
}

// decodeWriteRequest decodes a body, 2.0 when v2 is set, into the 1.0
// request the tally works on.
func decodeWriteRequest(body io.Reader, v2 bool) (*prompb.WriteRequest, error) {
	raw, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("cannot read body: %w", err)
	}
	n, err := snappy.DecodedLen(raw)
	if err != nil {
		return nil, fmt.Errorf("cannot decode snappy: %w", err)
	}
	if n > maxReceiveBytes {
		return nil, fmt.Errorf("decoded body of %d bytes is over the limit of %d", n, maxReceiveBytes)
	}
	dec, err := snappy.Decode(nil, raw)
	if err != nil {
		return nil, fmt.Errorf("cannot decode snappy: %w", err)
	}
	var wr prompb.WriteRequest
	if v2 {
		return fromV2(dec)
	}
	if err := wr.Unmarshal(dec); err != nil {
		return nil, fmt.Errorf("cannot decode protobuf: %w", err)
	}
	return &wr, nil
}

// fromV2 decodes a 2.0 request with Prometheus' types into a 1.0 one.
func fromV2(dec []byte) (*prompb.WriteRequest, error) {
	var r2 writev2.Request
	if err := r2.Unmarshal(dec); err != nil {
		return nil, fmt.Errorf("cannot decode protobuf: %w", err)
	}
	wr := &prompb.WriteRequest{Timeseries: make([]prompb.TimeSeries, 0, len(r2.Timeseries))}
	for _, ts := range r2.Timeseries {
		var out prompb.TimeSeries
		for k := 0; k+1 < len(ts.LabelsRefs); k += 2 {
			if int(max(ts.LabelsRefs[k], ts.LabelsRefs[k+1])) >= len(r2.Symbols) {
				return nil, fmt.Errorf("label reference out of range")
			}
			out.Labels = append(out.Labels, prompb.Label{Name: r2.Symbols[ts.LabelsRefs[k]], Value: r2.Symbols[ts.LabelsRefs[k+1]]})
		}
		for _, s := range ts.Samples {
			out.Samples = append(out.Samples, prompb.Sample{Value: s.Value, Timestamp: s.Timestamp})
		}
		for _, h := range ts.Histograms {
			out.Histograms = append(out.Histograms, prompb.Histogram{Timestamp: h.Timestamp})
		}
		for range ts.Exemplars {
			out.Exemplars = append(out.Exemplars, prompb.Exemplar{})
		}
		wr.Timeseries = append(wr.Timeseries, out)
	}
	return wr, nil
}

// add tallies one decoded request.
func (r *Receiver) add(wr *prompb.WriteRequest) {
	// Hash outside the lock: labels sorted by name, 0xff between names and
	// values (never name=value concatenation, which collides).
	hashes := make([]uint64, len(wr.Timeseries))
	var sorted []prompb.Label
	var h maphash.Hash
	h.SetSeed(r.seed)
	for i := range wr.Timeseries {
		sorted = append(sorted[:0], wr.Timeseries[i].Labels...)
		slices.SortFunc(sorted, func(a, b prompb.Label) int { return cmp.Compare(a.Name, b.Name) })
		h.Reset()
		for _, l := range sorted {
			h.WriteString(l.Name)
			h.WriteByte(0xff)
			h.WriteString(l.Value)
			h.WriteByte(0xff)
		}
		hashes[i] = h.Sum64()
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	r.st.Requests++
	for i := range wr.Timeseries {
		ts := &wr.Timeseries[i]
		r.st.SeriesInReqs++
		r.st.Samples += int64(len(ts.Samples))
		r.st.Histograms += int64(len(ts.Histograms))
		r.st.Exemplars += int64(len(ts.Exemplars))
		denied := false
		for _, l := range ts.Labels {
			r.names[l.Name]++
			denied = denied || r.denied[l.Name]
		}
		if denied {
			r.st.DeniedSeries++
		}
		s := r.series[hashes[i]]
		if s == nil {
			s = &seriesState{key: labelString(ts.Labels), lastTS: math.MinInt64}
			r.series[hashes[i]] = s
		}
		for _, smp := range ts.Samples {
			r.sample(hashes[i], s, smp.Timestamp, smp.Value)
		}
		for _, hs := range ts.Histograms {
			r.sample(hashes[i], s, hs.Timestamp, math.NaN())
		}
	}
	if len(wr.Timeseries) > 0 {
		r.lastArrival = time.Now()
	}
}

// sample records one sample of series s; the caller holds r.mu. Of several
// samples with the newest timestamp the last to arrive wins.
func (r *Receiver) sample(hash uint64, s *seriesState, ts int64, v float64) {
	k := sampleKey{hash, ts}
	if _, dup := r.seen[k]; dup {
		r.st.Duplicates++
	} else {
		r.seen[k] = struct{}{}
	}
	switch {
	case ts >= s.lastTS:
		s.lastTS, s.lastVal = ts, v
	default:
		r.st.OutOfOrder++
	}
}

// labelString formats ls like labels.Labels.String after sorting, the key
// meshgen.SumBy uses.
func labelString(ls []prompb.Label) string {
	b := labels.NewScratchBuilder(len(ls))
	for _, l := range ls {
		b.Add(l.Name, l.Value)
	}
	b.Sort()
	return b.Labels().String()
}

// Stats returns a snapshot of the counts.
func (r *Receiver) Stats() ReceiverStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.st
	st.Series = len(r.series)
	st.LastArrival = r.lastArrival
	st.LabelNames = make([]string, 0, len(r.names))
	st.DeniedNames = nil
	for n := range r.names {
		st.LabelNames = append(st.LabelNames, n)
		if r.denied[n] {
			st.DeniedNames = append(st.DeniedNames, n)
		}
	}
	slices.Sort(st.LabelNames)
	slices.Sort(st.DeniedNames)
	return st
}

// Check compares what arrived with the expected output series and their
// values (keyed like labels.Labels.String, as meshgen.SumBy returns them).
type Check struct {
	Expected int // expected output series
	Arrived  int // of those, how many arrived at all
	// Counters counts the expected counter series (by name suffix _total,
	// _count, _sum, _bucket); Within1pc those whose newest value is within 1%
	// of the expectation, Exact those equal to it (relative 1e-9).
	Counters, Within1pc, Exact int
	// Unexpected counts arrived series that are not expected.
	Unexpected int
	// Example is one expected counter that did not match, for the report.
	Example string
}

// Compare checks the newest value of every expected series.
func (r *Receiver) Compare(want map[string]float64) Check {
	r.mu.Lock()
	got := make(map[string]float64, len(r.series))
	for _, s := range r.series {
		got[s.key] = s.lastVal
	}
	r.mu.Unlock()

	c := Check{Expected: len(want)}
	for k := range got {
		if _, ok := want[k]; !ok {
			c.Unexpected++
		}
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys) // a deterministic example
	for _, k := range keys {
		w := want[k]
		g, ok := got[k]
		if ok {
			c.Arrived++
		}
		if !isCounter(k) {
			continue
		}
		c.Counters++
		diff := math.Abs(g - w)
		switch {
		case ok && diff <= 1e-9*math.Max(1, math.Abs(w)):
			c.Exact++
			c.Within1pc++
		case ok && diff <= 0.01*math.Abs(w):
			c.Within1pc++
		case c.Example == "":
			if ok {
				c.Example = fmt.Sprintf("%s = %g, want %g", k, g, w)
			} else {
				c.Example = fmt.Sprintf("%s missing, want %g", k, w)
			}
		}
	}
	return c
}

// isCounter reports whether the series key names a counter-like metric.
func isCounter(key string) bool {
	name, _, _ := strings.Cut(strings.TrimPrefix(key, `{__name__="`), `"`)
	for _, suffix := range []string{"_total", "_count", "_sum", "_bucket"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}
