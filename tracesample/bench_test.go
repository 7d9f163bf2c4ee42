package tracesample

import "testing"

func BenchmarkParse(b *testing.B) {
	for _, ex := range formatExamples {
		b.Run(ex.name, func(b *testing.B) {
			v := []byte(ex.value)
			b.ReportAllocs()
			b.SetBytes(int64(len(v)))
			for b.Loop() {
				if _, ok := Parse(v); !ok {
					b.Fatal("not ok")
				}
			}
		})
	}
	b.Run("invalid_uuid", func(b *testing.B) {
		v := []byte("6f1e2b3c-0d4a-4e5f-9a8b-7c6d5e4f3a2b")
		b.ReportAllocs()
		b.SetBytes(int64(len(v)))
		for b.Loop() {
			if _, ok := Parse(v); ok {
				b.Fatal("ok")
			}
		}
	})
}

func BenchmarkSample(b *testing.B) {
	s, _ := NewSampler(0.1)
	ids := make([][16]byte, 1024)
	for i := range ids {
		for j := range ids[i] {
			ids[i][j] = byte(i*31 + j*17)
		}
	}
	b.ReportAllocs()
	kept, i := 0, 0
	for b.Loop() {
		if s.Sample(ids[i&1023]) {
			kept++
		}
		i++
	}
	_ = kept
}

func BenchmarkAppendTraceID(b *testing.B) {
	c, _ := Parse([]byte(formatExamples[0].value))
	buf := make([]byte, 0, 32)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendTraceID(buf[:0], &c)
	}
}
