package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ErrMalformed wraps every decoding error, so that callers can map all of them
// to one status code with errors.Is.
var ErrMalformed = errors.New("malformed protobuf")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Unmarshal decodes a remote-write 1.0 WriteRequest from src into r, replacing
// its previous contents.
//
// Labels, metadata strings and histogram data alias src: the caller must keep
// src unchanged until r is reset. Unmarshal accepts exactly the inputs that
// Prometheus' own decoder (gogo's prompb.WriteRequest.Unmarshal) accepts, at
// every level including the inside of native histograms: unknown fields are
// skipped, and illegal tags, wrong wire types of known fields, truncated
// messages and overlong varints are errors wrapping ErrMalformed. Nothing is
// validated beyond the wire format; see Sanitize.
func (r *Request) Unmarshal(src []byte) error {
	err := r.unmarshal(src)
	if r.guessed > 0 && (err != nil || r.exemplarOnly > 0) {
		// Slow path: the error a strict decode reports first, which may be
		// in a guessed series; or exemplars to fold, which FoldExemplars
		// matches by labels.
		r.guessLabels = false
		err = r.unmarshal(src)
		r.guessLabels = true
	}
	return err
}

func (r *Request) unmarshal(src []byte) error {
	r.Reset()
	r.exemplarOnly = 0
	r.plain = true
	r.src = src
	for i := 0; i < len(src); {
		at := i
		num, wt, next, err := readTag(src, i)
		if err != nil {
			return malformed("%s", fieldError(num, err))
		}
		i = next
		switch num {
		case 1:
			if wt != wireBytes {
				return malformed("timeseries %d: %s", len(r.Series), errWrongWireType)
			}
			var data []byte
			if data, i, err = readBytes(src, i); err != nil {
				return malformed("timeseries %d: %s", len(r.Series), err)
			}
			if err := r.unmarshalSeries(data); err != nil {
				return malformed("timeseries %d: %s", len(r.Series), err)
			}
			r.Series[len(r.Series)-1].index = int32(len(r.spans))
			r.spans = append(reserve(r.spans, 1), span{uint32(at), uint32(i)})
		case 3:
			if wt != wireBytes {
				return malformed("metadata %d: %s", len(r.Metadata), errWrongWireType)
			}
			var data []byte
			if data, i, err = readBytes(src, i); err != nil {
				return malformed("metadata %d: %s", len(r.Metadata), err)
			}
			if err := r.unmarshalMetadata(data); err != nil {
				return malformed("metadata %d: %s", len(r.Metadata), err)
			}
		default:
			r.plain = false
			if i, err = skipField(src, i, wt); err != nil {
				return malformed("%s", fieldError(num, err))
			}
		}
	}
	return nil
}

func (r *Request) unmarshalSeries(src []byte) error {
	r.labels, r.samples = reserve(r.labels, 64), reserve(r.samples, 4)
	r.Series = reserve(r.Series, 1)
	labelsStart, samplesStart := len(r.labels), len(r.samples)
	exemplarsStart, histogramsStart := len(r.exemplars), len(r.histograms)
	// The label fields, while they come first, contiguous and canonical.
	whole := src
	rawEnd, canonical := 0, true
	// deferred: the labels so far are left encoded (see SetDeferLabels).
	deferred := false
	if r.deferLabels && r.guessLabels {
		// Fastest path: labels, then one sample, the labels unread.
		if n, smp, ok := splitShortSample(src); ok {
			r.guessed++
			r.guessedSeries++
			r.guessedBytes += n
			r.samples = append(r.samples, smp)
			r.Series = append(r.Series, Series{
				lazy:        true,
				encodedOnly: true,
				unverified:  true,
				rawLabels:   src[:n:n],
				Samples:     r.samples[samplesStart:len(r.samples):len(r.samples)],
			})
			return nil
		}
	}
	// Fast path: the leading run of labels as every sender writes them,
	// in one tight loop. The loop below reads whatever follows.
	if r.deferLabels {
		if n, count := scanShortLabels(src); n > 0 {
			rawEnd, deferred = n, true
			r.deferredLabels += count
			src = src[n:]
		}
	} else {
		var n int
		if r.labels, n = appendShortLabels(r.labels, src); n > 0 {
			rawEnd = n
			src = src[n:]
		}
	}
	for len(src) > 0 {
		// Fast path: a label or a sample, as every sender writes them. A
		// label here comes after another field (the leading run was read
		// above): the labels are not contiguous, so they are decoded.
		if m, name, nameEnd, value := shortLabelAt(src); m > 0 {
			if deferred {
				r.labels, deferred = appendLabels(r.labels, whole[:rawEnd]), false
			}
			canonical = false
			r.labels = append(r.labels, Label{Name: src[name:nameEnd:nameEnd], Value: src[value:m:m]})
			src = src[m:]
			continue
		} else if data, rest, ok := nextShortMessage(src, tagSeriesSample); ok {
			if smp, ok := shortSample(data); ok {
				r.samples = append(r.samples, smp)
				src = rest
				continue
			}
		}
		// Slow path: any other field or layout.
		r.plain = false
		num, wt, i, err := readTag(src, 0)
		if err != nil {
			return fieldError(num, err)
		}
		var data []byte
		if num >= 1 && num <= 4 {
			if wt != wireBytes {
				return fmt.Errorf("field %d: %w", num, errWrongWireType)
			}
			if data, i, err = readBytes(src, i); err != nil {
				return fmt.Errorf("field %d: %w", num, err)
			}
		}
		switch num {
		case 1:
			if deferred {
				r.labels, deferred = appendLabels(r.labels, whole[:rawEnd]), false
			}
			canonical = false
			var l Label
			if err := unmarshalLabel(&l, data); err != nil {
				return fmt.Errorf("label %d: %w", len(r.labels)-labelsStart, err)
			}
			r.labels = append(r.labels, l)
		case 2:
			var s Sample
			if err := unmarshalSample(&s, data); err != nil {
				return fmt.Errorf("sample %d: %w", len(r.samples)-samplesStart, err)
			}
			r.samples = append(r.samples, s)
		case 3:
			if err := r.unmarshalExemplar(data); err != nil {
				return fmt.Errorf("exemplar %d: %w", len(r.exemplars)-exemplarsStart, err)
			}
		case 4:
			// The histogram is carried as its bytes, but it must be one
			// that Prometheus can decode: parse it whole.
			var sc histScan
			if err := sc.scan(data, nil); err != nil {
				return fmt.Errorf("histogram %d: %w", len(r.histograms)-histogramsStart, err)
			}
			r.histograms = append(r.histograms, Histogram{Timestamp: sc.timestamp, Data: data})
		default:
			if i, err = skipField(src, i, wt); err != nil {
				return fieldError(num, err)
			}
		}
		src = src[i:]
	}
	// Clip capacities so that a later append to one series' slice cannot
	// overwrite the next series in the shared pool.
	var raw []byte
	if canonical && rawEnd > 0 {
		raw = whole[:rawEnd:rawEnd]
	}
	if len(r.samples) == samplesStart && len(r.histograms) == histogramsStart && len(r.exemplars) > exemplarsStart {
		r.exemplarOnly++
	}
	r.Series = append(r.Series, Series{
		lazy:        deferred,
		encodedOnly: deferred,
		rawLabels:   raw,
		Labels:      r.labels[labelsStart:len(r.labels):len(r.labels)],
		Samples:     r.samples[samplesStart:len(r.samples):len(r.samples)],
		Exemplars:   r.exemplars[exemplarsStart:len(r.exemplars):len(r.exemplars)],
		Histograms:  r.histograms[histogramsStart:len(r.histograms):len(r.histograms)],
	})
	return nil
}

// shortLabelAt reads the label field at the start of src when it is laid
// out as every sender writes it (see nextShortMessage and shortLabel,
// which it folds into one step): it returns the field's length, and the
// offsets in src of the name, of its end and of the value, or n = 0 for a
// field of any other form. The name is shorter than 128 bytes, the field
// and the value shorter than 16 KiB (a user agent or a URL path takes more
// than 127 bytes), each length a minimal varint as gogo writes it.
func shortLabelAt(src []byte) (n, name, nameEnd, value int) {
	if len(src) < 4 || src[0] != tagSeriesLabel {
		return 0, 0, 0, 0
	}
	l, i := int(src[1]), 2
	if l >= 0x80 {
		if src[2] >= 0x80 || src[2] == 0 {
			return 0, 0, 0, 0
		}
		l, i = l&0x7f|int(src[2])<<7, 3
	}
	n = i + l
	// The Label message: name, then value.
	if n > len(src) || l < 4 || src[i] != tagLabelName || src[i+1] >= 0x80 {
		return 0, 0, 0, 0
	}
	name = i + 2
	nameEnd = name + int(src[i+1]) // the value's tag
	if nameEnd+2 > n || src[nameEnd] != tagLabelValue {
		return 0, 0, 0, 0
	}
	vl, value := int(src[nameEnd+1]), nameEnd+2
	if vl >= 0x80 {
		if value >= n || src[value] >= 0x80 || src[value] == 0 {
			return 0, 0, 0, 0
		}
		vl, value = vl&0x7f|int(src[value])<<7, value+1
	}
	if value+vl != n {
		return 0, 0, 0, 0
	}
	return n, name, nameEnd, value
}

// scanShortLabels returns the length of the run of label fields at the
// start of src that shortLabelAt reads, and how many there are.
func scanShortLabels(src []byte) (n, count int) {
	for {
		m, _, _, _ := shortLabelAt(src[n:])
		if m == 0 {
			return n, count
		}
		n += m
		count++
	}
}

// appendShortLabels appends the labels of the run scanShortLabels would
// measure, and returns its length.
func appendShortLabels(dst []Label, src []byte) ([]Label, int) {
	n := 0
	for {
		f := src[n:]
		m, name, nameEnd, value := shortLabelAt(f)
		if m == 0 {
			return dst, n
		}
		dst = append(dst, Label{Name: f[name:nameEnd:nameEnd], Value: f[value:m:m]})
		n += m
	}
}

// shortSample decodes a Sample message laid out as every sender writes it:
// the value, then the timestamp, each left out when it is zero (as gogo
// and this package's encoder do: a counter at 0 has no value field).
func shortSample(data []byte) (Sample, bool) {
	var smp Sample
	if len(data) >= 9 && data[0] == tagSampleValue {
		smp.Value = math.Float64frombits(binary.LittleEndian.Uint64(data[1:9]))
		data = data[9:]
	}
	if len(data) == 0 {
		return smp, true
	}
	if data[0] != tagSampleTimestamp {
		return smp, false
	}
	// n is 0 for a tag without its varint, which the slow path refuses.
	ts, n := binary.Uvarint(data[1:])
	smp.Timestamp = int64(ts)
	return smp, n > 0 && n == len(data)-1
}

// splitShortSample splits a TimeSeries message that ends in a Sample field
// as shortSample reads it, after at least one other byte: it returns where
// that field starts and the sample. The bytes before it are what a series
// of labels and one sample would hold as its labels; nothing says they are
// (see Request.Verify).
func splitShortSample(src []byte) (int, Sample, bool) {
	// A value and a timestamp of today, in milliseconds (six varint
	// bytes), make the 18 bytes of nearly every sample; then a counter at
	// 0, which has no value field.
	for _, m := range [...]int{18, 17, 19, 9, 8, 10, 11, 12, 13, 14, 15, 16, 20, 21, 22, 2, 3, 4, 5, 6, 7} {
		start := len(src) - m
		if start < 1 || src[start] != tagSeriesSample || int(src[start+1]) != m-2 {
			continue
		}
		if smp, ok := shortSample(src[start+2:]); ok {
			return start, smp, true
		}
	}
	return 0, Sample{}, false
}

// Verify reads the labels Unmarshal left unverified (see SetGuessLabels), but
// for the series i for which known[i] is set: the caller knows their labels
// by InputHash as bytes that passed Sanitize before, so they are labels.
// The labels it reads it decodes (they are no longer Lazy).
// known may be shorter than r.Series. A series whose guess was wrong, one
// with several samples say, is decoded again in full, in place; Verify
// returns how many it decoded again: their InputHash changed, and when one
// carries only exemplars they are folded (FoldExemplars), which moves the
// series after it. A series that does not decode is the first malformed one
// of the request (Unmarshal decoded every other field): its error is
// Unmarshal's.
func (r *Request) Verify(known []bool) (redecoded int, err error) {
	if r.guessed == 0 {
		return 0, nil
	}
	for i := 0; i < len(r.Series) && r.guessed > 0; i++ {
		s := &r.Series[i]
		if !s.unverified {
			continue
		}
		s.unverified = false
		r.guessed--
		r.guessedBytes -= len(s.rawLabels)
		if i < len(known) && known[i] {
			continue
		}
		// An input the caller does not know: its labels are read next
		// (Sanitize), so they are decoded rather than only scanned.
		start := len(r.labels)
		var n int
		if r.labels, n = appendShortLabels(r.labels, s.rawLabels); n == len(s.rawLabels) {
			s.Labels = r.labels[start:len(r.labels):len(r.labels)]
			s.lazy, s.encodedOnly = false, false
			continue
		}
		clear(r.labels[start:])
		r.labels = r.labels[:start]
		// Slow path: not labels and a sample.
		if err := r.redecode(i); err != nil {
			r.guessed, r.guessedBytes = 0, 0
			return redecoded, malformed("timeseries %d: %s", i, err)
		}
		redecoded++
	}
	if r.exemplarOnly > 0 {
		// A series decoded again carries only exemplars (unmarshalSeries
		// counted it): folded as Unmarshal's caller would have.
		r.FoldExemplars()
	}
	return redecoded, nil
}

// Guessed returns the number of series whose labels Unmarshal guessed (see
// SetGuessLabels), verified since or not.
func (r *Request) Guessed() int { return r.guessedSeries }

// redecode decodes series i again from its field in r.src, without
// guessing, and puts the result in its place.
func (r *Request) redecode(i int) error {
	sp := r.spans[r.Series[i].index]
	field := r.src[sp.start:sp.end]
	_, _, next, err := readTag(field, 0)
	if err != nil {
		return err
	}
	data, _, err := readBytes(field, next)
	if err != nil {
		return err
	}
	guess := r.guessLabels
	r.guessLabels = false
	err = r.unmarshalSeries(data)
	r.guessLabels = guess
	if err != nil {
		return err
	}
	last := len(r.Series) - 1
	s := r.Series[last]
	s.index = r.Series[i].index
	r.Series[i] = s
	r.Series[last] = Series{}
	r.Series = r.Series[:last]
	return nil
}

// appendLabels appends the labels of enc, label fields that the fast path
// of unmarshalSeries read before (so they are well formed and short).
func appendLabels(dst []Label, enc []byte) []Label {
	dst, _ = appendShortLabels(dst, enc)
	return dst
}

// nextShortMessage reads a length-delimited field with the one-byte tag and
// a length below 16 KiB (one or two varint bytes) from the start of src.
func nextShortMessage(src []byte, tag byte) (data, rest []byte, ok bool) {
	if len(src) < 2 || src[0] != tag {
		return nil, nil, false
	}
	n, i := int(src[1]), 2
	if n >= 0x80 {
		// A second byte of 0 would be a padded, non-canonical varint.
		if len(src) < 3 || src[2] >= 0x80 || src[2] == 0 {
			return nil, nil, false
		}
		n, i = n&0x7f|int(src[2])<<7, 3
	}
	if len(src)-i < n {
		return nil, nil, false
	}
	return src[i : i+n], src[i+n:], true
}

// shortLabel decodes a Label message laid out as name then value, each
// shorter than 128 bytes, which is how every sender writes them.
func shortLabel(data []byte) (name, value []byte, ok bool) {
	if len(data) < 2 || data[0] != tagLabelName || data[1] >= 0x80 {
		return nil, nil, false
	}
	end := 2 + int(data[1])
	if len(data) < end+2 || data[end] != tagLabelValue || data[end+1] >= 0x80 || len(data) != end+2+int(data[end+1]) {
		return nil, nil, false
	}
	return data[2:end:end], data[end+2 : len(data) : len(data)], true
}

func unmarshalLabel(l *Label, src []byte) error {
	for i := 0; i < len(src); {
		num, wt, next, err := readTag(src, i)
		if err != nil {
			return fieldError(num, err)
		}
		i = next
		switch num {
		case 1, 2:
			if wt != wireBytes {
				return fmt.Errorf("field %d: %w", num, errWrongWireType)
			}
			var b []byte
			if b, i, err = readBytes(src, i); err != nil {
				return fmt.Errorf("field %d: %w", num, err)
			}
			if num == 1 {
				l.Name = b
			} else {
				l.Value = b
			}
		default:
			if i, err = skipField(src, i, wt); err != nil {
				return fieldError(num, err)
			}
		}
	}
	return nil
}

func unmarshalSample(s *Sample, src []byte) error {
	for i := 0; i < len(src); {
		num, wt, next, err := readTag(src, i)
		if err != nil {
			return fieldError(num, err)
		}
		i = next
		var v uint64
		switch num {
		case 1:
			if wt != wireFixed64 {
				return fmt.Errorf("field 1: %w", errWrongWireType)
			}
			if v, i, err = readFixed64(src, i); err != nil {
				return fmt.Errorf("field 1: %w", err)
			}
			s.Value = math.Float64frombits(v)
		case 2:
			if wt != wireVarint {
				return fmt.Errorf("field 2: %w", errWrongWireType)
			}
			if v, i, err = readVarint(src, i); err != nil {
				return fmt.Errorf("field 2: %w", err)
			}
			s.Timestamp = int64(v)
		default:
			if i, err = skipField(src, i, wt); err != nil {
				return fieldError(num, err)
			}
		}
	}
	return nil
}

func (r *Request) unmarshalExemplar(src []byte) error {
	labelsStart := len(r.exLabels)
	var e Exemplar
	for i := 0; i < len(src); {
		num, wt, next, err := readTag(src, i)
		if err != nil {
			return fieldError(num, err)
		}
		i = next
		switch num {
		case 1:
			if wt != wireBytes {
				return fmt.Errorf("field 1: %w", errWrongWireType)
			}
			var data []byte
			if data, i, err = readBytes(src, i); err != nil {
				return fmt.Errorf("field 1: %w", err)
			}
			var l Label
			if err := unmarshalLabel(&l, data); err != nil {
				return fmt.Errorf("label %d: %w", len(r.exLabels)-labelsStart, err)
			}
			r.exLabels = append(r.exLabels, l)
		default:
			if i, err = e.readField(src, i, num, wt); err != nil {
				return err
			}
		}
	}
	e.Labels = r.exLabels[labelsStart:len(r.exLabels):len(r.exLabels)]
	r.exemplars = append(r.exemplars, e)
	return nil
}

// readField reads the field num of an Exemplar message at src[i:], other
// than its labels (field 1, which the two versions encode differently): the
// value, the timestamp, or an unknown field, skipped. Both versions number
// them alike.
func (e *Exemplar) readField(src []byte, i int, num int32, wt uint8) (int, error) {
	var v uint64
	var err error
	switch num {
	case 2:
		if wt != wireFixed64 {
			return i, fmt.Errorf("field 2: %w", errWrongWireType)
		}
		if v, i, err = readFixed64(src, i); err != nil {
			return i, fmt.Errorf("field 2: %w", err)
		}
		e.Value = math.Float64frombits(v)
	case 3:
		if wt != wireVarint {
			return i, fmt.Errorf("field 3: %w", errWrongWireType)
		}
		if v, i, err = readVarint(src, i); err != nil {
			return i, fmt.Errorf("field 3: %w", err)
		}
		e.Timestamp = int64(v)
	default:
		if i, err = skipField(src, i, wt); err != nil {
			return i, fieldError(num, err)
		}
	}
	return i, nil
}

func (r *Request) unmarshalMetadata(src []byte) error {
	var m Metadata
	for i := 0; i < len(src); {
		num, wt, next, err := readTag(src, i)
		if err != nil {
			return fieldError(num, err)
		}
		i = next
		switch num {
		case 1:
			if wt != wireVarint {
				return fmt.Errorf("field 1: %w", errWrongWireType)
			}
			var v uint64
			if v, i, err = readVarint(src, i); err != nil {
				return fmt.Errorf("field 1: %w", err)
			}
			// Enums are varints; like every protobuf parser, keep the low
			// 32 bits of an out-of-range value.
			m.Type = int32(v)
		case 2, 4, 5:
			if wt != wireBytes {
				return fmt.Errorf("field %d: %w", num, errWrongWireType)
			}
			var b []byte
			if b, i, err = readBytes(src, i); err != nil {
				return fmt.Errorf("field %d: %w", num, err)
			}
			switch num {
			case 2:
				m.FamilyName = b
			case 4:
				m.Help = b
			default:
				m.Unit = b
			}
		default:
			r.plain = false
			if i, err = skipField(src, i, wt); err != nil {
				return fieldError(num, err)
			}
		}
	}
	r.Metadata = append(r.Metadata, m)
	return nil
}
