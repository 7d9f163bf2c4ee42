package wire

import (
	"encoding/binary"
	"math"
	"math/bits"
)

// Protobuf wire types and the field tags this package writes. Tags of fields
// numbered below 16 fit in one byte.
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2

	tagRequestSeries   = 1<<3 | wireBytes
	tagRequestMetadata = 3<<3 | wireBytes

	tagSeriesLabel     = 1<<3 | wireBytes
	tagSeriesSample    = 2<<3 | wireBytes
	tagSeriesExemplar  = 3<<3 | wireBytes
	tagSeriesHistogram = 4<<3 | wireBytes

	tagLabelName  = 1<<3 | wireBytes
	tagLabelValue = 2<<3 | wireBytes

	tagSampleValue     = 1<<3 | wireFixed64
	tagSampleTimestamp = 2<<3 | wireVarint

	tagExemplarLabel     = 1<<3 | wireBytes
	tagExemplarValue     = 2<<3 | wireFixed64
	tagExemplarTimestamp = 3<<3 | wireVarint

	tagMetadataType   = 1<<3 | wireVarint
	tagMetadataFamily = 2<<3 | wireBytes
	tagMetadataHelp   = 4<<3 | wireBytes
	tagMetadataUnit   = 5<<3 | wireBytes
)

// MarshalAppend appends r encoded as a remote-write 1.0 WriteRequest to dst
// and returns the extended slice. It allocates only when dst lacks capacity;
// callers keep dst in a pool, so after warm-up it allocates nothing. (Sizing
// dst up front with Size would cost a second pass over every label.)
//
// Fields holding their zero value are omitted, as proto3 requires, except that
// float values are compared by bits: -0 and every NaN payload (Prometheus'
// stale marker is one) survive the round trip.
func (r *Request) MarshalAppend(dst []byte) []byte {
	for i := range r.Series {
		dst = r.Series[i].appendField(dst)
	}
	for i := range r.Metadata {
		m := &r.Metadata[i]
		dst = append(dst, tagRequestMetadata)
		dst = appendVarint(dst, uint64(m.size()))
		dst = m.marshalAppend(dst)
	}
	return dst
}

// Size returns the length of r's encoding.
func (r *Request) Size() int {
	n := 0
	for i := range r.Series {
		n += sizeBytesField(r.Series[i].size())
	}
	for i := range r.Metadata {
		n += sizeBytesField(r.Metadata[i].size())
	}
	return n
}

// appendField appends s as a length-delimited field of a WriteRequest.
//
// Instead of a sizing pass over every label, it reserves two bytes for the
// length, which fits every series under 16 KiB (real series are about
// 1 KiB), writes the series, then patches the length in (patchLength).
func (s *Series) appendField(dst []byte) []byte {
	dst = reserve(dst, 4<<10)
	dst = append(dst, tagRequestSeries, 0, 0)
	start := len(dst)
	dst = s.marshalAppend(dst)
	return patchLength(dst, start)
}

func (s *Series) size() int {
	n := 0
	if s.encodedOnly {
		n += len(s.rawLabels)
	}
	for i := range s.Labels {
		n += sizeBytesField(s.Labels[i].size())
	}
	for i := range s.Samples {
		n += sizeBytesField(s.Samples[i].size())
	}
	for i := range s.Exemplars {
		n += sizeBytesField(s.Exemplars[i].size())
	}
	for i := range s.Histograms {
		n += sizeBytesField(len(s.Histograms[i].Data))
	}
	return n
}

func (s *Series) marshalAppend(dst []byte) []byte {
	if s.encodedOnly {
		dst = append(dst, s.rawLabels...)
	}
	for i := range s.Labels {
		dst = appendLabel(dst, tagSeriesLabel, &s.Labels[i])
	}
	for i := range s.Samples {
		smp := &s.Samples[i]
		dst = append(dst, tagSeriesSample)
		dst = appendVarint(dst, uint64(smp.size()))
		dst = appendFloatField(dst, tagSampleValue, smp.Value)
		dst = appendIntField(dst, tagSampleTimestamp, smp.Timestamp)
	}
	for i := range s.Exemplars {
		e := &s.Exemplars[i]
		dst = append(dst, tagSeriesExemplar)
		dst = appendVarint(dst, uint64(e.size()))
		for j := range e.Labels {
			dst = appendLabel(dst, tagExemplarLabel, &e.Labels[j])
		}
		dst = appendFloatField(dst, tagExemplarValue, e.Value)
		dst = appendIntField(dst, tagExemplarTimestamp, e.Timestamp)
	}
	for i := range s.Histograms {
		dst = appendBytesField(dst, tagSeriesHistogram, s.Histograms[i].Data)
	}
	return dst
}

func (l *Label) size() int {
	return sizeStringField(len(l.Name)) + sizeStringField(len(l.Value))
}

func appendLabel(dst []byte, tag byte, l *Label) []byte {
	// Fast path: a name and value of 1 to 127 bytes each, in a message under
	// 128 bytes: every length is one byte.
	if n := 4 + len(l.Name) + len(l.Value); n < 1<<7 && len(l.Name) > 0 && len(l.Value) > 0 {
		dst = append(dst, tag, byte(n), tagLabelName, byte(len(l.Name)))
		dst = append(dst, l.Name...)
		dst = append(dst, tagLabelValue, byte(len(l.Value)))
		return append(dst, l.Value...)
	}
	dst = append(dst, tag)
	dst = appendVarint(dst, uint64(l.size()))
	if len(l.Name) > 0 {
		dst = appendBytesField(dst, tagLabelName, l.Name)
	}
	if len(l.Value) > 0 {
		dst = appendBytesField(dst, tagLabelValue, l.Value)
	}
	return dst
}

func (s *Sample) size() int {
	return sizeFloatField(s.Value) + sizeIntField(s.Timestamp)
}

func (e *Exemplar) size() int {
	n := sizeFloatField(e.Value) + sizeIntField(e.Timestamp)
	for i := range e.Labels {
		n += sizeBytesField(e.Labels[i].size())
	}
	return n
}

func (m *Metadata) size() int {
	return sizeIntField(int64(m.Type)) + sizeStringField(len(m.FamilyName)) +
		sizeStringField(len(m.Help)) + sizeStringField(len(m.Unit))
}

func (m *Metadata) marshalAppend(dst []byte) []byte {
	dst = appendIntField(dst, tagMetadataType, int64(m.Type))
	if len(m.FamilyName) > 0 {
		dst = appendBytesField(dst, tagMetadataFamily, m.FamilyName)
	}
	if len(m.Help) > 0 {
		dst = appendBytesField(dst, tagMetadataHelp, m.Help)
	}
	if len(m.Unit) > 0 {
		dst = appendBytesField(dst, tagMetadataUnit, m.Unit)
	}
	return dst
}

// sizeVarint returns the encoded length of x as a varint.
func sizeVarint(x uint64) int {
	return (bits.Len64(x|1) + 6) / 7
}

// sizeBytesField is the size of a length-delimited field with a one-byte tag,
// written even when empty (embedded messages).
func sizeBytesField(n int) int {
	return 1 + sizeVarint(uint64(n)) + n
}

// sizeStringField is the size of a proto3 string field, omitted when empty.
func sizeStringField(n int) int {
	if n == 0 {
		return 0
	}
	return sizeBytesField(n)
}

func sizeFloatField(v float64) int {
	if math.Float64bits(v) == 0 {
		return 0
	}
	return 9
}

func sizeIntField(v int64) int {
	if v == 0 {
		return 0
	}
	return 1 + sizeVarint(uint64(v))
}

func appendVarint(dst []byte, x uint64) []byte {
	for x >= 0x80 {
		dst = append(dst, byte(x)|0x80)
		x >>= 7
	}
	return append(dst, byte(x))
}

func appendBytesField(dst []byte, tag byte, b []byte) []byte {
	dst = append(dst, tag)
	dst = appendVarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func appendFloatField(dst []byte, tag byte, v float64) []byte {
	u := math.Float64bits(v)
	if u == 0 {
		return dst
	}
	dst = append(dst, tag)
	return binary.LittleEndian.AppendUint64(dst, u)
}

// appendIntField writes an int64 or enum field; negative values take ten
// bytes, as protobuf's int64 encoding requires.
func appendIntField(dst []byte, tag byte, v int64) []byte {
	if v == 0 {
		return dst
	}
	dst = append(dst, tag)
	return appendVarint(dst, uint64(v))
}
