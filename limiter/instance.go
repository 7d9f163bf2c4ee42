package limiter

import (
	"sync"

	"github.com/cardinal-gateway/cardinal/internal/u64table"
	"github.com/cardinal-gateway/cardinal/wire"
)

// maxInstanceSeries is how many new series one admitted instance admits
// past the cap. No classic histogram has a thousand buckets: an instance
// with more has a label of unbounded values in le or quantile, and its
// further series are decided by the cap alone, so that it cannot carry a
// workload arbitrarily far past its cap.
const maxInstanceSeries = 1024

// instShard holds the entries of the histogram and summary instances that
// hash to it. Its lock is taken inside a series shard's, never the other
// way round.
type instShard struct {
	mu sync.Mutex
	m  u64table.Table[instEntry]
	_  [48]byte // 128 bytes: shards on separate cache lines
}

// instEntry is the decision on one instance, refreshed by each new series
// of it.
type instEntry struct {
	seen uint32 // seconds since the epoch
	id   uint32 // workload id
	// n counts the new series the instance admitted.
	n      uint16
	folded bool
}

// appendInstanceKey appends to dst the key of the histogram or summary
// instance that ls belongs to, and reports whether it belongs to one: ls
// has an le or quantile label, or its name ends in _bucket, _sum or
// _count. The key is the name without that suffix and every other label
// but le and quantile, each followed by 0xff, so that x_bucket{le=...},
// x_sum and x_count of a histogram, and x{quantile=...}, x_sum and x_count
// of a summary, share it.
func appendInstanceKey(dst []byte, ls []wire.Label) ([]byte, bool) {
	var name []byte
	member := false
	for i := range ls {
		switch string(ls[i].Name) {
		case "__name__":
			name = ls[i].Value
		case "le", "quantile":
			member = true
		}
	}
	name, stripped := trimInstanceSuffix(name)
	if !member && !stripped {
		return dst, false
	}
	dst = append(dst, name...)
	dst = append(dst, 0xff)
	for i := range ls {
		switch string(ls[i].Name) {
		case "__name__", "le", "quantile":
			continue
		}
		dst = append(dst, ls[i].Name...)
		dst = append(dst, 0xff)
		dst = append(dst, ls[i].Value...)
		dst = append(dst, 0xff)
	}
	return dst, true
}

// trimInstanceSuffix removes _bucket, _sum or _count from the end of a
// metric name and reports whether it did. It runs for every new series:
// the last byte rules out most names at once.
func trimInstanceSuffix(name []byte) ([]byte, bool) {
	n := len(name)
	if n == 0 || (name[n-1] != 't' && name[n-1] != 'm') {
		return name, false
	}
	for _, suffix := range [...]string{"_bucket", "_sum", "_count"} {
		if n >= len(suffix) && string(name[n-len(suffix):]) == suffix {
			return name[:n-len(suffix)], true
		}
	}
	return name, false
}

// decideInstance decides for a new series of workload w that belongs to the
// instance inst. The caller holds the series' shard lock; the instance's
// lock makes the first series of an instance decide for it and every later
// one see that decision, whichever shard and request they come in.
func (l *Limiter) decideInstance(w *Workload, inst uint64, limit, maxTracked int, now, window uint32) outcome {
	is := &l.insts[inst%numShards]
	is.mu.Lock()
	defer is.mu.Unlock()
	p := is.m.Ptr(inst)
	if p != nil && p.id != w.id {
		// Only when le or quantile is a workload label (or two instance
		// keys' hashes collide): the instance spans workloads, and each
		// series is decided alone.
		return w.decideAlone(limit, maxTracked, now, window, 1)
	}
	if p == nil {
		// The first new series of the instance decides for all of them.
		o := w.decideAlone(limit, maxTracked, now, window, 2)
		switch o {
		case admitted:
			is.m.Put(inst, instEntry{seen: now, id: w.id, n: 1})
		case foldedTracked:
			is.m.Put(inst, instEntry{seen: now, id: w.id, folded: true})
			w.foldedInstances.Add(1)
		default:
			// Saturated: no room to remember the decision. The
			// instance's series all fold as long as the saturation
			// lasts, which their own arrivals prolong.
			return o
		}
		w.instances.Add(1)
		return o
	}
	if int32(now-p.seen) > 0 {
		p.seen = now
	}
	switch {
	case p.folded:
		return w.fold(maxTracked, now, window, 1)
	case p.n < maxInstanceSeries:
		// Admitted past the cap if need be: that is the point.
		p.n++
		w.active.Add(1)
		return admitted
	default:
		return w.decideAlone(limit, maxTracked, now, window, 1)
	}
}
