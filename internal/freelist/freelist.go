// Package freelist keeps reusable per-request workspaces.
//
// Unlike sync.Pool it is bounded and deterministic: it holds at most Max
// idle objects and never drops them at garbage collection. sync.Pool, under
// net/http's goroutine-per-request scheduling, was seen holding several
// times more multi-megabyte workspaces than requests in flight, which is
// what a sidecar's memory budget cannot afford.
package freelist

import "sync"

// List is a bounded stack of idle objects. It is safe for concurrent use.
type List[T any] struct {
	mu    sync.Mutex
	items []*T
	max   int
	newFn func() *T
}

// New returns a List that keeps at most max idle objects and makes new ones
// with newFn.
func New[T any](max int, newFn func() *T) *List[T] {
	return &List[T]{items: make([]*T, 0, max), max: max, newFn: newFn}
}

// Get returns an idle object, or a new one.
func (l *List[T]) Get() *T {
	l.mu.Lock()
	if n := len(l.items); n > 0 {
		x := l.items[n-1]
		l.items[n-1] = nil
		l.items = l.items[:n-1]
		l.mu.Unlock()
		return x
	}
	l.mu.Unlock()
	return l.newFn()
}

// Put returns x for reuse; beyond Max idle objects it is left to the
// garbage collector.
func (l *List[T]) Put(x *T) {
	l.mu.Lock()
	if len(l.items) < l.max {
		l.items = append(l.items, x)
	}
	l.mu.Unlock()
}

// Idle returns the number of idle objects held.
func (l *List[T]) Idle() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.items)
}
