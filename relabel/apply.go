package relabel

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"strconv"

	"github.com/cardinal-gateway/cardinal/internal/bytesconv"
	"github.com/cardinal-gateway/cardinal/wire"
)

// Reset drops buffers that grew beyond these sizes, so that one huge
// request does not pin its memory in a pooled Scratch forever.
const (
	maxRetainedArena  = 4 << 20
	maxRetainedLabels = 64 << 10
)

// Scratch is the working memory of one goroutine running Programs: a byte
// arena for rewritten names and values and a pool of label slices. Use one
// Scratch per goroutine, and Reset it between requests. The zero value is
// ready to use.
type Scratch struct {
	// arena holds names and values that rules create. It only grows until
	// Reset: when append moves it, the labels already handed out keep the
	// old array alive, so they stay valid.
	arena []byte
	// labels holds the label slices of series that gained labels beyond
	// the length of their input. Like arena it only grows until Reset.
	labels []wire.Label
	// join holds the joined source values of the current rule. It is
	// reused by the next rule, so nothing may keep a slice of it.
	join []byte
	// iter is labelmap's snapshot of the label set it ranges over.
	iter []wire.Label
	// added lists the names set during the current Apply in the order
	// labels.Builder keeps them (Set appends a name it does not hold, Del
	// removes it). labelmap visits labels in that order after the untouched
	// input labels, and when two labels map to the same name the one it
	// visits last wins, so the order is observable.
	added [][]byte
	// idx holds submatch indexes computed without the regexp package.
	idx []int
}

// Reset makes s ready for the next request. Labels returned by Apply since
// the previous Reset become invalid.
func (s *Scratch) Reset() {
	// Clear whole capacities: stale entries beyond len would otherwise pin
	// the buffers of earlier requests.
	clear(s.labels[:cap(s.labels)])
	clear(s.iter[:cap(s.iter)])
	clear(s.added[:cap(s.added)])
	s.labels = s.labels[:0]
	s.iter = s.iter[:0]
	s.added = s.added[:0]
	s.arena = s.arena[:0]
	s.join = s.join[:0]
	if cap(s.arena) > maxRetainedArena {
		s.arena = nil
	}
	if cap(s.labels) > maxRetainedLabels {
		s.labels = nil
	}
}

// appendBytes copies b into the arena and returns the copy, with its
// capacity clipped so that appending to it cannot overwrite a neighbour.
func (s *Scratch) appendBytes(b []byte) []byte {
	mark := len(s.arena)
	s.arena = append(s.arena, b...)
	return s.arena[mark:len(s.arena):len(s.arena)]
}

// since returns the arena bytes written after mark, capacity clipped.
func (s *Scratch) since(mark int) []byte {
	return s.arena[mark:len(s.arena):len(s.arena)]
}

// Apply runs p on the labels of one series.
//
// in must be sorted by name, without empty values and without duplicate
// names; the caller guarantees this. Apply returns the resulting labels,
// sorted by name, without empty values and without duplicate names, and
// keep == false (with out == nil) if a rule drops the series. As in
// Prometheus, a labelmap may create a label with an empty name.
//
// Apply overwrites the elements of in (never the bytes they point to): out
// shares in's backing array while it has at most len(in) labels, and moves
// to s when it grows beyond that. Names and values in out alias in's
// memory, the Program's memory (configured names and replacements) and s's
// arena. They are valid until s is Reset or in's memory is reused, and
// nobody may write to them.
func (p *Program) Apply(s *Scratch, in []wire.Label) (out []wire.Label, keep bool) {
	s.added = s.added[:0]
	// Clip the capacity: the caller's memory beyond len(in) may belong to
	// the next series.
	st := applier{s: s, ls: in[:len(in):len(in)]}
	for i := range p.rules {
		st.track = i < p.trackUntil
		if !st.run(&p.rules[i]) {
			return nil, false
		}
	}
	return st.ls, true
}

// applier is the state of one Apply: the current label set, sorted by name.
type applier struct {
	s     *Scratch
	ls    []wire.Label
	track bool // record set order in s.added
}

func (st *applier) run(r *rule) bool {
	switch r.act {
	case actKeep:
		val, _ := st.value(r)
		return r.m.match(val)
	case actDrop:
		val, _ := st.value(r)
		return !r.m.match(val)
	case actKeepEqual:
		val, _ := st.value(r)
		return bytes.Equal(st.get(r.target.lit), val)
	case actDropEqual:
		val, _ := st.value(r)
		return !bytes.Equal(st.get(r.target.lit), val)
	case actLabelKeep:
		st.filter(r, true)
	case actLabelDrop:
		st.filter(r, false)
	case actReplace:
		st.replace(r)
	case actLowercase:
		st.changeCase(r, false)
	case actUppercase:
		st.changeCase(r, true)
	case actHashMod:
		val, _ := st.value(r)
		sum := md5.Sum(val)
		// Prometheus uses the last 8 bytes of the hash, big endian, to give
		// the same result as its earlier versions.
		mod := binary.BigEndian.Uint64(sum[8:]) % r.modulus
		mark := len(st.s.arena)
		st.s.arena = strconv.AppendUint(st.s.arena, mod, 10)
		st.set(r.target.lit, st.s.since(mark))
	case actLabelMap:
		st.labelMap(r)
	}
	return true
}

// value returns the rule's source label values joined by its separator, a
// missing label counting as "". stable is false when the result lives in
// s.join, which the next rule reuses; a value kept in a label must then be
// copied to the arena first.
func (st *applier) value(r *rule) (val []byte, stable bool) {
	switch len(r.sources) {
	case 0:
		return nil, true
	case 1:
		// Fast path: no join, the value is the label's own bytes.
		return st.get(r.sources[0]), true
	}
	j := st.s.join[:0]
	for i, n := range r.sources {
		if i > 0 {
			j = append(j, r.sep...)
		}
		j = append(j, st.get(n)...)
	}
	st.s.join = j
	return j, false
}

// filter implements labelkeep (keep == true) and labeldrop in place.
func (st *applier) filter(r *rule, keep bool) {
	ls, n := st.ls, 0
	for i := range ls {
		if r.m.match(ls[i].Name) == keep {
			// A label that stays where it is is not written: while the
			// GC marks, every pointer written costs a write barrier.
			if n != i {
				ls[n] = ls[i]
			}
			n++
		} else if st.track {
			st.forget(ls[i].Name)
		}
	}
	// Drop the references the filter left behind in the tail.
	clear(ls[n:])
	st.ls = ls[:n]
}

// replace implements the replace action like relabel.ProcessBuilder:
// match the joined value, expand the target and check it is a valid label
// name, expand the replacement and set it, an empty result deleting the
// target.
func (st *applier) replace(r *rule) {
	val, stable := st.value(r)
	if r.target.static && r.repl.static {
		// Fast path: nothing to expand, so only whether it matches counts.
		// This covers Prometheus' own shortcut for val == "" with the
		// default regex.
		if r.m.match(val) {
			st.set(r.target.lit, r.repl.lit)
		}
		return
	}
	idx := r.m.submatch(st.s, val)
	if idx == nil {
		return // No match, no replacement.
	}
	s := st.s
	name := r.target.lit
	if !r.target.static {
		// Slow path: the target is a template.
		mark := len(s.arena)
		s.arena = r.m.re.ExpandString(s.arena, r.target.raw, bytesconv.String(val), idx)
		name = s.since(mark)
		if !r.scheme.IsValidLabelName(bytesconv.String(name)) {
			s.arena = s.arena[:mark]
			return
		}
	}
	var res []byte
	switch {
	case r.repl.static:
		res = r.repl.lit
	case r.repl.group >= 0:
		// Fast path: the replacement is one group, a slice of val.
		res = group(val, idx, r.repl.group)
		if !stable {
			res = s.appendBytes(res)
		}
	default:
		mark := len(s.arena)
		s.arena = r.m.re.ExpandString(s.arena, r.repl.raw, bytesconv.String(val), idx)
		res = s.since(mark)
	}
	st.set(name, res)
}

// group returns submatch g of src, or nil if it did not participate.
func group(src []byte, idx []int, g int) []byte {
	if 2*g+1 >= len(idx) || idx[2*g] < 0 {
		return nil
	}
	return src[idx[2*g]:idx[2*g+1]]
}

// changeCase implements lowercase and uppercase with the results of
// strings.ToLower and strings.ToUpper.
func (st *applier) changeCase(r *rule, upper bool) {
	val, stable := st.value(r)
	if stable && !caseChanges(val, upper) {
		// Fast path: already in the right case, keep the bytes.
		st.set(r.target.lit, val)
		return
	}
	mark := len(st.s.arena)
	st.s.arena = appendCase(st.s.arena, val, upper)
	st.set(r.target.lit, st.s.since(mark))
}

// labelMap implements labelmap. labels.Builder.Range ranges over a copy
// taken before the first call, so the labels that labelmap sets are not
// visited and every visited label has the value it had before the rule.
func (st *applier) labelMap(r *rule) {
	s := st.s
	it := s.iter[:0]
	if len(s.added) == 0 {
		it = append(it, st.ls...)
	} else {
		// Range visits the input labels that no rule has set, sorted, and
		// then the set labels in the order they were first set.
		for _, l := range st.ls {
			if !st.isAdded(l.Name) {
				it = append(it, l)
			}
		}
		for _, n := range s.added {
			it = append(it, wire.Label{Name: n, Value: st.get(n)})
		}
	}
	s.iter = it
	for _, l := range it {
		var name []byte
		switch {
		case r.repl.static:
			if !r.m.match(l.Name) {
				continue
			}
			name = r.repl.lit
		default:
			idx := r.m.submatch(s, l.Name)
			if idx == nil {
				continue
			}
			if r.repl.group >= 0 {
				// Fast path: names are stable bytes, so a group of one can
				// be the new name without a copy.
				name = group(l.Name, idx, r.repl.group)
				break
			}
			// An anchored regex matches once, so ReplaceAllString, which
			// Prometheus calls, is a single expansion.
			mark := len(s.arena)
			s.arena = r.m.re.ExpandString(s.arena, r.repl.raw, bytesconv.String(l.Name), idx)
			name = s.since(mark)
		}
		st.set(name, l.Value)
	}
}

// get returns the value of the label called name, or nil.
func (st *applier) get(name []byte) []byte {
	if i, ok := find(st.ls, name); ok {
		return st.ls[i].Value
	}
	return nil
}

// set sets a label like labels.Builder.Set: an empty value deletes it.
func (st *applier) set(name, value []byte) {
	if len(value) == 0 {
		st.del(name)
		return
	}
	if st.track {
		st.note(name)
	}
	i, ok := find(st.ls, name)
	if ok {
		st.ls[i].Value = value
		return
	}
	if len(st.ls) == cap(st.ls) {
		st.grow()
	}
	st.ls = st.ls[:len(st.ls)+1]
	copy(st.ls[i+1:], st.ls[i:])
	st.ls[i] = wire.Label{Name: name, Value: value}
}

// grow moves the label set to s.labels with room for a few more labels.
func (st *applier) grow() {
	s := st.s
	start := len(s.labels)
	s.labels = append(s.labels, st.ls...)
	// Room for further labels, so that a program that adds several does
	// not copy the set for each one. The make does not allocate: append
	// of a make is compiled to a grow.
	s.labels = append(s.labels, make([]wire.Label, 4)...)
	st.ls = s.labels[start : start+len(st.ls) : len(s.labels)]
}

// del deletes a label like labels.Builder.Del.
func (st *applier) del(name []byte) {
	if st.track {
		st.forget(name)
	}
	i, ok := find(st.ls, name)
	if !ok {
		return
	}
	copy(st.ls[i:], st.ls[i+1:])
	st.ls[len(st.ls)-1] = wire.Label{}
	st.ls = st.ls[:len(st.ls)-1]
}

// note records that name was set, keeping the position of a name already
// set, as labels.Builder.Set updates an added label in place.
func (st *applier) note(name []byte) {
	if !st.isAdded(name) {
		st.s.added = append(st.s.added, name)
	}
}

// forget records that name was deleted.
func (st *applier) forget(name []byte) {
	for i, n := range st.s.added {
		if bytes.Equal(n, name) {
			st.s.added = append(st.s.added[:i], st.s.added[i+1:]...)
			return
		}
	}
}

func (st *applier) isAdded(name []byte) bool {
	for _, n := range st.s.added {
		if bytes.Equal(n, name) {
			return true
		}
	}
	return false
}

// find returns the position of name in the sorted ls, or where it would be
// inserted, and whether it is there.
func find(ls []wire.Label, name []byte) (int, bool) {
	// Fast path: a linear scan for equality, which mostly compares
	// lengths, beats a binary search of bytes.Compare on the dozen labels of
	// a series, many of which share prefixes such as "destination_".
	for i := range ls {
		if string(ls[i].Name) == string(name) {
			return i, true
		}
	}
	// Slow path: a new label, find where it goes.
	lo, hi := 0, len(ls)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if bytes.Compare(ls[m].Name, name) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, false
}
