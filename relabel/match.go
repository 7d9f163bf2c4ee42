package relabel

import "bytes"

// match reports whether the anchored regex matches all of b.
func (m *matcher) match(b []byte) bool {
	if m.literal {
		// Fast path: a literal alternation is a set lookup. Indexing a map
		// with string(b) does not allocate.
		if m.set == nil {
			return bytes.Equal(b, m.one)
		}
		return m.set.has(b)
	}
	if len(m.prefixes) > 0 {
		// Fast path: literals and literal prefixes.
		if m.set != nil && m.set.has(b) {
			return true
		}
		for _, p := range m.prefixes {
			if bytes.HasPrefix(b, p) {
				return true
			}
		}
		return false
	}
	switch m.capture {
	case captureStar:
		// Fast path: prefix(.*) under (?s) matches anything after the prefix,
		// invalid UTF-8 included (the engine reads it as U+FFFD, which '.'
		// matches).
		return bytes.HasPrefix(b, m.prefix)
	case capturePlus:
		return len(b) > len(m.prefix) && bytes.HasPrefix(b, m.prefix)
	}
	// Slow path: the byte API allocates nothing once the regexp package's
	// machine pool is warm.
	return m.re.Match(b)
}

// submatch returns the submatch indexes of the anchored regex in b, as
// regexp.FindSubmatchIndex does, or nil if it does not match. The result is
// valid until the next call.
//
// When the regex has no groups, or is a literal prefix followed by (.*) or
// (.+), the indexes are known from a plain match and are written to s.
// Otherwise FindSubmatchIndex computes them, and it allocates the result: the
// regexp package has no API that fills a caller's slice.
func (m *matcher) submatch(s *Scratch, b []byte) []int {
	if m.literal || m.numSubexp == 0 {
		// Fast path: the only group is the whole match.
		if !m.match(b) {
			return nil
		}
		s.idx = append(s.idx[:0], 0, len(b))
		return s.idx
	}
	if m.capture != captureNone {
		// Fast path: group 1 is everything after the prefix.
		if !m.match(b) {
			return nil
		}
		s.idx = append(s.idx[:0], 0, len(b), len(m.prefix), len(b))
		return s.idx
	}
	// Slow path: allocates 2*(NumSubexp+1) ints per match.
	return m.re.FindSubmatchIndex(b)
}
