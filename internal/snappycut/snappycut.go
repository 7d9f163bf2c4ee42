// Package snappycut removes byte ranges from a snappy-compressed block
// without compressing it again.
//
// A proxy that forwards most of a request as it came, and drops or absorbs
// the rest, would otherwise decode, re-encode and re-compress every byte it
// keeps. A snappy block is a sequence of literals and of copies of earlier
// output; removing ranges of the output only shifts the copies whose source
// lies before a removed range, and breaks those whose source overlaps one.
// Cut walks the elements once, keeps the ones that still hold, adjusts
// their offsets, and writes the bytes of the broken ones as literals. That
// is several times cheaper than compressing the kept bytes, and the result
// keeps the sender's compression ratio where copies survive.
package snappycut

import (
	"encoding/binary"
	"errors"
)

// ErrCorrupt is returned when src is not a snappy block that decodes to as
// many bytes as raw holds, or cuts are not ascending ranges within raw.
var ErrCorrupt = errors.New("snappycut: corrupt input")

// ErrOverBudget is returned when more bytes than the budget would have to
// be written as literals because the copies that held them refer to removed
// bytes: compressing the kept bytes again is then worth its cost.
var ErrOverBudget = errors.New("snappycut: too many broken copies")

// Element tags of the snappy block format.
const (
	tagLiteral = 0
	tagCopy1   = 1
	tagCopy2   = 2
	tagCopy4   = 3
)

// Cut appends to dst a snappy block that decodes to raw with the ranges of
// cuts removed. src must be a snappy block that decodes to raw (the caller
// decoded it); raw supplies the bytes of literals and of broken copies.
// cuts holds start, end pairs, ascending and not overlapping, within raw;
// empty ranges are allowed. At most budget bytes of copies are turned into
// literals (a negative budget is unlimited); past it Cut returns
// ErrOverBudget. On error dst's contents past its length are undefined.
func Cut(dst, src, raw []byte, cuts []int, budget int) ([]byte, error) {
	n, hdr := binary.Uvarint(src)
	if hdr <= 0 || n != uint64(len(raw)) || len(cuts)%2 != 0 {
		return dst, ErrCorrupt
	}
	removed, prev := 0, 0
	for i := 0; i < len(cuts); i += 2 {
		if cuts[i] < prev || cuts[i+1] < cuts[i] || cuts[i+1] > len(raw) {
			return dst, ErrCorrupt
		}
		removed += cuts[i+1] - cuts[i]
		prev = cuts[i+1]
	}
	dst = binary.AppendUvarint(dst, uint64(len(raw)-removed))
	w := writer{dst: dst, raw: raw, litLo: -1}
	// ci is the first cut that ends after d; keptLo is where the range
	// kept around d starts (the end of the cut before ci), keptHi where
	// it ends (the start of cut ci).
	ci, keptLo, keptHi := 0, 0, len(raw)
	if len(cuts) > 0 {
		keptHi = cuts[0]
	}
	d := 0
	// Fast path: the elements from src[run:] on are copied as they are,
	// once the first that is not ends the run: they write kept bytes, and
	// copy bytes of the same kept range, whose distance the cuts do not
	// change. That is nearly all of them.
	run := hdr
	for s := hdr; s < len(src); {
		s0 := s
		var length, offset int
		literal := src[s]&3 == tagLiteral
		switch src[s] & 3 {
		case tagLiteral:
			x := int(src[s] >> 2)
			s++
			if x >= 60 {
				k := x - 59 // bytes of the length
				if s+k > len(src) {
					return dst, ErrCorrupt
				}
				x = 0
				for j := k - 1; j >= 0; j-- {
					x = x<<8 | int(src[s+j])
				}
				s += k
			}
			length = x + 1
			if length <= 0 || length > len(src)-s {
				return dst, ErrCorrupt
			}
			s += length
		case tagCopy1:
			if s+2 > len(src) {
				return dst, ErrCorrupt
			}
			length = 4 + int(src[s]>>2)&7
			offset = int(src[s]&0xe0)<<3 | int(src[s+1])
			s += 2
		case tagCopy2:
			if s+3 > len(src) {
				return dst, ErrCorrupt
			}
			length = 1 + int(src[s]>>2)
			offset = int(binary.LittleEndian.Uint16(src[s+1:]))
			s += 3
		case tagCopy4:
			if s+5 > len(src) {
				return dst, ErrCorrupt
			}
			length = 1 + int(src[s]>>2)
			offset = int(binary.LittleEndian.Uint32(src[s+1:]))
			s += 5
		}
		if length > len(raw)-d || offset > d || offset == 0 && !literal {
			return dst, ErrCorrupt
		}
		end := d + length
		if d >= keptLo && end <= keptHi && (literal || d-offset >= keptLo) {
			d = end
			continue
		}
		// Slow path: the element writes raw[d:end], and the parts of it
		// outside cuts are written anew.
		w.flush()
		w.dst = append(w.dst, src[run:s0]...)
		run = s
		for d < end {
			if d >= keptHi {
				// Inside cut ci: skip to its end.
				e := min(end, cuts[ci+1])
				if e == cuts[ci+1] {
					keptLo = e
					ci += 2
					keptHi = len(raw)
					if ci < len(cuts) {
						keptHi = cuts[ci]
					}
				}
				d = e
				continue
			}
			e := min(end, keptHi)
			if literal {
				w.literal(d, e)
			} else if off, ok := shifted(cuts, ci, keptLo, d, e, offset); ok {
				w.copy(d, e, off)
			} else {
				if budget >= 0 {
					if budget -= e - d; budget < 0 {
						return w.dst, ErrOverBudget
					}
				}
				w.literal(d, e)
			}
			d = e
		}
	}
	if d != len(raw) {
		return dst, ErrCorrupt
	}
	w.flush()
	return append(w.dst, src[run:]...), nil
}

// maxBack bounds how many removed ranges shifted looks back over for the
// source of a copy: copies reach back at most 64 KiB in what snappy
// encoders write, and this many cuts in that window mean the copy is
// better written out.
const maxBack = 8

// shifted returns the offset, in the output without the cuts, of a copy
// of offset off that writes raw[a:b], a range kept between the cut before
// ci (which ended at keptLo) and cut ci. It is not ok when the source lies
// in, or across, a removed range.
func shifted(cuts []int, ci, keptLo, a, b, off int) (int, bool) {
	src := a - off
	if src >= keptLo {
		// Source and destination in the same kept range.
		return off, true
	}
	if off < b-a {
		// An overlapping copy repeats bytes up to a, which span a cut.
		return 0, false
	}
	shift := 0
	for j := ci - 2; j >= 0 && j >= ci-2*maxBack; j -= 2 {
		shift += cuts[j+1] - cuts[j]
		lo := 0
		if j >= 2 {
			lo = cuts[j-1]
		}
		if src >= lo {
			// The source starts in the kept range before cut j: it must
			// end there too.
			if src+(b-a) > cuts[j] {
				return 0, false
			}
			return off - shift, true
		}
	}
	return 0, false
}

// writer emits the elements of the new block; a run of literal bytes that
// are adjacent in raw is written as one literal.
type writer struct {
	dst          []byte
	raw          []byte
	litLo, litHi int // the pending literal raw[litLo:litHi]; litLo < 0: none
}

func (w *writer) literal(lo, hi int) {
	if w.litLo >= 0 && w.litHi == lo {
		w.litHi = hi
		return
	}
	w.flush()
	w.litLo, w.litHi = lo, hi
}

func (w *writer) flush() {
	if w.litLo < 0 {
		return
	}
	w.dst = appendLiteral(w.dst, w.raw[w.litLo:w.litHi])
	w.litLo = -1
}

func (w *writer) copy(lo, hi, off int) {
	w.flush()
	w.dst = appendCopy(w.dst, off, hi-lo)
}

func appendLiteral(dst, lit []byte) []byte {
	n := len(lit) - 1
	switch {
	case n < 60:
		dst = append(dst, byte(n)<<2|tagLiteral)
	case n < 1<<8:
		dst = append(dst, 60<<2|tagLiteral, byte(n))
	case n < 1<<16:
		dst = append(dst, 61<<2|tagLiteral, byte(n), byte(n>>8))
	case n < 1<<24:
		dst = append(dst, 62<<2|tagLiteral, byte(n), byte(n>>8), byte(n>>16))
	default:
		dst = append(dst, 63<<2|tagLiteral, byte(n), byte(n>>8), byte(n>>16), byte(n>>24))
	}
	return append(dst, lit...)
}

// appendCopy writes a copy of length bytes at offset off, in as many
// elements as it takes (an element copies at most 64).
func appendCopy(dst []byte, off, length int) []byte {
	for length > 0 {
		l := min(length, 64)
		if length > 64 && length < 68 {
			// Leave at least 4 for the last element, which may then be
			// the 2-byte form.
			l = 60
		}
		switch {
		case l >= 4 && l < 12 && off < 2048:
			dst = append(dst, byte(off>>8)<<5|byte(l-4)<<2|tagCopy1, byte(off))
		case off < 1<<16:
			dst = append(dst, byte(l-1)<<2|tagCopy2, byte(off), byte(off>>8))
		default:
			dst = append(dst, byte(l-1)<<2|tagCopy4, byte(off), byte(off>>8), byte(off>>16), byte(off>>24))
		}
		length -= l
	}
	return dst
}
