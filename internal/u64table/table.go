// Package u64table is a map keyed by uint64 hashes for per-series state: an
// open-addressing table with linear probing. With uint64 values it takes
// about 24 bytes per entry where a Go map takes about 38, and values are
// updated in place.
//
// It is not safe for concurrent use; its owners shard it under their own
// locks.
package u64table

import "math/bits"

// Table maps uint64 keys to values of type V. The zero Table is empty and
// ready to use.
type Table[V any] struct {
	slots []slot[V] // nil until the first Put
	used  int
	// The key 0 marks an empty slot, so its entry is kept aside.
	hasZero bool
	zero    V
	gone    []uint64 // Sweep's scratch
}

type slot[V any] struct {
	k uint64
	v V
}

// maxLoad is the fill (in quarters) past which the table grows by half.
const maxLoad = 3

// home is where k's probe starts. Keys are mixed first, so that sequential
// or shard-aligned keys spread too.
func home(k uint64, n int) int {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	hi, _ := bits.Mul64(k, uint64(n))
	return int(hi)
}

// find returns the slot of k (k != 0), or the empty slot where it would go,
// and whether it is there.
func (t *Table[V]) find(k uint64) (int, bool) {
	n := len(t.slots)
	for i := home(k, n); ; {
		switch t.slots[i].k {
		case k:
			return i, true
		case 0:
			return i, false
		}
		if i++; i == n {
			i = 0
		}
	}
}

// Len returns the number of entries.
func (t *Table[V]) Len() int {
	if t.hasZero {
		return t.used + 1
	}
	return t.used
}

// Get returns the value of k and whether k is in the table.
func (t *Table[V]) Get(k uint64) (V, bool) {
	if p := t.Ptr(k); p != nil {
		return *p, true
	}
	var zero V
	return zero, false
}

// Ptr returns a pointer to the value of k, or nil. It is valid until the
// next Put, Delete, Clear or Sweep.
func (t *Table[V]) Ptr(k uint64) *V {
	if k == 0 {
		if t.hasZero {
			return &t.zero
		}
		return nil
	}
	if t.slots == nil {
		return nil
	}
	if i, ok := t.find(k); ok {
		return &t.slots[i].v
	}
	return nil
}

// Upsert returns a pointer to the value of k, adding k with the zero
// value when it is not in the table, and whether it was: one probe where
// Ptr and then Put take two. The pointer is valid as Ptr's is.
func (t *Table[V]) Upsert(k uint64) (p *V, existed bool) {
	if k == 0 {
		existed = t.hasZero
		t.hasZero = true
		return &t.zero, existed
	}
	if t.slots == nil {
		t.slots = make([]slot[V], 8)
	}
	i, ok := t.find(k)
	if !ok {
		if (t.used+1)*4 > len(t.slots)*maxLoad {
			t.resize(len(t.slots) + len(t.slots)/2)
			i, _ = t.find(k)
		}
		t.used++
		t.slots[i].k = k
	}
	return &t.slots[i].v, ok
}

// Put sets the value of k.
func (t *Table[V]) Put(k uint64, v V) {
	p, _ := t.Upsert(k)
	*p = v
}

// Delete removes k. Later entries of its probe run move back into the hole,
// so that no lookup stops early (no tombstones).
func (t *Table[V]) Delete(k uint64) {
	if k == 0 {
		var zero V
		t.hasZero, t.zero = false, zero
		return
	}
	if t.slots == nil {
		return
	}
	i, ok := t.find(k)
	if !ok {
		return
	}
	n := len(t.slots)
	for j := i; ; {
		if j++; j == n {
			j = 0
		}
		s := t.slots[j]
		if s.k == 0 {
			break
		}
		// The entry at j may fill the hole if the hole lies between its
		// home and j, cyclically.
		if (j-home(s.k, n)+n)%n >= (j-i+n)%n {
			t.slots[i] = s
			i = j
		}
	}
	t.slots[i] = slot[V]{}
	t.used--
}

// Clear removes every entry and gives the memory back.
func (t *Table[V]) Clear() { *t = Table[V]{} }

// Range calls f for every entry until it returns false. f must not change
// the table.
func (t *Table[V]) Range(f func(k uint64, v V) bool) {
	if t.hasZero && !f(0, t.zero) {
		return
	}
	for _, s := range t.slots {
		if s.k != 0 && !f(s.k, s.v) {
			return
		}
	}
}

// Sweep removes the entries for which keep returns false; keep runs once
// per entry and may count what goes. It returns the number removed. A large
// table left mostly empty is rebuilt at a size fit for the rest, so that
// the memory of a burst is given back; otherwise the table keeps its size,
// so that steady churn allocates nothing.
func (t *Table[V]) Sweep(keep func(k uint64, v V) bool) int {
	removed := 0
	if t.hasZero && !keep(0, t.zero) {
		var zero V
		t.hasZero, t.zero = false, zero
		removed++
	}
	// Deleting moves entries back along their probe runs, which would
	// make the loop miss or revisit some: note the keys, delete after.
	gone := t.gone[:0]
	for _, s := range t.slots {
		if s.k != 0 && !keep(s.k, s.v) {
			gone = append(gone, s.k)
		}
	}
	for _, k := range gone {
		t.Delete(k)
	}
	removed += len(gone)
	t.gone = gone[:0]
	if cap(t.gone) > 1024 && cap(t.gone) > len(t.slots) {
		t.gone = nil // a burst's worth of keys is not worth keeping
	}
	if len(t.slots) >= shrinkFrom && t.used*8 < len(t.slots) {
		t.resize(max(8, t.used*3/2))
	}
	return removed
}

// shrinkFrom is the table size from which Sweep gives memory back: smaller
// tables are not worth the allocation.
const shrinkFrom = 4096

func (t *Table[V]) resize(n int) {
	old := t.slots
	t.slots = make([]slot[V], n)
	for _, s := range old {
		if s.k != 0 {
			i, _ := t.find(s.k)
			t.slots[i] = s
		}
	}
}
