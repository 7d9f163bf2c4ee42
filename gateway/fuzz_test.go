package gateway

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/cardinality"
	"github.com/cardinal-gateway/cardinal/config"
	"github.com/cardinal-gateway/cardinal/forward"
	"github.com/cardinal-gateway/cardinal/merge"
	"github.com/cardinal-gateway/cardinal/wire"
)

// The configurations FuzzGateway switches between. fuzzConfigA has every
// stage on and small limits, so that series collapse (labeldrop, labelkeep,
// a replace and trace labels), workloads overflow their cap (3) and the
// tracked-workload limit, the merger runs out of input slots (64) and of
// retired slots, and a flush takes several batches.
const (
	fuzzConfigA = `
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
relabel_configs:
  - {action: drop, source_labels: [__name__], regex: "dropped_.*"}
  - {action: replace, source_labels: [zone], regex: "(z)-[0-9]+", target_label: zone, replacement: "$1"}
  - {action: labeldrop, regex: "pod|instance|request_id"}
  - {action: labelkeep, regex: "__name__|namespace|app|zone|response_code|le|quantile|trace_id|traceparent"}
trace_sampling:
  labels: [trace_id, traceparent]
  ratio: 0.5
  always_keep: [{label: response_code, regex: "5.."}]
limits:
  workload_labels: [namespace, app]
  max_series_per_workload: 3
  window: 5m
  max_workloads: 4
merge:
  staleness: 2m
  forget_after: 10m
  max_inputs: 64
  max_retired_inputs: 8
  flush_interval: 15s
  max_samples_per_send: 5
  max_bytes_per_send: 1024
  max_ahead: 1m
  gauges: [{match: "mem_.*", policy: max}, {match: "cpu_.*", policy: last}]
  quantiles: [{match: "rpc_latency", policy: min}]
  types: [{match: "weird_total", type: gauge}, {match: "weird_counter", type: counter}]
`
	// fuzzConfigB collapses other labels, caps by namespace, and has
	// tighter merge limits.
	fuzzConfigB = `
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
relabel_configs:
  - {action: labeldrop, regex: "app|request_id|trace_id|traceparent|color"}
limits:
  workload_labels: [namespace]
  max_series_per_workload: 5
merge:
  staleness: 1m
  forget_after: 1m
  max_inputs: 16
  max_retired_inputs: 2
  flush_interval: 5s
  max_samples_per_send: 2
  max_bytes_per_send: 300
  max_ahead: 10s
  gauges: [{match: ".*", policy: min}]
`
	// fuzzConfigC has no stage that collapses series: the gateway passes
	// everything through without consulting the merger.
	fuzzConfigC = `
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
merge: {staleness: 3m, flush_interval: 30s, max_inputs: 64, max_retired_inputs: 4}
`
	// fuzzConfigD: the other relabel actions, and trace labels; the
	// limiter counts without folding.
	fuzzConfigD = `
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
relabel_configs:
  - {action: lowercase, source_labels: [color], target_label: color}
  - {action: labelmap, regex: "(zone|color)", replacement: "meta_$1"}
  - {action: hashmod, source_labels: [pod], target_label: shard, modulus: 2}
  - {action: replace, source_labels: [instance], regex: "10[.].*", target_label: response_code, replacement: ""}
  - {action: keep, source_labels: [__name__], regex: ".+"}
  - {action: labeldrop, regex: "pod|zone|color|instance|zzz"}
trace_sampling: {labels: [trace_id], ratio: 1}
limits: {workload_labels: [app], max_series_per_workload: 2, mode: dry_run}
merge: {staleness: 5m, flush_interval: 10s, max_inputs: 32, max_retired_inputs: 16, max_ahead: 2m}
`
)

// fuzzConfigE: the estimates and the guard in enforce with a tiny
// threshold, so that labels are aggregated away, handed over and lifted
// while the traffic goes on (opMaintain evaluates the guard).
const fuzzConfigE = `
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
relabel_configs:
  - {action: labeldrop, regex: "pod"}
guard: {mode: enforce, threshold: 2, window: 4m, lift_after: 1m, workload_labels: [namespace], protect: [app]}
limits: {workload_labels: [namespace], max_series_per_workload: 6}
merge: {staleness: 2m, forget_after: 5m, flush_interval: 15s, max_inputs: 64, max_retired_inputs: 8, max_samples_per_send: 5}
`

var fuzzConfigs = []string{fuzzConfigA, fuzzConfigB, fuzzConfigC, fuzzConfigD, fuzzConfigE}

// fuzzEpoch is where every run's clock starts.
const fuzzEpoch = 1_700_000_000_000

// fuzzHangLimit is far beyond what one input takes (about a millisecond).
const fuzzHangLimit = 30 * time.Second

// Prometheus refuses samples more than this ahead of its clock.
const prometheusMaxAhead = 10 * time.Minute

// FuzzGateway is issue 10's proof that no input, in any order, can stop the
// process. Each input is a program run against a fresh gateway with every
// stage on (fuzzConfigA; others are applied by reloads) and a settable
// clock: remote-write bodies (taken verbatim, or built from an alphabet of
// colliding series with every kind of float sample and native histogram,
// valid and broken, or built then corrupted), clock steps from a
// millisecond to hours, merger flushes through deliverers that acknowledge,
// fail, refuse some series, or go through the forward package to a
// downstream that accepts, fails, refuses by Prometheus' rules, or refuses
// some series; configuration reloads, sweeps, reads of the admin and
// metrics views, and restarts from the merge state file.
//
// Besides not panicking, every run asserts:
//   - every body delivered (pass-through and merged) decodes with prompb,
//     has sorted, unique, non-empty labels with a metric name, and every
//     native histogram in it passes Prometheus' own checks (gogo decoding,
//     conversion, reduction of schemas 9..52, Validate): nothing Prometheus
//     would reject is forwarded or merged;
//   - no body holds one series twice at one timestamp, unless the sender's
//     own request did;
//   - per output, merged emissions acknowledged by the downstream have
//     strictly increasing timestamps (a resend of the same point aside), come
//     after what passed through for that output, and are never more than
//     Prometheus' 10 minutes ahead; an output that was emitted merged never
//     passes through again until it ended with a stale marker;
//   - a flush that delivered everything leaves nothing pending;
//   - every sample Process received is accounted for in its Result;
//   - the metrics registry gathers without error, and a state file just
//     saved loads.
//
// The first campaigns found three bugs, fixed since, each kept as a seed:
// label values not valid UTF-8 broke /metrics (now dropped as invalid),
// native histograms of schemas 9..52 crashed the merger (now reduced to 8),
// and a reload to a configuration without rules let merged outputs pass
// through (now routed while the merger holds merged outputs). Run it with
// CARDINAL_FUZZ_TRACE=1 to log every operation and request of an input.
func FuzzGateway(f *testing.F) {
	var cfgs []*config.Config
	for _, yml := range fuzzConfigs {
		cfg, err := config.Parse([]byte(yml))
		if err != nil {
			f.Fatal(err)
		}
		cfgs = append(cfgs, cfg)
	}
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	trace := os.Getenv("CARDINAL_FUZZ_TRACE") != ""
	f.Fuzz(func(t *testing.T, data []byte) {
		h := newFuzzHarness(t, cfgs)
		h.trace = trace
		// A hang stops the process as surely as a panic: make it one, so
		// that the fuzzer keeps the input.
		watchdog := time.AfterFunc(fuzzHangLimit, func() {
			panic(fmt.Sprintf("one FuzzGateway input ran for more than %s", fuzzHangLimit))
		})
		defer watchdog.Stop()
		h.run(data)
	})
}

// Phases: what the downstream is receiving.
const (
	phaseIdle = iota
	phasePass
	phaseMerge
)

// senderMode is how the downstream answers.
type senderMode int

const (
	senderAccept senderMode = iota
	senderFail              // 503: nothing is stored
	senderTSDB              // Prometheus' rules: out of order, duplicate, too far ahead are 400
	senderPoison            // some series are refused on their own, whatever their samples
	numSenderModes
)

var senderModeNames = [numSenderModes]string{"accept", "fail", "tsdb", "poison"}

// flushMode is how a flush delivers.
type flushMode int

const (
	flushAck     flushMode = iota // a deliverer that acknowledges everything
	flushFail                     // fails after a few batches
	flushReject                   // refuses some series on their own
	flushForward                  // the gateway's own, through the downstream
	flushFinal                    // the shutdown flush, acknowledged
	numFlushModes
)

var flushModeNames = [numFlushModes]string{"ack", "fail", "reject", "forward", "final"}

var clockSteps = []time.Duration{
	time.Millisecond, 250 * time.Millisecond, time.Second, 5 * time.Second, 15 * time.Second,
	30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute,
	30 * time.Minute, time.Hour, 3 * time.Hour, 6 * time.Hour,
}

// emitState is the last merged point of an output the downstream holds.
type emitState struct {
	ts  int64
	val string
}

// passState is what passed through for an output: the newest timestamp
// the downstream holds (clamped as the merger clamps it) and the last
// time, on the gateway clock, the output was routed.
type passState struct {
	max  int64
	has  bool
	wall int64
}

// tsdbLast is the newest sample of one kind of one series the downstream
// holds.
type tsdbLast struct {
	ts  int64
	val string
}

type dupKey struct {
	hist bool
	ts   int64
}

type fuzzHarness struct {
	t     *testing.T
	trace bool
	g     *Gateway
	reg   *prometheus.Registry
	clock *testClock
	cfgs  []*config.Config
	// minStale is the shortest merge.staleness of all configurations: an
	// output routed less than this ago cannot have been forgotten.
	minStale int64
	gen      fuzzGen
	dir      string // for the merge state file
	req      wire.Request
	raw, enc []byte
	op       int
	ops      []string // what ran, for failure messages

	phase int
	mode  senderMode
	// lastFailed: the last body sent downstream failed with a retryable
	// error, so the merger believes the downstream is down.
	lastFailed bool
	param      int
	exempt     map[dupKey]bool // duplicates the sender's own request holds
	// Of the Process in progress: its clock and the merge.max_ahead in
	// force.
	procNow, maxAhead int64

	emitted map[string]emitState
	passed  map[string]passState
	tsdb    map[string]tsdbLast // by label key and kind ("f" or "h")

	stats fuzzStats
}

// fuzzStats count what a run exercised, so that a test can tell that the
// seeds reach every stage.
type fuzzStats struct {
	processed, forwarded, merged, folded, invalid, droppedByMerge int
	passBodies, refusedBodies, mergedPoints, mergedHistograms     int
	staleMarkers, rejectedPoints, restarts                        int
}

func newFuzzHarness(t *testing.T, cfgs []*config.Config) *fuzzHarness {
	h := &fuzzHarness{
		t:       t,
		clock:   &testClock{t: time.UnixMilli(fuzzEpoch)},
		cfgs:    cfgs,
		emitted: map[string]emitState{},
		passed:  map[string]passState{},
		tsdb:    map[string]tsdbLast{},
	}
	h.minStale = math.MaxInt64
	for _, c := range cfgs {
		h.minStale = min(h.minStale, time.Duration(c.Merge.Staleness).Milliseconds())
	}
	h.gen = fuzzGen{now: func() int64 { return h.clock.Now().UnixMilli() }, runs: map[string]*fuzzRun{}}
	g, err := h.newGateway(cfgs[0])
	if err != nil {
		t.Fatal(err)
	}
	h.g = g
	return h
}

// newGateway starts a gateway on the harness' clock and downstream, with
// its own metrics registry.
func (h *fuzzHarness) newGateway(cfg *config.Config) (*Gateway, error) {
	sender := &fuzzSender{h: h}
	h.reg = prometheus.NewRegistry()
	return New(cfg, Options{
		Registerer: h.reg,
		Now:        h.clock.Now,
		NewSender: func(config.DownstreamConfig, prometheus.Registerer, *slog.Logger) (Sender, error) {
			return sender, nil
		},
	})
}

// restart is a crash and a restart: the merge state is saved as Run saves
// it every minute, and a new gateway loads it, with an empty limiter and
// route cache; the clock and the downstream stay. Outputs the state file
// keeps (merged ones with an input seen within forget_after) keep their
// history in the harness, which checks that they continue it; the others
// start afresh.
func (h *fuzzHarness) restart() {
	h.stats.restarts++
	if h.dir == "" {
		h.dir = h.t.TempDir()
	}
	path := filepath.Join(h.dir, "merge.state")
	if err := h.g.merger.SaveState(path); err != nil {
		h.fail("restart: %v", err)
	}
	cfg := *h.g.Config()
	cfg.Merge.StateFile = path
	h.g.Close()
	g, err := h.newGateway(&cfg)
	if err != nil {
		h.fail("restart: the state just saved does not load: %v", err)
	}
	h.g = g
	restored := map[string]bool{}
	for _, c := range g.Collisions(0) {
		restored[c.Series] = true
	}
	for key := range h.emitted {
		if !restored[mergeString(key)] {
			delete(h.emitted, key)
		}
	}
	for key := range h.passed {
		if !restored[mergeString(key)] {
			delete(h.passed, key)
		}
	}
}

// mergeString renders a labelKey as merge.Collision.Series does.
func mergeString(key string) string {
	parts := strings.Split(strings.TrimSuffix(key, "\xff"), "\xff")
	var sb strings.Builder
	sb.WriteByte('{')
	for i := 0; i+1 < len(parts); i += 2 {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(parts[i] + `="` + parts[i+1] + `"`)
	}
	sb.WriteByte('}')
	return sb.String()
}

func (h *fuzzHarness) fail(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf("op %d: %s\nops: %s", h.op, fmt.Sprintf(format, args...), strings.Join(h.ops, " "))
}

func (h *fuzzHarness) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	h.ops = append(h.ops, s)
	if h.trace {
		h.t.Logf("op %d: %s", h.op, s)
	}
}

func (h *fuzzHarness) run(data []byte) {
	in := &fuzzInput{data: data[:min(len(data), maxFuzzInput)]}
	for h.op = 0; h.op < maxFuzzOps && in.more(); h.op++ {
		switch fuzzOps[in.intn(len(fuzzOps))] {
		case opRaw:
			// Short bodies take one length byte; 0xff announces two.
			n := int(in.byte())
			if n == 0xff {
				n = in.u16() % (maxRawBody + 1)
			}
			body := in.take(n)
			h.note("raw(%d)", len(body))
			h.process(body)
		case opRequest:
			req := h.gen.request(in)
			h.note("request(%d)", len(req.Timeseries))
			h.processRequest(req, nil)
		case opMutated:
			req := h.gen.request(in)
			h.note("mutated(%d)", len(req.Timeseries))
			h.processRequest(req, in)
		case opClock:
			d := clockSteps[in.intn(len(clockSteps))] * time.Duration(1+in.intn(4))
			h.note("clock+%s", d)
			h.clock.Add(d)
		case opFlush:
			mode, param := flushMode(in.intn(int(numFlushModes))), int(in.byte())
			h.note("flush(%s,%d)", flushModeNames[mode], param)
			h.flush(mode, param)
		case opSender:
			h.mode, h.param = senderMode(in.intn(int(numSenderModes))), int(in.byte())
			h.note("sender(%s,%d)", senderModeNames[h.mode], h.param)
		case opReload:
			i := in.intn(len(h.cfgs))
			h.note("reload(%c)", 'A'+i)
			if err := h.g.Apply(h.cfgs[i]); err != nil {
				h.fail("reload: %v", err)
			}
		case opMaintain:
			h.note("maintain")
			h.g.limiter.Sweep()
			stale := time.Duration(h.g.Config().Merge.Staleness)
			h.g.routes.sweep(h.g.limiter.Clock(), uint32(stale/time.Second))
			h.g.EvaluateGuard()
		case opObserve:
			h.note("observe")
			if _, err := h.reg.Gather(); err != nil {
				h.fail("metrics: %v", err)
			}
			h.g.Collisions(5)
			h.g.limiter.Cardinality(0)
			if est := h.g.Estimator(); est != nil {
				cardinality.Workloads(est.Report(h.clock.Now().UnixMilli(), cardinality.Filter{TopLabels: 3}))
			}
			if gd := h.g.Guard(); gd != nil {
				gd.Status()
			}
		case opRestart:
			// Rare: saving and loading the state is the slowest operation.
			if in.intn(4) == 0 {
				h.note("restart")
				h.restart()
			}
		}
	}
	// Shutdown: the downstream is back and the final flush delivers
	// everything absorbed.
	h.op = -1
	h.mode = senderAccept
	h.note("end")
	h.flush(flushFinal, 0)
	if h.trace {
		h.t.Logf("%+v", h.stats)
	}
}

// processRequest encodes req with gogo, overwrites a few bytes of the
// encoding when in is given, and processes it.
func (h *fuzzHarness) processRequest(req *prompb.WriteRequest, in *fuzzInput) {
	body, err := req.Marshal()
	if err != nil {
		h.fail("marshal: %v", err)
	}
	if h.trace {
		h.t.Logf("request: %s", req.String())
	}
	if in != nil {
		for range 1 + in.intn(4) {
			if len(body) > 0 {
				body[in.u16()%len(body)] = in.byte()
			}
		}
	}
	h.process(body)
}

// process runs one decoded body through Process, as the HTTP handler does
// after snappy, on a request and a buffer reused from request to request.
func (h *fuzzHarness) process(body []byte) {
	h.raw = append(h.raw[:0], body...)
	// As ingest does: labels deferred, and guessed when the gateway says.
	h.req.SetDeferLabels(true)
	h.req.SetGuessLabels(h.g.GuessLabels())
	werr := h.req.Unmarshal(h.raw)
	var pb prompb.WriteRequest
	perr := pb.Unmarshal(h.raw)
	if werr != nil && perr == nil || werr == nil && perr != nil && h.req.Guessed() == 0 {
		h.fail("wire.Unmarshal: %v, gogo: %v, for body %x", werr, perr, body)
	}
	if werr != nil {
		return
	}
	if perr != nil {
		// Malformed where the decoder guessed: Process finds it before
		// anything else, and the request is refused whole.
		res, err := h.g.Process(context.Background(), &h.req)
		if !errors.Is(err, wire.ErrMalformed) || res.Forwarded+res.Merged+res.DroppedByRelabel > 0 {
			h.fail("Process of a body gogo refuses (%v), its labels guessed: %v, %+v", perr, err, res)
		}
		return
	}
	// As ingest does: a request nothing changes goes downstream in the
	// body it came in, which the fuzz sender checks like any other.
	h.req.Original = snappy.Encode(nil, h.raw)
	h.exempt = selfDuplicates(&pb)
	h.procNow = h.clock.Now().UnixMilli()
	h.maxAhead = time.Duration(h.g.Config().Merge.MaxAhead).Milliseconds()
	received := h.req.NumSamples()
	h.phase = phasePass
	res, err := h.g.Process(context.Background(), &h.req)
	h.phase = phaseIdle
	if res.Recounted {
		received = res.Received[0] + res.Received[1]
	}
	if errors.Is(err, wire.ErrMalformed) {
		h.fail("Process: %v, for a body gogo decodes", err)
	}
	h.stats.processed++
	h.stats.forwarded += res.Forwarded
	h.stats.merged += res.Merged
	h.stats.folded += res.Folded
	h.stats.invalid += res.Invalid.DroppedSamples()
	h.stats.droppedByMerge += res.DroppedByMerge
	// Process leaves in req the series it forwarded.
	remaining := h.req.NumSamples()
	if got := res.Invalid.DroppedSamples() + res.DroppedByRelabel + res.Merged + res.DroppedByMerge + remaining; got != received {
		h.fail("%d samples received, %d accounted for: %+v, %d forwarded", received, got, res, remaining)
	}
	if err == nil && res.Forwarded+res.Rejected.Samples != remaining {
		h.fail("%d samples sent, %d delivered and %d rejected", remaining, res.Forwarded, res.Rejected.Samples)
	}
	// A request whose series were all merged is refused while the last
	// delivery failed: the merger cannot know the downstream is back
	// before something reaches it, and the sender's retry is harmless.
	if err != nil && h.mode != senderFail && !(err == errMergedUndeliverable && h.lastFailed) {
		h.fail("Process: %v with a downstream that answers every body", err)
	}
	// What outlives the request must have been copied: spoil the memory it
	// was decoded from.
	for i := range h.raw {
		h.raw[i] = 0xa5
	}
}

// selfDuplicates returns the timestamps at which the request itself
// carries one series twice (after Sanitize's normalisation).
func selfDuplicates(pb *prompb.WriteRequest) map[dupKey]bool {
	type key struct {
		id string
		dupKey
	}
	seen := map[key]bool{}
	out := map[dupKey]bool{}
	add := func(k key) {
		if seen[k] {
			out[k.dupKey] = true
		}
		seen[k] = true
	}
	for i := range pb.Timeseries {
		s := &pb.Timeseries[i]
		var ls []prompb.Label
		for _, l := range s.Labels {
			if l.Value != "" {
				ls = append(ls, l)
			}
		}
		slices.SortStableFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
		id := labelKey(ls)
		for _, smp := range s.Samples {
			add(key{id, dupKey{false, smp.Timestamp}})
		}
		for _, hp := range s.Histograms {
			add(key{id, dupKey{true, hp.Timestamp}})
		}
	}
	return out
}

var errDownstreamDown = errors.New("downstream down")

// flush runs one merger flush through the deliverer mode picks.
func (h *fuzzHarness) flush(mode flushMode, param int) {
	h.phase = phaseMerge
	defer func() { h.phase = phaseIdle }()
	ctx := context.Background()
	switch mode {
	case flushAck, flushFinal:
		n := 0
		if !h.g.merger.Flush(ctx, h.deliverer(mode, param, &n), mode == flushFinal) {
			h.fail("a flush whose deliverer acknowledges everything did not deliver everything")
		}
		// Nothing is left pending, and nothing new appears without new data.
		n = 0
		h.g.merger.Flush(ctx, h.deliverer(mode, param, &n), mode == flushFinal)
		if n != 0 {
			h.fail("a flush right after a complete one delivered %d series", n)
		}
	case flushForward:
		h.g.merger.Flush(ctx, h.g.deliverMerged, false)
	default:
		n := 0
		h.g.merger.Flush(ctx, h.deliverer(mode, param, &n), false)
	}
}

// deliverer is a merge.Deliverer that checks each batch and answers as mode
// says; delivered counts the series it was given.
func (h *fuzzHarness) deliverer(mode flushMode, param int, delivered *int) merge.Deliverer {
	batches := 0
	return func(_ context.Context, req *wire.Request, onReject func(int, string, error)) error {
		h.enc = req.MarshalAppend(h.enc[:0])
		var pb prompb.WriteRequest
		if err := pb.Unmarshal(h.enc); err != nil {
			h.fail("merged batch does not decode: %v", err)
		}
		if len(pb.Timeseries) != len(req.Series) {
			h.fail("merged batch of %d series decodes to %d", len(req.Series), len(pb.Timeseries))
		}
		if limit := h.g.merger.Rules().MaxSamplesPerSend; len(pb.Timeseries) > limit {
			h.fail("merged batch of %d series, max_samples_per_send %d", len(pb.Timeseries), limit)
		}
		h.checkBody(&pb, true)
		h.checkMerged(&pb)
		*delivered += len(pb.Timeseries)
		rejected := make([]bool, len(pb.Timeseries))
		switch mode {
		case flushFail:
			if batches >= param%3 {
				h.lastFailed = true
				return errDownstreamDown
			}
		case flushReject:
			for i := range pb.Timeseries {
				if poisoned(pb.Timeseries[i].Labels, param) {
					rejected[i] = true
					onReject(i, forward.ReasonInvalid, errors.New("refused"))
				}
			}
		}
		batches++
		h.lastFailed = false
		h.ackMerged(&pb, rejected)
		return nil
	}
}

// poisoned picks the series a picky downstream refuses, by their labels.
func poisoned(ls []prompb.Label, param int) bool {
	f := fnv.New32a()
	f.Write([]byte(labelKey(ls)))
	return f.Sum32()%uint32(2+param%3) == 0
}

// fuzzSender is the downstream of pass-through data, and of merged data
// when the gateway's own deliverer flushes.
type fuzzSender struct{ h *fuzzHarness }

func (s *fuzzSender) Send(_ context.Context, body []byte) error { return s.h.send(body) }
func (s *fuzzSender) Close()                                    {}

func (h *fuzzHarness) send(body []byte) error {
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		h.fail("body is not snappy: %v", err)
	}
	var pb prompb.WriteRequest
	if err := pb.Unmarshal(raw); err != nil {
		h.fail("body does not decode with prompb: %v", err)
	}
	merged := h.phase == phaseMerge
	switch h.phase {
	case phaseIdle:
		h.fail("a body was sent outside Process and Flush")
	case phasePass:
		h.stats.passBodies++
		h.checkBody(&pb, false)
		h.notePass(&pb)
	default:
		h.checkBody(&pb, true)
		h.checkMerged(&pb)
	}
	ferr := h.answer(&pb)
	h.lastFailed = ferr != nil && ferr.Status >= 500
	if ferr != nil {
		h.stats.refusedBodies++
		if merged && ferr.Status == http.StatusBadRequest {
			// Possibly refused for good: an output whose stale marker is
			// dropped may be forgotten.
			for i := range pb.Timeseries {
				if _, _, stale := h.point(&pb.Timeseries[i]); stale {
					delete(h.emitted, labelKey(pb.Timeseries[i].Labels))
				}
			}
		}
		return ferr
	}
	if merged {
		h.ackMerged(&pb, nil)
	} else {
		h.ackPass(&pb)
	}
	return nil
}

// answer is the downstream's verdict on a body, nil for success.
func (h *fuzzHarness) answer(pb *prompb.WriteRequest) *forward.Error {
	refuse := func(reason, msg string) *forward.Error {
		return &forward.Error{Status: http.StatusBadRequest, Code: http.StatusBadRequest, Reason: reason, Msg: msg}
	}
	switch h.mode {
	case senderFail:
		return &forward.Error{Status: http.StatusServiceUnavailable, Code: http.StatusServiceUnavailable, Msg: "downstream unavailable"}
	case senderPoison:
		for i := range pb.Timeseries {
			if poisoned(pb.Timeseries[i].Labels, h.param) {
				return refuse(forward.ReasonInvalid, "refused")
			}
		}
	case senderTSDB:
		limit := h.clock.Now().Add(prometheusMaxAhead).UnixMilli()
		pending := map[string]tsdbLast{}
		check := func(key string, ts int64, val string) *forward.Error {
			last, ok := pending[key]
			if !ok {
				last, ok = h.tsdb[key]
			}
			switch {
			case ts > limit:
				return refuse(forward.ReasonOutOfBounds, "out of bounds: timestamp is too far in the future")
			case ok && ts < last.ts:
				return refuse(forward.ReasonOutOfOrder, "out of order sample")
			case ok && ts == last.ts && val != last.val:
				return refuse(forward.ReasonDuplicate, "duplicate sample for timestamp")
			}
			pending[key] = tsdbLast{ts: ts, val: val}
			return nil
		}
		for i := range pb.Timeseries {
			s := &pb.Timeseries[i]
			key := labelKey(s.Labels)
			for _, smp := range s.Samples {
				if err := check(key+"f", smp.Timestamp, floatKey(smp.Value)); err != nil {
					return err
				}
			}
			for j := range s.Histograms {
				if err := check(key+"h", s.Histograms[j].Timestamp, histKey(&s.Histograms[j])); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// store records what the downstream now holds.
func (h *fuzzHarness) store(s *prompb.TimeSeries) {
	key := labelKey(s.Labels)
	put := func(k string, ts int64, val string) {
		if last, ok := h.tsdb[k]; !ok || ts >= last.ts {
			h.tsdb[k] = tsdbLast{ts: ts, val: val}
		}
	}
	for _, smp := range s.Samples {
		put(key+"f", smp.Timestamp, floatKey(smp.Value))
	}
	for j := range s.Histograms {
		put(key+"h", s.Histograms[j].Timestamp, histKey(&s.Histograms[j]))
	}
}

func floatKey(v float64) string { return fmt.Sprintf("%x", math.Float64bits(v)) }

func histKey(hp *prompb.Histogram) string {
	b, _ := hp.Marshal()
	return string(b)
}

// checkBody asserts what every delivered body must satisfy: labels a
// receiver accepts, native histograms Prometheus accepts, and no series
// twice at one timestamp (unless the sender's request had it so; merged
// bodies never).
func (h *fuzzHarness) checkBody(pb *prompb.WriteRequest, merged bool) {
	h.t.Helper()
	what := "forwarded"
	if merged {
		what = "merged"
	}
	type sampleKey struct {
		series string
		dupKey
	}
	seen := map[sampleKey]bool{}
	dup := func(key string, k dupKey) {
		sk := sampleKey{key, k}
		if seen[sk] && (merged || !h.exempt[k]) {
			kind := "sample"
			if k.hist {
				kind = "histogram"
			}
			h.fail("%s body holds %s twice with a %s at %d", what, printKey(key), kind, k.ts)
		}
		seen[sk] = true
	}
	for i := range pb.Timeseries {
		s := &pb.Timeseries[i]
		key := labelKey(s.Labels)
		if err := checkOutputLabels(s.Labels); err != nil {
			h.fail("%s series %s: %v", what, printKey(key), err)
		}
		for _, smp := range s.Samples {
			dup(key, dupKey{false, smp.Timestamp})
		}
		for j := range s.Histograms {
			hp := &s.Histograms[j]
			if err := prometheusAccepts(hp); err != nil {
				h.fail("%s series %s: Prometheus refuses its histogram at %d: %v\n%s", what, printKey(key), hp.Timestamp, err, hp.String())
			}
			dup(key, dupKey{true, hp.Timestamp})
		}
	}
}

// checkOutputLabels: sorted by name, no name twice, no empty name or value,
// a metric name.
func checkOutputLabels(ls []prompb.Label) error {
	name := false
	for i, l := range ls {
		switch {
		case l.Name == "":
			return errors.New("empty label name")
		case l.Value == "":
			return fmt.Errorf("label %s has an empty value", l.Name)
		case i > 0 && ls[i-1].Name >= l.Name:
			return fmt.Errorf("labels %s and %s out of order or repeated", ls[i-1].Name, l.Name)
		}
		name = name || l.Name == "__name__"
	}
	if !name {
		return errors.New("no metric name")
	}
	return nil
}

// prometheusAccepts does what Prometheus' remote-write receiver does with a
// native histogram: prompb's conversion, the reduction of schemas 9..52 to
// 8, then Validate.
func prometheusAccepts(hp *prompb.Histogram) error {
	reserved := hp.Schema > histogram.ExponentialSchemaMax && hp.Schema <= histogram.ExponentialSchemaMaxReserved
	// Validate first with the schema clamped, as the reduction of a broken
	// histogram is not defined.
	clamped := *hp
	if reserved {
		clamped.Schema = histogram.ExponentialSchemaMax
	}
	var err error
	if hp.IsFloatHistogram() {
		err = clamped.ToFloatHistogram().Validate()
	} else {
		err = clamped.ToIntHistogram().Validate()
	}
	if err != nil || !reserved {
		return err
	}
	if hp.IsFloatHistogram() {
		fh := hp.ToFloatHistogram()
		if err := fh.ReduceResolution(histogram.ExponentialSchemaMax); err != nil {
			return err
		}
		return fh.Validate()
	}
	ih := hp.ToIntHistogram()
	if err := ih.ReduceResolution(histogram.ExponentialSchemaMax); err != nil {
		return err
	}
	return ih.Validate()
}

// point returns the one point a merged series carries: its timestamp, its
// value (for comparisons) and whether it is a stale marker.
func (h *fuzzHarness) point(s *prompb.TimeSeries) (ts int64, val string, stale bool) {
	if len(s.Samples) > 1 || len(s.Histograms) > 1 || len(s.Samples)+len(s.Histograms) == 0 {
		h.fail("merged series %s carries %d samples and %d histograms, want one point", printKey(labelKey(s.Labels)), len(s.Samples), len(s.Histograms))
	}
	if len(s.Samples) == 1 {
		ts, val = s.Samples[0].Timestamp, floatKey(s.Samples[0].Value)
		stale = value.IsStaleNaN(s.Samples[0].Value)
	}
	if len(s.Histograms) == 1 {
		hp := &s.Histograms[0]
		if len(s.Samples) == 1 && hp.Timestamp != ts {
			h.fail("merged series %s: sample at %d, histogram at %d", printKey(labelKey(s.Labels)), ts, hp.Timestamp)
		}
		ts = hp.Timestamp
		val += histKey(hp)
	}
	return ts, val, stale
}

// checkMerged asserts the order of merged emissions, per output, against
// what the downstream already holds.
func (h *fuzzHarness) checkMerged(pb *prompb.WriteRequest) {
	h.t.Helper()
	now := h.clock.Now().UnixMilli()
	for i := range pb.Timeseries {
		s := &pb.Timeseries[i]
		key := labelKey(s.Labels)
		ts, val, _ := h.point(s)
		if ts > now+prometheusMaxAhead.Milliseconds() {
			h.fail("merged %s at %d, %dms ahead of the clock", printKey(key), ts, ts-now)
		}
		if e, ok := h.emitted[key]; ok && (ts < e.ts || ts == e.ts && val != e.val) {
			h.fail("merged %s at %d after an emission at %d: not increasing", printKey(key), ts, e.ts)
		}
		// An output routed within the staleness period cannot have been
		// forgotten: the merger knows what passed through.
		if p, ok := h.passed[key]; ok && p.has && now-p.wall <= h.minStale && ts <= p.max {
			h.fail("merged %s at %d, not after %d, which passed through", printKey(key), ts, p.max)
		}
	}
}

// ackMerged records the merged points the downstream now holds.
func (h *fuzzHarness) ackMerged(pb *prompb.WriteRequest, rejected []bool) {
	for i := range pb.Timeseries {
		s := &pb.Timeseries[i]
		key := labelKey(s.Labels)
		ts, val, stale := h.point(s)
		if stale {
			// The output ended; it may be forgotten, and start afresh.
			delete(h.emitted, key)
		}
		if rejected != nil && rejected[i] {
			h.stats.rejectedPoints++
			continue
		}
		h.stats.mergedPoints++
		h.stats.mergedHistograms += len(s.Histograms)
		if stale {
			h.stats.staleMarkers++
		}
		if !stale {
			h.emitted[key] = emitState{ts: ts, val: val}
		}
		delete(h.passed, key)
		h.store(s)
	}
}

// notePass checks and records the outputs of a pass-through body.
func (h *fuzzHarness) notePass(pb *prompb.WriteRequest) {
	h.t.Helper()
	for i := range pb.Timeseries {
		key := labelKey(pb.Timeseries[i].Labels)
		if e, ok := h.emitted[key]; ok {
			h.fail("%s passed through, but it is merged: emitted at %d and not ended", printKey(key), e.ts)
		}
		p := h.passed[key]
		if h.procNow-p.wall > h.minStale {
			p = passState{} // the merger may have forgotten it
		}
		p.wall = h.procNow
		h.passed[key] = p
	}
}

// ackPass records what passed through and was stored.
func (h *fuzzHarness) ackPass(pb *prompb.WriteRequest) {
	limit := h.procNow + h.maxAhead
	for i := range pb.Timeseries {
		s := &pb.Timeseries[i]
		key := labelKey(s.Labels)
		p := h.passed[key]
		add := func(ts int64) {
			if ts = min(ts, limit); !p.has || ts > p.max {
				p.max, p.has = ts, true
			}
		}
		for _, smp := range s.Samples {
			add(smp.Timestamp)
		}
		for _, hp := range s.Histograms {
			add(hp.Timestamp)
		}
		h.passed[key] = p
		h.store(s)
	}
}
