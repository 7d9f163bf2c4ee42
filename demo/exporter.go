package demo

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
)

// Exporter serves the demo's mesh traffic (Istio, Envoy and Linkerd series,
// with injected request ids, trace ids, user agents and paths) as a
// Prometheus scrape target: every scrape is one step further, counters
// growing. The quick start scrapes it with a real Prometheus.
type Exporter struct {
	gen   *meshgen.Generator
	steps atomic.Int64
}

// NewExporter returns an exporter of opts' traffic.
func NewExporter(opts Options) (*Exporter, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &Exporter{gen: meshgen.New(meshgen.Config{
		Workloads:       opts.Workloads,
		PodsPerWorkload: opts.PodsPerWorkload,
		Seed:            opts.Seed,
	})}, nil
}

// ServeHTTP writes the next step's exposition.
func (e *Exporter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	step := int(e.steps.Add(1) - 1)
	w.Header().Set("Content-Type", meshgen.TextContentType)
	_ = e.gen.WriteText(w, step)
}

// Serve serves the exporter on addr (any path) until ctx ends.
func (e *Exporter) Serve(ctx context.Context, addr string, logger *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second}
	logger.Info("serving mesh traffic for scraping", "address", "http://"+ln.Addr().String()+"/metrics", "series", e.gen.NumSeries())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
