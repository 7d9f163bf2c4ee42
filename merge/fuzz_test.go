package merge

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzLoadState: a corrupt merge state file is an error, never a panic or
// an allocation out of proportion to its size; what loads is accounted.
func FuzzLoadState(f *testing.F) {
	// A real file to mutate: two merged outputs with live and retired
	// inputs.
	dir := f.TempDir()
	good := filepath.Join(dir, "good.state")
	m0, c, s := newTestMerger(f, Rules{Staleness: time.Minute, ForgetAfter: time.Hour})
	now := c.Now().UnixMilli()
	feed(m0, "x_total", "a", 1, now)
	feed(m0, "x_total", "b", 2, now)
	feed(m0, "y", "a", 3, now)
	feed(m0, "y", "b", 4, now)
	c.Add(time.Second)
	flush(m0, s)
	if err := m0.SaveState(good); err != nil {
		f.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte(stateMagic))
	f.Add([]byte(stateMagicV1 + "0123456789abcdef"))
	f.Add([]byte(stateMagicV1 + "0123456789abc"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m := New(Options{Rules: Rules{MaxInputs: 10, Staleness: 1000 * time.Hour}, Now: c.Now})
		n, err := m.readState("fuzz", bufio.NewReader(bytes.NewReader(data)))
		if err == nil && n > len(data)/8 {
			t.Fatalf("restored %d outputs from %d bytes", n, len(data))
		}
		// Whatever loaded must flush without panicking.
		m.Flush(bg(), (&sink{}).deliver, true)
	})
}
