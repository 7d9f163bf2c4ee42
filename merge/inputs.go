package merge

import "github.com/cardinal-gateway/cardinal/internal/u64table"

// inputSet holds the live inputs of a merged output. Most outputs have a
// handful (the pods of one workload): a slice of values scanned by key costs
// neither a map nor an allocation per input, and keeps an output's inputs on
// adjacent cache lines. Past indexAt inputs an index keeps lookups O(1).
//
// A pointer returned by get or add is valid until the next add or remove.
type inputSet struct {
	list  []input
	index *u64table.Table[int32] // position in list by key; nil below indexAt
}

// indexAt is the size from which an index (an open-addressing table) is
// kept: scanning 16 keys at a 48-byte stride costs about what a probe of it
// does.
const indexAt = 16

func (s *inputSet) len() int { return len(s.list) }

// get returns the input with key, or nil.
func (s *inputSet) get(key uint64) *input {
	if s.index != nil {
		if i, ok := s.index.Get(key); ok {
			return &s.list[i]
		}
		return nil
	}
	for i := range s.list {
		if s.list[i].key == key {
			return &s.list[i]
		}
	}
	return nil
}

// add appends in, whose key must not be in the set yet, and returns it.
func (s *inputSet) add(in input) *input {
	if len(s.list) == cap(s.list) {
		// Not double: the set is long-lived and most stop growing at a
		// few entries, so a small one grows by a quarter. A large one
		// grows by half: by a quarter, it copied each input four times
		// over as an output gathered fresh request ids scrape after
		// scrape, most of the cost of a new input.
		grow := max(2, len(s.list)/4)
		if len(s.list) >= indexAt {
			grow = len(s.list) / 2
		}
		grown := make([]input, len(s.list), len(s.list)+grow)
		copy(grown, s.list)
		s.list = grown
	}
	s.list = append(s.list, in)
	i := len(s.list) - 1
	if s.index != nil {
		s.index.Put(in.key, int32(i))
	} else if len(s.list) > indexAt {
		s.index = new(u64table.Table[int32])
		for j := range s.list {
			s.index.Put(s.list[j].key, int32(j))
		}
	}
	return &s.list[i]
}

// removeAt removes the input at position i; the last one takes its place.
func (s *inputSet) removeAt(i int) {
	last := len(s.list) - 1
	if s.index != nil {
		s.index.Delete(s.list[i].key)
		if i != last {
			s.index.Put(s.list[last].key, int32(i))
		}
	}
	s.list[i] = s.list[last]
	s.list = s.list[:last]
	if s.index != nil && len(s.list) <= indexAt/2 {
		s.index = nil
	}
	if cap(s.list) > 8 && len(s.list) < cap(s.list)/4 {
		s.list = append(make([]input, 0, len(s.list)+len(s.list)/4+1), s.list...)
	}
}
