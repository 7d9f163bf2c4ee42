package load

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
)

// Machine describes where a measurement ran.
type Machine struct {
	CPUs     int
	CPUModel string
	GoVer    string
	LoadAvg  string // /proc/loadavg: 1, 5 and 15 minute load averages
}

// ThisMachine reads the CPU count and model and the load average.
func ThisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVer: runtime.Version(), CPUModel: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	m.LoadAvg = LoadAvg()
	return m
}

// LoadAvg returns the first three fields of /proc/loadavg.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// PrintRuns writes one line per run.
func PrintRuns(w io.Writer, results []Result) {
	fmt.Fprintf(w, "%-4s %-9s %9s %9s %8s %8s %8s %8s %8s %11s %11s %9s %9s %6s %s\n",
		"run", "target", "cpu/1M", "cpu/1M", "idleRSS", "peakRSS", "p50", "p99", "max", "accepted", "delivered", "delivered", "dups", "failed", "correctness")
	fmt.Fprintf(w, "%-4s %-9s %9s %9s %8s %8s %8s %8s %8s %11s %11s %9s %9s %6s\n",
		"", "", "send s", "+drain s", "MiB", "MiB", "ms", "ms", "ms", "samples/s", "samples/s", "samples", "", "")
	for i, r := range results {
		fmt.Fprintf(w, "%-4d %-9s %9.3f %9.3f %8.1f %8.1f %8.2f %8.2f %8.1f %11.0f %11.0f %9d %9d %6d %s\n",
			i+1, r.Target, r.CPUPerMSend, r.CPUPerMAll, mib(r.IdleRSS), mib(r.PeakRSS),
			ms(r.P50), ms(r.P99), ms(r.MaxLat), r.AcceptedPerSec, r.DeliveredPerSec,
			r.DeliveredSamples, r.Recv.Duplicates, r.Failed, r.Correctness())
		if r.Replicas > 1 {
			fmt.Fprintf(w, "%-4s %s\n", "", r.ReplicaSummary())
		}
	}
}

// ReplicaSummary says, for a run of a cluster, how the CPU and memory
// split over the replicas and how many samples were handed to peers.
func (r Result) ReplicaSummary() string {
	if r.Replicas <= 1 {
		return "one process"
	}
	m := float64(r.AcceptedSamples) / 1e6
	if m == 0 {
		m = math.NaN()
	}
	var cpuSend, share, cpuAll, rss []string
	for i := range r.ReplicaCPUSend {
		cpuSend = append(cpuSend, fmt.Sprintf("%.3f", r.ReplicaCPUSend[i].Seconds()/m))
		share = append(share, fmt.Sprintf("%.0f", 100*r.ReplicaCPUSend[i].Seconds()/r.CPUSend.Seconds()))
		cpuAll = append(cpuAll, fmt.Sprintf("%.3f", r.ReplicaCPUDeliver[i].Seconds()/m))
		rss = append(rss, fmt.Sprintf("%.1f", mib(r.ReplicaPeakRSS[i])))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d replicas: cpu/1M send %s (%s %%), +drain %s; peak RSS MiB %s",
		r.Replicas, strings.Join(cpuSend, " + "), strings.Join(share, "/"), strings.Join(cpuAll, " + "), strings.Join(rss, " + "))
	if r.MetricsError != "" {
		fmt.Fprintf(&b, "; METRICS NOT READ: %s", r.MetricsError)
		return b.String()
	}
	fmt.Fprintf(&b, "; to peers %d samples = %.1f %% of accepted; received by the replicas %d (%.2fx accepted); peer errors %d",
		r.PeerSamples, 100*r.PeerShare, r.ReceivedSamples, float64(r.ReceivedSamples)/float64(max(r.AcceptedSamples, 1)), r.PeerErrors)
	return b.String()
}

// Correctness summarises the receiver's checks in one line.
func (r Result) Correctness() string {
	var b strings.Builder
	fmt.Fprintf(&b, "series %d/%d", r.Check.Arrived, r.Check.Expected)
	fmt.Fprintf(&b, ", counters exact %d/%d (within 1%%: %d)", r.Check.Exact, r.Check.Counters, r.Check.Within1pc)
	if len(r.Recv.DeniedNames) == 0 {
		b.WriteString(", denied labels none")
	} else {
		fmt.Fprintf(&b, ", DENIED LABELS %s on %d series", strings.Join(r.Recv.DeniedNames, ","), r.Recv.DeniedSeries)
	}
	fmt.Fprintf(&b, ", dups %d, out-of-order %d", r.Recv.Duplicates, r.Recv.OutOfOrder)
	if r.DeliveryTimedOut {
		b.WriteString(", DELIVERY TIMED OUT")
	}
	if r.SendTimedOut {
		b.WriteString(", send phase cut by --max-duration")
	}
	return b.String()
}

// PrintSummary writes the side-by-side table of medians per target, in the
// order of targets.
func PrintSummary(w io.Writer, targets []string, results []Result) {
	by := map[string][]Result{}
	for _, r := range results {
		by[r.Target] = append(by[r.Target], r)
	}
	med := func(t string, f func(Result) float64) float64 {
		var xs []float64
		for _, r := range by[t] {
			xs = append(xs, f(r))
		}
		return Median(xs)
	}
	fmt.Fprintf(w, "%-38s", "median of runs")
	for _, t := range targets {
		fmt.Fprintf(w, " %16s", fmt.Sprintf("%s (n=%d)", t, len(by[t])))
	}
	if len(targets) >= 2 {
		fmt.Fprintf(w, " %16s", targets[0]+"/"+targets[1])
	}
	fmt.Fprintln(w)
	row := func(name, format string, f func(Result) float64) {
		fmt.Fprintf(w, "%-38s", name)
		var vals []float64
		for _, t := range targets {
			v := med(t, f)
			vals = append(vals, v)
			fmt.Fprintf(w, " %16s", fmt.Sprintf(format, v))
		}
		if len(vals) >= 2 {
			ratio := "-"
			if vals[1] != 0 && !math.IsNaN(vals[0]) && !math.IsNaN(vals[1]) {
				ratio = fmt.Sprintf("%.2fx", vals[0]/vals[1])
			}
			fmt.Fprintf(w, " %16s", ratio)
		}
		fmt.Fprintln(w)
	}
	row("CPU s / 1M accepted (send phase)", "%.3f", func(r Result) float64 { return r.CPUPerMSend })
	row("CPU s / 1M accepted (send + drain)", "%.3f", func(r Result) float64 { return r.CPUPerMAll })
	row("idle RSS MiB", "%.1f", func(r Result) float64 { return mib(r.IdleRSS) })
	row("peak RSS MiB (VmHWM)", "%.1f", func(r Result) float64 { return mib(r.PeakRSS) })
	row("latency p50 ms", "%.2f", func(r Result) float64 { return ms(r.P50) })
	row("latency p99 ms", "%.2f", func(r Result) float64 { return ms(r.P99) })
	row("accepted samples/s", "%.0f", func(r Result) float64 { return r.AcceptedPerSec })
	row("delivered samples/s", "%.0f", func(r Result) float64 { return r.DeliveredPerSec })
	row("accepted samples", "%.0f", func(r Result) float64 { return float64(r.AcceptedSamples) })
	row("delivered samples", "%.0f", func(r Result) float64 { return float64(r.DeliveredSamples) })
	row("delivered series (distinct)", "%.0f", func(r Result) float64 { return float64(r.Recv.Series) })
	row("send s", "%.2f", func(r Result) float64 { return r.SendTime.Seconds() })
	row("send + drain s", "%.2f", func(r Result) float64 { return r.DeliverTime.Seconds() })
	row("duplicate samples delivered", "%.0f", func(r Result) float64 { return float64(r.Recv.Duplicates) })
	row("expected output series arrived", "%.0f", func(r Result) float64 { return float64(r.Check.Arrived) })
	row("counter series with exact sum", "%.0f", func(r Result) float64 { return float64(r.Check.Exact) })
	row("series with a denied label", "%.0f", func(r Result) float64 { return float64(r.Recv.DeniedSeries) })
	row("failed requests", "%.0f", func(r Result) float64 { return float64(r.Failed) })
	cluster := false
	for _, r := range results {
		cluster = cluster || r.Replicas > 1
	}
	if !cluster {
		return
	}
	row("replicas", "%.0f", func(r Result) float64 { return float64(max(r.Replicas, 1)) })
	row("samples handed to peers, % of accepted", "%.1f", func(r Result) float64 { return 100 * r.PeerShare })
	row("peer errors", "%.0f", func(r Result) float64 { return float64(r.PeerErrors) })
}

func ms(d interface{ Seconds() float64 }) float64 { return d.Seconds() * 1000 }
