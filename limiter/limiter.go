// Package limiter caps the active series of each workload.
//
// A workload is the values of the configured workload labels joined by "/"
// (a missing label contributes an empty value; a series with none of them
// belongs to the workload "_unknown"). A series is active while it has had
// a sample within the window; the window slides per series, so there is no
// reset cliff. Counting is exact and conservative: a series counts until the
// sweeper has seen it expire, so a workload never has more active series
// admitted than its cap.
//
// Over the cap, a new series is folded: the caller rewrites its labels to
// the workload's overflow series (workload labels, __name__, le and
// cardinal_overflow="true") and the merge package sums it there, so totals
// per workload stay right. A series that was folded stays folded while it is
// active, even if room opens up, because moving it back would count its
// cumulative value twice. Series already admitted keep flowing when a cap is
// lowered.
//
// Admitting a known series allocates nothing. Tracking costs one map entry
// of 16 bytes of payload per series (see BenchmarkMemoryPerSeries).
package limiter

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cardinal-gateway/cardinal/internal/bytesconv"
	"github.com/cardinal-gateway/cardinal/wire"
)

// Names of the overflow series' marker label and of the fallback workloads.
const (
	OverflowLabel          = "cardinal_overflow"
	UnknownWorkload        = "_unknown"
	OtherWorkload          = "_other"
	overflowValue          = "true"
	numShards              = 128
	idShift                = 33
	foldedBit       uint64 = 1 << 32
)

// Settings are what a config reload may change.
type Settings struct {
	WorkloadLabels []string
	// Default cap; 0 means unlimited.
	Default int
	Window  time.Duration
	DryRun  bool
	// Overrides from the config file; admin API overrides win over them.
	Overrides    map[string]int
	MaxWorkloads int
}

// Enabled reports whether any workload is tracked at all.
func (s *Settings) Enabled() bool { return len(s.WorkloadLabels) > 0 }

// Options configure a Limiter.
type Options struct {
	Settings Settings
	Logger   *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Limiter tracks active series per workload. It is safe for concurrent use.
type Limiter struct {
	logger   *slog.Logger
	now      func() time.Time
	epoch    time.Time
	settings atomic.Pointer[Settings]

	apiMu sync.Mutex
	api   map[string]int                 // overrides set through the admin API
	eff   atomic.Pointer[map[string]int] // config overrides with the API's on top

	shards [numShards]shard

	wlMu   sync.RWMutex
	byName map[string]*Workload
	byID   []*Workload
}

type shard struct {
	mu sync.Mutex
	// series maps the output hash to lastSeen (seconds since epoch, low 32
	// bits), the folded bit (32) and the workload id (from bit 33).
	series map[uint64]uint64
	_      [40]byte
}

// Workload is the accounting of one workload.
type Workload struct {
	Name          string
	id            uint32
	active        atomic.Int64
	folded        atomic.Int64
	foldedSamples atomic.Uint64
	limitReached  atomic.Uint64
}

// New returns a Limiter; call Run to expire series.
func New(opts Options) *Limiter {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l := &Limiter{logger: opts.Logger, now: opts.Now, api: map[string]int{}, byName: map[string]*Workload{}}
	l.epoch = l.now().Add(-time.Second)
	for i := range l.shards {
		l.shards[i].series = map[uint64]uint64{}
	}
	l.SetSettings(opts.Settings)
	return l
}

// SetSettings swaps the settings in force. Changing the workload labels
// starts the accounting afresh; anything else keeps it.
func (l *Limiter) SetSettings(s Settings) {
	if s.Window <= 0 {
		s.Window = time.Hour
	}
	if s.MaxWorkloads <= 0 {
		s.MaxWorkloads = 10000
	}
	if old := l.settings.Load(); old != nil && !slices.Equal(old.WorkloadLabels, s.WorkloadLabels) {
		l.resetWith(&s)
	} else {
		l.settings.Store(&s)
	}
	l.apiMu.Lock()
	l.refreshEffective()
	l.apiMu.Unlock()
}

// Settings returns the settings in force.
func (l *Limiter) Settings() *Settings { return l.settings.Load() }

// resetWith swaps in settings with other workload labels and forgets all
// accounting, as one step: every shard lock is held, so no Admit can store
// a series under a workload id of the old accounting.
func (l *Limiter) resetWith(s *Settings) {
	for i := range l.shards {
		l.shards[i].mu.Lock()
	}
	l.wlMu.Lock()
	l.settings.Store(s)
	for i := range l.shards {
		clear(l.shards[i].series)
	}
	l.byName = map[string]*Workload{}
	l.byID = nil
	l.wlMu.Unlock()
	for i := range l.shards {
		l.shards[i].mu.Unlock()
	}
}

// refreshEffective recomputes the overrides in force. apiMu is held.
func (l *Limiter) refreshEffective() {
	eff := map[string]int{}
	for w, n := range l.settings.Load().Overrides {
		eff[w] = n
	}
	for w, n := range l.api {
		eff[w] = n
	}
	l.eff.Store(&eff)
}

// Limit returns the cap in force for a workload (0: unlimited).
func (l *Limiter) Limit(workload string) int {
	if n, ok := (*l.eff.Load())[workload]; ok {
		return n
	}
	return l.settings.Load().Default
}

// Decision is the limiter's verdict on one series.
type Decision uint8

// Decisions of Admit.
const (
	Admit Decision = iota
	Fold
)

// nowSec is the current time in seconds since the limiter's epoch.
func (l *Limiter) nowSec() uint32 {
	return uint32(l.now().Sub(l.epoch) / time.Second)
}

// Clock returns the time value that Admit expects; call it once per request.
func (l *Limiter) Clock() uint32 { return l.nowSec() }

// Admit decides for one output series, identified by the hash of its labels
// ls, carrying n samples. keyBuf is scratch space for the workload key; the
// grown buffer is returned. Admitting a known series allocates nothing.
func (l *Limiter) Admit(hash uint64, ls []wire.Label, n int, now uint32, keyBuf []byte) (Decision, []byte) {
	sh := &l.shards[hash%numShards]
	sh.mu.Lock()
	// Read under the shard lock: resetWith swaps settings holding them all.
	st := l.settings.Load()
	if v, ok := sh.series[hash]; ok {
		// Fast path: a series the limiter knows.
		if uint32(v) != now {
			sh.series[hash] = v&^0xffffffff | uint64(now)
		}
		if v&foldedBit == 0 {
			sh.mu.Unlock()
			return Admit, keyBuf
		}
		w := l.workloadByID(uint32(v >> idShift))
		sh.mu.Unlock()
		w.foldedSamples.Add(uint64(n))
		if st.DryRun {
			return Admit, keyBuf
		}
		return Fold, keyBuf
	}
	// Slow path: a new series.
	keyBuf = appendKey(keyBuf[:0], ls, st.WorkloadLabels)
	w := l.workload(keyBuf, st)
	limit := l.Limit(w.Name)
	v := uint64(now) | uint64(w.id)<<idShift
	decision := Admit
	if !w.reserve(limit) {
		v |= foldedBit
		w.folded.Add(1)
		w.limitReached.Add(1)
		w.foldedSamples.Add(uint64(n))
		if !st.DryRun {
			decision = Fold
		}
	}
	sh.series[hash] = v
	sh.mu.Unlock()
	return decision, keyBuf
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

// AdmitKnown is Admit for a series the caller believes the limiter knows,
// without its labels: ok is false, and nothing is recorded, when the
// limiter does not know it (it expired, or the accounting was reset).
func (l *Limiter) AdmitKnown(hash uint64, n int, now uint32) (d Decision, ok bool) {
	sh := &l.shards[hash%numShards]
	sh.mu.Lock()
	v, ok := sh.series[hash]
	if !ok {
		sh.mu.Unlock()
		return Admit, false
	}
	if uint32(v) != now {
		sh.series[hash] = v&^0xffffffff | uint64(now)
	}
	if v&foldedBit == 0 {
		sh.mu.Unlock()
		return Admit, true
	}
	w := l.workloadByID(uint32(v >> idShift))
	dryRun := l.settings.Load().DryRun
	sh.mu.Unlock()
	w.foldedSamples.Add(uint64(n))
	if dryRun {
		return Admit, true
	}
	return Fold, true
}

// appendKey appends the workload key of ls.
func appendKey(dst []byte, ls []wire.Label, workloadLabels []string) []byte {
	found := false
	for i, name := range workloadLabels {
		if i > 0 {
			dst = append(dst, '/')
		}
		if v := wire.GetLabel(ls, name); v != nil {
			dst = append(dst, v...)
			found = true
		}
	}
	if !found {
		return append(dst[:0], UnknownWorkload...)
	}
	return dst
}

// workload returns the accounting of the workload key, creating it.
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
	if len(l.byID) >= st.MaxWorkloads {
		// Too many workloads: a misconfigured workload label must not blow
		// up the limiter itself.
		name = OtherWorkload
		if w = l.byName[name]; w != nil {
			return w
		}
	}
	w = &Workload{Name: name, id: uint32(len(l.byID))}
	l.byID = append(l.byID, w)
	l.byName[name] = w
	return w
}

func (l *Limiter) workloadByID(id uint32) *Workload {
	l.wlMu.RLock()
	defer l.wlMu.RUnlock()
	return l.byID[id]
}

// AppendOverflowLabels appends to dst the labels of the overflow series that
// a folded series with labels ls goes to: __name__, le when present, the
// workload labels and cardinal_overflow="true", sorted by name. The values
// alias ls.
func (l *Limiter) AppendOverflowLabels(dst []wire.Label, ls []wire.Label) []wire.Label {
	start := len(dst)
	for _, lb := range ls {
		if string(lb.Name) == "__name__" || string(lb.Name) == "le" || slices.Contains(l.settings.Load().WorkloadLabels, string(lb.Name)) {
			dst = append(dst, lb)
		}
	}
	dst = append(dst, wire.Label{Name: bytesconv.Bytes(OverflowLabel), Value: bytesconv.Bytes(overflowValue)})
	// ls is sorted and cardinal_overflow cannot be in it twice; only the
	// appended marker may be out of place.
	slices.SortFunc(dst[start:], wire.CompareLabelNames)
	return dst
}

// Run expires series not seen within the window until ctx ends.
func (l *Limiter) Run(ctx context.Context) {
	for {
		interval := min(max(l.settings.Load().Window/60, time.Second), time.Minute)
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
		l.Sweep()
	}
}

// Sweep expires the series not seen within the window.
func (l *Limiter) Sweep() {
	now := l.nowSec()
	window := uint32(l.settings.Load().Window / time.Second)
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for h, v := range sh.series {
			// A request may have stamped the series after Sweep read the
			// clock: a negative age is fresh, not a wrapped-around old one.
			if int64(int32(now-uint32(v))) <= int64(window) {
				continue
			}
			delete(sh.series, h)
			w := l.workloadByID(uint32(v >> idShift))
			if v&foldedBit != 0 {
				w.folded.Add(-1)
			} else {
				w.active.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
}

// Report is one workload's line of GET /api/v1/cardinality.
type Report struct {
	Workload       string `json:"workload"`
	ActiveSeries   int64  `json:"active_series"`
	Limit          int    `json:"limit"`
	DroppedSeries  int64  `json:"dropped_series"`
	DroppedSamples uint64 `json:"dropped_samples"`
}

// Cardinality returns the workloads, largest first (active plus folded
// series), at most top of them (all when top <= 0).
func (l *Limiter) Cardinality(top int) []Report {
	l.wlMu.RLock()
	out := make([]Report, 0, len(l.byID))
	for _, w := range l.byID {
		out = append(out, Report{
			Workload:       w.Name,
			ActiveSeries:   w.active.Load(),
			Limit:          l.Limit(w.Name),
			DroppedSeries:  w.folded.Load(),
			DroppedSamples: w.foldedSamples.Load(),
		})
	}
	l.wlMu.RUnlock()
	slices.SortFunc(out, func(a, b Report) int {
		if c := cmp.Compare(b.ActiveSeries+b.DroppedSeries, a.ActiveSeries+a.DroppedSeries); c != 0 {
			return c
		}
		return cmp.Compare(a.Workload, b.Workload)
	})
	if top > 0 && len(out) > top {
		out = out[:top]
	}
	return out
}

// Overrides returns the caps in force per workload (config and API).
func (l *Limiter) Overrides() map[string]int {
	return maps.Clone(*l.eff.Load())
}

// APIOverrides returns the overrides set through the admin API.
func (l *Limiter) APIOverrides() map[string]int {
	l.apiMu.Lock()
	defer l.apiMu.Unlock()
	return maps.Clone(l.api)
}

// SetAPIOverride sets a workload's cap from the admin API; it applies to the
// next series admitted. persist is called with the new set of API overrides
// while the change is still private; if it fails, nothing changes.
func (l *Limiter) SetAPIOverride(workload string, n int, persist func(map[string]int) error) error {
	l.apiMu.Lock()
	defer l.apiMu.Unlock()
	next := maps.Clone(l.api)
	if next == nil {
		next = map[string]int{}
	}
	next[workload] = n
	if persist != nil {
		if err := persist(next); err != nil {
			return err
		}
	}
	l.api = next
	l.refreshEffective()
	return nil
}

// DeleteAPIOverride removes a workload's API override; it reports whether
// there was one. A config override of the workload, if any, applies again.
func (l *Limiter) DeleteAPIOverride(workload string, persist func(map[string]int) error) (bool, error) {
	l.apiMu.Lock()
	defer l.apiMu.Unlock()
	if _, ok := l.api[workload]; !ok {
		return false, nil
	}
	next := maps.Clone(l.api)
	delete(next, workload)
	if persist != nil {
		if err := persist(next); err != nil {
			return true, err
		}
	}
	l.api = next
	l.refreshEffective()
	return true, nil
}

// LoadAPIOverrides replaces the API overrides, e.g. from the state file at
// start.
func (l *Limiter) LoadAPIOverrides(m map[string]int) {
	l.apiMu.Lock()
	defer l.apiMu.Unlock()
	l.api = maps.Clone(m)
	if l.api == nil {
		l.api = map[string]int{}
	}
	l.refreshEffective()
}
