package wire

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/prompb"
)

// Prometheus' receiver drops a series whose label names or values are not
// valid UTF-8; forwarded, one would cost the whole request. (Found by the
// gateway fuzz target: such a value as a workload name broke /metrics.)
func TestSanitizeDropsInvalidUTF8(t *testing.T) {
	f := func(name, value string, want bool) {
		t.Helper()
		r := Request{Series: []Series{{Labels: []Label{
			{Name: []byte("__name__"), Value: []byte("up")},
			{Name: []byte(name), Value: []byte(value)},
		}, Samples: []Sample{{Value: 1, Timestamp: 1}}}}}
		var st SanitizeStats
		r.Sanitize(&st)
		if kept := len(r.Series) == 1; kept != want {
			t.Errorf("%q=%q kept %v, want %v (%s)", name, value, kept, want, st.Describe())
		}
		if !want && st.Series[InvalidUTF8] != 1 {
			t.Errorf("%q=%q: dropped for %v, want %v", name, value, st.FirstReason, InvalidUTF8)
		}
	}
	f("namespace", "ns\xa6", false)
	f("ns\xff", "x", false)
	f("namespace", "ünïcode ✓", true)
	f("namespace", "plain", true)
}

func TestIsASCII(t *testing.T) {
	for n := 0; n <= 40; n++ {
		b := bytes.Repeat([]byte{'a'}, n)
		if !isASCII(b) {
			t.Fatalf("%d ASCII bytes: not ASCII", n)
		}
		for i := range b {
			b[i] = 0x80
			if isASCII(b) {
				t.Fatalf("0x80 at %d of %d: ASCII", i, n)
			}
			b[i] = 0x7f
		}
	}
}

// Decoded series carry their encoded labels, and Sanitize proves them ASCII
// in one pass; a non-ASCII byte anywhere must still get the per-label check.
func TestSanitizeDecodedUTF8(t *testing.T) {
	for _, c := range []struct {
		value string
		want  bool
	}{{"plain", true}, {"é", true}, {"\xff", false}, {strings.Repeat("x", 200), true}, {strings.Repeat("x", 200) + "\xc3", false}} {
		wr := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
			Labels:  []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "a", Value: c.value}},
			Samples: []prompb.Sample{{Value: 1, Timestamp: 1}},
		}}}
		body, err := wr.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var r Request
		if err := r.Unmarshal(body); err != nil {
			t.Fatal(err)
		}
		var st SanitizeStats
		r.Sanitize(&st)
		if kept := len(r.Series) == 1; kept != c.want {
			t.Errorf("value %q kept %v, want %v (%s)", c.value, kept, c.want, st.Describe())
		}
	}
}
