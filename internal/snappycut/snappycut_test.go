package snappycut

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/golang/snappy"
	"github.com/klauspost/compress/s2"
)

// without returns raw with the ranges of cuts removed: what a cut block
// must decode to.
func without(raw []byte, cuts []int) []byte {
	var out []byte
	prev := 0
	for i := 0; i < len(cuts); i += 2 {
		out = append(out, raw[prev:cuts[i]]...)
		prev = cuts[i+1]
	}
	return append(out, raw[prev:]...)
}

// textLike returns n bytes of repetitive, label-like text, which snappy
// compresses with many copies of every length and distance.
func textLike(rng *rand.Rand, n int) []byte {
	words := []string{"destination_workload", "source_app", "istio_requests_total", "reporter", "=", "\n", "\x0a\x14", "response_code", "200", "503", "namespace", "default"}
	var b []byte
	for len(b) < n {
		switch rng.IntN(8) {
		case 0:
			b = append(b, byte(rng.IntN(256)))
		case 1:
			// A long run: overlapping copies.
			b = append(b, bytes.Repeat([]byte{byte('a' + rng.IntN(3))}, 1+rng.IntN(200))...)
		case 2:
			// A repeat from far back: copy4 distances.
			if len(b) > 70000 {
				at := rng.IntN(len(b) - 64)
				b = append(b, b[at:at+64]...)
				continue
			}
			fallthrough
		default:
			b = append(b, words[rng.IntN(len(words))]...)
		}
	}
	return b[:n]
}

// randomCuts returns ascending ranges within [0, n), some empty, some
// adjacent to each other or to the ends.
func randomCuts(rng *rand.Rand, n, count int) []int {
	var cuts []int
	at := 0
	for range count {
		if at >= n {
			break
		}
		start := at + rng.IntN(max(1, (n-at)/max(1, count/2)))
		if rng.IntN(6) == 0 {
			start = at
		}
		start = min(start, n)
		end := min(n, start+rng.IntN(300))
		if rng.IntN(8) == 0 {
			end = start
		}
		cuts = append(cuts, start, end)
		at = end
	}
	return cuts
}

func encoders() map[string]func([]byte) []byte {
	return map[string]func([]byte) []byte{
		"golang/snappy":       func(b []byte) []byte { return snappy.Encode(nil, b) },
		"s2.EncodeSnappy":     func(b []byte) []byte { return s2.EncodeSnappy(nil, b) },
		"s2.EncodeSnappyBest": func(b []byte) []byte { return s2.EncodeSnappyBest(nil, b) },
	}
}

// TestCutDecodesToTheKeptBytes is the differential test: whatever encoder
// wrote the block and wherever the cuts fall, the cut block decodes, by
// golang/snappy, to exactly the bytes outside the cuts.
func TestCutDecodesToTheKeptBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for name, enc := range encoders() {
		for trial := range 300 {
			n := 1 + rng.IntN(1<<(4+trial%14))
			raw := textLike(rng, n)
			src := enc(raw)
			cuts := randomCuts(rng, n, rng.IntN(40))
			got, err := Cut(nil, src, raw, cuts, -1)
			if err != nil {
				t.Fatalf("%s, %d bytes, cuts %v: %v", name, n, cuts, err)
			}
			dec, err := snappy.Decode(nil, got)
			if err != nil {
				t.Fatalf("%s, %d bytes, cuts %v: the cut block does not decode: %v", name, n, cuts, err)
			}
			if want := without(raw, cuts); !bytes.Equal(dec, want) {
				t.Fatalf("%s, %d bytes, cuts %v: decodes to %d bytes, want %d", name, n, cuts, len(dec), len(want))
			}
		}
	}
}

// TestCutKeepsTheCompression: with no cut the block is as small as the
// original (copies are only re-encoded), and with cuts it stays far below
// the kept bytes.
func TestCutKeepsTheCompression(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	raw := textLike(rng, 1<<20)
	src := snappy.Encode(nil, raw)
	got, err := Cut(nil, src, raw, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) > len(src)+len(src)/100 {
		t.Errorf("uncut block grew from %d to %d bytes", len(src), len(got))
	}
	cuts := randomCuts(rng, len(raw), 50)
	got, err = Cut(nil, src, raw, cuts, -1)
	if err != nil {
		t.Fatal(err)
	}
	kept := len(without(raw, cuts))
	if len(got) > 2*len(src) || len(got) > kept/2 {
		t.Errorf("cut block is %d bytes for %d kept bytes (the original block was %d)", len(got), kept, len(src))
	}
}

func TestCutBudget(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	raw := textLike(rng, 1<<16)
	src := snappy.Encode(nil, raw)
	// Cutting every other 100 bytes breaks most copies.
	var cuts []int
	for at := 0; at+100 < len(raw); at += 200 {
		cuts = append(cuts, at, at+100)
	}
	if _, err := Cut(nil, src, raw, cuts, 100); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("err %v, want ErrOverBudget", err)
	}
	if _, err := Cut(nil, src, raw, cuts, -1); err != nil {
		t.Fatalf("unlimited budget: %v", err)
	}
}

func TestCutRejectsWhatDoesNotMatch(t *testing.T) {
	raw := []byte("abcdefabcdefabcdef, abcdefabcdef")
	src := snappy.Encode(nil, raw)
	for _, c := range []struct {
		name string
		src  []byte
		raw  []byte
		cuts []int
	}{
		{"empty block", nil, raw, nil},
		{"wrong length", src, raw[1:], nil},
		{"odd cuts", src, raw, []int{1}},
		{"descending cuts", src, raw, []int{5, 6, 2, 3}},
		{"reversed range", src, raw, []int{5, 4}},
		{"cut past the end", src, raw, []int{5, len(raw) + 1}},
		{"truncated block", src[:len(src)-1], raw, nil},
		{"copy before the start", []byte{byte(len(raw)), 0x01<<2 | tagCopy2, 5, 0}, raw, nil},
		{"zero offset", append([]byte{byte(len(raw)), 0}, append([]byte{'a'}, 0x05<<2|tagCopy2, 0, 0)...), raw, nil},
	} {
		if _, err := Cut(nil, c.src, c.raw, c.cuts, -1); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", c.name, err)
		}
	}
}

func TestAppendCopyForms(t *testing.T) {
	// Every length with every form of offset decodes back: the split of
	// long copies and the choice of element.
	base := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz"), 2500)
	for _, off := range []int{1, 7, 2047, 2048, 65535, 65536, 80000} {
		for length := 1; length <= 200; length++ {
			prefix := base[:off]
			blk := binaryLen(len(prefix) + length)
			blk = appendLiteral(blk, prefix)
			blk = appendCopy(blk, off, length)
			dec, err := snappy.Decode(nil, blk)
			if err != nil {
				t.Fatalf("offset %d length %d: %v", off, length, err)
			}
			want := append([]byte(nil), prefix...)
			for i := range length {
				want = append(want, want[len(want)-off])
				_ = i
			}
			if !bytes.Equal(dec, want) {
				t.Fatalf("offset %d length %d: wrong bytes", off, length)
			}
		}
	}
}

func binaryLen(n int) []byte {
	var b []byte
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	return append(b, byte(n))
}

// FuzzCut: on any block and any cuts, Cut never panics, and whatever it
// returns without error decodes to the kept bytes.
func FuzzCut(f *testing.F) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 8 {
		raw := textLike(rng, 1+rng.IntN(5000))
		f.Add(snappy.Encode(nil, raw), []byte{3, 17, 40, 41, 90})
	}
	f.Add([]byte{0}, []byte{})
	f.Fuzz(func(t *testing.T, src []byte, cutBytes []byte) {
		// A forged length would make snappy.Decode allocate it.
		n, err := snappy.DecodedLen(src)
		if err != nil || n > 1<<20 {
			_, _ = Cut(nil, src, make([]byte, len(cutBytes)), nil, -1)
			return
		}
		raw, err := snappy.Decode(nil, src)
		if err != nil {
			// Not a block golang/snappy decodes: Cut must refuse it or
			// at least not panic, against any raw.
			_, _ = Cut(nil, src, make([]byte, len(cutBytes)*100), nil, -1)
			return
		}
		var cuts []int
		at := 0
		for i := 0; i+1 < len(cutBytes); i += 2 {
			start := at + int(cutBytes[i])
			end := start + int(cutBytes[i+1])
			if end > len(raw) {
				break
			}
			cuts = append(cuts, start, end)
			at = end
		}
		got, err := Cut(nil, src, raw, cuts, -1)
		if err != nil {
			t.Fatalf("a block golang/snappy decodes is refused: %v", err)
		}
		dec, err := snappy.Decode(nil, got)
		if err != nil {
			t.Fatalf("the cut block does not decode: %v", err)
		}
		if want := without(raw, cuts); !bytes.Equal(dec, want) {
			t.Fatalf("decodes to %d bytes, want %d", len(dec), len(want))
		}
	})
}
