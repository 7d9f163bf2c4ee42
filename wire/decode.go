package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/VictoriaMetrics/easyproto"
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
// src unchanged until r is reset. Unknown fields are skipped, as protobuf
// requires. Nothing is validated beyond the wire format; see Validate.
func (r *Request) Unmarshal(src []byte) error {
	r.Reset()
	var fc easyproto.FieldContext
	var err error
	for len(src) > 0 {
		if src, err = fc.NextField(src); err != nil {
			return malformed("cannot read WriteRequest: %s", err)
		}
		switch fc.FieldNum {
		case 1:
			data, ok := fc.MessageData()
			if !ok {
				return malformed("timeseries %d: wrong wire type", len(r.Series))
			}
			if err := r.unmarshalSeries(data); err != nil {
				return malformed("timeseries %d: %s", len(r.Series), err)
			}
		case 3:
			data, ok := fc.MessageData()
			if !ok {
				return malformed("metadata %d: wrong wire type", len(r.Metadata))
			}
			if err := r.unmarshalMetadata(data); err != nil {
				return malformed("metadata %d: %s", len(r.Metadata), err)
			}
		}
	}
	return nil
}

func (r *Request) unmarshalSeries(src []byte) error {
	labelsStart, samplesStart := len(r.labels), len(r.samples)
	exemplarsStart, histogramsStart := len(r.exemplars), len(r.histograms)
	var fc easyproto.FieldContext
	var err error
	// The label fields, while they come first, contiguous and canonical.
	whole := src
	rawEnd, canonical := 0, true
	for len(src) > 0 {
		// Fast path: a label or a sample, as every sender writes them.
		if data, rest, ok := nextShortMessage(src, tagSeriesLabel); ok {
			if name, value, ok := shortLabel(data); ok {
				r.labels = append(r.labels, Label{Name: name, Value: value})
				if canonical && rawEnd == len(whole)-len(src) {
					rawEnd = len(whole) - len(rest)
				} else {
					canonical = false
				}
				src = rest
				continue
			}
		} else if data, rest, ok := nextShortMessage(src, tagSeriesSample); ok && len(data) > 10 && data[0] == tagSampleValue && data[9] == tagSampleTimestamp {
			if ts, n := binary.Uvarint(data[10:]); n == len(data)-10 {
				r.samples = append(r.samples, Sample{
					Value:     math.Float64frombits(binary.LittleEndian.Uint64(data[1:9])),
					Timestamp: int64(ts),
				})
				src = rest
				continue
			}
		}
		// Slow path: any other field or layout.
		if src, err = fc.NextField(src); err != nil {
			return err
		}
		switch fc.FieldNum {
		case 1:
			canonical = false
			data, ok := fc.MessageData()
			if !ok {
				return errors.New("label: wrong wire type")
			}
			var l Label
			if err := unmarshalLabel(&l, data); err != nil {
				return fmt.Errorf("label %d: %w", len(r.labels)-labelsStart, err)
			}
			r.labels = append(r.labels, l)
		case 2:
			data, ok := fc.MessageData()
			if !ok {
				return errors.New("sample: wrong wire type")
			}
			var s Sample
			if err := unmarshalSample(&s, data); err != nil {
				return fmt.Errorf("sample %d: %w", len(r.samples)-samplesStart, err)
			}
			r.samples = append(r.samples, s)
		case 3:
			data, ok := fc.MessageData()
			if !ok {
				return errors.New("exemplar: wrong wire type")
			}
			if err := r.unmarshalExemplar(data); err != nil {
				return fmt.Errorf("exemplar %d: %w", len(r.exemplars)-exemplarsStart, err)
			}
		case 4:
			data, ok := fc.MessageData()
			if !ok {
				return errors.New("histogram: wrong wire type")
			}
			h := Histogram{Data: data}
			ts, _, err := easyproto.GetInt64(data, 15)
			if err != nil {
				return fmt.Errorf("histogram %d: %w", len(r.histograms)-histogramsStart, err)
			}
			h.Timestamp = ts
			r.histograms = append(r.histograms, h)
		}
	}
	// Clip capacities so that a later append to one series' slice cannot
	// overwrite the next series in the shared pool.
	var raw []byte
	if canonical && rawEnd > 0 {
		raw = whole[:rawEnd:rawEnd]
	}
	r.Series = append(r.Series, Series{
		rawLabels:  raw,
		Labels:     r.labels[labelsStart:len(r.labels):len(r.labels)],
		Samples:    r.samples[samplesStart:len(r.samples):len(r.samples)],
		Exemplars:  r.exemplars[exemplarsStart:len(r.exemplars):len(r.exemplars)],
		Histograms: r.histograms[histogramsStart:len(r.histograms):len(r.histograms)],
	})
	return nil
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
	var fc easyproto.FieldContext
	var err error
	for len(src) > 0 {
		if src, err = fc.NextField(src); err != nil {
			return err
		}
		var ok bool
		switch fc.FieldNum {
		case 1:
			l.Name, ok = fc.Bytes()
		case 2:
			l.Value, ok = fc.Bytes()
		default:
			continue
		}
		if !ok {
			return fmt.Errorf("field %d: wrong wire type", fc.FieldNum)
		}
	}
	return nil
}

func unmarshalSample(s *Sample, src []byte) error {
	var fc easyproto.FieldContext
	var err error
	for len(src) > 0 {
		if src, err = fc.NextField(src); err != nil {
			return err
		}
		var ok bool
		switch fc.FieldNum {
		case 1:
			s.Value, ok = fc.Double()
		case 2:
			s.Timestamp, ok = fc.Int64()
		default:
			continue
		}
		if !ok {
			return fmt.Errorf("field %d: wrong wire type", fc.FieldNum)
		}
	}
	return nil
}

func (r *Request) unmarshalExemplar(src []byte) error {
	labelsStart := len(r.exLabels)
	var e Exemplar
	var fc easyproto.FieldContext
	var err error
	for len(src) > 0 {
		if src, err = fc.NextField(src); err != nil {
			return err
		}
		var ok bool
		switch fc.FieldNum {
		case 1:
			var data []byte
			if data, ok = fc.MessageData(); ok {
				var l Label
				if err := unmarshalLabel(&l, data); err != nil {
					return fmt.Errorf("label %d: %w", len(r.exLabels)-labelsStart, err)
				}
				r.exLabels = append(r.exLabels, l)
			}
		case 2:
			e.Value, ok = fc.Double()
		case 3:
			e.Timestamp, ok = fc.Int64()
		default:
			continue
		}
		if !ok {
			return fmt.Errorf("field %d: wrong wire type", fc.FieldNum)
		}
	}
	e.Labels = r.exLabels[labelsStart:len(r.exLabels):len(r.exLabels)]
	r.exemplars = append(r.exemplars, e)
	return nil
}

func (r *Request) unmarshalMetadata(src []byte) error {
	var m Metadata
	var fc easyproto.FieldContext
	var err error
	for len(src) > 0 {
		if src, err = fc.NextField(src); err != nil {
			return err
		}
		var ok bool
		switch fc.FieldNum {
		case 1:
			// Enums are varints; like every protobuf parser, keep the low
			// 32 bits of an out-of-range value.
			var v int64
			v, ok = fc.Int64()
			m.Type = int32(v)
		case 2:
			m.FamilyName, ok = fc.Bytes()
		case 4:
			m.Help, ok = fc.Bytes()
		case 5:
			m.Unit, ok = fc.Bytes()
		default:
			continue
		}
		if !ok {
			return fmt.Errorf("field %d: wrong wire type", fc.FieldNum)
		}
	}
	r.Metadata = append(r.Metadata, m)
	return nil
}
