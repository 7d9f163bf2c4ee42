package bytesconv

import "testing"

func TestRoundTrip(t *testing.T) {
	f := func(s string) {
		t.Helper()
		b := Bytes(s)
		if string(b) != s {
			t.Fatalf("Bytes(%q) = %q", s, b)
		}
		if got := String(b); got != s {
			t.Fatalf("String(Bytes(%q)) = %q", s, got)
		}
	}
	f("")
	f("a")
	f("__name__")
	f("istio_requests_total")
}

func TestStringAliases(t *testing.T) {
	b := []byte("abc")
	s := String(b)
	b[0] = 'x'
	if s != "xbc" {
		t.Fatalf("String must alias its input; got %q", s)
	}
	if n := testing.AllocsPerRun(100, func() { _ = String(b) }); n != 0 {
		t.Fatalf("String allocates %v times", n)
	}
}
