package gateway

import (
	"context"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/config"
)

// The route cache must never outlive the rules that made its routes: after
// a reload, collapsed inputs are relabeled with the new rules.
func TestRouteCacheFollowsReload(t *testing.T) {
	sender := &recordingSender{keep: true}
	g, _ := newTestGateway(t, `
downstream: {url: "http://127.0.0.1:1/"}
merge: {flush_interval: 1h}
relabel_configs:
  - {action: labeldrop, regex: pod}
`, sender)
	req := func(ts int64) *prompb.WriteRequest {
		a := series("req_total", "app", "a", "pod", "p1", "zone", "z1")
		b := series("req_total", "app", "a", "pod", "p2", "zone", "z2")
		a.Samples[0].Timestamp, b.Samples[0].Timestamp = ts, ts
		return &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{a, b}}
	}
	// zone differs: no collision, both pass through; nothing is cached.
	if res, err := g.Process(context.Background(), decode(t, req(1000))); err != nil || res.Forwarded != 2 {
		t.Fatalf("res %+v, err %v", res, err)
	}
	cfg, err := config.Parse([]byte(`
downstream: {url: "http://127.0.0.1:1/"}
merge: {flush_interval: 1h}
relabel_configs:
  - {action: labeldrop, regex: pod|zone}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	// Now both collapse; the second is absorbed and cached.
	if res, _ := g.Process(context.Background(), decode(t, req(2000))); res.Merged != 1 {
		t.Fatalf("after the reload: %+v, want one merged", res)
	}
	if g.routes.len() != 1 {
		t.Fatalf("route cache holds %d entries, want 1", g.routes.len())
	}
	// Back to the first rules: the cached route (to the collapsed output)
	// must not be used.
	cfg2, err := config.Parse([]byte(`
downstream: {url: "http://127.0.0.1:1/"}
merge: {flush_interval: 1h}
relabel_configs:
  - {action: labeldrop, regex: pod}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Apply(cfg2); err != nil {
		t.Fatal(err)
	}
	if g.routes.len() != 0 {
		t.Fatalf("a reload left %d routes", g.routes.len())
	}
	res, err := g.Process(context.Background(), decode(t, req(3000)))
	if err != nil {
		t.Fatal(err)
	}
	// The zone=z2 input was merged under the second rules' output; under
	// these rules it maps to {app=a, zone=z2}, which it alone feeds.
	last := sender.reqs[len(sender.reqs)-1].Timeseries
	for _, ts := range last {
		if labelsString(ts.Labels) == `{__name__="req_total", app="a"}` {
			t.Fatalf("an input went to an output of the old rules: %v", last)
		}
	}
	if res.Forwarded+res.Merged != 2 {
		t.Fatalf("result %+v", res)
	}
}

// A cached route whose input the merger has forgotten falls back to the
// full path instead of absorbing into nothing.
func TestRouteCacheFallsBackWhenTheMergerForgot(t *testing.T) {
	sender := &recordingSender{keep: true}
	g, _ := newTestGateway(t, `
downstream: {url: "http://127.0.0.1:1/"}
merge: {flush_interval: 1h}
relabel_configs:
  - {action: labeldrop, regex: pod}
`, sender)
	pb := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series("req_total", "app", "a", "pod", "p1"),
		series("req_total", "app", "a", "pod", "p2"),
	}}
	if res, _ := g.Process(context.Background(), decode(t, pb)); res.Merged != 1 {
		t.Fatalf("first request: %+v", res)
	}
	// Make the cached route point at an output the merger does not have.
	for i := range g.routes.shards {
		sh := &g.routes.shards[i]
		var keys []uint64
		sh.routes.Range(func(k uint64, _ routeVal) bool { keys = append(keys, k); return true })
		for _, k := range keys {
			sh.routes.Ptr(k).out ^= 1
		}
	}
	res, err := g.Process(context.Background(), decode(t, pb))
	if err != nil {
		t.Fatal(err)
	}
	if res.Merged != 2 || res.Forwarded != 0 {
		t.Fatalf("second request: %+v, want both inputs merged through the full path", res)
	}
}

func TestRouteCacheSweep(t *testing.T) {
	c := newRouteCache()
	c.put(1, route{seen: 100})
	c.put(2, route{seen: 190})
	c.put(3, route{seen: 201}) // stamped after the sweep's clock: fresh
	c.sweep(200, 50)
	if _, ok := c.get(1, 200); ok {
		t.Error("an entry unused for 100 s survived a 50 s sweep")
	}
	for _, k := range []uint64{2, 3} {
		if _, ok := c.get(k, 200); !ok {
			t.Errorf("entry %d was swept", k)
		}
	}
}

// BenchmarkRouteCacheMemory reports the heap held per cached route, the mean
// over sizes from 128 k to 1.5 M routes: a hash table's bytes per entry
// depend on where between two growths it stands.
func BenchmarkRouteCacheMemory(b *testing.B) {
	for b.Loop() {
		var sum float64
		sizes := []int{2000, 3000, 5000, 8000, 12000, 16000, 24000} // per shard
		for _, perShard := range sizes {
			n := perShard * routeShards
			before := heapAlloc()
			c := newRouteCache()
			for i := range uint64(n) {
				c.put(i*0x9E3779B97F4A7C15+1, newRoute(1, i, i, 1, false))
			}
			sum += float64(heapAlloc()-before) / float64(n)
			runtime.KeepAlive(c)
		}
		b.ReportMetric(sum/float64(len(sizes)), "bytes/route")
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func TestRoutePacking(t *testing.T) {
	f := func(gen uint64, folded bool) {
		t.Helper()
		r := newRoute(gen, 7, 8, 9, folded)
		if r.folded() != folded || !r.current(gen) || r.current(gen+1) || r.limiterHash != 7 || r.outHash != 8 || r.seen != 9 {
			t.Fatalf("newRoute(%d, folded=%v) = %+v", gen, folded, r)
		}
	}
	f(1, false)
	f(1, true)
	f(1<<29-1, true)
	f(1<<40+5, false)
	for _, gen := range []uint64{1, 1<<29 - 1, 1<<40 + 5} {
		r := newPeerRoute(gen, 2, 9)
		if !r.peer() || r.pass() || r.folded() || !r.current(gen) || r.current(gen+1) || r.outHash != 2 || r.seen != 9 {
			t.Fatalf("newPeerRoute(%d, 2) = %+v", gen, r)
		}
		p := newPassRoute(gen, 8, 9)
		if !p.pass() || p.peer() || p.folded() || !p.current(gen) || p.current(gen+1) || p.outHash != 8 || p.limiterHash != 8 || p.seen != 9 {
			t.Fatalf("newPassRoute(%d, 8) = %+v", gen, p)
		}
		if r := newRoute(gen, 7, 8, 9, true); r.traced() || !r.withTrace().traced() || !r.withTrace().folded() || !r.withTrace().current(gen) || r.withTrace().pass() {
			t.Fatalf("newRoute(%d).withTrace() = %+v", gen, r.withTrace())
		}
		if d := newDropRoute(gen, 9); !d.dropped() || d.pass() || d.peer() || d.folded() || d.traced() || !d.current(gen) || d.current(gen+1) || d.seen != 9 {
			t.Fatalf("newDropRoute(%d) = %+v", gen, d)
		}
		if newRoute(gen, 7, 8, 9, true).dropped() || newPassRoute(gen, 8, 9).dropped() || newPeerRoute(gen, 2, 9).dropped() {
			t.Fatalf("a route of generation %d reads as dropped", gen)
		}
		if r := newRoute(gen, 7, 8, 9, true); r.peer() || r.pass() {
			t.Fatalf("newRoute(%d) is a peer or pass route", gen)
		}
	}
}

// get refreshes an entry's seen only every seenStep seconds; an entry used
// more often than that must survive every sweep, and an unused one must go.
func TestRouteCacheSeenStep(t *testing.T) {
	c := newRouteCache()
	now := uint32(1000)
	c.put(42, newRoute(1, 7, 8, now, false))
	for range 200 {
		now += 2
		c.sweep(now, 60)
		if _, ok := c.get(42, now); !ok {
			t.Fatalf("at %d: an entry used every 2 s was swept", now)
		}
	}
	now += 60 + seenStep + 1
	c.sweep(now, 60)
	if _, ok := c.get(42, now); ok {
		t.Fatal("an entry unused for longer than maxAge + seenStep survived")
	}
}

// The open-addressing cache must behave as a map through growth, removals
// (with their backward shifts), overwrites, folded routes, sweeps and
// clears.
func TestRouteCacheAgreesWithMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	c := newRouteCache()
	model := map[uint64]route{}
	now := uint32(100)
	// Few distinct keys in few shards, so that probe runs are long and
	// wrap around the end of a table.
	key := func() uint64 { return uint64(rng.IntN(400)+1)<<6 | uint64(rng.IntN(2)) } // 0 is never cached
	for op := range 200_000 {
		k := key()
		switch x := rng.IntN(100); {
		case x < 45:
			r := newRoute(uint64(op), rng.Uint64(), rng.Uint64(), now, rng.IntN(8) == 0)
			if !r.folded() {
				r.limiterHash = r.outHash
			}
			c.put(k, r)
			model[k] = r
		case x < 90:
			got, ok := c.get(k, now)
			want, wok := model[k]
			if ok != wok || (ok && (got.limiterHash != want.limiterHash || got.outHash != want.outHash || got.genFolded != want.genFolded)) {
				t.Fatalf("op %d: get(%#x) = %+v %v, want %+v %v", op, k, got, ok, want, wok)
			}
		case x < 99:
			c.del(k)
			delete(model, k)
		default:
			now += 30
			c.sweep(now, 3600)
		}
		if op%1000 == 0 && c.len() != len(model) {
			t.Fatalf("op %d: len %d, want %d", op, c.len(), len(model))
		}
	}
	now += 4000
	c.sweep(now, 3600)
	if c.len() != 0 {
		t.Fatalf("after a sweep past every entry: len %d", c.len())
	}
	c.put(1<<6, newRoute(1, 2, 2, now, false))
	c.clear()
	if _, ok := c.get(1<<6, now); ok || c.len() != 0 {
		t.Fatal("clear kept an entry")
	}
}

// TestGetAllAnswersAsGet: the batched lookup gives, for every input, what
// a lookup of its own gives, hits and misses, folded and pass routes,
// inputs repeated, in any order.
func TestGetAllAnswersAsGet(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	a, b := newRouteCache(), newRouteCache()
	var known []uint64
	for i := range 3000 {
		in := rng.Uint64()
		var r route
		switch i % 4 {
		case 0:
			r = newRoute(3, rng.Uint64(), rng.Uint64(), 100, false)
		case 1:
			r = newRoute(3, rng.Uint64(), rng.Uint64(), 100, true)
		case 2:
			r = newPassRoute(3, rng.Uint64(), 100)
		default:
			r = newPeerRoute(3, rng.IntN(3), 100)
		}
		a.put(in, r)
		b.put(in, r)
		known = append(known, in)
	}
	var out []cachedRoute
	var order []int32
	for round := range 5 {
		ins := make([]uint64, 1+rng.IntN(2500))
		for i := range ins {
			if rng.IntN(4) == 0 {
				ins[i] = rng.Uint64() // unknown
			} else {
				ins[i] = known[rng.IntN(len(known))]
			}
		}
		now := uint32(100 + 20*round) // past seenStep: get refreshes seen
		out, order = a.getAll(ins, now, out, order)
		if len(out) != len(ins) {
			t.Fatalf("getAll gave %d answers for %d inputs", len(out), len(ins))
		}
		for i, in := range ins {
			r, ok := b.get(in, now)
			if out[i].ok != ok || out[i].r != r {
				t.Fatalf("round %d, input %d: getAll says %+v, %v; get says %+v, %v", round, i, out[i].r, out[i].ok, r, ok)
			}
		}
	}
}

// get looks one input up: the reference getAll must answer as, for each
// input (the request path only uses getAll).
func (c *routeCache) get(in uint64, now uint32) (route, bool) {
	sh := &c.shards[in%routeShards]
	sh.mu.Lock()
	r, ok := sh.lookup(in, now)
	sh.mu.Unlock()
	return r, ok
}
