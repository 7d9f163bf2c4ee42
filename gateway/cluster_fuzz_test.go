package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"

	"github.com/cardinal-gateway/cardinal/cluster"
	"github.com/cardinal-gateway/cardinal/config"
	"github.com/cardinal-gateway/cardinal/forward"
	"github.com/cardinal-gateway/cardinal/wire"
)

// fakePeer is the other member of a two-replica cluster: a remote-write
// receiver that decodes what it is handed with prompb, checks it as a
// receiver would, and answers with status (0: it drops the connection).
type fakePeer struct {
	*httptest.Server
	status atomic.Int32

	mu      sync.Mutex
	samples int      // float and histogram samples received
	bad     []string // what a receiver would refuse
	headers []string // the cluster headers seen
}

func newFakePeer(tb testing.TB) *fakePeer {
	p := &fakePeer{}
	p.status.Store(http.StatusNoContent)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		raw, err := snappy.Decode(nil, body)
		var wr prompb.WriteRequest
		if err == nil {
			err = wr.Unmarshal(raw)
		}
		p.mu.Lock()
		p.headers = append(p.headers, r.Header.Get(cluster.FromHeader)+" "+r.Header.Get(cluster.ViewHeader))
		if err != nil {
			p.bad = append(p.bad, "undecodable body: "+err.Error())
		}
		for _, ts := range wr.Timeseries {
			if msg := checkLabels(ts.Labels); msg != "" {
				p.bad = append(p.bad, msg)
			}
			p.samples += len(ts.Samples) + len(ts.Histograms)
		}
		p.mu.Unlock()
		switch st := int(p.status.Load()); st {
		case 0:
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			w.WriteHeader(http.StatusBadGateway)
		default:
			w.WriteHeader(st)
		}
	}))
	tb.Cleanup(p.Close)
	return p
}

// checkLabels says what a receiver would refuse in ls: unsorted or
// duplicate names, empty names or values, no metric name.
func checkLabels(ls []prompb.Label) string {
	name := false
	for i, l := range ls {
		if l.Name == "" || l.Value == "" {
			return "empty label name or value"
		}
		if i > 0 && ls[i-1].Name >= l.Name {
			return "labels not sorted and unique"
		}
		name = name || l.Name == "__name__"
	}
	if !name {
		return "no metric name"
	}
	return ""
}

func (p *fakePeer) take() (samples int, bad, headers []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	samples, bad, headers = p.samples, p.bad, p.headers
	p.samples, p.bad, p.headers = 0, nil, nil
	return
}

// acceptingSender counts the samples delivered downstream.
type acceptingSender struct{ samples atomic.Int64 }

func (s *acceptingSender) Send(_ context.Context, body []byte) error {
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		return err
	}
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(raw); err != nil {
		return err
	}
	for _, ts := range wr.Timeseries {
		s.samples.Add(int64(len(ts.Samples) + len(ts.Histograms)))
	}
	return nil
}

func (s *acceptingSender) Close() {}

const clusterSelf = "127.0.0.1:1"

// newClusterGateway returns a gateway that is one replica of two, the
// other being peer, on clock.
func newClusterGateway(tb testing.TB, yml string, peer *fakePeer, clock *testClock) (*Gateway, *acceptingSender) {
	tb.Helper()
	cfg, err := config.Parse([]byte(yml))
	if err != nil {
		tb.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	other := strings.TrimPrefix(peer.URL, "http://")
	cl, err := cluster.New(cluster.Config{Peers: []string{clusterSelf, other}, Self: clusterSelf, Now: clock.Now}, reg, nil)
	if err != nil {
		tb.Fatal(err)
	}
	sender := &acceptingSender{}
	g, err := New(cfg, Options{
		Registerer: reg, Now: clock.Now, Cluster: cl,
		NewSender: func(config.DownstreamConfig, prometheus.Registerer, *slog.Logger) (Sender, error) { return sender, nil },
	})
	if err != nil {
		tb.Fatal(err)
	}
	return g, sender
}

const clusterFuzzConfig = `
downstream: {url: "http://127.0.0.1:1/api/v1/write"}
relabel_configs:
  - {action: labeldrop, regex: "pod|instance|request_id"}
trace_sampling:
  labels: [trace_id]
  ratio: 0.5
limits:
  workload_labels: [namespace, app]
  max_series_per_workload: 3
merge:
  max_inputs: 64
`

// FuzzClusterParts: any request to a replica of a cluster is split
// between this replica and its peer without losing or duplicating a
// sample, every part handed over is a valid remote-write request, and the
// sender's answer is the worst of the parts': 503 when the peer failed or
// dropped the connection, 400 when it refused, else this replica's own.
func FuzzClusterParts(f *testing.F) {
	for _, seed := range clusterSeeds(f) {
		f.Add(seed)
	}
	peer := newFakePeer(f)
	statuses := []int32{http.StatusNoContent, http.StatusBadRequest, http.StatusServiceUnavailable, http.StatusTooManyRequests, 0}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 1 {
			return
		}
		status := statuses[int(data[0])%len(statuses)]
		var req wire.Request
		if err := req.Unmarshal(data[1:]); err != nil {
			return
		}
		clock := &testClock{t: time.UnixMilli(fuzzEpoch)}
		g, sender := newClusterGateway(t, clusterFuzzConfig, peer, clock)
		defer g.Close()
		// Past the handover of the start.
		clock.Add(10 * time.Second)
		peer.status.Store(status)
		peer.take()
		received := req.NumSamples()
		res, err := g.Process(context.Background(), &req)
		got, bad, headers := peer.take()
		if len(bad) > 0 {
			t.Fatalf("the peer got what a receiver refuses: %v", bad)
		}
		for _, h := range headers {
			if !strings.HasPrefix(h, clusterSelf+" ") {
				t.Fatalf("forwarded without naming this replica: %q", h)
			}
		}
		local := int(sender.samples.Load())
		accounted := local + got + res.Invalid.DroppedSamples() + res.DroppedByRelabel + res.Merged + res.DroppedByMerge
		if accounted != received {
			t.Fatalf("%d samples received, %d accounted for: %d delivered here, %d handed to the peer, %d invalid, %d dropped by rules, %d merged, %d over merge capacity",
				received, accounted, local, got, res.Invalid.DroppedSamples(), res.DroppedByRelabel, res.Merged, res.DroppedByMerge)
		}
		var ferr *forward.Error
		isF := errors.As(err, &ferr)
		switch {
		case got == 0:
			if res.ToPeers != 0 {
				t.Fatalf("nothing handed over, ToPeers %d", res.ToPeers)
			}
		case status == http.StatusNoContent:
			if err != nil || res.ToPeers != got {
				t.Fatalf("peer accepted %d samples: error %v, ToPeers %d", got, err, res.ToPeers)
			}
		case status == http.StatusBadRequest:
			if !isF || ferr.Status != http.StatusBadRequest {
				t.Fatalf("peer refused: error %v, want a 400", err)
			}
		default:
			if !isF || ferr.Status != http.StatusServiceUnavailable || ferr.RetryAfter <= 0 {
				t.Fatalf("peer answered %d: error %v, want a 503 with Retry-After", status, err)
			}
		}
	})
}

// clusterSeeds are requests with the series of several workloads, some
// collapsing, with the peer's five answers.
func clusterSeeds(tb testing.TB) [][]byte {
	var wr prompb.WriteRequest
	for _, app := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		for _, pod := range []string{"p1", "p2"} {
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: "req_total"}, {Name: "app", Value: app}, {Name: "namespace", Value: "n"}, {Name: "pod", Value: pod}, {Name: "trace_id", Value: "4bf92f3577b34da6a3ce929d0e0e4736"}},
				Samples: []prompb.Sample{{Value: 1, Timestamp: fuzzEpoch}},
			})
		}
	}
	wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "x"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: fuzzEpoch}}})
	raw, err := wr.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	for st := range byte(5) {
		out = append(out, append([]byte{st}, raw...))
	}
	return out
}

// TestClusterPartsSeeds runs the seeds as a test, and checks that they
// reach both sides. The peer's port is random, and so is which workloads
// it owns: the eight of the seeds all land on one side once in 128 views,
// so a view like that is drawn again (with a new peer), a few times.
func TestClusterPartsSeeds(t *testing.T) {
	for attempt := 1; ; attempt++ {
		split, msg := clusterPartsSeeds(t)
		if split {
			return
		}
		if attempt == 4 {
			t.Fatal(msg)
		}
		t.Logf("attempt %d: %s; again with another peer", attempt, msg)
	}
}

// clusterPartsSeeds is one attempt of TestClusterPartsSeeds; it reports
// whether the seeds reached both sides.
func clusterPartsSeeds(t *testing.T) (bool, string) {
	peer := newFakePeer(t)
	clock := &testClock{t: time.UnixMilli(fuzzEpoch)}
	g, sender := newClusterGateway(t, clusterFuzzConfig, peer, clock)
	defer g.Close()
	// During the handover of the start, its own share is refused.
	var req wire.Request
	if err := req.Unmarshal(clusterSeeds(t)[0][1:]); err != nil {
		t.Fatal(err)
	}
	_, err := g.Process(context.Background(), &req)
	var ferr *forward.Error
	if !errors.As(err, &ferr) || ferr.Status != http.StatusServiceUnavailable || ferr.Reason != cluster.ErrHandover {
		t.Fatalf("during the start's handover: %v, want a 503 for the handover", err)
	}
	clock.Add(10 * time.Second)
	peer.take()
	req.Reset()
	if err := req.Unmarshal(clusterSeeds(t)[0][1:]); err != nil {
		t.Fatal(err)
	}
	res, err := g.Process(context.Background(), &req)
	got, bad, _ := peer.take()
	if err != nil || len(bad) > 0 || res.ToPeers != got {
		t.Fatalf("error %v, peer got %d (bad %v), delivered here %d, ToPeers %d", err, got, bad, sender.samples.Load(), res.ToPeers)
	}
	if got == 0 || sender.samples.Load() == 0 {
		return false, fmt.Sprintf("peer got %d, delivered here %d (owned here: %v): want both sides to get some", got, sender.samples.Load(), g.OwnedWorkloads())
	}
	if !slices.Contains(g.OwnedWorkloads(), "n/a") && !slices.Contains(g.OwnedWorkloads(), "n/b") && len(g.OwnedWorkloads()) == 0 {
		t.Errorf("owns no workload: %v", g.OwnedWorkloads())
	}
	return true, ""
}

// hookSender runs hook on every delivery, then accepts.
type hookSender struct {
	acceptingSender
	hook func()
}

func (s *hookSender) Send(ctx context.Context, body []byte) error {
	if s.hook != nil {
		s.hook()
	}
	return s.acceptingSender.Send(ctx, body)
}

// TestMembershipChangeDuringARequest: a request that merged samples while
// the membership changed is answered 503, so that its sender retries it
// under the new view (the moved outputs ended at the change and dropped
// what it gave them); without a change it succeeds.
func TestMembershipChangeDuringARequest(t *testing.T) {
	peer := newFakePeer(t)
	clock := &testClock{t: time.UnixMilli(fuzzEpoch)}
	cfg, err := config.Parse([]byte(clusterFuzzConfig))
	if err != nil {
		t.Fatal(err)
	}
	other := strings.TrimPrefix(peer.URL, "http://")
	reg := prometheus.NewRegistry()
	cl, err := cluster.New(cluster.Config{Peers: []string{clusterSelf, other}, Self: clusterSelf, Now: clock.Now}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	sender := &hookSender{}
	g, err := New(cfg, Options{Registerer: reg, Now: clock.Now, Cluster: cl,
		NewSender: func(config.DownstreamConfig, prometheus.Registerer, *slog.Logger) (Sender, error) { return sender, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	clock.Add(10 * time.Second)
	// Workloads this replica owns, two pods each: they collapse.
	var mine []string
	for k := 0; len(mine) < 3; k++ {
		if w := "n/w" + string(rune('a'+k%26)) + strings.Repeat("x", k/26); g.WorkloadOwner(w) == clusterSelf {
			mine = append(mine, w)
		}
	}
	body := func(ts int64) *wire.Request {
		var wr prompb.WriteRequest
		for _, w := range mine {
			app := strings.TrimPrefix(w, "n/")
			for _, pod := range []string{"p1", "p2"} {
				wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
					Labels:  []prompb.Label{{Name: "__name__", Value: "req_total"}, {Name: "app", Value: app}, {Name: "namespace", Value: "n"}, {Name: "pod", Value: pod}},
					Samples: []prompb.Sample{{Value: 1, Timestamp: ts}},
				})
			}
			// One that passes through, so that the request is delivered.
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: "g_" + app}, {Name: "app", Value: app}, {Name: "namespace", Value: "n"}},
				Samples: []prompb.Sample{{Value: 1, Timestamp: ts}},
			})
		}
		return decode(t, &wr)
	}
	res, err := g.Process(context.Background(), body(fuzzEpoch+10_000))
	if err != nil || res.Merged == 0 {
		t.Fatalf("without a change: %v, %+v; want success with merged samples", err, res)
	}
	// The peer fails; while the next request is delivered, it has been
	// failing for the peer timeout and leaves the view.
	cl.NoteFailure(other)
	sender.hook = func() {
		clock.Add(cluster.DefaultPeerTimeout + time.Second)
		cl.Recheck()
	}
	res, err = g.Process(context.Background(), body(fuzzEpoch+20_000))
	var ferr *forward.Error
	if !errors.As(err, &ferr) || ferr.Status != http.StatusServiceUnavailable || !strings.Contains(ferr.Msg, "membership changed") {
		t.Fatalf("a change during the request: %v (%+v); want a 503 saying the membership changed", err, res)
	}
	if v := cl.View(); len(v.Members) != 1 {
		t.Fatalf("view %v, want the peer gone", v.Members)
	}
}
