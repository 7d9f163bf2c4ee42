package explorer

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/cardinal-gateway/cardinal/cardinality"
	"github.com/cardinal-gateway/cardinal/guard"
	"github.com/cardinal-gateway/cardinal/internal/htmltest"
	"github.com/cardinal-gateway/cardinal/limiter"
	"github.com/cardinal-gateway/cardinal/merge"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fakeData() *Data {
	below := now.Add(-90 * time.Second)
	return &Data{
		Now:       now,
		Received:  12_345_678,
		Forwarded: map[string]float64{"passthrough": 2_000_000, "merged": 345_678},
		Dropped:   map[string]float64{"relabel": 1_000_000, "merged": 9_000_000, "limit": 345_678},
		Workloads: []limiter.Report{
			{Workload: "payments/checkout", ActiveSeries: 18_500, Limit: 20_000, DroppedSeries: 1_234, DroppedSamples: 56_789},
			{Workload: "shop/cart", ActiveSeries: 900, Limit: 0},
			{Workload: "evil/<script>alert(1)</script>", ActiveSeries: 3, Limit: 20_000},
		},
		Limits: Limits{
			Default: 20_000, Window: time.Hour,
			Config: map[string]int{"shop/cart": 0, "batch/jobs": 500},
			API:    map[string]int{"payments/checkout": 25_000, "ghost/app": 7},
		},
		Estimates: &Estimates{Window: 10 * time.Minute, Groups: []cardinality.GroupReport{
			{Workload: "payments/checkout", Metric: "istio_requests_total", SeriesIn: 40_000, SeriesOut: 1_000, Churn: 0.25,
				Labels: []cardinality.LabelReport{{Name: "request_id", ValuesIn: 39_000, ValuesOut: 0}, {Name: "response_code", ValuesIn: 6, ValuesOut: 6}}},
			{Workload: "payments/checkout", Metric: "istio_request_bytes_sum", SeriesIn: 100, SeriesOut: 10,
				Labels: []cardinality.LabelReport{{Name: "request_id", ValuesIn: 100, ValuesOut: 0}}},
			{Workload: "shop/cart", Metric: "istio_request_bytes_bucket", SeriesIn: 5_000, SeriesOut: 4_000,
				Labels: []cardinality.LabelReport{{Name: "user_agent", ValuesIn: 800, ValuesOut: 800}}},
		}},
		Guard: &guard.Status{
			Mode: "dry_run", Threshold: 500, WindowSeconds: 600, LiftAfterSeconds: 1800,
			Protected: []string{"__name__", "app", "le", "namespace", "quantile"},
			Active: []guard.Mitigation{{Workload: "shop/cart", Metric: "istio_request_bytes_bucket", Label: "user_agent", Mode: "dry_run",
				Since: now.Add(-5 * time.Minute), Values: 700, ValuesNow: 800, SeriesSaved: 3_995, BelowSince: &below}},
			Events: []guard.Event{{Time: now.Add(-5 * time.Minute), Action: "engaged", Mode: "dry_run", Workload: "shop/cart",
				Metric: "istio_request_bytes_bucket", Label: "user_agent", Values: 700, SeriesSaved: 3_995}},
		},
		Collisions: []merge.Collision{{Series: `istio_requests_total{app="checkout",namespace="payments"}`, Inputs: 15, CollapsedLabels: []string{"pod", "request_id"}, Kind: "counter"}},
		Endpoints: []Endpoint{
			{"GET", "/metrics", "Cardinal's own metrics"},
			{"GET", "/api/v1/collisions?top=N", "merged outputs"},
			{"PUT", "/api/v1/limits/{workload}", "set a cap"},
		},
		AdminToken: true,
	}
}

func render(t *testing.T, d *Data, top int) string {
	t.Helper()
	return renderView(t, d, View{Top: top})
}

func renderView(t *testing.T, d *Data, v View) string {
	t.Helper()
	var b bytes.Buffer
	if err := Render(&b, d, v); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// section returns the HTML of the section with the id, "" if none.
func section(page, id string) string {
	_, rest, ok := strings.Cut(page, `<section id="`+id+`"`)
	if !ok {
		return ""
	}
	s, _, _ := strings.Cut(rest, "</section>")
	return s
}

// rows is htmltest.RawTableRows: the tests check the escaping.
var rows = htmltest.RawTableRows

func TestRenderShowsEverySection(t *testing.T) {
	page := render(t, fakeData(), DefaultTop)
	for _, id := range []string{"summary", "workloads", "estimates", "labels", "collisions", "dropped", "guard", "limits", "endpoints"} {
		if section(page, id) == "" {
			t.Errorf("no section %s", id)
		}
	}
	// Each section links the JSON endpoint it comes from.
	for id, link := range map[string]string{
		"workloads": `href="api/v1/cardinality?top=20"`, "estimates": `href="api/v1/cardinality/workloads?top=20"`,
		"labels": `href="api/v1/cardinality/labels?top=20"`, "collisions": `href="api/v1/collisions?top=20"`,
		"dropped": `href="metrics"`, "guard": `href="api/v1/guard"`, "limits": `href="api/v1/limits"`, "endpoints": `href="?format=json"`,
	} {
		if !strings.Contains(section(page, id), link) {
			t.Errorf("section %s does not link %s", id, link)
		}
	}

	summary := section(page, "summary")
	for _, want := range []string{"12.3M", `title="12,345,678"`, "2.35M", "1.35M", "dry_run", ">10m<", "1 active mitigation"} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, summary)
		}
	}

	w := rows(page, "workloads-table")
	if len(w) != 3 || w[0][0] != "payments/checkout" || w[0][1] != "18,500" || w[0][2] != "20,000" || w[0][4] != "1,234" || w[0][5] != "56,789" {
		t.Errorf("workloads table: %q", w)
	}
	if w[1][2] != "unlimited" || w[1][3] != "no cap" {
		t.Errorf("an uncapped workload: %q", w[1])
	}
	// Everything is escaped.
	if strings.Contains(page, "<script>alert(1)") || !strings.Contains(page, "evil/&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("a workload name is not escaped")
	}

	est := rows(page, "est-workloads-table")
	if len(est) != 2 || est[0][0] != "payments/checkout" || est[0][1] != "40,100" || est[0][2] != "1,010" || est[0][3] != "97%" || est[0][4] != "2" || est[0][5] != "25%" {
		t.Errorf("estimated workloads: %q", est)
	}
	growth := rows(page, "growth-table")
	if len(growth) != 1 || growth[0][0] != "payments/checkout" || growth[0][1] != "250" {
		t.Errorf("growth (the workload without churn must not be there): %q", growth)
	}

	// Labels: by values as forwarded by default, by values as they arrive
	// with ?labels=in.
	labels := rows(page, "labels-table")
	if len(labels) != 3 || labels[0][0] != "user_agent" || labels[0][3] != "800" || !strings.Contains(labels[0][5], "guard: dry_run") ||
		labels[1][0] != "response_code" || labels[2][0] != "request_id" {
		t.Errorf("labels by values out: %q", labels)
	}
	// One row per workload and label, in the metric where it has the most
	// values.
	labels = rows(renderView(t, fakeData(), View{LabelsBy: LabelsIn}), "labels-table")
	if len(labels) != 3 || labels[0][0] != "request_id" || labels[0][2] != "istio_requests_total +1 metric" || labels[0][3] != "39,000" || labels[0][4] != "0" ||
		!strings.Contains(labels[0][5], "removed by the rules") {
		t.Errorf("labels by values in: %q", labels)
	}

	d := fakeData()
	d.Collisions[0].CollapsedLabels = []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	if c := rows(render(t, d, DefaultTop), "collisions-table"); len(c) != 1 || c[0][2] != "a b c d e f +2 more" {
		t.Errorf("a collision with many collapsed labels: %q", c)
	}
	col := rows(page, "collisions-table")
	if len(col) != 1 || col[0][0] != `istio_requests_total{app=&#34;checkout&#34;,namespace=&#34;payments&#34;}` || col[0][1] != "15" || col[0][2] != "pod request_id" {
		t.Errorf("collisions: %q", col)
	}

	dropped := rows(page, "dropped-table")
	got := map[string][]string{}
	for _, r := range dropped {
		got[r[0]] = r
	}
	for reason, want := range map[string]string{"relabel": "1,000,000", "merged": "9,000,000", "limit": "345,678", "invalid": "0", "merge_capacity": "0", "rejected": "0"} {
		if r := got[reason]; r == nil || r[1] != want {
			t.Errorf("dropped %s: %q, want %s", reason, r, want)
		}
	}
	if dropped[0][0] != "merged" {
		t.Errorf("dropped reasons not by size: %q", dropped)
	}

	if m := rows(page, "mitigations-table"); len(m) != 1 || m[0][0] != "user_agent" || m[0][4] != "5m ago" || m[0][7] != "3,995" || m[0][8] != "below since 1m30s ago" {
		t.Errorf("mitigations: %q", m)
	}
	if e := rows(page, "events-table"); len(e) != 1 || e[0][0] != "5m ago" || e[0][1] != "engaged" || e[0][3] != "user_agent" {
		t.Errorf("events: %q", e)
	}

	limits := rows(page, "limits-table")
	want := [][2]string{{"payments/checkout", "25,000 api"}, {"shop/cart", "unlimited config"}, {"evil/&lt;script&gt;alert(1)&lt;/script&gt;", "20,000 default"}, {"batch/jobs", "500 config"}, {"ghost/app", "7 api"}}
	if len(limits) != len(want) {
		t.Fatalf("limits rows: %q", limits)
	}
	for i, w := range want {
		if limits[i][0] != w[0] || limits[i][2]+" "+limits[i][3] != w[1] {
			t.Errorf("limits row %d: %q, want %v", i, limits[i], w)
		}
	}
	if limits[3][1] != "not seen" {
		t.Errorf("an override of an unseen workload: %q", limits[3])
	}
	lim := section(page, "limits")
	if !strings.Contains(lim, `<form class="limit-form" data-workload="payments/checkout">`) || !strings.Contains(lim, `id="admin-token"`) ||
		strings.Count(lim, `class="delete"`) != 2 || !strings.Contains(lim, `value="25000"`) {
		t.Errorf("limits forms:\n%s", lim)
	}

	ep := rows(page, "endpoints-table")
	if len(ep) != 3 || !strings.Contains(page, `<a href="metrics">/metrics</a>`) || !strings.Contains(page, `<a href="api/v1/collisions">/api/v1/collisions?top=N</a>`) ||
		strings.Contains(page, `{workload}"`) {
		t.Errorf("endpoints: %q", ep)
	}
	// Nothing from outside: no external URL at all.
	if m := regexp.MustCompile(`(?i)(src|href)="(https?:)?//`).FindString(page); m != "" {
		t.Errorf("external reference %s", m)
	}
}

func TestRenderSaysWhatIsOff(t *testing.T) {
	d := fakeData()
	d.Estimates, d.Guard, d.AdminToken = nil, nil, false
	d.Workloads, d.Collisions = nil, nil
	page := render(t, d, DefaultTop)
	for id, want := range map[string]string{
		"estimates":  "Estimates are off (cardinality.enabled: false)",
		"labels":     "Estimates are off (cardinality.enabled: false)",
		"guard":      "The guard is off",
		"workloads":  "No workload tracked yet",
		"collisions": "No merged output",
		"limits":     "Editing is disabled: no admin token is configured",
	} {
		if !strings.Contains(section(page, id), want) {
			t.Errorf("section %s lacks %q", id, want)
		}
	}
	if s := section(page, "summary"); !strings.Contains(s, "estimates are off") || !strings.Contains(s, "guard.mode not set") {
		t.Errorf("summary:\n%s", s)
	}
	if strings.Contains(page, `id="admin-token"`) {
		t.Error("a token field without a token configured")
	}
}

func TestRenderCutsToTop(t *testing.T) {
	d := fakeData()
	page := render(t, d, 1)
	if n := len(rows(page, "workloads-table")); n != 1 {
		t.Errorf("%d workload rows with top=1", n)
	}
	if !strings.Contains(section(page, "workloads"), `1 of 3 workloads; <a href="?top=3">show all</a>`) {
		t.Error("no hint that rows were left out")
	}
	if n := len(rows(page, "labels-table")); n != 1 {
		t.Errorf("%d label rows with top=1", n)
	}
	d.Guard.Active = append(d.Guard.Active, d.Guard.Active[0])
	d.Guard.Active[1].Label = "path"
	page = render(t, d, 1)
	if m := rows(page, "mitigations-table"); len(m) != 1 || !strings.Contains(section(page, "guard"), "1 newest of 2 mitigations") ||
		!strings.Contains(section(page, "summary"), "2 active mitigations") {
		t.Errorf("mitigations with top=1: %q", m)
	}
	// The header still sums every workload.
	if !strings.Contains(section(page, "summary"), `title="19,403"`) || !strings.Contains(section(page, "summary"), "3 workload×metric groups") {
		t.Errorf("summary does not sum every workload:\n%s", section(page, "summary"))
	}
}

type fixed struct {
	d    *Data
	tops []int
}

func (f *fixed) Snapshot(top int) *Data { f.tops = append(f.tops, top); return f.d }

func TestHandler(t *testing.T) {
	src := &fixed{d: fakeData()}
	h := New(src)
	for _, tc := range []struct {
		method, target string
		code           int
	}{
		{http.MethodGet, "/", 200}, {http.MethodGet, "/?top=5", 200}, {http.MethodHead, "/", 200},
		{http.MethodGet, "/?top=0", 400}, {http.MethodGet, "/?top=x", 400}, {http.MethodGet, "/?top=1001", 400},
		{http.MethodGet, "/?labels=in", 200}, {http.MethodGet, "/?labels=sideways", 400},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.target, nil))
		if rec.Code != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.target, rec.Code, tc.code)
			continue
		}
		if tc.code != 200 {
			continue
		}
		if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("%s %s: Content-Type %q", tc.method, tc.target, ct)
		}
		if body := rec.Body.String(); (tc.method == http.MethodHead) != (body == "") {
			t.Errorf("%s %s: body of %d bytes", tc.method, tc.target, len(body))
		}
	}
	if want := []int{20, 5, 20, 20}; len(src.tops) != 4 || src.tops[0] != want[0] || src.tops[1] != want[1] || src.tops[2] != want[2] {
		t.Errorf("tops asked: %v, want %v", src.tops, want)
	}
}

func TestWantsJSON(t *testing.T) {
	for _, tc := range []struct {
		target, accept string
		want           bool
	}{
		{"/", "", false},
		{"/", "*/*", false},
		{"/", "application/json", true},
		{"/", "application/json, text/plain, */*", true},
		{"/", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", false},
		{"/", "text/html;q=0.5, application/json", true},
		{"/", "application/json;q=0.2, text/html", false},
		{"/", "application/json;q=0", false},
		{"/?format=json", "text/html", true},
		{"/?format=html", "application/json", false},
	} {
		r := httptest.NewRequest(http.MethodGet, tc.target, nil)
		if tc.accept != "" {
			r.Header.Set("Accept", tc.accept)
		}
		if got := WantsJSON(r); got != tc.want {
			t.Errorf("%s Accept %q: %v, want %v", tc.target, tc.accept, got, tc.want)
		}
	}
}

func TestFormats(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{formatNum(0), "0"}, {formatNum(999), "999"}, {formatNum(1000), "1,000"}, {formatNum(int64(-1234567)), "-1,234,567"},
		{formatNum(uint64(12345678901)), "12,345,678,901"}, {formatNum(123456.0), "123,456"}, {formatNum(0.5), "0.5"},
		{formatCompact(999), "999"}, {formatCompact(1000), "1.00k"}, {formatCompact(12_345), "12.3k"}, {formatCompact(123_456.0), "123k"},
		{formatCompact(uint64(4_560_000)), "4.56M"}, {formatCompact(int64(1_200_000_000)), "1.20G"},
		{formatPct(0), "0%"}, {formatPct(0.0001), "<0.1%"}, {formatPct(0.0123), "1.2%"}, {formatPct(0.5), "50%"}, {formatPct(1), "100%"},
		{formatDuration(10 * time.Minute), "10m"}, {formatDuration(90 * time.Minute), "1h30m"}, {formatDuration(45 * time.Second), "45s"}, {formatDuration(0), "0s"},
		{formatAgo(now, now), "just now"}, {formatAgo(now, now.Add(-90*time.Second)), "1m30s ago"}, {formatAgo(now, now.Add(-49*time.Hour)), "2d ago"},
		{formatAgo(now, now.Add(-(2*time.Hour + 5*time.Minute + 7*time.Second))), "2h5m ago"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestCounters(t *testing.T) {
	counter := func(v float64, labels ...string) *dto.Metric {
		m := &dto.Metric{Counter: &dto.Counter{Value: ptr(v)}}
		for i := 0; i < len(labels); i += 2 {
			m.Label = append(m.Label, &dto.LabelPair{Name: ptr(labels[i]), Value: ptr(labels[i+1])})
		}
		return m
	}
	fams := []*dto.MetricFamily{
		{Name: ptr("go_goroutines"), Metric: []*dto.Metric{counter(12)}},
		{Name: ptr("cardinal_received_samples_total"), Metric: []*dto.Metric{counter(100)}},
		{Name: ptr("cardinal_forwarded_samples_total"), Metric: []*dto.Metric{counter(60, "path", "passthrough"), counter(5, "path", "merged")}},
		{Name: ptr("cardinal_dropped_samples_total"), Metric: []*dto.Metric{counter(30, "reason", "merged"), counter(10, "reason", "relabel"), counter(0, "reason", "limit")}},
	}
	received, forwarded, dropped := Counters(fams)
	if received != 100 || forwarded["passthrough"] != 60 || forwarded["merged"] != 5 || dropped["merged"] != 30 || dropped["relabel"] != 10 || len(dropped) != 3 {
		t.Errorf("received %v forwarded %v dropped %v", received, forwarded, dropped)
	}
}
