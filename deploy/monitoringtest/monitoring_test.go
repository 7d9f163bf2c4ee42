package monitoringtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	yaml "go.yaml.in/yaml/v3"
)

// Paths relative to this package's directory, where go test runs.
const (
	repoRoot      = "../.."
	dashboardFile = "../grafana/cardinal.json"
	rulesFile     = "../alerts/cardinal.rules.yml"
	rulesTestFile = "../alerts/cardinal.rules.test.yml"
	chartFilesDir = "../helm/cardinal/files"
)

// datasourceUID is how every panel and query variable names the dashboard's
// datasource variable.
const datasourceUID = "${datasource}"

// dashboard is the part of Grafana's dashboard JSON model the tests read.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	Description   string `json:"description"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// variable is a template variable. Query is a string (a datasource type,
// or an old-style query) or, for Prometheus query variables of Grafana ≥
// 10, an object holding the query.
type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Datasource *datasourceRef  `json:"datasource"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
}

type panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description"`
	Datasource  *datasourceRef `json:"datasource"`
	GridPos     struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID        string         `json:"refId"`
		Expr         string         `json:"expr"`
		LegendFormat string         `json:"legendFormat"`
		Datasource   *datasourceRef `json:"datasource"`
	} `json:"targets"`
	// Panels of a collapsed row.
	Panels []panel `json:"panels"`
}

// queryString returns the query text of a variable.
func (v variable) queryString() (string, error) {
	if len(v.Query) == 0 {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(v.Query, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(v.Query, &obj); err != nil {
		return "", fmt.Errorf("variable %s: query is neither a string nor an object with a query: %v", v.Name, err)
	}
	return obj.Query, nil
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return &d
}

// allPanels returns the dashboard's panels, those inside collapsed rows
// included.
func (d *dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// rulesDoc is a Prometheus rule file.
type rulesDoc struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// decodeStrict decodes YAML refusing unknown fields.
func decodeStrict(raw []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	return dec.Decode(v)
}

func loadRules(t *testing.T) *rulesDoc {
	t.Helper()
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var r rulesDoc
	if err := decodeStrict(raw, &r); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return &r
}

// query is one PromQL expression and where it was found.
type query struct {
	where string // e.g. `panel 7 "Ingest rate" target A`
	raw   string // as written, with Grafana variables
	expr  string // variables substituted, ready to parse
}

// grafanaVar matches Grafana's variable syntaxes: $name, ${name},
// ${name:format} and the deprecated [[name]].
var grafanaVar = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[A-Za-z0-9_]+)?\}|\[\[([A-Za-z0-9_]+)(?::[A-Za-z0-9_]+)?\]\]|\$([A-Za-z0-9_]+)`)

// builtinVars are Grafana's global variables that appear in PromQL, with a
// value of the kind Grafana substitutes.
var builtinVars = map[string]string{
	"__rate_interval":    "1m",
	"__interval":         "1m",
	"__interval_ms":      "60000",
	"__range":            "1h",
	"__range_s":          "3600",
	"__range_ms":         "3600000",
	"__rate_interval_ms": "60000",
}

// multiMarker is what a multi-value variable is replaced with: a valid
// regex and label value that says which variable it was, so the parsed
// matchers can be checked (a multi-value variable only works with =~ or
// !~, since Grafana substitutes a|b|c).
func multiMarker(name string) string { return "grafana_multi_" + name }

// substituter replaces Grafana variables in PromQL.
type substituter struct {
	vars  map[string]bool // the dashboard's variables: multi-value or not
	multi func(name string) string
}

// newSubstituter knows the builtins and the dashboard's own variables:
// multi-value ones become multiMarker(name) (see the multi field), the
// others "value".
func newSubstituter(d *dashboard) *substituter {
	s := &substituter{vars: map[string]bool{}, multi: multiMarker}
	for _, v := range d.Templating.List {
		s.vars[v.Name] = v.Multi || v.IncludeAll
	}
	return s
}

// substitute returns expr with every variable replaced, or an error naming
// the variables the dashboard does not define.
func (s *substituter) substitute(expr string) (string, error) {
	var unknown []string
	out := grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		sub := grafanaVar.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		if v, ok := builtinVars[name]; ok {
			return v
		}
		multi, ok := s.vars[name]
		switch {
		case !ok:
			unknown = append(unknown, m)
			return m
		case multi:
			return s.multi(name)
		}
		return "value"
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("undefined Grafana variables %v", unknown)
	}
	return out, nil
}

// labelValuesQuery matches label_values(expr, label) and label_values(label).
var (
	labelValuesQuery = regexp.MustCompile(`^\s*label_values\(\s*(?:(.*\S)\s*,\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)
	queryResultQuery = regexp.MustCompile(`^\s*query_result\(\s*(.*\S)\s*\)\s*$`)
	noExprQuery      = regexp.MustCompile(`^\s*(label_names\(\s*\)|metrics\(.*\))\s*$`)
)

// variableExpr returns the PromQL inside a Prometheus query variable's
// query: the selector of label_values(selector, label), the expression of
// query_result(expr); "" for forms without one (label_values(label),
// label_names(), metrics(regex)).
func variableExpr(q string) (string, error) {
	if m := labelValuesQuery.FindStringSubmatch(q); m != nil {
		return m[1], nil
	}
	if m := queryResultQuery.FindStringSubmatch(q); m != nil {
		return m[1], nil
	}
	if noExprQuery.MatchString(q) {
		return "", nil
	}
	return "", fmt.Errorf("unknown Prometheus variable query %q", q)
}

// dashboardQueries returns every PromQL expression of the dashboard.
func dashboardQueries(t *testing.T, d *dashboard) []query {
	t.Helper()
	sub := newSubstituter(d)
	var qs []query
	add := func(where, raw string) {
		expr, err := sub.substitute(raw)
		if err != nil {
			t.Errorf("%s: %v in %s", where, err, raw)
			return
		}
		qs = append(qs, query{where: where, raw: raw, expr: expr})
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, err := v.queryString()
		if err != nil {
			t.Error(err)
			continue
		}
		expr, err := variableExpr(q)
		if err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
			continue
		}
		if expr != "" {
			add(fmt.Sprintf("variable %s", v.Name), expr)
		}
	}
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			add(fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID), tg.Expr)
		}
	}
	return qs
}

// rulesQueries returns the expression of every rule.
func rulesQueries(r *rulesDoc) []query {
	var qs []query
	for _, g := range r.Groups {
		for _, rl := range g.Rules {
			name := rl.Alert
			if name == "" {
				name = rl.Record
			}
			qs = append(qs, query{where: fmt.Sprintf("rule %s (group %s)", name, g.Name), raw: rl.Expr, expr: rl.Expr})
		}
	}
	return qs
}

var promql = parser.NewParser(parser.Options{})

// metricUse is what an expression selects: metric names, and the
// __name__ matchers other than equality (checked against what is exposed).
type metricUse struct {
	names        []string
	nameMatchers []*labels.Matcher
	selectors    []*parser.VectorSelector
}

// inspect parses expr and collects what it selects. Every selector must
// name its metric: a selector without one cannot be checked.
func inspect(expr string) (parser.Expr, metricUse, error) {
	e, err := promql.ParseExpr(expr)
	if err != nil {
		return nil, metricUse{}, err
	}
	var u metricUse
	var bad error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		u.selectors = append(u.selectors, vs)
		named := false
		for _, m := range vs.LabelMatchers {
			if m.Name != model.MetricNameLabel {
				continue
			}
			named = true
			if m.Type == labels.MatchEqual {
				u.names = append(u.names, m.Value)
			} else {
				u.nameMatchers = append(u.nameMatchers, m)
			}
		}
		if !named && bad == nil {
			bad = fmt.Errorf("selector %s selects no metric name", vs)
		}
		return nil
	})
	return e, u, bad
}

// usedMetrics parses every query and returns the metric names and name
// matchers they use, each with where it is used. Parse errors fail t.
func usedMetrics(t *testing.T, qs []query) (map[string][]string, map[*labels.Matcher]string) {
	t.Helper()
	names := map[string][]string{}
	matchers := map[*labels.Matcher]string{}
	for _, q := range qs {
		_, u, err := inspect(q.expr)
		if err != nil {
			t.Errorf("%s: %v\n  expr: %s", q.where, err, q.raw)
			continue
		}
		for _, n := range u.names {
			if !slices.Contains(names[n], q.where) {
				names[n] = append(names[n], q.where)
			}
		}
		for _, m := range u.nameMatchers {
			matchers[m] = q.where
		}
	}
	return names, matchers
}

// TestInspect checks the extraction itself on expressions whose answer is
// known, so that the other tests cannot pass by extracting nothing.
func TestInspect(t *testing.T) {
	d := &dashboard{}
	d.Templating.List = []variable{{Name: "job", Type: "query", Multi: true}, {Name: "mode", Type: "custom"}}
	sub := newSubstituter(d)
	for _, tc := range []struct {
		expr    string
		names   []string
		regexes int
		wantErr string
	}{
		{expr: `histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{job=~"$job"}[$__rate_interval])))`, names: []string{"a_seconds_bucket"}},
		{expr: `sum(rate(b_total{job=~"${job}"}[$__interval])) / ignoring (x) group_left sum(c{mode="$mode"})`, names: []string{"b_total", "c"}},
		{expr: `{__name__="d", job=~"[[job]]"} or {__name__=~"e_.*"}`, names: []string{"d"}, regexes: 1},
		{expr: `max_over_time(f[5m:1m]) > 0 unless g offset 15m`, names: []string{"f", "g"}},
		{expr: `{job="x"}`, wantErr: "selects no metric name"},
		{expr: `rate(h[$__rate_intervall])`, wantErr: "undefined Grafana variables"},
		{expr: `sum(rate(i[5m]) by (le)`, wantErr: "parse error"},
	} {
		expr, err := sub.substitute(tc.expr)
		var u metricUse
		if err == nil {
			_, u, err = inspect(expr)
		}
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want one containing %q", tc.expr, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if !slices.Equal(u.names, tc.names) || len(u.nameMatchers) != tc.regexes {
			t.Errorf("%s: names %v and %d name regexes, want %v and %d", tc.expr, u.names, len(u.nameMatchers), tc.names, tc.regexes)
		}
	}
	for q, want := range map[string]string{
		`label_values(up{job=~"$job"}, instance)`: `up{job=~"$job"}`,
		`label_values(instance)`:                  "",
		`query_result(topk(5, sum by (x) (y)))`:   "topk(5, sum by (x) (y))",
		`metrics(cardinal_.*)`:                    "",
	} {
		if got, err := variableExpr(q); err != nil || got != want {
			t.Errorf("variableExpr(%q) = %q, %v; want %q", q, got, err, want)
		}
	}
	if _, err := variableExpr(`up`); err == nil {
		t.Error("variableExpr accepted a query of no known form")
	}
}

// TestDashboard checks the dashboard's structure and parses every
// expression in it.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" || d.Description == "" {
		t.Errorf("dashboard uid %q, title %q, description %q: all three are needed", d.UID, d.Title, d.Description)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want at least 36 (datasource references by uid)", d.SchemaVersion)
	}

	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		if _, dup := vars[v.Name]; dup {
			t.Errorf("variable %s defined twice", v.Name)
		}
		vars[v.Name] = v
	}
	if ds, ok := vars["datasource"]; !ok || ds.Type != "datasource" || string(ds.Query) != `"prometheus"` {
		t.Errorf("want a variable datasource of type datasource, query prometheus; got %+v", ds)
	}
	for _, name := range []string{"job", "instance"} {
		v, ok := vars[name]
		if !ok {
			t.Errorf("variable %s is missing", name)
			continue
		}
		if v.Type != "query" || v.Datasource == nil || v.Datasource.UID != datasourceUID {
			t.Errorf("variable %s: type %q, datasource %+v; want a query on %s", name, v.Type, v.Datasource, datasourceUID)
		}
		if !v.Multi || !v.IncludeAll || v.AllValue != ".+" {
			t.Errorf("variable %s: multi %v, includeAll %v, allValue %q; want a multi-value variable whose All is .+", name, v.Multi, v.IncludeAll, v.AllValue)
		}
	}

	ids := map[int]string{}
	type rect struct {
		name       string
		x, y, w, h int
	}
	var rects []rect
	panels := d.allPanels()
	for _, p := range panels {
		name := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("%s: id %d also used by %s", name, p.ID, prev)
		}
		ids[p.ID] = name
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v outside the 24-column grid", name, g)
		}
		// The panels of a collapsed row keep positions of their own, which
		// Grafana moves when the row opens: only the top level must tile.
		if slices.ContainsFunc(d.Panels, func(q panel) bool { return q.ID == p.ID }) {
			for _, r := range rects {
				if g.X < r.x+r.w && r.x < g.X+g.W && g.Y < r.y+r.h && r.y < g.Y+g.H {
					t.Errorf("%s overlaps %s", name, r.name)
				}
			}
			rects = append(rects, rect{name, g.X, g.Y, g.W, g.H})
		}
		if strings.TrimSpace(p.Title) == "" {
			t.Errorf("%s: no title", name)
		}
		if p.Type == "row" {
			continue
		}
		if len(strings.TrimSpace(p.Description)) < 40 {
			t.Errorf("%s: description %q: say what the panel shows and from which metric", name, p.Description)
		}
		if p.Datasource == nil || p.Datasource.UID != datasourceUID || p.Datasource.Type != "prometheus" {
			t.Errorf("%s: datasource %+v, want {prometheus %s}", name, p.Datasource, datasourceUID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no targets", name)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("%s: empty or repeated refId %q", name, tg.RefID)
			}
			refs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s target %s: no expr", name, tg.RefID)
			}
			if tg.Datasource != nil && tg.Datasource.UID != datasourceUID {
				t.Errorf("%s target %s: datasource %+v, want %s", name, tg.RefID, tg.Datasource, datasourceUID)
			}
		}
	}
	if len(panels) < 20 {
		t.Errorf("%d panels: the dashboard lost most of its panels", len(panels))
	}

	// Every expression parses, is an instant vector or a scalar (what a
	// panel can show), and every selector of a panel honours the job and
	// instance pickers with =~ (they are multi-value).
	for _, q := range dashboardQueries(t, d) {
		e, u, err := inspect(q.expr)
		if err != nil {
			t.Errorf("%s: %v\n  expr: %s", q.where, err, q.raw)
			continue
		}
		if typ := e.Type(); typ != parser.ValueTypeVector && typ != parser.ValueTypeScalar {
			t.Errorf("%s: %s is a %s, want a vector or scalar", q.where, q.raw, typ)
		}
		for _, vs := range u.selectors {
			for _, m := range vs.LabelMatchers {
				if strings.Contains(m.Value, "grafana_multi_") && m.Type != labels.MatchRegexp && m.Type != labels.MatchNotRegexp {
					t.Errorf("%s: %s uses a multi-value variable with %s; Grafana substitutes a|b, which needs =~", q.where, vs, m.Type)
				}
			}
			if !strings.HasPrefix(q.where, "panel ") {
				continue
			}
			for _, v := range []string{"job", "instance"} {
				if !hasMatcher(vs, v, labels.MatchRegexp, multiMarker(v)) {
					t.Errorf("%s: selector %s does not restrict %s=~\"$%s\"", q.where, q.raw, v, v)
				}
			}
		}
	}
}

func hasMatcher(vs *parser.VectorSelector, name string, typ labels.MatchType, value string) bool {
	for _, m := range vs.LabelMatchers {
		if m.Name == name && m.Type == typ && m.Value == value {
			return true
		}
	}
	return false
}

// knownSeverities are the severity labels the alerts may carry.
var knownSeverities = []string{"critical", "warning", "info"}

// TestRules checks every rule: an alert with a for, a known severity, a
// summary and a description, and an expression that parses as a vector.
func TestRules(t *testing.T) {
	r := loadRules(t)
	alerts := alertNames(r)
	if len(alerts) < 5 {
		t.Errorf("%d alerts: the rules file lost most of its alerts", len(alerts))
	}
	seen := map[string]bool{}
	for _, g := range r.Groups {
		for _, rl := range g.Rules {
			if rl.Alert == "" {
				t.Errorf("group %s: rule %q is not an alert", g.Name, rl.Record)
				continue
			}
			if seen[rl.Alert] {
				t.Errorf("alert %s defined twice", rl.Alert)
			}
			seen[rl.Alert] = true
			if !strings.HasPrefix(rl.Alert, "Cardinal") {
				t.Errorf("alert %s: name it Cardinal..., so that it sorts with the others", rl.Alert)
			}
			if rl.For == "" || rl.For == "0s" || rl.For == "0m" {
				t.Errorf("alert %s: no for: a single evaluation must not page", rl.Alert)
			}
			if !slices.Contains(knownSeverities, rl.Labels["severity"]) {
				t.Errorf("alert %s: severity %q, want one of %v", rl.Alert, rl.Labels["severity"], knownSeverities)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(rl.Annotations[a]) == "" {
					t.Errorf("alert %s: no %s annotation", rl.Alert, a)
				}
			}
			e, _, err := inspect(rl.Expr)
			if err != nil {
				t.Errorf("alert %s: %v\n  expr: %s", rl.Alert, err, rl.Expr)
				continue
			}
			if e.Type() != parser.ValueTypeVector {
				t.Errorf("alert %s: expr is a %s, want a vector", rl.Alert, e.Type())
			}
		}
	}
}

func alertNames(r *rulesDoc) []string {
	var names []string
	for _, g := range r.Groups {
		for _, rl := range g.Rules {
			if rl.Alert != "" {
				names = append(names, rl.Alert)
			}
		}
	}
	sort.Strings(names)
	return names
}

// rulesTestDoc is the part of a promtool test file that says which alerts
// are tested at which time, and whether they are expected to fire.
type rulesTestDoc struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		AlertRuleTest []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// TestRulesTestsCoverEveryAlert: the promtool tests must see every alert
// fire at least once and stay silent at least once.
func TestRulesTestsCoverEveryAlert(t *testing.T) {
	r := loadRules(t)
	raw, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc rulesTestDoc
	// Not strict: the rest of the file (input_series, promql_expr_test) is
	// promtool's to check.
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s: %v", rulesTestFile, err)
	}
	if !slices.Contains(doc.RuleFiles, "cardinal.rules.yml") {
		t.Errorf("%s: rule_files %v, want cardinal.rules.yml", rulesTestFile, doc.RuleFiles)
	}
	firing, silent := map[string]int{}, map[string]int{}
	for _, tc := range doc.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname]++
			} else {
				silent[a.Alertname]++
			}
		}
	}
	alerts := alertNames(r)
	for _, name := range alerts {
		if firing[name] == 0 {
			t.Errorf("alert %s: no promtool test where it fires", name)
		}
		if silent[name] == 0 {
			t.Errorf("alert %s: no promtool test where it must not fire", name)
		}
	}
	for name := range firing {
		if !slices.Contains(alerts, name) {
			t.Errorf("%s tests alert %s, which the rules do not define", rulesTestFile, name)
		}
	}
}

// TestChartCopiesAreIdentical: the chart cannot read files outside its
// directory, so it holds copies of the dashboard and the rules; they must
// not drift from the canonical files.
func TestChartCopiesAreIdentical(t *testing.T) {
	for _, canonical := range []string{dashboardFile, rulesFile} {
		want, err := os.ReadFile(canonical)
		if err != nil {
			t.Fatal(err)
		}
		cp := chartFilesDir + "/" + baseName(canonical)
		got, err := os.ReadFile(cp)
		if err != nil {
			t.Errorf("%v: copy %s there", err, canonical)
			continue
		}
		if !bytes.Equal(got, want) {
			from, to := strings.Replace(canonical, "../", "deploy/", 1), strings.Replace(cp, "../", "deploy/", 1)
			t.Errorf("%s differs from %s: edit the canonical file and copy it (cp %s %s)", to, from, from, to)
		}
	}
}

func baseName(path string) string { return path[strings.LastIndex(path, "/")+1:] }
