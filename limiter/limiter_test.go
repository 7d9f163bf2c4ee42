package limiter

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardinal-gateway/cardinal/wire"
)

// fakeClock is an injectable clock for Options.Now.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// labels builds a label set from name, value pairs, sorted by name.
func labels(kv ...string) []wire.Label {
	ls := make([]wire.Label, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		ls = append(ls, wire.Label{Name: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	slices.SortFunc(ls, wire.CompareLabelNames)
	return ls
}

func formatLabels(ls []wire.Label) string {
	var sb strings.Builder
	sb.WriteByte('{')
	for i, lb := range ls {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%s=%q", lb.Name, lb.Value)
	}
	sb.WriteByte('}')
	return sb.String()
}

// testSeries is one series of workload ns/app, identified by id.
type testSeries struct {
	ls   []wire.Label
	hash uint64
}

func makeSeries(ns, app string, id int) testSeries {
	ls := labels("__name__", "http_requests_total", "namespace", ns, "app", app, "pod", fmt.Sprintf("pod-%d", id))
	h, _ := wire.HashLabels(nil, ls)
	return testSeries{ls: ls, hash: h}
}

func makeSeriesN(ns, app string, from, n int) []testSeries {
	out := make([]testSeries, n)
	for i := range out {
		out[i] = makeSeries(ns, app, from+i)
	}
	return out
}

// newTestSeries is the series of the label pairs kv.
func newTestSeries(kv ...string) testSeries {
	ls := labels(kv...)
	h, _ := wire.HashLabels(nil, ls)
	return testSeries{ls: ls, hash: h}
}

// histogram is one classic histogram instance of workload ns/app: a bucket
// per le, then _sum and _count.
func histogram(name, ns, app, pod string, les ...string) []testSeries {
	var out []testSeries
	for _, le := range les {
		out = append(out, newTestSeries("__name__", name+"_bucket", "namespace", ns, "app", app, "pod", pod, "le", le))
	}
	return append(out,
		newTestSeries("__name__", name+"_sum", "namespace", ns, "app", app, "pod", pod),
		newTestSeries("__name__", name+"_count", "namespace", ns, "app", app, "pod", pod))
}

// summary is one summary instance of workload ns/app: a series per
// quantile, then _sum and _count.
func summary(name, ns, app, pod string, quantiles ...string) []testSeries {
	var out []testSeries
	for _, q := range quantiles {
		out = append(out, newTestSeries("__name__", name, "namespace", ns, "app", app, "pod", pod, "quantile", q))
	}
	return append(out,
		newTestSeries("__name__", name+"_sum", "namespace", ns, "app", app, "pod", pod),
		newTestSeries("__name__", name+"_count", "namespace", ns, "app", app, "pod", pod))
}

// entries is how many series and instance entries the limiter holds.
func entries(l *Limiter) int {
	l.lockAll()
	defer l.unlockAll()
	n := 0
	for i := range l.shards {
		n += l.shards[i].series.Len() + l.insts[i].m.Len()
	}
	return n
}

// checkAccounting fails unless every entry names a live workload and every
// live workload's counters match the entries that name it: what makes the
// reuse of retired workloads' ids safe.
func checkAccounting(t *testing.T, l *Limiter) {
	t.Helper()
	l.lockAll()
	defer l.unlockAll()
	l.wlMu.RLock()
	defer l.wlMu.RUnlock()
	type counts struct{ active, folded, instances, foldedInstances int64 }
	got := map[uint32]*counts{}
	at := func(id uint32) *counts {
		if int(id) >= len(l.byID) || l.byID[id] == nil {
			t.Fatalf("an entry names workload id %d, which is not live", id)
		}
		if got[id] == nil {
			got[id] = &counts{}
		}
		return got[id]
	}
	for i := range l.shards {
		l.shards[i].series.Range(func(_, v uint64) bool {
			c := at(uint32(v >> idShift))
			if v&foldedBit != 0 {
				c.folded++
			} else {
				c.active++
			}
			return true
		})
		l.insts[i].m.Range(func(_ uint64, e instEntry) bool {
			c := at(e.id)
			c.instances++
			if e.folded {
				c.foldedInstances++
			}
			return true
		})
	}
	live := 0
	for id, w := range l.byID {
		if w == nil {
			continue
		}
		live++
		if w.id != uint32(id) || l.byName[w.Name] != w {
			t.Fatalf("workload %q: id %d at %d, byName has %p, want %p", w.Name, w.id, id, l.byName[w.Name], w)
		}
		c := got[uint32(id)]
		if c == nil {
			c = &counts{}
		}
		want := counts{w.active.Load(), w.folded.Load(), w.instances.Load(), w.foldedInstances.Load()}
		if *c != want {
			t.Fatalf("workload %q: entries %+v, counters %+v", w.Name, *c, want)
		}
		if tr := w.tracked.Load(); tr != c.folded+c.foldedInstances {
			t.Fatalf("workload %q: tracked %d, want %d", w.Name, tr, c.folded+c.foldedInstances)
		}
	}
	if live != len(l.byName) {
		t.Fatalf("%d workloads by id, %d by name", live, len(l.byName))
	}
	for _, id := range l.free {
		if l.byID[id] != nil {
			t.Fatalf("free id %d is taken by %q", id, l.byID[id].Name)
		}
	}
}

func newTestLimiter(s Settings, clock *fakeClock) *Limiter {
	if s.WorkloadLabels == nil {
		s.WorkloadLabels = []string{"namespace", "app"}
	}
	opts := Options{Settings: s}
	if clock != nil {
		opts.Now = clock.Now
	}
	return New(opts)
}

// admitAll admits every series with n samples and counts the decisions.
func admitAll(l *Limiter, ss []testSeries, n int) (admitted, folded int) {
	var buf []byte
	now := l.Clock()
	for _, s := range ss {
		var d Decision
		d, buf = l.Admit(s.hash, s.ls, n, now, buf)
		switch d {
		case Admit:
			admitted++
		case Fold:
			folded++
		}
	}
	return admitted, folded
}

func reportOf(t *testing.T, l *Limiter, workload string) Report {
	t.Helper()
	for _, r := range l.Cardinality(0) {
		if r.Workload == workload {
			return r
		}
	}
	t.Fatalf("workload %q not in the cardinality report %+v", workload, l.Cardinality(0))
	return Report{}
}

func TestWorkloadKey(t *testing.T) {
	f := func(want string, kv ...string) {
		t.Helper()
		l := newTestLimiter(Settings{}, nil)
		ls := labels(kv...)
		h, _ := wire.HashLabels(nil, ls)
		d, key := l.Admit(h, ls, 1, l.Clock(), make([]byte, 0, 64))
		if d != Admit {
			t.Fatalf("Admit(%s) = %v, want Admit", formatLabels(ls), d)
		}
		if string(key) != want {
			t.Fatalf("workload key of %s = %q, want %q", formatLabels(ls), key, want)
		}
		rep := l.Cardinality(0)
		if len(rep) != 1 || rep[0].Workload != want || rep[0].ActiveSeries != 1 {
			t.Fatalf("report for %s = %+v, want one line for %q with 1 active series", formatLabels(ls), rep, want)
		}
	}
	f("payments/checkout", "__name__", "up", "namespace", "payments", "app", "checkout", "pod", "p1")
	f("payments/", "__name__", "up", "namespace", "payments", "pod", "p1")
	f("/checkout", "__name__", "up", "app", "checkout")
	f(UnknownWorkload, "__name__", "up", "pod", "p1")
	f(UnknownWorkload)
}

func TestCapIsExact(t *testing.T) {
	l := newTestLimiter(Settings{Default: 100}, nil)
	ss := makeSeriesN("payments", "checkout", 0, 1000)
	admitted, folded := admitAll(l, ss, 3)
	if admitted != 100 || folded != 900 {
		t.Fatalf("admitted %d, folded %d; want 100 and 900", admitted, folded)
	}
	want := Report{Workload: "payments/checkout", ActiveSeries: 100, Limit: 100, DroppedSeries: 900, DroppedSamples: 2700}
	if got := reportOf(t, l, "payments/checkout"); got != want {
		t.Fatalf("report = %+v, want %+v", got, want)
	}
}

func TestCapIsExactConcurrent(t *testing.T) {
	const (
		goroutines = 8
		perG       = 2000
		limit      = 500
	)
	// Room to track every folded series: saturation is tested apart.
	l := newTestLimiter(Settings{Default: limit, MaxTrackedFolded: goroutines * perG}, nil)
	var admitted, folded atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	// Readers and the sweeper run alongside, as in production.
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			l.Sweep()
			_ = l.Cardinality(5)
		}
	}()
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ss := makeSeriesN("payments", "checkout", g*perG, perG)
			var buf []byte
			now := l.Clock()
			for _, s := range ss {
				var d Decision
				d, buf = l.Admit(s.hash, s.ls, 1, now, buf)
				if d == Admit {
					admitted.Add(1)
				} else {
					folded.Add(1)
				}
				if a := l.Cardinality(1); len(a) == 1 && a[0].ActiveSeries > limit {
					t.Errorf("active series %d over the cap %d", a[0].ActiveSeries, limit)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	if admitted.Load() != limit || folded.Load() != goroutines*perG-limit {
		t.Fatalf("admitted %d, folded %d; want %d and %d", admitted.Load(), folded.Load(), limit, goroutines*perG-limit)
	}
	r := reportOf(t, l, "payments/checkout")
	if r.ActiveSeries != limit || r.DroppedSeries != goroutines*perG-limit {
		t.Fatalf("report = %+v", r)
	}
}

func TestStickiness(t *testing.T) {
	l := newTestLimiter(Settings{Default: 10}, nil)
	first := makeSeriesN("payments", "checkout", 0, 10)
	over := makeSeriesN("payments", "checkout", 10, 5)
	if a, f := admitAll(l, first, 1); a != 10 || f != 0 {
		t.Fatalf("first: admitted %d, folded %d", a, f)
	}
	if a, f := admitAll(l, over, 1); a != 0 || f != 5 {
		t.Fatalf("over: admitted %d, folded %d", a, f)
	}
	// Raise the cap: the folded series stay folded, the admitted stay admitted.
	if err := l.SetAPIOverride("payments/checkout", 20, nil); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if a, f := admitAll(l, first, 1); a != 10 || f != 0 {
			t.Fatalf("first after raise: admitted %d, folded %d", a, f)
		}
		if a, f := admitAll(l, over, 1); a != 0 || f != 5 {
			t.Fatalf("folded after raise: admitted %d, folded %d", a, f)
		}
	}
	// A new series gets the room.
	if a, f := admitAll(l, makeSeriesN("payments", "checkout", 100, 1), 1); a != 1 || f != 0 {
		t.Fatalf("new after raise: admitted %d, folded %d", a, f)
	}
	want := Report{Workload: "payments/checkout", ActiveSeries: 11, Limit: 20, DroppedSeries: 5, DroppedSamples: 5 * 4}
	if got := reportOf(t, l, "payments/checkout"); got != want {
		t.Fatalf("report = %+v, want %+v", got, want)
	}
}

func TestLowerCap(t *testing.T) {
	l := newTestLimiter(Settings{Default: 10}, nil)
	admittedSeries := makeSeriesN("payments", "checkout", 0, 10)
	if a, _ := admitAll(l, admittedSeries, 1); a != 10 {
		t.Fatalf("admitted %d, want 10", a)
	}
	if err := l.SetAPIOverride("payments/checkout", 5, nil); err != nil {
		t.Fatal(err)
	}
	if a, f := admitAll(l, admittedSeries, 1); a != 10 || f != 0 {
		t.Fatalf("admitted series after lowering: admitted %d, folded %d; want 10 and 0", a, f)
	}
	if a, f := admitAll(l, makeSeriesN("payments", "checkout", 10, 3), 1); a != 0 || f != 3 {
		t.Fatalf("new series after lowering: admitted %d, folded %d; want 0 and 3", a, f)
	}
	// Another workload keeps the default.
	if a, f := admitAll(l, makeSeriesN("shop", "cart", 0, 10), 1); a != 10 || f != 0 {
		t.Fatalf("other workload: admitted %d, folded %d; want 10 and 0", a, f)
	}
	if r := reportOf(t, l, "payments/checkout"); r.ActiveSeries != 10 || r.DroppedSeries != 3 || r.Limit != 5 {
		t.Fatalf("report = %+v", r)
	}
}

func TestWindowSlidesPerSeries(t *testing.T) {
	clock := newFakeClock()
	const n = 20
	l := newTestLimiter(Settings{Default: n, Window: time.Minute}, clock)
	ss := makeSeriesN("payments", "checkout", 0, n)
	var even, odd []testSeries
	for i, s := range ss {
		if i%2 == 0 {
			even = append(even, s)
		} else {
			odd = append(odd, s)
		}
	}
	if a, _ := admitAll(l, ss, 1); a != n {
		t.Fatalf("admitted %d, want %d", a, n)
	}
	// Advance in steps of 10s, refreshing only the even series. The odd
	// ones were last seen at 0s: they are active up to and including 60s
	// and gone at 70s; the even ones never expire.
	for step := 1; step <= 12; step++ {
		clock.Advance(10 * time.Second)
		if a, f := admitAll(l, even, 1); a != len(even) || f != 0 {
			t.Fatalf("step %d: even series admitted %d, folded %d", step, a, f)
		}
		l.Sweep()
		want := int64(n)
		if step >= 7 {
			want = n / 2
		}
		if got := reportOf(t, l, "payments/checkout").ActiveSeries; got != want {
			t.Fatalf("step %d (t=%ds): active %d, want %d", step, step*10, got, want)
		}
	}
	// The expired series freed their slots: coming back they are new
	// series again and take them, and then the workload is full.
	if a, f := admitAll(l, odd, 1); a != n/2 || f != 0 {
		t.Fatalf("expired series coming back: admitted %d, folded %d; want %d and 0", a, f, n/2)
	}
	if got := reportOf(t, l, "payments/checkout").ActiveSeries; got != n {
		t.Fatalf("active %d after the expired series came back, want %d", got, n)
	}
	if a, f := admitAll(l, makeSeriesN("payments", "checkout", 1000, 1), 1); a != 0 || f != 1 {
		t.Fatalf("new series over the cap: admitted %d, folded %d; want 0 and 1", a, f)
	}
	// Expired folded series free their folded count too, and the workload,
	// left without series, is forgotten.
	clock.Advance(2 * time.Minute)
	l.Sweep()
	if rep := l.Cardinality(0); len(rep) != 0 {
		t.Fatalf("after everything expired: %+v, want no workload", rep)
	}
	if a, _ := admitAll(l, ss, 1); a != n {
		t.Fatalf("re-admitted %d, want %d", a, n)
	}
}

func TestDryRun(t *testing.T) {
	l := newTestLimiter(Settings{Default: 10, DryRun: true}, nil)
	ss := makeSeriesN("payments", "checkout", 0, 30)
	if a, f := admitAll(l, ss, 2); a != 30 || f != 0 {
		t.Fatalf("dry run: admitted %d, folded %d; want 30 and 0", a, f)
	}
	if a, f := admitAll(l, ss, 2); a != 30 || f != 0 {
		t.Fatalf("dry run, known series: admitted %d, folded %d; want 30 and 0", a, f)
	}
	want := Report{Workload: "payments/checkout", ActiveSeries: 10, Limit: 10, DroppedSeries: 20, DroppedSamples: 20 * 2 * 2}
	if got := reportOf(t, l, "payments/checkout"); got != want {
		t.Fatalf("report = %+v, want %+v", got, want)
	}
	vals := gatherByWorkload(t, l)
	if got := vals["cardinal_series_limit_reached_total"]["payments/checkout"]; got != 20 {
		t.Fatalf("limit reached = %v, want 20", got)
	}
	if got := vals["cardinal_folded_samples_total"]["payments/checkout"]; got != 80 {
		t.Fatalf("folded samples = %v, want 80", got)
	}
}

func TestOverrides(t *testing.T) {
	l := newTestLimiter(Settings{Default: 100, Overrides: map[string]int{"payments/checkout": 10}}, nil)
	f := func(workload string, want int) {
		t.Helper()
		if got := l.Limit(workload); got != want {
			t.Fatalf("Limit(%q) = %d, want %d", workload, got, want)
		}
	}
	f("payments/checkout", 10)
	f("shop/cart", 100)
	if err := l.SetAPIOverride("payments/checkout", 20, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.SetAPIOverride("shop/cart", 5, nil); err != nil {
		t.Fatal(err)
	}
	f("payments/checkout", 20)
	f("shop/cart", 5)
	if got, want := l.Overrides(), map[string]int{"payments/checkout": 20, "shop/cart": 5}; !maps.Equal(got, want) {
		t.Fatalf("Overrides() = %v, want %v", got, want)
	}
	// The API override is what Admit enforces.
	if a, fo := admitAll(l, makeSeriesN("payments", "checkout", 0, 25), 1); a != 20 || fo != 5 {
		t.Fatalf("admitted %d, folded %d; want 20 and 5", a, fo)
	}
	// A config reload keeps API overrides on top.
	l.SetSettings(Settings{WorkloadLabels: []string{"namespace", "app"}, Default: 100, Overrides: map[string]int{"payments/checkout": 30}})
	f("payments/checkout", 20)
	found, err := l.DeleteAPIOverride("payments/checkout", nil)
	if err != nil || !found {
		t.Fatalf("DeleteAPIOverride = %v, %v; want true, nil", found, err)
	}
	f("payments/checkout", 30)
	found, err = l.DeleteAPIOverride("payments/checkout", nil)
	if err != nil || found {
		t.Fatalf("second DeleteAPIOverride = %v, %v; want false, nil", found, err)
	}
	if _, err := l.DeleteAPIOverride("shop/cart", nil); err != nil {
		t.Fatal(err)
	}
	f("shop/cart", 100)
	if got := l.APIOverrides(); len(got) != 0 {
		t.Fatalf("APIOverrides() = %v, want none", got)
	}
	l.LoadAPIOverrides(map[string]int{"shop/cart": 7})
	f("shop/cart", 7)
	f("payments/checkout", 30)
}

func TestPersistErrorChangesNothing(t *testing.T) {
	l := newTestLimiter(Settings{Default: 100}, nil)
	var persisted map[string]int
	ok := func(m map[string]int) error { persisted = m; return nil }
	if err := l.SetAPIOverride("a/x", 10, ok); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(persisted, map[string]int{"a/x": 10}) {
		t.Fatalf("persisted %v", persisted)
	}
	errDisk := errors.New("disk full")
	var seen []map[string]int
	fail := func(m map[string]int) error {
		seen = append(seen, maps.Clone(m))
		return errDisk
	}
	if err := l.SetAPIOverride("a/x", 20, fail); !errors.Is(err, errDisk) {
		t.Fatalf("SetAPIOverride error = %v, want %v", err, errDisk)
	}
	if got := l.Limit("a/x"); got != 10 {
		t.Fatalf("Limit after failed set = %d, want 10", got)
	}
	if err := l.SetAPIOverride("b/y", 20, fail); !errors.Is(err, errDisk) {
		t.Fatalf("SetAPIOverride error = %v", err)
	}
	if got, want := l.APIOverrides(), map[string]int{"a/x": 10}; !maps.Equal(got, want) {
		t.Fatalf("APIOverrides after failed set = %v, want %v", got, want)
	}
	// persist saw each change while it was still private.
	if len(seen) != 2 || !maps.Equal(seen[0], map[string]int{"a/x": 20}) || !maps.Equal(seen[1], map[string]int{"a/x": 10, "b/y": 20}) {
		t.Fatalf("persist saw %v", seen)
	}
	found, err := l.DeleteAPIOverride("a/x", fail)
	if !found || !errors.Is(err, errDisk) {
		t.Fatalf("DeleteAPIOverride = %v, %v; want true, %v", found, err, errDisk)
	}
	if got := l.Limit("a/x"); got != 10 {
		t.Fatalf("Limit after failed delete = %d, want 10", got)
	}
	if got, want := l.Overrides(), map[string]int{"a/x": 10}; !maps.Equal(got, want) {
		t.Fatalf("Overrides after failed delete = %v, want %v", got, want)
	}
}

func TestMaxWorkloads(t *testing.T) {
	l := newTestLimiter(Settings{Default: 100, MaxWorkloads: 3}, nil)
	for i := range 6 {
		if a, _ := admitAll(l, makeSeriesN(fmt.Sprintf("ns%d", i), "app", 0, 2), 1); a != 2 {
			t.Fatalf("workload %d: admitted %d, want 2", i, a)
		}
	}
	got := map[string]int64{}
	for _, r := range l.Cardinality(0) {
		got[r.Workload] = r.ActiveSeries
	}
	want := map[string]int64{"ns0/app": 2, "ns1/app": 2, "ns2/app": 2, OtherWorkload: 6}
	if !maps.Equal(got, want) {
		t.Fatalf("workloads = %v, want %v", got, want)
	}
	// _other is capped like any workload.
	l.SetSettings(Settings{WorkloadLabels: []string{"namespace", "app"}, Default: 7, MaxWorkloads: 3})
	if a, f := admitAll(l, makeSeriesN("ns9", "app", 0, 3), 1); a != 1 || f != 2 {
		t.Fatalf("_other over its cap: admitted %d, folded %d; want 1 and 2", a, f)
	}
}

func TestAppendOverflowLabels(t *testing.T) {
	l := newTestLimiter(Settings{}, nil)
	f := func(in []wire.Label, want string) {
		t.Helper()
		prefix := labels("x", "y")
		out := l.AppendOverflowLabels(prefix, in)
		if got := formatLabels(out[:1]); got != `{x="y"}` {
			t.Fatalf("prefix overwritten: %s", got)
		}
		if got := formatLabels(out[1:]); got != want {
			t.Fatalf("AppendOverflowLabels(%s)\ngot  %s\nwant %s", formatLabels(in), got, want)
		}
	}
	f(labels("__name__", "http_requests_total", "namespace", "payments", "app", "checkout", "pod", "p-1", "path", "/a/b"),
		`{__name__="http_requests_total", app="checkout", cardinal_overflow="true", namespace="payments"}`)
	f(labels("__name__", "latency_bucket", "namespace", "payments", "app", "checkout", "le", "0.5", "user", "u1"),
		`{__name__="latency_bucket", app="checkout", cardinal_overflow="true", le="0.5", namespace="payments"}`)
	// Regression: the quantiles of a folded summary collided in one
	// overflow series.
	f(labels("__name__", "latency", "namespace", "payments", "app", "checkout", "quantile", "0.99", "user", "u1"),
		`{__name__="latency", app="checkout", cardinal_overflow="true", namespace="payments", quantile="0.99"}`)
	f(labels("__name__", "up", "namespace", "payments", "zone", "a"),
		`{__name__="up", cardinal_overflow="true", namespace="payments"}`)
	f(labels("__name__", "up", "instance", "i", "zzz", "1"),
		`{__name__="up", cardinal_overflow="true"}`)
	f(labels("a", "1", "__name__", "up", "zone", "z", "app", "x"),
		`{__name__="up", app="x", cardinal_overflow="true"}`)
}

func TestAppendOverflowLabelsAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are not meaningful under -race")
	}
	l := newTestLimiter(Settings{}, nil)
	ls := labels("__name__", "latency_bucket", "namespace", "payments", "app", "checkout", "le", "0.5", "pod", "p-1")
	dst := make([]wire.Label, 0, 64)
	allocs := testing.AllocsPerRun(100, func() {
		dst = l.AppendOverflowLabels(dst[:0], ls)
	})
	if allocs != 0 {
		t.Fatalf("AppendOverflowLabels allocates %v times per call, want 0", allocs)
	}
	if len(dst) != 5 {
		t.Fatalf("got %s", formatLabels(dst))
	}
}

func TestSetSettingsWorkloadLabelsResetsAccounting(t *testing.T) {
	l := newTestLimiter(Settings{Default: 5}, nil)
	ss := makeSeriesN("payments", "checkout", 0, 10)
	if a, f := admitAll(l, ss, 1); a != 5 || f != 5 {
		t.Fatalf("admitted %d, folded %d", a, f)
	}
	// Same labels, other cap: the accounting stays.
	l.SetSettings(Settings{WorkloadLabels: []string{"namespace", "app"}, Default: 50})
	if r := reportOf(t, l, "payments/checkout"); r.ActiveSeries != 5 || r.DroppedSeries != 5 || r.Limit != 50 {
		t.Fatalf("after a cap change: %+v", r)
	}
	if a, f := admitAll(l, ss, 1); a != 5 || f != 5 {
		t.Fatalf("after a cap change: admitted %d, folded %d; want 5 and 5", a, f)
	}
	// Other labels: everything starts afresh.
	l.SetSettings(Settings{WorkloadLabels: []string{"namespace"}, Default: 50})
	if rep := l.Cardinality(0); len(rep) != 0 {
		t.Fatalf("after a workload label change the report is %+v, want empty", rep)
	}
	if a, f := admitAll(l, ss, 1); a != 10 || f != 0 {
		t.Fatalf("after a workload label change: admitted %d, folded %d; want 10 and 0", a, f)
	}
	want := Report{Workload: "payments", ActiveSeries: 10, Limit: 50}
	if got := reportOf(t, l, "payments"); got != want {
		t.Fatalf("report = %+v, want %+v", got, want)
	}
}

// gatherByWorkload collects the limiter's metrics: name → workload → value.
func gatherByWorkload(t *testing.T, l *Limiter) map[string]map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(l.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, mf := range mfs {
		m := map[string]float64{}
		for _, metric := range mf.GetMetric() {
			if len(metric.GetLabel()) != 1 || metric.GetLabel()[0].GetName() != "workload" {
				t.Fatalf("%s has labels %v", mf.GetName(), metric.GetLabel())
			}
			v := metric.GetGauge().GetValue() + metric.GetCounter().GetValue()
			m[metric.GetLabel()[0].GetValue()] = v
		}
		out[mf.GetName()] = m
	}
	return out
}

func TestCollectorTopWorkloads(t *testing.T) {
	l := newTestLimiter(Settings{Default: 20}, nil)
	// Workload i has i+1 series, 20 of them at most admitted; w20..w24 fold 1..5.
	for i := range 25 {
		admitAll(l, makeSeriesN(fmt.Sprintf("w%02d", i), "app", 0, i+1), 1)
	}
	vals := gatherByWorkload(t, l)
	active := vals["cardinal_active_series"]
	if len(active) != TopWorkloads+1 {
		t.Fatalf("active series has %d workloads, want %d: %v", len(active), TopWorkloads+1, active)
	}
	total := 0.0
	for w, v := range active {
		total += v
		if w == OtherWorkload {
			continue
		}
		var i int
		if _, err := fmt.Sscanf(w, "w%02d/app", &i); err != nil {
			t.Fatalf("unexpected workload %q", w)
		}
		if want := float64(min(i+1, 20)); v != want {
			t.Fatalf("active{%s} = %v, want %v", w, v, want)
		}
	}
	// Values 20,20,20,20,20,20,19..6 are named (sorted by value, then
	// name); 5+4+3+2+1 go to _other.
	if got := active[OtherWorkload]; got != 15 {
		t.Fatalf("active{_other} = %v, want 15", got)
	}
	if want := 20.0*6 + (19+6)*14/2 + 15; total != want {
		t.Fatalf("sum of active = %v, want %v", total, want)
	}
	if _, ok := active["w04/app"]; ok {
		t.Fatalf("w04 (5 series) should be summed into _other: %v", active)
	}
	if got := vals["cardinal_series_limit_reached_total"]; len(got) != 5 || got["w24/app"] != 5 || got["w20/app"] != 1 || got["w21/app"] != 2 {
		t.Fatalf("limit reached = %v", got)
	}
}

func TestAdmitKnownAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are not meaningful under -race")
	}
	clock := newFakeClock()
	l := newTestLimiter(Settings{Default: 1}, clock)
	admitted := makeSeries("payments", "checkout", 1)
	folded := makeSeries("payments", "checkout", 2)
	buf := make([]byte, 0, 64)
	now := l.Clock()
	if d, _ := l.Admit(admitted.hash, admitted.ls, 1, now, buf); d != Admit {
		t.Fatal("first series not admitted")
	}
	if d, _ := l.Admit(folded.hash, folded.ls, 1, now, buf); d != Fold {
		t.Fatal("second series not folded")
	}
	for _, tc := range []struct {
		name string
		s    testSeries
		want Decision
	}{{"admitted", admitted, Admit}, {"folded", folded, Fold}} {
		t.Run(tc.name, func(t *testing.T) {
			var d Decision
			allocs := testing.AllocsPerRun(1000, func() {
				clock.Advance(time.Second)
				d, buf = l.Admit(tc.s.hash, tc.s.ls, 1, l.Clock(), buf)
			})
			if allocs != 0 {
				t.Fatalf("Admit of a known %s series allocates %v times, want 0", tc.name, allocs)
			}
			if d != tc.want {
				t.Fatalf("decision = %v, want %v", d, tc.want)
			}
		})
	}
}

// Regression: a reload that changes the workload labels while requests are
// admitted must not leave series pointing at workloads of the old
// accounting (it used to panic in workloadByID).
func TestChangingWorkloadLabelsUnderTraffic(t *testing.T) {
	l := newTestLimiter(Settings{Default: 1}, nil)
	ss := makeSeriesN("ns", "app", 0, 64)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				admitAll(l, ss, 1)
				l.Sweep()
			}
		})
	}
	for i := range 200 {
		labels := []string{"namespace"}
		if i%2 == 1 {
			labels = []string{"namespace", "app"}
		}
		l.SetSettings(Settings{WorkloadLabels: labels, Default: 1})
	}
	close(stop)
	wg.Wait()
	for _, r := range l.Cardinality(0) {
		if r.ActiveSeries > 1 {
			t.Fatalf("workload %s has %d active series over its cap of 1", r.Workload, r.ActiveSeries)
		}
	}
}

// Regression: a series stamped by a request after Sweep read the clock is
// fresh; the unsigned age used to wrap around and expire it (and turn a
// folded series into an admitted one).
func TestSweepKeepsSeriesStampedAfterItsClock(t *testing.T) {
	clock := newFakeClock()
	l := newTestLimiter(Settings{Default: 1, Window: time.Minute}, clock)
	a, b := makeSeries("ns", "app", 1), makeSeries("ns", "app", 2)
	now := l.Clock() + 1
	if d, _ := l.Admit(a.hash, a.ls, 1, now, nil); d != Admit {
		t.Fatal("a: want Admit")
	}
	if d, _ := l.Admit(b.hash, b.ls, 1, now, nil); d != Fold {
		t.Fatal("b: want Fold")
	}
	l.Sweep()
	r := reportOf(t, l, "ns/app")
	if r.ActiveSeries != 1 || r.DroppedSeries != 1 {
		t.Fatalf("after Sweep: %+v, want 1 active and 1 folded", r)
	}
	if d, _ := l.Admit(b.hash, b.ls, 1, now, nil); d != Fold {
		t.Fatal("b must stay folded")
	}
}

// AdmitKnown refreshes a series' last-seen second in place: a series seen
// within every window must never expire, and one that stops must expire
// once a window has passed.
func TestAdmitKnownKeepsSeriesActive(t *testing.T) {
	clock := newFakeClock()
	window := time.Minute
	l := newTestLimiter(Settings{Default: 10, Window: window}, clock)
	s := makeSeries("payments", "checkout", 1)
	if d, _ := l.Admit(s.hash, s.ls, 1, l.Clock(), nil); d != Admit {
		t.Fatal("not admitted")
	}
	for i := range 300 {
		clock.Advance(2 * time.Second)
		l.Sweep()
		if _, ok := l.AdmitKnown(s.hash, 1, l.Clock()); !ok {
			t.Fatalf("after %d s of samples every 2 s, the series expired", 2*(i+1))
		}
	}
	clock.Advance(window + 2*time.Second)
	l.Sweep()
	if _, ok := l.AdmitKnown(s.hash, 1, l.Clock()); ok {
		t.Fatal("a series without samples for a window is still active")
	}
}
