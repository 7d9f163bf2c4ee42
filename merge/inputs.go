package merge

import "github.com/cardinal-gateway/cardinal/internal/u64table"

// inputSet holds the live inputs of a merged output. Most outputs have a
// handful (the pods of one workload): a slice of values scanned by key costs
// neither a map nor an allocation per input, and keeps an output's inputs on
// adjacent cache lines. Past indexAt inputs an index keeps lookups O(1).
//
// Past listMax inputs (an output gathering a fresh request id every scrape)
// the rest go into fixed chunks, so that growth never copies the inputs
// already held: copying them each time the slice grew was most of the
// memory a new input allocated, and most of the GC's work under churn.
//
// A pointer returned by get, add or at is valid until the next add or
// remove.
type inputSet struct {
	list  []input                // inputs 0 to listMax-1
	more  []*[chunkLen]input     // input listMax+i is more[i/chunkLen][i%chunkLen]
	n     int                    // inputs held
	index *u64table.Table[int32] // position by key; nil below indexAt
}

// indexAt is the size from which an index (an open-addressing table) is
// kept: scanning 16 keys at a 48-byte stride costs about what a probe of it
// does.
const indexAt = 16

const (
	listMax  = 64
	chunkLen = 64 // 3 KiB of 48-byte inputs
)

func (s *inputSet) len() int { return s.n }

// at returns the input at position i (0 <= i < len).
func (s *inputSet) at(i int) *input {
	if i < listMax {
		return &s.list[i]
	}
	i -= listMax
	return &s.more[i/chunkLen][i%chunkLen]
}

// get returns the input with key, or nil.
func (s *inputSet) get(key uint64) *input {
	if s.index != nil {
		if i, ok := s.index.Get(key); ok {
			return s.at(int(i))
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
	i := s.n
	var ip *input
	if i < listMax {
		if len(s.list) == cap(s.list) {
			// Not double: the set is long-lived and most stop growing at
			// a few entries, so a small one grows by a quarter, a larger
			// one by half, up to listMax.
			grow := max(2, len(s.list)/4)
			if len(s.list) >= indexAt {
				grow = len(s.list) / 2
			}
			grown := make([]input, len(s.list), min(len(s.list)+grow, listMax))
			copy(grown, s.list)
			s.list = grown
		}
		s.list = append(s.list, in)
		ip = &s.list[i]
	} else {
		j := i - listMax
		if j%chunkLen == 0 && j/chunkLen == len(s.more) {
			s.more = append(s.more, new([chunkLen]input))
		}
		ip = &s.more[j/chunkLen][j%chunkLen]
		*ip = in
	}
	s.n++
	if s.index != nil {
		s.index.Put(in.key, int32(i))
	} else if s.n > indexAt {
		s.index = new(u64table.Table[int32])
		for j := range s.n {
			s.index.Put(s.at(j).key, int32(j))
		}
	}
	return ip
}

// removeAt removes the input at position i; the last one takes its place.
func (s *inputSet) removeAt(i int) {
	last := s.n - 1
	if s.index != nil {
		s.index.Delete(s.at(i).key)
		if i != last {
			s.index.Put(s.at(last).key, int32(i))
		}
	}
	*s.at(i) = *s.at(last)
	s.n = last
	if last < listMax {
		s.list = s.list[:last]
	} else if j := last - listMax; j%chunkLen == 0 {
		// The last chunk emptied: it goes.
		s.more[len(s.more)-1] = nil
		s.more = s.more[:len(s.more)-1]
	}
	if s.index != nil && s.n <= indexAt/2 {
		s.index = nil
	}
	if len(s.more) == 0 {
		s.more = nil
		if cap(s.list) > 8 && len(s.list) < cap(s.list)/4 {
			s.list = append(make([]input, 0, len(s.list)+len(s.list)/4+1), s.list...)
		}
	}
}

// clone returns a copy of the inputs, in position order.
func (s *inputSet) clone() []input {
	out := make([]input, 0, s.n)
	out = append(out, s.list...)
	for _, c := range s.more {
		out = append(out, c[:min(chunkLen, s.n-len(out))]...)
	}
	return out
}
