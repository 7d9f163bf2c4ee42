// Package cluster lets several Cardinal replicas behave as one: every
// replica knows the member list, and each workload has exactly one owner,
// chosen by rendezvous hashing of its key over the live members. The owner
// applies caps, merging and sampling to the workload's series and forwards
// them downstream; the other replicas hand those series to it over an
// internal remote-write call (see Peer).
//
// There is no consensus protocol. Membership comes from what the platform
// provides, a static list or a DNS name (a Kubernetes headless Service)
// refreshed periodically, and every replica probes the others:
//
//   - A member that stops answering is reported down at once; its share is
//     answered 503, so senders retry, until it has been down for the peer
//     timeout. Then it leaves the view and its workloads move to the others.
//   - Rendezvous hashing moves only the workloads of the member that joined
//     or left: about 1/N of them.
//   - After a change the new owner of a moved workload refuses it (503) for
//     the handover delay: by then every replica has seen the change and the
//     old owner has stopped emitting, so no output is emitted by two
//     replicas at once.
//
// Every forwarded request names the view it was routed under (ViewHeader);
// a replica whose view differs answers 503, so a request is never merged
// under two different opinions of who owns what.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Defaults of Config.
const (
	DefaultRefreshInterval = 15 * time.Second
	DefaultProbeInterval   = time.Second
	DefaultPeerTimeout     = 30 * time.Second
	DefaultHandoverDelay   = 5 * time.Second
)

// DNSPrefix marks a member-list entry to resolve: dns+NAME:PORT stands for
// every A and AAAA address of NAME, with PORT.
const DNSPrefix = "dns+"

// Config configures a replica's membership.
type Config struct {
	// Peers are the members: HOST:PORT entries, or dns+NAME:PORT.
	Peers []string
	// Self is this replica's address as the member list names it.
	Self string
	// RefreshInterval is how often DNS entries are resolved again.
	RefreshInterval time.Duration
	// ProbeInterval is how often every other member is probed.
	ProbeInterval time.Duration
	// PeerTimeout is how long a member may fail its probes before it is
	// taken out of the view.
	PeerTimeout time.Duration
	// HandoverDelay is how long the new owner of a moved workload answers
	// 503 for it.
	HandoverDelay time.Duration
	// Resolver resolves DNS entries; nil means net.DefaultResolver.
	Resolver interface {
		LookupHost(ctx context.Context, host string) ([]string, error)
	}
	// Now is the clock; nil means time.Now. It must be the gateway's:
	// handovers are timed on it.
	Now func() time.Time
}

// ParsePeers splits a --cluster.peers value.
func ParsePeers(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Validate checks c and fills in its defaults.
func (c *Config) Validate() error {
	if len(c.Peers) == 0 {
		return errors.New("--cluster.peers: no members")
	}
	if c.Self == "" {
		return errors.New("--cluster.self is required with --cluster.peers: this replica's HOST:PORT as the member list names it")
	}
	if _, _, err := net.SplitHostPort(c.Self); err != nil {
		return fmt.Errorf("--cluster.self=%q: %v", c.Self, err)
	}
	dns := false
	for _, p := range c.Peers {
		hp := strings.TrimPrefix(p, DNSPrefix)
		if _, port, err := net.SplitHostPort(hp); err != nil || port == "" {
			return fmt.Errorf("--cluster.peers entry %q: want HOST:PORT or %sNAME:PORT", p, DNSPrefix)
		}
		dns = dns || strings.HasPrefix(p, DNSPrefix)
	}
	// With a DNS entry, self is one of its addresses (or soon will be).
	if !dns && !slices.Contains(c.Peers, c.Self) {
		return fmt.Errorf("--cluster.self=%s is not in --cluster.peers (%s): every replica must be in the member list, named the same way by all", c.Self, strings.Join(c.Peers, ","))
	}
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = DefaultRefreshInterval
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.PeerTimeout <= 0 {
		c.PeerTimeout = DefaultPeerTimeout
	}
	if c.HandoverDelay < 0 {
		return errors.New("--cluster.handover-delay must not be negative")
	}
	if c.HandoverDelay == 0 {
		c.HandoverDelay = DefaultHandoverDelay
	}
	if c.HandoverDelay < 2*c.ProbeInterval {
		return fmt.Errorf("--cluster.handover-delay (%s) must be at least twice --cluster.probe-interval (%s): it covers the time the other replicas take to see a change", c.HandoverDelay, c.ProbeInterval)
	}
	return nil
}

// View is one opinion of the membership: the live members, sorted, and
// what it replaced. It is immutable.
type View struct {
	// ID identifies the member set; two replicas agree on ownership
	// exactly when their IDs are equal.
	ID uint64
	// Members are the members' addresses, sorted; Self indexes them.
	Members []string
	Self    int
	seeds   []uint64
	// down marks the members currently failing their probes (still
	// members: their share is answered 503).
	down []bool
	// Since is when the member set last changed (not the down marks);
	// prev is the view before that change, nil at start.
	Since time.Time
	prev  *View
	delay time.Duration
}

func newView(members []string, self string, prev *View, now time.Time, delay time.Duration) *View {
	members = slices.Clone(members)
	slices.Sort(members)
	members = slices.Compact(members)
	v := &View{Members: members, Self: -1, prev: prev, Since: now, delay: delay, down: make([]bool, len(members))}
	d := xxhash.New()
	for i, m := range members {
		if m == self {
			v.Self = i
		}
		v.seeds = append(v.seeds, xxhash.Sum64String(m))
		_, _ = d.WriteString(m)
		_, _ = d.Write([]byte{0xff})
	}
	v.ID = d.Sum64()
	return v
}

// score is the rendezvous weight of a key for a member: a strong mix of
// both, so that every member wins an equal share and removing one moves
// only its own.
func score(seed, key uint64) uint64 {
	x := seed ^ key
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Owner returns the index in Members of the owner of key.
func (v *View) Owner(key uint64) int {
	best, bestScore := 0, uint64(0)
	for i, s := range v.seeds {
		if sc := score(s, key); i == 0 || sc > bestScore {
			best, bestScore = i, sc
		}
	}
	return best
}

// Down reports whether member i is failing its probes.
func (v *View) Down(i int) bool { return v.down[i] }

// Arriving reports whether key moved to this replica in the last change,
// less than the handover delay before now: its old owner may still be
// emitting it.
func (v *View) Arriving(key uint64, now time.Time) bool {
	if now.Sub(v.Since) >= v.delay {
		return false
	}
	return v.prev == nil || v.prev.Members[v.prev.Owner(key)] != v.Members[v.Self]
}

// Settling reports whether the last change is less than the handover
// delay old.
func (v *View) Settling(now time.Time) bool { return now.Sub(v.Since) < v.delay }

// Prev returns the view this one replaced (nil at start).
func (v *View) Prev() *View { return v.prev }

// Cluster tracks the membership of one replica. It is safe for concurrent
// use.
type Cluster struct {
	cfg    Config
	logger *slog.Logger
	now    func() time.Time
	probe  *http.Client

	view atomic.Pointer[View]

	// updateMu serializes update (it is taken before mu); subscribers run
	// under it and must not call Recheck.
	updateMu sync.Mutex
	mu       sync.Mutex
	// resolved is the member list before liveness; failing maps a member
	// to when it started failing.
	resolved []string
	failing  map[string]time.Time
	// subscribers are told of every change of the member set.
	subscribers []func(old, cur *View)

	metrics metrics
}

type metrics struct {
	members  prometheus.Gauge
	down     prometheus.Gauge
	changes  prometheus.Counter
	resolveE prometheus.Counter
	settling prometheus.Gauge
}

// New returns the membership of the replica cfg describes, with every
// static member live and DNS entries resolved once. Call Run to keep it
// current.
func New(cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	f := promauto.With(reg)
	c := &Cluster{
		cfg: cfg, logger: logger, now: cfg.Now,
		failing: map[string]time.Time{},
		probe: &http.Client{Timeout: max(cfg.ProbeInterval, 500*time.Millisecond), Transport: &http.Transport{
			MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute,
			DialContext: (&net.Dialer{Timeout: max(cfg.ProbeInterval, 500*time.Millisecond)}).DialContext,
		}},
		metrics: metrics{
			members: f.NewGauge(prometheus.GaugeOpts{
				Name: "cardinal_cluster_members",
				Help: "Replicas in this replica's view of the cluster, itself included (members failing their probes count until --cluster.peer-timeout).",
			}),
			down: f.NewGauge(prometheus.GaugeOpts{
				Name: "cardinal_cluster_members_down",
				Help: "Members of the view failing their probes: their share is answered 503 until they answer again or leave the view.",
			}),
			changes: f.NewCounter(prometheus.CounterOpts{
				Name: "cardinal_cluster_membership_changes_total",
				Help: "Changes of the member set seen by this replica (each moves the workloads of the members that joined or left).",
			}),
			resolveE: f.NewCounter(prometheus.CounterOpts{
				Name: "cardinal_cluster_resolve_errors_total",
				Help: "Failed DNS resolutions of a dns+ member-list entry (the last good answer stays in force).",
			}),
			settling: f.NewGauge(prometheus.GaugeOpts{
				Name: "cardinal_cluster_handover_in_progress",
				Help: "1 while the last membership change is younger than --cluster.handover-delay: workloads that moved here are answered 503.",
			}),
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	members := c.resolve(ctx)
	c.resolved = members
	v := newView(c.withSelf(members), cfg.Self, nil, c.now(), cfg.HandoverDelay)
	c.view.Store(v)
	c.metrics.members.Set(float64(len(v.Members)))
	// A replica that starts answers its workloads 503 for the handover
	// delay (View.Arriving): say so from the first scrape.
	c.metrics.settling.Set(1)
	return c, nil
}

// withSelf adds this replica to a member list that lacks it: a replica
// always owns a share, even while DNS does not list it yet.
func (c *Cluster) withSelf(members []string) []string {
	if !slices.Contains(members, c.cfg.Self) {
		members = append(slices.Clone(members), c.cfg.Self)
	}
	return members
}

// Self is this replica's address.
func (c *Cluster) Self() string { return c.cfg.Self }

// Config returns the configuration in force, defaults filled in.
func (c *Cluster) Config() Config { return c.cfg }

// View returns the view in force.
func (c *Cluster) View() *View { return c.view.Load() }

// Subscribe registers f to be called, from the goroutine that saw it,
// after every change of the member set, one change at a time and in order.
func (c *Cluster) Subscribe(f func(old, cur *View)) {
	c.mu.Lock()
	c.subscribers = append(c.subscribers, f)
	c.mu.Unlock()
}

// resolve returns the member list, DNS entries resolved. An entry that
// fails to resolve keeps its last addresses.
func (c *Cluster) resolve(ctx context.Context) []string {
	var out []string
	for _, p := range c.cfg.Peers {
		if !strings.HasPrefix(p, DNSPrefix) {
			out = append(out, p)
			continue
		}
		host, port, _ := net.SplitHostPort(strings.TrimPrefix(p, DNSPrefix))
		addrs, err := c.cfg.Resolver.LookupHost(ctx, host)
		if err != nil {
			c.metrics.resolveE.Inc()
			c.logger.Warn("cannot resolve cluster members; keeping the last ones", "entry", p, "err", err)
			for _, m := range c.resolved {
				if !slices.Contains(c.cfg.Peers, m) {
					out = append(out, m)
				}
			}
			continue
		}
		for _, a := range addrs {
			out = append(out, net.JoinHostPort(a, port))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Run keeps the view current until ctx ends: it resolves DNS entries every
// refresh interval and probes the other members every probe interval.
func (c *Cluster) Run(ctx context.Context) {
	probe := time.NewTicker(c.cfg.ProbeInterval)
	defer probe.Stop()
	refresh := time.NewTicker(c.cfg.RefreshInterval)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-refresh.C:
			members := c.resolve(ctx)
			c.mu.Lock()
			c.resolved = members
			c.mu.Unlock()
			c.update()
		case <-probe.C:
			c.probeAll(ctx)
			c.update()
		}
	}
}

// probeAll probes every other member once, in parallel.
func (c *Cluster) probeAll(ctx context.Context) {
	c.mu.Lock()
	members := slices.Clone(c.resolved)
	c.mu.Unlock()
	var wg sync.WaitGroup
	results := make([]bool, len(members))
	for i, m := range members {
		if m == c.cfg.Self {
			results[i] = true
			continue
		}
		wg.Go(func() { results[i] = c.probeOne(ctx, m) })
	}
	wg.Wait()
	now := c.now()
	c.mu.Lock()
	for i, m := range members {
		c.noteLocked(m, results[i], now)
	}
	c.mu.Unlock()
}

// probeOne asks member whether it is ready: a replica that is shutting
// down, or has not reached the downstream yet, cannot take its share.
func (c *Cluster) probeOne(ctx context.Context, member string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+member+"/-/ready", nil)
	if err != nil {
		return false
	}
	resp, err := c.probe.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (c *Cluster) noteLocked(member string, ok bool, now time.Time) {
	if ok {
		delete(c.failing, member)
		return
	}
	if _, f := c.failing[member]; !f {
		c.failing[member] = now
	}
}

// NoteFailure records that a call to member failed at the transport: it is
// reported down at once, without waiting for the next probe.
func (c *Cluster) NoteFailure(member string) {
	c.mu.Lock()
	_, was := c.failing[member]
	c.noteLocked(member, false, c.now())
	c.mu.Unlock()
	if !was {
		c.update()
	}
}

// Recheck recomputes the view now from what the probes and forwards last
// saw (Run does it every probe interval).
func (c *Cluster) Recheck() { c.update() }

// update computes the view from the resolved members and their probes, and
// publishes it if it changed.
func (c *Cluster) update() {
	// One update at a time, its subscribers told before the next begins:
	// they must see the changes in the order they were published.
	c.updateMu.Lock()
	defer c.updateMu.Unlock()
	c.mu.Lock()
	now := c.now()
	var live []string
	for _, m := range c.resolved {
		if since, f := c.failing[m]; f && now.Sub(since) >= c.cfg.PeerTimeout && m != c.cfg.Self {
			continue
		}
		live = append(live, m)
	}
	live = c.withSelf(live)
	old := c.view.Load()
	cur := newView(live, c.cfg.Self, old, now, c.cfg.HandoverDelay)
	changed := cur.ID != old.ID
	if !changed {
		// The same members: only the down marks may differ, and the
		// handover clock keeps running.
		cur.prev, cur.Since = old.prev, old.Since
	}
	nDown := 0
	for i, m := range cur.Members {
		if _, f := c.failing[m]; f && m != c.cfg.Self {
			cur.down[i] = true
			nDown++
		}
	}
	if !changed && slices.Equal(cur.down, old.down) {
		c.mu.Unlock()
		c.metrics.settling.Set(b2f(old.Settling(now)))
		return
	}
	c.view.Store(cur)
	subs := slices.Clone(c.subscribers)
	c.mu.Unlock()
	c.metrics.members.Set(float64(len(cur.Members)))
	c.metrics.down.Set(float64(nDown))
	c.metrics.settling.Set(b2f(cur.Settling(now)))
	if !changed {
		return
	}
	c.metrics.changes.Inc()
	c.logger.Info("cluster membership changed", "members", strings.Join(cur.Members, ","), "was", strings.Join(old.Members, ","))
	for _, f := range subs {
		f(old, cur)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Share returns the fraction of keys that two views assign to different
// members, measured on n pseudo-random keys: what a change moves.
func Share(a, b *View, n int) float64 {
	moved := 0
	for i := range n {
		k := score(0x9e3779b97f4a7c15, uint64(i))
		if a.Members[a.Owner(k)] != b.Members[b.Owner(k)] {
			moved++
		}
	}
	return float64(moved) / float64(n)
}

// formatID renders a view ID as the header carries it.
func formatID(id uint64) string { return strconv.FormatUint(id, 16) }

// ParseID reads a view ID from ViewHeader.
func ParseID(s string) (uint64, bool) {
	id, err := strconv.ParseUint(s, 16, 64)
	return id, err == nil
}
