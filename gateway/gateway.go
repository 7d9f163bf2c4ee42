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
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cardinal-gateway/cardinal/cardinality"
	"github.com/cardinal-gateway/cardinal/cluster"
	"github.com/cardinal-gateway/cardinal/config"
	"github.com/cardinal-gateway/cardinal/forward"
	"github.com/cardinal-gateway/cardinal/internal/freelist"
	"github.com/cardinal-gateway/cardinal/internal/rematch"
	"github.com/cardinal-gateway/cardinal/internal/selector"
	"github.com/cardinal-gateway/cardinal/internal/snappycut"
	"github.com/cardinal-gateway/cardinal/limiter"
	"github.com/cardinal-gateway/cardinal/merge"
	"github.com/cardinal-gateway/cardinal/relabel"
	"github.com/cardinal-gateway/cardinal/wire"
)

// Drop reasons, the values of cardinal_dropped_samples_total's reason label.
const (
	ReasonRelabel       = "relabel"
	ReasonInvalid       = "invalid"
	ReasonMergeCapacity = "merge_capacity"
	ReasonLimit         = "limit"
	// ReasonMerged: absorbed into a merged output, which the merger emits
	// (cardinal_forwarded_samples_total{path="merged"}).
	ReasonMerged = "merged"
	// ReasonRejected: the downstream refused the series on its own.
	ReasonRejected = "rejected"
)

// errMergedUndeliverable answers a request whose samples were absorbed into
// merged outputs while the merger cannot deliver them: acknowledged, they
// would live in memory only. The sender retries; its retry's samples are
// recognised by their timestamps and add nothing.
var errMergedUndeliverable = &forward.Error{
	Status:     503,
	RetryAfter: time.Second,
	Msg:        "merged series cannot be delivered downstream right now; retry",
}

// Paths of cardinal_forwarded_samples_total.
const (
	PathPassthrough = "passthrough"
	PathMerged      = "merged"
	// PathPeer: handed to the replica of the cluster that owns the
	// workload, which forwards or merges them (and counts them again).
	PathPeer = "peer"
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
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Cluster, when set, is the cluster this replica is in: series of
	// workloads other replicas own are forwarded to them.
	Cluster *cluster.Cluster
}

// Gateway is the pipeline. It is safe for concurrent use.
type Gateway struct {
	opts    Options
	logger  *slog.Logger
	now     func() time.Time
	state   atomic.Pointer[state]
	merger  *merge.Merger
	limiter *limiter.Limiter
	routes  *routeCache
	gens    atomic.Uint64 // configuration generations, for routes
	// deferLabels: the last request routed needed the labels of at most
	// half its series decoded (see DeferLabels).
	deferLabels atomic.Bool
	// guessOff: the last request decoded guessing where labels end
	// (wire.Request.SetGuessLabels) had most guesses wrong, so requests
	// are decoded without (but for one in guessRetry, to notice when the
	// traffic changes back). It counts those requests.
	guessOff atomic.Uint32
	metrics  metrics

	traceMetrics traceMetrics
	pool         *freelist.List[workspace]
	delivery     *forward.DeliverMetrics

	// The merger's deliveries' buffers; only its flusher uses them.
	flushScratch forward.Scratch

	// est holds the estimates and the guard (estimates.go).
	est estimates
	// applyMu serializes the state swaps of Apply and republish.
	applyMu sync.Mutex

	// cluster and forwarder are nil outside a cluster (cluster.go).
	cluster   *cluster.Cluster
	forwarder *cluster.Forwarder
}

// state is one compiled configuration.
type state struct {
	gen     uint64
	cfg     *config.Config
	relabel *relabel.Program
	rules   merge.Rules
	trace   *traceRules // nil: trace sampling off
	// scope, when set, is what the rules, trace sampling and limits apply
	// to; other series pass through untouched.
	scope  *selector.Set
	sender Sender
	target forward.Target // sender's, resolved once
	est    *estState      // nil: estimates and guard off
	// viewID is the cluster view the routes of gen are computed under:
	// a request whose view differs (a change being published) does not
	// use the route cache.
	viewID uint64
}

type metrics struct {
	received        prometheus.Counter
	forwarded       prometheus.Counter
	forwardedMerged prometheus.Counter
	forwardedPeers  prometheus.Counter
	droppedMerged   prometheus.Counter
	droppedRejected prometheus.Counter
	droppedRelabel  prometheus.Counter
	droppedInvalid  prometheus.Counter
	droppedMerge    prometheus.Counter
	droppedLimit    prometheus.Counter
}

// workspace is the per-request memory of the pipeline, pooled.
type workspace struct {
	scratch  relabel.Scratch
	orig     []wire.Label // a series' labels before relabeling
	overflow []wire.Label // labels of folded series, valid for the request
	hashBuf  []byte
	keyBuf   []byte
	// Exemplars made from trace ids, and the outputs that got one.
	exemplars   []wire.Exemplar
	exLabels    []wire.Label
	exBytes     []byte
	exemplified map[uint64]struct{}
	// fwd holds the delivery's buffers; onReject is ws.reject, bound once
	// so that passing it allocates nothing.
	fwd      forward.Scratch
	onReject func(forward.Rejection)
	rejected Rejected
	// Estimates and guard: the workload name, the observation, and the
	// relabeled labels of a route-cache hit.
	wlBuf     []byte
	obs       cardinality.Observation
	obsLabels []wire.Label
	// The group of the series being routed, once known (groupOf).
	grpKey  uint64
	grpName []byte
	grpOK   bool
	// cluster: the request's parts for other replicas; fromPeer: it was
	// forwarded by one.
	cluster  clusterWork
	fromPeer bool
	// unchanged: route left every series of the request as it came;
	// keptAsCame: it left every series it kept as it came (it may have
	// removed others).
	unchanged, keptAsCame bool
	// The ranges of the request's body route removed, and that body
	// without them, compressed (see cutOriginal).
	cuts    []int
	cutBody []byte
	// The request's input hashes, what the route cache knows of them, and
	// the cache's scratch space (see routeCache.getAll).
	ins     []uint64
	cached  []cachedRoute
	order   []int32
	trusted []bool
	// looked: ins and cached line up with the request's series.
	looked bool
	// The pass-route inputs, their outputs and limiter hashes, for the
	// limiter's and the merger's Prefetch, and what those read.
	known, knownOuts, knownLim []uint64
	sink                       uint64
}

// Rejected describes the series the downstream refused on their own.
type Rejected struct {
	Series, Samples int
	// Floats, Histograms and Exemplars split what the refused series held.
	Floats, Histograms, Exemplars int
	// Reason and Detail describe the first one: the reason (a forward.Reason
	// value) and the downstream's answer.
	Reason, Detail string
}

// reject records one series the downstream refused.
func (ws *workspace) reject(r forward.Rejection) {
	if ws.rejected.Series == 0 && r.Err != nil {
		ws.rejected.Reason, ws.rejected.Detail = r.Err.Reason, r.Err.Msg
	}
	ws.rejected.Series++
	ws.rejected.Samples += r.Samples
	ws.rejected.Histograms += r.Histograms
	ws.rejected.Floats += r.Samples - r.Histograms
	ws.rejected.Exemplars += r.Exemplars
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
	// Merged is the number of samples absorbed into merged series, which
	// the merger emits on its own schedule.
	Merged int
	// DroppedByMerge is the number of samples of new inputs of merged
	// series that could not be tracked (merge.max_inputs reached).
	DroppedByMerge int
	// Folded is the number of samples of series over their workload's cap,
	// rewritten to the workload's overflow series.
	Folded int
	// ToPeers is the number of samples handed to the replicas that own
	// their workloads, and acknowledged by them.
	ToPeers int
	// Rejected: series the downstream refused on their own. They were
	// isolated by splitting the request and the rest was delivered.
	Rejected Rejected
	// Recounted says that the request's float samples, histogram samples
	// and exemplars, as Received counts them, may not be what the caller
	// counted before Process: series decoded on a guess (see GuessLabels)
	// turned out to hold more or fewer.
	Recounted bool
	Received  [3]int
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
	if opts.Now == nil {
		opts.Now = time.Now
	}
	g := &Gateway{opts: opts, logger: opts.Logger, now: opts.Now}
	f := promauto.With(opts.Registerer)
	dropped := f.NewCounterVec(prometheus.CounterOpts{
		Name: "cardinal_dropped_samples_total",
		Help: "Received samples not forwarded as they came, by reason: relabel (rules), invalid (no receiver accepts them), limit (folded into an overflow series), merge_capacity (merge.max_inputs reached), merged (absorbed into a merged output), rejected (the downstream refused them). received = forwarded{path=\"passthrough\"} + the sum of these.",
	}, []string{"reason"})
	forwarded := f.NewCounterVec(prometheus.CounterOpts{
		Name: "cardinal_forwarded_samples_total",
		Help: "Samples the downstream acknowledged, by path: passthrough (forwarded as they came), merged (emitted by the merger) or peer (acknowledged by the replica of the cluster that owns their workload).",
	}, []string{"path"})
	g.metrics = metrics{
		received: f.NewCounter(prometheus.CounterOpts{
			Name: "cardinal_received_samples_total",
			Help: "Samples (float and histogram) received from senders in decodable requests.",
		}),
		forwarded:       forwarded.WithLabelValues(PathPassthrough),
		forwardedMerged: forwarded.WithLabelValues(PathMerged),
		forwardedPeers:  forwarded.WithLabelValues(PathPeer),
		droppedMerged:   dropped.WithLabelValues(ReasonMerged),
		droppedRejected: dropped.WithLabelValues(ReasonRejected),
		droppedRelabel:  dropped.WithLabelValues(ReasonRelabel),
		droppedInvalid:  dropped.WithLabelValues(ReasonInvalid),
		droppedMerge:    dropped.WithLabelValues(ReasonMergeCapacity),
		droppedLimit:    dropped.WithLabelValues(ReasonLimit),
	}
	exemplars := f.NewCounterVec(prometheus.CounterOpts{
		Name: "cardinal_exemplars_added_total",
		Help: "Exemplars made from trace-id labels, by why they were kept: sampled (by trace id) or error (always_keep).",
	}, []string{"reason"})
	g.traceMetrics = traceMetrics{
		addedSampled: exemplars.WithLabelValues(keptSampled),
		addedError:   exemplars.WithLabelValues(keptError),
		malformed: f.NewCounter(prometheus.CounterOpts{
			Name: "cardinal_trace_ids_malformed_total",
			Help: "Trace-id label values that could not be parsed; the label is dropped without an exemplar.",
		}),
	}
	g.pool = freelist.New(2*runtime.GOMAXPROCS(0), func() *workspace {
		ws := &workspace{exemplified: map[uint64]struct{}{}}
		ws.onReject = ws.reject
		ws.fwd.Metadata = g.merger
		return ws
	})
	delivery, err := forward.NewDeliverMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	g.delivery = delivery
	rules, err := mergeRules(cfg)
	if err != nil {
		return nil, err
	}
	g.merger = merge.New(merge.Options{Rules: rules, Registerer: opts.Registerer, Logger: opts.Logger, Now: opts.Now})
	g.flushScratch.Metadata = g.merger
	if rules.StateFile != "" {
		n, err := g.merger.LoadState(rules.StateFile)
		if err != nil {
			return nil, err
		}
		opts.Logger.Info("merged outputs restored", "file", rules.StateFile, "outputs", n)
	}
	g.limiter = limiter.New(limiter.Options{Settings: limiterSettings(cfg.Limits), Logger: opts.Logger, Now: opts.Now})
	g.routes = newRouteCache()
	if err := opts.Registerer.Register(g.limiter.Collector()); err != nil {
		return nil, err
	}
	g.cluster = opts.Cluster
	if err := g.Apply(cfg); err != nil {
		return nil, err
	}
	if opts.Cluster != nil {
		g.forwarder = cluster.NewForwarder(opts.Cluster, opts.Registerer)
		opts.Cluster.Subscribe(g.onViewChange)
		// At start this replica cannot know who emitted its workloads'
		// outputs before (a restart, or a move to it): as after a change.
		v := opts.Cluster.View()
		g.merger.RaiseFloor(v.Since.Add(opts.Cluster.Config().HandoverDelay).UnixMilli())
		if err := opts.Registerer.Register(g.ownedCollector()); err != nil {
			return nil, err
		}
	}
	return g, nil
}

func limiterSettings(c config.LimitsConfig) limiter.Settings {
	return limiter.Settings{
		WorkloadLabels: c.WorkloadLabels,
		Default:        c.MaxSeriesPerWorkload,
		Window:         time.Duration(c.Window),
		DryRun:         c.Mode == config.ModeDryRun,
		Overrides:      c.Overrides,
		MaxWorkloads:   c.MaxWorkloads,
	}
}

// mergeRules compiles the merge section. A folded series stays folded as
// long as the limiter remembers it, so the merger remembers a stopped input
// of an overflow series at least as long: otherwise one that comes back
// would be counted twice.
func mergeRules(cfg *config.Config) (merge.Rules, error) {
	c := cfg.Merge
	r := merge.Rules{
		Staleness:         time.Duration(c.Staleness),
		ForgetAfter:       time.Duration(c.ForgetAfter),
		MaxInputs:         c.MaxInputs,
		MaxRetired:        c.MaxRetiredInputs,
		FlushInterval:     time.Duration(c.FlushInterval),
		MaxSamplesPerSend: c.MaxSamplesPerSend,
		MaxBytesPerSend:   c.MaxBytesPerSend,
		MaxAhead:          time.Duration(c.MaxAhead),
		StateFile:         c.StateFile,
	}
	policyRules := func(key string, list []config.GaugeRule) ([]merge.GaugeRule, error) {
		var out []merge.GaugeRule
		for i, g := range list {
			re, err := rematch.Compile(config.Anchor(g.Match))
			if err != nil {
				return nil, fmt.Errorf("merge.%s[%d]: %w", key, i, err)
			}
			p, err := merge.ParsePolicy(string(g.Policy))
			if err != nil {
				return nil, fmt.Errorf("merge.%s[%d]: %w", key, i, err)
			}
			out = append(out, merge.GaugeRule{Match: re, Policy: p})
		}
		return out, nil
	}
	var err error
	if r.Gauges, err = policyRules("gauges", c.Gauges); err != nil {
		return r, err
	}
	if r.Quantiles, err = policyRules("quantiles", c.Quantiles); err != nil {
		return r, err
	}
	if len(cfg.Limits.WorkloadLabels) > 0 {
		r.ForgetAfter = max(r.ForgetAfter, time.Duration(cfg.Limits.Window))
	}
	for i, t := range c.Types {
		re, err := rematch.Compile(config.Anchor(t.Match))
		if err != nil {
			return r, fmt.Errorf("merge.types[%d]: %w", i, err)
		}
		k := merge.Gauge
		if t.Type == "counter" {
			k = merge.Counter
		}
		r.Types = append(r.Types, merge.TypeRule{Match: re, Kind: k})
	}
	return r, nil
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
	proto, err := forward.ParseProtocol(d.ProtobufMessage)
	if err != nil {
		return nil, fmt.Errorf("downstream.%w", err)
	}
	c, err := forward.New(forward.Options{
		Protocol:         proto,
		URL:              d.URL,
		HTTPClientConfig: d.HTTPClientConfig,
		Headers:          d.Headers,
		Timeout:          time.Duration(d.Timeout),
		MinBackoff:       time.Duration(d.MinBackoff),
		MaxBackoff:       time.Duration(d.MaxBackoff),
		MaxRetries:       retries,
		MaxRetryAfter:    time.Duration(d.MaxRetryAfter),
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

func (s *deadlineSender) SendV2(ctx context.Context, body []byte, hasData bool) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.Client.SendV2(ctx, body, hasData)
}

// Compiled is a configuration compiled into what the pipeline runs: the
// one compile path of serve, reload and `cardinal check config`.
type Compiled struct {
	Config  *config.Config
	Relabel *relabel.Program
	Merge   merge.Rules
	Limits  limiter.Settings
	// Trace is nil when trace sampling is off; Scope nil when every series
	// is in scope.
	Trace *traceRules
	Scope *selector.Set
}

// Compile turns cfg into the pipeline's program, without touching any
// running one.
func Compile(cfg *config.Config) (*Compiled, error) {
	c := &Compiled{Config: cfg, Limits: limiterSettings(cfg.Limits)}
	var err error
	if c.Relabel, err = relabel.Compile(slices.Concat(cfg.RelabelConfigs, cfg.ExternalRelabelConfigs())); err != nil {
		return nil, fmt.Errorf("relabel_configs: %w", err)
	}
	if c.Merge, err = mergeRules(cfg); err != nil {
		return nil, err
	}
	if c.Trace, err = compileTrace(cfg.TraceSampling); err != nil {
		return nil, err
	}
	if c.Scope, err = selector.Parse(cfg.Scope); err != nil {
		return nil, fmt.Errorf("scope%w", err)
	}
	if c.Scope.Empty() {
		c.Scope = nil
	}
	return c, nil
}

// Apply compiles cfg and swaps it in atomically. On error the running
// configuration stays as it was.
func (g *Gateway) Apply(cfg *config.Config) error {
	c, err := Compile(cfg)
	if err != nil {
		return err
	}
	sender, err := g.opts.NewSender(cfg.Downstream, g.opts.Registerer, g.logger)
	if err != nil {
		return fmt.Errorf("downstream: %w", err)
	}
	es, err := compileEstimates(cfg)
	if err != nil {
		return fmt.Errorf("guard.scope%w", err)
	}
	g.merger.SetRules(c.Merge)
	g.limiter.SetSettings(c.Limits)
	g.applyEstimates(cfg)
	g.applyMu.Lock()
	if es != nil && es.guardOn {
		es.active = g.est.guard.Active()
	}
	if es == nil {
		g.merger.SetEpoch(0)
	}
	var viewID uint64
	if g.cluster != nil {
		viewID = g.cluster.View().ID
	}
	old := g.state.Swap(&state{gen: g.gens.Add(1), cfg: cfg, relabel: c.Relabel, rules: c.Merge, trace: c.Trace, scope: c.Scope, sender: sender, target: forward.NewTarget(sender), est: es, viewID: viewID})
	g.applyMu.Unlock()
	// Routes of the old rules are dead (their gen no longer matches); free
	// their memory.
	g.routes.clear()
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

// BodyTimeouts are the request body timeouts in force (see ingest).
func (g *Gateway) BodyTimeouts() (stall, total time.Duration) {
	r := &g.state.Load().cfg.Receive
	return time.Duration(r.BodyStallTimeout), time.Duration(r.BodyTimeout)
}

// Probe sends an empty write request downstream, to learn whether the
// downstream is reachable and accepts Cardinal's credentials.
func (g *Gateway) Probe(ctx context.Context) error {
	// snappy's encoding of zero bytes: an empty request, of either
	// version, in the version the downstream is sent.
	empty := []byte{0}
	t := g.state.Load().target
	err := error(forward.ErrFellBack)
	if t.V2 != nil && t.V2.SendsV2() {
		err = t.V2.SendV2(ctx, empty, false)
	}
	if errors.Is(err, forward.ErrFellBack) {
		err = t.Body.Send(ctx, empty)
	}
	g.merger.NoteDelivery(err == nil)
	return err
}

// Run emits merged series until ctx ends, then flushes them a last time.
// The server runs it for the life of the process.
func (g *Gateway) Run(ctx context.Context) {
	go g.limiter.Run(ctx)
	go g.sweepRoutes(ctx)
	go g.runGuard(ctx)
	g.merger.Run(ctx, g.deliverMerged)
}

// deliverMerged sends one batch of merged outputs through the downstream
// sender in force, the same delivery as pass-through data: retries within
// the downstream timeout, and a batch the downstream refuses is split to
// isolate the series it refuses.
func (g *Gateway) deliverMerged(ctx context.Context, req *wire.Request, onReject func(int, string, error)) error {
	rep, err := g.delivery.Deliver(ctx, g.state.Load().target, req, &g.flushScratch, func(r forward.Rejection) {
		if r.Series >= 0 {
			onReject(r.Series, r.Err.Reason, r.Err)
		}
	})
	g.metrics.forwardedMerged.Add(float64(rep.DeliveredSamples))
	return err
}

// sweepRoutes drops route cache entries unused for the merge staleness
// period, the time after which the merger forgets the input anyway.
func (g *Gateway) sweepRoutes(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Minute):
		}
		stale := time.Duration(g.state.Load().cfg.Merge.Staleness)
		g.routes.sweep(g.limiter.Clock(), uint32(stale/time.Second))
	}
}

// Limiter returns the per-workload series limiter (for the admin API).
func (g *Gateway) Limiter() *limiter.Limiter { return g.limiter }

// Collisions lists the merged outputs with the most inputs.
func (g *Gateway) Collisions(top int) []merge.Collision { return g.merger.Collisions(top) }

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

	ws := g.pool.Get()
	defer g.putWorkspace(ws)
	ws.scratch.Reset()
	if g.cluster != nil {
		ws.cluster.reset(g.cluster.View(), st, g.limiter)
		if err := g.checkOrigin(ctx, ws); err != nil {
			g.metrics.received.Add(float64(req.NumSamples()))
			return res, err
		}
	}
	// Inputs the route cache knows passed validation before, with these
	// very labels: only the others are checked, and only their guessed
	// labels read (see wire.Request.SetGuessLabels).
	g.lookupRoutes(st, ws, req, false)
	if err := g.verify(st, ws, req, &res); err != nil {
		return res, err
	}
	// Counted once guessed labels are checked: a guess may have held more
	// samples, or none.
	g.metrics.received.Add(float64(req.NumSamples()))
	if req.SanitizeTrusted(&res.Invalid, ws.trusted) {
		// Series moved or changed: route looks them up again.
		ws.looked = false
	}
	g.metrics.droppedInvalid.Add(float64(res.Invalid.DroppedSamples()))
	g.merger.ObserveMetadata(req.Metadata)

	// The ticket ends only after the forward below: until then this
	// request may carry pass-through samples of an output that another
	// request is turning into a merged one.
	tk := g.merger.Begin()
	defer g.merger.End(tk)
	g.route(st, ws, req, tk, &res)
	g.metrics.droppedRelabel.Add(float64(res.DroppedByRelabel))
	g.metrics.droppedMerge.Add(float64(res.DroppedByMerge))
	g.metrics.droppedLimit.Add(float64(res.Folded))
	g.metrics.droppedMerged.Add(float64(res.Merged - res.Folded))

	if g.cluster == nil {
		err := g.deliverLocal(ctx, st, ws, req, &res)
		return res, err
	}
	// The other owners' parts go out while this replica delivers its own.
	g.sendParts(ctx, ws, req.Metadata)
	err := g.deliverLocal(ctx, st, ws, req, &res)
	err = g.clusterResult(ws, &res, err)
	g.metrics.forwardedPeers.Add(float64(res.ToPeers))
	return res, g.checkViewKept(ws, &res, err)
}

// deliverLocal forwards what route left of req downstream.
func (g *Gateway) deliverLocal(ctx context.Context, st *state, ws *workspace, req *wire.Request, res *Result) error {
	if len(req.Series) == 0 && len(req.Metadata) == 0 {
		if res.Merged > 0 && g.merger.DeliveryFailing() {
			return errMergedUndeliverable
		}
		return nil
	}
	ws.rejected = Rejected{}
	if req.Plain() && req.Original != nil {
		switch {
		case ws.unchanged:
			// Nothing to encode: the body the sender wrote says it all.
			ws.fwd.Verbatim = req.Original
		case ws.keptAsCame:
			ws.fwd.Verbatim = g.cutOriginal(ws, req)
		}
	}
	rep, err := g.delivery.Deliver(ctx, st.target, req, &ws.fwd, ws.onReject)
	res.Forwarded = rep.DeliveredSamples
	res.Rejected = ws.rejected
	g.metrics.forwarded.Add(float64(res.Forwarded))
	g.metrics.droppedRejected.Add(float64(res.Rejected.Samples))
	g.merger.NoteDelivery(err == nil)
	if err == nil && res.Merged > 0 && g.merger.DeliveryFailing() {
		err = errMergedUndeliverable
	}
	return err
}

// cutOriginal returns the compressed body of req, a Plain request whose
// remaining series all came as they are, cut from the body the sender
// wrote (req.Original) rather than encoded and compressed again; nil when
// it cannot. Most of a request that only lost some series compresses as
// it came, and cutting the compressed body costs a fraction of
// compressing it (see internal/snappycut).
func (g *Gateway) cutOriginal(ws *workspace, req *wire.Request) []byte {
	var ok bool
	if ws.cuts, ok = req.AppendCuts(ws.cuts[:0]); !ok {
		return nil
	}
	// The copies that referred to removed bytes become literals. Past
	// half the size of the body that came, the result would be so much
	// larger than a compressed one that compressing it pays.
	body, err := snappycut.Cut(ws.cutBody[:0], req.Original, req.Source(), ws.cuts, len(req.Original)/2)
	if err != nil {
		return nil
	}
	ws.cutBody = body
	ws.fwd.Cut = true
	return body
}

// route runs every series through relabeling, the limiter and the merger,
// in place, removing the series they drop or absorb.
func (g *Gateway) route(st *state, ws *workspace, req *wire.Request, tk merge.Ticket, res *Result) {
	prog, trace := st.relabel, st.trace
	limits := g.limiter.Settings().Enabled()
	es := st.est
	if !g.routing(st) {
		// Without rules, caps or trace labels no two series can collapse
		// into one. (Outputs merged under earlier rules still must be.)
		ws.unchanged, ws.keptAsCame = true, true
		return
	}
	ws.unchanged, ws.keptAsCame = false, false
	now := g.now()
	nowMs := now.UnixMilli()
	nowSec := g.limiter.Clock()
	ws.overflow = ws.overflow[:0]
	ws.exemplars = ws.exemplars[:0]
	ws.exLabels = ws.exLabels[:0]
	ws.exBytes = ws.exBytes[:0]
	clear(ws.exemplified)
	if est := g.est.est.Load(); es != nil && est != nil {
		g.merger.SetEpoch(est.EpochStart(nowMs))
	}
	if !ws.looked {
		// Sanitize moved series, or route did not run when the request
		// was looked up and runs now (an output became merged since).
		g.lookupRoutes(st, ws, req, true)
	}
	if !ws.cluster.skipCache {
		// The limiter's and the merger's state of the inputs that
		// pass through, likewise: each has an output of its own, which no
		// other series of the request has brought into the cache. (The
		// outputs of absorbed inputs are shared by many: prefetching them
		// would only repeat the lookups.)
		ws.known, ws.knownOuts, ws.knownLim = ws.known[:0], ws.knownOuts[:0], ws.knownLim[:0]
		for i := range ws.cached {
			if c := &ws.cached[i]; c.ok && c.r.pass() {
				ws.known = append(ws.known, ws.ins[i])
				ws.knownOuts = append(ws.knownOuts, c.r.outHash)
				if g.limiterDue(c.r, nowSec) {
					ws.knownLim = append(ws.knownLim, c.r.limiterHash)
				}
			}
		}
		var sink uint64
		if limits {
			ws.order, sink = g.limiter.Prefetch(ws.knownLim, ws.order)
			ws.sink += sink
		}
		ws.order, sink = g.merger.Prefetch(ws.known, ws.knownOuts, ws.order)
		ws.sink += sink
	}
	out := req.Series[:0]
	// asCame counts the series kept as they came: passed from the route
	// cache, out of scope, or found unchanged by the full path.
	asCame, needLabels := 0, 0
	for i := range req.Series {
		s := req.Series[i]
		ws.grpOK = false
		n := len(s.Samples) + len(s.Histograms)
		in, outHash := ws.ins[i], uint64(0)
		// Fast path: an input the merger already absorbs, that another
		// replica owns, or that passes through as it came. (A route the
		// cache gave before an earlier series of this request changed it
		// is confirmed like any other: routes are hints.)
		if !ws.cluster.skipCache && ws.cached[i].ok {
			r := ws.cached[i].r
			if r.peer() || !r.pass() && !r.dropped() && (trace != nil && r.traced() || es != nil) {
				// Handed over with its labels, or seen by trace
				// sampling (it has a trace id) or the estimates: they
				// need them decoded.
				req.DecodeLazy(&s)
				needLabels++
			}
			switch g.routeKnown(st, ws, in, r, &s, n, nowSec, nowMs, res) {
			case knownDone:
				continue
			case knownPass:
				out = append(out, s)
				asCame++
				continue
			}
		}
		// Everything below reads the labels.
		req.DecodeLazy(&s)
		needLabels++
		if st.scope != nil && !st.scope.Matches(s.Labels) {
			// Out of scope: untouched and unlimited. The merger still
			// sees it, so that an in-scope output rewritten to the same
			// labels is merged rather than sent twice.
			outHash, ws.hashBuf = wire.HashLabels(ws.hashBuf, s.Labels)
			if g.cluster != nil && !g.claimed(st, ws, in, g.ownerKey(&ws.cluster, s.Labels, outHash), s.Labels, &s, n, now, nowSec) {
				continue
			}
			d := g.merger.Route(tk, in, outHash, s.Labels, &s, nowMs, false)
			if d&merge.NewInEpoch != 0 && es != nil {
				g.observe(es, ws, in, s.Labels, s.Labels, outHash, nowMs, false, d&merge.NewOutInEpoch == 0)
			}
			switch d.Base() {
			case merge.Absorbed:
				res.Merged += n
				continue
			case merge.Dropped:
				res.DroppedByMerge += n
				continue
			}
			asCame++
			out = append(out, s)
			continue
		}
		// Slow path. Apply may overwrite s.Labels; the merger needs the
		// originals.
		ws.orig = append(ws.orig[:0], s.Labels...)
		ls, keep := prog.Apply(&ws.scratch, s.Labels)
		// A rule that removed the metric name leaves a series no receiver
		// accepts; sending it would fail the whole request downstream.
		if !keep || wire.GetLabel(ls, "__name__") == nil {
			res.DroppedByRelabel += n
			if !ws.cluster.skipCache {
				// The rules decide on the labels alone: the next samples
				// of this input are dropped without relabeling.
				g.routes.put(in, newDropRoute(st.gen, nowSec))
			}
			continue
		}
		if trace != nil {
			ls = trace.strip(ls)
		}
		if g.cluster != nil {
			// Ownership is decided on the labels after the rules, before
			// the guard and the cap, which keep the workload labels.
			var key uint64
			if len(ws.cluster.names) == 0 {
				key, ws.hashBuf = wire.HashLabels(ws.hashBuf, ls)
			}
			if !g.claimed(st, ws, in, g.ownerKey(&ws.cluster, ls, key), ws.orig, &s, n, now, nowSec) {
				continue
			}
		}
		// The guard: labels it aggregates away for this group go, and the
		// series is merged into the aggregate (see handover below).
		ruled := ls
		var guardGroup uint64
		guardable := es != nil && es.guardOn && (es.guardScope == nil || es.guardScope.Matches(ls))
		if guardable && !es.active.Empty() {
			ls, guardGroup = ws.guardStrip(es, ls)
		}
		if guardable && guardGroup == 0 && es.enforce {
			// Records for the guard's takeover: the series of armed
			// groups, and every series that just ended.
			armed, ended := g.est.guard.Armed(), endsStale(&s)
			if ended || !armed.Empty() {
				if group, _, _ := ws.groupOf(es, ls); ended || armed.Has(group) {
					var pre uint64
					pre, ws.hashBuf = wire.HashLabels(ws.hashBuf, ls)
					g.est.records.note(group, pre, ls, nowMs, ended)
				}
			}
		}
		guarded := guardGroup != 0
		outHash, ws.hashBuf = wire.HashLabels(ws.hashBuf, ls)
		limiterHash := outHash
		traced := false
		if trace != nil {
			traced = g.exemplify(trace, ws, ws.orig, &s, outHash)
		}
		folded := false
		if limits {
			var d limiter.Decision
			d, ws.keyBuf = g.limiter.Admit(outHash, ls, n, nowSec, ws.keyBuf)
			folded = d == limiter.Fold
			if folded {
				// Slow path: over the cap, the series joins its workload's
				// overflow series, which the merger sums.
				start := len(ws.overflow)
				ws.overflow = g.limiter.AppendOverflowLabels(ws.overflow, ls)
				ls = ws.overflow[start:len(ws.overflow):len(ws.overflow)]
				outHash, ws.hashBuf = wire.HashLabels(ws.hashBuf, ls)
				res.Folded += n
			}
		}
		s.Labels = ls
		if guarded {
			var pre uint64
			pre, ws.hashBuf = wire.HashLabels(ws.hashBuf, ruled)
			g.merger.Handover(pre, outHash, ls, ruled, nowMs)
			g.est.noteAggregate(guardGroup, outHash)
		}
		// An overflow series is merged from its first input on: it must
		// never carry a sender's timestamp, see merge.Route. So is an
		// aggregate of the guard, which takes over series that passed
		// through.
		d := g.merger.Route(tk, in, outHash, ws.orig, &s, nowMs, folded || guarded)
		if d&merge.NewInEpoch != 0 && es != nil {
			g.observe(es, ws, in, ws.orig, ruled, outHash, nowMs, guardable, d&merge.NewOutInEpoch == 0 && !guarded)
		} else if guarded {
			// The guard watches the label it aggregates away on every
			// sample: it lifts only once the label has calmed down.
			g.observe(es, ws, in, nil, ruled, outHash, nowMs, guardable, false)
		}
		switch d.Base() {
		case merge.Absorbed:
			res.Merged += n
			// A guarded series takes the slow path every time, so that
			// the guard sees its label. One with a trace id, or one that
			// joined a crowded output, is cached from its second sighting
			// on: such a series mostly lives for one request (its trace
			// or request id), and caching each one that never came back
			// cost more than a second slow path for those that do.
			churn := d&merge.NewInput != 0 && (traced || d&merge.Crowded != 0)
			if !guarded && !ws.cluster.skipCache && !churn {
				r := newRoute(st.gen, limiterHash, outHash, nowSec, folded)
				if traced {
					r = r.withTrace()
				}
				g.routes.put(in, r)
			}
			continue
		case merge.Dropped:
			res.DroppedByMerge += n
			if folded {
				res.Folded -= n // dropped, not folded: counted once
			}
			continue
		}
		if !folded && !guarded && !traced && wire.LabelsEqual(ls, ws.orig) {
			// The single input of its output, and the rules leave its
			// labels as they are: it goes as it came, and its next
			// samples pass through without relabeling (the estimates and
			// the guard see every series on this path, so they keep it).
			asCame++
			if es == nil && !ws.cluster.skipCache {
				g.routes.put(in, newPassRoute(st.gen, outHash, nowSec))
			}
		}
		out = append(out, s)
	}
	// Only these series are known to be as they came: the full path may
	// rewrite any other.
	ws.unchanged = asCame == len(req.Series)
	ws.keptAsCame = asCame == len(out)
	if d := 2*needLabels <= len(req.Series); d != g.deferLabels.Load() {
		g.deferLabels.Store(d)
	}
	clear(req.Series[len(out):])
	req.Series = out
}

// routing reports whether route does anything under st: unless nothing can
// collapse, every series is routed.
func (g *Gateway) routing(st *state) bool {
	return st.relabel.Len() > 0 || g.limiter.Settings().Enabled() || st.trace != nil ||
		st.est != nil || g.merger.HasMerged() || g.cluster != nil
}

// lookupRoutes computes every input's identity into ws.ins and what the
// route cache knows of it into ws.cached, with ws.trusted saying which
// inputs it knows: all looked up together, so that the cache's misses
// overlap (see routeCache.getAll). Unless force is set, it does nothing
// when route would not run. ws.looked says whether ws.ins lines up with
// req.Series.
func (g *Gateway) lookupRoutes(st *state, ws *workspace, req *wire.Request, force bool) {
	ws.trusted = ws.trusted[:0]
	ws.looked = false
	if !force && !g.routing(st) {
		return
	}
	ws.ins = ws.ins[:0]
	for i := range req.Series {
		var in uint64
		in, ws.hashBuf = req.Series[i].InputHash(ws.hashBuf)
		ws.ins = append(ws.ins, in)
	}
	ws.looked = true
	if ws.cluster.skipCache {
		return
	}
	ws.cached, ws.order = g.routes.getAll(ws.ins, g.limiter.Clock(), ws.cached, ws.order)
	for i := range ws.cached {
		ws.trusted = append(ws.trusted, ws.cached[i].ok)
	}
}

// verify reads the labels the decoder guessed of the inputs the route cache
// does not know (wire.Request.Verify). A series it had to decode again has
// another identity, and one of only exemplars is folded, which moves the
// series after it: then every input is looked up again. res.Recounted
// holds the request's counts when they changed.
func (g *Gateway) verify(st *state, ws *workspace, req *wire.Request, res *Result) error {
	guessed := req.Guessed()
	if guessed == 0 {
		return nil
	}
	redone, err := req.Verify(ws.trusted)
	if err != nil {
		return err
	}
	if redone*8 > guessed {
		g.guessOff.Store(1)
	} else if g.guessOff.Load() != 0 {
		g.guessOff.Store(0)
	}
	if redone > 0 {
		res.Recounted = true
		res.Received[0], res.Received[1], res.Received[2] = req.Counts()
		g.lookupRoutes(st, ws, req, false)
	}
	return nil
}

// guessRetry: with guessing off, one request in guessRetry is decoded
// guessing anyway.
const guessRetry = 64

// GuessLabels says whether the next request may be decoded guessing where
// each series' labels end (wire.Request.SetGuessLabels): Process verifies
// the guesses. It is off after a request whose guesses were mostly wrong
// (series of several samples each, as a sender catching up writes them),
// which Verify decodes twice.
func (g *Gateway) GuessLabels() bool {
	if g.guessOff.Load() == 0 {
		return true
	}
	return g.guessOff.Add(1)%guessRetry == 0
}

// DeferLabels says whether the next request should be decoded with its
// labels left encoded (wire.Request.SetDeferLabels): when the last one
// routed needed at most half of them, because most of its series were
// known and passed through or were absorbed without them. Traffic that
// needs them all (new inputs, trace sampling of known ones) is decoded at
// once, rather than read twice.
func (g *Gateway) DeferLabels() bool { return g.deferLabels.Load() }

// What routeKnown did with a series.
const (
	knownMiss = iota // nothing: the full path decides
	knownDone        // absorbed, or handed to its owner: it leaves the request
	knownPass        // passed through as it came: it stays in the request
)

// routeKnown absorbs s into its merged output, hands it to the replica that
// owns it, or passes it through, when the route cache knows where the
// input goes and the limiter and the merger confirm it; it reports which
// (knownMiss when it did nothing). s.Labels are still the input's: nothing
// here needs the output's labels.
func (g *Gateway) routeKnown(st *state, ws *workspace, in uint64, r route, s *wire.Series, n int, nowSec uint32, nowMs int64, res *Result) int {
	if !r.current(st.gen) {
		return knownMiss
	}
	if r.dropped() {
		res.DroppedByRelabel += n
		return knownDone
	}
	if r.peer() {
		// Another replica owns it: handed over as it came, without
		// relabeling it again (the owner does).
		if ws.fromPeer {
			return knownMiss
		}
		g.handOver(ws, int(r.outHash), s.Labels, s, n)
		return knownDone
	}
	if r.pass() {
		if g.limiter.Settings().Enabled() && g.limiterDue(r, nowSec) {
			if d, known := g.limiter.AdmitKnown(r.limiterHash, n, nowSec); !known || d == limiter.Fold {
				g.routes.del(in)
				return knownMiss
			}
		}
		if _, ok := g.merger.PassKnown(in, r.outHash, s, nowMs); !ok {
			// Its output became merged, or was forgotten.
			g.routes.del(in)
			return knownMiss
		}
		// Forwarded as it came: its labels' bytes are copied, not encoded.
		s.KeepEncodedLabels()
		return knownPass
	}
	if g.limiter.Settings().Enabled() && g.limiterDue(r, nowSec) {
		d, known := g.limiter.AdmitKnown(r.limiterHash, n, nowSec)
		if !known || (d == limiter.Fold) != r.folded() {
			g.routes.del(in)
			return knownMiss
		}
		if r.folded() {
			res.Folded += n
		}
	}
	if st.trace != nil && r.traced() {
		g.exemplify(st.trace, ws, s.Labels, s, r.limiterHash)
	}
	d := g.merger.RouteKnown(in, r.outHash, s, nowMs)
	if d.Base() != merge.Absorbed {
		g.routes.del(in)
		if r.folded() {
			res.Folded -= n // the slow path counts it again
		}
		return knownMiss
	}
	if d&merge.NewInEpoch != 0 && st.est != nil {
		// Once per input and half-window: the estimates need the labels
		// after the rules, which the cache skips. (Its output is known
		// unless the flag says otherwise.)
		ws.obsLabels = append(ws.obsLabels[:0], s.Labels...)
		if ls, keep := st.relabel.Apply(&ws.scratch, ws.obsLabels); keep {
			if st.trace != nil {
				ls = st.trace.strip(ls)
			}
			g.observe(st.est, ws, in, s.Labels, ls, r.outHash, nowMs, false, d&merge.NewOutInEpoch == 0)
		}
	}
	res.Merged += n
	return knownDone
}

// lazyLimiterWindow is the shortest limits.window under which limiterDue
// lets known routes skip the limiter: a series' entry there then lags its
// last sample by less than seenStep, a quarter of it at most.
const lazyLimiterWindow = 4 * seenStep * time.Second

// limiterDue reports whether the limiter must confirm known route r now.
// An admitted series stays admitted until its entry expires (the limiter
// never folds a series it admitted), so confirming it only keeps the
// entry's last-seen fresh, and says when it expired: every seenStep
// seconds, when the route cache refreshes the route's own last-seen, is
// enough under a window of lazyLimiterWindow or more, and saves a lookup,
// mostly a cache miss, per sample. (The accounting is only ever reset
// with the configuration, which makes every route stale.) A folded route
// is confirmed every time: its samples are counted as folded.
func (g *Gateway) limiterDue(r route, nowSec uint32) bool {
	return r.folded() || nowSec-r.seen >= seenStep || g.limiter.Settings().Window < lazyLimiterWindow
}

func (g *Gateway) putWorkspace(ws *workspace) {
	if ws.fwd.Capacity() > 2*maxPooledBuffer || cap(ws.cutBody) > maxPooledBuffer {
		return
	}
	g.pool.Put(ws)
}
