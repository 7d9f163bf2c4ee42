// Package limiter caps the active series of each workload.
//
// A workload is the values of the configured workload labels joined by "/"
// (a missing label contributes an empty value; a series with none of them
// belongs to the workload "_unknown"). A series is active while it has had
// a sample within the window; the window slides per series, so there is no
// reset cliff. A series counts until the sweeper has seen it expire.
//
// Over the cap, a new series is folded: the caller rewrites its labels to
// the workload's overflow series (workload labels, __name__, le, quantile
// and cardinal_overflow="true") and the merge package sums it there, so
// totals per workload stay right. A series that was folded stays folded
// while it is active, even if room opens up, because moving it back would
// count its cumulative value twice. Series already admitted keep flowing
// when a cap is lowered.
//
// The series of one histogram or summary instance (x_bucket{le=...}, x_sum
// and x_count, or x{quantile=...}, x_sum and x_count, with the same other
// labels) are admitted or folded together, since a histogram split between
// its own series and the overflow series breaks histogram_quantile. The
// first new series of an instance decides by the cap; the later ones take
// its decision, in whatever request they come. An instance's decision
// lasts a window after its last new series: a member arriving later than
// that is decided alone. The cap is exact and conservative except for
// that: a workload may exceed its cap by the remaining series of the
// instances admitted under it (at most maxInstanceSeries-1 each). Series
// outside any instance never exceed it.
//
// Memory is bounded per workload. Admitted series cost an entry each, and
// are bounded by the cap. Folded series and folded instances are tracked
// one by one up to Settings.MaxTrackedFolded entries per workload; past
// that the workload is saturated: every new series it does not know is
// folded untracked, whatever the cap, and the saturation lasts until a
// whole window passes without such a fold. A folded series thus stays
// folded while it is active, tracked or not. The report then counts the
// tracked folded series only and says the workload is saturated.
//
// A workload with no entries left and no saturation is forgotten by the
// sweeper, so max_workloads counts live workloads, not all ever seen.
//
// Admitting a known series allocates nothing and takes one map lookup; only
// new series compute an instance key. A series entry is a map entry of 16
// bytes (about 38 bytes of heap with the map's own, see
// BenchmarkMemoryPerSeries), an instance entry one of 20 bytes (about 56).
// A workload thus holds at most MaxTrackedFolded folded entries, about
// 150 to 225 KiB at the default, besides its admitted series.
package limiter

import (
	"cmp"
	"context"
	"hash/maphash"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cardinal-gateway/cardinal/internal/bytesconv"
	"github.com/cardinal-gateway/cardinal/internal/u64table"
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
	// DefaultMaxTrackedFolded is Settings.MaxTrackedFolded when unset.
	DefaultMaxTrackedFolded = 4096
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
	// MaxTrackedFolded bounds the folded series and folded instances a
	// workload tracks one by one; past it the workload is saturated (see
	// the package doc). 0 means DefaultMaxTrackedFolded.
	MaxTrackedFolded int
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
	insts  [numShards]instShard
	seed   maphash.Seed // of the instance keys

	wlMu   sync.RWMutex
	byName map[string]*Workload
	byID   []*Workload // nil where a retired workload was
	free   []uint32    // ids of retired workloads, for reuse
}

type shard struct {
	mu sync.Mutex
	// series maps the output hash to lastSeen (seconds since epoch, low 32
	// bits), the folded bit (32) and the workload id (from bit 33). An
	// open-addressing table: 24 bytes per series where a Go map takes 38,
	// and last-seen is updated in place.
	series u64table.Table[uint64]
	_      [48]byte // keep shards on separate cache lines
}

// New returns a Limiter; call Run to expire series.
func New(opts Options) *Limiter {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l := &Limiter{logger: opts.Logger, now: opts.Now, api: map[string]int{}, byName: map[string]*Workload{}, seed: maphash.MakeSeed()}
	l.epoch = l.now().Add(-time.Second)
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
	if s.MaxTrackedFolded <= 0 {
		s.MaxTrackedFolded = DefaultMaxTrackedFolded
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
	l.lockAll()
	l.wlMu.Lock()
	l.settings.Store(s)
	for i := range l.shards {
		l.shards[i].series.Clear()
		l.insts[i].m.Clear()
	}
	l.byName = map[string]*Workload{}
	l.byID = nil
	l.free = nil
	l.wlMu.Unlock()
	l.unlockAll()
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
// ls, carrying n samples. keyBuf is scratch space for the workload and
// instance keys; the grown buffer is returned, holding the workload key of
// a new series. Admitting a known series allocates nothing, and neither
// does a new one once the maps and keyBuf have grown to the traffic.
func (l *Limiter) Admit(hash uint64, ls []wire.Label, n int, now uint32, keyBuf []byte) (Decision, []byte) {
	sh := &l.shards[hash%numShards]
	sh.mu.Lock()
	// Read under the shard lock: resetWith swaps settings holding them all.
	st := l.settings.Load()
	if p := sh.series.Ptr(hash); p != nil {
		// Fast path: a series the limiter knows.
		v := *p
		if uint32(v) != now {
			*p = v&^0xffffffff | uint64(now)
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
	// Slow path: a new series. The instance key goes after the workload
	// key in keyBuf, which is handed back holding the workload key only.
	keyBuf = appendKey(keyBuf[:0], ls, st.WorkloadLabels)
	keyLen := len(keyBuf)
	keyBuf, inInstance := appendInstanceKey(keyBuf, ls)
	var inst uint64
	if inInstance {
		inst = maphash.Bytes(l.seed, keyBuf[keyLen:])
	}
	keyBuf = keyBuf[:keyLen]
	w := l.workload(keyBuf, st)
	limit := l.Limit(w.Name)
	window := uint32(st.Window / time.Second)
	var o outcome
	if inInstance {
		o = l.decideInstance(w, inst, limit, st.MaxTrackedFolded, now, window)
	} else {
		o = w.decideAlone(limit, st.MaxTrackedFolded, now, window, 1)
	}
	v := uint64(now) | uint64(w.id)<<idShift
	switch o {
	case admitted:
		sh.series.Put(hash, v)
		sh.mu.Unlock()
		return Admit, keyBuf
	case foldedTracked:
		sh.series.Put(hash, v|foldedBit)
		w.folded.Add(1)
		w.limitReached.Add(1)
	default:
		// Not recorded: the workload's saturation, which this fold
		// prolongs, keeps the series folded.
		w.untrackedFolds.Add(1)
	}
	sh.mu.Unlock()
	w.foldedSamples.Add(uint64(n))
	if st.DryRun {
		return Admit, keyBuf
	}
	return Fold, keyBuf
}

// AdmitKnown is Admit for a series the caller believes the limiter knows,
// without its labels: ok is false, and nothing is recorded, when the
// limiter does not know it (it expired, or the accounting was reset).
func (l *Limiter) AdmitKnown(hash uint64, n int, now uint32) (d Decision, ok bool) {
	sh := &l.shards[hash%numShards]
	sh.mu.Lock()
	p := sh.series.Ptr(hash)
	if p == nil {
		sh.mu.Unlock()
		return Admit, false
	}
	v := *p
	if uint32(v) != now {
		*p = v&^0xffffffff | uint64(now)
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

// AppendOverflowLabels appends to dst the labels of the overflow series that
// a folded series with labels ls goes to: __name__, le and quantile when
// present (so that the buckets and quantiles of folded histograms and
// summaries stay apart), the workload labels and cardinal_overflow="true",
// sorted by name. The values alias ls.
func (l *Limiter) AppendOverflowLabels(dst []wire.Label, ls []wire.Label) []wire.Label {
	start := len(dst)
	for _, lb := range ls {
		if string(lb.Name) == "__name__" || string(lb.Name) == "le" || string(lb.Name) == "quantile" || slices.Contains(l.settings.Load().WorkloadLabels, string(lb.Name)) {
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

// Sweep expires the series and instance entries not seen within the
// window, ends the saturations older than a window, and forgets the
// workloads left idle.
func (l *Limiter) Sweep() {
	now := l.nowSec()
	window := uint32(l.settings.Load().Window / time.Second)
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		sh.series.Sweep(func(_, v uint64) bool {
			if fresh(now, uint32(v), window) {
				return true
			}
			w := l.workloadByID(uint32(v >> idShift))
			if v&foldedBit != 0 {
				w.folded.Add(-1)
				w.tracked.Add(-1)
			} else {
				w.active.Add(-1)
			}
			return false
		})
		sh.mu.Unlock()
	}
	for i := range l.insts {
		is := &l.insts[i]
		is.mu.Lock()
		is.m.Sweep(func(_ uint64, e instEntry) bool {
			if fresh(now, e.seen, window) {
				return true
			}
			w := l.workloadByID(e.id)
			w.instances.Add(-1)
			if e.folded {
				w.foldedInstances.Add(-1)
				w.tracked.Add(-1)
			}
			return false
		})
		is.mu.Unlock()
	}
	l.retire(now, window)
}

// Report is one workload's line of GET /api/v1/cardinality. The fields
// added after the first five are omitted when zero, so a workload without
// histograms folded and without saturation reads as it always did.
type Report struct {
	Workload string `json:"workload"`
	// ActiveSeries may exceed Limit by the rest of the instances admitted
	// under it (see the package doc).
	ActiveSeries int64 `json:"active_series"`
	Limit        int   `json:"limit"`
	// DroppedSeries are the folded series tracked one by one: all the
	// active folded series unless Saturated, a lower bound if it is.
	DroppedSeries  int64  `json:"dropped_series"`
	DroppedSamples uint64 `json:"dropped_samples"`
	// FoldedInstances are the histogram and summary instances tracked as
	// folded.
	FoldedInstances int64 `json:"folded_instances,omitempty"`
	// Saturated: the workload tracks Settings.MaxTrackedFolded folded
	// entries, or did within the window, and folds every new series
	// untracked.
	Saturated bool `json:"saturated,omitempty"`
	// UntrackedFolds counts the new series folded untracked, once per
	// arrival: a series folded so comes back as new in every request.
	UntrackedFolds uint64 `json:"untracked_folds,omitempty"`
}

// Cardinality returns the workloads, largest first (active plus folded
// series), at most top of them (all when top <= 0).
func (l *Limiter) Cardinality(top int) []Report {
	now := l.nowSec()
	window := uint32(l.settings.Load().Window / time.Second)
	l.wlMu.RLock()
	out := make([]Report, 0, len(l.byName))
	for _, w := range l.byID {
		if w == nil {
			continue
		}
		out = append(out, Report{
			Workload:        w.Name,
			ActiveSeries:    w.active.Load(),
			Limit:           l.Limit(w.Name),
			DroppedSeries:   w.folded.Load(),
			DroppedSamples:  w.foldedSamples.Load(),
			FoldedInstances: w.foldedInstances.Load(),
			Saturated:       w.saturated(now, window),
			UntrackedFolds:  w.untrackedFolds.Load(),
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
