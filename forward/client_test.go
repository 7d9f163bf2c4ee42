package forward

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/config"
)

// testBody stands in for a snappy-compressed WriteRequest; forward never
// looks inside it.
var testBody = []byte("\xff\x06\x00\x00sNaPpY\x01\x0a\x00\x00remote-write")

// testTimeout bounds every Send in the tests that is expected to finish, so
// a bug shows up as a failure instead of a hung test binary.
const testTimeout = 30 * time.Second

// server is a downstream stub that counts the requests it receives and lets
// each test decide the answer per attempt (n counts from 0).
type server struct {
	*httptest.Server
	attempts atomic.Int64
	mu       sync.Mutex
	bodies   [][]byte
	headers  []http.Header
}

func newServer(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, n int)) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(s.handler(answer))
	t.Cleanup(s.Close)
	return s
}

func (s *server) handler(answer func(w http.ResponseWriter, r *http.Request, n int)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(s.attempts.Add(1) - 1)
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(599)
			return
		}
		s.mu.Lock()
		s.bodies = append(s.bodies, b)
		s.headers = append(s.headers, r.Header.Clone())
		s.mu.Unlock()
		answer(w, r, n)
	})
}

// status answers every attempt with code and a short body.
func status(code int) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, _ *http.Request, _ int) {
		http.Error(w, "stub says "+http.StatusText(code), code)
	}
}

// newClient builds a Client with fast backoffs and a private registry;
// fields set in opts win.
func newClient(t *testing.T, opts Options) (*Client, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	opts.Registerer = reg
	if opts.MinBackoff == 0 {
		opts.MinBackoff = time.Millisecond
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 2 * time.Millisecond
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c, reg
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// asError asserts that err is an *Error with the wanted status.
func asError(t *testing.T, err error, wantStatus int) *Error {
	t.Helper()
	e, ok := errors.AsType[*Error](err)
	if !ok {
		t.Fatalf("Send returned %v (%T), want *Error with status %d", err, err, wantStatus)
	}
	if e.Status != wantStatus {
		t.Fatalf("Status = %d, want %d; err: %v", e.Status, wantStatus, e)
	}
	return e
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func TestSendSuccessHeaders(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		hc       config.HTTPClientConfig
		wantAuth func(r *http.Request) bool
	}{
		{
			name:     "no auth",
			wantAuth: func(r *http.Request) bool { return r.Header.Get("Authorization") == "" },
		},
		{
			name: "basic auth",
			hc:   config.HTTPClientConfig{BasicAuth: &config.BasicAuth{Username: "mesh", Password: "s3cret"}},
			wantAuth: func(r *http.Request) bool {
				u, p, ok := r.BasicAuth()
				return ok && u == "mesh" && p == "s3cret"
			},
		},
		{
			name: "authorization without type defaults to bearer",
			hc:   config.HTTPClientConfig{Authorization: &config.Authorization{Credentials: "tok3n"}},
			wantAuth: func(r *http.Request) bool {
				return r.Header.Get("Authorization") == "Bearer tok3n"
			},
		},
		{
			name: "legacy bearer_token",
			hc:   config.HTTPClientConfig{BearerToken: "tok3n"},
			wantAuth: func(r *http.Request) bool {
				return r.Header.Get("Authorization") == "Bearer tok3n"
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var authOK atomic.Bool
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
				authOK.Store(tc.wantAuth(r))
				w.WriteHeader(http.StatusNoContent)
			})
			c, reg := newClient(t, Options{
				URL:              srv.URL + "/api/v1/write",
				HTTPClientConfig: tc.hc,
				Headers:          map[string]string{"X-Scope-OrgID": "mesh", "x-extra": "1"},
				UserAgent:        "cardinal/test",
			})
			if err := c.Send(testCtx(t), testBody); err != nil {
				t.Fatalf("Send: %v", err)
			}
			if !authOK.Load() {
				t.Errorf("downstream saw wrong Authorization: %q", srv.headers[0].Get("Authorization"))
			}
			h := srv.headers[0]
			for name, want := range map[string]string{
				"Content-Encoding":                  "snappy",
				"Content-Type":                      "application/x-protobuf",
				"User-Agent":                        "cardinal/test",
				"X-Prometheus-Remote-Write-Version": "0.1.0",
				"X-Scope-Orgid":                     "mesh",
				"X-Extra":                           "1",
			} {
				if got := h.Get(name); got != want {
					t.Errorf("header %s = %q, want %q", name, got, want)
				}
			}
			if !bytes.Equal(srv.bodies[0], testBody) {
				t.Errorf("body = %q, want %q", srv.bodies[0], testBody)
			}
			if got := testutil.ToFloat64(c.m.requests.WithLabelValues("204")); got != 1 {
				t.Errorf("requests_total{code=204} = %v, want 1", got)
			}
			if got := histogramCount(t, reg, "cardinal_forward_duration_seconds"); got != 1 {
				t.Errorf("duration observations = %d, want 1", got)
			}
		})
	}
}

func TestSendDefaultUserAgent(t *testing.T) {
	t.Parallel()
	srv := newServer(t, status(http.StatusOK))
	c, _ := newClient(t, Options{URL: srv.URL})
	if err := c.Send(testCtx(t), testBody); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := srv.headers[0].Get("User-Agent"); got != DefaultUserAgent {
		t.Errorf("User-Agent = %q, want %q", got, DefaultUserAgent)
	}
}

func TestSendRetriesResendSameBody(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n < 2 {
			http.Error(w, "try again", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	c, reg := newClient(t, Options{URL: srv.URL})
	body := bytes.Repeat(testBody, 5000) // bigger than one write, to catch a half-rewound body
	orig := bytes.Clone(body)
	if err := c.Send(testCtx(t), body); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := srv.attempts.Load(); got != 3 {
		t.Fatalf("attempts = %d, want 3", got)
	}
	for i, b := range srv.bodies {
		if !bytes.Equal(b, orig) {
			t.Errorf("attempt %d: body differs from the original (len %d, want %d)", i, len(b), len(orig))
		}
	}
	if !bytes.Equal(body, orig) {
		t.Error("Send modified the caller's body")
	}
	if got := testutil.ToFloat64(c.m.retries); got != 2 {
		t.Errorf("retries_total = %v, want 2", got)
	}
	if got := testutil.ToFloat64(c.m.requests.WithLabelValues("500")); got != 2 {
		t.Errorf("requests_total{code=500} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(c.m.requests.WithLabelValues("204")); got != 1 {
		t.Errorf("requests_total{code=204} = %v, want 1", got)
	}
	if got := histogramCount(t, reg, "cardinal_forward_duration_seconds"); got != 1 {
		t.Errorf("duration observations = %d, want 1 per Send", got)
	}
	if got := histogramCount(t, reg, "cardinal_forward_attempt_duration_seconds"); got != 3 {
		t.Errorf("attempt duration observations = %d, want 3", got)
	}
}

func TestSendRetryableExhausted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		code         int
		maxRetries   int
		wantAttempts int64
		wantRA       bool // a RetryAfter from the backoff
	}{
		{"500 with 2 retries", 500, 2, 3, false},
		{"502 with default retries", 502, 0, DefaultMaxRetries + 1, false},
		{"503 without retries", 503, -1, 1, false},
		{"429 with 2 retries", 429, 2, 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, status(tc.code))
			c, _ := newClient(t, Options{URL: srv.URL, MaxRetries: tc.maxRetries})
			e := asError(t, c.Send(testCtx(t), testBody), http.StatusServiceUnavailable)
			if got := srv.attempts.Load(); got != tc.wantAttempts {
				t.Errorf("attempts = %d, want %d", got, tc.wantAttempts)
			}
			if got := testutil.ToFloat64(c.m.retries); got != float64(tc.wantAttempts-1) {
				t.Errorf("retries_total = %v, want %d", got, tc.wantAttempts-1)
			}
			wantMsg := http.StatusText(tc.code) + ": stub says " + http.StatusText(tc.code)
			if !strings.Contains(e.Msg, wantMsg) {
				t.Errorf("Msg = %q, want it to contain %q", e.Msg, wantMsg)
			}
			if tc.wantRA {
				// Backoff of the next retry: within [MinBackoff, MaxBackoff].
				if e.RetryAfter < time.Millisecond || e.RetryAfter > 2*time.Millisecond {
					t.Errorf("RetryAfter = %v, want the backoff in [1ms, 2ms]", e.RetryAfter)
				}
				if got := e.RetryAfterHeader(); got != "1" {
					t.Errorf("RetryAfterHeader = %q, want 1", got)
				}
			} else if e.RetryAfter != 0 {
				t.Errorf("RetryAfter = %v, want 0", e.RetryAfter)
			}
		})
	}
}

func TestSendHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	// The backoff is an hour, far beyond the ctx deadline: Send can only
	// succeed if it waits for the Retry-After instead of the backoff.
	for _, tc := range []struct {
		name, retryAfter string
		code             int
	}{
		{"429 zero seconds", "0", 429},
		{"429 one second", "1", 429},
		{"503 zero seconds", "0", 503},
		{"429 http-date in the past", "Mon, 02 Jan 2006 15:04:05 GMT", 429},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, n int) {
				if n == 0 {
					w.Header().Set("Retry-After", tc.retryAfter)
					w.WriteHeader(tc.code)
					return
				}
				w.WriteHeader(http.StatusNoContent)
			})
			c, _ := newClient(t, Options{URL: srv.URL, MinBackoff: time.Hour, MaxBackoff: time.Hour})
			if err := c.Send(testCtx(t), testBody); err != nil {
				t.Fatalf("Send: %v", err)
			}
			if got := srv.attempts.Load(); got != 2 {
				t.Errorf("attempts = %d, want 2", got)
			}
			if got := testutil.ToFloat64(c.m.retries); got != 1 {
				t.Errorf("retries_total = %v, want 1", got)
			}
		})
	}
}

func TestSendRetryAfterPastDeadline(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		code       int
		retryAfter string
		want       time.Duration
		wantHeader string
	}{
		{"429 delta-seconds", 429, "120", 120 * time.Second, "120"},
		{"503 delta-seconds", 503, "3600", time.Hour, "3600"},
		{"429 http-date", 429, time.Now().Add(time.Hour).UTC().Format(http.TimeFormat), 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
				w.Header().Set("Retry-After", tc.retryAfter)
				w.WriteHeader(tc.code)
			})
			// A cap above the asked waits: TestRetryAfterPassedOnIsCapped
			// covers the cap.
			c, _ := newClient(t, Options{URL: srv.URL, MaxRetries: 5, MaxRetryAfter: 2 * time.Hour})
			ctx := testCtx(t)
			e := asError(t, c.Send(ctx, testBody), http.StatusServiceUnavailable)
			if ctx.Err() != nil {
				t.Fatal("Send waited for the deadline instead of returning at once")
			}
			if got := srv.attempts.Load(); got != 1 {
				t.Errorf("attempts = %d, want 1", got)
			}
			switch {
			case tc.want != 0:
				if e.RetryAfter != tc.want || e.RetryAfterHeader() != tc.wantHeader {
					t.Errorf("RetryAfter = %v (%q), want %v (%q)", e.RetryAfter, e.RetryAfterHeader(), tc.want, tc.wantHeader)
				}
			default: // an HTTP-date about an hour ahead, to the second
				if e.RetryAfter < 58*time.Minute || e.RetryAfter > time.Hour {
					t.Errorf("RetryAfter = %v, want about 1h", e.RetryAfter)
				}
			}
		})
	}
}

func TestSendBackoffPastDeadline(t *testing.T) {
	t.Parallel()
	srv := newServer(t, status(http.StatusInternalServerError))
	c, _ := newClient(t, Options{URL: srv.URL, MinBackoff: time.Hour, MaxBackoff: time.Hour})
	ctx := testCtx(t)
	asError(t, c.Send(ctx, testBody), http.StatusServiceUnavailable)
	if ctx.Err() != nil {
		t.Fatal("Send waited for the deadline instead of returning at once")
	}
	if got := srv.attempts.Load(); got != 1 {
		t.Errorf("attempts = %d, want 1", got)
	}
}

func TestSendRejected(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 4<<10)
	for _, tc := range []struct {
		name    string
		code    int
		body    string
		wantMsg string
	}{
		{"400", 400, "out of order sample\n", "downstream rejected the request: 400 Bad Request: out of order sample"},
		{"409", 409, "duplicate sample", "downstream rejected the request: 409 Conflict: duplicate sample"},
		{"413", 413, "", "downstream rejected the request: 413 Request Entity Too Large"},
		{"400 long body is cut at 1 KiB", 400, long, "downstream rejected the request: 400 Bad Request: " + long[:maxErrorBody]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
				w.WriteHeader(tc.code)
				_, _ = io.WriteString(w, tc.body)
			})
			c, _ := newClient(t, Options{URL: srv.URL})
			e := asError(t, c.Send(testCtx(t), testBody), http.StatusBadRequest)
			if e.Msg != tc.wantMsg {
				t.Errorf("Msg = %q\nwant  %q", e.Msg, tc.wantMsg)
			}
			if e.Error() != tc.wantMsg {
				t.Errorf("Error() = %q, want the Msg", e.Error())
			}
			if got := srv.attempts.Load(); got != 1 {
				t.Errorf("attempts = %d, want 1", got)
			}
			if got := testutil.ToFloat64(c.m.retries); got != 0 {
				t.Errorf("retries_total = %v, want 0", got)
			}
		})
	}
}

// syncBuffer is an io.Writer safe for a slog handler shared by goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSendMisconfigured(t *testing.T) {
	t.Parallel()
	for _, code := range []int{401, 403, 404, 405, 307} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
				w.Header().Set("Location", "/elsewhere") // the client does not follow by default
				http.Error(w, "no", code)
			})
			var logs syncBuffer
			c, _ := newClient(t, Options{
				URL:    "http://user:hunter2@" + strings.TrimPrefix(srv.URL, "http://"),
				Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			})
			const sends = 3
			for range sends {
				e := asError(t, c.Send(testCtx(t), testBody), http.StatusBadGateway)
				if !strings.Contains(e.Msg, http.StatusText(code)) {
					t.Errorf("Msg = %q, want the downstream status", e.Msg)
				}
			}
			if got := srv.attempts.Load(); got != sends {
				t.Errorf("attempts = %d, want %d (one per Send, no retries)", got, sends)
			}
			out := logs.String()
			if n := strings.Count(out, "level=ERROR"); n != 1 {
				t.Errorf("logged %d errors for %d failures, want 1 (rate-limited):\n%s", n, sends, out)
			}
			if strings.Contains(out, "hunter2") {
				t.Errorf("log leaks the url password:\n%s", out)
			}
		})
	}
}

func TestSendConnectionRefused(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	c, _ := newClient(t, Options{URL: "http://" + addr + "/api/v1/write", MaxRetries: 2})
	e := asError(t, c.Send(testCtx(t), testBody), http.StatusServiceUnavailable)
	if !errors.Is(e, syscall.ECONNREFUSED) {
		t.Errorf("err = %v, want it to wrap ECONNREFUSED", e)
	}
	if got := testutil.ToFloat64(c.m.transportErrors); got != 3 {
		t.Errorf(`requests_total{code="error"} = %v, want 3`, got)
	}
	if got := testutil.ToFloat64(c.m.retries); got != 2 {
		t.Errorf("retries_total = %v, want 2", got)
	}
}

func TestSendAttemptTimeout(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		<-r.Context().Done() // answers only once the client gave up
	})
	c, _ := newClient(t, Options{URL: srv.URL, Timeout: 50 * time.Millisecond, MaxRetries: 1})
	ctx := testCtx(t)
	e := asError(t, c.Send(ctx, testBody), http.StatusServiceUnavailable)
	if ctx.Err() != nil {
		t.Fatal("the per-attempt timeout did not fire; Send ran into the ctx deadline")
	}
	if !errors.Is(e, context.DeadlineExceeded) {
		t.Errorf("err = %v, want it to wrap context.DeadlineExceeded", e)
	}
	if got := testutil.ToFloat64(c.m.transportErrors); got != 2 {
		t.Errorf(`requests_total{code="error"} = %v, want 2 (first attempt and one retry)`, got)
	}
}

func TestSendCancelled(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		answer func(w http.ResponseWriter, r *http.Request, started chan<- struct{})
	}{
		{"during an attempt", func(_ http.ResponseWriter, r *http.Request, started chan<- struct{}) {
			started <- struct{}{}
			<-r.Context().Done()
		}},
		{"during the backoff", func(w http.ResponseWriter, _ *http.Request, started chan<- struct{}) {
			w.WriteHeader(http.StatusServiceUnavailable)
			started <- struct{}{}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			started := make(chan struct{}, 10)
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) { tc.answer(w, r, started) })
			// Nothing but the cancellation can end this Send early.
			c, _ := newClient(t, Options{URL: srv.URL, Timeout: time.Hour, MinBackoff: time.Hour, MaxBackoff: time.Hour})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- c.Send(ctx, testBody) }()
			select {
			case <-started:
			case <-time.After(testTimeout):
				t.Fatal("downstream never saw the request")
			}
			cancel()
			select {
			case err := <-done:
				e := asError(t, err, http.StatusServiceUnavailable)
				if !errors.Is(e, context.Canceled) {
					t.Errorf("err = %v, want it to wrap context.Canceled", e)
				}
			case <-time.After(testTimeout):
				t.Fatal("Send did not return after the ctx was cancelled")
			}
		})
	}
	t.Run("before the first attempt", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, status(http.StatusNoContent))
		c, _ := newClient(t, Options{URL: srv.URL})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		asError(t, c.Send(ctx, testBody), http.StatusServiceUnavailable)
		if got := srv.attempts.Load(); got != 0 {
			t.Errorf("attempts = %d, want 0", got)
		}
	})
}

func TestSendTLS(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the expected handshake failure
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))

	for _, tc := range []struct {
		name   string
		tls    config.TLSConfig
		wantOK bool
	}{
		{"insecure_skip_verify", config.TLSConfig{InsecureSkipVerify: true}, true},
		{"ca of the server", config.TLSConfig{CA: caPEM}, true},
		{"unknown authority", config.TLSConfig{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, _ := newClient(t, Options{
				URL:              srv.URL,
				HTTPClientConfig: config.HTTPClientConfig{TLSConfig: tc.tls},
				MaxRetries:       -1,
			})
			err := c.Send(testCtx(t), testBody)
			if tc.wantOK {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				return
			}
			e := asError(t, err, http.StatusServiceUnavailable)
			if !strings.Contains(e.Error(), "certificate") {
				t.Errorf("err = %v, want a certificate error", e)
			}
		})
	}
}

func TestSendConcurrent(t *testing.T) {
	t.Parallel()
	// Every other attempt fails, so the pooled message buffers are used by
	// many Sends at once; -race checks they are not shared.
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n%2 == 0 {
			http.Error(w, strings.Repeat("e", n%maxErrorBody), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	c, reg := newClient(t, Options{URL: srv.URL, MaxRetries: 50})
	const workers, sends = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*sends)
	for range workers {
		wg.Go(func() {
			for range sends {
				if err := c.Send(testCtx(t), testBody); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := histogramCount(t, reg, "cardinal_forward_duration_seconds"); got != workers*sends {
		t.Errorf("duration observations = %d, want %d", got, workers*sends)
	}
	ok := testutil.ToFloat64(c.m.requests.WithLabelValues("204"))
	failed := testutil.ToFloat64(c.m.requests.WithLabelValues("503"))
	if ok != workers*sends || failed != testutil.ToFloat64(c.m.retries) {
		t.Errorf("requests 204=%v 503=%v retries=%v, want 204=%d and 503=retries", ok, failed, testutil.ToFloat64(c.m.retries), workers*sends)
	}
}

func TestSendReusesConnections(t *testing.T) {
	t.Parallel()
	var conns atomic.Int64
	s := &server{}
	s.Server = httptest.NewUnstartedServer(s.handler(func(w http.ResponseWriter, _ *http.Request, n int) {
		switch n % 3 {
		case 0:
			http.Error(w, strings.Repeat("busy ", 2000), http.StatusServiceUnavailable) // longer than the quoted 1 KiB
		case 1:
			http.Error(w, "bad", http.StatusBadRequest)
		default:
			_, _ = io.WriteString(w, "ok")
		}
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	c, _ := newClient(t, Options{URL: s.URL})
	for i := range 6 {
		err := c.Send(testCtx(t), testBody)
		if wantErr := i%2 == 0; (err != nil) != wantErr {
			t.Fatalf("send %d: err = %v", i, err)
		}
	}
	if got := s.attempts.Load(); got != 9 {
		t.Errorf("attempts = %d, want 9", got)
	}
	if got := conns.Load(); got != 1 {
		t.Errorf("opened %d connections for sequential sends, want 1 (bodies not drained?)", got)
	}
}

func TestMetricsRegistration(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	reg := prometheus.NewPedanticRegistry()
	opts := Options{URL: srv.URL, Registerer: reg, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
	c1, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	// A second Client on the same registry, as after a config reload,
	// shares the metrics instead of failing.
	c2, err := New(opts)
	if err != nil {
		t.Fatalf("second New on the same registry: %v", err)
	}
	defer c2.Close()
	if err := c1.Send(testCtx(t), testBody); err != nil {
		t.Fatal(err)
	}
	if err := c2.Send(testCtx(t), testBody); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP cardinal_forward_requests_total HTTP attempts to the downstream by response status code; "error" when no response arrived (timeout, connection error, cancellation).
# TYPE cardinal_forward_requests_total counter
cardinal_forward_requests_total{code="200"} 2
cardinal_forward_requests_total{code="500"} 1
cardinal_forward_requests_total{code="error"} 0
# HELP cardinal_forward_retries_total Attempts to the downstream that repeated an earlier failed attempt.
# TYPE cardinal_forward_retries_total counter
cardinal_forward_retries_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"cardinal_forward_requests_total", "cardinal_forward_retries_total"); err != nil {
		t.Error(err)
	}
	if got := histogramCount(t, reg, "cardinal_forward_duration_seconds"); got != 2 {
		t.Errorf("duration observations = %d, want 2", got)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	t.Parallel()
	f := func(opts Options, wantErr string) {
		t.Helper()
		_, err := New(opts)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("New(%+v) error = %v, want it to contain %q", opts, err, wantErr)
		}
	}
	const u = "http://127.0.0.1:9090/api/v1/write"
	f(Options{}, "invalid downstream url")
	f(Options{URL: "127.0.0.1:9090/api/v1/write"}, "invalid downstream url")
	f(Options{URL: "ftp://host/x"}, "want http:// or https://")
	f(Options{URL: "http:///api/v1/write"}, "want http:// or https://")
	f(Options{URL: u, MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "max_backoff 1ms is less than min_backoff 1s")
	f(Options{URL: u, Timeout: -time.Second}, "must not be negative")
	f(Options{URL: u, Headers: map[string]string{"content-type": "text/plain"}}, `header "content-type" is set by Cardinal`)
	f(Options{URL: u, Headers: map[string]string{"Authorization": "Bearer x"}}, "is set by Cardinal")
	f(Options{URL: u, Headers: map[string]string{"X Org": "a"}}, "invalid character")
	f(Options{URL: u, Headers: map[string]string{"X-Org": "a\r\nInjected: 1"}}, "control character")
	f(Options{URL: u, HTTPClientConfig: config.HTTPClientConfig{
		BasicAuth:   &config.BasicAuth{Username: "a"},
		BearerToken: "b",
	}}, "invalid http client config")
}

func TestNewDoesNotModifyConfig(t *testing.T) {
	t.Parallel()
	auth := &config.Authorization{Credentials: "x"}
	c, err := New(Options{URL: "http://127.0.0.1:1/", HTTPClientConfig: config.HTTPClientConfig{Authorization: auth}})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	c.Close() // idempotent
	if auth.Type != "" {
		t.Errorf("New changed the caller's Authorization.Type to %q", auth.Type)
	}
}

func TestErrorRetryAfterHeader(t *testing.T) {
	t.Parallel()
	f := func(d time.Duration, want string) {
		t.Helper()
		if got := (&Error{RetryAfter: d}).RetryAfterHeader(); got != want {
			t.Errorf("RetryAfterHeader(%v) = %q, want %q", d, got, want)
		}
	}
	f(0, "")
	f(-time.Second, "")
	f(time.Nanosecond, "1")
	f(time.Second, "1")
	f(1500*time.Millisecond, "2")
	f(2*time.Minute, "120")
}

// TestNoGoroutineLeak is not parallel: it counts the process' goroutines.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Fail") == "1" {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}))
		defer srv.Close()
		c, err := New(Options{URL: srv.URL, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for range 5 {
			if err := c.Send(testCtx(t), testBody); err != nil {
				t.Fatal(err)
			}
		}
		failing, err := New(Options{URL: srv.URL, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond,
			Headers: map[string]string{"X-Fail": "1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer failing.Close()
		asError(t, failing.Send(testCtx(t), testBody), http.StatusServiceUnavailable)
	}()
	// Connections close asynchronously; wait a bounded time for them.
	deadline := time.Now().Add(testTimeout)
	for {
		after := runtime.NumGoroutine()
		if after <= before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before, %d after Close", before, after)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCloseClosesIdleConnections(t *testing.T) {
	t.Parallel()
	closed := make(chan struct{}, 10)
	s := &server{}
	s.Server = httptest.NewUnstartedServer(s.handler(func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.WriteHeader(http.StatusNoContent)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			closed <- struct{}{}
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	c, err := New(Options{URL: s.URL})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(testCtx(t), testBody); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c.Close() // idempotent
	select {
	case <-closed:
	case <-time.After(testTimeout):
		t.Fatal("the idle connection stayed open after Close")
	}
}

// Regression (issue 11): a downstream 429 with Retry-After: 86400 reached
// the sender as 503 with Retry-After: 86400, pausing its shard for a day.
func TestRetryAfterPassedOnIsCapped(t *testing.T) {
	for _, value := range []string{"86400", time.Now().Add(48 * time.Hour).UTC().Format(http.TimeFormat)} {
		srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
			w.Header().Set("Retry-After", value)
			http.Error(w, "slow down", http.StatusTooManyRequests)
		})
		c, _ := newClient(t, Options{URL: srv.URL, MaxRetries: -1, MaxRetryAfter: 2 * time.Minute})
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		err := c.Send(ctx, testBody)
		cancel()
		var e *Error
		if !errors.As(err, &e) || e.Status != http.StatusServiceUnavailable {
			t.Fatalf("Retry-After %q: err %v, want a 503 Error", value, err)
		}
		if e.RetryAfter != 2*time.Minute || e.RetryAfterHeader() != "120" {
			t.Fatalf("Retry-After %q: passed on %v (%q), want the 2m cap", value, e.RetryAfter, e.RetryAfterHeader())
		}
	}
}

// Regression (issue 11, reliability suite): a Retry-After that nearly
// filled the deadline was waited out, and the attempt after it was cut by
// the deadline; the downstream may have stored what the sender then
// resent. Now the wait must leave time for an attempt.
func TestRetryAfterLeavesTimeForTheAttempt(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	c, _ := newClient(t, Options{URL: srv.URL, MaxRetries: 5, Timeout: 2 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 2300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Send(ctx, testBody)
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusServiceUnavailable {
		t.Fatalf("err %v, want a 503", err)
	}
	if srv.attempts.Load() != 1 || ctx.Err() != nil {
		t.Fatalf("%d attempts, ctx %v after %v: the Retry-After was waited out", srv.attempts.Load(), ctx.Err(), time.Since(start))
	}
}
