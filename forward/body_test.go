package forward

import (
	"errors"
	"io"
	"testing"
)

func TestBodyGuard(t *testing.T) {
	t.Parallel()
	body := []byte("remote-write payload")
	g := &bodyGuard{body: body}

	first, _ := g.reader()
	p := make([]byte, 6)
	if n, err := first.Read(p); n != 6 || err != nil || string(p) != "remote" {
		t.Fatalf("Read = %d, %v, %q", n, err, p[:n])
	}
	// GetBody starts over from the first byte, whatever the other reader did.
	second, _ := g.reader()
	if got, err := io.ReadAll(second); err != nil || string(got) != string(body) {
		t.Fatalf("ReadAll = %q, %v; want %q", got, err, body)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}

	g.release()
	if n, err := first.Read(p); n != 0 || !errors.Is(err, errBodyReleased) {
		t.Errorf("Read after release = %d, %v; want 0, errBodyReleased", n, err)
	}
	third, _ := g.reader()
	if n, err := third.Read(p); n != 0 || !errors.Is(err, errBodyReleased) {
		t.Errorf("Read of a new reader after release = %d, %v; want 0, errBodyReleased", n, err)
	}
	if string(body) != "remote-write payload" {
		t.Errorf("the caller's body changed: %q", body)
	}
}
