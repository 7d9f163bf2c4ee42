package limiter

import (
	"sync/atomic"

	"github.com/cardinal-gateway/cardinal/internal/bytesconv"
)

// Workload is the accounting of one workload.
type Workload struct {
	Name string
	id   uint32
	// active counts the admitted series entries, folded the folded ones;
	// instances counts the instance entries, foldedInstances the folded
	// ones among them.
	active          atomic.Int64
	folded          atomic.Int64
	instances       atomic.Int64
	foldedInstances atomic.Int64
	// tracked is folded plus foldedInstances, kept apart so that one
	// compare-and-swap bounds both (Settings.MaxTrackedFolded).
	tracked atomic.Int64
	// saturatedAt is satBit | the time of the last untracked fold, or 0.
	saturatedAt    atomic.Uint64
	foldedSamples  atomic.Uint64
	limitReached   atomic.Uint64
	untrackedFolds atomic.Uint64
}

const satBit uint64 = 1 << 32

// fresh reports whether something last seen at seen is still within the
// window at now. A request may stamp an entry with a clock it read after
// Sweep read its own: a negative age is fresh, not a wrapped-around old one.
func fresh(now, seen, window uint32) bool {
	return int64(int32(now-seen)) <= int64(window)
}

// reserve takes one active slot if the cap allows it. Series of one workload
// live in every shard, so the check and the increment must be one atomic
// step for the cap to be exact.
func (w *Workload) reserve(limit int) bool {
	for {
		cur := w.active.Load()
		if limit > 0 && cur >= int64(limit) {
			return false
		}
		if w.active.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

// reserveTracked takes n of the workload's maxTracked slots for folded
// entries if that many are left, in one atomic step like reserve, so that
// concurrent folds cannot overshoot the bound.
func (w *Workload) reserveTracked(n int64, maxTracked int) bool {
	for {
		cur := w.tracked.Load()
		if cur+n > int64(maxTracked) {
			return false
		}
		if w.tracked.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// saturated reports whether the workload folded a series untracked within
// the window before now.
func (w *Workload) saturated(now, window uint32) bool {
	v := w.saturatedAt.Load()
	return v&satBit != 0 && fresh(now, uint32(v), window)
}

// saturate records an untracked fold at now. The time only moves forward:
// a request that read the clock earlier must not shorten the saturation.
func (w *Workload) saturate(now uint32) {
	for {
		old := w.saturatedAt.Load()
		if old&satBit != 0 && int32(now-uint32(old)) <= 0 {
			return
		}
		if w.saturatedAt.CompareAndSwap(old, satBit|uint64(now)) {
			return
		}
	}
}

// endSaturation clears a saturation older than the window. The
// compare-and-swap loses to a concurrent saturate, which must win.
func (w *Workload) endSaturation(now, window uint32) {
	if v := w.saturatedAt.Load(); v&satBit != 0 && !fresh(now, uint32(v), window) {
		w.saturatedAt.CompareAndSwap(v, 0)
	}
}

// idle reports whether nothing refers to the workload any more: no series
// or instance entry carries its id, and no untracked fold is recent enough
// to keep it saturated.
func (w *Workload) idle(now, window uint32) bool {
	return w.active.Load() == 0 && w.folded.Load() == 0 && w.instances.Load() == 0 && !w.saturated(now, window)
}

// outcome is what the limiter does with a new series.
type outcome uint8

const (
	admitted outcome = iota
	// foldedTracked: folded, with an entry that keeps it folded.
	foldedTracked
	// foldedUntracked: folded without an entry, the workload saturated.
	foldedUntracked
)

// decideAlone decides for a new series by the cap alone. A folded series
// needs entries slots for folded entries (its own, and its instance's
// when it founds one).
func (w *Workload) decideAlone(limit, maxTracked int, now, window uint32, entries int64) outcome {
	// A saturated workload admits nothing new: the series may be one it
	// folded untracked, whose value the overflow series already counts.
	if !w.saturated(now, window) && w.reserve(limit) {
		return admitted
	}
	return w.fold(maxTracked, now, window, entries)
}

// fold decides how a series to fold is folded: tracked while the workload
// has room for its entries and is not saturated, untracked otherwise.
func (w *Workload) fold(maxTracked int, now, window uint32, entries int64) outcome {
	if !w.saturated(now, window) && w.reserveTracked(entries, maxTracked) {
		return foldedTracked
	}
	w.saturate(now)
	return foldedUntracked
}

// workload returns the accounting of the workload key, creating it. The
// caller holds a shard lock, so retire cannot remove the workload before
// the caller has stored an entry that refers to it.
func (l *Limiter) workload(key []byte, st *Settings) *Workload {
	l.wlMu.RLock()
	w := l.byName[bytesconv.String(key)]
	l.wlMu.RUnlock()
	if w != nil {
		return w
	}
	l.wlMu.Lock()
	defer l.wlMu.Unlock()
	if w = l.byName[string(key)]; w != nil {
		return w
	}
	name := string(key)
	if len(l.byName) >= st.MaxWorkloads {
		// Too many workloads: a misconfigured workload label must not blow
		// up the limiter itself.
		name = OtherWorkload
		if w = l.byName[name]; w != nil {
			return w
		}
	}
	w = &Workload{Name: name}
	if n := len(l.free); n > 0 {
		w.id = l.free[n-1]
		l.free = l.free[:n-1]
		l.byID[w.id] = w
	} else {
		w.id = uint32(len(l.byID))
		l.byID = append(l.byID, w)
	}
	l.byName[name] = w
	return w
}

func (l *Limiter) workloadByID(id uint32) *Workload {
	l.wlMu.RLock()
	defer l.wlMu.RUnlock()
	return l.byID[id]
}

// retire forgets the idle workloads, so that max_workloads counts the live
// ones and a workload that comes back starts afresh. Their ids are reused:
// that is safe because no entry carries them, and none can be stored while
// retire runs, as Admit stores entries holding a shard lock and retire
// holds all of them.
func (l *Limiter) retire(now, window uint32) {
	found := false
	l.wlMu.RLock()
	for _, w := range l.byID {
		if w == nil {
			continue
		}
		w.endSaturation(now, window)
		if w.idle(now, window) {
			found = true
		}
	}
	l.wlMu.RUnlock()
	if !found {
		// The common case: no need to stop the traffic.
		return
	}
	l.lockAll()
	defer l.unlockAll()
	l.wlMu.Lock()
	defer l.wlMu.Unlock()
	for id, w := range l.byID {
		// Checked again: a series may have arrived since.
		if w != nil && w.idle(now, window) {
			delete(l.byName, w.Name)
			l.byID[id] = nil
			l.free = append(l.free, uint32(id))
		}
	}
}

// lockAll takes every shard lock, series shards first, the order in which
// Admit takes one of each.
func (l *Limiter) lockAll() {
	for i := range l.shards {
		l.shards[i].mu.Lock()
	}
	for i := range l.insts {
		l.insts[i].mu.Lock()
	}
}

func (l *Limiter) unlockAll() {
	for i := range l.insts {
		l.insts[i].mu.Unlock()
	}
	for i := range l.shards {
		l.shards[i].mu.Unlock()
	}
}
