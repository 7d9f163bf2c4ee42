package tracesample

import (
	"bytes"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, ex := range formatExamples {
		f.Add([]byte(ex.value))
	}
	for _, s := range []string{
		"", "0", "1", "d", "%", ":::", "%3A%3A%3A", "abc:def:0:1", "abc%3adef%3a0%3a1",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		"0000000000000000", "00000000000000000000000000000000",
		"6f1e2b3c-0d4a-4e5f-9a8b-7c6d5e4f3a2b",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		orig := bytes.Clone(v)
		c, ok := Parse(v)
		if !bytes.Equal(v, orig) {
			t.Fatalf("Parse modified its input: %q -> %q", orig, v)
		}
		if !ok {
			if c != (Context{}) {
				t.Fatalf("Parse(%q): not ok but Context %+v", v, c)
			}
			return
		}
		if c.TraceID == [16]byte{} {
			t.Fatalf("Parse(%q): ok with zero trace id", v)
		}
		if c.HasSpan && c.SpanID == [8]byte{} {
			t.Fatalf("Parse(%q): ok with zero span id", v)
		}
		if !c.HasSpan && c.SpanID != [8]byte{} {
			t.Fatalf("Parse(%q): span id %x without HasSpan", v, c.SpanID)
		}
		// Round trip through the 32-hex form used in exemplars.
		s := AppendTraceID(nil, &c)
		if len(s) != 32 {
			t.Fatalf("AppendTraceID: %q", s)
		}
		c2, ok := Parse(s)
		if !ok || c2.TraceID != c.TraceID || c2.HasSpan {
			t.Fatalf("Parse(%q) = %+v, %v; reparse of %q = %+v, %v", v, c, true, s, c2, ok)
		}
		if c.HasSpan {
			if sp := AppendSpanID(nil, &c); len(sp) != 16 {
				t.Fatalf("AppendSpanID: %q", sp)
			}
		}
		// Parsing is case-insensitive.
		up, _ := Parse(bytes.ToUpper(v))
		if up != c {
			t.Fatalf("Parse(%q) = %+v but upper-case gives %+v", v, c, up)
		}
	})
}
