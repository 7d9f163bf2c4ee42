// Package wire owns Cardinal's in-memory remote-write request and its protobuf
// codecs for remote write 1.0 (prometheus.WriteRequest) and 2.0
// (io.prometheus.write.v2.Request), which decode into the same model.
//
// The model is built for a proxy: labels are byte slices that point into the
// buffer the request was decoded from, and every slice of a Request is reused
// across requests. After warm-up, the decoders and encoders of both
// versions allocate nothing. The package knows nothing about HTTP or
// compression.
//
// The codecs accept exactly what Prometheus' receiver decodes (gogo's
// prompb and writev2): Unmarshal and UnmarshalV2 reject what they reject, and Sanitize drops the series
// it would refuse after decoding, native histograms included
// (ValidateHistogram). Native histograms travel as their encoded bytes;
// DecodeFloatHistogram decodes one for the stages that compute with it.
package wire

import (
	"bytes"
	"reflect"
	"slices"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// Label is one label pair. Name and Value alias the buffer the request was
// decoded from, or memory owned by the stage that rewrote them; they are valid
// until the owning Request is reset.
type Label struct {
	Name, Value []byte
}

// Sample is one float sample. StartTimestamp is remote write 2.0's start
// (created) timestamp, 0 when unknown; 1.0 cannot carry it.
type Sample struct {
	Value          float64
	Timestamp      int64
	StartTimestamp int64
}

// Exemplar is one exemplar; its Labels are valid as long as the request's.
type Exemplar struct {
	Labels    []Label
	Value     float64
	Timestamp int64
}

// Histogram is a native histogram carried as its encoded protobuf message,
// because a proxy that does not merge it has no reason to decode its buckets.
// Timestamp is decoded so that ordering can be checked without touching Data.
type Histogram struct {
	Timestamp int64
	// Data is the complete encoded prometheus.Histogram message.
	Data []byte
}

// Series is one time series of a request.
//
// The slices are windows into pools owned by the Request and have their
// capacity clipped to their length, so appending to one of them copies it to
// new memory instead of overwriting a neighbouring series.
type Series struct {
	Labels     []Label
	Samples    []Sample
	Exemplars  []Exemplar
	Histograms []Histogram
	// Meta is the series' remote write 2.0 metadata; zero for 1.0, whose
	// metadata is per family in Request.Metadata.
	Meta SeriesMetadata

	// invalid, when not zero, is 1 + the InvalidReason for which the 2.0
	// decoder found the series unusable (a symbol reference out of range,
	// no samples); Sanitize drops it.
	invalid uint8

	// rawLabels is the series' label fields as they were decoded, when
	// they were contiguous and in canonical form (see InputHash), or the
	// labels set with SetEncodedLabels.
	rawLabels []byte
	// encodedOnly: the labels are rawLabels (SetEncodedLabels), not Labels.
	encodedOnly bool
	// lazy: the labels are rawLabels as decoded, not decoded into Labels
	// yet (see Request.SetDeferLabels); encodedOnly is set too.
	lazy bool
	// unverified: rawLabels is the decoder's guess of where the labels end
	// (see Request.SetGuessLabels), not yet checked; lazy is set too.
	unverified bool
	// index is the series' place among those Unmarshal decoded: its span
	// in Request.spans (see Request.AppendCuts).
	index int32
}

// Lazy reports whether the series' labels are still encoded: Labels is
// nil until Request.DecodeLazy decodes them (see Request.SetDeferLabels).
// The encoders and InputHash use the encoded labels as they are.
func (s *Series) Lazy() bool { return s.lazy }

// DecodeLazy decodes the labels of s, a series of r, into s.Labels when
// they are still encoded (Lazy); it does nothing otherwise. It cannot
// fail: the decoder checked them.
func (r *Request) DecodeLazy(s *Series) {
	if !s.lazy {
		return
	}
	start := len(r.labels)
	r.labels = appendLabels(r.labels, s.rawLabels)
	s.Labels = r.labels[start:len(r.labels):len(r.labels)]
	s.lazy, s.encodedOnly = false, false
}

// DecodeAllLazy decodes the labels of every series still encoded.
func (r *Request) DecodeAllLazy() {
	for i := range r.Series {
		r.DecodeLazy(&r.Series[i])
	}
}

// InputHash returns the identity of the series' labels: xxhash of their
// canonical protobuf encoding (the label fields of a TimeSeries, sorted, as
// gogo writes them). For a series decoded from a canonical encoding it
// hashes the decoded bytes in place, without copying; otherwise it encodes
// the labels into buf first. Both give the same value for the same labels.
func (s *Series) InputHash(buf []byte) (uint64, []byte) {
	if s.rawLabels != nil {
		return xxhash.Sum64(s.rawLabels), buf
	}
	buf = AppendEncodedLabels(buf[:0], s.Labels)
	return xxhash.Sum64(buf), buf
}

// AppendEncodedLabels appends the canonical encoding of ls: the label fields
// of a TimeSeries, as gogo writes them. It is a compact way to keep a label
// set: about half the memory of the []Label headers and bytes.
func AppendEncodedLabels(dst []byte, ls []Label) []byte {
	for i := range ls {
		dst = appendLabel(dst, tagSeriesLabel, &ls[i])
	}
	return dst
}

// SetEncodedLabels makes s carry the labels encoded in enc (see
// AppendEncodedLabels) instead of Labels, which it clears: the encoder
// copies enc as it is. enc must stay unchanged while s is in use.
func (s *Series) SetEncodedLabels(enc []byte) {
	s.Labels = nil
	s.rawLabels = enc
	s.encodedOnly = true
}

// LabelsEqual reports whether a and b hold the same labels in the same
// order.
func LabelsEqual(a, b []Label) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Name, b[i].Name) || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

// KeepEncodedLabels makes the encoder copy the series' labels as they were
// decoded, when they were canonical, instead of encoding Labels again: for
// a series forwarded with the labels it came with. Labels is then nil.
func (s *Series) KeepEncodedLabels() {
	if s.rawLabels != nil && !s.encodedOnly {
		s.Labels = nil
		s.encodedOnly = true
	}
}

// DecodeLabels decodes labels encoded by AppendEncodedLabels into a new
// slice. It allocates; it is meant for reports, not for the request path.
func DecodeLabels(enc []byte) ([]Label, error) {
	var r Request
	if err := r.unmarshalSeries(enc); err != nil {
		return nil, err
	}
	return r.Series[0].Labels, nil
}

// SeriesMetadata is the metadata remote write 2.0 attaches to a series:
// Type uses the numbers of prometheus.MetricMetadata.MetricType, which 2.0
// shares. Help and Unit alias the request like labels do.
type SeriesMetadata struct {
	Type       int32
	Help, Unit []byte
}

// IsZero reports whether m carries nothing.
func (m *SeriesMetadata) IsZero() bool {
	return m.Type == 0 && len(m.Help) == 0 && len(m.Unit) == 0
}

// Metadata is one prometheus.MetricMetadata entry.
type Metadata struct {
	Type       int32
	FamilyName []byte
	Help       []byte
	Unit       []byte
}

// Request is a decoded remote-write request, of either version.
//
// A Request is meant to be pooled: Reset keeps every buffer's capacity.
type Request struct {
	Series   []Series
	Metadata []Metadata

	labels     []Label
	exLabels   []Label
	samples    []Sample
	exemplars  []Exemplar
	histograms []Histogram

	// The 2.0 decoder's symbol table and label references.
	symbols [][]byte
	refs    []uint32
	// exemplarRefsBad: an exemplar of the series being decoded has a
	// reference out of range or an odd number of them.
	exemplarRefsBad bool
	// asciiSymbols: the request is 2.0 and every symbol is ASCII, so
	// every label is valid UTF-8 (see Sanitize).
	asciiSymbols bool
	// exemplarOnly counts the series of the request carrying exemplars
	// and nothing else; foldIndex and hashBuf serve foldExemplars.
	exemplarOnly int
	foldIndex    map[uint64]int32
	hashBuf      []byte

	// plain: see Plain.
	plain bool
	// deferLabels: see SetDeferLabels. Reset keeps it. deferredLabels
	// counts the labels decoding left encoded, for DecodedBytes.
	deferLabels    bool
	deferredLabels int
	// guessLabels: see SetGuessLabels. Reset keeps it. guessed counts the
	// series whose labels are unverified, guessedBytes their bytes, and
	// guessedSeries every series decoded on a guess (see Guessed).
	guessLabels   bool
	guessed       int
	guessedBytes  int
	guessedSeries int

	// src is the 1.0 body Unmarshal decoded the request from, and spans
	// the range of each TimeSeries field in it, by Series.index (see
	// AppendCuts); nil and empty otherwise.
	src   []byte
	spans []span

	// Original is the body the request was decoded from, still compressed
	// as it came, when the caller keeps it unchanged until it is done with
	// the request; nil otherwise. Reset clears it. A request that is Plain
	// and that no stage changed means to the downstream exactly what
	// Original says, so it can be forwarded as it came instead of being
	// encoded and compressed again.
	Original []byte
}

// SetDeferLabels makes Unmarshal leave the labels of a series encoded
// when they are contiguous and in the form every sender writes (see
// Series.Lazy), for a caller that often needs only their bytes: a proxy
// that knows the series by the hash of those bytes. The labels are
// checked as they are otherwise, and a malformed request is still an
// error; DecodeLazy decodes them when they are needed. Sanitize and
// FoldExemplars decode what they check.
func (r *Request) SetDeferLabels(on bool) { r.deferLabels = on }

// SetGuessLabels makes Unmarshal, when it defers labels too, skip reading
// the labels of a series that ends in one sample as every sender writes it:
// the labels are taken to be everything before the sample, and are left
// unverified. For a proxy that knows most series by the hash of their
// labels (InputHash) and that has checked the bytes it knows before, the
// labels of a known series need no reading at all; Verify reads the rest.
// A request decoded this way must go through Verify before anything reads
// its series' labels or forwards them; its sample counts are those of the
// guesses until then.
func (r *Request) SetGuessLabels(on bool) { r.guessLabels = on }

// Plain reports whether r was decoded from a remote write 1.0 body that
// holds nothing but what MarshalAppend writes, and that Sanitize left as
// it was: series of labels and float samples, each read by the decoder's
// fast path, and metadata, with no unknown field anywhere (an unknown
// field may mean something to a downstream that extends the format, and
// the encoder would not carry it). Exemplars and native histograms make a
// request not plain. Changes made by later stages are the caller's to
// track.
func (r *Request) Plain() bool { return r.plain }

// Reset empties r and keeps its capacity for reuse.
//
// It does not clear the label pools: every reference they hold points into
// memory owned by the same pooled workspace as r, so they pin nothing that
// the workspace would not keep alive anyway, and clearing them would cost a
// memclr of every label on every request.
func (r *Request) Reset() {
	clear(r.Series)
	r.Series = r.Series[:0]
	clear(r.Metadata)
	r.Metadata = r.Metadata[:0]
	r.labels = r.labels[:0]
	r.exLabels = r.exLabels[:0]
	r.samples = r.samples[:0]
	r.exemplars = r.exemplars[:0]
	r.histograms = r.histograms[:0]
	r.symbols = r.symbols[:0]
	r.asciiSymbols = false
	r.plain = false
	r.deferredLabels = 0
	r.guessed, r.guessedBytes, r.guessedSeries = 0, 0, 0
	r.Original = nil
	r.src = nil
	r.spans = r.spans[:0]
}

// span is the range [start, end) of a field in a decoded body.
type span struct{ start, end uint32 }

// Source returns the remote write 1.0 body Unmarshal decoded r from, nil
// when r was not decoded by Unmarshal.
func (r *Request) Source() []byte { return r.src }

// AppendCuts appends to dst the start and end offsets in Source of every
// series that r.Series no longer holds, in order, adjacent ranges joined,
// and reports whether it could: r was decoded by Unmarshal, and r.Series
// holds only series it decoded, in the order it decoded them. Source with
// those ranges removed is then a 1.0 body of r.Series and r.Metadata,
// provided r is Plain and no stage changed a series it kept (a proxy
// forwarding the rest of a body as it came need not encode it again; see
// internal/snappycut). On false, dst is returned as it was.
func (r *Request) AppendCuts(dst []int) ([]int, bool) {
	if r.src == nil {
		return dst, false
	}
	start, next := len(dst), 0
	cut := func(sp span) {
		if n := len(dst); n > start && dst[n-1] == int(sp.start) {
			dst[n-1] = int(sp.end)
			return
		}
		dst = append(dst, int(sp.start), int(sp.end))
	}
	for i := range r.Series {
		idx := int(r.Series[i].index)
		if idx < next || idx >= len(r.spans) {
			return dst[:start], false
		}
		for ; next < idx; next++ {
			cut(r.spans[next])
		}
		next = idx + 1
	}
	for ; next < len(r.spans); next++ {
		cut(r.spans[next])
	}
	return dst, true
}

// reserve returns s with room for at least n more elements. Past its
// capacity it at least doubles it, up to reserveDoubling bytes: append
// grows a large slice by about a quarter at a time, so a pooled buffer
// filling up for the first time would be copied and reallocated a dozen
// times, and that warm-up garbage is what sets the pace of the collector
// under a new sender's traffic. Beyond it, append's growth keeps an
// outsized request from holding twice its memory.
func reserve[T any](s []T, n int) []T {
	if cap(s)-len(s) >= n {
		return s
	}
	var zero T
	if uintptr(len(s))*unsafe.Sizeof(zero) >= reserveDoubling {
		return slices.Grow(s, n)
	}
	return slices.Grow(s, max(n, len(s)))
}

const reserveDoubling = 8 << 20

// Counts returns the number of float samples, histogram samples and
// exemplars in r.
func (r *Request) Counts() (samples, histograms, exemplars int) {
	for i := range r.Series {
		s := &r.Series[i]
		samples += len(s.Samples)
		histograms += len(s.Histograms)
		exemplars += len(s.Exemplars)
	}
	return samples, histograms, exemplars
}

// NumSamples returns the number of float samples and histogram samples in r.
func (r *Request) NumSamples() int {
	n := 0
	for i := range r.Series {
		n += len(r.Series[i].Samples) + len(r.Series[i].Histograms)
	}
	return n
}

// SeriesSize is the memory one decoded series takes before its labels and
// samples, whatever the bytes it came in: see CountSeries.
var SeriesSize = sizeSeries

// Sizes of the model's elements, for DecodedBytes.
var (
	sizeSeries    = int(reflect.TypeFor[Series]().Size())
	sizeLabel     = int(reflect.TypeFor[Label]().Size())
	sizeSample    = int(reflect.TypeFor[Sample]().Size())
	sizeExemplar  = int(reflect.TypeFor[Exemplar]().Size())
	sizeHistogram = int(reflect.TypeFor[Histogram]().Size())
	sizeMetadata  = int(reflect.TypeFor[Metadata]().Size())
	sizeSymbol    = int(reflect.TypeFor[[]byte]().Size())
)

// DecodedBytes returns the memory the decoded request holds beyond the
// bytes it was decoded from: the headers of its series, labels, samples,
// exemplars, histograms, metadata and symbols. A 2.0 request holds several
// times its own size (its labels are interned, the model's are not), a 1.0
// request about its size; admission control accounts for it.
func (r *Request) DecodedBytes() int {
	// Labels left encoded count as decoded: the pipeline may decode
	// them all.
	return len(r.Series)*sizeSeries + (len(r.labels)+r.deferredLabels+len(r.exLabels)+r.guessedBytes/guessedLabelBytes)*sizeLabel +
		len(r.samples)*sizeSample + len(r.exemplars)*sizeExemplar +
		len(r.histograms)*sizeHistogram + len(r.Metadata)*sizeMetadata +
		len(r.symbols)*sizeSymbol + 4*cap(r.refs)
}

// guessedLabelBytes is what DecodedBytes takes an unverified label to
// weigh on the wire: less than most (__name__ and its value alone take 20
// to 40 bytes), so that the estimate errs high for real traffic. Only the
// labels of unknown series are ever decoded, and a label takes at least 6
// bytes: a body made of the shortest ones decodes into at most 2.7 times
// the estimate for its labels.
const guessedLabelBytes = 16

// CountSeries returns the number of series fields of an encoded request
// (2.0 when v2 is set), reading only the request's own fields: a fraction
// of a decode, and no allocation. It stops at a malformed field, which
// decoding then reports.
func CountSeries(src []byte, v2 bool) int {
	field := int32(1)
	if v2 {
		field = 5
	}
	n := 0
	for i := 0; i < len(src); {
		num, wt, next, err := readTag(src, i)
		if err != nil {
			return n
		}
		if i, err = skipField(src, next, wt); err != nil {
			return n
		}
		if num == field && wt == wireBytes {
			n++
		}
	}
	return n
}

// Capacity reports how many labels, samples and series r can hold without
// growing. Pools use it to refuse requests that grew too large to keep.
func (r *Request) Capacity() (labels, samples, series int) {
	return cap(r.labels) + cap(r.exLabels), cap(r.samples), cap(r.Series)
}

// CompareLabelNames orders labels by name, the order Prometheus requires.
func CompareLabelNames(a, b Label) int {
	return bytes.Compare(a.Name, b.Name)
}

// GetLabel returns the value of the label called name, or nil.
func GetLabel(ls []Label, name string) []byte {
	for i := range ls {
		if string(ls[i].Name) == name {
			return ls[i].Value
		}
	}
	return nil
}

// HashLabels returns the identity of a label set: xxhash over every name and
// value, each followed by a 0xff byte, which cannot occur in valid UTF-8, so
// that {a="b;c"} and {a="b", c=""} cannot hash alike. buf is scratch space;
// the grown buffer is returned for reuse.
func HashLabels(buf []byte, ls []Label) (uint64, []byte) {
	buf = buf[:0]
	for i := range ls {
		buf = append(buf, ls[i].Name...)
		buf = append(buf, 0xff)
		buf = append(buf, ls[i].Value...)
		buf = append(buf, 0xff)
	}
	return xxhash.Sum64(buf), buf
}
