package relabel

// match reports whether the anchored regex matches all of b. It does not
// allocate.
func (m *matcher) match(b []byte) bool { return m.m.Match(b) }

// submatch returns the submatch indexes of the anchored regex in b, as
// regexp.FindSubmatchIndex does, or nil if it does not match. The result is
// valid until the next call.
//
// When every group spans the whole match ("(a|b)", or no group at all), or
// the regex is a literal prefix followed by (.*) or (.+), the indexes are
// known from a plain match and are written to s. Otherwise FindSubmatchIndex
// computes them, and it allocates the result: the regexp package has no API
// that fills a caller's slice.
func (m *matcher) submatch(s *Scratch, b []byte) []int {
	if n := m.m.WholeCaptures(); n >= 0 {
		if !m.m.Match(b) {
			return nil
		}
		s.idx = s.idx[:0]
		for range n + 1 {
			s.idx = append(s.idx, 0, len(b))
		}
		return s.idx
	}
	if from, ok := m.m.RestCapture(); ok {
		if !m.m.Match(b) {
			return nil
		}
		s.idx = append(s.idx[:0], 0, len(b), from, len(b))
		return s.idx
	}
	if m.m.Fast() && !m.m.Match(b) {
		// A cheap refusal spares the engine, and its allocation, on the
		// inputs that do not match.
		return nil
	}
	return m.re.FindSubmatchIndex(b)
}
