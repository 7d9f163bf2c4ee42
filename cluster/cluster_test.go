package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func view(self string, members ...string) *View {
	return newView(members, self, nil, time.Unix(0, 0), time.Second)
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Self: "a:1"}, "no members"},
		{Config{Peers: []string{"a:1"}}, "--cluster.self is required"},
		{Config{Peers: []string{"a:1", "b"}, Self: "a:1"}, `entry "b"`},
		{Config{Peers: []string{"a:1", "b:2"}, Self: "c:3"}, "not in --cluster.peers"},
		{Config{Peers: []string{"a:1"}, Self: "a:1", ProbeInterval: time.Second, HandoverDelay: time.Second}, "at least twice"},
		{Config{Peers: []string{"dns+svc.ns:9091"}, Self: "10.0.0.1:9091"}, ""},
		{Config{Peers: []string{"a:1", "b:2"}, Self: "b:2"}, ""},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		}
	}
	c := Config{Peers: []string{"a:1"}, Self: "a:1"}
	if err := c.Validate(); err != nil || c.PeerTimeout != DefaultPeerTimeout || c.HandoverDelay != DefaultHandoverDelay || c.ProbeInterval != DefaultProbeInterval {
		t.Errorf("defaults not filled in: %+v, %v", c, err)
	}
}

func TestParsePeers(t *testing.T) {
	if got := ParsePeers(" a:1, ,b:2,"); !slices.Equal(got, []string{"a:1", "b:2"}) {
		t.Errorf("ParsePeers = %q", got)
	}
}

// keys returns n well-spread keys, as xxhash workload keys are.
func keys(n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = score(0x243f6a8885a308d3, uint64(i))
	}
	return out
}

func TestOwnershipIsBalancedAndAgreed(t *testing.T) {
	members := []string{"10.0.0.1:9091", "10.0.0.2:9091", "10.0.0.3:9091"}
	a := view(members[0], members...)
	// Another replica lists the members in another order: same view.
	b := view(members[2], members[2], members[0], members[1], members[0])
	if a.ID != b.ID || !slices.Equal(a.Members, b.Members) {
		t.Fatalf("views of the same members differ: %x %v, %x %v", a.ID, a.Members, b.ID, b.Members)
	}
	if a.Members[a.Self] != members[0] || b.Members[b.Self] != members[2] {
		t.Fatalf("self misplaced")
	}
	share := map[string]int{}
	ks := keys(30000)
	for _, k := range ks {
		if a.Members[a.Owner(k)] != b.Members[b.Owner(k)] {
			t.Fatalf("key %x: owners disagree", k)
		}
		share[a.Members[a.Owner(k)]]++
	}
	for m, n := range share {
		if f := float64(n) / float64(len(ks)); f < 0.31 || f > 0.36 {
			t.Errorf("member %s owns %.3f of the keys, want about 1/3", m, f)
		}
	}
}

// TestChangesMoveOnlyTheirShare: rendezvous hashing moves the keys of the
// member that left, and to the member that joined, nothing else.
func TestChangesMoveOnlyTheirShare(t *testing.T) {
	three := view("a:1", "a:1", "b:1", "c:1")
	four := view("a:1", "a:1", "b:1", "c:1", "d:1")
	two := view("a:1", "a:1", "b:1")
	ks := keys(20000)
	joined, left := 0, 0
	for _, k := range ks {
		o3, o4, o2 := three.Members[three.Owner(k)], four.Members[four.Owner(k)], two.Members[two.Owner(k)]
		if o3 != o4 {
			joined++
			if o4 != "d:1" {
				t.Fatalf("key %x moved from %s to %s when d joined", k, o3, o4)
			}
		}
		if o3 != o2 {
			left++
			if o3 != "c:1" {
				t.Fatalf("key %x moved from %s to %s when c left", k, o3, o2)
			}
		}
	}
	if f := float64(joined) / float64(len(ks)); f < 0.22 || f > 0.28 {
		t.Errorf("a fourth member took %.3f of the keys, want about 1/4", f)
	}
	if f := float64(left) / float64(len(ks)); f < 0.30 || f > 0.37 {
		t.Errorf("removing one of three moved %.3f of the keys, want about 1/3", f)
	}
	if f := Share(three, four, 20000); f < 0.22 || f > 0.28 {
		t.Errorf("Share = %.3f, want about 1/4", f)
	}
}

func TestArriving(t *testing.T) {
	t0 := time.Unix(1000, 0)
	old := newView([]string{"a:1", "b:1"}, "a:1", nil, t0, 5*time.Second)
	cur := newView([]string{"a:1"}, "a:1", old, t0.Add(time.Minute), 5*time.Second)
	var fromB, fromA uint64
	for _, k := range keys(1000) {
		if old.Members[old.Owner(k)] == "b:1" {
			fromB = k
		} else {
			fromA = k
		}
	}
	at := cur.Since.Add(time.Second)
	if !cur.Arriving(fromB, at) {
		t.Errorf("a key b owned is not arriving at a one second after b left")
	}
	if cur.Arriving(fromA, at) {
		t.Errorf("a key a always owned is arriving")
	}
	if cur.Arriving(fromB, cur.Since.Add(5*time.Second)) {
		t.Errorf("still arriving after the handover delay")
	}
	// At start every owned key is arriving: the replica does not know who
	// had it before (a restart).
	if !old.Arriving(fromA, t0) || old.Arriving(fromA, t0.Add(5*time.Second)) {
		t.Errorf("at start: arriving during the handover delay only")
	}
}

type fakeResolver struct {
	mu    sync.Mutex
	addrs []string
	err   error
}

func (r *fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if host != "cardinal-peers.monitoring.svc" {
		return nil, fmt.Errorf("unexpected host %q", host)
	}
	return slices.Clone(r.addrs), r.err
}

func TestDNSMembership(t *testing.T) {
	res := &fakeResolver{addrs: []string{"10.0.0.2", "10.0.0.1"}}
	reg := prometheus.NewRegistry()
	c, err := New(Config{Peers: []string{"dns+cardinal-peers.monitoring.svc:9091"}, Self: "10.0.0.1:9091", Resolver: res}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.View().Members; !slices.Equal(got, []string{"10.0.0.1:9091", "10.0.0.2:9091"}) {
		t.Fatalf("members %v", got)
	}
	var changes []string
	c.Subscribe(func(old, cur *View) {
		changes = append(changes, fmt.Sprintf("%d->%d", len(old.Members), len(cur.Members)))
	})
	// A third pod; then DNS fails, and the last answer stays.
	res.addrs = append(res.addrs, "10.0.0.3")
	c.resolved = c.resolve(context.Background())
	c.update()
	res.err = errors.New("SERVFAIL")
	c.resolved = c.resolve(context.Background())
	c.update()
	if got := c.View().Members; len(got) != 3 {
		t.Fatalf("members after a failed resolution %v, want the last 3", got)
	}
	if !slices.Equal(changes, []string{"2->3"}) {
		t.Errorf("changes %v", changes)
	}
	if v := testutil.ToFloat64(c.metrics.resolveE); v != 1 {
		t.Errorf("resolve errors = %v", v)
	}
	// Self missing from DNS (not published yet) is still a member.
	res.err, res.addrs = nil, []string{"10.0.0.2"}
	c.resolved = c.resolve(context.Background())
	c.update()
	if got := c.View().Members; !slices.Equal(got, []string{"10.0.0.1:9091", "10.0.0.2:9091"}) {
		t.Errorf("members %v, want self kept", got)
	}
}

// TestProbesMarkDownThenRemove: a member failing its probes is down at
// once (its share answered 503 by the caller), and leaves the view after
// the peer timeout; when it answers again it is back.
func TestProbesMarkDownThenRemove(t *testing.T) {
	var ready sync.Map
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/-/ready" {
			t.Errorf("probe of %s", r.URL.Path)
		}
		if v, _ := ready.Load("b"); v == false {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		}
	}))
	defer peer.Close()
	b := strings.TrimPrefix(peer.URL, "http://")
	now := time.Unix(5000, 0)
	c, err := New(Config{Peers: []string{"127.0.0.1:1", b}, Self: "127.0.0.1:1", PeerTimeout: 10 * time.Second, ProbeInterval: 100 * time.Millisecond, HandoverDelay: time.Second}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return now }
	var moved []int
	c.Subscribe(func(_, cur *View) { moved = append(moved, len(cur.Members)) })
	ctx := context.Background()
	c.probeAll(ctx)
	c.update()
	v := c.View()
	if bi := slices.Index(v.Members, b); bi < 0 || v.Down(bi) {
		t.Fatalf("b not up: %v", v.Members)
	}
	ready.Store("b", false)
	c.probeAll(ctx)
	c.update()
	v = c.View()
	if bi := slices.Index(v.Members, b); bi < 0 || !v.Down(bi) {
		t.Fatalf("b failing its probe: want it a member, down; %v %v", v.Members, v.down)
	}
	if testutil.ToFloat64(c.metrics.down) != 1 || len(moved) != 0 {
		t.Errorf("down gauge %v, changes %v", testutil.ToFloat64(c.metrics.down), moved)
	}
	now = now.Add(10 * time.Second)
	c.probeAll(ctx)
	c.update()
	if v = c.View(); slices.Contains(v.Members, b) || !slices.Equal(moved, []int{1}) {
		t.Fatalf("b down for the peer timeout: members %v, changes %v", v.Members, moved)
	}
	ready.Store("b", true)
	c.probeAll(ctx)
	c.update()
	if v = c.View(); !slices.Contains(v.Members, b) || !slices.Equal(moved, []int{1, 2}) {
		t.Fatalf("b back: members %v, changes %v", v.Members, moved)
	}
	// A transport failure of a forward marks it down at once.
	c.NoteFailure(b)
	if v = c.View(); !v.Down(slices.Index(v.Members, b)) {
		t.Errorf("NoteFailure did not mark b down")
	}
}

func TestOriginHeaders(t *testing.T) {
	h := http.Header{}
	if _, ok := OriginFromHeaders(h); ok {
		t.Fatal("origin without headers")
	}
	h.Set(FromHeader, "a:1")
	h.Set(ViewHeader, formatID(0xdeadbeef))
	o, ok := OriginFromHeaders(h)
	if !ok || o.From != "a:1" || o.View != 0xdeadbeef {
		t.Fatalf("origin %+v %v", o, ok)
	}
	ctx := WithOrigin(context.Background(), o)
	if got, ok := OriginOf(ctx); !ok || got != o {
		t.Fatalf("OriginOf = %+v %v", got, ok)
	}
}
