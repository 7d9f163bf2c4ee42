package load

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Target names.
const (
	TargetCardinal = "cardinal"
	// TargetVMAgent is the vmagent a user would pick today (PeerVMAgent).
	TargetVMAgent = "vmagent"
	// TargetVMAgentDebian is the vmagent Debian ships (1.79.5, from 2022).
	TargetVMAgentDebian = "vmagent-debian"
)

// PeerVMAgentVersion is the vmagent release Cardinal is compared with.
const PeerVMAgentVersion = "v1.151.0"

// DefaultVMAgent is where `make peer` builds PeerVMAgentVersion, relative to
// the repository root.
const DefaultVMAgent = "bin/peer/vmagent"

// DebianVMAgent is where the Debian package victoria-metrics installs vmagent.
const DebianVMAgent = "/usr/bin/vmagent"

// VMAgentInstallHint says how to get the peer vmagent when it is missing.
const VMAgentInstallHint = "build it with: make peer (GOBIN=$PWD/bin/peer go install github.com/VictoriaMetrics/VictoriaMetrics/app/vmagent@" +
	PeerVMAgentVersion + "), or pass --vmagent=PATH"

// DebianVMAgentInstallHint says how to get Debian's vmagent.
const DebianVMAgentInstallHint = "install it with: apt-get install victoria-metrics, or pass --vmagent-debian=PATH"

// IsVMAgent reports whether target is one of the vmagent targets.
func IsVMAgent(target string) bool { return target == TargetVMAgent || target == TargetVMAgentDebian }

// process is a system under test running as a child process on 127.0.0.1.
type process struct {
	name     string
	cmd      *exec.Cmd
	baseURL  string // http://127.0.0.1:port
	writeURL string
	logPath  string
	done     chan struct{}
	waitErr  error
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// start runs bin with args, output to logPath. The child is killed if this
// process dies (Pdeathsig) and runs in its own process group so that a
// terminal's Ctrl-C reaches only the load tool, which then stops it.
func start(name, bin string, args []string, logPath string, gomaxprocs int) (*process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if gomaxprocs > 0 {
		cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", gomaxprocs))
	}
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("cannot start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM, waits up to grace, then kills the process. It is safe
// to call more than once.
func (p *process) stop(grace time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.pid())
	}
	return fmt.Errorf("%s did not stop within %s of SIGTERM; killed", p.name, grace)
}

// logTail returns the last lines of the process's output.
func (p *process) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitHTTP polls url until it answers 200, the process exits or timeout
// passes.
func (p *process) waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited before it was ready (%v):\n%s", p.name, p.waitErr, p.logTail(20))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
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
	return fmt.Errorf("%s not ready at %s after %s:\n%s", p.name, url, timeout, p.logTail(20))
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Rule sets for vmagent.
const (
	// RulesLabelKeep is the relabel_configs both targets apply by default:
	// the same metric drop and label allowlist as gateway/bench_test.go's
	// fullConfig.
	RulesLabelKeep = "labelkeep"
	// RulesLabelDrop replaces the allowlist by a labeldrop of the names it
	// removes from meshgen's output (DroppedByDefault): the same result on
	// this workload with a much smaller regular expression, for engines
	// whose cost grows with the size of the regex.
	RulesLabelDrop = "labeldrop"
)

// relabelRules returns the relabel_configs list of the rule set.
func relabelRules(indent, rules, allowlist string, denied []string) string {
	s := indent + "- action: drop\n" +
		indent + "  source_labels: [__name__]\n" +
		indent + "  regex: " + DroppedMetricsRegex + "\n"
	if rules == RulesLabelDrop {
		return s + indent + "- action: labeldrop\n" +
			indent + "  regex: " + strings.Join(denied, "|") + "\n"
	}
	return s + indent + "- action: labelkeep\n" +
		indent + "  regex: '" + allowlist + "'\n"
}

// CardinalConfig returns the production-shaped configuration (as
// gateway/bench_test.go's fullConfig) forwarding to downstream.
func CardinalConfig(downstream, allowlist string, flush time.Duration) string {
	return cardinalConfig(downstream, allowlist, flush, "v1", false)
}

// cardinalConfig is CardinalConfig forwarding the remote-write version
// message (v1 or v2), with the estimates and the guard (enforce) when
// estimates. v1 is written as the default, without the key, so that builds
// before the key (--cardinal-bin) take the configuration.
func cardinalConfig(downstream, allowlist string, flush time.Duration, message string, estimates bool) string {
	proto := ""
	if message != "v1" {
		proto = "  protobuf_message: " + message + "\n"
	}
	extra := ""
	if estimates {
		extra = "cardinality: {enabled: true}\nguard: {mode: enforce, threshold: 1000}\n"
	}
	return "downstream:\n" +
		"  url: " + downstream + "\n" + proto +
		"  timeout: 30s\n" +
		"relabel_configs:\n" + relabelRules("  ", RulesLabelKeep, allowlist, nil) +
		"merge:\n" +
		"  flush_interval: " + flush.String() + "\n" +
		"trace_sampling:\n" +
		"  labels: [trace_id]\n" +
		"  ratio: 0.01\n" +
		"  always_keep: [{label: response_code, regex: \"5..\"}]\n" +
		"limits:\n" +
		"  workload_labels: [namespace, app]\n" +
		"  max_series_per_workload: 1000000\n" + extra
}

// ModuleRoot returns the directory of the module that contains the working
// directory.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("cannot find the module: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("cannot find the module: run inside the cardinal repository")
	}
	return filepath.Dir(gomod), nil
}

// BuildCardinal builds ./cmd/cardinal of the module that contains the
// working directory into dir and returns the binary's path.
func BuildCardinal(ctx context.Context, dir string) (string, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "cardinal")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/cardinal")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("cannot build cardinal: %w\n%s", err, stderr.String())
	}
	return bin, nil
}

// startOptions are what a target needs to start.
type startOptions struct {
	dir        string // private scratch directory
	downstream string // the receiver's write URL
	cardinal   string // cardinal binary
	vmagent    string // vmagent binary
	flush      time.Duration
	queues     int      // vmagent -remoteWrite.queues (0: its default)
	rules      string   // vmagent rule set: RulesLabelKeep or RulesLabelDrop
	denied     []string // label names RulesLabelDrop drops
	allowlist  string   // the labelkeep regex
	name       string   // the target's name
	gomaxprocs int      // GOMAXPROCS of the target (0: unset)
	ready      time.Duration
	rw2        bool // the traffic is remote write 2.0; Cardinal forwards 2.0 too
	estimates  bool // Cardinal runs the estimates and the guard
}

func startCardinal(ctx context.Context, o startOptions) (*process, error) {
	cfgPath, err := writeCardinalConfig(o)
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p, err := startCardinalAt(o, TargetCardinal, cfgPath, addr, nil, "cardinal.log")
	if err != nil {
		return nil, err
	}
	// Ready means the config is loaded and the downstream took an empty write.
	if err := p.waitHTTP(ctx, "http://"+addr+"/-/ready", o.ready); err != nil {
		_ = p.stop(5 * time.Second)
		return nil, err
	}
	return p, nil
}

// writeCardinalConfig writes the configuration of o into o.dir.
func writeCardinalConfig(o startOptions) (string, error) {
	cfgPath := filepath.Join(o.dir, "cardinal.yml")
	message := "v1"
	if o.rw2 {
		message = "v2"
	}
	if err := os.WriteFile(cfgPath, []byte(cardinalConfig(o.downstream, o.allowlist, o.flush, message, o.estimates)), 0o600); err != nil {
		return "", err
	}
	return cfgPath, nil
}

// startCardinalAt starts cardinal serve on addr with the configuration at
// cfgPath and the extra flags, without waiting for it.
func startCardinalAt(o startOptions, name, cfgPath, addr string, extra []string, logName string) (*process, error) {
	args := append([]string{
		"serve", "--config.file=" + cfgPath, "--web.listen-address=" + addr, "--log.level=warn",
	}, extra...)
	p, err := start(name, o.cardinal, args, filepath.Join(o.dir, logName), o.gomaxprocs)
	if err != nil {
		return nil, err
	}
	p.baseURL = "http://" + addr
	p.writeURL = p.baseURL + "/api/v1/write"
	return p, nil
}

// Cluster timings of the replicas startCardinalCluster starts: short, so
// that a run does not wait long for the handover, and the handover at
// twice the probe interval, the least cardinal accepts.
const (
	ClusterProbeInterval = 250 * time.Millisecond
	ClusterHandoverDelay = time.Second
)

// startCardinalCluster starts n cardinal replicas on free 127.0.0.1 ports
// with the same configuration, as one cluster (a static --cluster.peers of
// all of them), and waits until every one is ready and sees every member
// up with the handover over: before that a replica answers 503 for the
// workloads it owns.
func startCardinalCluster(ctx context.Context, o startOptions, n int) ([]*process, error) {
	cfgPath, err := writeCardinalConfig(o)
	if err != nil {
		return nil, err
	}
	addrs, err := freeAddrs(n)
	if err != nil {
		return nil, err
	}
	var procs []*process
	stopAll := func() {
		for _, p := range procs {
			_ = p.stop(5 * time.Second)
		}
	}
	peers := strings.Join(addrs, ",")
	for i, addr := range addrs {
		p, err := startCardinalAt(o, fmt.Sprintf("%s-%d", TargetCardinal, i+1), cfgPath, addr, []string{
			"--cluster.peers=" + peers, "--cluster.self=" + addr,
			"--cluster.probe-interval=" + ClusterProbeInterval.String(),
			"--cluster.handover-delay=" + ClusterHandoverDelay.String(),
		}, fmt.Sprintf("cardinal-%d.log", i+1))
		if err != nil {
			stopAll()
			return nil, err
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		if err := p.waitHTTP(ctx, p.baseURL+"/-/ready", o.ready); err != nil {
			stopAll()
			return nil, err
		}
	}
	if err := waitClusterSettled(ctx, procs, addrs, o.ready); err != nil {
		stopAll()
		return nil, err
	}
	return procs, nil
}

// freeAddrs returns n distinct 127.0.0.1 addresses with ports that were
// free a moment ago.
func freeAddrs(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

// clusterStatus is the part of GET /api/v1/cluster the load tool reads.
type clusterStatus struct {
	Enabled  bool `json:"enabled"`
	Handover bool `json:"handover_in_progress"`
	Members  []struct {
		Address string `json:"address"`
		State   string `json:"state"`
	} `json:"members"`
}

// settled reports whether the status lists exactly addrs, all self or up,
// with no handover in progress; if not, it says why.
func (st clusterStatus) settled(addrs []string) (bool, string) {
	switch {
	case !st.Enabled:
		return false, "not in a cluster"
	case st.Handover:
		return false, "handover in progress"
	case len(st.Members) != len(addrs):
		return false, fmt.Sprintf("%d members, want %d", len(st.Members), len(addrs))
	}
	for _, m := range st.Members {
		if !slices.Contains(addrs, m.Address) {
			return false, "unknown member " + m.Address
		}
		if m.State != "self" && m.State != "up" {
			return false, fmt.Sprintf("member %s is %s", m.Address, m.State)
		}
	}
	return true, ""
}

// waitClusterSettled polls GET /api/v1/cluster of every replica until all
// of them are settled at once, a replica exits or timeout passes.
func waitClusterSettled(ctx context.Context, procs []*process, addrs []string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	why := "not asked yet"
	for time.Now().Before(deadline) {
		all := true
		for _, p := range procs {
			if p.exited() {
				return fmt.Errorf("%s exited before the cluster settled (%v):\n%s", p.name, p.waitErr, p.logTail(20))
			}
			st, err := getClusterStatus(ctx, client, p.baseURL+"/api/v1/cluster")
			if err != nil {
				all, why = false, fmt.Sprintf("%s: %v", p.name, err)
				break
			}
			if ok, reason := st.settled(addrs); !ok {
				all, why = false, p.name+": "+reason
				break
			}
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("the cluster of %d cardinal replicas did not settle within %s (last: %s):\n%s", len(procs), timeout, why, procs[0].logTail(20))
}

func getClusterStatus(ctx context.Context, client *http.Client, url string) (clusterStatus, error) {
	var st clusterStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return st, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st)
	return st, err
}

// Metrics of a replica the load tool sums at the end of a run.
const (
	metricForwarded  = "cardinal_forwarded_samples_total" // {path="peer"}: handed to the owning replica
	metricReceived   = "cardinal_received_samples_total"
	metricPeerErrors = "cardinal_cluster_peer_errors_total"
)

// scrapeMetrics returns the metric families a target serves at url (the
// Prometheus text format).
func scrapeMetrics(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(io.LimitReader(resp.Body, 64<<20))
}

// sumMetric sums the counter or gauge values of the family name whose
// label has value (every series when label is empty).
func sumMetric(fams map[string]*dto.MetricFamily, name, label, value string) float64 {
	f, ok := fams[name]
	if !ok {
		return 0
	}
	var sum float64
	for _, m := range f.GetMetric() {
		if label != "" && !hasLabel(m, label, value) {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetUntyped() != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}

func startVMAgent(ctx context.Context, o startOptions) (*process, error) {
	if _, err := os.Stat(o.vmagent); err != nil {
		return nil, fmt.Errorf("vmagent not found at %s; %s", o.vmagent, VMAgentInstallHint)
	}
	rules := filepath.Join(o.dir, "vmagent-relabel.yml")
	if err := os.WriteFile(rules, []byte(relabelRules("", o.rules, o.allowlist, o.denied)), 0o600); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{
		"-httpListenAddr=" + addr,
		"-remoteWrite.url=" + o.downstream,
		"-remoteWrite.relabelConfig=" + rules,
		"-remoteWrite.tmpDataPath=" + filepath.Join(o.dir, "vmagent-data"),
		// Send as soon as a block is ready; at high rates vmagent sends full
		// blocks anyway, the interval only matters for the tail.
		"-remoteWrite.flushInterval=1s",
		"-loggerLevel=WARN",
	}
	if o.queues > 0 {
		args = append(args, fmt.Sprintf("-remoteWrite.queues=%d", o.queues))
	}
	if hasFlag(o.vmagent, "remoteWrite.forcePromProto") {
		// Newer releases probe the receiver for VictoriaMetrics' own
		// protocol first; the receiver speaks Prometheus remote write.
		args = append(args, "-remoteWrite.forcePromProto")
	}
	p, err := start(o.name, o.vmagent, args, filepath.Join(o.dir, "vmagent.log"), o.gomaxprocs)
	if err != nil {
		return nil, err
	}
	p.baseURL = "http://" + addr
	p.writeURL = p.baseURL + "/api/v1/write"
	if err := p.waitHTTP(ctx, "http://"+addr+"/health", o.ready); err != nil {
		_ = p.stop(5 * time.Second)
		return nil, err
	}
	return p, nil
}

// VMAgentVersion returns vmagent's version: the module version recorded in
// a binary built with go install, else the Debian package's version.
func VMAgentVersion(bin string) string {
	if info, err := buildinfo.ReadFile(bin); err == nil {
		if v := info.Main.Version; v != "" && v != "(devel)" {
			return info.Main.Path + " " + v
		}
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "victoria-metrics").Output(); err == nil && len(out) > 0 {
		return "victoria-metrics " + string(out) + " (Debian package; the binary prints no version)"
	}
	return "unknown"
}

// hasFlag reports whether the vmagent binary knows -name.
func hasFlag(bin, name string) bool {
	out, _ := exec.Command(bin, "-help").CombinedOutput()
	return bytes.Contains(out, []byte("-"+name+" "))
}
