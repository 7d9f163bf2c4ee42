package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang/snappy"

	"github.com/cardinal-gateway/cardinal/bench/meshgen"
	"github.com/cardinal-gateway/cardinal/demo"
	"github.com/cardinal-gateway/cardinal/internal/htmltest"
	"github.com/cardinal-gateway/cardinal/internal/promtest"
	"github.com/cardinal-gateway/cardinal/internal/rwclient"
)

// Environment variables of the explorer's browser test.
const (
	// envChromium names the Chromium binary instead of /usr/bin/chromium.
	envChromium = "CHROMIUM_BINARY"
	// envScreenshot, when set, is where the test writes its full-page
	// screenshot of the explorer (PNG); docs/explorer.png is made so.
	envScreenshot = "CARDINAL_SCREENSHOT"
)

// chromiumBinary returns the Chromium to drive, skipping the test when
// there is none, unless CARDINAL_E2E=require.
func chromiumBinary(t testing.TB) string {
	t.Helper()
	path := os.Getenv(envChromium)
	if path == "" {
		path = "/usr/bin/chromium"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		msg := fmt.Sprintf("chromium not usable at %s (%v); install the chromium package (make deps) or set %s", path, err, envChromium)
		if os.Getenv(promtest.EnvE2E) == promtest.EnvE2ERequire {
			t.Fatalf("%s; %s=%s forbids skipping", msg, promtest.EnvE2E, promtest.EnvE2ERequire)
		}
		t.Skip(msg)
	}
	t.Logf("using %s: %s", path, strings.TrimSpace(string(out)))
	return path
}

// explorerConfig is the Istio preset (deploy/examples/istio.yml) with the
// downstream, a cap of 300 series per workload, request_id let through the
// allowlist (the label that slips past the rules, which the guard flags),
// the estimates over a 20s window (so that churn shows within the test),
// the guard in dry_run at 20 values, and an admin token.
func explorerConfig(t testing.TB, downstream, tokenFile, stateFile string) string {
	t.Helper()
	raw, err := os.ReadFile("../deploy/examples/istio.yml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(raw)
	for _, r := range [][2]string{
		{"url: http://127.0.0.1:9090/api/v1/write", "url: " + downstream},
		{"flush_interval: 15s", "flush_interval: 1s"},
		{"max_series_per_workload: 20000", "max_series_per_workload: 300"},
		{"regex: __name__|le|quantile|", "regex: __name__|le|quantile|request_id|"},
	} {
		next := strings.Replace(cfg, r[0], r[1], 1)
		if next == cfg {
			t.Fatalf("%q not found in the Istio preset", r[0])
		}
		cfg = next
	}
	return cfg + fmt.Sprintf(`
cardinality:
  enabled: true
  window: 20s
guard:
  mode: dry_run
  threshold: 5
admin:
  bearer_token_file: %s
  state_file: %s
`, tokenFile, stateFile)
}

// meshSender remote-writes the demo's mesh (bench/meshgen, as `cardinal
// demo` does) to url, one scrape a second with fresh injected values
// (churn), until stop.
type meshSender struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	codes  map[int]int
	steps  int
	errs   []string
}

func startMeshSender(t testing.TB, url string) *meshSender {
	opts := demo.DefaultOptions()
	gen := meshgen.New(meshgen.Config{Workloads: 24, PodsPerWorkload: opts.PodsPerWorkload, Seed: opts.Seed, Churn: true})
	ctx, cancel := context.WithCancel(context.Background())
	s := &meshSender{cancel: cancel, done: make(chan struct{}), codes: map[int]int{}}
	client := &http.Client{Timeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for step := 0; ; step++ {
			for _, req := range gen.WriteRequests(step, time.Now().UnixMilli(), opts.SeriesPerRequest) {
				raw, err := req.Marshal()
				if err != nil {
					s.mu.Lock()
					s.errs = append(s.errs, err.Error())
					s.mu.Unlock()
					return
				}
				code, err := rwclient.Post(ctx, client, url, snappy.Encode(nil, raw))
				s.mu.Lock()
				if err != nil && ctx.Err() == nil {
					s.errs = append(s.errs, err.Error())
				} else if err == nil {
					s.codes[code]++
				}
				s.mu.Unlock()
			}
			s.mu.Lock()
			s.steps++
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(s.stop)
	return s
}

func (s *meshSender) stop() {
	s.cancel()
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
	}
}

func (s *meshSender) status() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("%d scrapes sent, answers %v, errors %d %v", s.steps, s.codes, len(s.errs), s.errs[:min(len(s.errs), 3)])
}

// getJSONInto GETs url and decodes its JSON answer into v.
func getJSONInto(url string, v any) error {
	code, body := httpGet(url)
	if code != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", url, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		return fmt.Errorf("GET %s: %v in %.200s", url, err, body)
	}
	return nil
}

// explorerAPIs are the JSON answers the page's tables come from.
type explorerAPIs struct {
	Limiter []struct {
		Workload      string `json:"workload"`
		ActiveSeries  int64  `json:"active_series"`
		DroppedSeries int64  `json:"dropped_series"`
	}
	Estimates struct {
		Workloads []struct {
			Workload  string  `json:"workload"`
			SeriesIn  uint64  `json:"series_in"`
			SeriesOut uint64  `json:"series_out"`
			Churn     float64 `json:"churn"`
		} `json:"workloads"`
	}
	Labels struct {
		Groups []struct {
			Workload string `json:"workload"`
			Metric   string `json:"metric"`
			Labels   []struct {
				Name      string `json:"name"`
				ValuesIn  uint64 `json:"values_in"`
				ValuesOut uint64 `json:"values_out"`
			} `json:"labels"`
		} `json:"groups"`
	}
	Guard struct {
		Mode   string `json:"mode"`
		Active []struct {
			Workload, Metric, Label string
		} `json:"active"`
		Events []struct{ Action string } `json:"events"`
	}
	Collisions []struct {
		Series string `json:"series"`
	}
}

func readExplorerAPIs(base string) (*explorerAPIs, error) {
	var a explorerAPIs
	for path, v := range map[string]any{
		"/api/v1/cardinality": &a.Limiter, "/api/v1/cardinality/workloads": &a.Estimates,
		"/api/v1/cardinality/labels?top=50": &a.Labels, "/api/v1/guard": &a.Guard, "/api/v1/collisions": &a.Collisions,
	} {
		if err := getJSONInto(base+path, v); err != nil {
			return nil, err
		}
	}
	return &a, nil
}

// tableRows is htmltest.TableRows.
var tableRows = htmltest.TableRows

func column(rows [][]string, i int) []string {
	var out []string
	for _, r := range rows {
		if i < len(r) {
			out = append(out, r[i])
		}
	}
	return out
}

// TestE2EExplorer: a real Cardinal with the Istio preset, the estimates and
// the guard (dry_run), between the demo's mesh traffic and a real
// Prometheus 2.42. The explorer page at / shows the data of the JSON APIs,
// without JavaScript (plain net/http) and in headless Chromium, where the
// test also edits a workload's cap with the admin token and checks that
// GET /api/v1/limits has it.
func TestE2EExplorer(t *testing.T) {
	promtest.Binary(t)
	chromium := chromiumBinary(t)

	receiver := promtest.Start(t, promtest.Options{RemoteWriteReceiver: true})
	dir := t.TempDir()
	const token = "explorer-e2e-token"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := startCardinal(t, explorerConfig(t, receiver.WriteURL(), tokenFile, filepath.Join(dir, "state.json")))
	sender := startMeshSender(t, gw.URL+"/api/v1/write")

	// Wait until every section has something to show: workloads over their
	// cap, estimates with churn, the guard engaged on request_id, merged
	// outputs.
	var apis *explorerAPIs
	promtest.Eventually(t, 90*time.Second, func() (bool, string) {
		var err error
		if apis, err = readExplorerAPIs(gw.URL); err != nil {
			return false, err.Error()
		}
		folded, churning := false, false
		for _, w := range apis.Limiter {
			folded = folded || w.DroppedSeries > 0
		}
		for _, w := range apis.Estimates.Workloads {
			churning = churning || w.Churn > 0
		}
		switch {
		case !folded:
			return false, "no workload folded yet; " + sender.status()
		case !churning:
			return false, "no churn estimated yet; " + sender.status()
		case len(apis.Guard.Active) == 0:
			return false, "the guard has not engaged yet; " + sender.status()
		case len(apis.Collisions) == 0 || len(apis.Labels.Groups) == 0:
			return false, "no collisions or labels yet"
		}
		// request_id, new every scrape, must have caught up with the labels
		// of bounded values (le has 26) before the page is read. (A tie
		// is enough: the page must list it among the first labels.)
		var ids, others uint64
		var other string
		for _, g := range apis.Labels.Groups {
			for _, l := range g.Labels {
				if l.Name == "request_id" {
					ids = max(ids, l.ValuesOut)
				} else if l.ValuesOut > others {
					others, other = l.ValuesOut, l.Name
				}
			}
		}
		if ids < others {
			return false, fmt.Sprintf("request_id has %d values as forwarded, %s %d; ", ids, other, others) + sender.status()
		}
		return true, ""
	})
	if apis.Guard.Mode != "dry_run" {
		t.Errorf("guard mode %q", apis.Guard.Mode)
	}

	// JSON compatibility: the old index for JSON clients.
	for _, target := range []string{"/?format=json", "/"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, gw.URL+target, nil)
		if target == "/" {
			req.Header.Set("Accept", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		var index struct {
			Service   string
			Endpoints []struct{ Method, Path string }
		}
		err = json.NewDecoder(resp.Body).Decode(&index)
		resp.Body.Close()
		cancel()
		if err != nil || index.Service != "cardinal" || len(index.Endpoints) < 10 || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s as JSON: %v %+v %s", target, err, index, resp.Header.Get("Content-Type"))
		}
	}

	// Without JavaScript: the tables are in the HTML the server sends.
	code, page := httpGet(gw.URL + "/")
	if code != http.StatusOK {
		t.Fatalf("GET /: %d %s", code, page)
	}
	checkExplorerPage(t, "plain HTTP", apis, func(id string) [][]string { return tableRows(page, id) })
	for _, api := range []string{"api/v1/cardinality?top=20", "api/v1/cardinality/workloads?top=20", "api/v1/cardinality/labels?top=20", "api/v1/collisions?top=20", "api/v1/guard", "api/v1/limits", "metrics"} {
		if !strings.Contains(page, `href="`+api+`"`) {
			t.Errorf("the page does not link %s", api)
		}
	}

	// In Chromium.
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
		chromedp.CombinedOutput(&promtest.LogBuffer{}),
	)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithErrorf(t.Logf))
	defer cancelBrowser()
	// The first Run starts the browser, which lives as long as browser;
	// the later steps run under a deadline of their own.
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("cannot start chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(browser, 90*time.Second)
	defer cancel()
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("chromium: %s: %v", what, err)
		}
	}
	run("open /", chromedp.Navigate(gw.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#workloads-table")))
	if apis, err := readExplorerAPIs(gw.URL); err == nil {
		checkExplorerPage(t, "chromium", apis, func(id string) [][]string {
			rows, err := chromedp.Run(ctx, chromedp.Evaluate[[][]string](`Array.from(document.querySelectorAll(`+strconv.Quote("#"+id+" tbody tr")+`),
				tr => Array.from(tr.querySelectorAll("td"), td => td.textContent.replace(/\s+/g, " ").trim()))`))
			if err != nil {
				t.Fatalf("chromium: rows of %s: %v", id, err)
			}
			return rows
		})
	}
	// The script ran: editing is on.
	if js, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.classList.contains("js") && !document.querySelector("#limits-table fieldset").disabled`)); err != nil || !js {
		t.Fatalf("the page's script did not run in chromium (%v)", err)
	}

	// Edit the cap of the first workload of the limits table: a wrong
	// token first, then the right one.
	workload, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#limits-table tbody tr").dataset.workload`))
	if err != nil || workload == "" {
		t.Fatalf("no workload in the limits table: %v", err)
	}
	form := `form.limit-form[data-workload=` + strconv.Quote(workload) + `]`
	input := chromedp.CSS(form + ` input[name="max_series"]`)
	submit := chromedp.CSS(form + ` button[type="submit"]`)
	const newCap = 4321
	run("a cap with a wrong token",
		chromedp.SendKeys(chromedp.CSS("#admin-token"), "not-the-token"),
		clearInput(input), chromedp.SendKeys(input, strconv.Itoa(newCap)), chromedp.Click(submit),
		chromedp.Poll[chromedp.Void](`document.getElementById("limit-status").textContent.includes("401")`, chromedp.WithPollingTimeout(10*time.Second)),
	)
	limits := func() map[string]int {
		t.Helper()
		var l struct{ Overrides map[string]int }
		if err := getJSONInto(gw.URL+"/api/v1/limits", &l); err != nil {
			t.Fatal(err)
		}
		return l.Overrides
	}
	if n, ok := limits()[workload]; ok {
		t.Fatalf("a wrong token set the cap of %s to %d", workload, n)
	}
	run("a cap with the admin token",
		clearInput(chromedp.CSS("#admin-token")), chromedp.SendKeys(chromedp.CSS("#admin-token"), token),
		clearInput(input), chromedp.SendKeys(input, strconv.Itoa(newCap)), chromedp.Click(submit),
		chromedp.Poll[chromedp.Void](`document.getElementById("limit-status").textContent.includes("set to 4,321")`, chromedp.WithPollingTimeout(10*time.Second)),
	)
	if n, ok := limits()[workload]; !ok || n != newCap {
		t.Fatalf("after the edit in the page, GET /api/v1/limits has %s: %d (%v), want %d", workload, n, ok, newCap)
	}
	// The page refreshed the row: the new cap, from the API.
	row := `document.querySelector("#limits-table tr[data-workload=` + strings.ReplaceAll(strconv.Quote(workload), `"`, `\"`) + `]")`
	run("the row shows the new cap",
		chromedp.Poll[chromedp.Void](row+`.textContent.includes("4,321") && `+row+`.textContent.includes("api")`, chromedp.WithPollingTimeout(10*time.Second)),
	)
	if code, body := httpGet(gw.URL + "/api/v1/limits/" + workload); code != http.StatusOK || !strings.Contains(body, `"source":"api"`) {
		t.Errorf("GET /api/v1/limits/%s: %d %s", workload, code, body)
	}

	// The screenshot, at 1280px, of a page with fewer rows.
	run("the screenshot page", chromedp.Navigate(gw.URL+"/?top=8"), chromedp.WaitVisible(chromedp.CSS("#workloads-table")))
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if len(png) < 10_000 || !strings.HasPrefix(string(png), "\x89PNG") {
		t.Fatalf("the screenshot is %d bytes, not a PNG", len(png))
	}
	if path := os.Getenv(envScreenshot); path != "" {
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot written to %s (%d bytes)", path, len(png))
	}

	// Remove the override in the page: the default cap applies again.
	run("remove the override",
		chromedp.Navigate(gw.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#limits-table")),
		chromedp.SendKeys(chromedp.CSS("#admin-token"), token),
		chromedp.Click(chromedp.CSS(form+` button.delete`)),
		chromedp.Poll[chromedp.Void](`document.getElementById("limit-status").textContent.includes("removed")`, chromedp.WithPollingTimeout(10*time.Second)),
	)
	if n, ok := limits()[workload]; ok {
		t.Errorf("the override of %s is still there after Remove override: %d", workload, n)
	}

	sender.stop()
	t.Logf("mesh sender: %s", sender.status())
	sender.mu.Lock()
	defer sender.mu.Unlock()
	if sender.codes[http.StatusNoContent] == 0 {
		t.Errorf("no write was accepted: %v", sender.codes)
	}
	if bad := sender.codes[http.StatusBadRequest] + sender.codes[http.StatusInternalServerError]; bad > 0 {
		t.Errorf("%d writes answered 400 or 500: %v", bad, sender.codes)
	}
}

// clearInput empties an input, as selecting its text and deleting it does.
func clearInput(sel chromedp.CSS) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](`document.querySelector(` + strconv.Quote(string(sel)) + `).value = ""`)
}

// checkExplorerPage checks the page's tables, read with rows, against the
// APIs' answers, read just before: names must be there; counts that the
// traffic keeps changing are not compared.
func checkExplorerPage(t *testing.T, how string, apis *explorerAPIs, rows func(id string) [][]string) {
	t.Helper()
	// The workloads of /api/v1/cardinality, largest first: the largest are
	// in the table (the order of the ones near the cut may change between
	// the two reads).
	names := column(rows("workloads-table"), 0)
	if len(names) == 0 {
		t.Errorf("%s: the workloads table is empty", how)
	}
	for _, w := range apis.Limiter[:min(3, len(apis.Limiter))] {
		if !slices.Contains(names, w.Workload) {
			t.Errorf("%s: workload %s of /api/v1/cardinality is not in the workloads table %q", how, w.Workload, names)
		}
	}
	est := column(rows("est-workloads-table"), 0)
	for _, w := range apis.Estimates.Workloads[:min(3, len(apis.Estimates.Workloads))] {
		if !slices.Contains(est, w.Workload) {
			t.Errorf("%s: workload %s of /api/v1/cardinality/workloads is not in the estimates table %q", how, w.Workload, est)
		}
	}
	if len(rows("growth-table")) == 0 {
		t.Errorf("%s: no workload in the growth table, while the API estimates churn", how)
	}
	// request_id, let through the rules, has the most values as
	// forwarded: it leads the labels.
	labels := rows("labels-table")
	if !slices.Contains(column(labels[:min(5, len(labels))], 0), "request_id") {
		t.Errorf("%s: request_id is not among the first labels of %q", how, labels[:min(5, len(labels))])
	}
	apiLabels := map[string]bool{}
	for _, g := range apis.Labels.Groups {
		for _, l := range g.Labels {
			apiLabels[l.Name] = true
		}
	}
	for _, name := range column(labels, 0) {
		if !apiLabels[name] {
			t.Errorf("%s: label %s is in the page but not in /api/v1/cardinality/labels", how, name)
		}
	}
	dropped := map[string]string{}
	for _, r := range rows("dropped-table") {
		dropped[r[0]] = r[1]
	}
	for _, reason := range []string{"relabel", "merged", "limit", "invalid", "merge_capacity", "rejected"} {
		if _, ok := dropped[reason]; !ok {
			t.Errorf("%s: reason %s not in the dropped table %v", how, reason, dropped)
		}
	}
	for _, reason := range []string{"relabel", "merged", "limit"} {
		if n, err := strconv.ParseFloat(strings.ReplaceAll(dropped[reason], ",", ""), 64); err != nil || n <= 0 {
			t.Errorf("%s: dropped %s = %q, want a positive count", how, reason, dropped[reason])
		}
	}
	mitigated := column(rows("mitigations-table"), 0)
	if len(mitigated) == 0 || !slices.Contains(mitigated, "request_id") {
		t.Errorf("%s: mitigations %q, want request_id (the API has %+v)", how, mitigated, apis.Guard.Active[:min(2, len(apis.Guard.Active))])
	}
	if ev := rows("events-table"); len(ev) == 0 || !slices.Contains(column(ev, 1), "engaged") {
		t.Errorf("%s: events %q", how, ev)
	}
	// Many merged outputs have as many inputs, and their counts change
	// between the reads: one of the API's must be there.
	col := column(rows("collisions-table"), 0)
	found := false
	for _, c := range apis.Collisions {
		found = found || slices.Contains(col, c.Series)
	}
	if !found {
		t.Errorf("%s: none of the first collisions of the API is in the collisions table %q", how, col[:min(3, len(col))])
	}
	limits := rows("limits-table")
	if len(limits) == 0 || len(limits[0]) < 5 {
		t.Errorf("%s: limits table %q", how, limits)
	}
}
