package wire

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
)

// This file generates native histograms for the differential tests: valid
// ones built the way senders build them, invalid ones made by targeted
// mutations, and encodings in every layout gogo accepts.

// referenceValidate is what Prometheus does with an encoded histogram: gogo
// decodes it, prompb converts it, histogram.Validate checks it. Schemas 9 to
// 52 are reduced to 8 by Prometheus' receiver before they are validated.
func referenceValidate(data []byte) error {
	var h prompb.Histogram
	if err := h.Unmarshal(data); err != nil {
		return err
	}
	if h.Schema > histogram.ExponentialSchemaMax && h.Schema <= histogram.ExponentialSchemaMaxReserved {
		h.Schema = histogram.ExponentialSchemaMax
	}
	if h.IsFloatHistogram() {
		return h.ToFloatHistogram().Validate()
	}
	return h.ToIntHistogram().Validate()
}

// referenceFloat is what prompb decodes data to, as a float histogram.
func referenceFloat(data []byte) (*histogram.FloatHistogram, error) {
	var h prompb.Histogram
	if err := h.Unmarshal(data); err != nil {
		return nil, err
	}
	if h.IsFloatHistogram() {
		return h.ToFloatHistogram(), nil
	}
	return h.ToIntHistogram().ToFloat(nil), nil
}

// randomValidHistogram builds a histogram that Prometheus accepts: integer
// or float, exponential (sometimes with a reserved schema) or custom
// buckets, with spans, buckets and a zero bucket.
func randomValidHistogram(rng *rand.Rand) prompb.Histogram {
	h := prompb.Histogram{
		Timestamp: 1_700_000_000_000 + rng.Int64N(1<<30),
		ResetHint: prompb.Histogram_ResetHint(rng.IntN(4)),
	}
	if rng.IntN(8) == 0 {
		h.Timestamp = -rng.Int64N(1 << 40)
	}
	isFloat := rng.IntN(2) == 0
	custom := rng.IntN(4) == 0
	switch {
	case custom:
		h.Schema = histogram.CustomBucketsSchema
	case rng.IntN(6) == 0:
		h.Schema = int32(9 + rng.IntN(44)) // reserved, reduced to 8
	default:
		h.Schema = int32(rng.IntN(13) - 4)
	}
	randSpans := func(maxSpans int) (spans []prompb.BucketSpan, buckets, total int) {
		for k := range rng.IntN(maxSpans + 1) {
			var off int32
			switch {
			case custom:
				off = int32(rng.IntN(3))
			case k == 0:
				off = int32(rng.IntN(41) - 20)
			default:
				off = int32(rng.IntN(4))
			}
			length := uint32(rng.IntN(5))
			if rng.IntN(10) == 0 {
				length = 0
			}
			spans = append(spans, prompb.BucketSpan{Offset: off, Length: length})
			buckets += int(length)
			total += int(off) + int(length)
		}
		return spans, buckets, total
	}
	var nPos, nNeg, total int
	h.PositiveSpans, nPos, total = randSpans(4)
	if !custom && rng.IntN(3) > 0 {
		h.NegativeSpans, nNeg, _ = randSpans(3)
	}
	var zeroInt uint64
	if !custom {
		h.ZeroThreshold = []float64{0, 1e-128, 0.001, 2.938735877055719e-39}[rng.IntN(4)]
		zeroInt = rng.Uint64N(10)
	}
	h.Sum = rng.NormFloat64() * 1000
	if rng.IntN(8) == 0 {
		h.Sum = math.NaN()
	}
	if isFloat {
		randCount := func() float64 {
			switch rng.IntN(12) {
			case 0:
				return 0
			case 1:
				return math.Inf(1)
			case 2:
				return math.NaN()
			}
			return rng.Float64() * 50
		}
		for range nPos {
			h.PositiveCounts = append(h.PositiveCounts, randCount())
		}
		for range nNeg {
			h.NegativeCounts = append(h.NegativeCounts, randCount())
		}
		h.Count = &prompb.Histogram_CountFloat{CountFloat: rng.Float64() * 200}
		if rng.IntN(2) == 0 || custom {
			zero := 0.0
			if !custom {
				zero = rng.Float64() * 5
			}
			h.ZeroCount = &prompb.Histogram_ZeroCountFloat{ZeroCountFloat: zero}
		}
		if rng.IntN(5) == 0 {
			// Deltas are ignored in a float histogram, whatever they say.
			h.PositiveDeltas = []int64{-5, 3}
		}
	} else {
		deltas := func(n int) ([]int64, uint64) {
			var ds []int64
			var last int64
			var sum uint64
			for range n {
				c := int64(rng.IntN(50))
				if rng.IntN(30) == 0 {
					c = 1 << 40
				}
				ds = append(ds, c-last)
				last = c
				sum += uint64(c)
			}
			return ds, sum
		}
		var pSum, nSum uint64
		h.PositiveDeltas, pSum = deltas(nPos)
		h.NegativeDeltas, nSum = deltas(nNeg)
		count := pSum + nSum + zeroInt
		if math.IsNaN(h.Sum) {
			count += rng.Uint64N(3)
		}
		if count > 0 || rng.IntN(2) == 0 {
			h.Count = &prompb.Histogram_CountInt{CountInt: count}
		}
		if zeroInt > 0 || rng.IntN(2) == 0 {
			h.ZeroCount = &prompb.Histogram_ZeroCountInt{ZeroCountInt: zeroInt}
		}
		if rng.IntN(5) == 0 {
			// Float counts are ignored in an integer histogram.
			h.NegativeCounts = []float64{-1, math.NaN()}
		}
	}
	if custom {
		n := max(total-1, 0) + rng.IntN(3)
		b := rng.NormFloat64() * 10
		if rng.IntN(10) == 0 {
			b = math.Inf(-1)
		}
		for range n {
			h.CustomValues = append(h.CustomValues, b)
			if math.IsInf(b, -1) {
				b = -1e6
			}
			b += rng.Float64()*10 + 1e-9
		}
	}
	return h
}

// histogramMutations break one rule of Validate each (some leave the
// histogram valid, for instance dropping a bucket of an empty side fails
// nothing: the differential test decides, not the name).
var histogramMutations = []struct {
	name string
	fn   func(rng *rand.Rand, h *prompb.Histogram)
}{
	{"drop a bucket", func(rng *rand.Rand, h *prompb.Histogram) {
		switch rng.IntN(4) {
		case 0:
			h.PositiveDeltas = dropOne(rng, h.PositiveDeltas)
		case 1:
			h.NegativeDeltas = dropOne(rng, h.NegativeDeltas)
		case 2:
			h.PositiveCounts = dropOne(rng, h.PositiveCounts)
		default:
			h.NegativeCounts = dropOne(rng, h.NegativeCounts)
		}
	}},
	{"add a bucket", func(rng *rand.Rand, h *prompb.Histogram) {
		if rng.IntN(2) == 0 {
			h.PositiveDeltas = append(h.PositiveDeltas, int64(rng.IntN(5)))
		} else {
			h.PositiveCounts = append(h.PositiveCounts, float64(rng.IntN(5)))
		}
	}},
	{"add a span length", func(rng *rand.Rand, h *prompb.Histogram) {
		spans := &h.PositiveSpans
		if rng.IntN(2) == 0 {
			spans = &h.NegativeSpans
		}
		if len(*spans) == 0 {
			*spans = append(*spans, prompb.BucketSpan{Length: 1})
			return
		}
		(*spans)[rng.IntN(len(*spans))].Length += uint32(1 + rng.IntN(3))
	}},
	{"negative delta", func(rng *rand.Rand, h *prompb.Histogram) {
		ds := &h.PositiveDeltas
		if rng.IntN(2) == 0 {
			ds = &h.NegativeDeltas
		}
		if len(*ds) > 0 {
			(*ds)[rng.IntN(len(*ds))] -= int64(1 + rng.IntN(100))
		}
	}},
	{"negative float count", func(rng *rand.Rand, h *prompb.Histogram) {
		cs := &h.PositiveCounts
		if rng.IntN(2) == 0 {
			cs = &h.NegativeCounts
		}
		if len(*cs) > 0 {
			(*cs)[rng.IntN(len(*cs))] = -rng.Float64() - 1e-300
		}
	}},
	{"bad schema", func(rng *rand.Rand, h *prompb.Histogram) {
		h.Schema = []int32{-5, -6, -9, -10, 53, 54, 100, -52, -54, math.MinInt32, math.MaxInt32, 8, 9, 52, -4, -53}[rng.IntN(16)]
	}},
	{"NaN bound", func(rng *rand.Rand, h *prompb.Histogram) {
		h.CustomValues = append(h.CustomValues, math.NaN())
		if len(h.CustomValues) > 1 && rng.IntN(2) == 0 {
			h.CustomValues[0] = math.NaN()
		}
	}},
	{"bounds out of order", func(rng *rand.Rand, h *prompb.Histogram) {
		if len(h.CustomValues) > 1 {
			i := rng.IntN(len(h.CustomValues) - 1)
			h.CustomValues[i+1] = h.CustomValues[i] - float64(rng.IntN(2))
		}
	}},
	{"+Inf bound", func(rng *rand.Rand, h *prompb.Histogram) {
		h.CustomValues = append(h.CustomValues, math.Inf(1))
	}},
	{"-Inf bound", func(rng *rand.Rand, h *prompb.Histogram) {
		h.CustomValues = append([]float64{math.Inf(-1)}, h.CustomValues...)
	}},
	{"too few bounds", func(rng *rand.Rand, h *prompb.Histogram) {
		h.CustomValues = dropOne(rng, h.CustomValues)
	}},
	{"count mismatch", func(rng *rand.Rand, h *prompb.Histogram) {
		switch c := h.Count.(type) {
		case *prompb.Histogram_CountInt:
			c.CountInt += uint64(rng.IntN(3)) - 1
		case *prompb.Histogram_CountFloat:
			c.CountFloat = -c.CountFloat - 1
		default:
			h.Count = &prompb.Histogram_CountInt{CountInt: 1}
		}
	}},
	{"NaN sum", func(rng *rand.Rand, h *prompb.Histogram) {
		h.Sum = math.NaN()
		if c, ok := h.Count.(*prompb.Histogram_CountInt); ok {
			c.CountInt += uint64(rng.IntN(3)) - 1
		}
	}},
	{"no count", func(rng *rand.Rand, h *prompb.Histogram) { h.Count = nil }},
	{"flip count kind", func(rng *rand.Rand, h *prompb.Histogram) {
		switch c := h.Count.(type) {
		case *prompb.Histogram_CountInt:
			h.Count = &prompb.Histogram_CountFloat{CountFloat: float64(c.CountInt)}
		case *prompb.Histogram_CountFloat:
			h.Count = &prompb.Histogram_CountInt{CountInt: uint64(c.CountFloat)}
		}
	}},
	{"flip zero count kind", func(rng *rand.Rand, h *prompb.Histogram) {
		switch c := h.ZeroCount.(type) {
		case *prompb.Histogram_ZeroCountInt:
			h.ZeroCount = &prompb.Histogram_ZeroCountFloat{ZeroCountFloat: float64(c.ZeroCountInt)}
		case *prompb.Histogram_ZeroCountFloat:
			h.ZeroCount = &prompb.Histogram_ZeroCountInt{ZeroCountInt: uint64(c.ZeroCountFloat)}
		default:
			h.ZeroCount = &prompb.Histogram_ZeroCountInt{ZeroCountInt: 1}
		}
	}},
	{"custom values on exponential", func(rng *rand.Rand, h *prompb.Histogram) {
		if h.Schema == histogram.CustomBucketsSchema {
			h.Schema = int32(rng.IntN(13) - 4)
		} else {
			h.CustomValues = append(h.CustomValues, 1, 2)
		}
	}},
	{"exponential to custom", func(rng *rand.Rand, h *prompb.Histogram) {
		h.Schema = histogram.CustomBucketsSchema
		for range rng.IntN(4) {
			h.CustomValues = append(h.CustomValues, float64(len(h.CustomValues)))
		}
	}},
	{"zero count on custom", func(rng *rand.Rand, h *prompb.Histogram) {
		if rng.IntN(2) == 0 {
			h.ZeroCount = &prompb.Histogram_ZeroCountInt{ZeroCountInt: 1}
		} else {
			h.ZeroCount = &prompb.Histogram_ZeroCountFloat{ZeroCountFloat: []float64{0.5, math.NaN(), -1}[rng.IntN(3)]}
		}
	}},
	{"zero threshold on custom", func(rng *rand.Rand, h *prompb.Histogram) {
		h.ZeroThreshold = []float64{1e-128, math.NaN(), -1, math.Copysign(0, -1)}[rng.IntN(4)]
	}},
	{"negative span on custom", func(rng *rand.Rand, h *prompb.Histogram) {
		h.NegativeSpans = append(h.NegativeSpans, prompb.BucketSpan{Offset: int32(rng.IntN(3)), Length: uint32(rng.IntN(2))})
		if rng.IntN(2) == 0 {
			h.NegativeDeltas = append(h.NegativeDeltas, 1)
		}
	}},
	{"negative bucket without span", func(rng *rand.Rand, h *prompb.Histogram) {
		h.NegativeDeltas = append(h.NegativeDeltas, 0)
		h.NegativeCounts = append(h.NegativeCounts, 0)
	}},
	{"negative offset", func(rng *rand.Rand, h *prompb.Histogram) {
		spans := h.PositiveSpans
		if rng.IntN(2) == 0 {
			spans = h.NegativeSpans
		}
		if len(spans) > 0 {
			spans[rng.IntN(len(spans))].Offset = -int32(1 + rng.IntN(3))
		}
	}},
	{"first offset MinInt32", func(rng *rand.Rand, h *prompb.Histogram) {
		h.PositiveSpans = append([]prompb.BucketSpan{{Offset: math.MinInt32 + int32(rng.IntN(2)), Length: 0}}, h.PositiveSpans...)
	}},
	{"span end out of range", func(rng *rand.Rand, h *prompb.Histogram) {
		off := int32(math.MaxInt32 - rng.IntN(3))
		h.PositiveSpans = append(h.PositiveSpans, prompb.BucketSpan{Offset: off, Length: uint32(rng.IntN(3))}, prompb.BucketSpan{Offset: int32(rng.IntN(2)), Length: 0})
	}},
	{"huge span length", func(rng *rand.Rand, h *prompb.Histogram) {
		h.PositiveSpans = append(h.PositiveSpans, prompb.BucketSpan{Length: math.MaxUint32 - uint32(rng.IntN(2))})
	}},
	{"negative zero count", func(rng *rand.Rand, h *prompb.Histogram) {
		h.ZeroCount = &prompb.Histogram_ZeroCountFloat{ZeroCountFloat: -1}
	}},
	{"delta overflow", func(rng *rand.Rand, h *prompb.Histogram) {
		h.PositiveDeltas = append(h.PositiveDeltas, math.MaxInt64, math.MaxInt64)
		h.PositiveSpans = append(h.PositiveSpans, prompb.BucketSpan{Length: 2})
	}},
	{"count wraps", func(rng *rand.Rand, h *prompb.Histogram) {
		h.PositiveDeltas = append(h.PositiveDeltas, math.MaxInt64-1, 0, 0)
		h.PositiveSpans = append(h.PositiveSpans, prompb.BucketSpan{Length: 3})
		c := uint64(math.MaxInt64 - 1)
		h.Count = &prompb.Histogram_CountInt{CountInt: 3*c + uint64(rng.IntN(2))}
	}},
}

func dropOne[T any](rng *rand.Rand, s []T) []T {
	if len(s) == 0 {
		return s
	}
	i := rng.IntN(len(s))
	return append(s[:i:i], s[i+1:]...)
}

// randomHistogramCase returns an encoded histogram: valid, mutated, or
// mutated and then damaged byte by byte.
func randomHistogramCase(rng *rand.Rand) []byte {
	h := randomValidHistogram(rng)
	if rng.IntN(3) > 0 {
		for range 1 + rng.IntN(2) {
			histogramMutations[rng.IntN(len(histogramMutations))].fn(rng, &h)
		}
	}
	data := encodeHistogramVariant(rng, &h)
	if rng.IntN(6) == 0 {
		data = mutateBytes(rng, data)
	}
	return data
}

func mutateBytes(rng *rand.Rand, data []byte) []byte {
	data = slices.Clone(data)
	for range 1 + rng.IntN(3) {
		switch op := rng.IntN(6); {
		case op == 0 && len(data) > 0:
			data = data[:rng.IntN(len(data))]
		case op == 1 && len(data) > 0:
			data[rng.IntN(len(data))] ^= byte(1 << rng.IntN(8))
		case op == 2 && len(data) > 0:
			data[rng.IntN(len(data))] = byte(rng.IntN(256))
		case op == 3:
			i := rng.IntN(len(data) + 1)
			data = slices.Insert(data, i, byte(rng.IntN(256)))
		case op == 4 && len(data) > 0:
			i := rng.IntN(len(data))
			data = slices.Delete(data, i, i+1)
		default:
			data = append(data, []byte{0x00, 0x08, 0x01, 0x82, 0x01, 0x00, 0x7a, 0x01}[rng.IntN(8)])
		}
	}
	return data
}

// encodeHistogramVariant encodes h in a random one of the layouts gogo
// reads as h: canonical (gogo's own), or fields in any interleaving,
// repeated fields packed, unpacked or split, scalars and oneofs repeated
// with earlier decoys (the last occurrence wins), zero values written out,
// varints padded with high bits gogo drops, and unknown fields (groups
// included) between them.
func encodeHistogramVariant(rng *rand.Rand, h *prompb.Histogram) []byte {
	if rng.IntN(4) == 0 {
		b, err := h.Marshal()
		if err != nil {
			panic(err)
		}
		return b
	}
	var lists [][][]byte
	addList := func(l [][]byte) {
		if len(l) > 0 {
			lists = append(lists, l)
		}
	}
	decoys := func() int {
		if rng.IntN(3) == 0 {
			return 1 + rng.IntN(2)
		}
		return 0
	}
	randU64 := func() uint64 { return rng.Uint64() >> rng.IntN(64) }
	// The oneofs: decoys of either kind, then the real one.
	oneof := func(intNum, floatNum int, isSet, isInt bool, iv uint64, fv float64) {
		if !isSet {
			return
		}
		var l [][]byte
		for range decoys() {
			if rng.IntN(2) == 0 {
				l = append(l, varintField(intNum, randU64()))
			} else {
				l = append(l, fixed64Field(floatNum, rng.Uint64()))
			}
		}
		if isInt {
			l = append(l, varintField(intNum, iv))
		} else {
			l = append(l, fixed64Field(floatNum, math.Float64bits(fv)))
		}
		addList(l)
	}
	switch c := h.Count.(type) {
	case *prompb.Histogram_CountInt:
		oneof(1, 2, true, true, c.CountInt, 0)
	case *prompb.Histogram_CountFloat:
		oneof(1, 2, true, false, 0, c.CountFloat)
	}
	switch c := h.ZeroCount.(type) {
	case *prompb.Histogram_ZeroCountInt:
		oneof(6, 7, true, true, c.ZeroCountInt, 0)
	case *prompb.Histogram_ZeroCountFloat:
		oneof(6, 7, true, false, 0, c.ZeroCountFloat)
	}
	// Plain scalars: omitted when zero, or decoys and the value.
	scalar := func(zero bool, decoy, real func() []byte) {
		if zero && rng.IntN(2) == 0 {
			return
		}
		var l [][]byte
		for range decoys() {
			l = append(l, decoy())
		}
		addList(append(l, real()))
	}
	f64 := func(num int, v float64) {
		scalar(math.Float64bits(v) == 0,
			func() []byte { return fixed64Field(num, rng.Uint64()) },
			func() []byte { return fixed64Field(num, math.Float64bits(v)) })
	}
	f64(3, h.Sum)
	f64(5, h.ZeroThreshold)
	// int32 fields: gogo keeps the low 32 bits of the varint.
	highBits := func() uint64 {
		if rng.IntN(4) == 0 {
			return rng.Uint64() << 32
		}
		return 0
	}
	scalar(h.Schema == 0,
		func() []byte { return varintField(4, uint64(rng.Uint32())) },
		func() []byte { return varintField(4, uint64(zz32(h.Schema))|highBits()) })
	scalar(h.ResetHint == 0,
		func() []byte { return varintField(14, uint64(rng.Uint32())) },
		func() []byte { return varintField(14, uint64(uint32(h.ResetHint))|highBits()) })
	scalar(h.Timestamp == 0,
		func() []byte { return varintField(15, randU64()) },
		func() []byte { return varintField(15, uint64(h.Timestamp)) })
	// Spans: one message each, themselves in any layout.
	spans := func(num int, ss []prompb.BucketSpan) {
		var l [][]byte
		for _, s := range ss {
			l = append(l, bytesField(num, encodeSpanVariant(rng, s)))
		}
		addList(l)
	}
	spans(8, h.NegativeSpans)
	spans(11, h.PositiveSpans)
	// Repeated numbers: runs of packed and unpacked elements.
	repeated := func(num, n int, elemWire int, elem func(dst []byte, k int) []byte) {
		var l [][]byte
		for k := 0; k < n; {
			run := 1 + rng.IntN(n-k)
			if rng.IntN(2) == 0 {
				var p []byte
				for j := k; j < k+run; j++ {
					p = elem(p, j)
				}
				l = append(l, bytesField(num, p))
			} else {
				for j := k; j < k+run; j++ {
					l = append(l, elem(appendTag(nil, num, elemWire), j))
				}
			}
			k += run
			if rng.IntN(8) == 0 {
				l = append(l, bytesField(num, nil)) // an empty packed run
			}
		}
		addList(l)
	}
	deltas := func(num int, ds []int64) {
		repeated(num, len(ds), wireVarint, func(dst []byte, k int) []byte { return appendVarint(dst, zz64(ds[k])) })
	}
	doubles := func(num int, xs []float64) {
		repeated(num, len(xs), wireFixed64, func(dst []byte, k int) []byte {
			return binary.LittleEndian.AppendUint64(dst, math.Float64bits(xs[k]))
		})
	}
	deltas(9, h.NegativeDeltas)
	doubles(10, h.NegativeCounts)
	deltas(12, h.PositiveDeltas)
	doubles(13, h.PositiveCounts)
	doubles(16, h.CustomValues)
	// Unknown fields, each on its own.
	for range rng.IntN(3) {
		addList([][]byte{unknownField(rng)})
	}
	// Interleave the lists, keeping each one's order.
	var out []byte
	for len(lists) > 0 {
		k := rng.IntN(len(lists))
		out = append(out, lists[k][0]...)
		if lists[k] = lists[k][1:]; len(lists[k]) == 0 {
			lists = slices.Delete(lists, k, k+1)
		}
	}
	return out
}

func encodeSpanVariant(rng *rand.Rand, s prompb.BucketSpan) []byte {
	var fields [][]byte
	if s.Offset != 0 || rng.IntN(3) == 0 {
		if rng.IntN(4) == 0 {
			fields = append(fields, varintField(1, uint64(rng.Uint32())))
		}
		v := uint64(zz32(s.Offset))
		if rng.IntN(4) == 0 {
			v |= rng.Uint64() << 32
		}
		fields = append(fields, varintField(1, v))
	}
	var lengths [][]byte
	if s.Length != 0 || rng.IntN(3) == 0 {
		v := uint64(s.Length)
		if rng.IntN(4) == 0 {
			v |= rng.Uint64() << 32
		}
		lengths = append(lengths, varintField(2, v))
	}
	if rng.IntN(2) == 0 {
		fields = append(fields, lengths...)
	} else {
		fields = append(lengths, fields...)
	}
	if rng.IntN(5) == 0 {
		fields = append(fields, unknownField(rng))
	}
	return slices.Concat(fields...)
}

// unknownField is a field no prompb message defines, of any wire type,
// proto2 groups included.
func unknownField(rng *rand.Rand) []byte {
	num := 17 + rng.IntN(2000)
	switch rng.IntN(6) {
	case 0:
		return varintField(num, rng.Uint64()>>rng.IntN(64))
	case 1:
		return fixed64Field(num, rng.Uint64())
	case 2:
		return binary.LittleEndian.AppendUint32(appendTag(nil, num, 5), rng.Uint32())
	case 3:
		// A group holding a varint and a nested empty group.
		b := appendTag(nil, num, 3)
		b = append(b, varintField(1, 7)...)
		b = appendTag(b, 2, 3)
		b = appendTag(b, 2, 4)
		return appendTag(b, num, 4)
	default:
		p := make([]byte, rng.IntN(5))
		for i := range p {
			p[i] = byte(rng.IntN(256))
		}
		return bytesField(num, p)
	}
}

func appendTag(dst []byte, num, wt int) []byte {
	return appendVarint(dst, uint64(num)<<3|uint64(wt))
}

func varintField(num int, v uint64) []byte {
	return appendVarint(appendTag(nil, num, wireVarint), v)
}

func fixed64Field(num int, v uint64) []byte {
	return binary.LittleEndian.AppendUint64(appendTag(nil, num, wireFixed64), v)
}

func bytesField(num int, p []byte) []byte {
	return append(appendVarint(appendTag(nil, num, wireBytes), uint64(len(p))), p...)
}

func zz32(v int32) uint32 { return uint32(v<<1) ^ uint32(v>>31) }
func zz64(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }
