package cardinality

import (
	"slices"

	"github.com/axiomhq/hyperloglog"
)

// Precision is the HyperLogLog precision of a dense sketch: 2^12 one-byte
// registers (4 KiB), a relative standard error of 1.04/sqrt(4096) = 1.6 %.
const Precision = 12

// RelativeError is the relative standard error of a dense estimate. Counts up
// to SmallMax are exact.
const RelativeError = 0.0163

// SmallMax is how many distinct hashes a sketch keeps exactly before it
// becomes a dense HyperLogLog. Most label names have a few values per
// workload and metric (status codes, methods, pods); they never pay for
// registers.
const SmallMax = 32

// DenseBytes is the memory of one dense sketch.
const DenseBytes = 1 << Precision

// sketch counts distinct 64-bit hashes: exactly up to SmallMax (as 32-bit
// fingerprints, 128 bytes at most), then with a HyperLogLog of Precision.
// When the budget of dense sketches is spent, it stays exact-small and
// reports saturated: its count is then a lower bound.
//
// A dense sketch survives a reset, cleared, for the next generation: a label
// that exploded in one half-window usually does in the next, and
// reallocating 4 KiB per label and half-window is garbage the request path
// pays for. It is given back when a whole generation did not need it.
type sketch struct {
	small []uint32
	dense *hyperloglog.Sketch
	// live: dense holds this generation's count; otherwise small does and
	// dense, if any, is a cleared spare.
	live      bool
	saturated bool
}

// insert adds h; it reports whether the sketch may have changed.
func (s *sketch) insert(h uint64, b *budget) bool {
	if s.live {
		s.dense.InsertHash(h)
		return true
	}
	fp := uint32(h>>32) | 1 // 0 is never a fingerprint
	for _, v := range s.small {
		if v == fp {
			return false
		}
	}
	if len(s.small) < SmallMax {
		if s.small == nil {
			s.small = make([]uint32, 0, 4)
		}
		s.small = append(s.small, fp)
		return true
	}
	if s.dense == nil {
		if !b.take() {
			s.saturated = true
			return false
		}
		s.dense, _ = hyperloglog.NewSketch(Precision, false)
	}
	// The small set's fingerprints are the hashes' high halves: enough for
	// the registers, which use the top Precision bits for the index and
	// the rest for the rank, to within the 20 bits dropped.
	for _, v := range s.small {
		s.dense.InsertHash(uint64(v) << 32)
	}
	s.dense.InsertHash(h)
	s.live, s.small = true, s.small[:0]
	return true
}

// count returns the estimate.
func (s *sketch) count() uint64 {
	if s.live {
		return s.dense.Estimate()
	}
	return uint64(len(s.small))
}

// reset empties s for the next generation.
func (s *sketch) reset(b *budget) {
	switch {
	case s.live:
		s.dense.Reset()
		s.live = false
	case s.dense != nil:
		// A spare for a whole generation: not needed any more.
		s.dense = nil
		b.give()
	}
	s.small = s.small[:0]
	s.saturated = false
}

// release gives s's dense sketch back, for a forgotten group.
func (s *sketch) release(b *budget) {
	if s.dense != nil {
		s.dense = nil
		b.give()
	}
	s.live = false
	s.small = nil
}

// union returns the estimated count of a ∪ b.
func union(a, b *sketch) uint64 {
	switch {
	case !a.live && !b.live:
		n := len(a.small)
		for _, v := range b.small {
			if !slices.Contains(a.small, v) {
				n++
			}
		}
		return uint64(n)
	case a.live && b.live:
		u := a.dense.Clone()
		_ = u.Merge(b.dense) // same precision: cannot fail
		return u.Estimate()
	}
	d, sm := a.dense, b.small
	if !a.live {
		d, sm = b.dense, a.small
	}
	u := d.Clone()
	for _, v := range sm {
		u.InsertHash(uint64(v) << 32)
	}
	return u.Estimate()
}

// budget bounds the number of dense sketches, and with them the memory.
type budget struct {
	max, used int
}

func (b *budget) take() bool {
	if b.used >= b.max {
		return false
	}
	b.used++
	return true
}

func (b *budget) give() { b.used-- }
