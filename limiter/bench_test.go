package limiter

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cardinal-gateway/cardinal/wire"
)

// BenchmarkAdmitKnown admits 2000 known series per op, the steady state of
// a sidecar: every series of the request has been seen before.
func BenchmarkAdmitKnown(b *testing.B) {
	const n = 2000
	l := newTestLimiter(Settings{Default: n / 2}, nil)
	ss := makeSeriesN("payments", "checkout", 0, n)
	admitAll(l, ss, 1) // half admitted, half folded
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		now := l.Clock()
		for i := range ss {
			_, buf = l.Admit(ss[i].hash, ss[i].ls, 1, now, buf)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n)/float64(b.N), "ns/series")
}

// BenchmarkAdmitNew admits 2000 series new to the limiter per op: the slow
// path. The series expire between ops and come back, so the maps do not
// grow during the benchmark; keep keeps the workload alive.
func BenchmarkAdmitNew(b *testing.B) {
	pods := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("pod-%d", i)
		}
		return out
	}
	keep := makeSeries("payments", "checkout", -1)
	plain := makeSeriesN("payments", "checkout", 0, 2000)
	var hist []testSeries
	for _, pod := range pods(2000 / 6) {
		hist = append(hist, histogram("rpc_seconds", "payments", "checkout", pod, "0.1", "1", "10", "+Inf")...)
	}
	for _, bc := range []struct {
		name string
		ss   []testSeries
	}{{"plain", plain}, {"histograms", hist}} {
		b.Run(bc.name, func(b *testing.B) {
			clock := newFakeClock()
			l := newTestLimiter(Settings{Window: time.Minute}, clock)
			buf := make([]byte, 0, 256)
			b.ReportAllocs()
			for b.Loop() {
				now := l.Clock()
				for i := range bc.ss {
					_, buf = l.Admit(bc.ss[i].hash, bc.ss[i].ls, 1, now, buf)
				}
				b.StopTimer()
				clock.Advance(2 * time.Minute)
				_, buf = l.Admit(keep.hash, keep.ls, 1, l.Clock(), buf)
				l.Sweep()
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(len(bc.ss))/float64(b.N), "ns/series")
		})
	}
}

// mix64 spreads i into a well-distributed 64-bit hash (splitmix64).
func mix64(i uint64) uint64 {
	i += 0x9e3779b97f4a7c15
	i = (i ^ i>>30) * 0xbf58476d1ce4e5b9
	i = (i ^ i>>27) * 0x94d049bb133111eb
	return i ^ i>>31
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkMemoryPerSeries measures the heap the limiter keeps per tracked
// active series: 1,000,000 distinct series of one workload, HeapAlloc
// after GC minus HeapAlloc before, divided by the number of series. The
// target is at most 64 bytes per series.
//
// "instances" does the same with series that each found an instance of
// their own (x_sum of distinct pods): a series entry and an instance entry
// each. "folded" sends the 1,000,000 series to a workload capped at 10:
// the entries stop at the cap plus DefaultMaxTrackedFolded, so the bytes
// per series fall towards 0 as more series arrive.
//
// For comparison, fastcache (the store DESIGN.md names) was measured in a
// scratch module, since it is not in this module's go.mod: the same
// 1,000,000 entries of an 8-byte key and an 8-byte value (fastcache.New(64
// MiB), Set per entry) cost about 38 bytes of Go heap per entry for its
// per-bucket index maps (HeapAlloc delta, as here) plus 33.5 bytes per
// entry of 64 KiB chunks that it allocates off-heap with mmap on unix and
// that HeapAlloc does not see (Stats.BytesSize after UpdateStats): about
// 71 bytes per entry in all, against the limiter's one map entry.
func BenchmarkMemoryPerSeries(b *testing.B) {
	const n = 1_000_000
	b.Run("limiter", func(b *testing.B) {
		ls := makeSeries("payments", "checkout", 0).ls
		b.ReportAllocs()
		var perSeries float64
		for b.Loop() {
			before := heapAlloc()
			l := newTestLimiter(Settings{}, nil)
			var buf []byte
			now := l.Clock()
			for i := range uint64(n) {
				_, buf = l.Admit(mix64(i), ls, 1, now, buf)
			}
			after := heapAlloc()
			if r := l.Cardinality(1); len(r) != 1 || r[0].ActiveSeries != n {
				b.Fatalf("report = %+v, want %d active series", r, n)
			}
			runtime.KeepAlive(l)
			perSeries = float64(int64(after)-int64(before)) / n
		}
		b.ReportMetric(perSeries, "bytes/series")
	})
	b.Run("instances", func(b *testing.B) {
		// One label set whose pod value is rewritten for each series: the
		// limiter keeps nothing of ls.
		pod := make([]byte, 0, 16)
		ls := labels("__name__", "rpc_seconds_sum", "namespace", "payments", "app", "checkout", "pod", "")
		podAt := slices.IndexFunc(ls, func(lb wire.Label) bool { return string(lb.Name) == "pod" })
		b.ReportAllocs()
		var perInstance float64
		for b.Loop() {
			before := heapAlloc()
			l := newTestLimiter(Settings{}, nil)
			var buf []byte
			now := l.Clock()
			for i := range uint64(n) {
				pod = strconv.AppendUint(pod[:0], i, 10)
				ls[podAt].Value = pod
				_, buf = l.Admit(mix64(i), ls, 1, now, buf)
			}
			after := heapAlloc()
			if r := l.Cardinality(1); len(r) != 1 || r[0].ActiveSeries != n || entries(l) != 2*n {
				b.Fatalf("report = %+v, %d entries; want %d active series and %d entries", r, entries(l), n, 2*n)
			}
			runtime.KeepAlive(l)
			perInstance = float64(int64(after)-int64(before)) / n
		}
		b.ReportMetric(perInstance, "bytes/series+instance")
	})
	b.Run("folded", func(b *testing.B) {
		ls := makeSeries("payments", "checkout", 0).ls
		b.ReportAllocs()
		var perSeries float64
		for b.Loop() {
			before := heapAlloc()
			l := newTestLimiter(Settings{Default: 10}, nil)
			var buf []byte
			now := l.Clock()
			for i := range uint64(n) {
				_, buf = l.Admit(mix64(i), ls, 1, now, buf)
			}
			after := heapAlloc()
			if got := entries(l); got != 10+DefaultMaxTrackedFolded {
				b.Fatalf("%d entries, want %d", got, 10+DefaultMaxTrackedFolded)
			}
			runtime.KeepAlive(l)
			perSeries = float64(int64(after)-int64(before)) / n
		}
		b.ReportMetric(perSeries, "bytes/series")
	})
}
