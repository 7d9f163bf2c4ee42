package server

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// explorerCell returns the text of the cells of the row of table id whose
// opening tag holds attr, tags stripped; nil when there is none.
func explorerCells(page, id, attr string) []string {
	_, rest, ok := strings.Cut(page, `id="`+id+`"`)
	if !ok {
		return nil
	}
	table, _, _ := strings.Cut(rest, "</table>")
	for _, tr := range regexp.MustCompile(`(?s)<tr([^>]*)>(.*?)</tr>`).FindAllStringSubmatch(table, -1) {
		if !strings.Contains(tr[1], attr) {
			continue
		}
		var cells []string
		for _, td := range regexp.MustCompile(`(?s)<td[^>]*>(.*?)</td>`).FindAllStringSubmatch(tr[2], -1) {
			text := regexp.MustCompile(`(?s)<[^>]*>`).ReplaceAllString(td[1], " ")
			cells = append(cells, strings.Join(strings.Fields(text), " "))
		}
		return cells
	}
	return nil
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, body := do(t, http.MethodGet, url, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, body)
	}
}

// The explorer page shows the numbers the JSON APIs and /metrics answer
// with, read from the same gateway.
func TestExplorerShowsWhatTheAPIsSay(t *testing.T) {
	ds := newDownstream(t)
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, reg := newServer(t, writeConfig(t, dir, ds.URL, `relabel_configs:
  - action: labeldrop
    regex: user_id
  - action: drop
    source_labels: [__name__]
    regex: debug_.*
limits:
  workload_labels: [namespace, app]
  max_series_per_workload: 4
cardinality:
  enabled: true
guard:
  mode: dry_run
  threshold: 3
admin:
  bearer_token_file: `+token+"\n"))
	base := serveHandler(t, s)

	var samples []sample
	for i := range 12 {
		samples = append(samples, sample{labels: []string{"__name__", "http_requests_total", "namespace", "shop", "app", "cart",
			"path", fmt.Sprintf("/p%d", i%6), "user_id", fmt.Sprintf("u%d", i)}, value: float64(i), ts: 1000})
	}
	samples = append(samples,
		sample{labels: []string{"__name__", "debug_x", "namespace", "shop", "app", "cart"}, value: 1, ts: 1000},
		sample{labels: []string{"__name__", "up", "namespace", "pay", "app", "<api>"}, value: 1, ts: 1000})
	if code, body := remoteWrite(t, base, samples...); code != http.StatusNoContent {
		t.Fatalf("write: %d %s", code, body)
	}
	s.Gateway().EvaluateGuard()

	resp, page := do(t, http.MethodGet, base+"/", "")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	var lim []struct {
		Workload       string `json:"workload"`
		ActiveSeries   int64  `json:"active_series"`
		DroppedSeries  int64  `json:"dropped_series"`
		DroppedSamples uint64 `json:"dropped_samples"`
	}
	getJSON(t, base+"/api/v1/cardinality", &lim)
	if len(lim) != 2 {
		t.Fatalf("/api/v1/cardinality: %+v", lim)
	}
	for _, w := range lim {
		row := explorerCells(page, "workloads-table", `data-workload="`+html.EscapeString(w.Workload))
		if row == nil {
			t.Fatalf("workload %s not in the page's workloads table", w.Workload)
		}
		if want := []string{strconv.FormatInt(w.ActiveSeries, 10), strconv.FormatInt(w.DroppedSeries, 10), strconv.FormatUint(w.DroppedSamples, 10)}; row[1] != want[0] || row[4] != want[1] || row[5] != want[2] {
			t.Errorf("workload %s: page %q, API %+v", w.Workload, row, w)
		}
	}
	if !strings.Contains(page, "pay/&lt;api&gt;") || strings.Contains(page, "pay/<api>") {
		t.Error("a workload name is not escaped")
	}

	var wls struct {
		Workloads []struct {
			Workload  string `json:"workload"`
			SeriesIn  uint64 `json:"series_in"`
			SeriesOut uint64 `json:"series_out"`
		} `json:"workloads"`
	}
	getJSON(t, base+"/api/v1/cardinality/workloads", &wls)
	if len(wls.Workloads) == 0 {
		t.Fatal("no estimated workload")
	}
	for _, w := range wls.Workloads {
		row := explorerCells(page, "est-workloads-table", `data-workload="`+html.EscapeString(w.Workload))
		if row == nil || row[1] != strconv.FormatUint(w.SeriesIn, 10) || row[2] != strconv.FormatUint(w.SeriesOut, 10) {
			t.Errorf("estimated workload %s: page %q, API %+v", w.Workload, row, w)
		}
	}

	var labels struct {
		Groups []struct {
			Workload, Metric string
			Labels           []struct {
				Name      string `json:"name"`
				ValuesIn  uint64 `json:"values_in"`
				ValuesOut uint64 `json:"values_out"`
			} `json:"labels"`
		} `json:"groups"`
	}
	getJSON(t, base+"/api/v1/cardinality/labels?workload=shop/cart&metric=http_requests_total", &labels)
	if len(labels.Groups) != 1 || len(labels.Groups[0].Labels) == 0 {
		t.Fatalf("labels: %+v", labels)
	}
	_, byIn := do(t, http.MethodGet, base+"/?labels=in", "")
	for _, l := range labels.Groups[0].Labels {
		row := explorerCells(byIn, "labels-table", `data-label="`+l.Name+`" data-workload="shop/cart" data-metric="http_requests_total"`)
		if row == nil || row[3] != strconv.FormatUint(l.ValuesIn, 10) || row[4] != strconv.FormatUint(l.ValuesOut, 10) {
			t.Errorf("label %s: page %q, API %+v", l.Name, row, l)
		}
	}
	if row := explorerCells(byIn, "labels-table", `data-label="user_id"`); row == nil || row[3] != "12" || row[4] != "0" || !strings.Contains(row[5], "removed by the rules") {
		t.Errorf("user_id, which the rules drop: %q", row)
	}

	fams := gather(t, reg)
	for _, reason := range []string{"relabel", "merged", "limit", "invalid", "merge_capacity", "rejected"} {
		want := metricValue(fams, "cardinal_dropped_samples_total", "reason", reason)
		row := explorerCells(page, "dropped-table", `data-reason="`+reason+`"`)
		if row == nil || row[1] != strconv.FormatFloat(want, 'f', -1, 64) {
			t.Errorf("dropped %s: page %q, /metrics %v", reason, row, want)
		}
	}
	if metricValue(fams, "cardinal_dropped_samples_total", "reason", "relabel") != 1 {
		t.Error("the test meant one sample dropped by the rules")
	}

	// The guard saw path with 6 values over its threshold of 3.
	var g struct {
		Mode   string `json:"mode"`
		Active []struct {
			Label string `json:"label"`
		} `json:"active"`
	}
	getJSON(t, base+"/api/v1/guard", &g)
	if g.Mode != "dry_run" || len(g.Active) == 0 {
		t.Fatalf("guard: %+v", g)
	}
	for _, m := range g.Active {
		if !strings.Contains(page, `<td class="name">`+m.Label+`</td>`) {
			t.Errorf("mitigation of %s not on the page", m.Label)
		}
	}

	var collisions []struct{ Series string }
	getJSON(t, base+"/api/v1/collisions", &collisions)
	if len(collisions) == 0 {
		t.Fatal("no collision: user_id was dropped, inputs must have collapsed")
	}
	if !strings.Contains(page, html.EscapeString(collisions[0].Series)) {
		t.Errorf("collision %s not on the page", collisions[0].Series)
	}
	if row := explorerCells(page, "limits-table", `data-workload="shop/cart"`); row == nil || row[2] != "4" || row[3] != "default" {
		t.Errorf("limits row: %q", row)
	}
}

// Without estimates and guard the page says they are off.
func TestExplorerSaysWhatIsOff(t *testing.T) {
	ds := newDownstream(t)
	s, _ := newServer(t, writeConfig(t, t.TempDir(), ds.URL, ""))
	base := serveHandler(t, s)
	_, page := do(t, http.MethodGet, base+"/", "")
	for _, want := range []string{"Estimates are off (cardinality.enabled: false)", "The guard is off", "Editing is disabled"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}
