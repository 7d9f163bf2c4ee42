// Package explorer serves Cardinal's explorer page at /: an operator's view
// of what the gateway sees and does, rendered on the server with
// html/template from the same data the JSON APIs answer with. The
// workloads with the most series and the fastest growth, the labels with
// the most distinct values, the merged outputs and the labels that
// collapsed them, what was folded and dropped and why, the guard's events
// and mitigations, and the per-workload limits, editable with the admin
// token.
//
// Everything is served from the binary (embed): one HTML page with a small
// inline style sheet and script, no external asset and no build step. The
// read-only parts need no JavaScript; the script only edits limits (PUT and
// DELETE /api/v1/limits/{workload} with the bearer token typed into the
// page, kept in memory only) and refreshes the page's sections in place.
package explorer

import (
	"bytes"
	"cmp"
	"embed"
	"fmt"
	"html/template"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/cardinal-gateway/cardinal/cardinality"
	"github.com/cardinal-gateway/cardinal/guard"
	"github.com/cardinal-gateway/cardinal/limiter"
	"github.com/cardinal-gateway/cardinal/merge"
)

//go:embed assets
var assets embed.FS

// Source gives the page its data; the server's adapter reads it from the
// gateway and the metrics registry.
type Source interface {
	// Snapshot returns the data of the page with at most top rows per
	// list (the lists may be longer: the page cuts them).
	Snapshot(top int) *Data
}

// Data is everything the page shows, as the APIs return it.
type Data struct {
	// Now is when the data was read.
	Now time.Time
	// Received, Forwarded and Dropped are the sample counters of
	// /metrics: cardinal_received_samples_total,
	// cardinal_forwarded_samples_total by path and
	// cardinal_dropped_samples_total by reason (see Counters).
	Received  float64
	Forwarded map[string]float64
	Dropped   map[string]float64
	// Workloads is the limiter's report (GET /api/v1/cardinality).
	Workloads []limiter.Report
	// Limits are the caps in force (GET /api/v1/limits).
	Limits Limits
	// Estimates are nil when they are off (cardinality.enabled: false and
	// no guard).
	Estimates *Estimates
	// Guard is nil when the guard is off (GET /api/v1/guard).
	Guard *guard.Status
	// Collisions are the merged outputs with the most inputs (GET
	// /api/v1/collisions).
	Collisions []merge.Collision
	// Endpoints are the HTTP endpoints the page links.
	Endpoints []Endpoint
	// AdminToken says whether an admin token is configured, without which
	// limits cannot be edited.
	AdminToken bool
	// Cluster is nil when this Cardinal is not one replica of a cluster;
	// then everything on the page is this replica's share of the tier.
	Cluster *Cluster
}

// Cluster is the cluster this replica is in, as it sees it (GET
// /api/v1/cluster).
type Cluster struct {
	Self    string
	Members []ClusterMember
	// Handover: workloads that just moved here are still answered 503.
	Handover bool
}

// ClusterMember is one replica: State is self, up or down.
type ClusterMember struct {
	Address, State string
}

// Limits are the caps: the default, the config file's overrides and the
// API's, which win over the config's.
type Limits struct {
	Default int
	// Window is the limiter's accounting window.
	Window time.Duration
	Config map[string]int
	API    map[string]int
}

// Estimates are the cardinality estimates within their window.
type Estimates struct {
	Window time.Duration
	// Groups are the (workload, metric) groups, with their labels
	// (cardinality.Estimator.Report).
	Groups []cardinality.GroupReport
}

// Endpoint is one HTTP endpoint.
type Endpoint struct {
	Method, Path, Description string
}

// Counters reads the sample counters from gathered metric families:
// received, forwarded by path and dropped by reason.
func Counters(fams []*dto.MetricFamily) (received float64, forwarded, dropped map[string]float64) {
	forwarded, dropped = map[string]float64{}, map[string]float64{}
	for _, f := range fams {
		var by map[string]float64
		var label string
		switch f.GetName() {
		case "cardinal_received_samples_total":
			for _, m := range f.GetMetric() {
				received += m.GetCounter().GetValue()
			}
			continue
		case "cardinal_forwarded_samples_total":
			by, label = forwarded, "path"
		case "cardinal_dropped_samples_total":
			by, label = dropped, "reason"
		default:
			continue
		}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label {
					by[lp.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return received, forwarded, dropped
}

// WantsJSON reports whether a request for / asks for the JSON index of the
// endpoints (?format=json, or an Accept header that prefers JSON to HTML)
// rather than the page.
func WantsJSON(r *http.Request) bool {
	switch r.URL.Query().Get("format") {
	case "json":
		return true
	case "html":
		return false
	}
	jsonQ, htmlQ := -1.0, -1.0
	for part := range strings.SplitSeq(r.Header.Get("Accept"), ",") {
		typ, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		for p := range strings.SplitSeq(params, ";") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(p), "q="); ok {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					q = f
				}
			}
		}
		switch strings.ToLower(strings.TrimSpace(typ)) {
		case "application/json":
			jsonQ = max(jsonQ, q)
		case "text/html", "application/xhtml+xml":
			htmlQ = max(htmlQ, q)
		}
	}
	return jsonQ > 0 && jsonQ > htmlQ
}

// DefaultTop is how many rows a table shows unless ?top=N says otherwise.
const DefaultTop = 20

// MaxTop bounds ?top=N.
const MaxTop = 1000

// New returns the handler of the page. The page takes ?top=N (rows per
// table, default DefaultTop).
func New(src Source) http.Handler {
	return handler{src: src}
}

type handler struct {
	src Source
}

func (h handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	top := DefaultTop
	if v := r.URL.Query().Get("top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > MaxTop {
			http.Error(w, fmt.Sprintf("top must be an integer from 1 to %d, not %q", MaxTop, v), http.StatusBadRequest)
			return
		}
		top = n
	}
	by := r.URL.Query().Get("labels")
	if by != "" && by != LabelsIn && by != LabelsOut {
		http.Error(w, fmt.Sprintf("labels must be %s or %s, not %q", LabelsIn, LabelsOut, by), http.StatusBadRequest)
		return
	}
	var buf bytes.Buffer
	if err := Render(&buf, h.src.Snapshot(top), View{Top: top, LabelsBy: by}); err != nil {
		http.Error(w, "cannot render the page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// The page is Cardinal's own: no framing, no foreign script.
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
	w.Header().Set("Vary", "Accept")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(buf.Bytes())
}

var page = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"num":     formatNum,
	"compact": formatCompact,
	"pct":     formatPct,
	"dur":     formatDuration,
	"ago":     formatAgo,
	"time":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"join":    strings.Join,
	"seconds": seconds,
	"alltop":  func(n int) int { return min(max(n, 1), MaxTop) },
	"div":     divide,
	"raw":     func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) },
	"usage":   func(limit int, share float64) int { return int(float64(limit) * share) },
	"reduction": func(in, out uint64) float64 {
		if in == 0 || out >= in {
			return 0
		}
		return 1 - float64(out)/float64(in)
	},
	"limit": func(n int) string {
		if n == 0 {
			return "unlimited"
		}
		return formatNum(n)
	},
}).ParseFS(assets, "assets/page.html"))

var (
	style  = template.CSS(mustRead("assets/explorer.css"))
	script = template.JS(mustRead("assets/explorer.js"))
)

func mustRead(name string) string {
	b, err := assets.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// View says how the page shows the data: ?top=N and ?labels=in|out.
type View struct {
	// Top is the number of rows per table (DefaultTop when 0).
	Top int
	// LabelsBy ranks the labels by their distinct values as forwarded
	// (LabelsOut, the default, as the guard and the API rank them) or as
	// they arrive (LabelsIn, which shows the labels the rules remove).
	LabelsBy string
}

// Rankings of the labels table.
const (
	LabelsOut = "out"
	LabelsIn  = "in"
)

// Render writes the page of d.
func Render(w io.Writer, d *Data, v View) error {
	if v.Top <= 0 {
		v.Top = DefaultTop
	}
	if v.LabelsBy == "" {
		v.LabelsBy = LabelsOut
	}
	return page.Execute(w, newView(d, v))
}

// view is what the template reads: Data sorted and cut into the tables.
type view struct {
	*Data
	View
	Style  template.CSS
	Script template.JS

	ForwardedTotal, DroppedTotal float64
	Reasons                      []reasonRow
	ActiveSeries, FoldedSeries   int64
	FoldedSamples                uint64
	Workloads                    []limiter.Report
	WorkloadsTotal               int
	LimitRows                    []limitRow
	CollisionsShown              []collisionRow
	Est                          *estView
	GuardView                    *guardView
	EndpointRows                 []endpointRow
}

type collisionRow struct {
	merge.Collision
	// Shown are the first collapsed labels, Hidden how many more there are.
	Shown  []string
	Hidden int
}

// maxCollapsedShown bounds the collapsed labels a collision row lists (an
// overflow series collapses every label but the workload's).
const maxCollapsedShown = 6

type reasonRow struct {
	Reason, Meaning string
	Samples, Share  float64
}

type limitRow struct {
	Workload     string
	Limit        int
	Source       string
	ActiveSeries int64
	Known        bool
}

type estView struct {
	Window             time.Duration
	Groups             int
	SeriesIn           uint64
	SeriesOut          uint64
	BySeries, ByGrowth []growthRow
	Labels             []labelRow
	Saturated          bool
}

type growthRow struct {
	cardinality.WorkloadReport
	New uint64
}

// labelRow is one label of one workload, in the metric where it has the
// most values; the other metrics of the workload that have it are counted.
type labelRow struct {
	Workload, Metric, Label string
	ValuesIn, ValuesOut     uint64
	// OtherMetrics are the workload's other metrics with the label.
	OtherMetrics int
	// Guarded is the guard's mode on the label in some metric of the
	// workload ("" for none), GuardedMetrics in how many.
	Guarded        string
	GuardedMetrics int
}

type guardView struct {
	*guard.Status
	// Active and Events are cut to the page's rows.
	Active []guard.Mitigation
	Events []guard.Event
}

type endpointRow struct {
	Endpoint
	Link string // "" when the path needs a parameter
}

// reasonMeanings explain the values of cardinal_dropped_samples_total's
// reason label.
var reasonMeanings = map[string]string{
	"relabel":        "removed by relabel_configs",
	"invalid":        "no receiver would accept them (bad names, values or order)",
	"limit":          "folded into the overflow series of a workload over its cap",
	"merge_capacity": "merge.max_inputs reached",
	"merged":         "absorbed into a merged output (which is forwarded, counted as forwarded{path=\"merged\"})",
	"rejected":       "refused by the downstream",
}

// reasonOrder lists the reasons the gateway counts, so that the table
// always has them, zeros included.
var reasonOrder = []string{"relabel", "merged", "limit", "merge_capacity", "invalid", "rejected"}

func newView(d *Data, opts View) *view {
	top := opts.Top
	v := &view{Data: d, View: opts, Style: style, Script: script}
	for _, n := range d.Forwarded {
		v.ForwardedTotal += n
	}
	reasons := slices.Clone(reasonOrder)
	for r := range d.Dropped {
		if !slices.Contains(reasons, r) {
			reasons = append(reasons, r)
		}
	}
	for _, r := range reasons {
		n := d.Dropped[r]
		if r != "merged" {
			v.DroppedTotal += n
		}
		share := 0.0
		if d.Received > 0 {
			share = n / d.Received
		}
		v.Reasons = append(v.Reasons, reasonRow{Reason: r, Meaning: reasonMeanings[r], Samples: n, Share: share})
	}
	slices.SortStableFunc(v.Reasons, func(a, b reasonRow) int { return cmp.Compare(b.Samples, a.Samples) })

	v.WorkloadsTotal = len(d.Workloads)
	for _, w := range d.Workloads {
		v.ActiveSeries += w.ActiveSeries
		v.FoldedSeries += w.DroppedSeries
		v.FoldedSamples += w.DroppedSamples
	}
	v.Workloads = d.Workloads[:min(top, len(d.Workloads))]
	v.LimitRows = limitRows(d, v.Workloads)
	for _, c := range d.Collisions[:min(top, len(d.Collisions))] {
		n := min(len(c.CollapsedLabels), maxCollapsedShown)
		v.CollisionsShown = append(v.CollisionsShown, collisionRow{Collision: c, Shown: c.CollapsedLabels[:n], Hidden: len(c.CollapsedLabels) - n})
	}
	if d.Estimates != nil {
		v.Est = newEstView(d.Estimates, d.Guard, top, opts.LabelsBy == LabelsIn)
	}
	if d.Guard != nil {
		v.GuardView = &guardView{Status: d.Guard,
			Active: d.Guard.Active[:min(top, len(d.Guard.Active))], Events: d.Guard.Events[:min(top, len(d.Guard.Events))]}
	}
	for _, e := range d.Endpoints {
		row := endpointRow{Endpoint: e}
		if e.Method == http.MethodGet && !strings.Contains(e.Path, "{") {
			// Relative, as every link of the page: it works behind a
			// path prefix too.
			row.Link, _, _ = strings.Cut(strings.TrimPrefix(e.Path, "/"), "?")
		}
		v.EndpointRows = append(v.EndpointRows, row)
	}
	return v
}

// limitRows are the workloads shown, then every other workload with an
// override, each with its cap and where the cap comes from (as GET
// /api/v1/limits/{workload} says).
func limitRows(d *Data, shown []limiter.Report) []limitRow {
	l := d.Limits
	row := func(w string) limitRow {
		r := limitRow{Workload: w, Limit: l.Default, Source: "default"}
		if n, ok := l.API[w]; ok {
			r.Limit, r.Source = n, "api"
		} else if n, ok := l.Config[w]; ok {
			r.Limit, r.Source = n, "config"
		}
		return r
	}
	var rows []limitRow
	seen := map[string]bool{}
	for _, w := range shown {
		r := row(w.Workload)
		r.ActiveSeries, r.Known = w.ActiveSeries, true
		rows = append(rows, r)
		seen[w.Workload] = true
	}
	active := map[string]int64{}
	for _, w := range d.Workloads {
		active[w.Workload] = w.ActiveSeries
	}
	var rest []string
	for _, m := range []map[string]int{l.API, l.Config} {
		for w := range m {
			if !seen[w] {
				seen[w] = true
				rest = append(rest, w)
			}
		}
	}
	slices.Sort(rest)
	for _, w := range rest {
		r := row(w)
		r.ActiveSeries, r.Known = active[w]
		rows = append(rows, r)
	}
	return rows
}

func newEstView(e *Estimates, g *guard.Status, top int, byIn bool) *estView {
	v := &estView{Window: e.Window, Groups: len(e.Groups)}
	guarded := map[[3]string]string{}
	if g != nil {
		for _, m := range g.Active {
			guarded[[3]string{m.Workload, m.Metric, m.Label}] = m.Mode
		}
	}
	var labels []labelRow
	for _, gr := range e.Groups {
		v.SeriesIn += gr.SeriesIn
		v.SeriesOut += gr.SeriesOut
		v.Saturated = v.Saturated || gr.Saturated
		for _, l := range gr.Labels {
			labels = append(labels, labelRow{
				Workload: gr.Workload, Metric: gr.Metric, Label: l.Name,
				ValuesIn: l.ValuesIn, ValuesOut: l.ValuesOut,
				Guarded: guarded[[3]string{gr.Workload, gr.Metric, l.Name}],
			})
		}
	}
	// The labels with the most distinct values as forwarded, then as they
	// arrive (or the other way round).
	slices.SortFunc(labels, func(a, b labelRow) int {
		first, second := cmp.Compare(b.ValuesOut, a.ValuesOut), cmp.Compare(b.ValuesIn, a.ValuesIn)
		if byIn {
			first, second = second, first
		}
		if first != 0 {
			return first
		}
		if second != 0 {
			return second
		}
		return cmp.Compare(a.Workload+"\xff"+a.Metric+"\xff"+a.Label, b.Workload+"\xff"+b.Metric+"\xff"+b.Label)
	})
	// One row per workload and label: the metric where it ranks first,
	// the others counted.
	first := map[[2]string]int{}
	var rows []labelRow
	for _, l := range labels {
		k := [2]string{l.Workload, l.Label}
		i, ok := first[k]
		if !ok {
			first[k] = len(rows)
			if l.Guarded != "" {
				l.GuardedMetrics = 1
			}
			rows = append(rows, l)
			continue
		}
		r := &rows[i]
		r.OtherMetrics++
		if l.Guarded != "" {
			r.GuardedMetrics++
			if r.Guarded == "" {
				r.Guarded = l.Guarded
			}
		}
	}
	labels = rows
	v.Labels = labels[:min(top, len(labels))]
	ws := cardinality.Workloads(e.Groups)
	byWorkload := make([]growthRow, len(ws))
	for i, w := range ws {
		byWorkload[i] = growthRow{WorkloadReport: w, New: uint64(math.Round(w.Churn * float64(w.SeriesOut)))}
	}
	v.BySeries = byWorkload[:min(top, len(byWorkload))]
	// Growth: the new series of the current half-window, estimated as
	// churn × series forwarded.
	var growing []growthRow
	for _, r := range byWorkload {
		if r.New > 0 {
			growing = append(growing, r)
		}
	}
	slices.SortStableFunc(growing, func(a, b growthRow) int {
		if c := cmp.Compare(b.New, a.New); c != 0 {
			return c
		}
		return cmp.Compare(b.Churn, a.Churn)
	})
	v.ByGrowth = growing[:min(top, len(growing))]
	return v
}

// Number formats.

// formatNum writes an integer count with thousands separators: 1,234,567.
func formatNum(v any) string {
	var n int64
	switch x := v.(type) {
	case int:
		n = int64(x)
	case int64:
		n = x
	case uint64:
		if x > math.MaxInt64 {
			return strconv.FormatUint(x, 10)
		}
		n = int64(x)
	case float64:
		if x != math.Trunc(x) || math.Abs(x) >= 1<<62 {
			return strconv.FormatFloat(x, 'g', 6, 64)
		}
		n = int64(x)
	default:
		return fmt.Sprint(v)
	}
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// formatCompact writes a count in at most four significant characters and
// a unit: 987, 12.3k, 4.56M, 1.2G.
func formatCompact(v any) string {
	var f float64
	switch x := v.(type) {
	case int:
		f = float64(x)
	case int64:
		f = float64(x)
	case uint64:
		f = float64(x)
	case float64:
		f = x
	default:
		return fmt.Sprint(v)
	}
	a := math.Abs(f)
	for _, u := range []struct {
		div  float64
		unit string
	}{{1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if a >= u.div {
			q := f / u.div
			switch {
			case math.Abs(q) >= 100:
				return strconv.FormatFloat(q, 'f', 0, 64) + u.unit
			case math.Abs(q) >= 10:
				return strconv.FormatFloat(q, 'f', 1, 64) + u.unit
			}
			return strconv.FormatFloat(q, 'f', 2, 64) + u.unit
		}
	}
	return formatNum(math.Round(f))
}

// formatPct writes a share (0 to 1) as a percentage.
func formatPct(f float64) string {
	switch {
	case f == 0:
		return "0%"
	case f < 0.001:
		return "<0.1%"
	case f < 0.1:
		return strconv.FormatFloat(100*f, 'f', 1, 64) + "%"
	}
	return strconv.FormatFloat(100*f, 'f', 0, 64) + "%"
}

// formatDuration writes a duration the way a config file does: 10m, 1h30m,
// 45s.
func formatDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	d = d.Round(time.Second)
	var b strings.Builder
	if h := d / time.Hour; h > 0 {
		fmt.Fprintf(&b, "%dh", h)
		d -= h * time.Hour
	}
	if m := d / time.Minute; m > 0 {
		fmt.Fprintf(&b, "%dm", m)
		d -= m * time.Minute
	}
	if s := d / time.Second; s > 0 || b.Len() == 0 {
		fmt.Fprintf(&b, "%ds", s)
	}
	return b.String()
}

// formatAgo writes how long before now t was.
func formatAgo(now, t time.Time) string {
	d := now.Sub(t)
	if d < time.Second {
		return "just now"
	}
	if d >= 24*time.Hour {
		return fmt.Sprintf("%dd ago", d/(24*time.Hour))
	}
	if d >= time.Hour {
		d = d.Truncate(time.Minute)
	}
	return formatDuration(d) + " ago"
}

// divide returns a/b for any numbers, 0 when b is 0.
func divide(a, b any) float64 {
	x, y := toFloat(a), toFloat(b)
	if y == 0 {
		return 0
	}
	return x / y
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case uint64:
		return float64(x)
	case float64:
		return x
	}
	return 0
}

// seconds converts a float number of seconds, as guard.Status holds them.
func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
