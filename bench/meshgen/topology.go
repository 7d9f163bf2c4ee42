package meshgen

import (
	"strconv"
	"strings"
)

// mesh says which proxy a namespace runs.
type mesh uint8

const (
	meshIstio mesh = iota
	meshLinkerd
)

// proto is the protocol of one call edge.
type proto uint8

const (
	protoHTTP proto = iota
	protoGRPC
	protoTCP
)

// nsSpec is one namespace of the synthetic cluster: its mesh, the apps that
// live in it and the app-level call graph (caller → callee, by app index).
type nsSpec struct {
	name  string
	mesh  mesh
	apps  []appSpec
	calls [][2]int
}

type appSpec struct {
	name  string
	port  int
	proto proto // protocol callers use to reach this app
}

// cluster is the fixed catalogue the topology is drawn from, Istio and
// Linkerd namespaces interleaved. The names follow
// well-known demo applications (Istio Bookinfo, Linkerd emojivoto and
// booksapp, Google's Online Boutique) and common platform services.
var cluster = []nsSpec{
	{name: "bookinfo", mesh: meshIstio, apps: []appSpec{
		{"productpage", 9080, protoHTTP}, {"reviews", 9080, protoHTTP}, {"ratings", 9080, protoHTTP},
		{"details", 9080, protoHTTP}, {"mongodb", 27017, protoTCP},
	}, calls: [][2]int{{0, 1}, {0, 3}, {1, 2}, {2, 4}}},
	{name: "emojivoto", mesh: meshLinkerd, apps: []appSpec{
		{"web", 8080, protoHTTP}, {"emoji", 8080, protoGRPC}, {"voting", 8080, protoGRPC}, {"vote-bot", 8080, protoHTTP},
	}, calls: [][2]int{{0, 1}, {0, 2}, {3, 0}}},
	{name: "payments", mesh: meshIstio, apps: []appSpec{
		{"payment-gateway", 8080, protoHTTP}, {"ledger", 50051, protoGRPC}, {"fraud-check", 50051, protoGRPC},
		{"billing", 8080, protoHTTP}, {"postgres", 5432, protoTCP}, {"invoices", 8080, protoHTTP},
	}, calls: [][2]int{{0, 1}, {0, 2}, {3, 1}, {1, 4}}},
	{name: "checkout", mesh: meshIstio, apps: []appSpec{
		{"frontend", 8080, protoHTTP}, {"checkoutservice", 5050, protoGRPC}, {"cartservice", 7070, protoGRPC},
		{"shippingservice", 50051, protoGRPC}, {"redis-cart", 6379, protoTCP}, {"currencyservice", 7000, protoGRPC},
	}, calls: [][2]int{{0, 1}, {0, 2}, {1, 3}, {2, 4}}},
	{name: "booksapp", mesh: meshLinkerd, apps: []appSpec{
		{"webapp", 7000, protoHTTP}, {"authors", 7001, protoHTTP}, {"books", 7002, protoHTTP}, {"traffic", 7000, protoHTTP},
	}, calls: [][2]int{{0, 1}, {0, 2}, {2, 1}, {3, 0}}},
	{name: "catalog", mesh: meshIstio, apps: []appSpec{
		{"catalog-api", 8080, protoHTTP}, {"productcatalogservice", 3550, protoGRPC}, {"pricing", 8080, protoHTTP},
		{"image-resizer", 8080, protoHTTP}, {"elasticsearch", 9200, protoHTTP},
	}, calls: [][2]int{{0, 1}, {0, 2}, {1, 4}}},
	{name: "identity", mesh: meshIstio, apps: []appSpec{
		{"auth-service", 8080, protoHTTP}, {"user-profile", 8080, protoHTTP}, {"session-store", 6379, protoTCP},
		{"token-issuer", 9090, protoGRPC},
	}, calls: [][2]int{{0, 3}, {0, 2}, {1, 2}}},
	{name: "notifications", mesh: meshLinkerd, apps: []appSpec{
		{"notifier", 8080, protoHTTP}, {"email-sender", 8080, protoHTTP}, {"sms-sender", 8080, protoHTTP},
		{"push-gateway", 8080, protoGRPC},
	}, calls: [][2]int{{0, 1}, {0, 2}, {0, 3}}},
	{name: "shipping", mesh: meshIstio, apps: []appSpec{
		{"shipping-api", 8080, protoHTTP}, {"carrier-adapter", 8080, protoHTTP}, {"tracking", 50051, protoGRPC},
		{"label-printer", 8080, protoHTTP}, {"kafka", 9092, protoTCP},
	}, calls: [][2]int{{0, 1}, {0, 2}, {2, 4}}},
	{name: "search", mesh: meshIstio, apps: []appSpec{
		{"search-api", 8080, protoHTTP}, {"query-planner", 50051, protoGRPC}, {"indexer", 8080, protoHTTP},
		{"suggest", 8080, protoHTTP},
	}, calls: [][2]int{{0, 1}, {0, 3}, {1, 2}}},
	{name: "analytics", mesh: meshLinkerd, apps: []appSpec{
		{"events-collector", 8080, protoHTTP}, {"sessionizer", 8080, protoGRPC}, {"clickhouse-proxy", 8123, protoHTTP},
		{"reporting", 8080, protoHTTP},
	}, calls: [][2]int{{0, 1}, {1, 2}, {3, 2}}},
	{name: "inventory", mesh: meshIstio, apps: []appSpec{
		{"inventory-api", 8080, protoHTTP}, {"stock-reservations", 50051, protoGRPC}, {"warehouse-sync", 8080, protoHTTP},
		{"mysql", 3306, protoTCP},
	}, calls: [][2]int{{0, 1}, {1, 3}, {2, 3}}},
}

// workload is one Deployment: an app at a version, possibly a numbered
// shard of the app when there are more workloads than catalogue entries.
type workload struct {
	ns      *nsSpec
	app     string // app label and canonical service, e.g. "reviews" or "reviews-2"
	version string // "v1", "v2", "v3"
	name    string // Deployment name, e.g. "reviews-v2"
	spec    *appSpec
	appIdx  int
	shard   int
	pods    []pod
	cluster string // mesh cluster id
}

type pod struct {
	name string // e.g. "reviews-v2-7c9f8b5d4-x2kqp"
	ip   string
}

// edge is one workload calling another.
type edge struct {
	src, dst *workload
}

const podNameAlphabet = "bcdfghjklmnpqrstvwxz2456789" // Kubernetes' SafeEncodeString alphabet

// buildTopology lays out n workloads over the namespaces in chunks of three
// (so that even a handful of workloads forms call chains, and six cover both
// meshes) and derives the workload-level call edges from the app-level call graphs. A
// caller reaches one version of each callee app in the same shard; which
// version is a deterministic function of the seed.
func buildTopology(n, podsPer int, seed uint64) ([]*workload, []edge) {
	perNS := make([][]*workload, len(cluster))
	ws := make([]*workload, 0, n)
	podIdx := 0
	for i := 0; i < n; i++ {
		nsi := i / 3 % len(cluster)
		ns := &cluster[nsi]
		k := len(perNS[nsi]) // k-th workload in this namespace
		appIdx := k % len(ns.apps)
		round := k / len(ns.apps)
		shard := round / 3
		app := ns.apps[appIdx].name
		if shard > 0 {
			app += "-" + strconv.Itoa(shard+1)
		}
		version := "v" + strconv.Itoa(round%3+1)
		w := &workload{
			ns: ns, app: app, version: version, name: app + "-" + version,
			spec: &ns.apps[appIdx], appIdx: appIdx, shard: shard, cluster: "Kubernetes",
		}
		rsHash := hashString(mix(seed, uint64(i), 0x5eed), 10)
		for p := 0; p < podsPer; p++ {
			suffix := hashString(mix(seed, uint64(i), uint64(p)), 5)
			w.pods = append(w.pods, pod{
				name: w.name + "-" + rsHash + "-" + suffix,
				ip:   podIP(podIdx),
			})
			podIdx++
		}
		ws = append(ws, w)
		perNS[nsi] = append(perNS[nsi], w)
	}

	var edges []edge
	for _, src := range ws {
		for _, c := range src.ns.calls {
			if c[0] != src.appIdx {
				continue
			}
			// Candidates: every version of the callee app in the caller's shard.
			var cand []*workload
			for _, w := range perNS[indexOfNS(src.ns)] {
				if w.appIdx == c[1] && w.shard == src.shard {
					cand = append(cand, w)
				}
			}
			if len(cand) == 0 {
				continue
			}
			dst := cand[mix(seed, uint64(len(edges)), 0xed6e)%uint64(len(cand))]
			edges = append(edges, edge{src: src, dst: dst})
		}
	}
	return ws, edges
}

func indexOfNS(ns *nsSpec) int {
	for i := range cluster {
		if &cluster[i] == ns {
			return i
		}
	}
	panic("meshgen: unknown namespace " + ns.name)
}

// podIP returns a unique pod address in 10.244.0.0/14 style ranges.
func podIP(i int) string {
	host := i%254 + 1
	subnet := i / 254
	return "10." + strconv.Itoa(244+subnet/256%12) + "." + strconv.Itoa(subnet%256) + "." + strconv.Itoa(host)
}

// hashString returns n characters of Kubernetes' pod-name alphabet derived from h.
func hashString(h uint64, n int) string {
	var sb strings.Builder
	sb.Grow(n)
	for i := 0; i < n; i++ {
		h = splitmix(h)
		sb.WriteByte(podNameAlphabet[h%uint64(len(podNameAlphabet))])
	}
	return sb.String()
}

func (w *workload) serviceFQDN() string {
	return w.app + "." + w.ns.name + ".svc.cluster.local"
}

func (w *workload) principal() string {
	return "spiffe://cluster.local/ns/" + w.ns.name + "/sa/" + w.app
}

// linkerdIdentity is the TLS identity Linkerd's proxy reports (server_id, client_id).
func (w *workload) linkerdIdentity() string {
	return w.app + "." + w.ns.name + ".serviceaccount.identity.linkerd.cluster.local"
}
