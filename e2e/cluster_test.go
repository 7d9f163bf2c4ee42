package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/internal/promtest"
	"github.com/cardinal-gateway/cardinal/limiter"
)

// shardExporter serves one shard of a churnExporter's steps: the series of
// the pods assigned to it (the others' go to other shards), one step
// further per scrape of this shard, as a sharded Prometheus scrapes the
// pods of one workload from different shards.
type shardExporter struct {
	e       *churnExporter
	texts   [][]byte
	values  []map[string]exposedSeries
	scrapes atomic.Int64
	served  atomic.Int64
}

var podLabel = regexp.MustCompile(`[{,]pod="([^"]*)"`)

func podShard(pod string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(pod))
	return int(h.Sum32() % uint32(n))
}

// shardChurn splits every step of e into n shards by pod (series without a
// pod go to shard 0); the # lines go to every shard.
func shardChurn(e *churnExporter, n int) []*shardExporter {
	shards := make([]*shardExporter, n)
	for i := range shards {
		shards[i] = &shardExporter{e: e}
	}
	for step := range e.texts {
		bufs := make([]bytes.Buffer, n)
		vals := make([]map[string]exposedSeries, n)
		for i := range vals {
			vals[i] = map[string]exposedSeries{}
		}
		for line := range bytes.Lines(e.texts[step]) {
			if bytes.HasPrefix(line, []byte("#")) {
				for i := range bufs {
					bufs[i].Write(line)
				}
				continue
			}
			i := 0
			if m := podLabel.FindSubmatch(line); m != nil {
				i = podShard(string(m[1]), n)
			}
			bufs[i].Write(line)
		}
		for k, v := range e.values[step] {
			vals[podShard(v.labels["pod"], n)*btoi(v.labels["pod"] != "")][k] = v
		}
		for i := range shards {
			shards[i].texts = append(shards[i].texts, bufs[i].Bytes())
			shards[i].values = append(shards[i].values, vals[i])
		}
	}
	return shards
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// allServed reports whether every shard has served past lastStep, and if
// not, which has not.
func allServed(shards []*shardExporter, lastStep int) (bool, string) {
	for i, s := range shards {
		if n := s.served.Load(); n <= int64(lastStep) {
			return false, fmt.Sprintf("shard %d scraped %d times so far", i, n)
		}
	}
	return true, ""
}

func (s *shardExporter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	step := min(int(s.scrapes.Add(1))-1, s.e.lastStep)
	w.Header().Set("Content-Type", meshgen.TextContentType)
	if _, err := w.Write(s.texts[step]); err != nil {
		s.e.failed.Add(1)
		return
	}
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	for k, v := range s.values[step] {
		s.e.last[k] = v
	}
	s.served.Add(1)
}

// startShardSender serves shard on 127.0.0.1 and starts a Prometheus agent
// that scrapes it and remote-writes to gw.
func startShardSender(t testing.TB, shard *shardExporter, gw *cardinal) *promtest.Prometheus {
	srv := httptest.NewServer(shard)
	t.Cleanup(srv.Close)
	return promtest.Start(t, promtest.Options{
		Agent:          true,
		ScrapeTargets:  []string{strings.TrimPrefix(srv.URL, "http://")},
		RemoteWriteURL: gw.URL + "/api/v1/write",
	})
}

// freeAddrs returns n distinct free loopback addresses.
func freeAddrs(t testing.TB, n int) []string {
	var out []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

// clusterCap is the series cap per workload of TestE2ECluster: two of its
// workloads have more outputs than that.
const clusterCap = 150

// TestE2ECluster (issue "Many replicas that behave as one"): three Cardinal
// processes with a static member list, three Prometheus agents each
// scraping a third of every workload's pods and writing to its own
// replica, and one Prometheus receiver. Each workload is owned by one
// replica, which merges its collapsed series and caps it; the others hand
// its series over. The receiver must hold every merged counter's true
// value, no workload more than the cap, the exact per-workload totals, and
// must never have refused a sample (two replicas emitting one output would
// be refused). Mid-run one replica is stopped and restarted: the senders
// must only have seen retryable answers, and after the membership settles
// the truth must hold again.
func TestE2ECluster(t *testing.T) {
	promtest.Binary(t)
	start := time.Now()
	const (
		replicas  = 3
		lastStep  = 30
		churnOnly = 4
		mixed     = 3
		perStep   = 2
		stopAt    = 10 // scrapes of the stopped replica's shard
	)
	gen := meshgen.New(meshgen.Config{Workloads: 12, PodsPerWorkload: 3, Variants: 1, HighCardShare: -1, Seed: 7})
	exp := newChurnExporter(t, gen, lastStep, churnOnly, mixed, perStep, 7)
	shards := shardChurn(exp, replicas)

	receiver := promtest.Start(t, promtest.Options{RemoteWriteReceiver: true})
	addrs := freeAddrs(t, replicas)
	dir := t.TempDir()
	gws := make([]*cardinal, replicas)
	for i := range replicas {
		cfg := fmt.Sprintf(`
downstream:
  url: %s
  max_retries: 5
relabel_configs:
  - action: labelkeep
    regex: %s
merge:
  flush_interval: 1s
  state_file: %s
limits:
  workload_labels: [namespace, app]
  max_series_per_workload: %d
  window: 10m
`, receiver.WriteURL(), meshgen.DefaultAllowlist, filepath.Join(dir, fmt.Sprintf("merge-%d.state", i)), clusterCap)
		gws[i] = startCardinalAt(t, cfg, addrs[i],
			"--cluster.peers="+strings.Join(addrs, ","), "--cluster.self="+addrs[i],
			"--cluster.probe-interval=200ms", "--cluster.handover-delay=1s", "--cluster.peer-timeout=60s")
	}
	senders := make([]*promtest.Prometheus, replicas)
	for i := range replicas {
		senders[i] = startShardSender(t, shards[i], gws[i])
	}
	ctx := context.Background()
	t.Logf("processes up after %v", time.Since(start).Round(time.Millisecond))

	// One replica stops (SIGTERM: it answers what is in flight, flushes
	// and saves its merged state) and comes back on the same address,
	// before --cluster.peer-timeout: its share is answered 503 meanwhile.
	//
	// It is one that owns no capped workload. After a restart the
	// limiter's accounting starts empty (see the README): a capped
	// workload's owner may then admit other series than before, and its
	// sum count a series both on its own and in the overflow series for a
	// window, which the exact totals below do not allow. Ownership follows
	// the replicas' random ports; with two capped workloads and three
	// replicas, one owns neither.
	_, runOutputs := mergeTruth(exp.finalExposed())
	willCap := cappedWorkloads(runOutputs)
	victim := -1
	promtest.Eventually(t, 60*time.Second, func() (bool, string) {
		owner := map[string]int{}
		for i, gw := range gws {
			for _, r := range cardinalityReports(t, gw.URL) {
				if _, c := willCap[r.Workload]; c {
					owner[r.Workload] = i
				}
			}
		}
		if len(owner) < len(willCap) {
			return false, fmt.Sprintf("owners of the capped workloads %v: %v", willCap, owner)
		}
		owns := map[int]bool{}
		for _, i := range owner {
			owns[i] = true
		}
		victim = -1
		for i := range gws {
			if !owns[i] {
				victim = i
				break
			}
		}
		if victim < 0 {
			t.Fatalf("every replica owns a capped workload (%v): none can restart without its limiter's reset showing", owner)
		}
		n := shards[victim].served.Load()
		return n >= stopAt, fmt.Sprintf("shard %d scraped %d times", victim, n)
	})
	if err := gws[victim].stop(syscall.SIGTERM); err != nil {
		t.Fatalf("stopping replica %d: %v", victim, err)
	}
	t.Logf("replica %d stopped at %v", victim, time.Since(start).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	gws[victim] = restartCardinal(t, gws[victim])
	t.Logf("replica %d back at %v", victim, time.Since(start).Round(time.Millisecond))

	var counters map[string]float64
	var outputs map[string]bool
	var capped map[string]int
	promtest.Eventually(t, 90*time.Second, func() (bool, string) {
		if ok, msg := allServed(shards, lastStep); !ok {
			return false, msg
		}
		if counters == nil {
			counters, outputs = mergeTruth(exp.exposed())
			capped = cappedWorkloads(outputs)
			if len(capped) == 0 {
				t.Fatalf("no workload over the cap of %d: the test exercises nothing", clusterCap)
			}
			// The outputs of capped workloads are checked by their sums.
			for k := range outputs {
				if _, c := capped[workloadOfKey(k)]; c {
					delete(outputs, k)
					delete(counters, k)
				}
			}
		}
		got, err := outageLatest(ctx, receiver)
		if err != nil {
			return false, err.Error()
		}
		for k := range got {
			if _, c := capped[workloadOfKey(k)]; c {
				delete(got, k)
			}
		}
		diff, _ := compareMerged(got, counters, outputs, 1e-9)
		return diff == "", diff
	})
	t.Logf("receiver matches the truth after %v: %d outputs of uncapped workloads, capped workloads %v", time.Since(start).Round(time.Millisecond), len(outputs), capped)

	// Every workload's counter totals are exact, capped ones included,
	// and no workload has more than the cap of series of its own.
	sums := workloadSums(exp.exposed())
	promtest.Eventually(t, 30*time.Second, func() (bool, string) {
		got, err := receiver.Query(ctx, `sum by (namespace, app, __name__) (last_over_time({namespace!="", __name__=~".*(_total|_count|_sum|_bucket)"}[10m]))`)
		if err != nil {
			return false, err.Error()
		}
		var wrong []string
		seen := 0
		for _, s := range got {
			k := s.Labels["namespace"] + "/" + s.Labels["app"] + " " + s.Labels["__name__"]
			want, ok := sums[k]
			seen++
			if !ok || !relClose(s.Value, want, 1e-9) {
				wrong = append(wrong, fmt.Sprintf("%s = %v, want %v", k, s.Value, want))
			}
		}
		sort.Strings(wrong)
		if len(wrong) > 0 || seen != len(sums) {
			return false, fmt.Sprintf("%d of %d workload totals received, %d wrong, e.g. %v", seen, len(sums), len(wrong), first(wrong))
		}
		return true, ""
	})
	counts, err := receiver.Query(ctx, fmt.Sprintf(`count by (namespace, app) (last_over_time({namespace!="", %s!="true"}[10m]))`, limiter.OverflowLabel))
	if err != nil {
		t.Fatal(err)
	}
	// The limiter's documented slack: an instance (a histogram's buckets,
	// sum and count) is admitted whole, so a workload may exceed its cap by
	// the rest of one. Three replicas capping on their own would admit up
	// to three times the cap.
	const instanceSlack = 20
	downstream := map[string]float64{}
	for _, c := range counts {
		w := c.Labels["namespace"] + "/" + c.Labels["app"]
		downstream[w] = c.Value
		if c.Value > clusterCap+instanceSlack {
			t.Errorf("workload %s has %v series of its own downstream, over the cap of %d (+%d for instances admitted whole)", w, c.Value, clusterCap, instanceSlack)
		}
		if _, isCapped := capped[w]; isCapped && c.Value < clusterCap {
			t.Errorf("capped workload %s has %v series of its own, want at least the cap, %d", w, c.Value, clusterCap)
		}
	}
	if len(downstream) != 12 {
		t.Errorf("%d workloads downstream, want 12: %v", len(downstream), downstream)
	}

	// Nothing refused: at the receiver, by any replica's forwards, and
	// nothing the senders gave up on.
	if lines := receiverRejections(receiver.Log()); len(lines) > 0 {
		t.Errorf("receiver log reports %d rejected samples, e.g. %s", len(lines), lines[0])
	}
	owners := map[string]string{}
	forwardedToPeers, owned := 0.0, 0.0
	for i, gw := range gws {
		fams := scrapeMetrics(t, gw.URL)
		codes := mergeForwardCodes(fams)
		if refused := mergeRefusals(codes); refused != 0 || codes["400"]+codes["409"]+codes["413"] != 0 {
			t.Errorf("replica %d: the receiver refused %v requests (by code: %v)", i, refused, codes)
		}
		forwardedToPeers += familyValue(fams, "cardinal_cluster_forwarded_samples_total", "result", "ok")
		owned += familyValue(fams, "cardinal_owned_workloads", "", "")
		if m := familyValue(fams, "cardinal_cluster_members", "", ""); m != replicas {
			t.Errorf("replica %d: cardinal_cluster_members = %v, want %d", i, m, replicas)
		}
		for _, r := range cardinalityReports(t, gw.URL) {
			if r.Workload == limiter.UnknownWorkload {
				// Series without workload labels are owned by metric
				// name, spread over the replicas.
				continue
			}
			if r.Limit != clusterCap {
				t.Errorf("replica %d: workload %s has limit %d, want %d", i, r.Workload, r.Limit, clusterCap)
			}
			if _, isCapped := capped[r.Workload]; isCapped && (r.DroppedSeries == 0 || float64(r.ActiveSeries) != downstream[r.Workload]) {
				t.Errorf("replica %d: capped workload %s: %d active series (%v downstream), %d folded; want them equal and some folded", i, r.Workload, r.ActiveSeries, downstream[r.Workload], r.DroppedSeries)
			}
			if o, dup := owners[r.Workload]; dup {
				t.Errorf("workload %s tracked by replicas %s and %d", r.Workload, o, i)
			}
			owners[r.Workload] = fmt.Sprint(i)
		}
	}
	if forwardedToPeers == 0 {
		t.Errorf("no sample was handed to its owner: the senders' traffic did not spread")
	}
	if want := float64(len(owners)); owned != want || owned != 12 {
		t.Errorf("cardinal_owned_workloads sums to %v over the replicas, want %v (12 workloads)", owned, want)
	}
	for i, s := range senders {
		stats, err := s.RemoteWriteStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if stats.Failed != 0 || stats.Dropped != 0 || stats.Succeeded() <= 0 {
			t.Errorf("sender %d: %+v; want no failed or dropped samples (only retryable answers) and some succeeded", i, stats)
		}
		t.Logf("sender %d: %+v", i, stats)
	}
	t.Logf("owners %v; samples handed to owners %v; total %v", owners, forwardedToPeers, time.Since(start).Round(time.Millisecond))
}

// cardinalityReports returns a replica's limiter report of every workload
// it tracks (those it owns).
func cardinalityReports(t *testing.T, url string) []limiter.Report {
	t.Helper()
	code, body := httpGet(url + "/api/v1/cardinality?top=1000")
	if code != http.StatusOK {
		t.Fatalf("%s: GET /api/v1/cardinality: %d %s", url, code, body)
	}
	var reports []limiter.Report
	if err := json.Unmarshal([]byte(body), &reports); err != nil {
		t.Fatal(err)
	}
	return reports
}

// workloadOfKey returns namespace/app of an output key (labels.String()).
func workloadOfKey(k string) string {
	ls, err := parseLabelsString(k)
	if err != nil {
		return ""
	}
	return ls["namespace"] + "/" + ls["app"]
}

var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

func parseLabelsString(s string) (map[string]string, error) {
	m := map[string]string{}
	for _, p := range labelPair.FindAllStringSubmatch(s, -1) {
		m[p[1]] = p[2]
	}
	return m, nil
}

// cappedWorkloads returns the workloads with more outputs than the cap.
func cappedWorkloads(outputs map[string]bool) map[string]int {
	n := map[string]int{}
	for k := range outputs {
		n[workloadOfKey(k)]++
	}
	out := map[string]int{}
	for w, c := range n {
		if c > clusterCap && w != "/" {
			out[w] = c
		}
	}
	return out
}

// workloadSums sums the last exposed value of every counter series by
// workload and metric name: what the receiver's per-workload totals must
// be, folded series included.
func workloadSums(exposed map[string]exposedSeries) map[string]float64 {
	out := map[string]float64{}
	for _, s := range exposed {
		if !isCounterName(s.labels["__name__"]) || s.labels["namespace"] == "" {
			continue
		}
		out[s.labels["namespace"]+"/"+s.labels["app"]+" "+s.labels["__name__"]] += s.value
	}
	return out
}

// TestE2EShardedSidecars (issue "Many replicas that behave as one", the
// sidecar case): two Prometheus shards scrape different pods of the same
// workloads, each with its own Cardinal sidecar. Without anything else
// both sidecars would emit the same merged outputs with partial sums; with
// the default of the chart's sidecar mode, external_labels with the shard's
// name, each shard's outputs stay apart, the receiver refuses nothing, and
// summing without the shard label gives the exact totals.
func TestE2EShardedSidecars(t *testing.T) {
	promtest.Binary(t)
	const (
		shardsN  = 2
		lastStep = 6
	)
	gen := meshgen.New(meshgen.Config{Workloads: 6, PodsPerWorkload: 4, Variants: 1, HighCardShare: -1, Seed: 11})
	exp := newChurnExporter(t, gen, lastStep, 2, 2, 2, 11)
	shards := shardChurn(exp, shardsN)
	receiver := promtest.Start(t, promtest.Options{RemoteWriteReceiver: true})
	var gws []*cardinal
	var senders []*promtest.Prometheus
	for i := range shardsN {
		t.Setenv("POD_NAME", fmt.Sprintf("prometheus-shard-%d-0", i))
		gw := startCardinal(t, fmt.Sprintf(`
downstream:
  url: %s
  max_retries: 5
relabel_configs:
  - action: labelkeep
    regex: %s
merge:
  flush_interval: 1s
external_labels:
  cardinal_shard: ${POD_NAME}
`, receiver.WriteURL(), meshgen.DefaultAllowlist))
		gws = append(gws, gw)
		senders = append(senders, startShardSender(t, shards[i], gw))
	}
	ctx := context.Background()
	var counters map[string]float64
	var outputs map[string]bool
	promtest.Eventually(t, 60*time.Second, func() (bool, string) {
		if ok, msg := allServed(shards, lastStep); !ok {
			return false, msg
		}
		if counters == nil {
			counters, outputs = mergeTruth(exp.exposed())
		}
		// sum without drops the metric name: it is kept as name_.
		samples, err := receiver.Query(ctx, `sum without (cardinal_shard) (label_replace(last_over_time({job="mesh", __name__=~".*(_total|_count|_sum|_bucket)"}[10m]), "name_", "$1", "__name__", "(.+)"))`)
		if err != nil {
			return false, err.Error()
		}
		got := map[string]float64{}
		for _, s := range samples {
			delete(s.Labels, "job")
			s.Labels["__name__"] = s.Labels["name_"]
			delete(s.Labels, "name_")
			got[labels.FromMap(s.Labels).String()] = s.Value
		}
		want := counters
		var wrong []string
		for k, w := range want {
			if g, ok := got[k]; !ok || !relClose(g, w, 1e-9) {
				wrong = append(wrong, fmt.Sprintf("%s = %v, want %v", k, got[k], w))
			}
		}
		sort.Strings(wrong)
		if len(wrong) > 0 || len(got) != len(want) {
			return false, fmt.Sprintf("%d sums received, %d expected, %d wrong, e.g. %v", len(got), len(want), len(wrong), first(wrong))
		}
		return true, ""
	})
	// Each shard's outputs carry its own label; a workload scraped by both
	// shards has outputs under both.
	both := 0
	for k := range outputs {
		ls, _ := parseLabelsString(k)
		sel := fmt.Sprintf(`count by (cardinal_shard) (last_over_time({__name__=%q, namespace=%q, app=%q}[10m]))`, ls["__name__"], ls["namespace"], ls["app"])
		res, err := receiver.Query(ctx, sel)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if !strings.HasPrefix(r.Labels["cardinal_shard"], "prometheus-shard-") {
				t.Fatalf("series without the shard label: %v", r.Labels)
			}
		}
		if len(res) == shardsN {
			both++
		}
		if both > 0 {
			break
		}
	}
	if both == 0 {
		t.Errorf("no output under both shards' labels: the shards do not overlap, the test shows nothing")
	}
	if lines := receiverRejections(receiver.Log()); len(lines) > 0 {
		t.Errorf("receiver log reports %d rejected samples, e.g. %s", len(lines), lines[0])
	}
	for i, gw := range gws {
		codes := mergeForwardCodes(scrapeMetrics(t, gw.URL))
		if codes["400"]+codes["409"]+codes["413"] != 0 {
			t.Errorf("sidecar %d: the receiver refused requests (by code: %v)", i, codes)
		}
	}
	for i, s := range senders {
		stats, err := s.RemoteWriteStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if stats.Failed != 0 || stats.Dropped != 0 {
			t.Errorf("sender %d: %+v", i, stats)
		}
	}
}
