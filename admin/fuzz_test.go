package admin

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseLimit: any body gives a limit in range or an error, never a
// panic.
func FuzzParseLimit(f *testing.F) {
	for _, s := range []string{`{"max_series": 5}`, `{"max_series": -1}`, `{"max_series": 1.5}`, `{}`, `[`, `{"max_series": 5}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := parseLimit(body)
		if err == nil && (n < 0 || n > 1<<31-1) {
			t.Fatalf("parseLimit(%q) = %d", body, n)
		}
	})
}

// FuzzLoadState: a corrupt state file is an error, never a panic or a
// negative limit.
func FuzzLoadState(f *testing.F) {
	f.Add([]byte(`{"version": 1, "overrides": {"a/b": 5}}`))
	f.Add([]byte(`{"version": 2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "state.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		m, err := LoadState(path)
		if err != nil {
			return
		}
		for w, n := range m {
			if n < 0 {
				t.Fatalf("LoadState accepted %q: %d", w, n)
			}
		}
	})
}
