// Command cardinal-load measures the cardinal binary and vmagent side by side
// under a realistic service-mesh remote-write load on 127.0.0.1: CPU seconds
// per million accepted samples, peak RSS, latency, throughput and whether
// what reached the downstream is correct. See package bench/load.
//
//	make peer   # builds vmagent v1.151.0 into bin/peer
//	go run ./bench/cmd/cardinal-load --target both --runs 3 --churn
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cardinal-gateway/cardinal/bench/load"
	"github.com/cardinal-gateway/cardinal/bench/meshgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cardinal-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("target", "both", "systems under test, comma-separated: cardinal, vmagent ("+load.PeerVMAgentVersion+"), vmagent-debian; both = cardinal,vmagent; all = the three (runs alternate)")
	runs := fs.Int("runs", 3, "runs per target")
	workloads := fs.Int("workloads", meshgen.DefaultWorkloads, "mesh workloads (Deployments)")
	pods := fs.Int("pods", meshgen.DefaultPodsPerWorkload, "pods per workload")
	share := fs.Float64("high-card-share", meshgen.DefaultHighCardShare, "share of series with injected request_id/trace_id/user_agent/path labels (negative: none)")
	churn := fs.Bool("churn", false, "fresh injected label values (request ids, trace ids) every step, as real traffic has")
	bare := fs.Bool("bare-allowlist", false, "write the allowlist without its outer parentheses (to compare with builds before issue 13)")
	rw2 := fs.Bool("rw2", false, "send remote write 2.0 (cardinal only), to compare its CPU with 1.0")
	estimates := fs.Bool("estimates", false, "run cardinal with the estimates and the guard (enforce, threshold 1000), to measure their cost")
	noColl := fs.Bool("no-collisions", false, "keep pod, instance and target_addr and inject nothing: no two series collide")
	seed := fs.Uint64("seed", 1, "meshgen seed")
	steps := fs.Int("steps", 10, "scrapes to pre-generate; counters advance from step to step")
	spr := fs.Int("series-per-request", 2000, "series per remote-write request")
	senders := fs.Int("senders", 4, "concurrent senders (like Prometheus shards)")
	maxReq := fs.Int("max-requests", 0, "requests per run (0: every pre-generated request)")
	maxDur := fs.Duration("max-duration", 2*time.Minute, "bound on one run's send phase")
	rate := fs.Float64("rate", 0, "requests per second over all senders (0: as fast as answered)")
	flush := fs.Duration("flush-interval", 2*time.Second, "cardinal merge.flush_interval")
	delivery := fs.Duration("delivery-timeout", 0, "bound on the wait for delivery after sending (0: 3 flush intervals + 30s)")
	vmagent := fs.String("vmagent", "", "vmagent "+load.PeerVMAgentVersion+" binary (default: "+load.DefaultVMAgent+" in the repository, made by make peer)")
	vmagentDebian := fs.String("vmagent-debian", load.DebianVMAgent, "Debian's vmagent binary")
	queues := fs.Int("vmagent-queues", 0, "vmagent -remoteWrite.queues (0: its default, 2 x CPUs)")
	vmRules := fs.String("vmagent-rules", load.RulesLabelKeep, "vmagent rules: labelkeep (the allowlist cardinal runs) or labeldrop (the dropped names; same result on this workload, smaller regex)")
	procs := fs.Int("gomaxprocs", 0, "GOMAXPROCS of the system under test (0: its default, one per CPU)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the first 30s of each send phase to FILE.<target>.<run>.pprof (with --replicas, of the first replica)")
	profTime := fs.Duration("cpuprofile-time", 30*time.Second, "how long the CPU profile runs; near the send phase's length it leaves out the idle flushes after it")
	heapProfile := fs.String("heapprofile", "", "write each target's heap profile after its send phase to FILE.<target>.<run>.pprof")
	cardinalBin := fs.String("cardinal-bin", "", "prebuilt cardinal binary (default: go build ./cmd/cardinal)")
	replicas := fs.Int("replicas", 1, "cardinal processes run as one cluster (--cluster.peers of all); sender i writes to replica i % N; 1: one process, no cluster flags (cardinal only)")
	verbose := fs.Bool("v", true, "progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	targets, err := parseTargets(*target)
	if err != nil {
		fmt.Fprintf(stderr, "--target %q: %v\n", *target, err)
		return 2
	}
	if *rw2 && (len(targets) != 1 || targets[0] != "cardinal") {
		fmt.Fprintln(stderr, "--rw2: only --target cardinal speaks remote write 2.0 here")
		return 2
	}
	if *replicas < 1 || *replicas > 16 {
		fmt.Fprintf(stderr, "--replicas %d: want 1 to 16\n", *replicas)
		return 2
	}
	if *replicas > 1 && (len(targets) != 1 || targets[0] != load.TargetCardinal) {
		fmt.Fprintln(stderr, "--replicas: only --target cardinal runs as a cluster")
		return 2
	}
	if *noColl {
		*share = -1
	}
	if *vmagent == "" {
		*vmagent = load.DefaultVMAgent
		if root, err := load.ModuleRoot(ctx); err == nil {
			*vmagent = filepath.Join(root, load.DefaultVMAgent)
		}
	}
	if *runs < 1 || *runs > 100 {
		fmt.Fprintf(stderr, "--runs %d: want 1 to 100\n", *runs)
		return 2
	}
	if *vmRules != load.RulesLabelKeep && *vmRules != load.RulesLabelDrop {
		fmt.Fprintf(stderr, "--vmagent-rules %q: want labelkeep or labeldrop\n", *vmRules)
		return 2
	}
	progress := io.Discard
	if *verbose {
		progress = stderr
	}
	if err := measure(ctx, options{
		targets: targets, runs: *runs, profile: *cpuProfile, heapProfile: *heapProfile,
		wl: load.WorkloadConfig{
			Mesh:             meshgen.Config{Workloads: *workloads, PodsPerWorkload: *pods, HighCardShare: *share, Churn: *churn, Seed: *seed},
			Steps:            *steps,
			SeriesPerRequest: *spr,
			KeepPods:         *noColl,
			BareAllowlist:    *bare,
			RW2:              *rw2,
		},
		run: load.Config{
			Senders: *senders, MaxRequests: *maxReq, MaxDuration: *maxDur, Rate: *rate, CPUProfileTime: *profTime,
			FlushInterval: *flush, DeliveryTimeout: *delivery, GOMAXPROCS: *procs, Estimates: *estimates, Replicas: *replicas,
			VMAgentBinary: *vmagent, DebianVMAgentBinary: *vmagentDebian, VMAgentQueues: *queues, VMAgentRules: *vmRules, CardinalBinary: *cardinalBin,
			Log: progress,
		},
	}, stdout, progress); err != nil {
		fmt.Fprintf(stderr, "cardinal-load: %v\n", err)
		return 1
	}
	return 0
}

type options struct {
	targets     []string
	runs        int
	profile     string
	heapProfile string
	wl          load.WorkloadConfig
	run         load.Config
}

func measure(ctx context.Context, o options, stdout, progress io.Writer) error {
	m := load.ThisMachine()
	fmt.Fprintf(stdout, "machine: %d CPUs, %s; load average %s at start\n", m.CPUs, m.CPUModel, m.LoadAvg)
	fmt.Fprintf(stdout, "go: %s\n", goVersion(ctx))
	for _, t := range o.targets {
		bin, hint := o.run.VMAgentBinary, load.VMAgentInstallHint
		switch t {
		case load.TargetVMAgentDebian:
			bin, hint = o.run.DebianVMAgentBinary, load.DebianVMAgentInstallHint
		case load.TargetCardinal:
			continue
		}
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%s not found at %s; %s", t, bin, hint)
		}
		fmt.Fprintf(stdout, "%s: %s (%s)\n", t, load.VMAgentVersion(bin), bin)
	}

	if o.run.CardinalBinary == "" && contains(o.targets, load.TargetCardinal) {
		dir, err := os.MkdirTemp("", "cardinal-load-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		fmt.Fprintln(progress, "building ./cmd/cardinal ...")
		if o.run.CardinalBinary, err = load.BuildCardinal(ctx, dir); err != nil {
			return err
		}
	}

	t0 := time.Now()
	fmt.Fprintln(progress, "generating and encoding the workload ...")
	w, err := load.NewWorkload(o.wl)
	if err != nil {
		return err
	}
	wc := w.Config()
	total := len(w.Bodies) * w.RequestsPerStep()
	if o.run.MaxRequests > 0 {
		total = min(total, o.run.MaxRequests)
	}
	fmt.Fprintf(stdout, "workload: meshgen %d workloads x %d pods, high-card share %.2f (variants %d, churn %v), %d series/step "+
		"(%d with injected labels), %d steps x %d requests of <= %d series = %d requests/run, %.1f MiB snappy in all; encoded in %s\n",
		wc.Mesh.Workloads, wc.Mesh.PodsPerWorkload, wc.Mesh.HighCardShare, wc.Mesh.Variants, wc.Mesh.Churn,
		w.NumSeries(), w.HighCardSeries(), len(w.Bodies), w.RequestsPerStep(), wc.SeriesPerRequest, total,
		float64(w.Bytes)/(1<<20), time.Since(t0).Round(time.Millisecond))
	fmt.Fprintf(stdout, "rules: drop __name__=~%s, labelkeep %d names%s%s (vmagent: %s); cardinal also: merge flush %s, "+
		"trace_sampling [trace_id] 0.01, limits [namespace, app]\n", load.DroppedMetricsRegex, strings.Count(w.Allowlist(), "|")+1,
		map[bool]string{true: " without parentheses", false: " in parentheses"}[o.wl.BareAllowlist],
		map[bool]string{true: " incl. pod, instance, target_addr", false: ""}[o.wl.KeepPods], o.run.VMAgentRules, o.run.FlushInterval)
	procs := "default"
	if o.run.GOMAXPROCS > 0 {
		procs = fmt.Sprint(o.run.GOMAXPROCS)
	}
	fmt.Fprintf(stdout, "senders: %d, rate %s, bounds: %d requests and %s per run; GOMAXPROCS of the system under test: %s\n",
		o.run.Senders, rateString(o.run.Rate), total, o.run.MaxDuration, procs)
	if o.run.Replicas > 1 {
		fmt.Fprintf(stdout, "cluster: %d cardinal replicas, --cluster.peers of all, --cluster.probe-interval=%s --cluster.handover-delay=%s; "+
			"sender i writes to replica i %% %d; cpu and peak RSS are summed over the replicas\n",
			o.run.Replicas, load.ClusterProbeInterval, load.ClusterHandoverDelay, o.run.Replicas)
	}
	fmt.Fprintln(stdout)

	var results []load.Result
	for i := range o.runs {
		for _, t := range o.targets {
			cfg := o.run
			cfg.Target, cfg.Workload = t, w
			if o.profile != "" {
				cfg.CPUProfile = fmt.Sprintf("%s.%s.%d.pprof", o.profile, t, i+1)
			}
			if o.heapProfile != "" {
				cfg.HeapProfile = fmt.Sprintf("%s.%s.%d.pprof", o.heapProfile, t, i+1)
			}
			fmt.Fprintf(progress, "run %d/%d: %s (load average %s)\n", i+1, o.runs, t, load.LoadAvg())
			r, err := load.Run(ctx, cfg)
			if err != nil {
				return fmt.Errorf("run %d, %s: %w", i+1, t, err)
			}
			results = append(results, r)
		}
	}
	fmt.Fprintln(stdout, "per run (cpu = the target process's utime+stime from /proc; per million samples accepted by it):")
	load.PrintRuns(stdout, results)
	fmt.Fprintln(stdout)
	load.PrintSummary(stdout, o.targets, results)
	fmt.Fprintf(stdout, "\nload average %s at the end\n", load.LoadAvg())
	var bad []string
	for i, r := range results {
		if r.Target == load.TargetCardinal && !r.Correct() {
			bad = append(bad, fmt.Sprintf("run %d: %s", i+1, r.Correctness()))
		}
	}
	if len(bad) > 0 {
		return errors.New("cardinal did not deliver correctly:\n" + strings.Join(bad, "\n"))
	}
	return nil
}

// parseTargets reads --target.
func parseTargets(s string) ([]string, error) {
	switch s {
	case "both":
		return []string{load.TargetCardinal, load.TargetVMAgent}, nil
	case "all":
		return []string{load.TargetCardinal, load.TargetVMAgent, load.TargetVMAgentDebian}, nil
	}
	var out []string
	for _, t := range strings.Split(s, ",") {
		switch t {
		case load.TargetCardinal, load.TargetVMAgent, load.TargetVMAgentDebian:
			if contains(out, t) {
				return nil, fmt.Errorf("%s named twice", t)
			}
			out = append(out, t)
		default:
			return nil, fmt.Errorf("unknown target %q: want cardinal, vmagent, vmagent-debian, both or all", t)
		}
	}
	return out, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func rateString(r float64) string {
	if r <= 0 {
		return "unpaced (closed loop)"
	}
	return fmt.Sprintf("%.1f requests/s", r)
}

func goVersion(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "go", "version").Output()
	if err != nil {
		return "(go command: " + err.Error() + ")"
	}
	return strings.TrimSpace(string(out))
}
