// Package config reads and validates Cardinal's YAML configuration.
//
// Decoding is strict: an unknown key is an error, so a typo cannot silently
// disable a rule. Load applies defaults and validates; the result is
// immutable by convention and is compiled into the running pipeline by the
// gateway package.
package config

import (
	"errors"
	"fmt"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"
	"go.yaml.in/yaml/v2"

	"github.com/cardinal-gateway/cardinal/forward"
	"github.com/cardinal-gateway/cardinal/internal/selector"
	"github.com/cardinal-gateway/cardinal/merge"
)

// Defaults, as documented in the README (its defaults table is checked
// against these). Those of a package that runs the setting are that
// package's: one place for each.
const (
	DefaultTimeout       = forward.DefaultTimeout
	DefaultMinBackoff    = forward.DefaultMinBackoff
	DefaultMaxBackoff    = forward.DefaultMaxBackoff
	DefaultMaxRetries    = forward.DefaultMaxRetries
	DefaultMaxRetryAfter = forward.DefaultMaxRetryAfter
	// DefaultProtobufMessage is remote write 1.0: every receiver speaks it.
	DefaultProtobufMessage = "v1"
	DefaultMaxRequestBytes = 32 << 20
	DefaultStaleness       = merge.DefaultStaleness
	DefaultMaxInputs       = 5_000_000
	DefaultFlushInterval   = merge.DefaultFlushInterval
	DefaultForgetAfter     = merge.DefaultForgetAfter
	DefaultMaxRetired      = merge.DefaultMaxRetired
	DefaultSamplesPerSend  = merge.DefaultMaxSamplesPerSend
	DefaultBytesPerSend    = merge.DefaultMaxBytesPerSend
	DefaultMaxAhead        = merge.DefaultMaxAhead
)

// Config is the whole configuration file.
type Config struct {
	Downstream DownstreamConfig `yaml:"downstream"`
	// Scope, when set, limits relabel_configs, trace_sampling and limits
	// to the series matching any of these PromQL series selectors; every
	// other series passes through untouched and unlimited.
	Scope          []string          `yaml:"scope,omitempty"`
	Receive        ReceiveConfig     `yaml:"receive,omitempty"`
	RelabelConfigs []*relabel.Config `yaml:"relabel_configs,omitempty"`
	Merge          MergeConfig       `yaml:"merge,omitempty"`
	Limits         LimitsConfig      `yaml:"limits,omitempty"`
	TraceSampling  TraceConfig       `yaml:"trace_sampling,omitempty"`
	Cardinality    CardinalityConfig `yaml:"cardinality,omitempty"`
	Guard          GuardConfig       `yaml:"guard,omitempty"`
	Admin          AdminConfig       `yaml:"admin,omitempty"`
	// ExternalLabels are added, after relabel_configs, to every series in
	// scope that lacks the label: they keep apart the outputs of Cardinal
	// instances that each see part of a workload (the sidecars of a
	// sharded Prometheus), which would otherwise emit the same merged
	// series with partial sums. Values may name environment variables,
	// ${VAR} or $VAR, expanded when the file is loaded ($$ is a $).
	ExternalLabels map[string]string `yaml:"external_labels,omitempty"`

	// dir is the directory of the file the config came from; relative paths
	// in it are resolved against it.
	dir string
}

// DownstreamConfig says where and how Cardinal forwards remote write.
type DownstreamConfig struct {
	URL        string            `yaml:"url"`
	Timeout    model.Duration    `yaml:"timeout,omitempty"`
	Headers    map[string]string `yaml:"headers,omitempty"`
	MinBackoff model.Duration    `yaml:"min_backoff,omitempty"`
	MaxBackoff model.Duration    `yaml:"max_backoff,omitempty"`
	MaxRetries int               `yaml:"max_retries,omitempty"`
	// MaxRetryAfter caps the Retry-After passed on to the sender when the
	// downstream asks to wait (429 or 5xx with Retry-After).
	MaxRetryAfter model.Duration `yaml:"max_retry_after,omitempty"`
	// ProtobufMessage is the remote-write version sent: "v1" (the
	// default: every receiver speaks it), "v2", or "auto" (2.0 until the
	// downstream shows it cannot take it, then 1.0 for good).
	ProtobufMessage string `yaml:"protobuf_message,omitempty"`

	// HTTPClientConfig is Prometheus' own client config (basic_auth,
	// authorization, oauth2, tls_config, proxy_url...), so users can paste the
	// settings of their remote_write section.
	HTTPClientConfig commoncfg.HTTPClientConfig `yaml:",inline"`
}

// ReceiveConfig limits what senders may send, and how slowly.
type ReceiveConfig struct {
	// MaxRequestBytes caps the decompressed size of one request.
	MaxRequestBytes int `yaml:"max_request_bytes,omitempty"`
	// HeaderTimeout bounds the reading of a request's headers, IdleTimeout
	// how long a keep-alive connection may wait for its next request
	// (read at start; a reload does not change them).
	HeaderTimeout model.Duration `yaml:"header_timeout,omitempty"`
	IdleTimeout   model.Duration `yaml:"idle_timeout,omitempty"`
	// BodyStallTimeout is the longest wait for the next bytes of a body,
	// BodyTimeout the longest time for a whole body; past either the
	// request is answered 408 and the connection closed.
	BodyStallTimeout model.Duration `yaml:"body_stall_timeout,omitempty"`
	BodyTimeout      model.Duration `yaml:"body_timeout,omitempty"`
	// MemoryLimit is the memory Cardinal may use, in bytes; 0 means the
	// container's limit, read from its cgroup. It sets the Go memory limit
	// (80 %, unless GOMEMLIMIT is set) and the admission bounds.
	MemoryLimit int64 `yaml:"memory_limit,omitempty"`
	// MaxInflightRequests and MaxInflightBytes bound the requests processed
	// at once and the bytes they hold; past them new requests are answered
	// 503 with a short Retry-After. 0 means derived: 8 per core (at least
	// 16), and 30 % of the memory limit (no byte bound without one). Read
	// at start.
	MaxInflightRequests int   `yaml:"max_inflight_requests,omitempty"`
	MaxInflightBytes    int64 `yaml:"max_inflight_bytes,omitempty"`
}

// Defaults of the receive section.
const (
	DefaultHeaderTimeout    = 10 * time.Second
	DefaultIdleTimeout      = 5 * time.Minute
	DefaultBodyStallTimeout = 15 * time.Second
	DefaultBodyTimeout      = 3 * time.Minute
)

func defaultReceive() ReceiveConfig {
	return ReceiveConfig{
		MaxRequestBytes:  DefaultMaxRequestBytes,
		HeaderTimeout:    model.Duration(DefaultHeaderTimeout),
		IdleTimeout:      model.Duration(DefaultIdleTimeout),
		BodyStallTimeout: model.Duration(DefaultBodyStallTimeout),
		BodyTimeout:      model.Duration(DefaultBodyTimeout),
	}
}

// MergeConfig tunes the merging of series that relabeling collapses into one.
type MergeConfig struct {
	// Staleness: an input series without a sample for this long leaves
	// gauge aggregates and is forgotten (counters keep its contribution).
	Staleness model.Duration `yaml:"staleness,omitempty"`
	// ForgetAfter: a counter input without a sample this long is forgotten
	// (its contribution stays); until then, if it comes back, it continues
	// from its last value. At least Staleness, and the gateway uses at least
	// limits.window.
	ForgetAfter model.Duration `yaml:"forget_after,omitempty"`
	// MaxInputs caps the number of live tracked input series; past it, new
	// series are dropped (reason merge_capacity).
	MaxInputs int `yaml:"max_inputs,omitempty"`
	// MaxRetiredInputs caps the number of stopped counter inputs
	// remembered; past it they are forgotten at once.
	MaxRetiredInputs int `yaml:"max_retired_inputs,omitempty"`
	// FlushInterval is how often merged series are emitted downstream.
	FlushInterval model.Duration `yaml:"flush_interval,omitempty"`
	// MaxSamplesPerSend and MaxBytesPerSend bound one request of merged
	// series (bytes before compression).
	MaxSamplesPerSend int `yaml:"max_samples_per_send,omitempty"`
	MaxBytesPerSend   int `yaml:"max_bytes_per_send,omitempty"`
	// MaxAhead bounds how far ahead of the wall clock a merged sample may
	// be stamped; later sender timestamps are clamped.
	MaxAhead model.Duration `yaml:"max_ahead,omitempty"`
	// Gauges pick the policy (sum, max, min, last) of merged gauges by
	// metric name; the first match wins, and sum applies to the rest.
	Gauges []GaugeRule `yaml:"gauges,omitempty"`
	// Quantiles pick the policy of merged summary quantile series by
	// metric name; the first match wins, and max applies to the rest.
	Quantiles []GaugeRule `yaml:"quantiles,omitempty"`
	// Types force a metric's kind (counter or gauge) by name, overriding
	// name suffixes and the sender's metadata.
	Types []TypeRule `yaml:"types,omitempty"`
	// StateFile keeps the merged outputs and their inputs' state across
	// restarts, so that merged series continue exactly and the downstream
	// never gets samples older than merged ones it has.
	StateFile string `yaml:"state_file,omitempty"`
}

// GaugeRule is one entry of merge.gauges.
type GaugeRule struct {
	Match  string `yaml:"match"`
	Policy Policy `yaml:"policy"`
}

// TypeRule is one entry of merge.types.
type TypeRule struct {
	Match string     `yaml:"match"`
	Type  MetricType `yaml:"type"`
}

// UnmarshalYAML applies the defaults before decoding.
func (c *MergeConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = defaultMerge()
	type plain MergeConfig
	return unmarshal((*plain)(c))
}

func defaultMerge() MergeConfig {
	return MergeConfig{
		Staleness:         model.Duration(DefaultStaleness),
		ForgetAfter:       model.Duration(DefaultForgetAfter),
		MaxInputs:         DefaultMaxInputs,
		MaxRetiredInputs:  DefaultMaxRetired,
		FlushInterval:     model.Duration(DefaultFlushInterval),
		MaxSamplesPerSend: DefaultSamplesPerSend,
		MaxBytesPerSend:   DefaultBytesPerSend,
		MaxAhead:          model.Duration(DefaultMaxAhead),
	}
}

// LimitsConfig caps the active series of each workload.
type LimitsConfig struct {
	// WorkloadLabels name the labels whose values, joined by "/", identify
	// a workload. Empty disables the limiter.
	WorkloadLabels []string `yaml:"workload_labels,omitempty"`
	// MaxSeriesPerWorkload is the default cap; 0 means unlimited.
	MaxSeriesPerWorkload int `yaml:"max_series_per_workload,omitempty"`
	// Window: a series is active if it had a sample within it.
	Window model.Duration `yaml:"window,omitempty"`
	// Mode is "enforce" (fold new series over the cap into an overflow
	// series) or "dry_run" (count only).
	Mode Mode `yaml:"mode,omitempty"`
	// Overrides are per-workload caps; those set through the admin API are
	// kept in admin.state_file and win over these.
	Overrides map[string]int `yaml:"overrides,omitempty"`
	// MaxWorkloads bounds how many workloads are tracked one by one; the
	// rest share the workload "_other".
	MaxWorkloads int `yaml:"max_workloads,omitempty"`
}

// Limiter modes.
const (
	ModeEnforce Mode = "enforce"
	ModeDryRun  Mode = "dry_run"
)

// Defaults of the limits section.
const (
	DefaultWindow       = time.Hour
	DefaultMaxWorkloads = 10000
)

// UnmarshalYAML applies the defaults before decoding.
func (c *LimitsConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = defaultLimits()
	type plain LimitsConfig
	return unmarshal((*plain)(c))
}

func defaultLimits() LimitsConfig {
	return LimitsConfig{Window: model.Duration(DefaultWindow), Mode: ModeEnforce, MaxWorkloads: DefaultMaxWorkloads}
}

func (c *LimitsConfig) validate() error {
	if c.MaxSeriesPerWorkload < 0 {
		return errors.New("limits.max_series_per_workload must not be negative")
	}
	if c.Window <= 0 {
		return errors.New("limits.window must be positive")
	}
	if c.Mode != ModeEnforce && c.Mode != ModeDryRun {
		return fmt.Errorf("limits.mode: %q is not enforce or dry_run", c.Mode)
	}
	if c.MaxWorkloads <= 0 {
		return errors.New("limits.max_workloads must be positive")
	}
	seen := map[string]bool{}
	for _, l := range c.WorkloadLabels {
		if l == "" || seen[l] {
			return fmt.Errorf("limits.workload_labels: empty or repeated label %q", l)
		}
		seen[l] = true
	}
	for w, n := range c.Overrides {
		if n < 0 {
			return fmt.Errorf("limits.overrides[%q] must not be negative", w)
		}
	}
	if len(c.WorkloadLabels) == 0 && (c.MaxSeriesPerWorkload > 0 || len(c.Overrides) > 0) {
		return errors.New("limits: caps need limits.workload_labels")
	}
	return nil
}

// CardinalityConfig turns on the in-line estimates: series per workload and
// metric before and after the rules, distinct values per label, churn.
type CardinalityConfig struct {
	// Enabled turns the estimates on; the guard turns them on too.
	Enabled bool `yaml:"enabled,omitempty"`
	// Window is the span the estimates cover.
	Window model.Duration `yaml:"window,omitempty"`
	// WorkloadLabels identify a workload, as limits.workload_labels does
	// (its default, then [namespace, app]).
	WorkloadLabels []string `yaml:"workload_labels,omitempty"`
	// Top bounds the series of the estimate metrics.
	Top int `yaml:"top,omitempty"`
	// MaxGroups bounds the (workload, metric) groups tracked.
	MaxGroups int `yaml:"max_groups,omitempty"`
}

// Defaults of the cardinality section.
const (
	DefaultCardinalityWindow = 10 * time.Minute
	DefaultCardinalityTop    = 20
	DefaultMaxGroups         = 10000
)

// GuardConfig is the adaptive guard: a label whose distinct values within
// one workload and metric exceed Threshold within the estimates' window is
// aggregated away for that metric.
type GuardConfig struct {
	// Mode is "enforce" or "dry_run"; empty turns the guard off.
	Mode Mode `yaml:"mode,omitempty"`
	// Scope limits the guard to the series matching any of these PromQL
	// series selectors (within the top-level scope); empty: every series.
	Scope     []string       `yaml:"scope,omitempty"`
	Threshold int            `yaml:"threshold,omitempty"`
	LiftAfter model.Duration `yaml:"lift_after,omitempty"`
	// Protect are labels never aggregated away (besides the workload
	// labels, __name__, le and quantile).
	Protect []string `yaml:"protect,omitempty"`
	// Window, WorkloadLabels: the same as cardinality's (either may set
	// them; set in both, they must agree).
	Window         model.Duration `yaml:"window,omitempty"`
	WorkloadLabels []string       `yaml:"workload_labels,omitempty"`
	// EvaluationInterval is how often the guard reads the estimates.
	EvaluationInterval model.Duration `yaml:"evaluation_interval,omitempty"`
}

// Defaults of the guard section.
const (
	DefaultGuardThreshold  = 1000
	DefaultLiftAfter       = 30 * time.Minute
	DefaultGuardEvaluation = 5 * time.Second
)

// GuardEvaluationInterval returns guard.evaluation_interval or its default.
func (g *GuardConfig) GuardEvaluationInterval() time.Duration {
	if g.EvaluationInterval > 0 {
		return time.Duration(g.EvaluationInterval)
	}
	return DefaultGuardEvaluation
}

// EstimatesEnabled reports whether the estimates run.
func (c *Config) EstimatesEnabled() bool { return c.Cardinality.Enabled || c.Guard.Mode != "" }

// EstimateWindow returns the estimates' window.
func (c *Config) EstimateWindow() time.Duration {
	switch {
	case c.Cardinality.Window > 0:
		return time.Duration(c.Cardinality.Window)
	case c.Guard.Window > 0:
		return time.Duration(c.Guard.Window)
	}
	return DefaultCardinalityWindow
}

// EstimateWorkloadLabels returns the labels that identify a workload for the
// estimates and the guard.
func (c *Config) EstimateWorkloadLabels() []string {
	for _, ls := range [][]string{c.Cardinality.WorkloadLabels, c.Guard.WorkloadLabels, c.Limits.WorkloadLabels} {
		if len(ls) > 0 {
			return ls
		}
	}
	return []string{"namespace", "app"}
}

func (c *Config) validateEstimates() error {
	cc, g := &c.Cardinality, &c.Guard
	if cc.Window < 0 || g.Window < 0 || (cc.Window > 0 && g.Window > 0 && cc.Window != g.Window) {
		return fmt.Errorf("cardinality.window (%s) and guard.window (%s): positive, and equal when both are set", cc.Window, g.Window)
	}
	if w := c.EstimateWindow(); w < 2*time.Second {
		return fmt.Errorf("the estimates' window (%s) must be at least 2s", model.Duration(w))
	}
	if len(cc.WorkloadLabels) > 0 && len(g.WorkloadLabels) > 0 && !slices.Equal(cc.WorkloadLabels, g.WorkloadLabels) {
		return errors.New("cardinality.workload_labels and guard.workload_labels must agree when both are set")
	}
	if cc.Top < 0 || cc.MaxGroups < 0 {
		return errors.New("cardinality.top and cardinality.max_groups must not be negative")
	}
	if g.Mode != "" && g.Mode != ModeEnforce && g.Mode != ModeDryRun {
		return fmt.Errorf("guard.mode: %q is not enforce or dry_run", g.Mode)
	}
	if g.Threshold < 0 || g.LiftAfter < 0 || g.EvaluationInterval < 0 {
		return errors.New("guard.threshold, guard.lift_after and guard.evaluation_interval must not be negative")
	}
	if _, err := selector.Parse(g.Scope); err != nil {
		return fmt.Errorf("guard.scope%w", err)
	}
	return nil
}

// GuardThreshold returns guard.threshold or its default.
func (g *GuardConfig) GuardThreshold() int {
	if g.Threshold > 0 {
		return g.Threshold
	}
	return DefaultGuardThreshold
}

// GuardLiftAfter returns guard.lift_after or its default.
func (g *GuardConfig) GuardLiftAfter() time.Duration {
	if g.LiftAfter > 0 {
		return time.Duration(g.LiftAfter)
	}
	return DefaultLiftAfter
}

// TraceConfig turns trace-id labels into exemplars on a sampled fraction of
// series and removes the labels.
type TraceConfig struct {
	// Labels carry trace ids (plain hex, W3C traceparent, B3, Jaeger). Empty
	// disables trace sampling.
	Labels []string `yaml:"labels,omitempty"`
	// Ratio is the consistent sampling probability, by trace id.
	Ratio float64 `yaml:"ratio,omitempty"`
	// AlwaysKeep: series matching any of these keep their exemplar whatever
	// the ratio.
	AlwaysKeep []TraceMatcher `yaml:"always_keep,omitempty"`
}

// TraceMatcher matches a series whose label is present and whose value
// matches Regex, or, with NotRegex, does not match it.
type TraceMatcher struct {
	Label    string `yaml:"label"`
	Regex    string `yaml:"regex,omitempty"`
	NotRegex string `yaml:"not_regex,omitempty"`
}

func (c *TraceConfig) validate() error {
	if c.Ratio < 0 || c.Ratio > 1 || c.Ratio != c.Ratio {
		return fmt.Errorf("trace_sampling.ratio must be within [0, 1], got %v", c.Ratio)
	}
	if len(c.Labels) == 0 && len(c.AlwaysKeep) > 0 {
		return errors.New("trace_sampling.always_keep needs trace_sampling.labels")
	}
	for i, l := range c.Labels {
		if l == "" {
			return fmt.Errorf("trace_sampling.labels[%d] is empty", i)
		}
	}
	for i, m := range c.AlwaysKeep {
		if m.Label == "" {
			return fmt.Errorf("trace_sampling.always_keep[%d]: label is required", i)
		}
		if (m.Regex == "") == (m.NotRegex == "") {
			return fmt.Errorf("trace_sampling.always_keep[%d]: set exactly one of regex and not_regex", i)
		}
		for _, re := range []string{m.Regex, m.NotRegex} {
			if _, err := regexp.Compile(Anchor(re)); err != nil {
				return fmt.Errorf("trace_sampling.always_keep[%d]: %w", i, err)
			}
		}
	}
	return nil
}

// AdminConfig protects the mutating admin endpoints.
type AdminConfig struct {
	// BearerTokenFile holds the token that mutating admin calls must present.
	// Without it, mutating calls are refused.
	BearerTokenFile string `yaml:"bearer_token_file,omitempty"`
	// StateFile keeps the limit overrides set through the admin API across
	// restarts. Without it, API overrides last until the process exits.
	StateFile string `yaml:"state_file,omitempty"`
	// DebugListenAddress, when set, serves /debug/ (Go's profiler and
	// expvar) on that address only, not on the write port. Either way the
	// debug endpoints need the admin token when one is configured. Read at
	// start.
	DebugListenAddress string `yaml:"debug_listen_address,omitempty"`
}

// UnmarshalYAML applies the defaults before decoding, the way Prometheus does,
// so that an absent key keeps its default and a present one overrides it.
func (c *DownstreamConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DownstreamConfig{
		Timeout:          model.Duration(DefaultTimeout),
		MinBackoff:       model.Duration(DefaultMinBackoff),
		MaxBackoff:       model.Duration(DefaultMaxBackoff),
		MaxRetries:       DefaultMaxRetries,
		MaxRetryAfter:    model.Duration(DefaultMaxRetryAfter),
		ProtobufMessage:  DefaultProtobufMessage,
		HTTPClientConfig: commoncfg.DefaultHTTPClientConfig,
	}
	type plain DownstreamConfig
	return unmarshal((*plain)(c))
}

// UnmarshalYAML applies the defaults before decoding.
func (c *ReceiveConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = defaultReceive()
	type plain ReceiveConfig
	return unmarshal((*plain)(c))
}

// Load reads, decodes and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("cannot resolve config directory: %w", err)
	}
	cfg.dir = dir
	cfg.Downstream.HTTPClientConfig.SetDirectory(dir)
	for _, p := range []*string{&cfg.Admin.BearerTokenFile, &cfg.Admin.StateFile, &cfg.Merge.StateFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return cfg, nil
}

// Parse decodes and validates a configuration held in memory. Relative paths
// stay relative to the working directory.
func Parse(data []byte) (*Config, error) {
	// Sections the file may leave out entirely keep their defaults.
	cfg := &Config{Receive: defaultReceive(), Merge: defaultMerge(), Limits: defaultLimits()}
	// The walk finds unknown keys and bad relabel rules with their paths;
	// the decoder has the last word, its errors rewritten in the same terms.
	d := diagnose(data)
	if d.problem != nil {
		return nil, fmt.Errorf("cannot parse config: %w", d.problem)
	}
	if err := yaml.UnmarshalStrict(data, cfg); err != nil {
		return nil, fmt.Errorf("cannot parse config: %w", d.explainDecodeError(err))
	}
	// yaml.v2 does not call UnmarshalYAML for a key without a value
	// ("receive:" with every setting commented out); such a section means
	// its defaults, not zeros.
	var sections map[string]any
	if err := yaml.Unmarshal(data, &sections); err == nil {
		if v, ok := sections["receive"]; ok && v == nil {
			cfg.Receive = defaultReceive()
		}
		if v, ok := sections["merge"]; ok && v == nil {
			cfg.Merge = defaultMerge()
		}
		if v, ok := sections["limits"]; ok && v == nil {
			cfg.Limits = defaultLimits()
		}
	}
	if err := cfg.expandExternalLabels(); err != nil {
		return nil, err
	}
	// Conflicts first: filling in the defaults makes the two windows equal.
	if err := cfg.validateEstimates(); err != nil {
		return nil, err
	}
	cfg.fillEstimateDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// fillEstimateDefaults writes the defaults of the cardinality and guard
// sections into c, so that `cardinal check config` shows them.
func (c *Config) fillEstimateDefaults() {
	w := model.Duration(c.EstimateWindow())
	c.Cardinality.Window = w
	if c.Guard.Mode != "" {
		c.Guard.Window = w
	}
	if c.Cardinality.Top == 0 {
		c.Cardinality.Top = DefaultCardinalityTop
	}
	if c.Cardinality.MaxGroups == 0 {
		c.Cardinality.MaxGroups = DefaultMaxGroups
	}
	g := &c.Guard
	g.Threshold = g.GuardThreshold()
	g.LiftAfter = model.Duration(g.GuardLiftAfter())
	g.EvaluationInterval = model.Duration(g.GuardEvaluationInterval())
}

// Validate checks the values that decoding alone cannot.
func (c *Config) Validate() error {
	d := &c.Downstream
	if d.URL == "" {
		return errors.New("downstream.url is required")
	}
	u, err := url.Parse(d.URL)
	if err != nil {
		return fmt.Errorf("downstream.url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("downstream.url: scheme must be http or https, not %q", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("downstream.url: host is missing")
	}
	if d.Timeout <= 0 {
		return errors.New("downstream.timeout must be positive")
	}
	if d.MinBackoff <= 0 || d.MaxBackoff < d.MinBackoff {
		return fmt.Errorf("downstream: need 0 < min_backoff (%s) <= max_backoff (%s)", d.MinBackoff, d.MaxBackoff)
	}
	if d.MaxRetries < 0 {
		return errors.New("downstream.max_retries must not be negative")
	}
	if d.MaxRetryAfter <= 0 {
		return errors.New("downstream.max_retry_after must be positive")
	}
	if _, err := forward.ParseProtocol(d.ProtobufMessage); err != nil {
		return fmt.Errorf("downstream.%w", err)
	}
	for name := range d.Headers {
		switch textproto.CanonicalMIMEHeaderKey(name) {
		case "Content-Encoding", "Content-Type", "Content-Length", "X-Prometheus-Remote-Write-Version", "Authorization", "User-Agent",
			"Host", "Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Te", "Trailer",
			"Transfer-Encoding", "Upgrade", "Accept-Encoding":
			return fmt.Errorf("downstream.headers: %q is set by Cardinal itself", name)
		}
	}
	if err := d.HTTPClientConfig.Validate(); err != nil {
		return fmt.Errorf("downstream: %w", err)
	}
	if c.Receive.MaxRequestBytes <= 0 {
		return errors.New("receive.max_request_bytes must be positive")
	}
	for _, d := range []struct {
		key string
		v   model.Duration
	}{{"header_timeout", c.Receive.HeaderTimeout}, {"idle_timeout", c.Receive.IdleTimeout}, {"body_stall_timeout", c.Receive.BodyStallTimeout}, {"body_timeout", c.Receive.BodyTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("receive.%s must be positive", d.key)
		}
	}
	if c.Receive.MemoryLimit < 0 || c.Receive.MaxInflightRequests < 0 || c.Receive.MaxInflightBytes < 0 {
		return errors.New("receive.memory_limit, receive.max_inflight_requests and receive.max_inflight_bytes must not be negative")
	}
	for i, rc := range c.RelabelConfigs {
		if rc == nil {
			return fmt.Errorf("relabel_configs[%d] is empty", i)
		}
	}
	if _, err := selector.Parse(c.Scope); err != nil {
		return fmt.Errorf("scope%w", err)
	}
	for name, v := range c.ExternalLabels {
		if !model.LegacyValidation.IsValidLabelName(name) || strings.HasPrefix(name, "__") {
			return fmt.Errorf("external_labels: %q is not a label name Cardinal may add (letters, digits and _, not starting with a digit or __)", name)
		}
		if v == "" {
			return fmt.Errorf("external_labels.%s is empty: an empty value is no label at all", name)
		}
	}
	if err := c.Limits.validate(); err != nil {
		return err
	}
	if err := c.TraceSampling.validate(); err != nil {
		return err
	}
	if err := c.validateEstimates(); err != nil {
		return err
	}
	return c.Merge.validate()
}

func (c *MergeConfig) validate() error {
	if c.Staleness <= 0 {
		return errors.New("merge.staleness must be positive")
	}
	if c.FlushInterval <= 0 {
		return errors.New("merge.flush_interval must be positive")
	}
	if c.MaxInputs <= 0 {
		return errors.New("merge.max_inputs must be positive")
	}
	if c.ForgetAfter < c.Staleness {
		return fmt.Errorf("merge.forget_after (%s) must be at least merge.staleness (%s)", c.ForgetAfter, c.Staleness)
	}
	if c.MaxRetiredInputs <= 0 {
		return errors.New("merge.max_retired_inputs must be positive")
	}
	if c.MaxSamplesPerSend <= 0 || c.MaxBytesPerSend <= 0 {
		return errors.New("merge.max_samples_per_send and merge.max_bytes_per_send must be positive")
	}
	if c.MaxAhead <= 0 {
		return errors.New("merge.max_ahead must be positive")
	}
	for _, list := range []struct {
		key   string
		rules []GaugeRule
	}{{"gauges", c.Gauges}, {"quantiles", c.Quantiles}} {
		for i, g := range list.rules {
			if _, err := regexp.Compile(Anchor(g.Match)); err != nil {
				return fmt.Errorf("merge.%s[%d].match: %w", list.key, i, err)
			}
			switch g.Policy {
			case "sum", "max", "min", "last":
			default:
				return fmt.Errorf("merge.%s[%d].policy: %q is not sum, max, min or last", list.key, i, g.Policy)
			}
		}
	}
	for i, t := range c.Types {
		if _, err := regexp.Compile(Anchor(t.Match)); err != nil {
			return fmt.Errorf("merge.types[%d].match: %w", i, err)
		}
		if t.Type != "counter" && t.Type != "gauge" {
			return fmt.Errorf("merge.types[%d].type: %q is not counter or gauge", i, t.Type)
		}
	}
	return nil
}

// The config's enums are typed and checked when the YAML is read, so that
// an error names the key (diagnose parses such a value alone).

// Mode is limits.mode.
type Mode string

// UnmarshalYAML accepts enforce and dry_run.
func (m *Mode) UnmarshalYAML(unmarshal func(any) error) error {
	return unmarshalEnum(unmarshal, (*string)(m), "enforce", "dry_run")
}

// Policy combines merged gauges or quantiles: sum, max, min or last.
type Policy string

// UnmarshalYAML accepts sum, max, min and last.
func (p *Policy) UnmarshalYAML(unmarshal func(any) error) error {
	return unmarshalEnum(unmarshal, (*string)(p), "sum", "max", "min", "last")
}

// MetricType is a merge.types type: counter or gauge.
type MetricType string

// UnmarshalYAML accepts counter and gauge.
func (t *MetricType) UnmarshalYAML(unmarshal func(any) error) error {
	return unmarshalEnum(unmarshal, (*string)(t), "counter", "gauge")
}

func unmarshalEnum(unmarshal func(any) error, dst *string, values ...string) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	for _, v := range values {
		if s == v {
			*dst = s
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", s, strings.Join(values, ", "))
}

// Dir returns the directory relative paths were resolved against, or "" for a
// config that did not come from a file.
func (c *Config) Dir() string { return c.dir }

// Anchor makes a metric-name pattern match whole names, as Prometheus
// anchors its regexes.
func Anchor(re string) string { return "^(?:" + re + ")$" }

// expandExternalLabels replaces the environment variables in the values of
// external_labels. An unset variable is an error: an empty shard label
// would let two instances emit the same series.
func (c *Config) expandExternalLabels() error {
	for name, v := range c.ExternalLabels {
		var missing []string
		c.ExternalLabels[name] = os.Expand(v, func(k string) string {
			if k == "$" {
				return "$"
			}
			val, ok := os.LookupEnv(k)
			if !ok {
				missing = append(missing, k)
			}
			return val
		})
		if len(missing) > 0 {
			return fmt.Errorf("external_labels.%s: environment variable %s is not set", name, strings.Join(missing, ", "))
		}
	}
	return nil
}

// ExternalRelabelConfigs returns external_labels as relabel rules, run
// after relabel_configs: each sets its label when the series lacks it.
func (c *Config) ExternalRelabelConfigs() []*relabel.Config {
	names := make([]string, 0, len(c.ExternalLabels))
	for n := range c.ExternalLabels {
		names = append(names, n)
	}
	slices.Sort(names)
	var out []*relabel.Config
	for _, n := range names {
		out = append(out, &relabel.Config{
			Action:       relabel.Replace,
			SourceLabels: model.LabelNames{model.LabelName(n)},
			Separator:    ";",
			// Only an absent (empty) label is set: a series that has one
			// keeps it, as Prometheus does with its external labels.
			Regex:       relabel.MustNewRegexp(""),
			TargetLabel: n,
			// The replacement expands $1 and ${name}: a literal $ is $$.
			Replacement: strings.ReplaceAll(c.ExternalLabels[n], "$", "$$"),
		})
	}
	return out
}
