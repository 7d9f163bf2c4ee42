package ingest

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/config"
	"github.com/cardinal-gateway/cardinal/gateway"
	"github.com/cardinal-gateway/cardinal/internal/rw2conv"
	"github.com/cardinal-gateway/cardinal/wire"
)

// checkingSender is a 1.0 downstream in process: every body must be one
// Prometheus decodes, and no series may keep a label the rules drop.
type checkingSender struct {
	mu  sync.Mutex
	err error
}

func (s *checkingSender) Send(_ context.Context, body []byte) error {
	raw, err := snappy.Decode(nil, body)
	var req prompb.WriteRequest
	if err == nil {
		err = req.Unmarshal(raw)
	}
	for _, ts := range req.Timeseries {
		for _, l := range ts.Labels {
			if l.Name == "request_id" {
				err = errors.New("request_id reached the downstream")
			}
		}
	}
	if err != nil {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
	}
	return nil
}

func (s *checkingSender) Close() {}

const pipelineConfig = `
downstream: {url: "http://127.0.0.1:1/"}
relabel_configs:
  - {action: labeldrop, regex: request_id|pod}
merge: {flush_interval: 1s}
trace_sampling: {labels: [trace_id], ratio: 0.5}
limits: {workload_labels: [namespace, app], max_series_per_workload: 50}
`

// FuzzPipeline sends any body, as remote write 1.0 or 2.0, through the
// handler and a real gateway with rules, merging, trace sampling and caps,
// twice, then the merger's final flush: nothing may panic, the sender gets a
// status of the protocol, the Written headers never exceed what the body
// held, and the downstream only ever gets bodies Prometheus decodes, without
// the dropped labels.
func FuzzPipeline(f *testing.F) {
	gen := meshgen.New(meshgen.Config{Workloads: 4, PodsPerWorkload: 2, Churn: true, Seed: 3})
	for step := range 2 {
		pb := gen.WriteRequests(step, 1_700_000_000_000+int64(step)*15_000, 20)[0]
		v1, err := pb.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		v2, err := rw2conv.FromV1(pb).Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(v1, false)
		f.Add(v2, true)
	}
	f.Add([]byte{0x22, 0x00, 0x22, 0x08, '_', '_', 'n', 'a', 'm', 'e', '_', '_', 0x22, 0x01, 'x', 0x2a, 0x04, 0x0a, 0x02, 0x01, 0x02}, true)
	f.Add([]byte{0x2a, 0x00}, true)

	cfg, err := config.Parse([]byte(pipelineConfig))
	if err != nil {
		f.Fatal(err)
	}
	// A gateway per input: the fuzzer must be able to replay an input
	// alone, which state carried over from earlier inputs would defeat.
	newPipeline := func(t *testing.T) (*Handler, *gateway.Gateway, *checkingSender) {
		sender := &checkingSender{}
		h, g := newGatewayHandler(t, cfg, sender)
		return h, g, sender
	}

	f.Fuzz(func(t *testing.T, raw []byte, v2 bool) {
		ct := "application/x-protobuf"
		var counted wire.Request
		var err error
		if v2 {
			ct = ctV2
			err = counted.UnmarshalV2(raw)
		} else {
			err = counted.Unmarshal(raw)
		}
		floats, hists, exemplars := counted.Counts()
		h, g, sender := newPipeline(t)
		body := snappy.Encode(nil, raw)
		w := post(h, body, setHeader("Content-Type", ct))
		// The same again, as a sender's next scrape: known inputs take the
		// route cache, and the labels may be decoded on a guess (see
		// LabelGuesser); then the final flush delivers the merged series.
		w2 := post(h, body, setHeader("Content-Type", ct))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		g.Run(ctx)
		if (w.Code == http.StatusNoContent) != (w2.Code == http.StatusNoContent) {
			t.Fatalf("the same body answered %d, then %d: %s", w.Code, w2.Code, w2.Body)
		}
		for _, w := range []*httptest.ResponseRecorder{w, w2} {
			checkPipelineAnswer(t, w, err, floats, hists, exemplars)
		}
		sender.mu.Lock()
		defer sender.mu.Unlock()
		if sender.err != nil {
			t.Fatalf("downstream: %v", sender.err)
		}
	})
}

// newGatewayHandler returns a handler in front of a real gateway of cfg
// whose downstream is sender.
func newGatewayHandler(t testing.TB, cfg *config.Config, sender gateway.Sender) (*Handler, *gateway.Gateway) {
	t.Helper()
	g, err := gateway.New(cfg, gateway.Options{
		Registerer: prometheus.NewRegistry(),
		NewSender: func(config.DownstreamConfig, prometheus.Registerer, *slog.Logger) (gateway.Sender, error) {
			return sender, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{Processor: g, Registerer: prometheus.NewRegistry()}), g
}

// checkPipelineAnswer checks FuzzPipeline's answer w to a body that strict
// decoding decodes with err into the counts given.
func checkPipelineAnswer(t *testing.T, w *httptest.ResponseRecorder, err error, floats, hists, exemplars int) {
	t.Helper()
	switch w.Code {
	case http.StatusNoContent, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
	default:
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if err != nil && w.Code == http.StatusNoContent {
		t.Fatalf("a body the decoder refuses (%v) was acknowledged", err)
	}
	for name, most := range map[string]int{
		"X-Prometheus-Remote-Write-Samples-Written":    floats,
		"X-Prometheus-Remote-Write-Histograms-Written": hists,
		"X-Prometheus-Remote-Write-Exemplars-Written":  exemplars,
	} {
		v := w.Header().Get(name)
		if v == "" {
			if w.Code == http.StatusNoContent {
				t.Fatalf("204 without %s", name)
			}
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > most {
			t.Fatalf("%s: %q, the body held %d", name, v, most)
		}
	}
}
