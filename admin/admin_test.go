package admin

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/cardinal-gateway/cardinal/limiter"
	"github.com/cardinal-gateway/cardinal/wire"
)

const testToken = "s3cret"

// requireBearer mimics server.requireAdmin.
func requireBearer(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(got), []byte(testToken)) != 1 {
			WriteError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next(w, r)
	}
}

type fixture struct {
	l     *limiter.Limiter
	srv   *httptest.Server
	state string
}

func newFixture(t *testing.T, s limiter.Settings) *fixture {
	t.Helper()
	if s.WorkloadLabels == nil {
		s.WorkloadLabels = []string{"namespace", "app"}
	}
	fx := &fixture{
		l:     limiter.New(limiter.Options{Settings: s}),
		state: filepath.Join(t.TempDir(), "limits.json"),
	}
	r := chi.NewRouter()
	Mount(r, Options{
		Limiter:      fx.l,
		StateFile:    func() string { return fx.state },
		RequireAdmin: requireBearer,
	})
	fx.srv = httptest.NewServer(r)
	t.Cleanup(fx.srv.Close)
	return fx
}

// do sends a request and returns the status and the body.
func (fx *fixture) do(t *testing.T, method, path, body string, token bool) (int, string, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, fx.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token {
		req.Header.Set("Authorization", "Bearer "+testToken)
	}
	resp, err := fx.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func (fx *fixture) getLimits(t *testing.T) limitsResponse {
	t.Helper()
	code, body, _ := fx.do(t, http.MethodGet, "/api/v1/limits", "", false)
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/limits = %d %s", code, body)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatalf("GET /api/v1/limits body %q: %v", body, err)
	}
	if len(raw) != 2 || raw["default"] == nil || raw["overrides"] == nil {
		t.Fatalf("GET /api/v1/limits body %s, want exactly default and overrides", body)
	}
	var lr limitsResponse
	if err := json.Unmarshal([]byte(body), &lr); err != nil {
		t.Fatal(err)
	}
	return lr
}

func wantJSONError(t *testing.T, body string) {
	t.Helper()
	var e map[string]string
	if err := json.Unmarshal([]byte(body), &e); err != nil || len(e) != 1 || e["error"] == "" {
		t.Fatalf("body %q is not {\"error\": \"...\"}", body)
	}
}

func loadState(t *testing.T, path string) map[string]int {
	t.Helper()
	m, err := LoadState(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestGetLimits(t *testing.T) {
	fx := newFixture(t, limiter.Settings{Default: 1000, Overrides: map[string]int{"shop/cart": 10}})
	lr := fx.getLimits(t)
	if lr.Default != 1000 || !maps.Equal(lr.Overrides, map[string]int{"shop/cart": 10}) {
		t.Fatalf("limits = %+v", lr)
	}
	// No override at all is {} and not null.
	fx = newFixture(t, limiter.Settings{Default: 7})
	_, body, hdr := fx.do(t, http.MethodGet, "/api/v1/limits", "", false)
	if strings.TrimSpace(body) != `{"default":7,"overrides":{}}` {
		t.Fatalf("body = %s", body)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
}

func TestPutLimit(t *testing.T) {
	fx := newFixture(t, limiter.Settings{Default: 1000, Overrides: map[string]int{"shop/cart": 10}})
	code, body, _ := fx.do(t, http.MethodPut, "/api/v1/limits/payments%2Fcheckout", `{"max_series": 50}`, true)
	if code != http.StatusOK {
		t.Fatalf("PUT = %d %s", code, body)
	}
	var resp struct {
		Workload  string `json:"workload"`
		MaxSeries int    `json:"max_series"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil || resp.Workload != "payments/checkout" || resp.MaxSeries != 50 {
		t.Fatalf("PUT body %s (%v)", body, err)
	}
	lr := fx.getLimits(t)
	if want := map[string]int{"payments/checkout": 50, "shop/cart": 10}; lr.Default != 1000 || !maps.Equal(lr.Overrides, want) {
		t.Fatalf("limits = %+v, want overrides %v", lr, want)
	}
	if got := fx.l.Limit("payments/checkout"); got != 50 {
		t.Fatalf("Limit = %d, want 50", got)
	}
	// Only the API override is persisted, not the config's.
	if got, want := loadState(t, fx.state), map[string]int{"payments/checkout": 50}; !maps.Equal(got, want) {
		t.Fatalf("state file = %v, want %v", got, want)
	}
	// 0 means unlimited and is accepted; a second PUT replaces.
	if code, body, _ := fx.do(t, http.MethodPut, "/api/v1/limits/payments%2Fcheckout", `{"max_series":0}`, true); code != http.StatusOK {
		t.Fatalf("PUT 0 = %d %s", code, body)
	}
	if got := fx.l.Limit("payments/checkout"); got != 0 {
		t.Fatalf("Limit = %d, want 0", got)
	}
	// What a restart does: a new limiter loads the state file.
	l2 := limiter.New(limiter.Options{Settings: limiter.Settings{WorkloadLabels: []string{"namespace"}, Default: 1000}})
	l2.LoadAPIOverrides(loadState(t, fx.state))
	if got := l2.Limit("payments/checkout"); got != 0 {
		t.Fatalf("after a restart Limit = %d, want 0", got)
	}
}

func TestPutLimitBadRequests(t *testing.T) {
	fx := newFixture(t, limiter.Settings{Default: 1000})
	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"negative", `{"max_series": -1}`, http.StatusBadRequest},
		{"fraction", `{"max_series": 1.5}`, http.StatusBadRequest},
		{"string", `{"max_series": "50"}`, http.StatusBadRequest},
		{"null", `{"max_series": null}`, http.StatusBadRequest},
		{"missing field", `{}`, http.StatusBadRequest},
		{"unknown field", `{"max_series": 5, "burst": 1}`, http.StatusBadRequest},
		{"two values", `{"max_series": 5} {"max_series": 6}`, http.StatusBadRequest},
		{"not JSON", `max_series=5`, http.StatusBadRequest},
		{"array", `[5]`, http.StatusBadRequest},
		{"empty", ``, http.StatusBadRequest},
		{"too large a limit", `{"max_series": 4294967296}`, http.StatusBadRequest},
		{"oversized", `{"max_series": 5` + strings.Repeat(" ", 4<<10) + `}`, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := fx.do(t, http.MethodPut, "/api/v1/limits/payments%2Fcheckout", tc.body, true)
			if code != tc.want {
				t.Fatalf("PUT %q = %d %s, want %d", tc.body, code, body, tc.want)
			}
			wantJSONError(t, body)
			if got := fx.l.Limit("payments/checkout"); got != 1000 {
				t.Fatalf("Limit = %d after a rejected PUT, want 1000", got)
			}
			if _, err := os.Stat(fx.state); !os.IsNotExist(err) {
				t.Fatalf("state file written after a rejected PUT: %v", err)
			}
		})
	}
	// Exactly 4 KiB is still accepted.
	body := `{"max_series": 5}`
	body += strings.Repeat(" ", 4<<10-len(body))
	if code, resp, _ := fx.do(t, http.MethodPut, "/api/v1/limits/a", body, true); code != http.StatusOK {
		t.Fatalf("PUT of 4 KiB = %d %s", code, resp)
	}
}

func TestAuth(t *testing.T) {
	fx := newFixture(t, limiter.Settings{Default: 1000})
	fx.l.LoadAPIOverrides(map[string]int{"a": 1})
	for _, tc := range []struct {
		method, path, body string
	}{
		{http.MethodPut, "/api/v1/limits/b", `{"max_series": 5}`},
		{http.MethodDelete, "/api/v1/limits/a", ""},
	} {
		t.Run(tc.method, func(t *testing.T) {
			code, body, _ := fx.do(t, tc.method, tc.path, tc.body, false)
			if code != http.StatusUnauthorized {
				t.Fatalf("%s without token = %d %s, want 401", tc.method, code, body)
			}
			wantJSONError(t, body)
			if got := fx.l.APIOverrides(); !maps.Equal(got, map[string]int{"a": 1}) {
				t.Fatalf("overrides changed without a token: %v", got)
			}
		})
	}
	// Reads need no token.
	if code, _, _ := fx.do(t, http.MethodGet, "/api/v1/cardinality", "", false); code != http.StatusOK {
		t.Fatalf("GET cardinality = %d", code)
	}
}

func TestDeleteLimit(t *testing.T) {
	fx := newFixture(t, limiter.Settings{Default: 1000, Overrides: map[string]int{"payments/checkout": 10}})
	for _, w := range []string{"payments%2Fcheckout", "shop%2Fcart"} {
		if code, body, _ := fx.do(t, http.MethodPut, "/api/v1/limits/"+w, `{"max_series": 50}`, true); code != http.StatusOK {
			t.Fatalf("PUT = %d %s", code, body)
		}
	}
	code, body, _ := fx.do(t, http.MethodDelete, "/api/v1/limits/payments%2Fcheckout", "", true)
	if code != http.StatusNoContent || body != "" {
		t.Fatalf("DELETE = %d %q, want 204 and no body", code, body)
	}
	// The config override applies again; the state file keeps the rest.
	if got := fx.l.Limit("payments/checkout"); got != 10 {
		t.Fatalf("Limit after DELETE = %d, want the config's 10", got)
	}
	if got, want := loadState(t, fx.state), map[string]int{"shop/cart": 50}; !maps.Equal(got, want) {
		t.Fatalf("state file = %v, want %v", got, want)
	}
	code, body, _ = fx.do(t, http.MethodDelete, "/api/v1/limits/payments%2Fcheckout", "", true)
	if code != http.StatusNotFound {
		t.Fatalf("second DELETE = %d %s, want 404", code, body)
	}
	wantJSONError(t, body)
	if lr := fx.getLimits(t); !maps.Equal(lr.Overrides, map[string]int{"payments/checkout": 10, "shop/cart": 50}) {
		t.Fatalf("limits = %+v", lr)
	}
}

func admitN(l *limiter.Limiter, ns, app string, n int) {
	var hashBuf, keyBuf []byte
	now := l.Clock()
	for i := range n {
		ls := []wire.Label{
			{Name: []byte("__name__"), Value: []byte("up")},
			{Name: []byte("app"), Value: []byte(app)},
			{Name: []byte("namespace"), Value: []byte(ns)},
			{Name: []byte("pod"), Value: fmt.Appendf(nil, "p%d", i)},
		}
		var h uint64
		h, hashBuf = wire.HashLabels(hashBuf, ls)
		_, keyBuf = l.Admit(h, ls, 2, now, keyBuf)
	}
}

func TestGetCardinality(t *testing.T) {
	fx := newFixture(t, limiter.Settings{Default: 5})
	admitN(fx.l, "a", "x", 3)
	admitN(fx.l, "b", "y", 8) // 5 active, 3 folded
	admitN(fx.l, "c", "z", 6) // 5 active, 1 folded
	code, body, _ := fx.do(t, http.MethodGet, "/api/v1/cardinality?top=2", "", false)
	if code != http.StatusOK {
		t.Fatalf("GET = %d %s", code, body)
	}
	var raw []map[string]any
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	if len(raw) != 2 {
		t.Fatalf("got %d entries, want 2: %s", len(raw), body)
	}
	for _, e := range raw {
		for _, k := range []string{"workload", "active_series", "limit", "dropped_series", "dropped_samples"} {
			if _, ok := e[k]; !ok {
				t.Fatalf("entry %v lacks %q", e, k)
			}
		}
		if len(e) != 5 {
			t.Fatalf("entry %v has extra fields", e)
		}
	}
	var got []limiter.Report
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	want := []limiter.Report{
		{Workload: "b/y", ActiveSeries: 5, Limit: 5, DroppedSeries: 3, DroppedSamples: 6},
		{Workload: "c/z", ActiveSeries: 5, Limit: 5, DroppedSeries: 1, DroppedSamples: 2},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("cardinality = %+v, want %+v", got, want)
	}
	// Without top, every workload (up to the default of 20).
	if _, body, _ := fx.do(t, http.MethodGet, "/api/v1/cardinality", "", false); strings.Count(body, `"workload"`) != 3 {
		t.Fatalf("GET without top: %s", body)
	}
	for _, q := range []string{"top=0", "top=abc", "top=-1", "top=10001"} {
		t.Run(q, func(t *testing.T) {
			code, body, _ := fx.do(t, http.MethodGet, "/api/v1/cardinality?"+q, "", false)
			if code != http.StatusBadRequest {
				t.Fatalf("GET ?%s = %d %s, want 400", q, code, body)
			}
			wantJSONError(t, body)
		})
	}
}

func TestTopParam(t *testing.T) {
	f := func(query string, want int, wantErr bool) {
		t.Helper()
		r := httptest.NewRequest(http.MethodGet, "/api/v1/cardinality?"+query, nil)
		got, err := TopParam(r)
		if (err != nil) != wantErr || got != want {
			t.Fatalf("TopParam(%q) = %d, %v; want %d, error %v", query, got, err, want, wantErr)
		}
	}
	f("", 20, false)
	f("top=1", 1, false)
	f("top=10000", 10000, false)
	f("top=0", 0, true)
	f("top=10001", 0, true)
	f("top=abc", 0, true)
	f("top=2.5", 0, true)
}

func TestSaveStateAtomicUnderConcurrentPuts(t *testing.T) {
	fx := newFixture(t, limiter.Settings{Default: 1000})
	const n = 40
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body, _ := fx.do(t, http.MethodPut, fmt.Sprintf("/api/v1/limits/w%d", i), fmt.Sprintf(`{"max_series": %d}`, i+1), true)
			if code != http.StatusOK {
				t.Errorf("PUT w%d = %d %s", i, code, body)
			}
			// Readers never see a torn file.
			if _, err := LoadState(fx.state); err != nil {
				t.Errorf("state file mid-way: %v", err)
			}
		}()
	}
	wg.Wait()
	got := loadState(t, fx.state)
	if len(got) != n {
		t.Fatalf("state file holds %d overrides, want %d", len(got), n)
	}
	for i := range n {
		if w := fmt.Sprintf("w%d", i); got[w] != i+1 || fx.l.Limit(w) != i+1 {
			t.Fatalf("%s: state %d, limiter %d; want %d", w, got[w], fx.l.Limit(w), i+1)
		}
	}
	entries, err := os.ReadDir(filepath.Dir(fx.state))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "limits.json" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only limits.json", names)
	}
}

func TestSaveLoadState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	want := map[string]int{"payments/checkout": 50, "shop/cart": 0}
	if err := SaveState(path, want); err != nil {
		t.Fatal(err)
	}
	if got := loadState(t, path); !maps.Equal(got, want) {
		t.Fatalf("round trip = %v, want %v", got, want)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Version   int            `json:"version"`
		Overrides map[string]int `json:"overrides"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Version != 1 {
		t.Fatalf("state file %s: version %d, %v", b, st.Version, err)
	}
}

func TestLoadState(t *testing.T) {
	dir := t.TempDir()
	f := func(content string, want map[string]int, wantErr string) {
		t.Helper()
		path := filepath.Join(dir, "s.json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := LoadState(path)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("LoadState(%s) error = %v, want one containing %q", content, err, wantErr)
			}
			return
		}
		if err != nil || !maps.Equal(got, want) || got == nil {
			t.Fatalf("LoadState(%s) = %v, %v; want %v", content, got, err, want)
		}
	}
	f(`{"version": 1, "overrides": {"a/b": 3}}`, map[string]int{"a/b": 3}, "")
	f(`{"version": 1}`, map[string]int{}, "")
	f(`{"version": 2, "overrides": {}}`, nil, "unknown version 2")
	f(`{"overrides": {}}`, nil, "unknown version 0")
	f(`{"version": 1, "overrides": {}, "extra": 1}`, nil, "unknown field")
	f(`{"version": 1, "overrides": {"a": -1}}`, nil, "negative limit")
	f(`{"version": 1, "overrides": {"a": "1"}}`, nil, "cannot parse")
	f(`not json`, nil, "cannot parse")
	f(``, nil, "cannot parse")

	got, err := LoadState(filepath.Join(dir, "missing.json"))
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("LoadState(missing) = %v, %v; want an empty map", got, err)
	}
}

func TestPutUnwritableStateFile(t *testing.T) {
	fx := newFixture(t, limiter.Settings{Default: 1000})
	// A path under a regular file cannot be created, even by root.
	blocker := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fx.state = filepath.Join(blocker, "limits.json")
	code, body, _ := fx.do(t, http.MethodPut, "/api/v1/limits/payments%2Fcheckout", `{"max_series": 50}`, true)
	if code != http.StatusInternalServerError {
		t.Fatalf("PUT = %d %s, want 500", code, body)
	}
	wantJSONError(t, body)
	if got := fx.l.Limit("payments/checkout"); got != 1000 {
		t.Fatalf("Limit = %d after a failed persist, want 1000", got)
	}
	if lr := fx.getLimits(t); len(lr.Overrides) != 0 {
		t.Fatalf("overrides = %v after a failed persist", lr.Overrides)
	}
	// DELETE of an override that cannot be persisted keeps it.
	fx.l.LoadAPIOverrides(map[string]int{"a": 3})
	code, body, _ = fx.do(t, http.MethodDelete, "/api/v1/limits/a", "", true)
	if code != http.StatusInternalServerError {
		t.Fatalf("DELETE = %d %s, want 500", code, body)
	}
	wantJSONError(t, body)
	if got := fx.l.Limit("a"); got != 3 {
		t.Fatalf("Limit = %d after a failed DELETE, want 3", got)
	}
}

// Regressions: trailing data after the object, and a workload name holding
// an escaped %, which must be unescaped exactly once.
func TestPutStrictnessAndEscaping(t *testing.T) {
	fx := newFixture(t, limiter.Settings{})
	for _, body := range []string{`{"max_series": 5}}`, `{"max_series": 5}]`, `{"max_series": 5} {}`} {
		if code, resp, _ := fx.do(t, http.MethodPut, "/api/v1/limits/a%2Fb", body, true); code != http.StatusBadRequest {
			t.Errorf("PUT %q = %d %s, want 400", body, code, resp)
		}
	}
	for path, want := range map[string]string{
		"/api/v1/limits/x%2541y":   "x%41y",
		"/api/v1/limits/50%25":     "50%",
		"/api/v1/limits/a%2F50%25": "a/50%",
		"/api/v1/limits/plain":     "plain",
	} {
		if code, resp, _ := fx.do(t, http.MethodPut, path, `{"max_series": 7}`, true); code != http.StatusOK {
			t.Fatalf("PUT %s = %d %s", path, code, resp)
		}
		if got := fx.l.Limit(want); got != 7 {
			t.Errorf("PUT %s: Limit(%q) = %d, want 7 (overrides %v)", path, want, got, fx.l.APIOverrides())
		}
	}
}
