package gateway

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardinal-gateway/cardinal/cardinality"
	"github.com/cardinal-gateway/cardinal/cluster"
	"github.com/cardinal-gateway/cardinal/forward"
	"github.com/cardinal-gateway/cardinal/limiter"
	"github.com/cardinal-gateway/cardinal/wire"
)

// Ownership in a cluster (package cluster): route hands every series whose
// workload another replica owns to that replica, with its labels as they
// came, and Process forwards those parts while it delivers its own share.
// The sender is answered once every part has been answered, with the worst
// status: a retryable one if any part must be retried, else a rejection if
// any part was refused, else success.

// peerPart is the share of one request that one peer owns.
type peerPart struct {
	member  string
	req     wire.Request // only Series and Metadata are set
	raw     []byte
	body    []byte
	samples int
	out     cluster.Outcome
}

// clusterWork is a request's cluster bookkeeping, in its workspace.
type clusterWork struct {
	view  *cluster.View
	parts []peerPart // by member index
	// labels holds the original labels of the series handed to peers.
	labels []wire.Label
	// arriving and down count the samples of workloads that just moved
	// here, and of workloads whose owner is failing its probes.
	arriving, down int
	downPeer       string
	keyBuf         []byte
	// names are the labels of the ownership key (ownerLabels); route
	// identifies the view and them, as forwarded requests carry it.
	names []string
	route uint64
	// skipCache: the request's view is not the one the route cache's
	// routes of its state's generation were computed under (a change is
	// being published, see state.viewID).
	skipCache bool
	wg        sync.WaitGroup
}

// ownerLabels are the labels whose values make the ownership key: the
// limiter's workload labels, else the estimates'.
func ownerLabels(st *state, lim *limiter.Limiter) []string {
	if names := lim.Settings().WorkloadLabels; len(names) > 0 {
		return names
	}
	if st.est != nil {
		return st.est.workloadLabels
	}
	return nil
}

func (cw *clusterWork) reset(v *cluster.View, st *state, lim *limiter.Limiter) {
	cw.view = v
	cw.skipCache = v.ID != st.viewID
	cw.names = ownerLabels(st, lim)
	// Replicas agree on ownership when they agree on the members and on
	// the labels of the key: a config rollout that changes them must not
	// merge one workload at two owners.
	cw.route = v.ID
	for _, n := range cw.names {
		cw.route = cw.route*31 ^ xxhash.Sum64String(n)
	}
	if cap(cw.parts) < len(v.Members) {
		cw.parts = make([]peerPart, len(v.Members))
	}
	cw.parts = cw.parts[:len(v.Members)]
	for i := range cw.parts {
		p := &cw.parts[i]
		clear(p.req.Series)
		p.req.Series, p.req.Metadata = p.req.Series[:0], nil
		p.member, p.samples, p.out = v.Members[i], 0, cluster.Outcome{}
		if cap(p.raw) > maxPooledBuffer || cap(p.body) > maxPooledBuffer {
			p.raw, p.body = nil, nil // one huge request must not pin its memory
		}
	}
	cw.labels = cw.labels[:0]
	cw.arriving, cw.down, cw.downPeer = 0, 0, ""
}

// ownerKey is the identity of ls's workload for ownership: the values of
// the workload labels, joined as the limiter joins them, so that all series
// of a workload (and its overflow series) have one owner and its cap is
// exact. A series without any of them is owned by its metric name, which
// keeps every output and every guard group on one replica. Without
// workload labels ownership is per output (outHash).
func (g *Gateway) ownerKey(cw *clusterWork, ls []wire.Label, outHash uint64) uint64 {
	names := cw.names
	if len(names) == 0 {
		return outHash
	}
	cw.keyBuf = cw.keyBuf[:0]
	found := false
	for i, n := range names {
		if i > 0 {
			cw.keyBuf = append(cw.keyBuf, '/')
		}
		if v := wire.GetLabel(ls, n); v != nil {
			cw.keyBuf = append(cw.keyBuf, v...)
			found = true
		}
	}
	if !found {
		cw.keyBuf = append(cw.keyBuf[:0], "\xff"...)
		cw.keyBuf = append(cw.keyBuf, wire.GetLabel(ls, "__name__")...)
	}
	return xxhash.Sum64(cw.keyBuf)
}

// WorkloadOwner returns the owner of a workload named as the limiter
// names it (the workload labels' values joined by "/").
func (g *Gateway) WorkloadOwner(workload string) string {
	if g.cluster == nil {
		return ""
	}
	if workload == limiter.UnknownWorkload {
		return "" // owned by metric name, not as one workload
	}
	v := g.cluster.View()
	return v.Members[v.Owner(xxhash.Sum64String(workload))]
}

// claimed decides where a series whose ownership key is key goes: it
// reports true when this replica processes it. Otherwise the series has
// been handed to its owner's part (labels orig, as they came), or counted
// as arriving or down, and the caller drops it from the request. An input
// handed over is remembered in the route cache, so that its next samples
// are handed over without relabeling.
func (g *Gateway) claimed(st *state, ws *workspace, in, key uint64, orig []wire.Label, s *wire.Series, n int, now time.Time, nowSec uint32) bool {
	cw := &ws.cluster
	v := cw.view
	owner := v.Owner(key)
	if owner == v.Self {
		if v.Arriving(key, now) {
			cw.arriving += n
			return false
		}
		return true
	}
	if ws.fromPeer {
		// Routed by a peer under the same view and key labels: ours
		// whatever the hash says (it cannot say otherwise), never
		// forwarded twice.
		return true
	}
	g.handOver(ws, owner, orig, s, n)
	if !cw.skipCache {
		g.routes.put(in, newPeerRoute(st.gen, owner, nowSec))
	}
	return false
}

// handOver adds s, with labels orig, to the part of the member of index
// owner, or counts it as down when that member is failing its probes.
func (g *Gateway) handOver(ws *workspace, owner int, orig []wire.Label, s *wire.Series, n int) {
	cw := &ws.cluster
	if cw.view.Down(owner) {
		cw.down += n
		cw.downPeer = cw.view.Members[owner]
		return
	}
	start := len(cw.labels)
	cw.labels = append(cw.labels, orig...)
	p := &cw.parts[owner]
	ps := *s
	ps.Labels = cw.labels[start:len(cw.labels):len(cw.labels)]
	p.req.Series = append(p.req.Series, ps)
	p.samples += n
}

// peerTimeout bounds a forward to a peer: its own delivery downstream
// takes up to downstream.timeout.
func (g *Gateway) peerTimeout() time.Duration {
	return time.Duration(g.state.Load().cfg.Downstream.Timeout) + 5*time.Second
}

// sendParts starts forwarding every non-empty part; clusterResult waits
// for their answers.
func (g *Gateway) sendParts(ctx context.Context, ws *workspace, md []wire.Metadata) {
	cw := &ws.cluster
	for i := range cw.parts {
		p := &cw.parts[i]
		if len(p.req.Series) == 0 {
			continue
		}
		// Metadata is small and says how the owner merges: every part
		// carries the request's.
		p.req.Metadata = md
		p.raw = p.req.MarshalAppend(p.raw[:0])
		p.body = snappy.Encode(p.body[:cap(p.body)], p.raw)
		cw.wg.Add(1)
		go func() {
			defer cw.wg.Done()
			pctx, cancel := context.WithTimeout(ctx, g.peerTimeout())
			defer cancel()
			p.out = g.forwarder.Send(pctx, p.member, cw.route, p.body, p.samples)
		}()
	}
}

// clusterResult folds the parts' answers into the request's: the samples
// the owners acknowledged go to res, and the worst answer is returned.
func (g *Gateway) clusterResult(ws *workspace, res *Result, local error) error {
	cw := &ws.cluster
	cw.wg.Wait()
	var retry, reject []string
	var retryAfter time.Duration
	for i := range cw.parts {
		p := &cw.parts[i]
		if p.samples == 0 {
			continue
		}
		switch o := &p.out; {
		case o.OK():
			res.ToPeers += p.samples
		case o.Status >= 400 && o.Status < 500 && o.Status != http.StatusTooManyRequests:
			// The owner delivered the rest of its part and refused what
			// no receiver accepts: the sender must not resend it.
			res.ToPeers += p.samples
			reject = append(reject, fmt.Sprintf("replica %s: %s", p.member, o.Msg))
		default:
			retryAfter = max(retryAfter, o.RetryAfter)
			if o.Status == 0 {
				retry = append(retry, fmt.Sprintf("replica %s, which owns %d samples of this request, is unreachable (%s)", p.member, p.samples, o.Msg))
			} else {
				retry = append(retry, fmt.Sprintf("replica %s answered %d for %d samples of this request: %s", p.member, o.Status, p.samples, o.Msg))
			}
		}
	}
	if cw.down > 0 {
		g.forwarder.NoteDown(cw.downPeer, cw.down)
		retry = append(retry, fmt.Sprintf("%d samples belong to workloads of replica %s, which is failing its probes: retry until it is back or leaves the cluster", cw.down, cw.downPeer))
	}
	reason := ""
	if cw.arriving > 0 {
		reason = cluster.ErrHandover
		retry = append(retry, fmt.Sprintf("%d samples belong to workloads that just moved to this replica (%s); it takes them in %s, once their old owner has stopped", cw.arriving, g.cluster.Self(), g.cluster.Config().HandoverDelay))
		retryAfter = max(retryAfter, time.Second)
	}
	if len(retry) > 0 {
		if ferr, ok := local.(*forward.Error); ok && ferr.Status >= 500 {
			retry = append([]string{ferr.Error()}, retry...)
		}
		return &forward.Error{Status: http.StatusServiceUnavailable, RetryAfter: max(retryAfter, time.Second), Reason: reason, Msg: strings.Join(retry, "; ")}
	}
	if local != nil {
		return local
	}
	if len(reject) > 0 {
		return &forward.Error{Status: http.StatusBadRequest, Msg: strings.Join(reject, "; ")}
	}
	return nil
}

// checkViewKept turns a success into a 503 when the membership changed
// while the request was processed and it absorbed samples into merged
// outputs: the outputs of workloads that moved ended at the change, and
// what the request gave them was dropped (merge.Merger.EndWhere). Its
// retry goes to the new owners; what it gave the rest is recognised by its
// timestamps and counted once.
func (g *Gateway) checkViewKept(ws *workspace, res *Result, err error) error {
	if err != nil || res.Merged == 0 || g.cluster.View().ID == ws.cluster.view.ID {
		return err
	}
	return &forward.Error{Status: http.StatusServiceUnavailable, RetryAfter: time.Second,
		Msg: "the cluster's membership changed while this request was processed; retry, for its new owners"}
}

// checkOrigin refuses a request a peer routed under another view: merged
// under two opinions of who owns what, a workload could get two owners.
func (g *Gateway) checkOrigin(ctx context.Context, ws *workspace) error {
	o, ok := cluster.OriginOf(ctx)
	ws.fromPeer = ok
	if !ok {
		return nil
	}
	if g.cluster == nil {
		return &forward.Error{Status: http.StatusServiceUnavailable, RetryAfter: time.Second, Msg: fmt.Sprintf("forwarded by replica %s, but this Cardinal is not in a cluster", o.From)}
	}
	if cw := &ws.cluster; o.View != cw.route {
		return &forward.Error{Status: http.StatusServiceUnavailable, RetryAfter: time.Second, Reason: cluster.ErrView,
			Msg: fmt.Sprintf("replica %s routed this request under another view of the cluster than this replica's (%s: members %s, workload labels %s); retry once the membership has settled (or the configuration rollout has finished)",
				o.From, g.cluster.Self(), strings.Join(cw.view.Members, ","), strings.Join(cw.names, ","))}
	}
	return nil
}

// onViewChange is called after every change of the member set: the routes
// cached under the old view die, and the merged outputs of workloads that
// moved away end here at once (the new owner starts them after the
// handover delay).
func (g *Gateway) onViewChange(old, cur *cluster.View) {
	// The outputs this replica starts from now on may have been emitted
	// by their old owner until it saw the change: the handover delay
	// bounds when that was.
	g.merger.RaiseFloor(cur.Since.Add(g.cluster.Config().HandoverDelay).UnixMilli())
	g.bumpGen()
	cw := clusterWork{names: ownerLabels(g.state.Load(), g.limiter)}
	ended := g.merger.EndWhere(func(out uint64, ls []wire.Label) bool {
		return cur.Owner(g.ownerKey(&cw, ls, out)) != cur.Self
	})
	g.logger.Info("cluster ownership moved", "members", len(cur.Members), "was", len(old.Members),
		"moved_share", fmt.Sprintf("%.3f", cluster.Share(old, cur, 4096)), "merged_outputs_ended", ended)
}

// bumpGen republishes the state under a new generation: every cached route
// is re-decided.
func (g *Gateway) bumpGen() {
	g.applyMu.Lock()
	old := g.state.Load()
	ns := *old
	ns.gen = g.gens.Add(1)
	ns.viewID = g.cluster.View().ID
	g.state.Store(&ns)
	g.applyMu.Unlock()
	g.routes.clear()
}

// Cluster returns the cluster this replica is in, nil when alone.
func (g *Gateway) Cluster() *cluster.Cluster { return g.cluster }

// ownedCollector exposes cardinal_owned_workloads: the workloads this
// replica tracks (the limiter's, else the estimates') that it owns under
// the view in force. Series of other workloads never reach its limiter;
// those that moved away leave the count at once, before the limiter
// forgets them.
func (g *Gateway) ownedCollector() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cardinal_owned_workloads",
		Help: "Workloads this replica of the cluster owns and has seen (by limits.workload_labels, else the estimates' workload labels): it applies their caps and merges their series.",
	}, func() float64 {
		return float64(len(g.OwnedWorkloads()))
	})
}

// OwnedWorkloads lists the workloads this replica tracks and owns.
func (g *Gateway) OwnedWorkloads() []string {
	var names []string
	if g.limiter.Settings().Enabled() {
		for _, r := range g.limiter.Cardinality(0) {
			names = append(names, r.Workload)
		}
	} else if est := g.est.est.Load(); est != nil && g.state.Load().est != nil {
		for _, w := range cardinality.Workloads(est.Report(g.now().UnixMilli(), cardinality.Filter{TopLabels: 1})) {
			names = append(names, w.Workload)
		}
	}
	if g.cluster == nil {
		return names
	}
	self := g.cluster.Self()
	out := names[:0]
	for _, n := range names {
		// Series without workload labels are owned by metric name, shared
		// by every replica: not a workload any one of them owns.
		if n != limiter.UnknownWorkload && g.WorkloadOwner(n) == self {
			out = append(out, n)
		}
	}
	return out
}
