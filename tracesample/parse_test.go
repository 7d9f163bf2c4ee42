package tracesample

import (
	"encoding/hex"
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	f := func(in, wantTrace, wantSpan string) {
		t.Helper()
		c, ok := Parse([]byte(in))
		if !ok {
			t.Fatalf("Parse(%q): not ok", in)
		}
		if got := string(AppendTraceID(nil, &c)); got != wantTrace {
			t.Fatalf("Parse(%q): trace id %s, want %s", in, got, wantTrace)
		}
		if wantSpan == "" {
			if c.HasSpan || c.SpanID != [8]byte{} {
				t.Fatalf("Parse(%q): unexpected span %x (HasSpan=%v)", in, c.SpanID, c.HasSpan)
			}
			return
		}
		if !c.HasSpan {
			t.Fatalf("Parse(%q): HasSpan false", in)
		}
		if got := string(AppendSpanID(nil, &c)); got != wantSpan {
			t.Fatalf("Parse(%q): span id %s, want %s", in, got, wantSpan)
		}
	}

	// Plain trace ids (B3 multi-header X-B3-TraceId examples).
	f("463ac35c9f6413ad48485a3953bb6124", "463ac35c9f6413ad48485a3953bb6124", "")
	f("463AC35C9F6413AD48485A3953BB6124", "463ac35c9f6413ad48485a3953bb6124", "")
	f("a2fb4a1d1a96d312", "0000000000000000a2fb4a1d1a96d312", "")
	f("00000000000000000000000000000001", "00000000000000000000000000000001", "")

	// W3C traceparent, the specification's examples.
	f("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
	f("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
		"0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
	f("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-0A",
		"4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
	// Future versions: the 00 prefix, then nothing or a '-' and more fields.
	f("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
	f("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
		"4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
	f("fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-",
		"4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")

	// B3 single header, examples from the b3-propagation README.
	f("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
		"80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1")
	f("80f198ee56343ba864fe8b2a57d3eff7-05e3ac9a4f6e3b90-d",
		"80f198ee56343ba864fe8b2a57d3eff7", "05e3ac9a4f6e3b90")
	f("80f198ee56343ba864fe8b2a57d3eff7-05e3ac9a4f6e3b90-0",
		"80f198ee56343ba864fe8b2a57d3eff7", "05e3ac9a4f6e3b90")
	f("80f198ee56343ba864fe8b2a57d3eff7-05e3ac9a4f6e3b90",
		"80f198ee56343ba864fe8b2a57d3eff7", "05e3ac9a4f6e3b90")
	f("e457b5a2e4d86bd1-05e3ac9a4f6e3b90-1",
		"0000000000000000e457b5a2e4d86bd1", "05e3ac9a4f6e3b90")
	f("e457b5a2e4d86bd1-05e3ac9a4f6e3b90-1-e457b5a2e4d86bd1",
		"0000000000000000e457b5a2e4d86bd1", "05e3ac9a4f6e3b90")
	f("80F198EE56343BA864FE8B2A57D3EFF7-05E3AC9A4F6E3B90-D",
		"80f198ee56343ba864fe8b2a57d3eff7", "05e3ac9a4f6e3b90")

	// Jaeger uber-trace-id.
	f("51729f13a64c2ef3:258169797d519815:51729f13a64c2ef3:1",
		"000000000000000051729f13a64c2ef3", "258169797d519815")
	f("4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:01",
		"4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
	f("abc:def:0:1", "00000000000000000000000000000abc", "0000000000000def")
	f("1:1:0:0", "00000000000000000000000000000001", "0000000000000001")
	f("f92f3577b34da6a3ce929d0e0e4736:f067aa0ba902b7:0:1",
		"00f92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
	f("ABC:DEF:0:FF", "00000000000000000000000000000abc", "0000000000000def")
	f("51729f13a64c2ef3%3A258169797d519815%3A0%3A1",
		"000000000000000051729f13a64c2ef3", "258169797d519815")
	f("abc%3adef%3a0%3a1", "00000000000000000000000000000abc", "0000000000000def")
}

func TestParseInvalid(t *testing.T) {
	f := func(in string) {
		t.Helper()
		c, ok := Parse([]byte(in))
		if ok {
			t.Fatalf("Parse(%q) = %+v, want not ok", in, c)
		}
		if c != (Context{}) {
			t.Fatalf("Parse(%q) returned non-zero Context %+v with ok=false", in, c)
		}
	}
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

	f("")
	// Plain: wrong length, non-hex, zero.
	f("463ac35c9f6413ad48485a3953bb612")
	f("463ac35c9f6413ad48485a3953bb61245")
	f("a2fb4a1d1a96d31")
	f("a2fb4a1d1a96d3123")
	f("463ac35c9f6413ad48485a3953bb612g")
	f("463ac35c9f6413ad 8485a3953bb6124")
	f("00000000000000000000000000000000")
	f("0000000000000000")
	f("6f1e2b3c-0d4a-4e5f-9a8b-7c6d5e4f3a2b") // a UUID request id is not a trace id

	// traceparent.
	f("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f("FF-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
	f("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01")
	f(tp + "-")            // version 00 must be exactly 55 characters
	f(tp + "-extra")       // likewise
	f("cc" + tp[2:] + "x") // future version: what follows flags must start with '-'
	f(tp[:54])
	f("0g" + tp[2:])
	f("00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01")
	f("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g")
	f("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01")
	f("00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01")
	f("00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01")
	f("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bx-01")
	f("00-")

	// B3 single header.
	f("0")
	f("1")
	f("d")
	f("80f198ee56343ba864fe8b2a57d3eff7-05e3ac9a4f6e3b90-2")
	f("80f198ee56343ba864fe8b2a57d3eff7-05e3ac9a4f6e3b90-1-")
	f("80f198ee56343ba864fe8b2a57d3eff7-05e3ac9a4f6e3b90-1-e457b5a2e4d86bd")
	f("80f198ee56343ba864fe8b2a57d3eff7-05e3ac9a4f6e3b90-1-e457b5a2e4d86bd1-")
	f("80f198ee56343ba864fe8b2a57d3eff7-05e3ac9a4f6e3b90-1-e457b5a2e4d86bdx")
	f("80f198ee56343ba864fe8b2a57d3eff7-05e3ac9a4f6e3b90-11")
	f("80f198ee56343ba864fe8b2a57d3eff7-05e3ac9a4f6e3b9")
	f("80f198ee56343ba864fe8b2a57d3eff7-05e3ac9a4f6e3b901")
	f("80f198ee56343ba864fe8b2a57d3eff-05e3ac9a4f6e3b90-1")
	f("80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1")
	f("00000000000000000000000000000000-05e3ac9a4f6e3b90-1")
	f("0000000000000000-05e3ac9a4f6e3b90-1")
	f("80f198ee56343ba864fe8b2a57d3effz-05e3ac9a4f6e3b90-1")
	f("80f198ee56343ba864fe8b2a57d3eff7-05e3ac9a4f6e3b9z-1")
	f("80f198ee56343ba864fe8b2a57d3eff7+05e3ac9a4f6e3b90-1")

	// Jaeger.
	f("0:1:0:1")
	f("00000000000000000000000000000000:1:0:1")
	f("abc:0:0:1")
	f("abc:def:0")
	f("abc:def:0:1:")
	f("abc:def:0:1:2")
	f("abc::0:1")
	f(":def:0:1")
	f("abc:def::1")
	f("abc:def:0:")
	f("abc:def:0:100")
	f("4bf92f3577b34da6a3ce929d0e0e47361:def:0:1") // 33 hex digits
	f("abc:00f067aa0ba902b71:0:1")                 // 17 hex digits
	f("abc:def:00f067aa0ba902b71:1")
	f("abx:def:0:1")
	f("abc:def:0:1 ")
	f("abc%3Adef:0:1") // mixed separators
	f("abc%3Bdef%3A0%3A1")
	f("abc%3Adef%3A0%3")
	f("abc%def%3A0%3A1")
	f("%")
	f("%3A%3A%3A")
	f(":::")
}

// TestParsePlainEqualsPadded checks that a 16-hex id and its 32-hex
// zero-padded form parse to the same trace id, whatever the digits.
func TestParsePlainEqualsPadded(t *testing.T) {
	for _, s := range []string{"a2fb4a1d1a96d312", "FFFFFFFFFFFFFFFF", "0000000000000001", "8000000000000000"} {
		a, ok1 := Parse([]byte(s))
		b, ok2 := Parse([]byte(strings.Repeat("0", 16) + s))
		if !ok1 || !ok2 || a != b {
			t.Fatalf("%s: %v %+v vs %v %+v", s, ok1, a, ok2, b)
		}
		want, _ := hex.DecodeString(strings.ToLower(s))
		if string(a.TraceID[8:]) != string(want) || [8]byte(a.TraceID[:8]) != [8]byte{} {
			t.Fatalf("%s: trace id %x", s, a.TraceID)
		}
	}
}

func TestAppendIDs(t *testing.T) {
	c := Context{
		TraceID: [16]byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10},
		SpanID:  [8]byte{0xa0, 0x0b, 0, 0, 0, 0, 0, 0xff},
		HasSpan: true,
	}
	if got := string(AppendTraceID([]byte("x="), &c)); got != "x=0123456789abcdeffedcba9876543210" {
		t.Fatalf("AppendTraceID = %q", got)
	}
	if got := string(AppendSpanID(nil, &c)); got != "a00b0000000000ff" {
		t.Fatalf("AppendSpanID = %q", got)
	}
}
