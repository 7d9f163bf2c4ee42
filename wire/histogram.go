package wire

import (
	"errors"
	"fmt"
	"math"

	"github.com/prometheus/prometheus/model/histogram"
)

// ErrInvalidHistogram wraps every error of ValidateHistogram and
// DecodeFloatHistogram, so that callers can recognise them with errors.Is.
var ErrInvalidHistogram = errors.New("invalid native histogram")

// histogramError is an error of ValidateHistogram. Its detail is the text
// without the "invalid native histogram" prefix, for reports that already
// say what kind of problem it is.
type histogramError struct{ detail string }

func (e *histogramError) Error() string { return ErrInvalidHistogram.Error() + ": " + e.detail }
func (e *histogramError) Unwrap() error { return ErrInvalidHistogram }

func invalidHistogram(format string, args ...any) error {
	return &histogramError{detail: fmt.Sprintf(format, args...)}
}

// histogramDetail returns err's text without the prefix that names the
// reason, when err comes from ValidateHistogram.
func histogramDetail(err error) string {
	var he *histogramError
	if errors.As(err, &he) {
		return he.detail
	}
	return err.Error()
}

// ValidateHistogram reports whether data, an encoded prometheus.Histogram
// message, is a native histogram that Prometheus accepts: its gogo decoder
// reads it, and the histogram it converts to (integer, or float when the
// count is a float) passes histogram.Validate. Schemas 9 to 52, which
// Prometheus' receiver reduces to 8, are accepted as exponential schemas;
// the other schemas outside -4..8 and -53 are not. It allocates nothing for
// a valid histogram; the error wraps ErrInvalidHistogram.
func ValidateHistogram(data []byte) error {
	var sc histScan
	if err := sc.scan(data, nil); err != nil {
		return invalidHistogram("%s", err)
	}
	return sc.validate()
}

// DecodeFloatHistogram decodes data, an encoded prometheus.Histogram message,
// into fh, as prompb converts it: an integer histogram as
// h.ToIntHistogram().ToFloat(nil) (deltas summed to absolute counts), a float
// one as h.ToFloatHistogram(). It checks only that data can be decoded, not
// that the histogram is valid; see ValidateHistogram.
//
// fh's spans and buckets are overwritten in place, reusing their capacity,
// so that decoding into a warmed-up fh allocates nothing: they must not be
// shared with another histogram. CustomValues are treated as immutable, as
// Prometheus interns them: fh keeps its slice when the decoded bounds are
// the same, and gets a new one otherwise. On error fh is unchanged.
func DecodeFloatHistogram(data []byte, fh *histogram.FloatHistogram) error {
	sc := histScan{sameBounds: fh.CustomValues}
	if err := sc.scan(data, nil); err != nil {
		return invalidHistogram("%s", err)
	}
	f := histFill{fh: fh, float: sc.countKind == kindFloat}
	custom := histogram.IsCustomBucketsSchema(sc.schema)
	// ToFloat clears an integer custom-bucket histogram's zero bucket and
	// negative side, and an integer exponential one's custom values.
	f.negative = f.float || !custom
	keepBounds := f.float || custom
	fh.CounterResetHint = histogram.CounterResetHint(sc.resetHint)
	fh.Schema = sc.schema
	fh.Sum = sc.sum
	if f.float {
		fh.Count = sc.countFloat
		fh.ZeroCount = sc.zeroFloat
		fh.ZeroThreshold = sc.zeroThreshold
	} else {
		fh.Count = float64(sc.countInt)
		fh.ZeroCount, fh.ZeroThreshold = 0, 0
		if !custom {
			fh.ZeroCount = float64(sc.zeroInt)
			fh.ZeroThreshold = sc.zeroThreshold
		}
	}
	fh.PositiveSpans = fh.PositiveSpans[:0]
	fh.NegativeSpans = fh.NegativeSpans[:0]
	fh.PositiveBuckets = fh.PositiveBuckets[:0]
	fh.NegativeBuckets = fh.NegativeBuckets[:0]
	switch {
	case !keepBounds || sc.bounds.n == 0:
		fh.CustomValues = nil
	case sc.boundsSame && sc.bounds.n == len(fh.CustomValues):
		// Fast path: the bounds fh has; no copy.
	default:
		// Slow path: new bounds, in new memory.
		fh.CustomValues = make([]float64, 0, sc.bounds.n)
		f.bounds = true
	}
	// The first pass proved that data decodes, so this one cannot fail.
	var fill histScan
	return fill.scan(data, &f)
}

// Kinds of the count oneof.
const (
	kindNone = iota
	kindInt
	kindFloat
)

// histScan is what one pass over an encoded prompb.Histogram learns: the
// scalar fields as gogo decodes them (the last occurrence wins) and, for the
// repeated fields, running aggregates of everything Validate checks. Whether
// the deltas or the float counts are the buckets, and whether the schema is
// exponential, is known only at the end of the message, so the aggregates
// are kept for every reading.
type histScan struct {
	countKind          uint8
	countInt, zeroInt  uint64
	countFloat         float64
	zeroFloat          float64
	sum, zeroThreshold float64
	schema, resetHint  int32
	timestamp          int64

	pos, neg side
	bounds   boundScan

	// sameBounds, when set, is compared with the custom values as they are
	// read; boundsSame says whether every one read so far is equal.
	sameBounds []float64
	boundsSame bool

	// v2: the message is a remote-write 2.0 Histogram, which adds
	// start_timestamp (field 17, a varint) to 1.0's fields.
	v2 bool
}

// side aggregates one side (positive or negative) of a histogram.
type side struct {
	spans  spanScan
	deltas deltaScan
	counts countScan
}

// spanScan follows checkHistogramSpans (exponential schemas) and the span
// part of checkHistogramCustomBounds (custom buckets) at once.
type spanScan struct {
	n       int   // spans read
	buckets int   // sum of lengths
	end     int64 // exponential: one past the last bucket index
	total   int   // custom buckets: sum of offsets and lengths
	// The first failure of each reading; expErr is errSpanNone when none.
	expErr, customErr spanErr
}

type spanErr struct {
	kind   uint8
	span   int // 1-based
	offset int32
	end    int64
}

const (
	errSpanNone = iota
	errSpanNegativeOffset
	errSpanStartOutOfRange
	errSpanEndOutOfRange
)

// deltaScan follows checkHistogramBuckets on integer deltas.
type deltaScan struct {
	n    int
	last int64
	// sum is the sum of the absolute counts, wrapping as Prometheus' uint64
	// does.
	sum      uint64
	bad      int // 1-based index of the first negative absolute count
	badCount int64
}

// countScan follows checkHistogramBuckets on float counts.
type countScan struct {
	n        int
	bad      int
	badCount float64
}

// boundScan follows the bounds part of checkHistogramCustomBounds.
type boundScan struct {
	n                int
	prev             float64
	bad              uint8
	badPrev, badCurr float64
}

const (
	errBoundNone = iota
	errBoundNaN
	errBoundOrder
)

// histFill receives the decoded spans and buckets of DecodeFloatHistogram's
// second pass.
type histFill struct {
	fh *histogram.FloatHistogram
	// float: the buckets are the float counts (fields 10 and 13), not the
	// deltas (9 and 12). negative: fill the negative side. bounds: fill
	// CustomValues.
	float, negative, bounds bool
	posRun, negRun          float64
}

// scan reads data, field by field, with gogo's rules (see proto.go), into
// sc, and into f when it is not nil.
func (sc *histScan) scan(data []byte, f *histFill) error {
	sc.boundsSame = true
	sc.bounds.prev = math.Inf(-1)
	for i := 0; i < len(data); {
		num, wt, next, err := readTag(data, i)
		if err != nil {
			return fieldError(num, err)
		}
		i = next
		var v uint64
		if num == 17 && sc.v2 {
			// start_timestamp: read as gogo reads it; the bytes carry it.
			if wt != wireVarint {
				return fmt.Errorf("field 17: %w", errWrongWireType)
			}
			if _, i, err = readVarint(data, i); err != nil {
				return fmt.Errorf("field 17: %w", err)
			}
			continue
		}
		switch num {
		case 1, 6, 14, 15, 4: // varints
			if wt != wireVarint {
				return fmt.Errorf("field %d: %w", num, errWrongWireType)
			}
			if v, i, err = readVarint(data, i); err != nil {
				return fmt.Errorf("field %d: %w", num, err)
			}
			switch num {
			case 1:
				sc.countKind, sc.countInt, sc.countFloat = kindInt, v, 0
			case 4:
				sc.schema = zigzag32(v)
			case 6:
				sc.zeroInt, sc.zeroFloat = v, 0
			case 14:
				sc.resetHint = int32(v)
			default:
				sc.timestamp = int64(v)
			}
		case 2, 3, 5, 7: // doubles
			if wt != wireFixed64 {
				return fmt.Errorf("field %d: %w", num, errWrongWireType)
			}
			if v, i, err = readFixed64(data, i); err != nil {
				return fmt.Errorf("field %d: %w", num, err)
			}
			x := math.Float64frombits(v)
			switch num {
			case 2:
				sc.countKind, sc.countInt, sc.countFloat = kindFloat, 0, x
			case 3:
				sc.sum = x
			case 5:
				sc.zeroThreshold = x
			default:
				sc.zeroInt, sc.zeroFloat = 0, x
			}
		case 8, 11: // spans
			if wt != wireBytes {
				return fmt.Errorf("field %d: %w", num, errWrongWireType)
			}
			var msg []byte
			if msg, i, err = readBytes(data, i); err != nil {
				return fmt.Errorf("field %d: %w", num, err)
			}
			offset, length, err := readSpan(msg)
			if err != nil {
				return fmt.Errorf("field %d: span: %w", num, err)
			}
			if num == 11 {
				sc.pos.spans.add(offset, length)
				if f != nil {
					f.fh.PositiveSpans = append(f.fh.PositiveSpans, histogram.Span{Offset: offset, Length: length})
				}
			} else {
				sc.neg.spans.add(offset, length)
				if f != nil && f.negative {
					f.fh.NegativeSpans = append(f.fh.NegativeSpans, histogram.Span{Offset: offset, Length: length})
				}
			}
		case 9, 10, 12, 13, 16: // repeated numbers, packed or not
			elem := uint8(wireVarint) // deltas: zigzag varints
			if num == 10 || num == 13 || num == 16 {
				elem = wireFixed64 // counts and bounds: doubles
			}
			if wt == elem {
				// Unpacked: one element.
				if i, err = sc.readElem(data, i, num, f); err != nil {
					return fmt.Errorf("field %d: %w", num, err)
				}
				continue
			}
			if wt != wireBytes {
				return fmt.Errorf("field %d: %w", num, errWrongWireType)
			}
			var n uint64
			if n, i, err = readVarint(data, i); err != nil {
				return fmt.Errorf("field %d: %w", num, err)
			}
			if n > uint64(len(data)-i) {
				return fmt.Errorf("field %d: %w", num, errTruncated)
			}
			// Packed: elements up to end, but the last one may run past
			// it into the following fields, where gogo then goes on
			// decoding, and so must we.
			for end := i + int(n); i < end; {
				if i, err = sc.readElem(data, i, num, f); err != nil {
					return fmt.Errorf("field %d: %w", num, err)
				}
			}
		default:
			if i, err = skipField(data, i, wt); err != nil {
				return fieldError(num, err)
			}
		}
	}
	return nil
}

// readElem reads one element of the repeated number field num at data[i:].
func (sc *histScan) readElem(data []byte, i int, num int32, f *histFill) (int, error) {
	var v uint64
	var err error
	if num == 9 || num == 12 {
		if v, i, err = readVarint(data, i); err != nil {
			return i, err
		}
		d := zigzag64(v)
		if num == 12 {
			sc.pos.deltas.add(d)
			if f != nil && !f.float {
				f.posRun += float64(d)
				f.fh.PositiveBuckets = append(f.fh.PositiveBuckets, f.posRun)
			}
		} else {
			sc.neg.deltas.add(d)
			if f != nil && !f.float && f.negative {
				f.negRun += float64(d)
				f.fh.NegativeBuckets = append(f.fh.NegativeBuckets, f.negRun)
			}
		}
		return i, nil
	}
	if v, i, err = readFixed64(data, i); err != nil {
		return i, err
	}
	x := math.Float64frombits(v)
	switch num {
	case 13:
		sc.pos.counts.add(x)
		if f != nil && f.float {
			f.fh.PositiveBuckets = append(f.fh.PositiveBuckets, x)
		}
	case 10:
		sc.neg.counts.add(x)
		if f != nil && f.float && f.negative {
			f.fh.NegativeBuckets = append(f.fh.NegativeBuckets, x)
		}
	default:
		if sc.boundsSame {
			k := sc.bounds.n
			sc.boundsSame = k < len(sc.sameBounds) && math.Float64bits(sc.sameBounds[k]) == v
		}
		sc.bounds.add(x)
		if f != nil && f.bounds {
			f.fh.CustomValues = append(f.fh.CustomValues, x)
		}
	}
	return i, nil
}

// readSpan decodes a BucketSpan message.
func readSpan(data []byte) (offset int32, length uint32, err error) {
	for i := 0; i < len(data); {
		num, wt, next, err := readTag(data, i)
		if err != nil {
			return 0, 0, fieldError(num, err)
		}
		i = next
		switch num {
		case 1, 2:
			if wt != wireVarint {
				return 0, 0, fmt.Errorf("field %d: %w", num, errWrongWireType)
			}
			var v uint64
			if v, i, err = readVarint(data, i); err != nil {
				return 0, 0, fmt.Errorf("field %d: %w", num, err)
			}
			if num == 1 {
				offset = zigzag32(v)
			} else {
				length = uint32(v)
			}
		default:
			if i, err = skipField(data, i, wt); err != nil {
				return 0, 0, fieldError(num, err)
			}
		}
	}
	return offset, length, nil
}

func (s *spanScan) add(offset int32, length uint32) {
	s.n++
	if s.expErr.kind == errSpanNone {
		switch {
		case s.n > 1 && offset < 0:
			s.expErr = spanErr{kind: errSpanNegativeOffset, span: s.n, offset: offset}
		case s.n == 1 && offset == math.MinInt32:
			s.expErr = spanErr{kind: errSpanStartOutOfRange, span: s.n, offset: offset}
		default:
			s.end += int64(offset) + int64(length)
			if s.end-1 > math.MaxInt32 {
				s.expErr = spanErr{kind: errSpanEndOutOfRange, span: s.n, end: s.end - 1}
			}
		}
	}
	if s.customErr.kind == errSpanNone {
		if offset < 0 {
			s.customErr = spanErr{kind: errSpanNegativeOffset, span: s.n, offset: offset}
		} else {
			s.total += int(length) + int(offset)
		}
	}
	s.buckets += int(length)
}

func (d *deltaScan) add(delta int64) {
	d.n++
	if d.bad != 0 {
		return
	}
	c := d.last + delta
	if c < 0 {
		d.bad, d.badCount = d.n, c
		return
	}
	d.last = c
	d.sum += uint64(c)
}

func (c *countScan) add(x float64) {
	c.n++
	if c.bad == 0 && x < 0 {
		c.bad, c.badCount = c.n, x
	}
}

func (b *boundScan) add(x float64) {
	b.n++
	if b.bad != errBoundNone {
		return
	}
	switch {
	case math.IsNaN(x):
		b.bad = errBoundNaN
	case b.n > 1 && x <= b.prev:
		b.bad, b.badPrev, b.badCurr = errBoundOrder, b.prev, x
	}
	b.prev = x
}

// validate applies histogram.Validate (integer or float) to what scan read.
// The checks come in Prometheus' order, so that the error is the one
// Prometheus would report first.
func (sc *histScan) validate() error {
	isFloat := sc.countKind == kindFloat
	posN, negN := sc.pos.deltas.n, sc.neg.deltas.n
	if isFloat {
		posN, negN = sc.pos.counts.n, sc.neg.counts.n
	}
	// The oneof getters: the value of the kind not set reads as 0.
	zeroInt, zeroFloat := sc.zeroInt, sc.zeroFloat
	switch {
	case histogram.IsCustomBucketsSchema(sc.schema):
		if err := sc.bounds.check(); err != nil {
			return err
		}
		if err := sc.pos.spans.customErr.err("custom bucket"); err != nil {
			return err
		}
		if sc.pos.spans.buckets != posN {
			return invalidHistogram("custom bucket spans need %d buckets, have %d", sc.pos.spans.buckets, posN)
		}
		if sc.bounds.n+1 < sc.pos.spans.total {
			return invalidHistogram("%d custom bounds cannot cover spans of total length %d", sc.bounds.n, sc.pos.spans.total)
		}
		if isFloat && zeroFloat != 0 {
			return invalidHistogram("custom buckets have a zero count of %v", zeroFloat)
		}
		if !isFloat && zeroInt != 0 {
			return invalidHistogram("custom buckets have a zero count of %d", zeroInt)
		}
		if sc.zeroThreshold != 0 {
			return invalidHistogram("custom buckets have a zero threshold of %v", sc.zeroThreshold)
		}
		if sc.neg.spans.n > 0 {
			return invalidHistogram("custom buckets have %d negative spans", sc.neg.spans.n)
		}
		if negN > 0 {
			return invalidHistogram("custom buckets have %d negative buckets", negN)
		}
	case sc.schema >= histogram.ExponentialSchemaMin && sc.schema <= histogram.ExponentialSchemaMaxReserved:
		if err := sc.pos.spans.expErr.err("positive"); err != nil {
			return err
		}
		if sc.pos.spans.buckets != posN {
			return invalidHistogram("positive spans need %d buckets, have %d", sc.pos.spans.buckets, posN)
		}
		if err := sc.neg.spans.expErr.err("negative"); err != nil {
			return err
		}
		if sc.neg.spans.buckets != negN {
			return invalidHistogram("negative spans need %d buckets, have %d", sc.neg.spans.buckets, negN)
		}
		if err := sc.neg.bucketErr(isFloat, "negative"); err != nil {
			return err
		}
		if isFloat && zeroFloat < 0 {
			return invalidHistogram("zero bucket has a negative count of %v", zeroFloat)
		}
		if sc.bounds.n > 0 {
			return invalidHistogram("exponential schema %d has %d custom bounds", sc.schema, sc.bounds.n)
		}
	default:
		return invalidHistogram("unknown schema %d, want %d to %d or %d (custom buckets)",
			sc.schema, histogram.ExponentialSchemaMin, histogram.ExponentialSchemaMaxReserved, histogram.CustomBucketsSchema)
	}
	if isFloat {
		if sc.countFloat < 0 {
			return invalidHistogram("count is negative: %v", sc.countFloat)
		}
		return sc.pos.bucketErr(true, "positive")
	}
	if err := sc.pos.bucketErr(false, "positive"); err != nil {
		return err
	}
	count := sc.countInt
	var nCount uint64
	if !histogram.IsCustomBucketsSchema(sc.schema) {
		nCount = sc.neg.deltas.sum
	}
	inBuckets := nCount + sc.pos.deltas.sum + zeroInt
	if math.IsNaN(sc.sum) {
		if inBuckets > count {
			return invalidHistogram("count %d is less than the %d observations in the buckets", count, inBuckets)
		}
	} else if inBuckets != count {
		return invalidHistogram("count %d does not match the %d observations in the buckets", count, inBuckets)
	}
	return nil
}

func (s *side) bucketErr(isFloat bool, name string) error {
	if isFloat {
		if s.counts.bad != 0 {
			return invalidHistogram("%s bucket %d has a negative count of %v", name, s.counts.bad, s.counts.badCount)
		}
		return nil
	}
	if s.deltas.bad != 0 {
		return invalidHistogram("%s bucket %d has a negative count of %d", name, s.deltas.bad, s.deltas.badCount)
	}
	return nil
}

func (e spanErr) err(name string) error {
	switch e.kind {
	case errSpanNegativeOffset:
		return invalidHistogram("%s span %d has a negative offset of %d", name, e.span, e.offset)
	case errSpanStartOutOfRange:
		return invalidHistogram("%s span %d starts at bucket index %d, out of range", name, e.span, e.offset)
	case errSpanEndOutOfRange:
		return invalidHistogram("%s span %d ends at bucket index %d, out of range", name, e.span, e.end)
	}
	return nil
}

func (b *boundScan) check() error {
	switch b.bad {
	case errBoundNaN:
		return invalidHistogram("custom bounds contain NaN")
	case errBoundOrder:
		return invalidHistogram("custom bounds are not strictly increasing: %v after %v", b.badCurr, b.badPrev)
	}
	if math.IsInf(b.prev, 1) {
		return invalidHistogram("the last custom bound is +Inf, which is implicit")
	}
	return nil
}
