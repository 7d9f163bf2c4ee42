package load

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
)

func smokeWorkload(t *testing.T) *Workload { return smokeWorkloadChurn(t, false) }

// smokeWorkloadChurn is smokeWorkload, with fresh injected values every
// step when churn is set.
func smokeWorkloadChurn(t *testing.T, churn bool) *Workload {
	t.Helper()
	w, err := NewWorkload(WorkloadConfig{
		Mesh:             meshgen.Config{Workloads: 3, PodsPerWorkload: 2, Seed: 3, Churn: churn},
		Steps:            2,
		SeriesPerRequest: 100000, // one request per step
	})
	if err != nil {
		t.Fatal(err)
	}
	if w.RequestsPerStep() != 1 || len(w.Bodies) != 2 {
		t.Fatalf("want 2 steps of one request, got %d steps of %d", len(w.Bodies), w.RequestsPerStep())
	}
	return w
}

// TestRunCardinal runs the real binary on a tiny workload (two requests) and
// checks the measurements are plausible and the delivery correct.
func TestRunCardinal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the cardinal binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bin, err := BuildCardinal(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, churn := range []bool{false, true} {
		// With churn the truth keeps the inputs of earlier steps, whose
		// request ids changed since: Cardinal's merged counters must
		// still equal it exactly.
		t.Run(map[bool]string{false: "steady", true: "churn"}[churn], func(t *testing.T) {
			runCardinalSmoke(t, ctx, bin, smokeWorkloadChurn(t, churn))
		})
	}
}

func runCardinalSmoke(t *testing.T, ctx context.Context, bin string, w *Workload) {
	var log bytes.Buffer
	r, err := Run(ctx, Config{
		Target: TargetCardinal, Workload: w, CardinalBinary: bin, Senders: 2,
		FlushInterval: 500 * time.Millisecond, MaxDuration: 10 * time.Second, DeliveryTimeout: 10 * time.Second,
		Log: &log,
	})
	t.Log(log.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", r)
	if r.Requests != 2 || r.Failed != 0 {
		t.Fatalf("requests %d, failed %d (%s)", r.Requests, r.Failed, r.FailedExample)
	}
	if want := int64(2 * w.Samples[0]); r.AcceptedSamples != want {
		t.Errorf("accepted %d samples, want %d", r.AcceptedSamples, want)
	}
	if !r.Correct() {
		t.Errorf("not correct: %s (example: %s)", r.Correctness(), r.Check.Example)
	}
	if r.Check.Expected == 0 || r.Check.Counters == 0 {
		t.Errorf("nothing checked: %+v", r.Check)
	}
	if r.PeakRSS < r.IdleRSS || r.IdleRSS <= 0 {
		t.Errorf("implausible memory: idle %d, peak %d", r.IdleRSS, r.PeakRSS)
	}
	if r.P50 <= 0 || r.P99 < r.P50 || r.CPUDeliver < r.CPUSend {
		t.Errorf("implausible latency or cpu: %+v", r)
	}
}

// TestRunCardinalCluster runs two replicas of the real binary as one
// cluster on a small workload split into two requests per step, one per
// sender and so one per replica: each replica hands the series of the
// workloads the other owns to it, and the receiver must still get exactly
// the truth.
func TestRunCardinalCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the cardinal binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	bin, err := BuildCardinal(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// 20 workloads: the chance that one replica owns all of them (and
	// nothing is handed over) is 2^-19.
	mesh := meshgen.Config{Workloads: 20, PodsPerWorkload: 1, Seed: 3, Churn: true}
	n := meshgen.New(mesh).NumSeries()
	w, err := NewWorkload(WorkloadConfig{Mesh: mesh, Steps: 2, SeriesPerRequest: (n + 1) / 2})
	if err != nil {
		t.Fatal(err)
	}
	if w.RequestsPerStep() != 2 {
		t.Fatalf("want 2 requests per step, got %d", w.RequestsPerStep())
	}
	var log bytes.Buffer
	r, err := Run(ctx, Config{
		Target: TargetCardinal, Workload: w, CardinalBinary: bin, Senders: 2, Replicas: 2,
		FlushInterval: 500 * time.Millisecond, MaxDuration: 10 * time.Second, DeliveryTimeout: 10 * time.Second,
		Log: &log,
	})
	t.Log(log.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Log(r.ReplicaSummary())
	if r.Requests != 4 || r.Failed != 0 {
		t.Fatalf("requests %d, failed %d (%s)", r.Requests, r.Failed, r.FailedExample)
	}
	if !r.Correct() {
		t.Errorf("not correct: %s (example: %s)", r.Correctness(), r.Check.Example)
	}
	if r.Replicas != 2 || len(r.ReplicaCPUSend) != 2 || len(r.ReplicaPeakRSS) != 2 {
		t.Fatalf("replicas %d, cpu %v, rss %v", r.Replicas, r.ReplicaCPUSend, r.ReplicaPeakRSS)
	}
	if r.PeakRSS != r.ReplicaPeakRSS[0]+r.ReplicaPeakRSS[1] || r.ReplicaPeakRSS[0] <= 0 || r.ReplicaPeakRSS[1] <= 0 {
		t.Errorf("peak RSS %d is not the sum of %v", r.PeakRSS, r.ReplicaPeakRSS)
	}
	if r.MetricsError != "" {
		t.Fatalf("metrics: %s", r.MetricsError)
	}
	if r.PeerSamples <= 0 || r.PeerSamples >= r.AcceptedSamples || r.PeerErrors != 0 {
		t.Errorf("handed to peers %d of %d accepted samples, peer errors %d", r.PeerSamples, r.AcceptedSamples, r.PeerErrors)
	}
	// Every sample is received once from a sender and once more by its
	// owner when it was handed over (unless the rules dropped it first).
	if r.ReceivedSamples < r.AcceptedSamples || r.ReceivedSamples > r.AcceptedSamples+r.PeerSamples {
		t.Errorf("replicas received %d samples, want %d accepted + up to %d from peers", r.ReceivedSamples, r.AcceptedSamples, r.PeerSamples)
	}
}

func TestRunRejectsReplicasOfVMAgent(t *testing.T) {
	w := smokeWorkload(t)
	if _, err := Run(context.Background(), Config{Target: TargetVMAgentDebian, Workload: w, Replicas: 2}); err == nil {
		t.Fatal("2 replicas of vmagent: no error")
	}
}

// TestRunVMAgent is the same against Debian's vmagent, which make test
// installs (the peer release is built by make peer, for the benchmark only).
// vmagent forwards colliding series as they are, so only delivery is
// asserted.
func TestRunVMAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vmagent")
	}
	if _, err := os.Stat(DebianVMAgent); err != nil {
		// make test installs it and sets CARDINAL_E2E=require: there the
		// comparison peer must not silently go missing.
		if os.Getenv("CARDINAL_E2E") == "require" {
			t.Fatalf("no vmagent: %s", DebianVMAgentInstallHint)
		}
		t.Skipf("no vmagent: %s", DebianVMAgentInstallHint)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w := smokeWorkload(t)
	r, err := Run(ctx, Config{
		Target: TargetVMAgentDebian, Workload: w, Senders: 2,
		MaxDuration: 10 * time.Second, DeliveryTimeout: 15 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", r.Correctness())
	if r.Failed != 0 || r.DeliveryTimedOut || r.DeliveredSamples < r.ExpectedForwarded {
		t.Fatalf("vmagent run: failed %d, delivered %d of %d, timed out %v", r.Failed, r.DeliveredSamples, r.ExpectedForwarded, r.DeliveryTimedOut)
	}
	if len(r.Recv.DeniedNames) != 0 {
		t.Errorf("denied labels delivered: %v", r.Recv.DeniedNames)
	}
}

func TestRunRejectsUnknownTarget(t *testing.T) {
	w := smokeWorkload(t)
	if _, err := Run(context.Background(), Config{Target: "nginx", Workload: w}); err == nil {
		t.Fatal("unknown target: no error")
	}
}
