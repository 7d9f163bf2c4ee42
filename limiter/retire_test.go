package limiter

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Regression: after max_workloads distinct workloads since start, every new
// one shared _other until a restart, though the old ones were long gone.
func TestIdleWorkloadsAreRetired(t *testing.T) {
	clock := newFakeClock()
	const maxWorkloads = 3
	l := newTestLimiter(Settings{Default: 2, MaxWorkloads: maxWorkloads, Window: time.Minute}, clock)
	// One workload stays alive throughout and keeps its id.
	keep := makeSeriesN("keep", "app", 0, 1)
	for i := range 10 {
		ns := fmt.Sprintf("ns%d", i)
		// Two admitted series and one folded, and a folded histogram.
		admitAll(l, keep, 1)
		if a, f := admitAll(l, makeSeriesN(ns, "app", 0, 3), 1); a != 2 || f != 1 {
			t.Fatalf("round %d: admitted %d, folded %d", i, a, f)
		}
		if _, f := admitAll(l, histogram("rpc_seconds", ns, "app", "p1", "+Inf"), 1); f != 3 {
			t.Fatalf("round %d: histogram folded %d", i, f)
		}
		got := map[string]int64{}
		for _, r := range l.Cardinality(0) {
			got[r.Workload] = r.ActiveSeries
		}
		if len(got) != 2 || got[ns+"/app"] != 2 || got["keep/app"] != 1 {
			t.Fatalf("round %d: workloads %v, want keep/app and %s/app", i, got, ns)
		}
		clock.Advance(61 * time.Second)
		admitAll(l, keep, 1)
		l.Sweep()
		if rep := l.Cardinality(0); len(rep) != 1 || rep[0].Workload != "keep/app" {
			t.Fatalf("round %d: after the sweep %+v, want only keep/app", i, rep)
		}
		checkAccounting(t, l)
	}
	l.wlMu.RLock()
	ids := len(l.byID)
	l.wlMu.RUnlock()
	if ids > maxWorkloads {
		t.Fatalf("%d workload ids for at most 2 live workloads: ids are not reused", ids)
	}
}

// Admit and Sweep race while workloads come, fold, saturate and go: run
// under -race. The accounting must match the entries throughout, so that
// a reused id never meets an entry of its previous workload.
func TestRetirementUnderTraffic(t *testing.T) {
	clock := newFakeClock()
	const (
		maxWorkloads = 6
		names        = 24
		goroutines   = 4
	)
	l := newTestLimiter(Settings{Default: 3, MaxTrackedFolded: 8, MaxWorkloads: maxWorkloads, Window: 5 * time.Second}, clock)
	var ss [names][]testSeries
	for i := range ss {
		ns := fmt.Sprintf("ns%d", i)
		ss[i] = append(makeSeriesN(ns, "app", 0, 6), histogram("rpc_seconds", ns, "app", "p1", "1", "+Inf")...)
		ss[i] = append(ss[i], histogram("rpc_seconds", ns, "app", "p2", "1", "+Inf")...)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(l.Collector())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Each worker moves on to another workload every 3
				// seconds: the old ones go idle and are retired.
				admitAll(l, ss[(g*5+int(l.Clock()/3))%names], 1)
				runtime.Gosched()
			}
		})
	}
	seen := map[string]bool{}
	for range 40 {
		clock.Advance(time.Second)
		l.Sweep()
		for _, r := range l.Cardinality(0) {
			seen[r.Workload] = true
		}
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d workloads seen", len(seen))
	if len(seen) <= maxWorkloads+1 {
		t.Fatalf("only %d workloads seen over time, want more than %d: %v", len(seen), maxWorkloads+1, seen)
	}
	checkAccounting(t, l)
	if rep := l.Cardinality(0); len(rep) > maxWorkloads+1 {
		t.Fatalf("%d workloads, at most %d + _other live: %+v", len(rep), maxWorkloads, rep)
	}
	// Everything expires, saturations end, and every workload goes.
	clock.Advance(6 * time.Second)
	l.Sweep()
	if rep := l.Cardinality(0); len(rep) != 0 || entries(l) != 0 {
		t.Fatalf("after a window without traffic: %d entries, workloads %+v", entries(l), rep)
	}
	checkAccounting(t, l)
}
