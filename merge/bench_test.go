package merge

import (
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"github.com/cardinal-gateway/cardinal/wire"
)

// BenchmarkRoutePassThrough is the per-series cost of collision detection for
// a known single-input output.
func BenchmarkRoutePassThrough(b *testing.B) {
	m, _, _ := newTestMerger(b, Rules{MaxInputs: 1 << 20})
	const n = 2000
	outs := make([]uint64, n)
	for i := range outs {
		outs[i] = uint64(i)*0x9E3779B97F4A7C15 + 1
	}
	ser := wire.Series{Samples: []wire.Sample{{Value: 1, Timestamp: 1}}}
	tk := m.Begin()
	for _, o := range outs {
		m.Route(tk, o, o, nil, &ser, 1, false)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, o := range outs {
			m.Route(tk, o, o, nil, &ser, 1, false)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
	m.End(tk)
}

// BenchmarkMemoryPerInput measures the heap held per tracked input: once for
// single-input outputs (the common case) and once for inputs of merged
// outputs (10 inputs each). The figures are reported as bytes/input.
func BenchmarkMemoryPerInput(b *testing.B) {
	const total = 200_000
	for _, tc := range []struct {
		name      string
		perOutput int
	}{{"single", 1}, {"merged10", 10}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				m, _, _ := newTestMerger(b, Rules{MaxInputs: 1 << 30, Staleness: time.Hour})
				out := lbls("__name__", "istio_requests_total", "app", "reviews", "namespace", "bookinfo", "response_code", "200")
				ser := wire.Series{Labels: out, Samples: []wire.Sample{{Value: 1, Timestamp: 1}}}
				before := heapInUse()
				tk := m.Begin()
				var key [8]byte
				for i := range total {
					o := uint64(i / tc.perOutput)
					binary.LittleEndian.PutUint64(key[:], o)
					out[1].Value = key[:] // a distinct output label set
					m.Route(tk, uint64(i)+1<<40, o*0x9E3779B97F4A7C15+7, out, &ser, 1, false)
				}
				m.End(tk)
				after := heapInUse()
				b.ReportMetric(float64(after-before)/total, "bytes/input")
				runtime.KeepAlive(m)
			}
		})
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
