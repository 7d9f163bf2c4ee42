package merge

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzLoadState: a corrupt merge state file is an error, never a panic.
func FuzzLoadState(f *testing.F) {
	f.Add([]byte(stateMagic))
	f.Add([]byte(stateMagic + "0123456789abcdef"))
	f.Add([]byte(stateMagic + "0123456789abc"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "merge.state")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		m := New(Options{Rules: Rules{MaxInputs: 10, Staleness: 1000 * time.Hour}, Now: func() time.Time { return time.UnixMilli(1 << 40) }})
		n, err := m.LoadState(path)
		if err == nil && n > (len(data)-len(stateMagic))/16 {
			t.Fatalf("restored %d outputs from %d bytes", n, len(data))
		}
	})
}
