package forward

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// backoff returns how long to wait before retry number n (0 for the first
// retry). The ceiling d = min(minB·2ⁿ, maxB) doubles per retry; the wait is
// drawn uniformly from [d/2, d] and never below minB, so concurrent senders
// spread out instead of retrying in lockstep. rnd(k) must return a value in
// [0, k).
func backoff(minB, maxB time.Duration, n int, rnd func(int64) int64) time.Duration {
	d := minB
	for i := 0; i < n && d < maxB; i++ {
		if d > maxB/2 {
			d = maxB
			break
		}
		d *= 2
	}
	d = min(d, maxB)
	if d <= 0 {
		return 0
	}
	half := d / 2
	w := half + time.Duration(rnd(int64(d-half)+1))
	return max(w, minB)
}

// maxRetryAfter bounds a parsed Retry-After so that arithmetic on it cannot
// overflow. It is far beyond any ctx deadline.
const maxRetryAfter = time.Duration(math.MaxInt64 / 4)

// parseRetryAfter parses a Retry-After header value: delta-seconds or an
// HTTP-date (RFC 9110 §10.2.3). A date in the past means 0. ok is false when
// the header is absent or malformed, in which case the caller falls back to
// its backoff.
func parseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if ne, isNum := err.(*strconv.NumError); isNum && ne.Err == strconv.ErrRange {
				return maxRetryAfter, true
			}
			return 0, false
		}
		if secs > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), maxRetryAfter), true
}

// sleep waits for d or until ctx is done. It reports whether the full wait
// elapsed with ctx still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// logLimiter lets one log line through per interval and counts the ones it
// held back, so a misconfigured downstream produces one line every few
// seconds instead of one per request. It is safe for concurrent use.
type logLimiter struct {
	interval   time.Duration
	next       atomic.Int64 // unix nanoseconds before which nothing is logged
	suppressed atomic.Int64
}

// allow reports whether a line may be logged at now and, if so, how many
// lines were suppressed since the previous one.
func (l *logLimiter) allow(now time.Time) (ok bool, suppressed int64) {
	n := l.next.Load()
	if now.UnixNano() < n || !l.next.CompareAndSwap(n, now.Add(l.interval).UnixNano()) {
		l.suppressed.Add(1)
		return false, 0
	}
	return true, l.suppressed.Swap(0)
}
