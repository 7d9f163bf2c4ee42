package forward

import (
	"net/http"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	lowest := func(int64) int64 { return 0 }
	highest := func(k int64) int64 { return k - 1 }
	f := func(minB, maxB time.Duration, n int, wantLow, wantHigh time.Duration) {
		t.Helper()
		if got := backoff(minB, maxB, n, lowest); got != wantLow {
			t.Errorf("backoff(%v, %v, %d) lowest = %v, want %v", minB, maxB, n, got, wantLow)
		}
		if got := backoff(minB, maxB, n, highest); got != wantHigh {
			t.Errorf("backoff(%v, %v, %d) highest = %v, want %v", minB, maxB, n, got, wantHigh)
		}
	}
	ms := time.Millisecond
	// The first retry waits MinBackoff: jitter never goes below it.
	f(30*ms, 5*time.Second, 0, 30*ms, 30*ms)
	// Then the ceiling doubles and the wait is drawn from [ceiling/2, ceiling].
	f(30*ms, 5*time.Second, 1, 30*ms, 60*ms)
	f(30*ms, 5*time.Second, 2, 60*ms, 120*ms)
	f(30*ms, 5*time.Second, 3, 120*ms, 240*ms)
	// Capped at MaxBackoff, still jittered below it.
	f(30*ms, 5*time.Second, 20, 2500*ms, 5*time.Second)
	f(30*ms, 5*time.Second, 1000, 2500*ms, 5*time.Second)
	// No overflow with huge bounds.
	f(time.Hour, 1<<62, 1000, 1<<61, 1<<62)
	// Equal bounds.
	f(time.Second, time.Second, 5, time.Second, time.Second)
	f(0, 0, 3, 0, 0)
}

func TestBackoffRandomStaysInRange(t *testing.T) {
	t.Parallel()
	calls := 0
	rnd := func(k int64) int64 {
		calls++
		return int64(calls*7919) % k
	}
	for n := range 10 {
		for range 100 {
			d := backoff(time.Millisecond, 50*time.Millisecond, n, rnd)
			if d < time.Millisecond || d > 50*time.Millisecond {
				t.Fatalf("backoff retry %d = %v, outside [1ms, 50ms]", n, d)
			}
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f := func(v string, want time.Duration, wantOK bool) {
		t.Helper()
		got, ok := parseRetryAfter(v, now)
		if got != want || ok != wantOK {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", v, got, ok, want, wantOK)
		}
	}
	f("", 0, false)
	f("0", 0, true)
	f("1", time.Second, true)
	f(" 120 ", 2*time.Minute, true)
	f("99999999999999999999999", maxRetryAfter, true)
	f("9223372036854775807", maxRetryAfter, true)
	f("-1", 0, false)
	f("1.5", 0, false)
	f("soon", 0, false)
	f(now.Add(90*time.Second).Format(http.TimeFormat), 90*time.Second, true)
	f(now.Add(-time.Hour).Format(http.TimeFormat), 0, true)
	f("Sunday, 01-Mar-26 12:00:30 GMT", 30*time.Second, true) // RFC 850
	f("Sun Mar  1 12:00:30 2026", 30*time.Second, true)       // asctime
}

func TestLogLimiter(t *testing.T) {
	t.Parallel()
	l := logLimiter{interval: 10 * time.Second}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f := func(at time.Duration, wantOK bool, wantSuppressed int64) {
		t.Helper()
		ok, suppressed := l.allow(t0.Add(at))
		if ok != wantOK || suppressed != wantSuppressed {
			t.Errorf("allow(+%v) = %v, %d; want %v, %d", at, ok, suppressed, wantOK, wantSuppressed)
		}
	}
	f(0, true, 0)
	f(time.Second, false, 0)
	f(9*time.Second, false, 0)
	f(10*time.Second, true, 2)
	f(10*time.Second, false, 0)
	f(25*time.Second, true, 1)
}

func TestDescribe(t *testing.T) {
	t.Parallel()
	f := func(r attemptResult, want string) {
		t.Helper()
		if got := r.describe(); got != want {
			t.Errorf("describe() = %q, want %q", got, want)
		}
	}
	f(attemptResult{status: "500 Internal Server Error"}, "500 Internal Server Error")
	f(attemptResult{status: "500 Internal Server Error", msg: []byte(" \n")}, "500 Internal Server Error")
	f(attemptResult{status: "400 Bad Request", msg: []byte("bad\n")}, "400 Bad Request: bad")
	// A body cut inside "é" (0xc3 0xa9), and a binary body.
	f(attemptResult{status: "400 Bad Request", msg: []byte("caf\xc3")}, "400 Bad Request: caf\uFFFD")
	f(attemptResult{status: "400 Bad Request", msg: []byte("\x00\xff\xfeok")}, "400 Bad Request: \x00\uFFFDok")
}
