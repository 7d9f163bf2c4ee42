package tracesample

import "testing"

// formatExamples holds one valid value of every format Parse recognises.
var formatExamples = []struct{ name, value string }{
	{"plain32", "463ac35c9f6413ad48485a3953bb6124"},
	{"plain16", "a2fb4a1d1a96d312"},
	{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	{"traceparent_future", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like"},
	{"b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"},
	{"b3_64", "e457b5a2e4d86bd1-05e3ac9a4f6e3b90-1"},
	{"jaeger", "51729f13a64c2ef3:258169797d519815:51729f13a64c2ef3:1"},
	{"jaeger_url", "4bf92f3577b34da6a3ce929d0e0e4736%3A00f067aa0ba902b7%3A0%3A01"},
}

func TestZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	for _, ex := range formatExamples {
		v := []byte(ex.value)
		var c Context
		var ok bool
		if n := testing.AllocsPerRun(100, func() { c, ok = Parse(v) }); n != 0 {
			t.Errorf("Parse(%s): %v allocs per run", ex.name, n)
		}
		if !ok {
			t.Fatalf("Parse(%s) not ok", ex.name)
		}
		_ = c
	}
	bad := []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g")
	if n := testing.AllocsPerRun(100, func() { Parse(bad) }); n != 0 {
		t.Errorf("Parse(invalid): %v allocs per run", n)
	}

	s, _ := NewSampler(0.1)
	c, _ := Parse([]byte(formatExamples[0].value))
	var kept bool
	if n := testing.AllocsPerRun(100, func() { kept = s.Sample(c.TraceID) }); n != 0 {
		t.Errorf("Sample: %v allocs per run", n)
	}
	_ = kept

	buf := make([]byte, 0, 48)
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendTraceID(buf[:0], &c)
		buf = AppendSpanID(buf, &c)
	}); n != 0 {
		t.Errorf("AppendTraceID/AppendSpanID: %v allocs per run", n)
	}
}
