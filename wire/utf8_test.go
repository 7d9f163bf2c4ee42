package wire

import "testing"

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
