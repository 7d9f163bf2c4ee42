package freelist

import (
	"sync"
	"testing"
)

func TestBoundedReuse(t *testing.T) {
	made := 0
	l := New(2, func() *int { made++; v := made; return &v })
	a, b, c := l.Get(), l.Get(), l.Get()
	if made != 3 {
		t.Fatalf("made %d, want 3", made)
	}
	l.Put(a)
	l.Put(b)
	l.Put(c) // over the bound: dropped
	if l.Idle() != 2 {
		t.Fatalf("idle %d, want 2", l.Idle())
	}
	if x := l.Get(); x != b {
		t.Fatalf("Get returned %v, want the last one put (%v)", *x, *b)
	}
	l.Get()
	l.Get()
	if made != 4 {
		t.Fatalf("made %d, want 4: the list was empty", made)
	}
}

func TestConcurrentUse(t *testing.T) {
	l := New(4, func() *[]byte { b := make([]byte, 8); return &b })
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				x := l.Get()
				(*x)[0]++
				l.Put(x)
			}
		})
	}
	wg.Wait()
	if l.Idle() > 4 {
		t.Fatalf("idle %d over the bound", l.Idle())
	}
	if n := testing.AllocsPerRun(100, func() { l.Put(l.Get()) }); n != 0 {
		t.Fatalf("Get/Put allocate %v times", n)
	}
}
