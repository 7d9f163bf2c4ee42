package relabel

// nameSet is a read-only set of strings for matching label names against a
// literal alternation such as an allowlist. It is an open-addressing table
// probed with a hash of the length and three bytes, cheaper than a Go map's
// full string hash for the short names that labels have; a collision only
// costs another probe and a comparison.
type nameSet struct {
	slots    []string // power-of-two length; "" marks an empty slot
	mask     uint32
	hasEmpty bool // the empty string, which cannot use a slot
	n        int
}

func newNameSet(names []string) *nameSet {
	size := 8
	for size < 4*len(names) {
		size *= 2
	}
	s := &nameSet{slots: make([]string, size), mask: uint32(size - 1)}
	for _, name := range names {
		s.add(name)
	}
	return s
}

func (s *nameSet) add(name string) {
	if name == "" {
		if !s.hasEmpty {
			s.hasEmpty = true
			s.n++
		}
		return
	}
	for i := nameHash(name) & s.mask; ; i = (i + 1) & s.mask {
		switch s.slots[i] {
		case "":
			s.slots[i] = name
			s.n++
			return
		case name:
			return
		}
	}
}

// has reports whether b is in the set. It does not allocate.
func (s *nameSet) has(b []byte) bool {
	if len(b) == 0 {
		return s.hasEmpty
	}
	for i := nameHash(b) & s.mask; ; i = (i + 1) & s.mask {
		slot := s.slots[i]
		// A comparison with string(b) does not allocate; a switch case of
		// it would, for names over 32 bytes.
		if slot == string(b) {
			return true
		}
		if slot == "" {
			return false
		}
	}
}

// len returns the number of strings in the set.
func (s *nameSet) len() int { return s.n }

// nameHash mixes the length with the first, middle and last byte: label
// names of one allowlist rarely agree on all four.
func nameHash[T string | []byte](b T) uint32 {
	n := len(b)
	return uint32(n)*0x9E3779B1 ^ uint32(b[0])*0x85EBCA77 ^ uint32(b[n/2])*0xC2B2AE3D ^ uint32(b[n-1])*0x27D4EB2F
}
