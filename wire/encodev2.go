package wire

import (
	"bytes"

	"github.com/cespare/xxhash/v2"
)

// MetadataSource supplies the metadata of a series that has none of its own
// (it came as remote write 1.0, or was merged), by metric name, when it is
// encoded as 2.0. It is called once per run of series with the same name.
type MetadataSource interface {
	LookupMetadata(name []byte) SeriesMetadata
}

// SymbolTable interns the strings of one remote-write 2.0 request while it
// is encoded. Keep one per goroutine and reuse it: after warm-up encoding
// allocates nothing. The zero value is ready to use.
type SymbolTable struct {
	syms  [][]byte // the symbols in order; they alias the series encoded
	slots []uint32 // open addressing over syms: index+1, 0 when empty
	refs  []uint32
	body  []byte // the series, encoded before the symbols they use

	// Unsendable counts the exemplars the last AppendV2 left out (see
	// there).
	Unsendable int
}

func (t *SymbolTable) reset() {
	clear(t.syms) // pin nothing between requests
	t.syms = t.syms[:0]
	clear(t.slots)
	t.refs = t.refs[:0]
	t.body = t.body[:0]
}

// ref returns the reference of b, interning it when it is new.
func (t *SymbolTable) ref(b []byte) uint32 {
	if 2*(len(t.syms)+1) > len(t.slots) {
		t.grow()
	}
	mask := uint64(len(t.slots) - 1)
	for i := xxhash.Sum64(b) & mask; ; i = (i + 1) & mask {
		s := t.slots[i]
		if s == 0 {
			t.syms = append(t.syms, b)
			t.slots[i] = uint32(len(t.syms))
			return uint32(len(t.syms) - 1)
		}
		if bytes.Equal(t.syms[s-1], b) {
			return s - 1
		}
	}
}

// grow doubles the slots (at least 256) and re-inserts every symbol.
func (t *SymbolTable) grow() {
	n := max(256, 2*len(t.slots))
	if cap(t.slots) >= n {
		t.slots = t.slots[:n]
		clear(t.slots)
	} else {
		t.slots = make([]uint32, n)
	}
	mask := uint64(n - 1)
	for k, b := range t.syms {
		i := xxhash.Sum64(b) & mask
		for t.slots[i] != 0 {
			i = (i + 1) & mask
		}
		t.slots[i] = uint32(k + 1)
	}
}

// MarshalAppendV2 appends r encoded as a remote-write 2.0 Request to dst and
// returns the extended slice; see AppendV2.
func (r *Request) MarshalAppendV2(dst []byte, t *SymbolTable, md MetadataSource) []byte {
	return AppendV2(dst, r.Series, t, md)
}

// AppendV2 appends series encoded as a remote-write 2.0 Request to dst:
// the symbol table first (symbols[0] is the empty string), then the series.
// A series without metadata of its own gets md's for its metric name (md may
// be nil). Sample start timestamps and histograms pass as they are; 1.0's
// per-family Request.Metadata has no place in 2.0 and is not written.
//
// A series with neither samples nor histograms is left out: 2.0 receivers
// refuse it, as the specification requires; its exemplars are counted in
// t.Unsendable.
//
// Fields holding their zero value are omitted as proto3 requires; float
// values are compared by bits, so stale markers survive.
func AppendV2(dst []byte, series []Series, t *SymbolTable, md MetadataSource) []byte {
	t.reset()
	t.Unsendable = 0
	t.ref(nil) // symbols[0] = ""
	body := t.body
	var lastName []byte
	var lastMeta SeriesMetadata
	for i := range series {
		s := &series[i]
		if len(s.Samples) == 0 && len(s.Histograms) == 0 {
			t.Unsendable += len(s.Exemplars)
			continue
		}
		meta := s.Meta
		if meta.IsZero() && md != nil {
			name := s.metricName()
			if lastName == nil || !bytes.Equal(name, lastName) {
				lastName, lastMeta = name, md.LookupMetadata(name)
			}
			meta = lastMeta
		}
		body = t.appendSeries(body, s, &meta)
	}
	for _, b := range t.syms {
		dst = appendBytesField(dst, tagV2Symbol, b)
	}
	dst = append(dst, body...)
	t.body = body
	return dst
}

// metricName returns the series' __name__ value, or nil.
func (s *Series) metricName() []byte {
	if !s.encodedOnly {
		return GetLabel(s.Labels, "__name__")
	}
	var name []byte
	s.rangeEncoded(func(n, v []byte) bool {
		if string(n) == "__name__" {
			name = v
			return false
		}
		return true
	})
	return name
}

// rangeEncoded calls f for every label of rawLabels until f returns false.
func (s *Series) rangeEncoded(f func(name, value []byte) bool) {
	src := s.rawLabels
	for len(src) > 0 {
		data, rest, ok := nextShortMessage(src, tagSeriesLabel)
		if ok {
			if name, value, ok := shortLabel(data); ok {
				if !f(name, value) {
					return
				}
				src = rest
				continue
			}
		}
		// Slow path: long labels.
		_, _, i, err := readTag(src, 0)
		if err != nil {
			return
		}
		if data, i, err = readBytes(src, i); err != nil {
			return
		}
		var l Label
		if unmarshalLabel(&l, data) != nil || !f(l.Name, l.Value) {
			return
		}
		src = src[i:]
	}
}

// appendSeries appends s as a timeseries field.
func (t *SymbolTable) appendSeries(dst []byte, s *Series, meta *SeriesMetadata) []byte {
	t.refs = t.refs[:0]
	if s.encodedOnly {
		s.rangeEncoded(func(n, v []byte) bool {
			t.refs = append(t.refs, t.ref(n), t.ref(v))
			return true
		})
	} else {
		t.internLabels(s.Labels)
	}
	dst = append(dst, tagV2Series, 0, 0)
	start := len(dst)
	dst = appendRefsField(dst, tagV2Refs, t.refs)
	for i := range s.Samples {
		smp := &s.Samples[i]
		n := sizeFloatField(smp.Value) + sizeIntField(smp.Timestamp) + sizeIntField(smp.StartTimestamp)
		dst = append(dst, tagV2Sample)
		dst = appendVarint(dst, uint64(n))
		dst = appendFloatField(dst, tagV2SampleVal, smp.Value)
		dst = appendIntField(dst, tagV2SampleTs, smp.Timestamp)
		dst = appendIntField(dst, tagV2SampleST, smp.StartTimestamp)
	}
	for i := range s.Histograms {
		// A 1.0 histogram is a valid 2.0 one: the fields are the same.
		dst = appendBytesField(dst, tagV2Histogram, s.Histograms[i].Data)
	}
	for i := range s.Exemplars {
		e := &s.Exemplars[i]
		t.refs = t.refs[:0]
		t.internLabels(e.Labels)
		n := sizeRefsField(t.refs) + sizeFloatField(e.Value) + sizeIntField(e.Timestamp)
		dst = append(dst, tagV2Exemplar)
		dst = appendVarint(dst, uint64(n))
		dst = appendRefsField(dst, tagV2ExRefs, t.refs)
		dst = appendFloatField(dst, tagV2ExValue, e.Value)
		dst = appendIntField(dst, tagV2ExTs, e.Timestamp)
	}
	if !meta.IsZero() {
		var help, unit uint32
		if len(meta.Help) > 0 {
			help = t.ref(meta.Help)
		}
		if len(meta.Unit) > 0 {
			unit = t.ref(meta.Unit)
		}
		n := sizeIntField(int64(meta.Type)) + sizeIntField(int64(help)) + sizeIntField(int64(unit))
		dst = append(dst, tagV2Metadata)
		dst = appendVarint(dst, uint64(n))
		dst = appendIntField(dst, tagV2MetaType, int64(meta.Type))
		dst = appendIntField(dst, tagV2MetaHelp, int64(help))
		dst = appendIntField(dst, tagV2MetaUnit, int64(unit))
	}
	return patchLength(dst, start)
}

// internLabels appends the references of ls' names and values to t.refs.
func (t *SymbolTable) internLabels(ls []Label) {
	for i := range ls {
		t.refs = append(t.refs, t.ref(ls[i].Name), t.ref(ls[i].Value))
	}
}

// patchLength writes the length of dst[start:] into the two bytes reserved
// before start, moving the message when its length needs one byte or more
// than two.
func patchLength(dst []byte, start int) []byte {
	n := len(dst) - start
	switch {
	case n < 1<<7:
		dst[start-2] = byte(n)
		copy(dst[start-1:], dst[start:])
		return dst[:len(dst)-1]
	case n < 1<<14:
		dst[start-2] = byte(n) | 0x80
		dst[start-1] = byte(n >> 7)
		return dst
	}
	// Slow path: a message of 16 KiB or more; make room for the longer
	// length and move it.
	extra := sizeVarint(uint64(n)) - 2
	for range extra {
		dst = append(dst, 0)
	}
	copy(dst[start+extra:], dst[start:start+n])
	appendVarint(dst[:start-2], uint64(n))
	return dst
}

func sizeRefsField(refs []uint32) int {
	if len(refs) == 0 {
		return 0
	}
	n := 0
	for _, r := range refs {
		n += sizeVarint(uint64(r))
	}
	return 1 + sizeVarint(uint64(n)) + n
}

// appendRefsField appends refs as a packed repeated uint32 field.
func appendRefsField(dst []byte, tag byte, refs []uint32) []byte {
	if len(refs) == 0 {
		return dst
	}
	n := 0
	for _, r := range refs {
		n += sizeVarint(uint64(r))
	}
	dst = append(dst, tag)
	dst = appendVarint(dst, uint64(n))
	for _, r := range refs {
		dst = appendVarint(dst, uint64(r))
	}
	return dst
}

// DeriveMetadata fills r.Metadata from the series' own (2.0) metadata: one
// entry per family, named as Prometheus names families (a histogram's or
// summary's series names without their _bucket, _sum or _count suffix), so
// that 1.0 stages and downstreams see what the sender announced. Series
// marked invalid are skipped; consecutive series of one family give one
// entry.
func (r *Request) DeriveMetadata() {
	for i := range r.Series {
		s := &r.Series[i]
		if s.invalid != 0 || s.Meta.IsZero() {
			continue
		}
		family := familyName(s.metricName(), s.Meta.Type)
		if family == nil {
			continue
		}
		if n := len(r.Metadata); n > 0 {
			last := &r.Metadata[n-1]
			if last.Type == s.Meta.Type && bytes.Equal(last.FamilyName, family) &&
				bytes.Equal(last.Help, s.Meta.Help) && bytes.Equal(last.Unit, s.Meta.Unit) {
				continue
			}
		}
		r.Metadata = append(r.Metadata, Metadata{Type: s.Meta.Type, FamilyName: family, Help: s.Meta.Help, Unit: s.Meta.Unit})
	}
}

// Metadata types whose series add a suffix to the family name.
const (
	metaHistogram      = 3
	metaGaugeHistogram = 4
	metaSummary        = 5
)

func familyName(name []byte, typ int32) []byte {
	if typ == metaHistogram || typ == metaGaugeHistogram || typ == metaSummary {
		for _, sfx := range [...]string{"_bucket", "_count", "_sum"} {
			if len(name) > len(sfx) && string(name[len(name)-len(sfx):]) == sfx {
				return name[: len(name)-len(sfx) : len(name)-len(sfx)]
			}
		}
	}
	return name
}
