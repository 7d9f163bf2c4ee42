package wire

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Field tags of remote write 2.0 (io.prometheus.write.v2).
const (
	tagV2Symbol    = 4<<3 | wireBytes
	tagV2Series    = 5<<3 | wireBytes
	tagV2Refs      = 1<<3 | wireBytes // labels_refs, packed
	tagV2Sample    = 2<<3 | wireBytes
	tagV2Histogram = 3<<3 | wireBytes
	tagV2Exemplar  = 4<<3 | wireBytes
	tagV2Metadata  = 5<<3 | wireBytes
	tagV2SampleVal = 1<<3 | wireFixed64
	tagV2SampleTs  = 2<<3 | wireVarint
	tagV2SampleST  = 3<<3 | wireVarint
	tagV2ExRefs    = 1<<3 | wireBytes
	tagV2ExValue   = 2<<3 | wireFixed64
	tagV2ExTs      = 3<<3 | wireVarint
	tagV2MetaType  = 1<<3 | wireVarint
	tagV2MetaHelp  = 3<<3 | wireVarint
	tagV2MetaUnit  = 4<<3 | wireVarint
)

// UnmarshalV2 decodes a remote-write 2.0 Request
// (io.prometheus.write.v2.Request) from src into r, replacing its previous
// contents, into the same model as Unmarshal: label names and values are
// the symbols they reference, aliasing src, so every later stage treats both
// versions alike. Each series' metadata goes to Series.Meta, and, per
// family, to r.Metadata as well (see DeriveMetadata), so that a 2.0 request
// forwarded as 1.0 keeps it.
//
// Like Unmarshal it accepts exactly the wire format that Prometheus' own
// decoder (gogo's writev2.Request.Unmarshal) accepts, and allocates nothing
// after warm-up. Beyond the wire format it enforces what the 2.0
// specification requires of the request as a whole: symbols[0] must be the
// empty string. What the specification requires of a series (references
// inside the symbol table and in name/value pairs, at least one sample or
// histogram) is checked per series: a series that fails is marked, and
// Sanitize drops it and counts it, so that one bad series does not cost the
// others, as in Prometheus' receiver.
func (r *Request) UnmarshalV2(src []byte) error {
	r.Reset()
	// Pass 1: the symbol table, which may come after the series that use it.
	nSeries := 0
	for i := 0; i < len(src); {
		num, wt, next, err := readTag(src, i)
		if err != nil {
			return malformed("%s", fieldError(num, err))
		}
		i = next
		switch num {
		case 4, 5:
			if wt != wireBytes {
				return malformed("field %d: %s", num, errWrongWireType)
			}
			var data []byte
			if data, i, err = readBytes(src, i); err != nil {
				if num == 4 {
					return malformed("symbols %d: %s", len(r.symbols), err)
				}
				return malformed("timeseries %d: %s", nSeries, err)
			}
			if num == 4 {
				r.symbols = append(r.symbols, data[:len(data):len(data)])
			} else {
				nSeries++
			}
		default:
			if i, err = skipField(src, i, wt); err != nil {
				return malformed("%s", fieldError(num, err))
			}
		}
	}
	ascii := true
	for _, sym := range r.symbols {
		if !isASCII(sym) {
			ascii = false
			break
		}
	}
	if len(r.symbols) > 0 && len(r.symbols[0]) != 0 {
		return malformed("symbols[0] must be the empty string, is %d bytes long", len(r.symbols[0]))
	}
	// Pass 2: the series. The wire format was checked at the top level.
	r.exemplarOnly = 0
	for i := 0; i < len(src); {
		num, wt, next, _ := readTag(src, i)
		i = next
		if num != 5 {
			i, _ = skipField(src, i, wt)
			continue
		}
		var data []byte
		data, i, _ = readBytes(src, i)
		if err := r.unmarshalSeriesV2(data); err != nil {
			return malformed("timeseries %d: %s", len(r.Series), err)
		}
	}
	r.DeriveMetadata()
	// Set last: Sanitize trusts it for every label of the request.
	r.asciiSymbols = ascii
	return nil
}

// FoldExemplars moves the exemplars of series that carry nothing else onto
// the series with the same labels and samples in the request, and removes
// them. Prometheus 3 sends every exemplar as a series of its own, while its
// receiver, following the specification, refuses a series without samples:
// folded, the exemplar reaches a 2.0 receiver. An exemplar whose series has
// no samples in the request stays a series of its own, which 1.0 receivers
// take. Prometheus' 1.0 sender does the same, and 1.0 receivers take it as
// it is, but a 1.0 request may be forwarded as 2.0.
//
// It is a step of its own, after decoding, so that the decoders stay
// exactly Prometheus' (one series decoded per series sent). Only requests
// with such series do any work; the index is kept for the next request.
func (r *Request) FoldExemplars() {
	if r.exemplarOnly == 0 {
		return
	}
	r.exemplarOnly = 0
	r.DecodeAllLazy()
	if r.foldIndex == nil {
		r.foldIndex = make(map[uint64]int32)
	}
	clear(r.foldIndex)
	carriesData := func(s *Series) bool { return len(s.Samples) > 0 || len(s.Histograms) > 0 }
	var h uint64
	for i := range r.Series {
		if s := &r.Series[i]; s.invalid == 0 && carriesData(s) {
			h, r.hashBuf = HashLabels(r.hashBuf, s.Labels)
			if _, ok := r.foldIndex[h]; !ok {
				r.foldIndex[h] = int32(i)
			}
		}
	}
	folded := 0
	for i := range r.Series {
		s := &r.Series[i]
		if s.invalid != 0 || carriesData(s) || len(s.Exemplars) == 0 {
			continue
		}
		h, r.hashBuf = HashLabels(r.hashBuf, s.Labels)
		j, ok := r.foldIndex[h]
		if !ok || !LabelsEqual(r.Series[j].Labels, s.Labels) {
			continue
		}
		t := &r.Series[j]
		start := len(r.exemplars)
		r.exemplars = append(r.exemplars, t.Exemplars...)
		r.exemplars = append(r.exemplars, s.Exemplars...)
		t.Exemplars = r.exemplars[start:len(r.exemplars):len(r.exemplars)]
		s.Exemplars = nil // folded: removed below
		folded++
	}
	if folded == 0 {
		return
	}
	out := r.Series[:0]
	for _, s := range r.Series {
		if s.invalid == 0 && !carriesData(&s) && len(s.Exemplars) == 0 {
			continue
		}
		out = append(out, s)
	}
	clear(r.Series[len(out):])
	r.Series = out
}

// symbol returns the symbol ref, or false when it is out of range.
func (r *Request) symbol(ref uint32) ([]byte, bool) {
	if uint64(ref) >= uint64(len(r.symbols)) {
		return nil, false
	}
	return r.symbols[ref], true
}

func (r *Request) unmarshalSeriesV2(src []byte) error {
	labelsStart, samplesStart := len(r.labels), len(r.samples)
	exemplarsStart, histogramsStart := len(r.exemplars), len(r.histograms)
	r.refs = r.refs[:0]
	r.exemplarRefsBad = false
	var meta struct{ typ, help, unit uint32 }
	for len(src) > 0 {
		// Fast path: a sample as every sender writes it.
		if data, rest, ok := nextShortMessage(src, tagV2Sample); ok && len(data) > 10 && data[0] == tagV2SampleVal && data[9] == tagV2SampleTs {
			if ts, n := binary.Uvarint(data[10:]); n == len(data)-10 && n > 0 && n <= 10 {
				r.samples = append(r.samples, Sample{
					Value:     math.Float64frombits(binary.LittleEndian.Uint64(data[1:9])),
					Timestamp: int64(ts),
				})
				src = rest
				continue
			}
		}
		num, wt, i, err := readTag(src, 0)
		if err != nil {
			return fieldError(num, err)
		}
		if num == 1 {
			// labels_refs, packed or not.
			if r.refs, i, err = appendRefs(r.refs, src, i, wt); err != nil {
				return fmt.Errorf("labels_refs: %w", err)
			}
			src = src[i:]
			continue
		}
		var data []byte
		if num >= 2 && num <= 5 {
			if wt != wireBytes {
				return fmt.Errorf("field %d: %w", num, errWrongWireType)
			}
			if data, i, err = readBytes(src, i); err != nil {
				return fmt.Errorf("field %d: %w", num, err)
			}
		}
		switch num {
		case 2:
			var s Sample
			if err := unmarshalSampleV2(&s, data); err != nil {
				return fmt.Errorf("sample %d: %w", len(r.samples)-samplesStart, err)
			}
			r.samples = append(r.samples, s)
		case 3:
			sc := histScan{v2: true}
			if err := sc.scan(data, nil); err != nil {
				return fmt.Errorf("histogram %d: %w", len(r.histograms)-histogramsStart, err)
			}
			r.histograms = append(r.histograms, Histogram{Timestamp: sc.timestamp, Data: data})
		case 4:
			if err := r.unmarshalExemplarV2(data); err != nil {
				return fmt.Errorf("exemplar %d: %w", len(r.exemplars)-exemplarsStart, err)
			}
		case 5:
			// An embedded message given twice is merged: later fields win.
			if err := unmarshalMetadataV2(&meta.typ, &meta.help, &meta.unit, data); err != nil {
				return fmt.Errorf("metadata: %w", err)
			}
		default:
			if i, err = skipField(src, i, wt); err != nil {
				return fieldError(num, err)
			}
		}
		src = src[i:]
	}

	var invalid InvalidReason
	bad := false
	var ok bool
	if r.labels, ok = r.resolve(r.labels, r.refs); !ok {
		invalid, bad = InvalidReference, true
	}
	var m SeriesMetadata
	if !bad {
		help, ok1 := r.symbol(meta.help)
		unit, ok2 := r.symbol(meta.unit)
		if !ok1 || !ok2 {
			invalid, bad = InvalidReference, true
		}
		m = SeriesMetadata{Type: int32(meta.typ), Help: help, Unit: unit}
	}
	if !bad && r.exemplarRefsBad {
		invalid, bad = InvalidReference, true
	}
	r.exemplarRefsBad = false
	if !bad && len(r.samples) == samplesStart && len(r.histograms) == histogramsStart {
		if len(r.exemplars) == exemplarsStart {
			invalid, bad = InvalidNoSamples, true
		} else {
			r.exemplarOnly++
		}
	}
	s := Series{
		Labels:     r.labels[labelsStart:len(r.labels):len(r.labels)],
		Samples:    r.samples[samplesStart:len(r.samples):len(r.samples)],
		Exemplars:  r.exemplars[exemplarsStart:len(r.exemplars):len(r.exemplars)],
		Histograms: r.histograms[histogramsStart:len(r.histograms):len(r.histograms)],
		Meta:       m,
	}
	if bad {
		s.invalid = uint8(invalid) + 1
	}
	r.Series = append(r.Series, s)
	return nil
}

// appendRefs reads one labels_refs field (a packed run, or one varint)
// at src[i:], with gogo's rules for packed fields (see proto.go).
func appendRefs(refs []uint32, src []byte, i int, wt uint8) ([]uint32, int, error) {
	var v uint64
	var err error
	switch wt {
	case wireVarint:
		if v, i, err = readVarint(src, i); err != nil {
			return refs, i, err
		}
		return append(refs, uint32(v)), i, nil
	case wireBytes:
		var n uint64
		if n, i, err = readVarint(src, i); err != nil {
			return refs, i, err
		}
		if n > uint64(len(src)-i) {
			return refs, i, errTruncated
		}
		for end := i + int(n); i < end; {
			// Fast path: one-byte references.
			if c := src[i]; c < 0x80 {
				refs = append(refs, uint32(c))
				i++
				continue
			}
			if v, i, err = readVarint(src, i); err != nil {
				return refs, i, err
			}
			refs = append(refs, uint32(v))
		}
		return refs, i, nil
	}
	return refs, i, errWrongWireType
}

func unmarshalSampleV2(s *Sample, src []byte) error {
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
		case 2, 3:
			if wt != wireVarint {
				return fmt.Errorf("field %d: %w", num, errWrongWireType)
			}
			if v, i, err = readVarint(src, i); err != nil {
				return fmt.Errorf("field %d: %w", num, err)
			}
			if num == 2 {
				s.Timestamp = int64(v)
			} else {
				s.StartTimestamp = int64(v)
			}
		default:
			if i, err = skipField(src, i, wt); err != nil {
				return fieldError(num, err)
			}
		}
	}
	return nil
}

func (r *Request) unmarshalExemplarV2(src []byte) error {
	labelsStart := len(r.exLabels)
	refsStart := len(r.refs)
	var e Exemplar
	for i := 0; i < len(src); {
		num, wt, next, err := readTag(src, i)
		if err != nil {
			return fieldError(num, err)
		}
		i = next
		if num == 1 {
			if r.refs, i, err = appendRefs(r.refs, src, i, wt); err != nil {
				return fmt.Errorf("labels_refs: %w", err)
			}
			continue
		}
		if i, err = e.readField(src, i, num, wt); err != nil {
			return err
		}
	}
	// The exemplar's references share r.refs with the series' own, which
	// may still be growing: resolve them now and take them back out.
	var ok bool
	if r.exLabels, ok = r.resolve(r.exLabels, r.refs[refsStart:]); !ok {
		r.exemplarRefsBad = true
	}
	r.refs = r.refs[:refsStart]
	e.Labels = r.exLabels[labelsStart:len(r.exLabels):len(r.exLabels)]
	r.exemplars = append(r.exemplars, e)
	return nil
}

// resolve appends the labels that refs (name and value references, in
// pairs) stand for to dst. It reports false for an odd number of
// references or one outside the symbol table, leaving dst with the labels
// before the bad one.
func (r *Request) resolve(dst []Label, refs []uint32) ([]Label, bool) {
	for k := 0; k+1 < len(refs); k += 2 {
		name, ok1 := r.symbol(refs[k])
		value, ok2 := r.symbol(refs[k+1])
		if !ok1 || !ok2 {
			return dst, false
		}
		dst = append(dst, Label{Name: name, Value: value})
	}
	return dst, len(refs)%2 == 0
}

func unmarshalMetadataV2(typ, help, unit *uint32, src []byte) error {
	for i := 0; i < len(src); {
		num, wt, next, err := readTag(src, i)
		if err != nil {
			return fieldError(num, err)
		}
		i = next
		switch num {
		case 1, 3, 4:
			if wt != wireVarint {
				return fmt.Errorf("field %d: %w", num, errWrongWireType)
			}
			var v uint64
			if v, i, err = readVarint(src, i); err != nil {
				return fmt.Errorf("field %d: %w", num, err)
			}
			switch num {
			case 1:
				*typ = uint32(v) // an enum: the low 32 bits, as int32
			case 3:
				*help = uint32(v)
			default:
				*unit = uint32(v)
			}
		default:
			if i, err = skipField(src, i, wt); err != nil {
				return fieldError(num, err)
			}
		}
	}
	return nil
}
