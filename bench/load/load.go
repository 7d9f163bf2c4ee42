// Package load measures a remote-write proxy under realistic service-mesh
// load, side by side with vmagent: it pre-encodes a meshgen workload, starts
// a counting receiver and the system under test (the cardinal binary or
// vmagent) as a child process on 127.0.0.1, drives it with concurrent
// senders, and reports the child's CPU seconds per million accepted samples
// (from /proc), its peak resident memory, request latency, throughput, and
// whether what reached the receiver is correct.
//
// Every loop is bounded in count and time, nothing listens beyond
// 127.0.0.1, and child processes are stopped when a run ends (and killed by
// the kernel if this process dies first). Linux only: it reads /proc.
package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cardinal-gateway/cardinal/internal/rwclient"
)

// Config describes one run against one target.
type Config struct {
	Target   string    // TargetCardinal, TargetVMAgent or TargetVMAgentDebian
	Workload *Workload // pre-encoded traffic (see NewWorkload)
	// Senders is the number of concurrent senders (default 4, like
	// Prometheus shards). Request index i always goes through sender
	// i % Senders, in step order, so each input series arrives in order.
	Senders int
	// MaxRequests bounds the requests sent (0: every request of the
	// workload); MaxDuration bounds the send phase (default 2m).
	MaxRequests int
	MaxDuration time.Duration
	// Rate paces the senders to this many requests per second in total
	// (0: each sender sends its next request as soon as the last returns).
	Rate float64
	// DeliveryTimeout bounds the wait for the receiver to get everything
	// after the send phase (default 3 flush intervals + 30s).
	DeliveryTimeout time.Duration
	// FlushInterval is cardinal's merge.flush_interval (default 5s).
	FlushInterval time.Duration
	// Estimates runs Cardinal with the estimates and the guard (enforce).
	Estimates bool
	// Replicas, for TargetCardinal only, is how many cardinal processes
	// run as one cluster (--cluster.peers of all of them, the same
	// configuration); sender i writes to replica i % Replicas. 0 and 1:
	// one process, without cluster flags.
	Replicas int

	CardinalBinary string // built by BuildCardinal
	VMAgentBinary  string // TargetVMAgent's binary, default DefaultVMAgent
	// DebianVMAgentBinary is TargetVMAgentDebian's, default DebianVMAgent.
	DebianVMAgentBinary string
	VMAgentQueues       int // -remoteWrite.queues; 0 keeps vmagent's default
	// VMAgentRules is RulesLabelKeep (default, the rules cardinal runs) or
	// RulesLabelDrop (equivalent on meshgen's output, a smaller regex).
	VMAgentRules string
	// CPUProfile, when set, is where a CPU profile of the target's send
	// phase is written (both serve /debug/pprof; of a cluster, the first
	// replica's).
	CPUProfile string
	// CPUProfileTime is how long the CPU profile runs (default: 30s, or
	// MaxDuration if shorter). Set it near the send phase's length to
	// leave out what the target does after sending, such as idle flushes.
	CPUProfileTime time.Duration
	// HeapProfile, when set, is where the target's heap profile is written
	// right after the send phase (of a cluster, the first replica's).
	HeapProfile string
	// GOMAXPROCS, when positive, is set in the target's environment.
	GOMAXPROCS int
	// TmpDir is where the run's scratch directory is made (default os.TempDir).
	TmpDir string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Result is what one run measured.
type Result struct {
	Target string

	// Send phase, at the sender.
	Requests, Failed    int           // requests sent; of those, not answered 2xx
	FailedExample       string        // one failure, for the report
	AcceptedSamples     int64         // samples in requests answered 2xx
	SendTime            time.Duration // first request to last answer
	P50, P99, MaxLat    time.Duration // per-request latency
	AcceptedPerSec      float64
	SendTimedOut        bool // MaxDuration cut the send phase short
	DeliveredSamples    int64
	DeliverTime         time.Duration // first request to the last arrival that completed delivery
	DeliveredPerSec     float64
	DeliveryTimedOut    bool
	ExpectedForwarded   int64 // accepted samples the relabel rules keep (what a non-merging proxy forwards)
	CPUSend, CPUDeliver time.Duration
	// CPUPerMSend is CPU seconds per million accepted samples over the send
	// phase; CPUPerMAll includes the wait until delivery (asynchronous
	// sending, merge flushes).
	CPUPerMSend, CPUPerMAll float64
	IdleRSS, PeakRSS        int64 // bytes; with replicas, their sum

	// With Replicas > 1: the cluster's size, each replica's CPU over the
	// send phase and until delivery and its peak RSS (in replica order:
	// sender i wrote to replica i % Replicas), and at the end, summed
	// over the replicas' /metrics: PeerSamples handed to the owning
	// replica (cardinal_forwarded_samples_total{path="peer"}),
	// ReceivedSamples (cardinal_received_samples_total: from the senders
	// and from peers) and PeerErrors (cardinal_cluster_peer_errors_total).
	// PeerShare is PeerSamples / AcceptedSamples.
	Replicas                          int
	ReplicaCPUSend, ReplicaCPUDeliver []time.Duration
	ReplicaPeakRSS                    []int64
	PeerSamples, ReceivedSamples      int64
	PeerErrors                        int64
	PeerShare                         float64
	MetricsError                      string // why the replicas' metrics could not be read

	// At the receiver.
	Recv  ReceiverStats
	Check Check
}

// Run starts a receiver and the target, sends cfg.Workload through it and
// measures. It stops the target before returning.
func Run(ctx context.Context, cfg Config) (res Result, err error) {
	if cfg.Workload == nil {
		return res, errors.New("no workload")
	}
	if cfg.Senders <= 0 {
		cfg.Senders = 4
	}
	if cfg.MaxDuration <= 0 {
		cfg.MaxDuration = 2 * time.Minute
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 5 * time.Second
	}
	if cfg.DeliveryTimeout <= 0 {
		cfg.DeliveryTimeout = 3*cfg.FlushInterval + 30*time.Second
	}
	if cfg.VMAgentBinary == "" {
		cfg.VMAgentBinary = DefaultVMAgent
	}
	if cfg.DebianVMAgentBinary == "" {
		cfg.DebianVMAgentBinary = DebianVMAgent
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Replicas > 1 && cfg.Target != TargetCardinal {
		return res, fmt.Errorf("%d replicas: only target %s runs as a cluster", cfg.Replicas, TargetCardinal)
	}
	logw := cfg.Log
	if logw == nil {
		logw = io.Discard
	}
	logf := func(format string, args ...any) { fmt.Fprintf(logw, "  "+format+"\n", args...) }
	res.Target = cfg.Target
	w := cfg.Workload

	dir, err := os.MkdirTemp(cfg.TmpDir, "cardinal-load-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)

	recv := NewReceiver(w.Denied())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	recvSrv := &http.Server{Handler: recv, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = recvSrv.Serve(ln) }()
	defer recvSrv.Close()

	so := startOptions{
		dir: dir, downstream: "http://" + ln.Addr().String() + "/api/v1/write",
		cardinal: cfg.CardinalBinary, vmagent: cfg.VMAgentBinary,
		flush: cfg.FlushInterval, queues: cfg.VMAgentQueues, ready: 30 * time.Second,
		rules: cfg.VMAgentRules, denied: w.Denied(), allowlist: w.Allowlist(), name: cfg.Target, gomaxprocs: cfg.GOMAXPROCS,
		rw2: w.cfg.RW2, estimates: cfg.Estimates,
	}
	// procs are the processes of the target: one, or the replicas of a
	// cluster. p is the first, the one profiled.
	var p *process
	var procs []*process
	settleStart := time.Now()
	switch cfg.Target {
	case TargetCardinal:
		if cfg.CardinalBinary == "" {
			return res, errors.New("no cardinal binary; see BuildCardinal")
		}
		if cfg.Replicas > 1 {
			procs, err = startCardinalCluster(ctx, so, cfg.Replicas)
		} else {
			p, err = startCardinal(ctx, so)
		}
	case TargetVMAgent:
		p, err = startVMAgent(ctx, so)
	case TargetVMAgentDebian:
		so.vmagent = cfg.DebianVMAgentBinary
		p, err = startVMAgent(ctx, so)
	default:
		return res, fmt.Errorf("unknown target %q: want %s, %s or %s", cfg.Target, TargetCardinal, TargetVMAgent, TargetVMAgentDebian)
	}
	if err != nil {
		return res, err
	}
	if procs == nil {
		procs = []*process{p}
	}
	p = procs[0]
	defer func() {
		for _, p := range procs {
			if serr := p.stop(10 * time.Second); serr != nil && err == nil {
				err = serr
			}
		}
	}()
	if len(procs) > 1 {
		res.Replicas = len(procs)
		var addrs []string
		for _, q := range procs {
			addrs = append(addrs, fmt.Sprintf("%s (pid %d)", q.baseURL, q.pid()))
		}
		logf("%d cardinal replicas ready with every member up and the handover over after %s: %s",
			len(procs), time.Since(settleStart).Round(time.Millisecond), strings.Join(addrs, ", "))
	}

	// Idle baseline after the process has settled.
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(time.Second):
	}
	_, idle, err := procsMemory(procs)
	if err != nil {
		return res, err
	}
	res.IdleRSS = idle.RSS
	if len(procs) > 1 {
		logf("%s x%d ready, idle rss %.1f MiB in all", cfg.Target, len(procs), mib(idle.RSS))
	} else {
		logf("%s pid %d ready, idle rss %.1f MiB", cfg.Target, p.pid(), mib(idle.RSS))
	}

	cpus0, cpu0, err := procsCPU(procs)
	if err != nil {
		return res, err
	}
	var profDone chan error
	if cfg.CPUProfile != "" {
		profDone = make(chan error, 1)
		go func() {
			secs := int(cfg.profileTime().Seconds())
			profDone <- fetchProfile(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", p.baseURL, max(secs, 1)), cfg.CPUProfile, time.Duration(secs)*time.Second)
		}()
	}
	sendStart := time.Now()
	urls := make([]string, len(procs))
	for i, q := range procs {
		urls[i] = q.writeURL
	}
	sr := send(ctx, cfg, urls)
	res.SendTime = time.Since(sendStart)
	if profDone != nil {
		if err := <-profDone; err != nil {
			logf("cpu profile: %v", err)
		} else {
			logf("cpu profile of the first %s of sending written to %s", cfg.profileTime(), cfg.CPUProfile)
		}
	}
	cpus1, cpu1, err := procsCPU(procs)
	if err != nil {
		return res, err
	}
	if cfg.HeapProfile != "" {
		if err := fetchProfile(ctx, p.baseURL+"/debug/pprof/heap", cfg.HeapProfile, 0); err != nil {
			logf("heap profile: %v", err)
		} else {
			logf("heap profile after sending written to %s", cfg.HeapProfile)
		}
	}
	for _, p := range procs {
		if p.exited() {
			return res, fmt.Errorf("%s exited during the run (%v):\n%s", p.name, p.waitErr, p.logTail(20))
		}
	}
	res.Requests, res.Failed, res.FailedExample = sr.requests, sr.failed, sr.failedExample
	res.AcceptedSamples, res.SendTimedOut = sr.accepted, sr.timedOut
	res.ExpectedForwarded = sr.kept
	slices.Sort(sr.latencies)
	res.P50, res.P99 = Percentile(sr.latencies, 0.5), Percentile(sr.latencies, 0.99)
	if n := len(sr.latencies); n > 0 {
		res.MaxLat = sr.latencies[n-1]
	}
	res.AcceptedPerSec = float64(res.AcceptedSamples) / res.SendTime.Seconds()
	res.CPUSend = cpu1 - cpu0
	logf("sent %d requests (%d failed) in %s, %.0f samples/s accepted; waiting for delivery",
		res.Requests, res.Failed, res.SendTime.Round(time.Millisecond), res.AcceptedPerSec)

	// What the receiver must end up with. Computed while the target drains.
	truth := w.Truth(sr.lastStep)
	delivered := func() bool {
		st := recv.Stats()
		switch {
		case IsVMAgent(cfg.Target):
			// vmagent forwards every kept sample, collisions included.
			return st.Samples >= res.ExpectedForwarded
		default:
			c := recv.Compare(truth)
			return c.Arrived == c.Expected && c.Exact == c.Counters
		}
	}
	deadline := time.Now().Add(cfg.DeliveryTimeout)
	for !delivered() {
		if time.Now().After(deadline) {
			res.DeliveryTimedOut = true
			break
		}
		for _, p := range procs {
			if p.exited() {
				return res, fmt.Errorf("%s exited while delivering (%v):\n%s", p.name, p.waitErr, p.logTail(20))
			}
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	cpus2, cpu2, err := procsCPU(procs)
	if err != nil {
		return res, err
	}
	mems, mem, err := procsMemory(procs)
	if err != nil {
		return res, err
	}
	res.Recv = recv.Stats()
	res.Check = recv.Compare(truth)
	res.PeakRSS = mem.Peak
	res.CPUDeliver = cpu2 - cpu0
	res.DeliveredSamples = res.Recv.Samples + res.Recv.Histograms
	res.DeliverTime = max(res.Recv.LastArrival.Sub(sendStart), res.SendTime)
	res.DeliveredPerSec = float64(res.DeliveredSamples) / res.DeliverTime.Seconds()
	if res.AcceptedSamples > 0 {
		m := float64(res.AcceptedSamples) / 1e6
		res.CPUPerMSend = res.CPUSend.Seconds() / m
		res.CPUPerMAll = res.CPUDeliver.Seconds() / m
	}
	logf("delivered %d samples in %s (timed out: %v), cpu %.2fs send / %.2fs total, peak rss %.1f MiB",
		res.DeliveredSamples, res.DeliverTime.Round(time.Millisecond), res.DeliveryTimedOut,
		res.CPUSend.Seconds(), res.CPUDeliver.Seconds(), mib(res.PeakRSS))
	if len(procs) > 1 {
		for i := range procs {
			res.ReplicaCPUSend = append(res.ReplicaCPUSend, cpus1[i]-cpus0[i])
			res.ReplicaCPUDeliver = append(res.ReplicaCPUDeliver, cpus2[i]-cpus0[i])
			res.ReplicaPeakRSS = append(res.ReplicaPeakRSS, mems[i].Peak)
		}
		if err := res.scrapeReplicas(ctx, procs); err != nil {
			res.MetricsError = err.Error()
			logf("replica metrics: %v", err)
		}
		logf("%s", res.ReplicaSummary())
	}
	return res, nil
}

// scrapeReplicas sums the cluster's counters over the replicas' /metrics.
func (r *Result) scrapeReplicas(ctx context.Context, procs []*process) error {
	var peer, recv, perr float64
	for _, p := range procs {
		fams, err := scrapeMetrics(ctx, p.baseURL+"/metrics")
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		if _, ok := fams[metricForwarded]; !ok {
			return fmt.Errorf("%s serves no %s", p.name, metricForwarded)
		}
		peer += sumMetric(fams, metricForwarded, "path", "peer")
		recv += sumMetric(fams, metricReceived, "", "")
		perr += sumMetric(fams, metricPeerErrors, "", "")
	}
	r.PeerSamples, r.ReceivedSamples, r.PeerErrors = int64(peer), int64(recv), int64(perr)
	if r.AcceptedSamples > 0 {
		r.PeerShare = peer / float64(r.AcceptedSamples)
	}
	return nil
}

// profileTime is how long the CPU profile of the send phase runs.
func (cfg *Config) profileTime() time.Duration {
	d := 30 * time.Second
	if cfg.CPUProfileTime > 0 {
		d = cfg.CPUProfileTime
	}
	return max(min(d, cfg.MaxDuration), time.Second)
}

// procsCPU returns the CPU time of each process and their sum.
func procsCPU(procs []*process) ([]time.Duration, time.Duration, error) {
	per := make([]time.Duration, len(procs))
	var sum time.Duration
	for i, p := range procs {
		c, err := ProcCPU(p.pid())
		if err != nil {
			return nil, 0, err
		}
		per[i] = c
		sum += c
	}
	return per, sum, nil
}

// procsMemory returns the memory of each process and their sums.
func procsMemory(procs []*process) ([]ProcMem, ProcMem, error) {
	per := make([]ProcMem, len(procs))
	var sum ProcMem
	for i, p := range procs {
		m, err := ProcMemory(p.pid())
		if err != nil {
			return nil, ProcMem{}, err
		}
		per[i] = m
		sum.RSS += m.RSS
		sum.Peak += m.Peak
	}
	return per, sum, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// sendResult is what the senders measured.
type sendResult struct {
	requests, failed int
	failedExample    string
	accepted, kept   int64
	latencies        []time.Duration
	lastStep         []int // per request index, the last step answered 2xx (-1: none)
	timedOut         bool
}

// send drives the target with cfg.Senders concurrent senders until every
// scheduled request is sent, cfg.MaxDuration passes or ctx ends. Sender s
// writes to urls[s % len(urls)].
func send(ctx context.Context, cfg Config, urls []string) sendResult {
	w := cfg.Workload
	perStep := w.RequestsPerStep()
	total := len(w.Bodies) * perStep
	if cfg.MaxRequests > 0 {
		total = min(total, cfg.MaxRequests)
	}
	type job struct{ step, index int }
	queues := make([][]job, cfg.Senders)
	for n := range total {
		j := job{n / perStep, n % perStep}
		queues[j.index%cfg.Senders] = append(queues[j.index%cfg.Senders], j)
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.MaxDuration)
	defer cancel()
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: cfg.Senders,
			DisableCompression:  true,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		},
	}
	defer client.CloseIdleConnections()

	res := sendResult{lastStep: make([]int, perStep)}
	for i := range res.lastStep {
		res.lastStep[i] = -1
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for s := range cfg.Senders {
		url := urls[s%len(urls)]
		wg.Go(func() {
			// Paced: each sender spreads its share of the requests over the
			// time the whole schedule takes at cfg.Rate (shares differ when
			// the requests per step do not divide by the senders).
			var interval time.Duration
			if cfg.Rate > 0 && len(queues[s]) > 0 {
				interval = time.Duration(float64(time.Second) * float64(total) / cfg.Rate / float64(len(queues[s])))
			}
			next := time.Now()
			lat := make([]time.Duration, 0, len(queues[s]))
			var requests, failed int
			var accepted, kept int64
			var example string
			for _, j := range queues[s] {
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						select {
						case <-ctx.Done():
						case <-time.After(d):
						}
					}
					next = next.Add(interval)
				}
				if ctx.Err() != nil {
					break
				}
				t0 := time.Now()
				code, err := rwclient.PostMessage(ctx, client, url, w.Bodies[j.step][j.index], w.cfg.RW2)
				if ctx.Err() != nil {
					break // cut by the deadline: neither a success nor a failure
				}
				lat = append(lat, time.Since(t0))
				requests++
				if err != nil || code/100 != 2 {
					failed++
					if example == "" {
						example = fmt.Sprintf("step %d request %d: status %d %v", j.step, j.index, code, err)
					}
					continue
				}
				accepted += int64(w.Samples[j.index])
				kept += int64(w.Kept[j.index])
				res.lastStep[j.index] = j.step // only this sender writes this index
			}
			mu.Lock()
			defer mu.Unlock()
			res.requests += requests
			res.failed += failed
			res.accepted += accepted
			res.kept += kept
			res.latencies = append(res.latencies, lat...)
			if res.failedExample == "" {
				res.failedExample = example
			}
		})
	}
	wg.Wait()
	res.timedOut = ctx.Err() != nil && res.requests < total
	return res
}

// Correct reports whether the run delivered everything expected, with
// exact counter sums, no denied label and no duplicate or out-of-order
// sample.
func (r Result) Correct() bool {
	c := r.Check
	return c.Arrived == c.Expected && c.Exact == c.Counters && len(r.Recv.DeniedNames) == 0 &&
		r.Recv.Duplicates == 0 && r.Recv.OutOfOrder == 0 && !r.DeliveryTimedOut
}

// fetchProfile writes the profile served at url, which takes d to produce,
// to path.
func fetchProfile(ctx context.Context, url, path string, d time.Duration) error {
	client := &http.Client{Timeout: d + 20*time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return fmt.Errorf("cannot get the profile: status %d", resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, io.LimitReader(resp.Body, 256<<20)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
