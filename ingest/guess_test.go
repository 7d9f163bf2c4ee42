package ingest

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/config"
	"github.com/cardinal-gateway/cardinal/wire"
)

// TestGuessedLabels: once a sender's series are known, the gateway has
// requests decoded guessing where their labels end (LabelGuesser). A body
// malformed where the decoder guessed still gets the decoder's own 400,
// word for word, and nothing of it is forwarded; a body whose series hold
// several samples, which the guesses get wrong, is acknowledged with its
// true counts.
func TestGuessedLabels(t *testing.T) {
	cfg, err := config.Parse([]byte(pipelineConfig))
	if err != nil {
		t.Fatal(err)
	}
	sender := &countingBodies{}
	h, g := newGatewayHandler(t, cfg, sender)

	known := &prompb.WriteRequest{}
	for i := range 20 {
		known.Timeseries = append(known.Timeseries, prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "instance", Value: "i" + strconv.Itoa(i)}, {Name: "job", Value: "a"}},
			Samples: []prompb.Sample{{Value: 1, Timestamp: 1_700_000_000_000}},
		})
	}
	raw, err := known.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if w := post(h, snappy.Encode(nil, raw), nil); w.Code != http.StatusNoContent {
			t.Fatalf("known series: %d %s", w.Code, w.Body)
		}
	}
	if !g.DeferLabels() || !g.GuessLabels() {
		t.Fatal("the gateway does not ask for guessed labels on known traffic: the test proves nothing")
	}

	// A label field whose name runs past its end, before a well-formed
	// sample: the guess takes it for labels.
	sample := []byte{0x12, 0x10, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0x80, 0xd0, 0xac, 0xf3, 0xbc, 0x31}
	bad := append([]byte{0x0a, 0x02, 0x0a, 0x05}, sample...)
	body := append(append([]byte(nil), raw...), 0x0a, byte(len(bad)))
	body = append(body, bad...)
	var strict wire.Request
	strictErr := strict.Unmarshal(body)
	if strictErr == nil {
		t.Fatal("the malformed body decodes")
	}
	var guessed wire.Request
	guessed.SetDeferLabels(true)
	guessed.SetGuessLabels(true)
	if err := guessed.Unmarshal(body); err != nil || guessed.Guessed() == 0 {
		t.Fatalf("guessing: %v, %d guessed: the test proves nothing", err, guessed.Guessed())
	}
	before := sender.n.Load()
	w := post(h, snappy.Encode(nil, body), nil)
	want := "cannot decode remote write 1.0 (prometheus.WriteRequest): " + strictErr.Error()
	if w.Code != http.StatusBadRequest || !bytes.Contains(w.Body.Bytes(), []byte(want)) {
		t.Fatalf("malformed where guessed: %d %q, want 400 %q", w.Code, w.Body, want)
	}
	if sender.n.Load() != before {
		t.Fatal("a malformed request was forwarded")
	}

	// The known series again, each with two samples.
	two := &prompb.WriteRequest{}
	for _, ts := range known.Timeseries {
		ts.Samples = []prompb.Sample{{Value: 2, Timestamp: 1_700_000_015_000}, {Value: 3, Timestamp: 1_700_000_030_000}}
		two.Timeseries = append(two.Timeseries, ts)
	}
	raw2, err := two.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !g.GuessLabels() {
		t.Fatal("guessing off before the two-sample body: the test proves nothing")
	}
	w = post(h, snappy.Encode(nil, raw2), nil)
	if w.Code != http.StatusNoContent || w.Header().Get("X-Prometheus-Remote-Write-Samples-Written") != "40" {
		t.Fatalf("two samples a series: %d, %s samples written, want 204 and 40: %s", w.Code, w.Header().Get("X-Prometheus-Remote-Write-Samples-Written"), w.Body)
	}
	if g.GuessLabels() {
		t.Fatal("still guessing after a request whose guesses were all wrong")
	}
}

// countingBodies is a downstream that accepts everything and counts the
// bodies.
type countingBodies struct{ n atomic.Int64 }

func (s *countingBodies) Send(context.Context, []byte) error { s.n.Add(1); return nil }

func (s *countingBodies) Close() {}
