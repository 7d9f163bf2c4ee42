// Package admission bounds the work Cardinal holds at once, so that a load
// above its capacity is shed with 503 instead of absorbed into memory that
// grows until the process is killed.
//
// A Controller admits a request before its body is read, against three
// bounds: the number of requests in flight, the bytes they hold (reserved
// from what each announces, then corrected once the decompressed size is
// known) and the heap as a whole, which includes the merger's state. The
// bounds derive from the memory limit when one is known. Acquire and
// Release allocate nothing.
package admission

import (
	"context"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// Options configure a Controller.
type Options struct {
	// MaxRequests bounds the requests in flight; 0 means no bound.
	MaxRequests int
	// MaxBytes bounds the bytes the requests in flight hold (see Cost);
	// 0 means no bound.
	MaxBytes int64
	// HeapLimit: while the live heap is above it, new requests are shed;
	// 0 means no heap check.
	HeapLimit uint64
}

// Reason says why a request was shed.
type Reason uint8

// Reasons.
const (
	Admitted Reason = iota
	TooManyRequests
	TooManyBytes
	HeapFull
)

func (r Reason) String() string {
	switch r {
	case TooManyRequests:
		return "too many requests in flight"
	case TooManyBytes:
		return "too many bytes in flight"
	case HeapFull:
		return "memory near its limit"
	}
	return "admitted"
}

// Controller admits requests. It is safe for concurrent use.
type Controller struct {
	opts     Options
	requests atomic.Int64
	bytes    atomic.Int64
	heap     atomic.Uint64 // last sampled live heap bytes
}

// New returns a Controller; call Watch to sample the heap.
func New(opts Options) *Controller { return &Controller{opts: opts} }

// Options returns the bounds in force.
func (c *Controller) Options() Options { return c.opts }

// Cost is what a request holds while it is processed, from the sizes of its
// body: the compressed body, the decompressed one, the decoded request that
// points into it (label and sample headers), and the encoded and
// compressed body forwarded.
func Cost(compressed, decompressed int) int64 {
	return int64(compressed) + 3*int64(decompressed)
}

// DecodedCost is Cost once the request is decoded and its model's size is
// known: the compressed body, the decompressed one, the model, and the
// encoded body forwarded, about the larger of the decompressed body (1.0
// forwarded as 1.0) and the model (2.0, whose interned labels 1.0 spells
// out).
func DecodedCost(compressed, decompressed, model int) int64 {
	return int64(compressed) + int64(decompressed) + int64(model) + int64(max(decompressed, model))
}

// Acquire admits a request that is expected to hold cost bytes, or says
// why not. An admitted request must call Release with the same cost (or
// what Resize last set). The first request is always admitted when nothing
// is in flight, so that a lone request larger than the byte bound still
// makes progress.
func (c *Controller) Acquire(cost int64) Reason {
	if c.opts.HeapLimit > 0 && c.heap.Load() > c.opts.HeapLimit {
		return HeapFull
	}
	n := c.requests.Add(1)
	if c.opts.MaxRequests > 0 && n > int64(c.opts.MaxRequests) {
		c.requests.Add(-1)
		return TooManyRequests
	}
	b := c.bytes.Add(cost)
	if c.opts.MaxBytes > 0 && b > c.opts.MaxBytes && b != cost {
		c.bytes.Add(-cost)
		c.requests.Add(-1)
		return TooManyBytes
	}
	return Admitted
}

// Resize corrects an admitted request's reservation from old to cost once
// its real size is known. It reports false, and keeps old reserved, when
// the growth does not fit; the caller then sheds the request (and still
// releases old).
func (c *Controller) Resize(old, cost int64) bool {
	delta := cost - old
	b := c.bytes.Add(delta)
	if delta > 0 && c.opts.MaxBytes > 0 && b > c.opts.MaxBytes && b != cost {
		c.bytes.Add(-delta)
		return false
	}
	return true
}

// Release ends an admitted request holding cost bytes.
func (c *Controller) Release(cost int64) {
	c.bytes.Add(-cost)
	c.requests.Add(-1)
}

// InFlight returns the requests and bytes in flight.
func (c *Controller) InFlight() (requests, bytes int64) {
	return c.requests.Load(), c.bytes.Load()
}

// Heap returns the live heap last sampled.
func (c *Controller) Heap() uint64 { return c.heap.Load() }

// heapMetric is the heap that the last collection found live: the
// merger's and the limiter's state and the requests in flight, without the
// garbage that accumulates between collections (shedding on it would shed
// for memory the collector is about to return).
const heapMetric = "/gc/heap/live:bytes"

// Watch samples the heap every interval until ctx ends. Reading it costs a
// few microseconds, so it is sampled, not read per request.
func (c *Controller) Watch(ctx context.Context, interval time.Duration) {
	if c.opts.HeapLimit == 0 {
		return
	}
	sample := []metrics.Sample{{Name: heapMetric}}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			c.heap.Store(sample[0].Value.Uint64())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Budget is what a memory limit allows.
type Budget struct {
	// GoMemLimit is the Go runtime's soft memory limit: the limit less the
	// headroom for what the runtime does not count (stacks, the binary,
	// fragmentation returned late).
	GoMemLimit int64
	// HeapLimit is the live heap above which new requests are shed.
	HeapLimit uint64
	// MaxBytes is the byte bound of the requests in flight.
	MaxBytes int64
}

// BudgetFor splits a memory limit (bytes, > 0): the Go runtime gets 80 %
// of it, new requests are shed when live objects pass 70 %, and requests
// in flight may hold 30 %: what is left is the merger's and the
// limiter's state, the pools and the collector's headroom.
func BudgetFor(limit int64) Budget {
	return Budget{
		GoMemLimit: limit / 10 * 8,
		HeapLimit:  uint64(limit / 10 * 7),
		MaxBytes:   limit / 10 * 3,
	}
}

// DefaultMaxRequests is the bound on requests in flight when none is
// configured: enough to keep every core busy while as many wait on the
// downstream, not so many that their memory adds up (a Prometheus with its
// default max_shards sends up to 50 at once; the rest is shed with 503 and
// retried).
func DefaultMaxRequests() int { return max(16, 8*runtime.GOMAXPROCS(0)) }
