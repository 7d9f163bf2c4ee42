package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cardinal-gateway/cardinal/guard"
	"github.com/cardinal-gateway/cardinal/internal/promtest"
)

// guardExporter serves a mesh-like counter family whose series are
// workload × code × path, and, from the first scrape on, a header label
// nobody listed (x_request_id) with fresh values every scrape: each value's
// series lives for one scrape, then is gone (the sender marks it stale).
// A second family explodes the same way on session_id, which the guard is
// told to protect. Scrape n exposes step min(n, lastStep); after lastStep
// the exposition stays as it was.
type guardExporter struct {
	lastStep, idsPerStep int
	scrapes              atomic.Int64

	mu sync.Mutex
	// last holds the last value exposed of every series, by its labels
	// (sorted k=v, comma-separated), the truth the receiver is held to.
	last map[string]float64
}

const (
	guardFamily     = "app_requests_total"
	protectedFamily = "app_sessions_total"
)

func (e *guardExporter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	step := min(int(e.scrapes.Add(1))-1, e.lastStep)
	var b []byte
	e.mu.Lock()
	emit := func(name string, kv map[string]string, v float64) {
		keys := make([]string, 0, len(kv))
		for k := range kv {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var parts, key []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%q", k, kv[k]))
			key = append(key, k+"="+kv[k])
		}
		b = fmt.Appendf(b, "%s{%s} %s\n", name, strings.Join(parts, ","), strconv.FormatFloat(v, 'f', -1, 64))
		e.last[name+"{"+strings.Join(key, ",")+"}"] = v
	}
	b = append(b, "# TYPE "+guardFamily+" counter\n"...)
	for _, app := range []string{"cart", "search"} {
		for _, code := range []string{"200", "503"} {
			for p := range 3 {
				kv := map[string]string{"namespace": "shop", "app": app, "code": code, "path": fmt.Sprintf("/p%d", p)}
				emit(guardFamily, kv, float64(100*(step+1)+p))
			}
		}
	}
	for i := range e.idsPerStep {
		kv := map[string]string{"namespace": "shop", "app": []string{"cart", "search"}[i%2], "code": []string{"200", "503"}[i/2%2],
			"path": fmt.Sprintf("/p%d", i%3), "x_request_id": fmt.Sprintf("req-%d-%d", step, i)}
		emit(guardFamily, kv, float64(1+i%4))
	}
	b = append(b, "# TYPE "+protectedFamily+" counter\n"...)
	for i := range e.idsPerStep {
		emit(protectedFamily, map[string]string{"namespace": "shop", "app": "cart", "session_id": fmt.Sprintf("s-%d-%d", step, i)}, 1)
	}
	e.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = w.Write(b)
}

// truth sums the last exposed value of every series of family by the
// labels keep, and counts its series.
func (e *guardExporter) truth(family string, keep ...string) (map[string]float64, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]float64{}
	n := 0
	for ls, v := range e.last {
		if !strings.HasPrefix(ls, family+"{") {
			continue
		}
		n++
		var parts []string
		for _, kv := range strings.Split(strings.TrimSuffix(strings.TrimPrefix(ls, family+"{"), "}"), ",") {
			if k, _, _ := strings.Cut(kv, "="); slices.Contains(keep, k) {
				parts = append(parts, kv)
			}
		}
		out[strings.Join(parts, ",")] += v
	}
	return out, n
}

// exact counts, for one app of guardFamily, the distinct x_request_id
// values exposed and the series.
func (e *guardExporter) exact(app string) (ids, series int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for ls := range e.last {
		if !strings.HasPrefix(ls, guardFamily+"{") || !strings.Contains(ls, "app="+app+",") {
			continue
		}
		series++
		if strings.Contains(ls, "x_request_id=") {
			ids++
		}
	}
	return ids, series
}

func guardSum(ctx context.Context, receiver *promtest.Prometheus, family string, keep ...string) (map[string]float64, error) {
	samples, err := receiver.Query(ctx, fmt.Sprintf("sum by (%s) (%s)", strings.Join(keep, ","), family))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	keep = slices.Sorted(slices.Values(keep)) // the order truth uses
	for _, s := range samples {
		var parts []string
		for _, k := range keep {
			parts = append(parts, k+"="+s.Labels[k])
		}
		out[strings.Join(parts, ",")] = s.Value
	}
	return out, nil
}

func guardStatus(t testing.TB, base string) guard.Status {
	t.Helper()
	code, body := httpGet(base + "/api/v1/guard")
	var st guard.Status
	if code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil {
		t.Fatalf("GET /api/v1/guard: %d %s", code, body)
	}
	return st
}

// TestE2EGuard: real Prometheus scrapes mesh-like counters where one
// header label explodes, and remote-writes through Cardinal, whose guard
// has no rule for it, to a real Prometheus receiver. In enforce the
// receiver's series stay bounded and the totals per remaining label set are
// exact; the protected label is never aggregated; in dry_run nothing
// changes but the event appears.
func TestE2EGuard(t *testing.T) {
	promtest.Binary(t)
	for _, mode := range []string{"enforce", "dry_run"} {
		t.Run(mode, func(t *testing.T) { testE2EGuard(t, mode) })
	}
}

func testE2EGuard(t *testing.T, mode string) {
	const (
		lastStep   = 12
		idsPerStep = 8
		threshold  = 30
	)
	exp := &guardExporter{lastStep: lastStep, idsPerStep: idsPerStep, last: map[string]float64{}}
	exporter := httptest.NewServer(exp)
	t.Cleanup(exporter.Close)
	receiver := promtest.Start(t, promtest.Options{RemoteWriteReceiver: true})
	gw := startCardinal(t, fmt.Sprintf(`
downstream:
  url: %s
  max_retries: 5
merge:
  flush_interval: 1s
guard:
  mode: %s
  threshold: %d
  window: 2m
  lift_after: 30m
  evaluation_interval: 500ms
  workload_labels: [namespace, app]
  protect: [session_id]
`, receiver.WriteURL(), mode, threshold))
	sender := promtest.Start(t, promtest.Options{
		Agent:          true,
		ScrapeTargets:  []string{strings.TrimPrefix(exporter.URL, "http://")},
		RemoteWriteURL: gw.URL + "/api/v1/write",
	})
	_ = sender
	ctx := context.Background()
	keep := []string{"namespace", "app", "code", "path"}
	wantTotals, exposedSeries := map[string]float64{}, 0
	promtest.Eventually(t, 90*time.Second, func() (bool, string) {
		if n := exp.scrapes.Load(); n <= lastStep+2 {
			return false, fmt.Sprintf("%d scrapes so far", n)
		}
		wantTotals, exposedSeries = exp.truth(guardFamily, keep...)
		got, err := guardSum(ctx, receiver, guardFamily, keep...)
		if err != nil {
			return false, err.Error()
		}
		if mode == "dry_run" {
			// Nothing changes: every series is there as exposed,
			// including the last step's x_request_id ones.
			series, err := receiver.Series(ctx, guardFamily+`{x_request_id=~"req-`+strconv.Itoa(lastStep)+`-.*"}`)
			if err != nil || len(series) != idsPerStep {
				return false, fmt.Sprintf("dry_run: %d of the last step's %d request series at the receiver (err %v)", len(series), idsPerStep, err)
			}
			return true, ""
		}
		if fmt.Sprint(got) != fmt.Sprint(wantTotals) {
			return false, fmt.Sprintf("totals per %v\n got %v\nwant %v", keep, got, wantTotals)
		}
		return true, ""
	})
	// The estimates against the exact counts of what was exposed (the
	// whole test fits in the window): per workload, the distinct
	// x_request_id values and the series before the rules.
	for _, app := range []string{"cart", "search"} {
		code, body := httpGet(gw.URL + "/api/v1/cardinality/labels?workload=shop/" + app + "&metric=" + guardFamily + "&top=50")
		var ans struct {
			Groups []struct {
				SeriesIn uint64 `json:"series_in"`
				Labels   []struct {
					Name      string `json:"name"`
					ValuesOut uint64 `json:"values_out"`
				} `json:"labels"`
			} `json:"groups"`
		}
		if code != http.StatusOK || json.Unmarshal([]byte(body), &ans) != nil || len(ans.Groups) != 1 {
			t.Fatalf("GET /api/v1/cardinality/labels for shop/%s: %d %s", app, code, body)
		}
		ids, series := exp.exact(app)
		var values uint64
		for _, l := range ans.Groups[0].Labels {
			if l.Name == "x_request_id" {
				values = l.ValuesOut
			}
		}
		for _, c := range []struct {
			what      string
			got, want uint64
		}{{"x_request_id values", values, uint64(ids)}, {"series", ans.Groups[0].SeriesIn, uint64(series)}} {
			tol := 4 * 0.0163 * float64(c.want)
			if c.want <= 32 {
				tol = 0
			}
			if math.Abs(float64(c.got)-float64(c.want)) > tol {
				t.Errorf("shop/%s %s: estimated %d, exact %d (tolerance %.1f)", app, c.what, c.got, c.want, tol)
			}
		}
	}
	st := guardStatus(t, gw.URL)
	var engaged *guard.Event
	for i := range st.Events {
		if st.Events[i].Action == "engaged" && st.Events[i].Label == "x_request_id" {
			engaged = &st.Events[i]
		}
		if st.Events[i].Label == "session_id" {
			t.Errorf("the guard acted on the protected session_id: %+v", st.Events[i])
		}
	}
	if engaged == nil || engaged.Mode != mode || engaged.Values < threshold || engaged.Metric != guardFamily {
		t.Fatalf("no %s engagement on x_request_id: %+v", mode, st.Events)
	}
	if !strings.Contains(gw.log.String(), "guard engaged") {
		t.Errorf("the engagement was not logged")
	}
	// Every series the receiver ever got, over the whole test.
	all, err := receiver.Series(ctx, guardFamily)
	if err != nil {
		t.Fatal(err)
	}
	withID := 0
	for _, s := range all {
		if s["x_request_id"] != "" {
			withID++
		}
	}
	total := (lastStep + 1) * idsPerStep
	t.Logf("%s: %d series exposed, %d at the receiver (%d with x_request_id of %d); event %+v", mode, exposedSeries, len(all), withID, total, *engaged)
	switch mode {
	case "enforce":
		// Until the guard engaged: per workload (cart and search, each
		// half of the ids), the threshold's worth of values, plus what
		// arrived within the evaluation interval and a scrape.
		if bound := 2 * (threshold + 2*idsPerStep/2); withID > bound {
			t.Errorf("enforce: %d x_request_id series reached the receiver, want at most %d of the %d exposed", withID, bound, total)
		}
	case "dry_run":
		if withID != total {
			t.Errorf("dry_run: %d x_request_id series at the receiver, want all %d", withID, total)
		}
	}
	// The protected family is never aggregated: all of its series arrive.
	prot, err := receiver.Series(ctx, protectedFamily)
	if err != nil {
		t.Fatal(err)
	}
	if len(prot) != total {
		t.Errorf("%s: %d series of %s at the receiver, want all %d (session_id is protected)", mode, len(prot), protectedFamily, total)
	}
	// One engagement per workload (cart and search), counted.
	code, body := httpGet(gw.URL + "/metrics")
	if want := fmt.Sprintf(`cardinal_guard_events_total{action="engaged",mode=%q} 2`, mode); code != http.StatusOK || !strings.Contains(body, want) {
		t.Errorf("/metrics lacks %s", want)
	}
}
