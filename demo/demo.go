// Package demo runs Cardinal end to end inside one process, with no external
// service: a synthetic Istio/Linkerd/Envoy mesh (bench/meshgen) remote-writes
// through a real Cardinal server, over loopback HTTP, into a small receiver
// that decodes what arrives with the reference protobuf decoder. It prints
// what the gateway changed: series, label names, bytes and samples dropped by
// reason.
package demo

import (
	"context"
	"errors"
	"fmt"
	"github.com/cardinal-gateway/cardinal/cardinality"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/internal/rwclient"
	"github.com/cardinal-gateway/cardinal/server"
)

// Options size the demo.
type Options struct {
	Workloads        int
	PodsPerWorkload  int
	Scrapes          int
	SeriesPerRequest int
	Seed             uint64
}

// Bounds of Options that Validate enforces: the demo runs in one process
// and holds every series it sends.
const (
	MaxWorkloads = 2000
	MaxScrapes   = 100
)

// Validate reports whether the demo can run with o.
func (o Options) Validate() error {
	switch {
	case o.Workloads < 1 || o.Workloads > MaxWorkloads:
		return fmt.Errorf("--workloads=%d: want 1 to %d", o.Workloads, MaxWorkloads)
	case o.Scrapes < 1 || o.Scrapes > MaxScrapes:
		return fmt.Errorf("--scrapes=%d: want 1 to %d (the receiver's counters are compared with the last scrape sent)", o.Scrapes, MaxScrapes)
	case o.PodsPerWorkload < 1, o.SeriesPerRequest < 1:
		return fmt.Errorf("pods per workload and series per request must be positive")
	}
	return nil
}

// DefaultOptions returns the demo's defaults.
func DefaultOptions() Options {
	return Options{Workloads: 60, PodsPerWorkload: 3, Scrapes: 3, SeriesPerRequest: 2000, Seed: 1}
}

// Rules is the relabel_configs the demo runs: drop Envoy's server-internal
// gauges outright, then keep only the mesh's standard labels. That removes
// pod, instance and target_addr too, so the series of a workload's pods and
// of the injected request-level variants collapse into one, and Cardinal
// merges them.
func Rules() string {
	return `
  - action: drop
    source_labels: [__name__]
    regex: envoy_server_.*
  - action: labelkeep
    regex: ` + meshgen.DefaultAllowlist + `
`
}

// Report is what the demo measured.
type Report struct {
	Before, After Side
	// DroppedByReason is cardinal_dropped_samples_total by reason.
	DroppedByReason map[string]float64
	// Requests counts the sender's requests by Cardinal's status code.
	Requests map[int]int
	// Duplicates counts samples the receiver got twice for one series and
	// timestamp; a Prometheus receiver would reject their whole request.
	Duplicates int
	// MergedSeries is the number of output series fed by several inputs.
	MergedSeries int
	// CountersChecked and CountersExact compare every counter series at the
	// receiver with the sum of the inputs that collapsed into it.
	CountersChecked, CountersExact int
	// EstimatedIn and EstimatedOut are the estimates' series before and
	// after the rules; TopLabel the label the rules removed with the most
	// distinct values in one workload and metric (TopLabelGroup).
	EstimatedIn, EstimatedOut uint64
	TopLabel                  cardinality.LabelReport
	TopLabelGroup             string
	// InjectedDelivered lists injected high-cardinality label names that
	// reached the receiver (must be empty).
	InjectedDelivered []string
	Elapsed           time.Duration
}

// Side describes the traffic on one side of the gateway.
type Side struct {
	Series     int
	LabelNames []string
	Samples    int
	Bytes      int // snappy-compressed request bodies
}

// Run executes the demo and prints the report to w.
func Run(ctx context.Context, opts Options, w io.Writer) error {
	rep, err := Execute(ctx, opts)
	if err != nil {
		return err
	}
	rep.Print(w, opts)
	if len(rep.InjectedDelivered) > 0 || rep.Requests[http.StatusNoContent] == 0 || rep.Duplicates > 0 || rep.CountersExact != rep.CountersChecked {
		return errors.New("the gateway did not do its job; see the report")
	}
	return nil
}

// Execute runs the demo and returns its measurements.
func Execute(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	recv := newReceiver()
	recvSrv, recvURL, err := serveLoopback(recv)
	if err != nil {
		return nil, err
	}
	defer recvSrv.Close()

	dir, err := os.MkdirTemp("", "cardinal-demo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cfgFile := filepath.Join(dir, "cardinal.yml")
	cfg := fmt.Sprintf("downstream:\n  url: %s/api/v1/write\nmerge:\n  flush_interval: 1s\ncardinality:\n  enabled: true\nrelabel_configs:%s", recvURL, Rules())
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	srv, err := server.New(server.Options{ConfigFile: cfgFile, Registry: reg})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srvCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(srvCtx, ln) }()
	stopped := false
	stopServer := func() error {
		if stopped {
			return nil
		}
		stopped = true
		stop()
		return <-done
	}
	defer stopServer()
	gwURL := "http://" + ln.Addr().String()
	if err := waitReady(ctx, gwURL, 10*time.Second); err != nil {
		return nil, err
	}

	gen := meshgen.New(meshgen.Config{
		Workloads:       opts.Workloads,
		PodsPerWorkload: opts.PodsPerWorkload,
		Seed:            opts.Seed,
	})
	rep := &Report{Requests: map[int]int{}}
	before := newTally()
	client := &http.Client{Timeout: 30 * time.Second}
	ts := time.Now().Add(-time.Duration(opts.Scrapes) * 15 * time.Second).UnixMilli()
	for step := range opts.Scrapes {
		for _, req := range gen.WriteRequests(step, ts+int64(step)*15_000, opts.SeriesPerRequest) {
			raw, err := req.Marshal()
			if err != nil {
				return nil, err
			}
			body := snappy.Encode(nil, raw)
			before.add(req, len(body))
			code, err := rwclient.Post(ctx, client, gwURL+"/api/v1/write", body)
			if err != nil {
				return nil, err
			}
			rep.Requests[code]++
		}
	}
	rep.MergedSeries = len(srv.Gateway().Collisions(1 << 30))
	if est := srv.Gateway().Estimator(); est != nil {
		groups := est.Report(time.Now().UnixMilli(), cardinality.Filter{})
		for _, g := range groups {
			rep.EstimatedIn += g.SeriesIn
			rep.EstimatedOut += g.SeriesOut
			for _, l := range g.Labels {
				if l.ValuesOut == 0 && l.ValuesIn > rep.TopLabel.ValuesIn {
					rep.TopLabel, rep.TopLabelGroup = l, g.Workload+" "+g.Metric
				}
			}
		}
	}
	rep.DroppedByReason, err = droppedByReason(reg)
	if err != nil {
		return nil, err
	}
	// A graceful stop flushes the merged series a last time.
	if err := stopServer(); err != nil {
		return nil, err
	}
	rep.Before = before.side()
	rep.After = recv.tally.side()
	rep.Duplicates = recv.tally.collisions
	truth := meshgen.SumBy(gen.Series(opts.Scrapes-1, 0), meshgen.DroppedByDefault(meshgen.DefaultInjectedLabels()))
	rep.CountersChecked, rep.CountersExact = recv.tally.compareCounters(truth)
	for _, name := range meshgen.DefaultInjectedLabels() {
		if slices.Contains(rep.After.LabelNames, name) {
			rep.InjectedDelivered = append(rep.InjectedDelivered, name)
		}
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

func serveLoopback(h http.Handler) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, "http://" + ln.Addr().String(), nil
}

func waitReady(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/-/ready", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("cardinal at %s not ready after %s", url, timeout)
}

// tally counts distinct series, label names, samples and bytes.
type tally struct {
	series     map[string]int64   // label set → latest timestamp
	last       map[string]float64 // label set as labels.String → latest value
	names      map[string]struct{}
	samples    int
	bytes      int
	collisions int
	seen       map[string]struct{} // label set + timestamp
}

func newTally() *tally {
	return &tally{series: map[string]int64{}, last: map[string]float64{}, names: map[string]struct{}{}, seen: map[string]struct{}{}}
}

func (t *tally) add(req *prompb.WriteRequest, n int) {
	t.bytes += n
	var sb strings.Builder
	for _, ts := range req.Timeseries {
		sb.Reset()
		for _, l := range ts.Labels {
			t.names[l.Name] = struct{}{}
			sb.WriteString(l.Name)
			sb.WriteByte(0xff)
			sb.WriteString(l.Value)
			sb.WriteByte(0xff)
		}
		key := sb.String()
		if _, ok := t.series[key]; !ok {
			t.series[key] = math.MinInt64
		}
		for _, s := range ts.Samples {
			t.samples++
			if s.Timestamp >= t.series[key] {
				t.series[key] = s.Timestamp
				t.last[promLabels(ts.Labels)] = s.Value
			}
			k := fmt.Sprintf("%s%d", key, s.Timestamp)
			if _, dup := t.seen[k]; dup {
				t.collisions++
			}
			t.seen[k] = struct{}{}
		}
		t.samples += len(ts.Histograms)
	}
}

// compareCounters checks every counter series in truth (keyed like
// labels.Labels.String) against the latest value received, within 1e-9
// relative.
func (t *tally) compareCounters(truth map[string]float64) (checked, exact int) {
	for key, want := range truth {
		if !isCounter(key) {
			continue
		}
		checked++
		if got, ok := t.last[key]; ok && math.Abs(got-want) <= 1e-9*math.Max(1, math.Abs(want)) {
			exact++
		}
	}
	return checked, exact
}

func isCounter(key string) bool {
	name, _, _ := strings.Cut(strings.TrimPrefix(key, `{__name__="`), `"`)
	for _, suffix := range []string{"_total", "_count", "_sum", "_bucket"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

func promLabels(ls []prompb.Label) string {
	b := labels.NewScratchBuilder(len(ls))
	for _, l := range ls {
		b.Add(l.Name, l.Value)
	}
	b.Sort()
	return b.Labels().String()
}

func (t *tally) side() Side {
	names := make([]string, 0, len(t.names))
	for n := range t.names {
		names = append(names, n)
	}
	slices.Sort(names)
	return Side{Series: len(t.series), LabelNames: names, Samples: t.samples, Bytes: t.bytes}
}

// receiver is a minimal remote-write receiver that decodes with prompb, the
// reference implementation, and tallies what arrived.
type receiver struct {
	mu    sync.Mutex
	tally *tally
}

func newReceiver() *receiver { return &receiver{tally: newTally()} }

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(raw); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.tally.add(&wr, len(body))
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func droppedByReason(reg *prometheus.Registry) (map[string]float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "cardinal_dropped_samples_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out, nil
}

// Print writes the before/after report.
func (r *Report) Print(w io.Writer, opts Options) {
	fmt.Fprintf(w, "Cardinal demo: %d workloads x %d pods (Istio, Envoy, Linkerd), %d scrapes, %d series per request\n",
		opts.Workloads, opts.PodsPerWorkload, opts.Scrapes, opts.SeriesPerRequest)
	fmt.Fprintf(w, "sender -> cardinal (127.0.0.1) -> receiver (127.0.0.1), rules:%s\n", indent(Rules()))
	fmt.Fprintf(w, "%-22s %16s %16s %8s\n", "", "sent (before)", "received (after)", "change")
	row := func(name string, a, b int) {
		change := "-"
		if a > 0 {
			change = fmt.Sprintf("%+.0f%%", 100*float64(b-a)/float64(a))
		}
		fmt.Fprintf(w, "%-22s %16d %16d %8s\n", name, a, b, change)
	}
	row("series", r.Before.Series, r.After.Series)
	row("label names", len(r.Before.LabelNames), len(r.After.LabelNames))
	row("samples", r.Before.Samples, r.After.Samples)
	row("bytes (snappy)", r.Before.Bytes, r.After.Bytes)
	var removed []string
	for _, n := range r.Before.LabelNames {
		if !slices.Contains(r.After.LabelNames, n) {
			removed = append(removed, n)
		}
	}
	fmt.Fprintf(w, "label names removed:   %s\n", strings.Join(removed, ", "))
	reasons := make([]string, 0, len(r.DroppedByReason))
	for reason, v := range r.DroppedByReason {
		reasons = append(reasons, fmt.Sprintf("%s=%.0f", reason, v))
	}
	slices.Sort(reasons)
	fmt.Fprintf(w, "samples dropped:       %s (cardinal_dropped_samples_total)\n", strings.Join(reasons, " "))
	codes := make([]string, 0, len(r.Requests))
	for code, n := range r.Requests {
		codes = append(codes, fmt.Sprintf("%d x %d", n, code))
	}
	slices.Sort(codes)
	fmt.Fprintf(w, "sender requests:       %s\n", strings.Join(codes, ", "))
	fmt.Fprintf(w, "merged series:         %d outputs fed by several inputs (pods, request variants), emitted by the merger\n", r.MergedSeries)
	fmt.Fprintf(w, "counter totals:        %d of %d counter series equal the sum of their collapsed inputs\n", r.CountersExact, r.CountersChecked)
	fmt.Fprintf(w, "duplicate samples:     %d (same series and timestamp twice at the receiver)\n", r.Duplicates)
	injected := "none"
	if len(r.InjectedDelivered) > 0 {
		injected = "DELIVERED: " + strings.Join(r.InjectedDelivered, ", ")
	}
	fmt.Fprintf(w, "injected labels:       %s of %s reached the receiver\n", injected, strings.Join(meshgen.DefaultInjectedLabels(), ", "))
	fmt.Fprintf(w, "estimates:             ~%d series before the rules, ~%d after; the removed label with the most values: %s in %s (~%d; GET /api/v1/cardinality/labels)\n",
		r.EstimatedIn, r.EstimatedOut, r.TopLabel.Name, r.TopLabelGroup, r.TopLabel.ValuesIn)
	fmt.Fprintf(w, "elapsed:               %s\n", r.Elapsed.Round(time.Millisecond))
}

func indent(s string) string {
	return strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ")
}
