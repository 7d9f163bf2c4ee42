package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardinal-gateway/cardinal/cluster"
)

// replica is one Cardinal of a tier, served on its own 127.0.0.1 port.
type replica struct {
	t       *testing.T
	addr    string
	url     string
	cfgFile string
	cc      cluster.Config
	srv     *Server
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
}

// Cluster settings of these tests: fast probes, short delays.
var testCluster = cluster.Config{ProbeInterval: 50 * time.Millisecond, HandoverDelay: 300 * time.Millisecond, PeerTimeout: 600 * time.Millisecond, RefreshInterval: time.Hour}

// startTier starts n replicas with a static member list, each with the
// config file cfg, and waits until each sees the others up.
func startTier(t *testing.T, n int, cfg string) []*replica {
	t.Helper()
	var lns []net.Listener
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	tier := make([]*replica, n)
	for i := range n {
		cc := testCluster
		cc.Peers, cc.Self = addrs, addrs[i]
		tier[i] = &replica{t: t, addr: addrs[i], url: "http://" + addrs[i], cfgFile: cfg, cc: cc}
		tier[i].start(lns[i])
	}
	waitTier(t, tier, n)
	return tier
}

func (r *replica) start(ln net.Listener) {
	r.t.Helper()
	if ln == nil {
		var err error
		deadline := time.Now().Add(waitFor)
		for ln, err = net.Listen("tcp", r.addr); err != nil; ln, err = net.Listen("tcp", r.addr) {
			if time.Now().After(deadline) {
				r.t.Fatalf("cannot listen on %s again: %v", r.addr, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	r.reg = prometheus.NewRegistry()
	cc := r.cc
	srv, err := New(Options{ConfigFile: r.cfgFile, Registry: r.reg, ShutdownTimeout: waitFor, Cluster: &cc})
	if err != nil {
		r.t.Fatalf("New: %v", err)
	}
	r.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- srv.Serve(ctx, ln) }()
	r.t.Cleanup(r.stop)
}

// stop shuts the replica down gracefully and waits for it.
func (r *replica) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case <-r.done:
	case <-time.After(2 * waitFor):
		r.t.Errorf("replica %s did not stop", r.addr)
	}
}

// waitTier waits until every running replica's view has members members,
// none down, and its handover is over.
func waitTier(t *testing.T, tier []*replica, members int) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for _, r := range tier {
		if r.cancel == nil {
			continue
		}
		for {
			v := r.srv.Gateway().Cluster().View()
			down := 0
			for i := range v.Members {
				if v.Down(i) {
					down++
				}
			}
			if len(v.Members) == members && down == 0 && !v.Settling(time.Now()) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %s: view %v (%d down, settling %v), want %d members up", r.addr, v.Members, down, v.Settling(time.Now()), members)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// owner returns the index in tier of the owner of workload ns/app.
func owner(tier []*replica, workload string) int {
	o := tier[0].srv.Gateway().WorkloadOwner(workload)
	return slices.IndexFunc(tier, func(r *replica) bool { return r.addr == o })
}

// workloadsOf returns n workload names (namespace n, app aK) owned by
// tier[i] under the current view.
func workloadsOf(tier []*replica, i, n int) []string {
	var out []string
	for k := 0; len(out) < n && k < 10000; k++ {
		if w := fmt.Sprintf("n/a%d", k); owner(tier, w) == i {
			out = append(out, w)
		}
	}
	return out
}

// podSamples returns two pods' samples of req_total for each workload, at
// ts, each pod's value v: after labeldrop pod they collapse into one
// output per workload, merged to 2v.
func podSamples(workloads []string, v float64, ts int64) []sample {
	var out []sample
	for _, w := range workloads {
		ns, app, _ := strings.Cut(w, "/")
		for _, pod := range []string{"p1", "p2"} {
			out = append(out, sample{labels: []string{"__name__", "req_total", "app", app, "namespace", ns, "pod", pod}, value: v, ts: ts})
		}
	}
	return out
}

const tierConfig = `
relabel_configs:
  - {action: labeldrop, regex: pod}
merge:
  flush_interval: 100ms
limits:
  workload_labels: [namespace, app]
  max_series_per_workload: 1000
`

// merged returns the points downstream received for workload's merged
// req_total, in order: value@ts, stale@ts for a stale marker.
func (d *downstream) merged(workload string) []string {
	ns, app, _ := strings.Cut(workload, "/")
	prefix := fmt.Sprintf("__name__=req_total,app=%s,namespace=%s ", app, ns)
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, s := range d.series {
		if rest, ok := strings.CutPrefix(s, prefix); ok {
			out = append(out, rest)
		}
	}
	return out
}

// pointOf parses "value@ts".
func pointOf(t *testing.T, p string) (float64, int64) {
	t.Helper()
	v, ts, _ := strings.Cut(p, "@")
	if v == "stale" {
		v = "NaN"
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		t.Fatalf("point %q: %v", p, err)
	}
	n, _ := strconv.ParseInt(ts, 10, 64)
	return f, n
}

// TestClusterHandsSeriesToTheirOwners: one request to one replica with
// the series of workloads all three own; each workload is merged and
// capped by its owner alone, and emitted once.
func TestClusterHandsSeriesToTheirOwners(t *testing.T) {
	d := newDownstream(t)
	tier := startTier(t, 3, writeConfig(t, t.TempDir(), d.URL, tierConfig))
	var workloads []string
	for i := range tier {
		workloads = append(workloads, workloadsOf(tier, i, 4)...)
	}
	now := time.Now().UnixMilli()
	if code, body := remoteWrite(t, tier[0].url, podSamples(workloads, 5, now)...); code != http.StatusNoContent {
		t.Fatalf("write: %d %s", code, body)
	}
	// Each output: its first input passes through (5), then the merged
	// value (10) comes with the next flush; nothing else.
	deadline := time.Now().Add(waitFor)
	for _, w := range workloads {
		for len(d.merged(w)) < 2 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(150 * time.Millisecond) // another flush: nothing more may come
		pts := d.merged(w)
		if len(pts) != 2 {
			t.Errorf("workload %s: downstream got %v, want the first input's point and the merged one", w, pts)
			continue
		}
		if v, _ := pointOf(t, pts[0]); v != 5 {
			t.Errorf("workload %s: first point %v, want 5", w, v)
		}
		if v, _ := pointOf(t, pts[1]); v != 10 {
			t.Errorf("workload %s: merged %v, want 10", w, v)
		}
	}
	for i, r := range tier {
		var tracked []string
		for _, rep := range r.srv.Gateway().Limiter().Cardinality(0) {
			tracked = append(tracked, rep.Workload)
		}
		slices.Sort(tracked)
		want := workloadsOf(tier, i, 4)
		slices.Sort(want)
		if !slices.Equal(tracked, want) {
			t.Errorf("replica %d tracks %v, want the workloads it owns %v", i, tracked, want)
		}
		if got := metricValue(gather(t, r.reg), "cardinal_owned_workloads", "", ""); got != 4 {
			t.Errorf("replica %d: cardinal_owned_workloads = %v, want 4", i, got)
		}
	}
	if got := metricValue(gather(t, tier[0].reg), "cardinal_forwarded_samples_total", "path", "peer"); got != 16 {
		t.Errorf("replica 0: forwarded{path=peer} = %v, want the 16 samples of the 8 workloads others own", got)
	}
	// The reporting APIs say they show one replica's share.
	resp, _ := do(t, http.MethodGet, tier[1].url+"/api/v1/cardinality", "")
	if s := resp.Header.Get(ScopeHeader); !strings.Contains(s, tier[1].addr) || !strings.Contains(s, "1 of 3") {
		t.Errorf("%s = %q", ScopeHeader, s)
	}
	// So does the page, and it links the other replicas.
	_, page := do(t, http.MethodGet, tier[1].url+"/", "")
	if !strings.Contains(page, "this replica's share of the tier") || !strings.Contains(page, `href="http://`+tier[0].addr+`/"`) || !strings.Contains(page, "<code>"+tier[1].addr+"</code> (this one)") {
		t.Errorf("the page does not say it shows one replica's share, with links to the others")
	}
	var st clusterAnswer
	_, body := do(t, http.MethodGet, tier[1].url+"/api/v1/cluster", "")
	if err := json.Unmarshal([]byte(body), &st); err != nil || !st.Enabled || st.Self != tier[1].addr || len(st.Members) != 3 || st.OwnedWorkloads != 4 {
		t.Errorf("GET /api/v1/cluster = %s (%v)", body, err)
	}
}

// TestClusterPeerDownThenGone: the share of a replica that stopped is
// answered 503 (the rest is delivered) until the peer timeout; then its
// workloads move, the new owner answers 503 for them during the handover
// delay and takes them after. When it comes back they move back: the
// interim owner ends its merged outputs at once, and the returning owner
// emits after that end.
func TestClusterPeerDownThenGone(t *testing.T) {
	d := newDownstream(t)
	tier := startTier(t, 3, writeConfig(t, t.TempDir(), d.URL, tierConfig))
	of2 := workloadsOf(tier, 2, 3)
	mine := workloadsOf(tier, 0, 2)
	tier[2].stop()
	// Replica 0 sees it down after a failed probe or forward.
	deadline := time.Now().Add(waitFor)
	for code := 0; code != http.StatusServiceUnavailable; {
		var body string
		code, body = remoteWrite(t, tier[0].url, podSamples(of2, 1, time.Now().UnixMilli())...)
		if code != http.StatusServiceUnavailable && code != http.StatusNoContent {
			t.Fatalf("write of a stopped replica's workloads: %d %s", code, body)
		}
		if code == http.StatusServiceUnavailable && !strings.Contains(body, tier[2].addr) {
			t.Fatalf("503 that does not name the replica: %s", body)
		}
		if time.Now().After(deadline) {
			t.Fatal("no 503 for a stopped replica's share")
		}
	}
	if code, body := remoteWrite(t, tier[0].url, podSamples(mine, 1, time.Now().UnixMilli())...); code != http.StatusNoContent {
		t.Errorf("write of replica 0's own workloads while 2 is down: %d %s", code, body)
	}
	// After the peer timeout it is gone: its workloads move to 0 and 1,
	// which refuse them during the handover, then take them.
	var codes []int
	moved := ""
	for deadline = time.Now().Add(waitFor); ; {
		code, body := remoteWrite(t, tier[0].url, podSamples(of2, 2, time.Now().UnixMilli())...)
		if len(codes) == 0 || codes[len(codes)-1] != code {
			codes = append(codes, code)
		}
		if strings.Contains(body, "just moved") {
			moved = body
		}
		if code == http.StatusNoContent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stopped replica's workloads never moved: codes %v, last %s", codes, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if codes[len(codes)-1] != http.StatusNoContent || slices.ContainsFunc(codes, func(c int) bool { return c != http.StatusNoContent && c != http.StatusServiceUnavailable }) {
		t.Errorf("answers while the membership changed: %v, want only 503 then 204", codes)
	}
	if moved == "" {
		t.Errorf("no answer said the workloads just moved (handover)")
	}
	if v := tier[0].srv.Gateway().Cluster().View(); len(v.Members) != 2 {
		t.Fatalf("view %v, want 2 members", v.Members)
	}
	for _, w := range of2 {
		if o := owner(tier, w); o == 2 || o < 0 {
			t.Fatalf("workload %s still owned by %d", w, o)
		}
	}
	// Their merged outputs are emitted by their interim owners.
	waitMerged := func(w string, pred func([]string) bool) []string {
		deadline := time.Now().Add(waitFor)
		for !pred(d.merged(w)) {
			if time.Now().After(deadline) {
				t.Fatalf("workload %s: downstream got %v", w, d.merged(w))
			}
			time.Sleep(20 * time.Millisecond)
		}
		return d.merged(w)
	}
	for _, w := range of2 {
		waitMerged(w, func(p []string) bool { return len(p) > 0 })
	}
	// Replica 2 comes back: the workloads move back.
	tier[2].start(nil)
	waitTier(t, tier, 3)
	back := time.Now()
	for _, w := range of2 {
		if o := owner(tier, w); o != 2 {
			t.Fatalf("workload %s owned by %d after 2 came back", w, o)
		}
	}
	for deadline = time.Now().Add(waitFor); ; {
		code, body := remoteWrite(t, tier[1].url, podSamples(of2, 3, time.Now().UnixMilli())...)
		if code == http.StatusNoContent {
			break
		}
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("writes after 2 came back: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, w := range of2 {
		pts := waitMerged(w, func(p []string) bool {
			n := len(p)
			return n > 0 && strings.HasPrefix(p[n-1], "6@")
		})
		// The interim owner's last point is its stale marker, and every
		// point the returning owner emits comes after it.
		staleAt := -1
		for i, p := range pts {
			if strings.HasPrefix(p, "stale@") {
				staleAt = i
			}
		}
		if staleAt < 0 {
			t.Errorf("workload %s: no stale marker from the interim owner: %v", w, pts)
			continue
		}
		_, staleTs := pointOf(t, pts[staleAt])
		for _, p := range pts[staleAt+1:] {
			if v, ts := pointOf(t, p); ts <= staleTs || math.IsNaN(v) {
				t.Errorf("workload %s: point %s after the interim owner's stale marker at %d", w, p, staleTs)
			}
		}
		if staleTs > back.UnixMilli()+1000 {
			t.Errorf("workload %s: stale marker at %d, long after the move (%d)", w, staleTs, back.UnixMilli())
		}
	}
}

// TestClusterRefusesAnotherView: a request forwarded under a view the
// receiving replica does not share is answered 503, with the reason.
func TestClusterRefusesAnotherView(t *testing.T) {
	d := newDownstream(t)
	tier := startTier(t, 2, writeConfig(t, t.TempDir(), d.URL, tierConfig))
	body := encodeWrite(t, podSamples(workloadsOf(tier, 1, 1), 1, time.Now().UnixMilli())...)
	req, _ := http.NewRequest(http.MethodPost, tier[1].url+"/api/v1/write", bytes.NewReader(body))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set(cluster.FromHeader, tier[0].addr)
	req.Header.Set(cluster.ViewHeader, "12345")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(cluster.ReasonHeader) != cluster.ErrView || resp.Header.Get("Retry-After") == "" {
		t.Errorf("answer %d, reason %q, Retry-After %q; want 503, %q and a Retry-After", resp.StatusCode, resp.Header.Get(cluster.ReasonHeader), resp.Header.Get("Retry-After"), cluster.ErrView)
	}
	if got := d.take(t); len(got) != 0 {
		t.Errorf("downstream got %v", got)
	}
}

// TestClusterLimitChangesReachEveryReplica: a cap set through one
// replica's admin API is set on all of them (the owner applies it, now and
// after moves); with one down the call says so, and can be repeated.
func TestClusterLimitChangesReachEveryReplica(t *testing.T) {
	d := newDownstream(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tier := startTier(t, 3, writeConfig(t, dir, d.URL, tierConfig+"admin:\n  bearer_token_file: token\n"))
	put := func(base, workload string, n int) (int, string) {
		req, _ := http.NewRequest(http.MethodPut, base+"/api/v1/limits/"+workload, strings.NewReader(fmt.Sprintf(`{"max_series": %d}`, n)))
		req.Header.Set("Authorization", "Bearer s3cret")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, body := put(tier[0].url, "n%2Fa1", 7); code != http.StatusOK {
		t.Fatalf("PUT: %d %s", code, body)
	}
	for i, r := range tier {
		if got := r.srv.Gateway().Limiter().Limit("n/a1"); got != 7 {
			t.Errorf("replica %d: limit of n/a1 = %d, want 7", i, got)
		}
	}
	tier[2].stop()
	code, body := put(tier[1].url, "n%2Fa2", 9)
	if code != http.StatusBadGateway || !strings.Contains(body, tier[2].addr) {
		t.Errorf("PUT with a replica down: %d %s; want 502 naming it", code, body)
	}
	if got := tier[0].srv.Gateway().Limiter().Limit("n/a2"); got != 9 {
		t.Errorf("replica 0: limit of n/a2 = %d, want 9 (the reachable replicas took it)", got)
	}
	// Without the token nothing is fanned out.
	req, _ := http.NewRequest(http.MethodPut, tier[0].url+"/api/v1/limits/n%2Fa3", strings.NewReader(`{"max_series": 1}`))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || tier[1].srv.Gateway().Limiter().Limit("n/a3") == 1 {
		t.Errorf("PUT without a token: %d", resp.StatusCode)
	}
}
