package reliability

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cardinal-gateway/cardinal/bench/load"
	"github.com/cardinal-gateway/cardinal/bench/meshgen"
)

// memoryLimit is the receive.memory_limit of the overload and slow-client
// tests: 512 MiB, a common sidecar limit.
const memoryLimit = 512 << 20

// overloadMesh is a 240-workload mesh: 101,205 input series a step,
// 43,000 passing through and 58,000 merged by the suite's rules.
var overloadMesh = meshgen.Config{Workloads: 240, PodsPerWorkload: 5, HighCardShare: -1, Seed: 3}

// loadCardinalConfig is Cardinal under load: the suite's relabel rules
// (pass-through and merged series), receive.memory_limit as given (0:
// none), everything else default but a 5s merge flush.
func loadCardinalConfig(downstream string, limit int64, extraReceive string) string {
	recv := ""
	if limit > 0 {
		recv = fmt.Sprintf("  memory_limit: %d\n", limit)
	}
	recv += extraReceive
	if recv != "" {
		recv = "receive:\n" + recv
	}
	return fmt.Sprintf(`
downstream:
  url: %s
  timeout: 10s
%srelabel_configs:%s
merge:
  flush_interval: 5s
`, downstream, recv, relabelRules())
}

// phaseFigures is one load phase's row.
type phaseFigures struct {
	name           string
	offered        string
	st             *loadStats
	shedByCardinal float64 // cardinal_rejected_requests_total{reason="overload"} during the phase
	res            resources
}

func (p phaseFigures) row() string {
	p50, p99 := p.st.percentiles()
	shed50 := time.Duration(0)
	if n := len(p.st.shedLat); n > 0 {
		lat := append([]time.Duration(nil), p.st.shedLat...)
		sortDurations(lat)
		shed50 = percentile(lat, 0.5)
	}
	r := p.res
	return fmt.Sprintf("| %s | %s | %d | %.1f | %.0f | %.1f%% (%v shed by admission) | %s / %s | %s | %s / %s | %s | %s | %.0f | %.0f | %s |",
		p.name, p.offered, p.st.total(), p.st.acceptedPerSec(), float64(p.st.samples)/p.st.elapsed.Seconds(),
		100*p.st.shedFraction(), p.shedByCardinal, p50.Round(time.Millisecond), p99.Round(time.Millisecond),
		shed50.Round(time.Microsecond*100), mib(r.maxRSS), mib(r.hwm), mib(int64(r.heap)), mib(int64(r.heldBytes)),
		r.goroutines, r.inflight, answersString(p.st.statuses))
}

const phaseHeader = "| phase | offered | answered | accepted req/s | accepted samples/s | shed (503) | p50 / p99 accepted | p50 shed | max RSS / VmHWM (MiB) | max heap in use (MiB) | max bytes reserved (MiB) | max goroutines | max in flight | answers |\n" +
	"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"

// TestOverload (issue 11, item 8): Cardinal with receive.memory_limit 512
// MiB in front of a downstream that answers in 200ms, driven (a) by 48
// closed-loop senders of 2,000-series requests, (b) by an open loop at
// twice the capacity (a) measured, then (c) by a low rate. Cardinal must
// shed the excess with 503 (before reading bodies), keep its resident
// memory under the limit, answer what it accepts within bounded latency,
// and serve the low rate with 204 only once the load has gone.
func TestOverload(t *testing.T) {
	requireFull(t)
	w := newWorkload(t, overloadMesh, 8, 2000)
	t.Logf("workload: %d input series a step in %d requests of about 2000 series, %d steps, %.1f MiB of bodies",
		w.Series, w.RequestsPerStep(), len(w.Bodies), float64(w.Bytes)/(1<<20))
	down := newSink(t, 200*time.Millisecond)
	c := startCardinal(t, loadCardinalConfig(down.URL(), memoryLimit, ""))
	url := c.URL + "/api/v1/write"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rs := &resourceSampler{c: c}
	go rs.run(ctx, 200*time.Millisecond)
	shed := func() float64 {
		m, err := c.metrics()
		if err != nil {
			t.Fatal(err)
		}
		return m.value("cardinal_rejected_requests_total", "reason", "overload")
	}
	var rows []phaseFigures
	phase := func(name, offered string, run func() *loadStats) *loadStats {
		before := shed()
		rs.reset()
		st := run()
		rs.once()
		f := phaseFigures{name: name, offered: offered, st: st, shedByCardinal: shed() - before, res: rs.reset()}
		rows = append(rows, f)
		t.Logf("%s: %s", name, f.row())
		if st.firstShed != "" {
			t.Logf("  shed because of {%s}; the first was told %q", answersString(st.shedWhy), st.firstShed)
		}
		return st
	}

	a := phase("(a) 48 closed-loop senders, 25s", "48 senders", func() *loadStats {
		return closedLoop(ctx, url, w, 48, 25*time.Second, 5*time.Second)
	})
	capacity := a.acceptedPerSec()
	if capacity < 1 {
		t.Fatalf("capacity %.1f req/s: nothing got through", capacity)
	}
	b := phase("(b) open loop at 2x capacity, 20s", fmt.Sprintf("%.0f req/s", 2*capacity), func() *loadStats {
		return openLoop(ctx, url, w, 2*capacity, 20*time.Second, 512)
	})
	low := max(1, capacity/4)
	r := phase("(c) low rate afterwards, 10s", fmt.Sprintf("%.0f req/s", low), func() *loadStats {
		return openLoop(ctx, url, w, low, 10*time.Second, 64)
	})
	t.Logf("figures:\n%s%s", phaseHeader, joinRows(rows))

	mem, err := load.ProcMemory(c.pid())
	if err != nil {
		t.Fatal(err)
	}
	// The live heap once the load is over: a heap profile with gc=1 runs a
	// collection first.
	if code, body := httpGetWithin(c.URL+"/debug/pprof/heap?gc=1", 60*time.Second); code != 200 {
		t.Logf("cannot get a heap profile: %d %s", code, tail(body, 2))
	} else if m, err := c.metrics(); err != nil {
		t.Logf("cannot read cardinal's metrics after the heap profile: %v", err)
	} else {
		t.Logf("after the load, live heap %s MiB (go_memstats_heap_alloc_bytes after a forced GC), heap in use %s MiB, RSS %s MiB, %v merged series, %v tracked inputs",
			mib(int64(m.value("go_memstats_heap_alloc_bytes", "", ""))), mib(int64(m.value("go_memstats_heap_inuse_bytes", "", ""))), mib(mem.RSS),
			m.value("cardinal_merged_series", "", ""), m.value("cardinal_merge_tracked_inputs", "", ""))
	}
	t.Logf("cardinal VmHWM %s MiB over the whole test (limit %s MiB); downstream got %d requests", mib(mem.Peak), mib(memoryLimit), down.requests.Load())
	if mem.Peak >= memoryLimit {
		t.Errorf("peak RSS %s MiB, want under the %s MiB memory limit", mib(mem.Peak), mib(memoryLimit))
	}
	for _, st := range []*loadStats{a, b} {
		if st.statuses["503"] == 0 {
			t.Errorf("no request shed under overload: %v", st.statuses)
		}
		if n := st.statuses["transport error"]; n > 0 {
			t.Errorf("%d requests got no answer", n)
		}
	}
	for code, n := range r.statuses {
		if code != "204" {
			t.Errorf("after the load: %d answers %s, want only 204", n, code)
		}
	}
	if r.total() == 0 {
		t.Errorf("nothing answered after the load")
	}
	if err := c.stop(sigterm); err != nil {
		t.Errorf("cardinal did not exit 0: %v", err)
	}
}

func joinRows(rows []phaseFigures) string {
	var sb strings.Builder
	for _, r := range rows {
		sb.WriteString(r.row())
		sb.WriteByte('\n')
	}
	return sb.String()
}
