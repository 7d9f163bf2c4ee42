package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Regression (issue 11): 32 connections announcing a 39 MB body and sending
// 12 bytes grew the heap by 1.2 GB (the buffer was allocated from the
// announced length), and all 32 stayed open: there was no body read
// timeout. Now the buffer grows with what arrives, and a body that stalls
// is answered 408 and its connection closed.
func TestStalledBodiesAreCutAndCostNothing(t *testing.T) {
	ds := newDownstream(t)
	s, _ := newServer(t, writeConfig(t, t.TempDir(), ds.URL, "receive:\n  body_stall_timeout: 300ms\n  body_timeout: 2s\n  max_inflight_requests: 64\n"))
	base, _, _ := startServe(t, s)
	addr := strings.TrimPrefix(base, "http://")

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	const conns = 32
	answers := make([]string, conns)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, waitFor)
			if err != nil {
				answers[i] = err.Error()
				return
			}
			defer c.Close()
			fmt.Fprintf(c, "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nContent-Length: 39000000\r\n\r\n0123456789ab")
			_ = c.SetReadDeadline(time.Now().Add(waitFor))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				answers[i] = err.Error()
				return
			}
			resp.Body.Close()
			answers[i] = fmt.Sprintf("%d close=%v", resp.StatusCode, resp.Close)
		})
	}
	wg.Wait()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	for i, a := range answers {
		if a != "408 close=true" {
			t.Errorf("connection %d: %q, want a 408 that closes the connection", i, a)
		}
	}
	// 32 announced 39 MB bodies are 1.2 GB; what arrived is 384 bytes.
	if grown := int64(after.TotalAlloc - before.TotalAlloc); grown > 64<<20 {
		t.Errorf("the server allocated %d MiB for 32 stalled bodies", grown>>20)
	}
	// A legitimate write still goes through.
	if code, body := remoteWrite(t, base, sample{labels: []string{"__name__", "up"}, value: 1, ts: 1}); code != http.StatusNoContent {
		t.Fatalf("write after the stalls: %d %s", code, body)
	}
}

// Slowloris: thousands of connections that trickle their headers must not
// keep a legitimate write from being served. (Each costs a goroutine and a
// small buffer until receive.header_timeout cuts it.)
func TestSlowlorisKeepsWritesServed(t *testing.T) {
	ds := newDownstream(t)
	s, _ := newServer(t, writeConfig(t, t.TempDir(), ds.URL, "receive:\n  header_timeout: 20s\n"))
	base, _, _ := startServe(t, s)
	addr := strings.TrimPrefix(base, "http://")
	const conns = 2000
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for range conns {
		c, err := net.DialTimeout("tcp", addr, waitFor)
		if err != nil {
			t.Skipf("cannot open %d connections here: %v", conns, err)
		}
		open = append(open, c)
		fmt.Fprintf(c, "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	}
	start := time.Now()
	for i := range 20 {
		if code, body := remoteWrite(t, base, sample{labels: []string{"__name__", "up"}, value: float64(i), ts: int64(1000 + i)}); code != http.StatusNoContent {
			t.Fatalf("write %d during the slowloris: %d %s", i, code, body)
		}
	}
	t.Logf("20 writes served beside %d stalled connections in %v", conns, time.Since(start).Round(time.Millisecond))
}

// Regression (issue 11): /debug/pprof/* (on-demand CPU profiles) and the
// command line were served without credentials on the write port.
func TestDebugEndpointsNeedTheAdminToken(t *testing.T) {
	ds := newDownstream(t)
	dir := t.TempDir()
	tokenFile := dir + "/token"
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := newServer(t, writeConfig(t, dir, ds.URL, "admin:\n  bearer_token_file: "+tokenFile+"\n"))
	base := serveHandler(t, s)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/vars"} {
		if resp, _ := do(t, http.MethodGet, base+path, ""); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %d, want 401", path, resp.StatusCode)
		}
		if resp, _ := do(t, http.MethodGet, base+path, "Bearer s3cret"); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s with the token: %d, want 200", path, resp.StatusCode)
		}
	}
}

// admin.debug_listen_address moves the debug endpoints off the write port.
func TestDebugListenAddress(t *testing.T) {
	ds := newDownstream(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s, _ := newServer(t, writeConfig(t, t.TempDir(), ds.URL, "admin:\n  debug_listen_address: "+addr+"\n"))
	base, _, _ := startServe(t, s)
	if resp, _ := do(t, http.MethodGet, base+"/debug/pprof/", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ on the write port: %d, want 404", resp.StatusCode)
	}
	eventually(t, "the debug listener", func() bool {
		resp, err := client.Get("http://" + addr + "/debug/pprof/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// Regression (issue 11): with a hanging downstream, SIGTERM exited 1 after
// 30 s and the in-flight requests got no answer. Now the grace period ends
// by cancelling their forwards: each is answered 503 (its sender retries)
// and Serve returns nil.
func TestShutdownAnswersRequestsStuckOnTheDownstream(t *testing.T) {
	d, _ := newBlockingDownstream(t)
	cfg := writeConfig(t, t.TempDir(), d.URL, "")
	cfg = rewriteTimeout(t, cfg, "60s")
	s, err := New(Options{ConfigFile: cfg, Registry: prometheus.NewRegistry(), ShutdownTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Gateway().Close)
	base, cancel, sv := startServe(t, s)
	eventually(t, "/-/ready 200", func() bool { return readyStatus(base) == http.StatusOK })
	const inflight = 3
	codes := make(chan int, inflight)
	for i := range inflight {
		body := encodeWrite(t, sample{labels: []string{"__name__", "stuck", "i", fmt.Sprint(i)}, value: 1, ts: 5})
		go func() {
			code, _ := postWrite(base, body)
			codes <- code
		}()
	}
	for range inflight {
		select {
		case <-d.arrived:
		case <-time.After(waitFor):
			t.Fatal("the writes never reached the downstream")
		}
	}
	start := time.Now()
	cancel()
	for range inflight {
		select {
		case code := <-codes:
			if code != http.StatusServiceUnavailable {
				t.Errorf("in-flight request answered %d, want 503", code)
			}
		case <-time.After(waitFor):
			t.Fatal("an in-flight request was never answered")
		}
	}
	if err := sv.wait(t); err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("shutdown took %v with a 300ms grace period", took)
	}
}

// rewriteTimeout sets downstream.timeout in a config written by writeConfig.
func rewriteTimeout(t *testing.T, path, timeout string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), "  max_retries: 0\n", "  max_retries: 0\n  timeout: "+timeout+"\n", 1)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Admission control (issue 11): past receive.max_inflight_requests new
// requests are answered 503 with a short Retry-After before their body is
// read, counted, and the admitted ones are served; once the load drops,
// writes go through again.
func TestOverloadIsShedWith503(t *testing.T) {
	d, release := newBlockingDownstream(t)
	s, reg := newServer(t, writeConfig(t, t.TempDir(), d.URL, "receive:\n  max_inflight_requests: 2\n"))
	base, _, _ := startServe(t, s)
	eventually(t, "/-/ready 200", func() bool { return readyStatus(base) == http.StatusOK })
	held := make(chan int, 2)
	for i := range 2 {
		body := encodeWrite(t, sample{labels: []string{"__name__", "held", "i", fmt.Sprint(i)}, value: 1, ts: 5})
		go func() {
			code, _ := postWrite(base, body)
			held <- code
		}()
	}
	for range 2 {
		select {
		case <-d.arrived:
		case <-time.After(waitFor):
			t.Fatal("the held writes never reached the downstream")
		}
	}
	for i := range 3 {
		req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/write", strings.NewReader(string(encodeWrite(t, sample{labels: []string{"__name__", "shed"}, value: 1, ts: int64(i)}))))
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("Content-Encoding", "snappy")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("write %d over the bound: %d Retry-After %q, want 503 and 1", i, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	if v := metricValue(gather(t, reg), "cardinal_rejected_requests_total", "reason", "overload"); v != 3 {
		t.Fatalf("cardinal_rejected_requests_total{reason=overload} = %v, want 3", v)
	}
	release()
	for range 2 {
		if code := <-held; code != http.StatusNoContent {
			t.Fatalf("an admitted write answered %d", code)
		}
	}
	if code, body := remoteWrite(t, base, sample{labels: []string{"__name__", "after"}, value: 1, ts: 9}); code != http.StatusNoContent {
		t.Fatalf("write after the load dropped: %d %s", code, body)
	}
}

// Admin API polish (issue 12): JSON errors everywhere (404, 405 with Allow),
// unescaped workload paths, GET on a limit, [] for empty lists, no Go type
// names, GET / lists the endpoints.
func TestAdminAPIAnswersInJSON(t *testing.T) {
	ds := newDownstream(t)
	dir := t.TempDir()
	tokenFile := dir + "/token"
	if err := os.WriteFile(tokenFile, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := newServer(t, writeConfig(t, dir, ds.URL, "limits:\n  workload_labels: [namespace, app]\n  max_series_per_workload: 10\nadmin:\n  bearer_token_file: "+tokenFile+"\n"))
	base := serveHandler(t, s)
	call := func(method, path, body string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	isJSONError := func(what, body string) {
		t.Helper()
		var e struct{ Error string }
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
			t.Errorf("%s: body %q is not a JSON error", what, body)
		}
		if strings.Contains(body, "Go struct") || strings.Contains(body, "putRequest") || strings.Contains(body, "int64") {
			t.Errorf("%s: %q names Go types", what, body)
		}
	}
	code, _, body := call(http.MethodGet, "/nope", "")
	if code != 404 {
		t.Errorf("GET /nope: %d", code)
	}
	isJSONError("404", body)
	code, hdr, body := call(http.MethodPost, "/api/v1/limits", "")
	if code != 405 || !strings.Contains(hdr.Get("Allow"), "GET") {
		t.Errorf("POST /api/v1/limits: %d Allow %q", code, hdr.Get("Allow"))
	}
	isJSONError("405", body)
	if code, _, body := call(http.MethodPut, "/api/v1/limits/shop/cart", `{"max_series": 5}`); code != 200 {
		t.Errorf("PUT with an unescaped workload: %d %s", code, body)
	}
	code, _, body = call(http.MethodGet, "/api/v1/limits/shop%2Fcart", "")
	if code != 200 || !strings.Contains(body, `"max_series":5`) || !strings.Contains(body, `"source":"api"`) {
		t.Errorf("GET a limit: %d %s", code, body)
	}
	code, _, body = call(http.MethodPut, "/api/v1/limits/shop%2Fcart", `{"max_series": "many"}`)
	if code != 400 || !strings.Contains(body, "max_series must be a non-negative integer") {
		t.Errorf("PUT a string: %d %s", code, body)
	}
	isJSONError("400", body)
	if code, _, body := call(http.MethodGet, "/api/v1/collisions", ""); code != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("empty collisions: %d %q, want []", code, body)
	}
	if code, _, body := call(http.MethodGet, "/api/v1/cardinality", ""); code != 200 || strings.TrimSpace(body) == "null" {
		t.Errorf("empty cardinality: %d %q", code, body)
	}
	// GET / is the explorer page; the JSON index stays for ?format=json.
	code, hdr, body = call(http.MethodGet, "/?format=json", "")
	var index struct {
		Service   string
		Endpoints []Endpoint
	}
	if err := json.Unmarshal([]byte(body), &index); code != 200 || err != nil || index.Service != "cardinal" || len(index.Endpoints) != len(Endpoints) ||
		!strings.Contains(body, "/api/v1/write") || !strings.Contains(body, "/api/v1/limits/{workload}") || hdr.Get("Content-Type") != "application/json" {
		t.Errorf("GET /?format=json: %d %v %s", code, err, body)
	}
	code, hdr, body = call(http.MethodGet, "/", "")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") || !strings.Contains(body, "/api/v1/write") || !strings.Contains(body, "/api/v1/limits/{workload}") {
		t.Errorf("GET /: %d %s", code, body)
	}
}
