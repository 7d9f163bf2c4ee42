package meshgen

import (
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/prompb"
)

// group is a set of units whose series carry the same injected labels when
// the group is chosen: one edge and response code of one pod for request
// metrics, one connection pool or one process for the rest.
type group struct {
	request bool
	units   []unit
}

func (gr *group) seriesCount() int {
	n := 0
	for i := range gr.units {
		n += gr.units[i].seriesCount()
	}
	return n
}

type builder struct {
	g      *Generator
	fs     *families
	seed   uint64
	groups []group
	seen   map[string]bool
	keyBuf []byte
}

func lbl(name, value string) prompb.Label { return prompb.Label{Name: name, Value: value} }

// add appends a unit to gr unless a unit with the same family and labels
// exists already (two edges can map to one label set, e.g. Linkerd inbound
// traffic from two versions of one caller); the first one wins.
func (b *builder) add(gr *group, u unit) {
	slices.SortFunc(u.base, func(x, y prompb.Label) int { return strings.Compare(x.Name, y.Name) })
	k := append(b.keyBuf[:0], u.fam.name...)
	for _, l := range u.base {
		k = append(k, 0xff)
		k = append(k, l.Name...)
		k = append(k, 0xff)
		k = append(k, l.Value...)
	}
	b.keyBuf = k
	if b.seen[string(k)] {
		return
	}
	b.seen[string(k)] = true
	gr.units = append(gr.units, u)
}

func (b *builder) flush(gr *group) {
	if len(gr.units) > 0 {
		b.groups = append(b.groups, *gr)
	}
}

func withLabels(common []prompb.Label, extra ...prompb.Label) []prompb.Label {
	out := make([]prompb.Label, 0, len(common)+len(extra))
	return append(append(out, common...), extra...)
}

// build lays out the topology, creates every unit, chooses the groups that
// carry injected labels and lays the output out family by family.
func (g *Generator) build() {
	b := &builder{g: g, fs: g.fams, seed: g.cfg.Seed, seen: map[string]bool{}}
	ws, edges := buildTopology(g.cfg.Workloads, g.cfg.PodsPerWorkload, g.cfg.Seed)
	for _, w := range ws {
		var out, in []edge
		for _, e := range edges {
			if e.src == w {
				out = append(out, e)
			}
			if e.dst == w {
				in = append(in, e)
			}
		}
		for pi := range w.pods {
			if w.ns.mesh == meshIstio {
				b.istioPod(w, pi, out, in)
			} else {
				b.linkerdPod(w, pi, out, in)
			}
		}
	}
	g.place(b.groups)
}

func (b *builder) k8s(w *workload, pi int, job string, port int) []prompb.Label {
	p := w.pods[pi]
	ls := []prompb.Label{
		lbl("namespace", w.ns.name), lbl("app", w.app), lbl("version", w.version), lbl("pod", p.name),
		lbl("job", job), lbl("instance", p.ip+":"+strconv.Itoa(port)),
	}
	if w.ns.mesh == meshLinkerd {
		ls = append(ls, lbl("deployment", w.name))
	}
	return ls
}

// edgeRate is the requests per step an edge carries per reporting pod.
func (b *builder) edgeRate(e edge) float64 {
	h := unit01(mix(b.seed, edgeKey(e), 0x4a7e))
	return 2 + 60*h*h
}

func edgeKey(e edge) uint64 {
	var h uint64 = 14695981039346656037
	for _, s := range []string{e.src.ns.name, e.src.name, e.dst.name} {
		for i := 0; i < len(s); i++ {
			h = (h ^ uint64(s[i])) * 1099511628211
		}
		h = (h ^ 0xff) * 1099511628211
	}
	return h
}

// counter returns a traffic with the given rate per step and a start value
// of a few hours to days of uptime.
func (b *builder) counter(rate float64, key uint64) traffic {
	uptime := 200 + 20000*unit01(mix(b.seed, key, 0x0b7e))
	return traffic{base: math.Floor(rate * uptime), rate: rate, key: key}
}

func istioEdgeLabels(e edge, reporter string) []prompb.Label {
	s, d := e.src, e.dst
	policy := "mutual_tls"
	if reporter == "source" {
		policy = "unknown" // the client proxy does not know the server's policy
	}
	return []prompb.Label{
		lbl("reporter", reporter),
		lbl("source_workload", s.name), lbl("source_workload_namespace", s.ns.name),
		lbl("source_principal", s.principal()), lbl("source_app", s.app), lbl("source_version", s.version),
		lbl("source_cluster", s.cluster), lbl("source_canonical_service", s.app), lbl("source_canonical_revision", s.version),
		lbl("destination_workload", d.name), lbl("destination_workload_namespace", d.ns.name),
		lbl("destination_principal", d.principal()), lbl("destination_app", d.app), lbl("destination_version", d.version),
		lbl("destination_service", d.serviceFQDN()), lbl("destination_service_name", d.app),
		lbl("destination_service_namespace", d.ns.name), lbl("destination_cluster", d.cluster),
		lbl("destination_canonical_service", d.app), lbl("destination_canonical_revision", d.version),
		lbl("connection_security_policy", policy),
	}
}

func (b *builder) istioPod(w *workload, pi int, out, in []edge) {
	fs := b.fs
	k8s := b.k8s(w, pi, "kubernetes-pods", 15020)
	podKey := mix(b.seed, edgeKey(edge{src: w, dst: w}), uint64(pi))
	type rep struct {
		e        edge
		reporter string
	}
	var reps []rep
	for _, e := range out {
		reps = append(reps, rep{e, "source"})
	}
	for _, e := range in {
		reps = append(reps, rep{e, "destination"})
	}
	for ri, r := range reps {
		key := mix(podKey, edgeKey(r.e), uint64(ri))
		common := withLabels(k8s, istioEdgeLabels(r.e, r.reporter)...)
		if r.e.dst.spec.proto == protoTCP {
			gr := group{}
			common = append(common, lbl("response_flags", "-"))
			conns := b.counter(0.2+2*unit01(mix(key, 7, 0)), mix(key, 7, 1))
			closed := conns
			closed.base = math.Max(0, conns.base-float64(1+mix(key, 7, 2)%4))
			b.add(&gr, unit{fam: fs.istioTCPOpened, mode: modeCounter, tr: conns, scale: 1, base: slices.Clone(common)})
			b.add(&gr, unit{fam: fs.istioTCPClosed, mode: modeCounter, tr: closed, scale: 1, base: slices.Clone(common)})
			bytes := b.counter(1, mix(key, 7, 3))
			b.add(&gr, unit{fam: fs.istioTCPSent, mode: modeCounter, tr: bytes, scale: math.Floor(20000 + 2e6*unit01(mix(key, 7, 4))), base: slices.Clone(common)})
			b.add(&gr, unit{fam: fs.istioTCPReceived, mode: modeCounter, tr: bytes, scale: math.Floor(500 + 50000*unit01(mix(key, 7, 5))), base: slices.Clone(common)})
			b.flush(&gr)
			continue
		}
		protocol := "http"
		if r.e.dst.spec.proto == protoGRPC {
			protocol = "grpc"
		}
		rate := b.edgeRate(r.e) * (0.7 + 0.6*unit01(mix(key, 1, 0)))
		for ci, c := range edgeCodes(r.e.dst.spec.proto, mix(b.seed, edgeKey(r.e), 0xc0de)) {
			gr := group{request: true}
			ck := mix(key, 2, uint64(ci))
			ls := withLabels(common, lbl("request_protocol", protocol), lbl("response_code", c.http), lbl("response_flags", c.flags))
			if c.grpc != "" {
				ls = append(ls, lbl("grpc_response_status", c.grpc))
			}
			tr := b.counter(math.Max(0.5, rate*c.share), ck)
			median := 3 + 80*unit01(mix(ck, 3, 0))
			if c.http == "503" && c.flags != "-" {
				median = 0.8 // fast failure in the client proxy
			}
			if r.reporter == "source" {
				median *= 1.15 // client side adds the network hop
			}
			b.add(&gr, unit{fam: fs.istioRequests, mode: modeCounter, tr: tr, scale: 1, base: slices.Clone(ls)})
			b.add(&gr, histUnit(fs.istioDuration, tr, median, 0.9, ls))
			b.add(&gr, histUnit(fs.istioReqBytes, tr, 80+600*unit01(mix(ck, 4, 0)), 1.2, ls))
			b.add(&gr, histUnit(fs.istioRespBytes, tr, 300+8000*unit01(mix(ck, 5, 0)), 1.6, ls))
			if protocol == "grpc" {
				b.add(&gr, unit{fam: fs.istioReqMessages, mode: modeCounter, tr: tr, scale: 1, base: slices.Clone(ls)})
				b.add(&gr, unit{fam: fs.istioRespMessages, mode: modeCounter, tr: tr, scale: 1 + float64(mix(ck, 6, 0)%3), base: slices.Clone(ls)})
			}
			b.flush(&gr)
		}
	}

	// Envoy cluster stats of the outbound cluster of every callee service.
	var clusters []string
	for _, e := range out {
		clusters = append(clusters, "outbound|"+strconv.Itoa(e.dst.spec.port)+"||"+e.dst.serviceFQDN())
	}
	for ci, cn := range clusters {
		gr := group{}
		ck := mix(podKey, 0xc1, uint64(ci))
		ls := withLabels(k8s, lbl("cluster_name", cn))
		tr := b.counter(2+40*unit01(mix(ck, 1, 0)), ck)
		b.add(&gr, unit{fam: fs.envoyRqTotal, mode: modeCounter, tr: tr, scale: 1, base: slices.Clone(ls)})
		b.add(&gr, unit{fam: fs.envoyCxActive, mode: modeGauge, level: 1 + math.Floor(30*unit01(mix(ck, 2, 0))), tr: traffic{key: mix(ck, 2, 1)}, base: slices.Clone(ls)})
		b.add(&gr, unit{fam: fs.envoyCxTotal, mode: modeCounter, tr: b.counter(0.1+unit01(mix(ck, 3, 0)), mix(ck, 3, 1)), scale: 1, base: slices.Clone(ls)})
		b.add(&gr, histUnit(fs.envoyRqTime, tr, 2+60*unit01(mix(ck, 4, 0)), 1, ls))
		b.flush(&gr)
	}
	gr := group{}
	b.add(&gr, unit{fam: fs.envoyMemAllocated, mode: modeGauge, level: math.Floor(4e7 + 6e7*unit01(mix(podKey, 0x5e, 1))), tr: traffic{key: mix(podKey, 0x5e, 2)}, base: slices.Clone(k8s)})
	b.add(&gr, unit{fam: fs.envoyLive, mode: modeConst, level: 1, base: slices.Clone(k8s)})
	b.add(&gr, unit{fam: fs.envoyUptime, mode: modeCounter, tr: b.counter(15, mix(podKey, 0x5e, 3)), scale: 1, base: slices.Clone(k8s)})
	b.add(&gr, unit{fam: fs.envoyActiveClusters, mode: modeConst, level: float64(len(clusters) + 12), base: slices.Clone(k8s)})
	b.flush(&gr)
}

func histUnit(f *family, tr traffic, median, sigma float64, ls []prompb.Label) unit {
	return unit{
		fam: f, mode: modeHistogram, tr: tr,
		scale: lognormalMean(median, sigma), cdf: latencyCDF(f.buckets, median, sigma),
		base: slices.Clone(ls),
	}
}

func (b *builder) linkerdPod(w *workload, pi int, out, in []edge) {
	fs := b.fs
	k8s := b.k8s(w, pi, "linkerd-proxy", 4191)
	podKey := mix(b.seed, edgeKey(edge{src: w, dst: w}), uint64(pi))
	type dir struct {
		e      edge
		labels []prompb.Label
		peer   string
	}
	var dirs []dir
	for _, e := range out {
		d := e.dst
		dirs = append(dirs, dir{e, []prompb.Label{
			lbl("direction", "outbound"),
			lbl("authority", d.serviceFQDN()+":"+strconv.Itoa(d.spec.port)),
			lbl("target_addr", serviceIP(d.serviceFQDN())+":"+strconv.Itoa(d.spec.port)),
			lbl("tls", "true"), lbl("server_id", d.linkerdIdentity()),
			lbl("dst_deployment", d.name), lbl("dst_namespace", d.ns.name),
			lbl("dst_service", d.app), lbl("dst_serviceaccount", d.app),
		}, "dst"})
	}
	for _, e := range in {
		dirs = append(dirs, dir{e, []prompb.Label{
			lbl("direction", "inbound"),
			lbl("authority", w.serviceFQDN()+":"+strconv.Itoa(w.spec.port)),
			lbl("target_addr", w.pods[pi].ip+":"+strconv.Itoa(w.spec.port)),
			lbl("tls", "true"), lbl("client_id", e.src.linkerdIdentity()),
		}, "src"})
	}
	for di, d := range dirs {
		key := mix(podKey, edgeKey(d.e), uint64(di)+100)
		common := withLabels(k8s, d.labels...)
		rate := b.edgeRate(d.e) * (0.7 + 0.6*unit01(mix(key, 1, 0)))
		var total traffic
		for ci, c := range edgeCodes(d.e.dst.spec.proto, mix(b.seed, edgeKey(d.e), 0xc0de)) {
			gr := group{request: true}
			ck := mix(key, 2, uint64(ci))
			tr := b.counter(math.Max(0.5, rate*c.share), ck)
			if ci == 0 {
				total = tr
			} else {
				total.base += tr.base
				total.rate += tr.rate
			}
			class := "success"
			if c.failure || c.http[0] == '5' {
				class = "failure"
			}
			ls := withLabels(common, lbl("status_code", c.http), lbl("classification", class))
			if c.grpc != "" {
				ls = append(ls, lbl("grpc_status", c.grpc))
			}
			median := 2 + 60*unit01(mix(ck, 3, 0))
			b.add(&gr, unit{fam: fs.l5dResponses, mode: modeCounter, tr: tr, scale: 1, base: slices.Clone(ls)})
			b.add(&gr, histUnit(fs.l5dLatency, tr, median, 0.8, ls))
			b.flush(&gr)
		}
		gr := group{request: true}
		b.add(&gr, unit{fam: fs.l5dRequests, mode: modeCounter, tr: total, scale: 1, base: slices.Clone(common)})
		b.flush(&gr)

		gr = group{}
		tcp := withLabels(common, lbl("peer", d.peer))
		conns := b.counter(0.05+0.5*unit01(mix(key, 4, 0)), mix(key, 4, 1))
		b.add(&gr, unit{fam: fs.l5dTCPOpenTotal, mode: modeCounter, tr: conns, scale: 1, base: slices.Clone(tcp)})
		b.add(&gr, unit{fam: fs.l5dTCPOpenConns, mode: modeGauge, level: 1 + math.Floor(8*unit01(mix(key, 4, 2))), tr: traffic{key: mix(key, 4, 3)}, base: slices.Clone(tcp)})
		bytes := b.counter(rate, mix(key, 4, 4))
		b.add(&gr, unit{fam: fs.l5dTCPRead, mode: modeCounter, tr: bytes, scale: math.Floor(300 + 900*unit01(mix(key, 4, 5))), base: slices.Clone(tcp)})
		b.add(&gr, unit{fam: fs.l5dTCPWrite, mode: modeCounter, tr: bytes, scale: math.Floor(500 + 6000*unit01(mix(key, 4, 6))), base: slices.Clone(tcp)})
		closed := conns
		closed.base = math.Max(0, conns.base-1)
		b.add(&gr, unit{fam: fs.l5dTCPClose, mode: modeCounter, tr: closed, scale: 1, base: withLabels(tcp, lbl("classification", "success"))})
		b.flush(&gr)
	}
}

// place chooses the high-cardinality groups, splits them into variants with
// injected labels and lays all units out in family order.
func (g *Generator) place(groups []group) {
	// Choose groups: request-level first, each class in seeded random order,
	// until the chosen series reach the configured share of the output.
	var req, other []int
	base := 0
	for i := range groups {
		base += groups[i].seriesCount()
		if groups[i].request {
			req = append(req, i)
		} else {
			other = append(other, i)
		}
	}
	shuffle(req, mix(g.cfg.Seed, 0x5bf1, 1))
	shuffle(other, mix(g.cfg.Seed, 0x5bf1, 2))
	chosen := make([]bool, len(groups))
	if len(g.inj) > 0 {
		// With S base series chosen and V variants, the share is
		// S*V / (base + S*(V-1)); solve for S.
		v, share := float64(g.cfg.Variants), g.cfg.HighCardShare
		target := share * float64(base) / (v - share*(v-1))
		sel := 0
		for _, i := range append(req, other...) {
			n := groups[i].seriesCount()
			if math.Abs(float64(sel+n)-target) > math.Abs(float64(sel)-target) {
				continue // skip groups that would overshoot; a smaller one may fit
			}
			chosen[i] = true
			sel += n
		}
	}

	var units []unit
	for i := range groups {
		if !chosen[i] {
			for _, u := range groups[i].units {
				u.hc = -1
				units = append(units, u)
			}
			continue
		}
		for v := 0; v < g.cfg.Variants; v++ {
			hc := g.nHCSets
			g.nHCSets++
			for _, u := range groups[i].units {
				u.hc = hc
				u.tr = u.tr.split(v, g.cfg.Variants)
				u.base, u.inj = mergeInjected(u.base, g.inj)
				units = append(units, u)
			}
		}
	}
	slices.SortStableFunc(units, func(a, b unit) int { return a.fam.order - b.fam.order })

	g.units = units
	for i := range g.units {
		u := &g.units[i]
		u.lePos, _ = slices.BinarySearchFunc(u.base, "le", func(l prompb.Label, n string) int { return strings.Compare(l.Name, n) })
		u.first = g.nSeries
		g.nSeries += u.seriesCount()
		if u.hc >= 0 {
			g.hcSeries += u.seriesCount()
			g.hcLabels += u.labelCount() + len(u.base) // appendChurned copies base first
		}
	}

	// Without churn the injected values are fixed: fill them in now and
	// build every series' labels once.
	var vals []string
	if !g.cfg.Churn {
		vals = g.injectedValues(0)
	}
	arena := make([]prompb.Label, 0, g.totalLabels())
	g.labels = make([][]prompb.Label, g.nSeries)
	for i := range g.units {
		u := &g.units[i]
		if u.hc >= 0 && g.cfg.Churn {
			continue
		}
		if u.hc >= 0 {
			u.fill(vals[u.hc*len(g.inj):])
		}
		arena = u.appendLabels(arena, g.labels[u.first:u.first+u.seriesCount()])
	}
}

func (g *Generator) totalLabels() int {
	n := 0
	for i := range g.units {
		n += g.units[i].labelCount()
	}
	return n
}

// labelCount is the number of labels all series of u hold together.
func (u *unit) labelCount() int {
	if u.mode == modeHistogram {
		return len(u.fam.le)*(len(u.base)+2) + 2*(len(u.base)+1)
	}
	return len(u.base) + 1
}

// fill sets the injected values of u.base from vals (in g.inj order).
func (u *unit) fill(vals []string) {
	for j, p := range u.inj {
		u.base[p].Value = vals[j]
	}
}

// appendLabels appends the labels of every series of u to arena and points
// out[i] at them. Label names are sorted: __name__ sorts before every
// lowercase name and le is inserted at lePos.
func (u *unit) appendLabels(arena []prompb.Label, out [][]prompb.Label) []prompb.Label {
	one := func(name string, le string) {
		start := len(arena)
		arena = append(arena, lbl("__name__", name))
		if le == "" {
			arena = append(arena, u.base...)
		} else {
			arena = append(arena, u.base[:u.lePos]...)
			arena = append(arena, lbl("le", le))
			arena = append(arena, u.base[u.lePos:]...)
		}
		out[0] = arena[start:len(arena):len(arena)]
		out = out[1:]
	}
	if u.mode != modeHistogram {
		one(u.fam.name, "")
		return arena
	}
	for _, le := range u.fam.le {
		one(u.fam.bucketN, le)
	}
	one(u.fam.sumN, "")
	one(u.fam.countN, "")
	return arena
}

// mergeInjected returns base with the injected names (sorted) merged in,
// with empty values, and their positions in the result.
func mergeInjected(base []prompb.Label, inj []string) ([]prompb.Label, []int) {
	out := make([]prompb.Label, 0, len(base)+len(inj))
	pos := make([]int, 0, len(inj))
	i := 0
	for _, n := range inj {
		for i < len(base) && base[i].Name < n {
			out = append(out, base[i])
			i++
		}
		pos = append(pos, len(out))
		out = append(out, lbl(n, ""))
	}
	return append(out, base[i:]...), pos
}

// injectedValues returns the injected values of every value set, set-major
// in g.inj order, for step (ignored without churn). The Variants sets of one
// group are consecutive and must differ, or their series would collide: a
// set equal to an earlier one of its group is drawn again with other keys,
// and if the value functions cannot produce a new tuple (a small pool, a
// constant), "#<variant>" is appended to its last value.
func (g *Generator) injectedValues(step int) []string {
	if !g.cfg.Churn {
		step = 0
	}
	n := len(g.inj)
	vals := make([]string, g.nHCSets*n)
	var buf []byte
	for s := 0; s < g.nHCSets; s++ {
		set := vals[s*n : (s+1)*n]
		first := s - s%g.cfg.Variants // first set of this group
		for attempt := uint64(0); ; attempt++ {
			for j := range g.inj {
				key := mix(g.cfg.Seed^uint64(step)*0x9e3779b97f4a7c15, uint64(s)|attempt<<40, uint64(j)+1)
				buf = g.injF[j](buf[:0], key)
				set[j] = string(buf)
			}
			if !g.seenSet(vals[first*n:s*n], set) {
				break
			}
			if attempt == 16 {
				set[n-1] += "#" + strconv.Itoa(s-first)
				break
			}
		}
	}
	return vals
}

// seenSet reports whether set equals one of the sets in prev.
func (g *Generator) seenSet(prev, set []string) bool {
	for len(prev) > 0 {
		if slices.Equal(prev[:len(set)], set) {
			return true
		}
		prev = prev[len(set):]
	}
	return false
}

// shuffle permutes idx with a Fisher–Yates shuffle driven by key.
func shuffle(idx []int, key uint64) {
	for i := len(idx) - 1; i > 0; i-- {
		key = splitmix(key)
		j := int(key % uint64(i+1))
		idx[i], idx[j] = idx[j], idx[i]
	}
}
