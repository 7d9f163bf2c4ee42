package forward

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/golang/snappy"
	"github.com/klauspost/compress/s2"
)

// Bodies are compressed with s2's snappy-compatible encoder (faster and
// smaller than golang/snappy's on remote-write bodies); every receiver
// decodes them with a plain snappy decoder, which must give back the input.
func TestEncodeSnappyDecodesWithSnappy(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 100, 65535, 65536, 65537, 1 << 20, 5<<20 + 3} {
		for _, kind := range []string{"random", "text", "repeat"} {
			src := make([]byte, n)
			switch kind {
			case "random":
				for i := range src {
					src[i] = byte(rng.Uint32())
				}
			case "text":
				words := []string{"__name__", "istio_requests_total", "destination_workload", "reviews-v2", "\x0a\x12"}
				var b bytes.Buffer
				for b.Len() < n {
					b.WriteString(words[rng.IntN(len(words))])
				}
				copy(src, b.Bytes())
			case "repeat":
				for i := range src {
					src[i] = byte(i % 7)
				}
			}
			enc := s2.EncodeSnappy(nil, src)
			dec, err := snappy.Decode(nil, enc)
			if err != nil {
				t.Fatalf("%s %d bytes: snappy cannot decode: %v", kind, n, err)
			}
			if !bytes.Equal(dec, src) {
				t.Fatalf("%s %d bytes: decoded body differs", kind, n)
			}
			if again := s2.EncodeSnappy(nil, src); !bytes.Equal(again, enc) {
				t.Fatalf("%s %d bytes: encoding is not deterministic", kind, n)
			}
		}
	}
}
