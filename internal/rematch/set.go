package rematch

import (
	"encoding/binary"

	"github.com/cardinal-gateway/cardinal/internal/bytesconv"
)

// set is a read-only set of strings: an open-addressing table at most a
// quarter full, with a length mask in front that rejects most misses before
// any hashing.
type set struct {
	slots    []string // power-of-two length; "" marks an empty slot
	mask     uint32
	hasEmpty bool // the empty string, which cannot use a slot
	n        int
	// lengths has bit i set when a member is i bytes long (i < 64), or bit
	// 63 for every longer one: most misses are rejected on length alone.
	lengths uint64
}

func newSet(members []string) *set {
	size := 8
	for size < 4*len(members) {
		size *= 2
	}
	s := &set{slots: make([]string, size), mask: uint32(size - 1)}
	for _, m := range members {
		s.add(m)
	}
	return s
}

func (s *set) add(m string) {
	s.lengths |= lengthBit(len(m))
	if m == "" {
		if !s.hasEmpty {
			s.hasEmpty = true
			s.n++
		}
		return
	}
	for i := hash(m) & s.mask; ; i = (i + 1) & s.mask {
		switch s.slots[i] {
		case "":
			s.slots[i] = m
			s.n++
			return
		case m:
			return
		}
	}
}

func lengthBit(n int) uint64 { return 1 << min(n, 63) }

// has reports whether m is in the set. It does not allocate.
func (s *set) has(m string) bool {
	if s.lengths&lengthBit(len(m)) == 0 {
		return false
	}
	if m == "" {
		return s.hasEmpty
	}
	for i := hash(m) & s.mask; ; i = (i + 1) & s.mask {
		slot := s.slots[i]
		if slot == m {
			return true
		}
		if slot == "" {
			return false
		}
	}
}

// len returns the number of members.
func (s *set) len() int { return s.n }

// hash mixes the length and the first and last bytes of s (up to eight
// each): label names, the usual members, differ there, and it costs a
// fraction of hashing every byte. Strings alike at both ends only share a
// probe run; has compares whole strings, so a collision is never a wrong
// answer, and the runs are made by the members alone, whatever is looked up.
func hash(s string) uint32 {
	n := len(s)
	var a, b uint64
	switch {
	case n >= 8:
		a, b = le64(s[:8]), le64(s[n-8:])
	case n >= 4:
		a, b = uint64(le32(s[:4])), uint64(le32(s[n-4:]))
	case n > 0:
		a, b = uint64(s[0])|uint64(s[n/2])<<8|uint64(s[n-1])<<16, 0
	}
	h := (a ^ uint64(n)) * 0x9e3779b97f4a7c15
	h ^= (b ^ h>>29) * 0xbf58476d1ce4e5b9
	return uint32(h >> 32)
}

func le64(s string) uint64 { return binary.LittleEndian.Uint64(bytesconv.Bytes(s)) }

func le32(s string) uint32 { return binary.LittleEndian.Uint32(bytesconv.Bytes(s)) }
