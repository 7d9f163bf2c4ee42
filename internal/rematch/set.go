package rematch

import "github.com/cespare/xxhash/v2"

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

func hash(s string) uint32 { return uint32(xxhash.Sum64String(s)) }
