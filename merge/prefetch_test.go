package merge

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/wire"
)

// TestPrefetchChangesNothing: a merger that prefetches before every
// request decides and emits exactly what its twin that never does decides
// and emits, for inputs that collide, pass through, or are unknown.
func TestPrefetchChangesNothing(t *testing.T) {
	a, clock, sa := newTestMerger(t, Rules{})
	b, _, sb := newTestMerger(t, Rules{})
	b.now = a.now
	rng := rand.New(rand.NewPCG(7, 8))
	var order []int32
	for step := range 20 {
		clock.Add(15 * time.Second)
		var ins, outs []uint64
		type routed struct {
			in, out uint64
			orig    []wire.Label
			s       wire.Series
		}
		var reqs []routed
		for range 300 {
			// 60 outputs, some with one input (pod kept), some with many.
			name := fmt.Sprintf("m%d", rng.IntN(60))
			pod := fmt.Sprintf("p%d", rng.IntN(4))
			orig := lbls("__name__", name, "pod", pod)
			out := lbls("__name__", name)
			if name < "m3" {
				out = orig
			}
			in, _ := wire.HashLabels(nil, orig)
			oh, _ := wire.HashLabels(nil, out)
			ts := clock.Now().UnixMilli()
			reqs = append(reqs, routed{in, oh, orig, wire.Series{Labels: out, Samples: []wire.Sample{{Value: float64(step), Timestamp: ts}}}})
			ins, outs = append(ins, in, rng.Uint64()), append(outs, oh, rng.Uint64())
		}
		order, _ = a.Prefetch(ins, outs, order)
		tka, tkb := a.Begin(), b.Begin()
		for _, r := range reqs {
			sa, sb := r.s, r.s
			sa.Samples, sb.Samples = slices.Clone(r.s.Samples), slices.Clone(r.s.Samples)
			da := a.Route(tka, r.in, r.out, r.orig, &sa, clock.Now().UnixMilli(), false)
			db := b.Route(tkb, r.in, r.out, r.orig, &sb, clock.Now().UnixMilli(), false)
			if da != db {
				t.Fatalf("step %d: the prefetching merger decided %v, its twin %v", step, da, db)
			}
		}
		a.End(tka)
		b.End(tkb)
		a.Flush(context.Background(), sa.deliver, false)
		b.Flush(context.Background(), sb.deliver, false)
	}
	ga, gb := sa.all(), sb.all()
	if len(ga) == 0 || len(ga) != len(gb) {
		t.Fatalf("emitted %d series, the twin %d", len(ga), len(gb))
	}
	// The flush walks shards' maps in no set order.
	key := func(a, b prompb.TimeSeries) int { return strings.Compare(a.String(), b.String()) }
	slices.SortFunc(ga, key)
	slices.SortFunc(gb, key)
	for i := range ga {
		if ga[i].String() != gb[i].String() {
			t.Fatalf("emission %d: %v, the twin %v", i, ga[i], gb[i])
		}
	}
}

// TestSortByLayer: the counting sort orders entries as a stable sort by
// layer does, sorted input included.
func TestSortByLayer(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	var f flusher
	for trial := range 200 {
		f.entries = f.entries[:0]
		n := rng.IntN(300)
		for i := range n {
			layer := rng.IntN(1 + trial%5)
			if trial%7 == 0 {
				layer = i / 100 // already sorted
			}
			f.entries = append(f.entries, entry{layer: layer, p: point{ts: int64(i)}})
		}
		want := slices.Clone(f.entries)
		slices.SortStableFunc(want, func(a, b entry) int { return cmp.Compare(a.layer, b.layer) })
		f.sortByLayer()
		if !slices.EqualFunc(f.entries, want, func(a, b entry) bool { return a.layer == b.layer && a.p.ts == b.p.ts }) {
			t.Fatalf("trial %d: sorted differently from a stable sort", trial)
		}
	}
}
