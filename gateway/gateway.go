// Package gateway runs Cardinal's pipeline on one decoded remote-write request:
// sanitize, relabel, encode, compress and forward, in the goroutine that
// serves the request and on the request object in place.
//
// The compiled configuration is immutable and swapped atomically on reload;
// a request in flight finishes with the configuration it started with.
// After warm-up the pipeline up to the forwarder's HTTP call allocates
// nothing.
package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cardinal-gateway/cardinal/config"
	"github.com/cardinal-gateway/cardinal/forward"
	"github.com/cardinal-gateway/cardinal/relabel"
	"github.com/cardinal-gateway/cardinal/wire"
)

// Drop reasons, the values of cardinal_dropped_samples_total's reason label.
const (
	ReasonRelabel = "relabel"
	ReasonInvalid = "invalid"
)

// Sender delivers an encoded, snappy-compressed remote-write 1.0 body. The
// forward package's Client is the production implementation.
type Sender interface {
	Send(ctx context.Context, body []byte) error
	Close()
}

// Options configure a Gateway.
type Options struct {
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// NewSender builds the sender for a configuration; nil means
	// forward.New. Tests and the demo inject their own.
	NewSender func(config.DownstreamConfig, prometheus.Registerer, *slog.Logger) (Sender, error)
}

// Gateway is the pipeline. It is safe for concurrent use.
type Gateway struct {
	opts    Options
	logger  *slog.Logger
	state   atomic.Pointer[state]
	metrics metrics
	pool    sync.Pool
}

// state is one compiled configuration.
type state struct {
	cfg     *config.Config
	relabel *relabel.Program
	sender  Sender
}

type metrics struct {
	received       prometheus.Counter
	forwarded      prometheus.Counter
	droppedRelabel prometheus.Counter
	droppedInvalid prometheus.Counter
}

// workspace is the per-request memory of the pipeline, pooled.
type workspace struct {
	scratch    relabel.Scratch
	encoded    []byte
	compressed []byte
}

// Buffers larger than this are not kept in the pool, so that one huge request
// does not pin its memory forever.
const maxPooledBuffer = 16 << 20

// Result says what the pipeline did with a request that was not rejected.
type Result struct {
	// Invalid counts the series dropped because no receiver accepts them.
	Invalid wire.SanitizeStats
	// Forwarded is the number of samples delivered downstream.
	Forwarded int
	// DroppedByRelabel is the number of samples removed by relabel rules.
	DroppedByRelabel int
}

// New compiles cfg and returns a ready Gateway.
func New(cfg *config.Config, opts Options) (*Gateway, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.NewSender == nil {
		opts.NewSender = NewForwarder
	}
	g := &Gateway{opts: opts, logger: opts.Logger}
	f := promauto.With(opts.Registerer)
	dropped := f.NewCounterVec(prometheus.CounterOpts{
		Name: "cardinal_dropped_samples_total",
		Help: "Samples Cardinal dropped on purpose, by reason.",
	}, []string{"reason"})
	g.metrics = metrics{
		received: f.NewCounter(prometheus.CounterOpts{
			Name: "cardinal_received_samples_total",
			Help: "Samples (float and histogram) received from senders in decodable requests.",
		}),
		forwarded: f.NewCounter(prometheus.CounterOpts{
			Name: "cardinal_forwarded_samples_total",
			Help: "Samples the downstream acknowledged with 2xx.",
		}),
		droppedRelabel: dropped.WithLabelValues(ReasonRelabel),
		droppedInvalid: dropped.WithLabelValues(ReasonInvalid),
	}
	g.pool.New = func() any { return new(workspace) }
	if err := g.Apply(cfg); err != nil {
		return nil, err
	}
	return g, nil
}

// NewForwarder builds a forward.Client from the downstream config.
//
// downstream.timeout bounds one Send as a whole, retries included, and not
// only one attempt: past the sender's own remote_timeout (30s by default in
// Prometheus, the same as Cardinal's default) the sender has given up and
// will resend anyway, so retrying longer only delays its next try.
func NewForwarder(d config.DownstreamConfig, reg prometheus.Registerer, logger *slog.Logger) (Sender, error) {
	retries := d.MaxRetries
	if retries == 0 {
		retries = -1 // forward.Options: 0 means its default, negative means none.
	}
	c, err := forward.New(forward.Options{
		URL:              d.URL,
		HTTPClientConfig: d.HTTPClientConfig,
		Headers:          d.Headers,
		Timeout:          time.Duration(d.Timeout),
		MinBackoff:       time.Duration(d.MinBackoff),
		MaxBackoff:       time.Duration(d.MaxBackoff),
		MaxRetries:       retries,
		UserAgent:        "cardinal",
		Registerer:       reg,
		Logger:           logger,
	})
	if err != nil {
		return nil, err
	}
	return &deadlineSender{Client: c, timeout: time.Duration(d.Timeout)}, nil
}

// deadlineSender gives every Send a total deadline.
type deadlineSender struct {
	*forward.Client
	timeout time.Duration
}

func (s *deadlineSender) Send(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.Client.Send(ctx, body)
}

// Compile checks that cfg can be turned into a running pipeline, without
// touching any running one. `cardinal check config` uses it.
func Compile(cfg *config.Config) (*relabel.Program, error) {
	prog, err := relabel.Compile(cfg.RelabelConfigs)
	if err != nil {
		return nil, fmt.Errorf("relabel_configs: %w", err)
	}
	return prog, nil
}

// Apply compiles cfg and swaps it in atomically. On error the running
// configuration stays as it was.
func (g *Gateway) Apply(cfg *config.Config) error {
	prog, err := Compile(cfg)
	if err != nil {
		return err
	}
	sender, err := g.opts.NewSender(cfg.Downstream, g.opts.Registerer, g.logger)
	if err != nil {
		return fmt.Errorf("downstream: %w", err)
	}
	old := g.state.Swap(&state{cfg: cfg, relabel: prog, sender: sender})
	if old != nil {
		// Requests still using the old sender keep working: Close only
		// releases idle connections.
		old.sender.Close()
	}
	return nil
}

// Config returns the configuration in force.
func (g *Gateway) Config() *config.Config { return g.state.Load().cfg }

// MaxRequestBytes is the decompressed size limit in force.
func (g *Gateway) MaxRequestBytes() int { return g.state.Load().cfg.Receive.MaxRequestBytes }

// Probe sends an empty write request downstream, to learn whether the
// downstream is reachable and accepts Cardinal's credentials.
func (g *Gateway) Probe(ctx context.Context) error {
	// snappy's encoding of zero bytes: an empty WriteRequest.
	return g.state.Load().sender.Send(ctx, []byte{0})
}

// Close releases the sender's idle connections.
func (g *Gateway) Close() {
	if st := g.state.Load(); st != nil {
		st.sender.Close()
	}
}

// Process runs the pipeline on req and forwards what remains. It returns
// only after the downstream acknowledged the data or the sender's context
// ended; a non-nil error says what the sender must be told (see forward.Error).
// req is modified in place and must not be used for anything else afterwards.
func (g *Gateway) Process(ctx context.Context, req *wire.Request) (Result, error) {
	var res Result
	st := g.state.Load()
	g.metrics.received.Add(float64(req.NumSamples()))

	req.Sanitize(&res.Invalid)
	g.metrics.droppedInvalid.Add(float64(res.Invalid.DroppedSamples()))

	ws := g.pool.Get().(*workspace)
	defer g.putWorkspace(ws)
	ws.scratch.Reset()

	res.DroppedByRelabel = g.relabel(st.relabel, &ws.scratch, req)
	g.metrics.droppedRelabel.Add(float64(res.DroppedByRelabel))

	if len(req.Series) == 0 && len(req.Metadata) == 0 {
		return res, nil
	}
	ws.encoded = req.MarshalAppend(ws.encoded[:0])
	ws.compressed = snappy.Encode(ws.compressed[:cap(ws.compressed)], ws.encoded)
	if err := st.sender.Send(ctx, ws.compressed); err != nil {
		return res, err
	}
	res.Forwarded = req.NumSamples()
	g.metrics.forwarded.Add(float64(res.Forwarded))
	return res, nil
}

// relabel applies prog to every series in place and returns the number of
// samples it dropped.
func (g *Gateway) relabel(prog *relabel.Program, scratch *relabel.Scratch, req *wire.Request) int {
	if prog.Len() == 0 {
		return 0
	}
	dropped := 0
	out := req.Series[:0]
	for i := range req.Series {
		s := req.Series[i]
		ls, keep := prog.Apply(scratch, s.Labels)
		// A rule that removed the metric name leaves a series no receiver
		// accepts; sending it would fail the whole request downstream.
		if !keep || wire.GetLabel(ls, "__name__") == nil {
			dropped += len(s.Samples) + len(s.Histograms)
			continue
		}
		s.Labels = ls
		out = append(out, s)
	}
	clear(req.Series[len(out):])
	req.Series = out
	return dropped
}

func (g *Gateway) putWorkspace(ws *workspace) {
	if cap(ws.encoded) > maxPooledBuffer || cap(ws.compressed) > maxPooledBuffer {
		return
	}
	g.pool.Put(ws)
}
