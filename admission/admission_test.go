package admission

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestAcquireBounds(t *testing.T) {
	c := New(Options{MaxRequests: 2, MaxBytes: 100})
	if r := c.Acquire(60); r != Admitted {
		t.Fatalf("first: %v", r)
	}
	if r := c.Acquire(60); r != TooManyBytes {
		t.Fatalf("second, over the bytes: %v, want TooManyBytes", r)
	}
	if r := c.Acquire(30); r != Admitted {
		t.Fatalf("third: %v", r)
	}
	if r := c.Acquire(1); r != TooManyRequests {
		t.Fatalf("fourth, over the count: %v, want TooManyRequests", r)
	}
	if n, b := c.InFlight(); n != 2 || b != 90 {
		t.Fatalf("in flight %d requests, %d bytes; want 2, 90", n, b)
	}
	if c.Resize(30, 50) {
		t.Fatal("a resize past the bound was allowed")
	}
	if !c.Resize(30, 10) {
		t.Fatal("a shrink was refused")
	}
	c.Release(60)
	c.Release(10)
	if n, b := c.InFlight(); n != 0 || b != 0 {
		t.Fatalf("after release: %d, %d", n, b)
	}
	// A lone request larger than the bound still makes progress.
	if r := c.Acquire(500); r != Admitted {
		t.Fatalf("lone large request: %v", r)
	}
	if !c.Resize(500, 700) {
		t.Fatal("a lone request's resize was refused")
	}
	c.Release(700)
}

func TestHeapLimitSheds(t *testing.T) {
	c := New(Options{HeapLimit: 1})
	runtime.GC() // the live heap is known after a collection
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { c.Watch(ctx, time.Millisecond) })
	deadline := time.Now().Add(5 * time.Second)
	for c.Heap() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
	if r := c.Acquire(1); r != HeapFull {
		t.Fatalf("with the heap over the limit: %v, want HeapFull", r)
	}
}

func TestConcurrentAccountingBalances(t *testing.T) {
	c := New(Options{MaxRequests: 8, MaxBytes: 1000})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 2000 {
				if c.Acquire(100) == Admitted {
					if c.Resize(100, 120) {
						c.Release(120)
					} else {
						c.Release(100)
					}
				}
			}
		})
	}
	wg.Wait()
	if n, b := c.InFlight(); n != 0 || b != 0 {
		t.Fatalf("after all releases: %d requests, %d bytes in flight", n, b)
	}
}

func TestAcquireAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	c := New(Options{MaxRequests: 8, MaxBytes: 1000})
	if n := testing.AllocsPerRun(100, func() {
		if c.Acquire(10) == Admitted {
			c.Release(10)
		}
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func TestDetectLimit(t *testing.T) {
	dir := t.TempDir()
	f := func(content string, want int64) {
		t.Helper()
		p := filepath.Join(dir, "limit")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, _ := detectLimit([]string{filepath.Join(dir, "missing"), p}); got != want {
			t.Errorf("%q: %d, want %d", content, got, want)
		}
	}
	f("536870912\n", 512<<20)
	f("max\n", 0)
	f("9223372036854771712\n", 0) // cgroup v1's unlimited
	f("garbage", 0)
}

func TestBudgetFor(t *testing.T) {
	b := BudgetFor(512 << 20)
	if b.GoMemLimit >= 512<<20 || uint64(b.GoMemLimit) <= b.HeapLimit || b.MaxBytes >= int64(b.HeapLimit) {
		t.Fatalf("budget %+v: want GoMemLimit < limit, heap shedding below it, in-flight bytes below that", b)
	}
}
