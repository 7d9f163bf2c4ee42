package tracesample

import (
	"fmt"
	"math"
)

// maxThreshold is 2^56, the threshold that keeps nothing.
const maxThreshold = 1 << 56

// Sampler makes OpenTelemetry consistent probability sampling decisions on
// trace ids: it keeps a trace iff the trace id's 56-bit randomness R is at
// least the threshold T derived from the ratio (see the package
// documentation). A Sampler is an immutable value, safe for concurrent use.
// The zero Sampler has ratio 0 and keeps nothing.
type Sampler struct {
	ratio float64
	// keep is 2^56 - T, the number of the 2^56 randomness values kept. It is
	// stored instead of T so that the zero value means ratio 0.
	keep uint64
}

// NewSampler returns a Sampler keeping the fraction ratio of trace ids.
// ratio must be in [0, 1]; 1 keeps every id and 0 none.
func NewSampler(ratio float64) (Sampler, error) {
	if math.IsNaN(ratio) || ratio < 0 || ratio > 1 {
		return Sampler{}, fmt.Errorf("sampling ratio must be in [0, 1], got %v", ratio)
	}
	// ratio*2^56 is exact (a power-of-two scaling of a float64 in [0, 1]),
	// and so is rounding it, so keep is the exact round(ratio * 2^56).
	return Sampler{ratio: ratio, keep: uint64(math.Round(ratio * maxThreshold))}, nil
}

// Ratio returns the ratio the Sampler was created with.
func (s Sampler) Ratio() float64 { return s.ratio }

// Threshold returns the rejection threshold T in [0, 2^56]: Sample keeps a
// trace id iff its 56-bit randomness is >= T. T = 2^56 - round(ratio * 2^56).
func (s Sampler) Threshold() uint64 { return maxThreshold - s.keep }

// Sample reports whether the trace id is kept. It looks only at bytes 9..15
// of traceID (its 56 least-significant bits, read big-endian).
func (s Sampler) Sample(traceID [16]byte) bool {
	return Randomness(traceID) >= maxThreshold-s.keep
}

// Randomness returns the 56-bit randomness R of a trace id: bytes 9..15 read
// as a big-endian integer, as OpenTelemetry and W3C Trace Context Level 2
// define it.
func Randomness(traceID [16]byte) uint64 {
	return uint64(traceID[9])<<48 | uint64(traceID[10])<<40 | uint64(traceID[11])<<32 |
		uint64(traceID[12])<<24 | uint64(traceID[13])<<16 | uint64(traceID[14])<<8 |
		uint64(traceID[15])
}
