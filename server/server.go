// Package server assembles Cardinal's HTTP surface (remote-write receiver,
// own metrics, health, readiness and reload) around a gateway, and runs it
// with a graceful lifecycle: on shutdown it reports not-ready, stops
// accepting, lets in-flight forwards finish, then releases the downstream.
package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cardinal-gateway/cardinal/admin"
	"github.com/cardinal-gateway/cardinal/admission"
	"github.com/cardinal-gateway/cardinal/cluster"
	"github.com/cardinal-gateway/cardinal/config"
	"github.com/cardinal-gateway/cardinal/gateway"
	"github.com/cardinal-gateway/cardinal/ingest"
)

// Options configure a Server.
type Options struct {
	// ConfigFile is read at start and on every reload.
	ConfigFile string
	// ListenAddress is where Run listens, e.g. ":9091".
	ListenAddress string
	Logger        *slog.Logger
	// Registry receives Cardinal's own metrics and is served on /metrics.
	// nil means a new registry with the Go and process collectors.
	Registry *prometheus.Registry
	// ShutdownTimeout bounds how long Run lets in-flight requests forward
	// after shutdown begins; then their forwards are cancelled and they are
	// answered 503, so their senders retry. 0 means downstream.timeout, the
	// longest a forward can take.
	ShutdownTimeout time.Duration
	// SetMemoryLimit lets the server set the Go runtime's memory limit from
	// the memory limit it finds (receive.memory_limit or the container's),
	// unless GOMEMLIMIT is set. It is process-wide: the cardinal command
	// sets it, tests and the demo do not.
	SetMemoryLimit bool
	// NewSender replaces the downstream sender (tests, demo).
	NewSender func(config.DownstreamConfig, prometheus.Registerer, *slog.Logger) (gateway.Sender, error)
	// Cluster, when set, makes this server one replica of a cluster
	// (--cluster.peers, --cluster.self).
	Cluster *cluster.Config
}

// Server is one Cardinal instance.
type Server struct {
	opts    Options
	logger  *slog.Logger
	gw      *gateway.Gateway
	handler http.Handler
	debug   chi.Router // /debug/, on the write port or its own

	admission   *admission.Controller
	memoryLimit int64 // 0: none known

	reloadMu   sync.Mutex
	adminToken atomic.Pointer[[]byte] // nil: mutating admin calls refused

	ready        atomic.Bool // downstream reached once
	shuttingDown atomic.Bool
	reloads      *prometheus.CounterVec
}

// New loads the config file and builds the server; it does not listen yet.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
		opts.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	cfg, err := config.Load(opts.ConfigFile)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, logger: opts.Logger}
	if err := s.loadAdminToken(cfg); err != nil {
		return nil, err
	}
	var cl *cluster.Cluster
	if opts.Cluster != nil {
		if cl, err = cluster.New(*opts.Cluster, opts.Registry, opts.Logger); err != nil {
			return nil, err
		}
		v := cl.View()
		opts.Logger.Info("cluster member", "self", cl.Self(), "members", strings.Join(v.Members, ","))
	}
	s.gw, err = gateway.New(cfg, gateway.Options{Registerer: opts.Registry, Logger: opts.Logger, NewSender: opts.NewSender, Cluster: cl})
	if err != nil {
		return nil, err
	}
	if path := cfg.Admin.StateFile; path != "" {
		overrides, err := admin.LoadState(path)
		if err != nil {
			return nil, err
		}
		s.gw.Limiter().LoadAPIOverrides(overrides)
		if len(overrides) > 0 {
			opts.Logger.Info("limit overrides loaded from the state file", "file", path, "overrides", len(overrides))
		}
	}
	s.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cardinal_config_reloads_total",
		Help: "Configuration reloads, by result.",
	}, []string{"result"})
	opts.Registry.MustRegister(s.reloads)

	s.admission = s.newAdmission(cfg)
	ing := ingest.New(ingest.Options{Processor: s.gw, Admission: s.admission, Registerer: opts.Registry, Logger: opts.Logger})
	r := chi.NewRouter()
	r.Handle("/api/v1/write", ing)
	r.Handle("/metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{Registry: opts.Registry}))
	r.Get("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "Cardinal is Healthy.")
	})
	r.Get("/-/ready", s.serveReady)
	r.Post("/-/reload", s.requireAdmin(s.serveReload))
	r.Get("/api/v1/cluster", s.serveCluster)
	// In a cluster, these report this replica's share (ScopeHeader).
	scoped := r.With(s.scoped)
	scoped.Get("/api/v1/collisions", s.serveCollisions)
	scoped.Get("/api/v1/cardinality/labels", s.serveLabels)
	scoped.Get("/api/v1/cardinality/workloads", s.serveWorkloads)
	scoped.Get("/api/v1/guard", s.serveGuard)
	// Go's profiler and expvar, as Prometheus and vmagent expose them, for
	// finding where CPU and memory go under real traffic. A CPU profile
	// costs CPU and the command line may hold secrets: with an admin token
	// configured they need it, and admin.debug_listen_address moves them
	// off the write port.
	profiler := s.requireAdminIfConfigured(middleware.Profiler())
	s.debug = chi.NewRouter()
	s.debug.Mount("/debug", profiler)
	if cfg.Admin.DebugListenAddress == "" {
		r.Mount("/debug", profiler)
	}
	r.Group(func(r chi.Router) {
		r.Use(s.scoped)
		admin.Mount(r, admin.Options{
			Limiter:   s.gw.Limiter(),
			StateFile: func() string { return s.gw.Config().Admin.StateFile },
			// In a cluster a limit change goes to every replica: the
			// workload's owner applies it, now and after moves.
			RequireAdmin: func(h http.HandlerFunc) http.HandlerFunc { return s.requireAdmin(s.tierWide(h)) },
			Logger:       opts.Logger,
		})
	})
	r.Get("/", s.serveIndex)
	// Errors are JSON everywhere, with the allowed methods on a 405.
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		admin.WriteError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s; GET / lists them", r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		var allowed []string
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
			if r.Match(chi.NewRouteContext(), m, req.URL.Path) {
				allowed = append(allowed, m)
			}
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		admin.WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s; allowed: %s", req.Method, req.URL.Path, strings.Join(allowed, ", ")))
	})
	s.handler = r
	return s, nil
}

// Endpoint is one line of GET /.
type Endpoint struct {
	Method      string `json:"method"`
	Path        string `json:"path"`
	Description string `json:"description"`
}

// Endpoints lists Cardinal's HTTP endpoints, as GET / serves them.
var Endpoints = []Endpoint{
	{"POST", "/api/v1/write", "remote-write receiver"},
	{"GET", "/metrics", "Cardinal's own metrics"},
	{"GET", "/-/healthy", "liveness"},
	{"GET", "/-/ready", "readiness: the config is loaded and the downstream was reached"},
	{"POST", "/-/reload", "reload the config file (admin token)"},
	{"GET", "/api/v1/collisions?top=N", "merged outputs with the most inputs and the labels that collapsed them"},
	{"GET", "/api/v1/limits", "the series caps in force"},
	{"GET", "/api/v1/limits/{workload}", "one workload's cap and where it comes from"},
	{"PUT", "/api/v1/limits/{workload}", `set a workload's cap, body {"max_series": N} (admin token)`},
	{"DELETE", "/api/v1/limits/{workload}", "remove a workload's API override (admin token)"},
	{"GET", "/api/v1/cardinality?top=N", "active and folded series per workload"},
	{"GET", "/api/v1/cardinality/workloads?top=N", "estimated series before and after the rules, and churn, per workload"},
	{"GET", "/api/v1/cardinality/labels?workload=W&metric=M&top=N", "estimated distinct values per label, per workload and metric"},
	{"GET", "/api/v1/guard", "the guard's mitigations and events"},
	{"GET", "/api/v1/cluster", "the cluster's members as this replica sees them, and its share"},
	{"GET", "/debug/pprof/", "Go's profiler (admin token when one is configured)"},
}

// serveIndex serves the explorer page, or the endpoints as JSON to a
// client that asks for JSON (Accept: application/json, ?format=json).
func (s *Server) serveIndex(w http.ResponseWriter, r *http.Request) {
	if wantsJSON(r) {
		admin.WriteJSON(w, http.StatusOK, map[string]any{"service": "cardinal", "endpoints": Endpoints})
		return
	}
	s.explorer().ServeHTTP(w, r)
}

// MemoryLimitEnv names the environment variable that gives the memory
// limit in bytes when receive.memory_limit does not; the Helm chart sets
// it from the container's limit.
const MemoryLimitEnv = "CARDINAL_MEMORY_LIMIT"

// newAdmission builds the admission controller from the memory limit
// (receive.memory_limit, else the container's) and the receive bounds, and
// registers its gauges.
func (s *Server) newAdmission(cfg *config.Config) *admission.Controller {
	rc := cfg.Receive
	limit, source := rc.MemoryLimit, "receive.memory_limit"
	if env := os.Getenv(MemoryLimitEnv); limit == 0 && env != "" {
		if v, err := strconv.ParseInt(env, 10, 64); err == nil && v > 0 {
			limit, source = v, MemoryLimitEnv
		} else {
			s.logger.Warn("ignoring an invalid memory limit", "env", MemoryLimitEnv, "value", env)
		}
	}
	if limit == 0 {
		limit, source = admission.DetectLimit()
	}
	ao := admission.Options{MaxRequests: rc.MaxInflightRequests, MaxBytes: rc.MaxInflightBytes}
	if ao.MaxRequests == 0 {
		ao.MaxRequests = admission.DefaultMaxRequests()
	}
	if limit > 0 {
		b := admission.BudgetFor(limit)
		if ao.MaxBytes == 0 {
			ao.MaxBytes = b.MaxBytes
		}
		ao.HeapLimit = b.HeapLimit
		if s.opts.SetMemoryLimit && os.Getenv("GOMEMLIMIT") == "" {
			debug.SetMemoryLimit(b.GoMemLimit)
		}
		s.memoryLimit = limit
	}
	s.logger.Info("admission bounds", "memory_limit", limit, "from", source, "go_memory_limit", debug.SetMemoryLimit(-1),
		"max_inflight_requests", ao.MaxRequests, "max_inflight_bytes", ao.MaxBytes, "shed_above_heap", ao.HeapLimit)
	c := admission.New(ao)
	s.opts.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cardinal_inflight_requests",
			Help: "Remote-write requests being processed (bound: receive.max_inflight_requests).",
		}, func() float64 { n, _ := c.InFlight(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cardinal_inflight_bytes",
			Help: "Bytes the requests being processed hold, as reserved with the admission controller (bound: receive.max_inflight_bytes).",
		}, func() float64 { _, b := c.InFlight(); return float64(b) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cardinal_memory_limit_bytes",
			Help: "The memory limit Cardinal budgets for (receive.memory_limit or the container's); 0 when none is known.",
		}, func() float64 { return float64(s.memoryLimit) }),
	)
	return c
}

// Check does everything New does with a config file except serving: it
// loads and compiles the config, reads the admin token and builds the
// downstream client (reading TLS files and credentials). `cardinal check
// config` uses it, so that a config it accepts also starts.
func Check(configFile string) (*gateway.Compiled, error) {
	cfg, err := config.Load(configFile)
	if err != nil {
		return nil, err
	}
	compiled, err := gateway.Compile(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := readToken(cfg); err != nil {
		return nil, err
	}
	if cfg.Admin.StateFile != "" {
		if _, err := admin.LoadState(cfg.Admin.StateFile); err != nil {
			return nil, err
		}
	}
	sender, err := gateway.NewForwarder(cfg.Downstream, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, fmt.Errorf("downstream: %w", err)
	}
	sender.Close()
	return compiled, nil
}

// Handler returns the HTTP handler of all endpoints.
func (s *Server) Handler() http.Handler { return s.handler }

// Gateway returns the pipeline (for the demo and tests).
func (s *Server) Gateway() *gateway.Gateway { return s.gw }

// Reload rereads the config file and swaps it in; on error the running
// configuration stays.
func (s *Server) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	err := s.reload()
	result := "success"
	if err != nil {
		result = "failure"
		s.logger.Error("config reload failed; keeping the running config", "err", err)
	} else {
		s.logger.Info("config reloaded", "file", s.opts.ConfigFile)
	}
	s.reloads.WithLabelValues(result).Inc()
	return err
}

func (s *Server) reload() error {
	cfg, err := config.Load(s.opts.ConfigFile)
	if err != nil {
		return err
	}
	// Validate everything before changing anything.
	if _, err := gateway.Compile(cfg); err != nil {
		return err
	}
	token, err := readToken(cfg)
	if err != nil {
		return err
	}
	if err := s.gw.Apply(cfg); err != nil {
		return err
	}
	s.adminToken.Store(token)
	return nil
}

func (s *Server) loadAdminToken(cfg *config.Config) error {
	token, err := readToken(cfg)
	if err != nil {
		return err
	}
	s.adminToken.Store(token)
	return nil
}

func readToken(cfg *config.Config) (*[]byte, error) {
	if cfg.Admin.BearerTokenFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(cfg.Admin.BearerTokenFile)
	if err != nil {
		return nil, fmt.Errorf("admin.bearer_token_file: %w", err)
	}
	token := []byte(strings.TrimSpace(string(b)))
	if len(token) == 0 {
		return nil, fmt.Errorf("admin.bearer_token_file %s is empty", cfg.Admin.BearerTokenFile)
	}
	return &token, nil
}

// requireAdmin lets a request through only with the admin bearer token.
func (s *Server) requireAdmin(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token := s.adminToken.Load()
		if token == nil {
			admin.WriteError(w, http.StatusForbidden, "mutating admin calls are disabled: set admin.bearer_token_file")
			return
		}
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		// The scheme is case-insensitive (RFC 9110); the token is not.
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(got), *token) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cardinal"`)
			admin.WriteError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next(w, r)
	}
}

// requireAdminIfConfigured lets a request through with the admin token,
// or without one when no token is configured.
func (s *Server) requireAdminIfConfigured(next http.Handler) http.Handler {
	guarded := s.requireAdmin(next.ServeHTTP)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.adminToken.Load() == nil {
			next.ServeHTTP(w, r)
			return
		}
		guarded(w, r)
	})
}

func (s *Server) serveReload(w http.ResponseWriter, _ *http.Request) {
	if err := s.Reload(); err != nil {
		admin.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	switch {
	case s.shuttingDown.Load():
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
	case !s.ready.Load():
		http.Error(w, "downstream not reached yet", http.StatusServiceUnavailable)
	default:
		fmt.Fprintln(w, "Cardinal is Ready.")
	}
}

// serveCollisions lists the merged outputs with the most inputs, and the
// labels whose removal collapsed them.
func (s *Server) serveCollisions(w http.ResponseWriter, r *http.Request) {
	top, err := admin.TopParam(r)
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	admin.WriteJSON(w, http.StatusOK, s.gw.Collisions(top))
}

// Run listens and serves until ctx ends, then shuts down gracefully. It
// returns nil after a clean shutdown.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.opts.ListenAddress)
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// shutdownMargin is how long in-flight requests get, after their forwards
// were cancelled, to write their 503.
const shutdownMargin = 5 * time.Second

// Serve is Run on an existing listener. On shutdown (ctx ends) it turns
// not-ready, stops accepting, lets in-flight requests finish their forwards
// for ShutdownTimeout, then cancels what is left, which answers 503 so
// that the senders retry; then it flushes the merged series a last time and
// releases the downstream. It returns nil once every request was answered.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	rc := s.gw.Config().Receive
	// Requests run with a context the shutdown can cancel: a forward stuck
	// on a hanging downstream then ends, and its request is answered.
	reqCtx, cancelRequests := context.WithCancel(context.Background())
	defer cancelRequests()
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: time.Duration(rc.HeaderTimeout),
		IdleTimeout:       time.Duration(rc.IdleTimeout),
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
	}
	s.logger.Info("listening", "address", ln.Addr().String())
	probeCtx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	go s.probeDownstream(probeCtx)
	if c := s.gw.Cluster(); c != nil {
		go c.Run(probeCtx)
	}
	go s.admission.Watch(probeCtx, 50*time.Millisecond)
	// The merger outlives the HTTP server: it flushes a last time after
	// the in-flight requests have finished.
	mergeCtx, stopMerge := context.WithCancel(context.Background())
	mergeDone := make(chan struct{})
	go func() {
		defer close(mergeDone)
		s.gw.Run(mergeCtx)
	}()
	// Runs after the HTTP server has drained: the last flush of merged
	// series, then the downstream client is released.
	defer func() {
		stopMerge()
		<-mergeDone
		s.gw.Close()
	}()

	if addr := s.gw.Config().Admin.DebugListenAddress; addr != "" {
		dln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("admin.debug_listen_address: %w", err)
		}
		dsrv := &http.Server{Handler: s.debug, ReadHeaderTimeout: srv.ReadHeaderTimeout}
		go func() { _ = dsrv.Serve(dln) }()
		defer dsrv.Close()
		s.logger.Info("debug endpoints listening", "address", dln.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	grace := s.opts.ShutdownTimeout
	if grace <= 0 {
		grace = time.Duration(s.gw.Config().Downstream.Timeout)
	}
	s.logger.Info("shutting down: not ready, finishing in-flight requests", "grace", grace)
	s.shuttingDown.Store(true)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), grace+shutdownMargin)
	defer cancel()
	cut := time.AfterFunc(grace, func() {
		s.logger.Warn("shutdown grace period over: cancelling the forwards still in flight; their senders get 503 and retry")
		cancelRequests()
	})
	defer cut.Stop()
	err := srv.Shutdown(shutdownCtx)
	if serveErr := <-errc; !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
		err = serveErr
	}
	if err != nil {
		// A handler that ignored its cancelled context: its connection is
		// closed unanswered.
		_ = srv.Close()
		return fmt.Errorf("requests still in flight after %s: %w", grace+shutdownMargin, err)
	}
	return nil
}

// probeDownstream marks the server ready once the downstream has accepted
// an empty write request.
func (s *Server) probeDownstream(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.gw.Probe(pctx)
		cancel()
		if err == nil {
			s.ready.Store(true)
			s.logger.Info("downstream reachable; ready")
			return
		}
		s.logger.Warn("downstream not reachable yet", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
