// Package forward sends an encoded, snappy-compressed remote-write 1.0 or
// 2.0 body to the downstream receiver (Prometheus, Mimir, Thanos, VictoriaMetrics),
// retries what can be retried within the caller's deadline, and maps the
// outcome to the HTTP status Cardinal must answer its own sender with.
//
// Promise: Send returns nil only after the downstream answered 2xx. Every
// other outcome is an *Error whose Status keeps the data in the sender's WAL
// (5xx) unless the downstream rejected the data itself (400). Send never
// copies the body; it leaks no goroutines and always drains and closes
// response bodies so connections are reused.
//
// Deliver builds on Send for whole requests: when the downstream rejects a
// body, it splits the request until the series the downstream refuses are
// isolated and reported, so that one bad series never costs the others and
// no rejected body is sent twice by one Deliver. Its fast path allocates
// nothing after warm-up.
package forward

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/config"
)

// Defaults applied by New to zero-valued Options fields.
const (
	DefaultTimeout    = 30 * time.Second
	DefaultMinBackoff = 30 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
	DefaultMaxRetries = 3
	DefaultUserAgent  = "cardinal"
	// DefaultMaxRetryAfter caps the Retry-After passed on to the sender: a
	// downstream asking for a day would otherwise pause a Prometheus shard
	// for a day.
	DefaultMaxRetryAfter = 5 * time.Minute
)

const (
	// maxErrorBody is how much of a downstream error response is quoted.
	maxErrorBody = 1 << 10
	// maxDrain bounds how much of a response body is read and thrown away so
	// the connection can be reused; bigger bodies cost a new connection.
	maxDrain = 64 << 10
	// logInterval is the least time between two log lines of one kind.
	logInterval = 10 * time.Second
)

// Options configure a Client. Zero values take the defaults named on each
// field.
type Options struct {
	// URL of the downstream remote-write endpoint, http or https. Required.
	URL string
	// HTTPClientConfig holds Prometheus' HTTP client settings: basic_auth,
	// authorization, oauth2, tls_config, proxy_url, follow_redirects,
	// enable_http2. It is validated by New and not modified.
	HTTPClientConfig config.HTTPClientConfig
	// Headers are extra headers sent on every request, e.g. X-Scope-OrgID.
	// Headers Cardinal or net/http set itself (Content-Type, Authorization,
	// Host, ...) are rejected by New.
	Headers map[string]string
	// Timeout bounds one attempt, from sending the request to draining the
	// response. Default DefaultTimeout.
	Timeout time.Duration
	// MinBackoff is the wait before the first retry; it doubles per retry up
	// to MaxBackoff, with jitter. Defaults DefaultMinBackoff and
	// DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// MaxRetries is the number of retries after the first attempt. 0 means
	// DefaultMaxRetries; a negative value disables retries.
	MaxRetries int
	// UserAgent is sent on every request. Default DefaultUserAgent.
	UserAgent string
	// MaxRetryAfter caps the Retry-After an Error carries back to the
	// sender. Default DefaultMaxRetryAfter.
	MaxRetryAfter time.Duration
	// Registerer receives the cardinal_forward_* metrics; nil registers
	// nothing. Clients sharing a Registerer share the metrics.
	Registerer prometheus.Registerer
	// Logger receives rate-limited reports of failures; nil discards them.
	Logger *slog.Logger
	// Protocol is the remote-write message sent: ProtocolV1 (the zero
	// value), ProtocolV2, or ProtocolAuto.
	Protocol Protocol
}

// Protocol selects the protobuf message a Client sends.
type Protocol uint8

const (
	// ProtocolV1 sends remote write 1.0 (prometheus.WriteRequest).
	ProtocolV1 Protocol = iota
	// ProtocolV2 sends remote write 2.0 (io.prometheus.write.v2.Request);
	// a downstream that answers 415, or 2xx without Written headers to a
	// body with data, is misconfigured (502 to the sender, which retries).
	ProtocolV2
	// ProtocolAuto sends 2.0 until the downstream shows it does not speak
	// it, then 1.0 for good: Prometheus 2.x and VictoriaMetrics take a 2.0
	// body as an empty 1.0 one and answer 204 without Written headers.
	ProtocolAuto
)

// ParseProtocol parses downstream.protobuf_message: "v1" (or empty), "v2"
// or "auto".
func ParseProtocol(s string) (Protocol, error) {
	switch s {
	case "", "v1":
		return ProtocolV1, nil
	case "v2":
		return ProtocolV2, nil
	case "auto":
		return ProtocolAuto, nil
	}
	return 0, fmt.Errorf("protobuf_message: %q is not one of v1, v2, auto", s)
}

// ErrFellBack is returned by SendV2 when ProtocolAuto found that the
// downstream does not speak remote write 2.0: nothing was stored, and the
// data must be sent again as 1.0.
var ErrFellBack = errors.New("downstream does not speak remote write 2.0; falling back to 1.0")

// Client forwards remote-write bodies to one downstream. It is safe for
// concurrent use.
type Client struct {
	url           string // as given, for requests
	urlForLog     string // password redacted
	client        *http.Client
	header        http.Header // cloned per attempt
	timeout       time.Duration
	minBackoff    time.Duration
	maxBackoff    time.Duration
	maxRetries    int
	maxRetryAfter time.Duration
	logger        *slog.Logger
	m             *metrics
	msgBufs       sync.Pool // *[maxErrorBody]byte
	closed        atomic.Bool
	protocol      Protocol
	headerV2      http.Header
	// v2 says whether bodies are sent as remote write 2.0 now; ProtocolAuto
	// clears it for good on the first sign that the downstream cannot.
	v2 atomic.Bool

	logMisconfigured logLimiter
	logRejected      logLimiter
	logUnavailable   logLimiter
}

// reservedHeader reports whether Cardinal or net/http sets the canonical
// header key itself, so Options.Headers may not replace it.
func reservedHeader(key string) bool {
	switch key {
	case "Authorization", "Connection", "Content-Encoding", "Content-Length",
		"Content-Type", "Host", "Keep-Alive", "Proxy-Authorization", "Te",
		"Trailer", "Transfer-Encoding", "Upgrade", "User-Agent",
		"X-Prometheus-Remote-Write-Version":
		return true
	}
	return false
}

// New validates opts, applies defaults and builds the HTTP client with
// config.NewClientFromConfig.
func New(opts Options) (*Client, error) {
	u, err := url.Parse(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("invalid downstream url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("invalid downstream url %q: want http:// or https:// with a host", u.Redacted())
	}
	if opts.Timeout < 0 || opts.MinBackoff < 0 || opts.MaxBackoff < 0 || opts.MaxRetryAfter < 0 {
		return nil, errors.New("timeout, min_backoff, max_backoff and max_retry_after must not be negative")
	}
	c := &Client{
		url:           opts.URL,
		urlForLog:     u.Redacted(),
		timeout:       cmp.Or(opts.Timeout, DefaultTimeout),
		minBackoff:    cmp.Or(opts.MinBackoff, DefaultMinBackoff),
		maxBackoff:    cmp.Or(opts.MaxBackoff, DefaultMaxBackoff),
		maxRetries:    opts.MaxRetries,
		maxRetryAfter: cmp.Or(opts.MaxRetryAfter, DefaultMaxRetryAfter),
		logger:        opts.Logger,
	}
	if c.maxBackoff < c.minBackoff {
		return nil, fmt.Errorf("max_backoff %s is less than min_backoff %s", c.maxBackoff, c.minBackoff)
	}
	switch {
	case c.maxRetries == 0:
		c.maxRetries = DefaultMaxRetries
	case c.maxRetries < 0:
		c.maxRetries = 0
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	c.logMisconfigured.interval = logInterval
	c.logRejected.interval = logInterval
	c.logUnavailable.interval = logInterval
	c.msgBufs.New = func() any { return new([maxErrorBody]byte) }

	c.header = http.Header{
		"Content-Encoding":                  {"snappy"},
		"Content-Type":                      {"application/x-protobuf"},
		"User-Agent":                        {cmp.Or(opts.UserAgent, DefaultUserAgent)},
		"X-Prometheus-Remote-Write-Version": {"0.1.0"},
	}
	for name, value := range opts.Headers {
		if err := validHeader(name, value); err != nil {
			return nil, err
		}
		key := http.CanonicalHeaderKey(name)
		if reservedHeader(key) {
			return nil, fmt.Errorf("header %q is set by Cardinal and cannot be configured", name)
		}
		c.header[key] = []string{value}
	}
	c.headerV2 = c.header.Clone()
	c.headerV2["Content-Type"] = []string{"application/x-protobuf;proto=io.prometheus.write.v2.Request"}
	c.headerV2["X-Prometheus-Remote-Write-Version"] = []string{"2.0.0"}
	if opts.Protocol > ProtocolAuto {
		return nil, fmt.Errorf("unknown protocol %d", opts.Protocol)
	}
	c.protocol = opts.Protocol
	c.v2.Store(opts.Protocol != ProtocolV1)

	// Validate a copy: Validate fills in defaults through the pointer.
	hc := opts.HTTPClientConfig
	if hc.Authorization != nil {
		a := *hc.Authorization
		hc.Authorization = &a
	}
	if err := hc.Validate(); err != nil {
		return nil, fmt.Errorf("invalid http client config: %w", err)
	}
	if c.client, err = config.NewClientFromConfig(hc, "cardinal_forward"); err != nil {
		return nil, fmt.Errorf("cannot build http client: %w", err)
	}
	if c.m, err = newMetrics(opts.Registerer); err != nil {
		return nil, fmt.Errorf("cannot register metrics: %w", err)
	}
	c.setVersionGauge()
	return c, nil
}

// Close closes idle connections to the downstream. Call it after the last
// Send has returned; it is idempotent. A Send after Close still works but
// opens a new connection.
func (c *Client) Close() {
	if c.closed.CompareAndSwap(false, true) {
		c.client.CloseIdleConnections()
	}
}

// outcome classifies one attempt.
type outcome uint8

const (
	outcomeOK            outcome = iota // 2xx
	outcomeRetry                        // 429, 5xx, timeout, transport error
	outcomeRejected                     // 400, 409, 413: the data is refused
	outcomeMisconfigured                // other 4xx, 3xx: Cardinal's setup is wrong
)

// attemptResult describes one attempt. msg aliases the Send's message buffer
// and is valid until the next attempt.
type attemptResult struct {
	outcome       outcome
	status        string // e.g. "503 Service Unavailable"; "" for transport errors
	code          int
	err           error // transport error
	msg           []byte
	retryAfter    time.Duration
	hasRetryAfter bool
	written       bool // a 2xx carried a Written header
}

// describe renders the downstream's answer for an error message.
func (r *attemptResult) describe() string {
	if r.err != nil {
		return r.err.Error()
	}
	msg := bytes.TrimSpace(r.msg)
	if len(msg) == 0 {
		return r.status
	}
	// The body may be binary, or cut in the middle of a rune.
	return r.status + ": " + strings.ToValidUTF8(string(msg), "\uFFFD")
}

// Send POSTs body (snappy-compressed remote-write 1.0 protobuf) and retries
// retryable failures within ctx's deadline. nil means the downstream
// answered 2xx; any other result is an *Error.
//
// body is sent as is on every attempt and never copied: the caller must not
// modify it until Send returns, and may reuse it as soon as Send returns
// (late reads by net/http after a cancelled attempt are cut off).
//
// ctx should carry a deadline shorter than the sender's own remote-write
// timeout: it bounds the retries, and a Retry-After that does not fit in it
// is passed back to the sender instead of being waited out.
func (c *Client) Send(ctx context.Context, body []byte) error {
	return c.send(ctx, body, false, false)
}

// SendsV2 reports whether bodies should be encoded as remote write 2.0
// now (see Protocol).
func (c *Client) SendsV2() bool { return c.v2.Load() }

// SendV2 is Send for a remote write 2.0 body. hasData says whether the
// body holds any sample, histogram or exemplar: a 2xx answer to it must
// then carry Written headers, or the downstream stored nothing. Under
// ProtocolAuto such an answer, or a 415, switches the Client to 1.0 for good
// and returns ErrFellBack: the caller sends the data again as 1.0.
func (c *Client) SendV2(ctx context.Context, body []byte, hasData bool) error {
	return c.send(ctx, body, true, hasData)
}

func (c *Client) setVersionGauge() {
	if c.v2.Load() {
		c.m.version.Set(2)
	} else {
		c.m.version.Set(1)
	}
}

// fallBack switches ProtocolAuto to 1.0 for good.
func (c *Client) fallBack(why string) error {
	if c.v2.CompareAndSwap(true, false) {
		c.m.fallbacks.Inc()
		c.setVersionGauge()
		c.logger.Warn("downstream does not speak remote write 2.0; sending 1.0 from now on (downstream.protobuf_message: auto)",
			"url", c.urlForLog, "reason", why)
	}
	return ErrFellBack
}

func (c *Client) send(ctx context.Context, body []byte, v2, hasData bool) error {
	start := time.Now()
	defer func() { c.m.duration.Observe(time.Since(start).Seconds()) }()

	guard := &bodyGuard{body: body}
	var buf *[maxErrorBody]byte // taken on the first non-2xx response
	defer func() {
		guard.release()
		if buf != nil {
			c.msgBufs.Put(buf)
		}
	}()

	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return c.cancelled(err, attempt)
		}
		if attempt > 0 {
			c.m.retries.Inc()
		}
		res := c.attempt(ctx, guard, &buf, v2)
		switch res.outcome {
		case outcomeOK:
			if v2 && hasData && !res.written {
				// The 2.0 specification's check: a receiver that stored
				// the data says so.
				if c.protocol == ProtocolAuto {
					return c.fallBack(res.status + " without X-Prometheus-Remote-Write-*-Written headers")
				}
				res.msg = []byte("answered a remote write 2.0 request without X-Prometheus-Remote-Write-*-Written headers: it stored nothing; set downstream.protobuf_message to v1 or auto")
				return c.misconfigured(&res)
			}
			// Fast path.
			return nil
		case outcomeRejected:
			return c.rejected(&res)
		case outcomeMisconfigured:
			if v2 && res.code == http.StatusUnsupportedMediaType && c.protocol == ProtocolAuto {
				return c.fallBack(res.describe())
			}
			return c.misconfigured(&res)
		}

		// Slow path: retryable failure.
		if err := ctx.Err(); err != nil {
			return c.cancelled(err, attempt+1)
		}
		wait := res.retryAfter
		if !res.hasRetryAfter {
			wait = backoff(c.minBackoff, c.maxBackoff, attempt, rand.Int64N)
		}
		if attempt >= c.maxRetries {
			return c.unavailable(&res, wait,
				fmt.Sprintf("downstream unavailable after %d attempts", attempt+1))
		}
		// The wait must leave time for the attempt it waits for: a
		// Retry-After that nearly fills the deadline would end in an
		// attempt cut short, and the sender would resend what the
		// downstream may have stored.
		if deadline, ok := ctx.Deadline(); ok && time.Now().Add(wait+minAttemptTime(c.timeout)).After(deadline) {
			if res.hasRetryAfter {
				return c.unavailable(&res, wait,
					fmt.Sprintf("downstream asked to retry after %s, past the request deadline, after %d attempts", wait, attempt+1))
			}
			return c.unavailable(&res, wait,
				fmt.Sprintf("downstream unavailable after %d attempts, no time left for another", attempt+1))
		}
		if !sleep(ctx, wait) {
			return c.cancelled(ctx.Err(), attempt+1)
		}
	}
}

// minAttemptTime is the least time worth starting an attempt with: a
// quarter of the attempt timeout, at most a second.
func minAttemptTime(timeout time.Duration) time.Duration { return min(timeout/4, time.Second) }

// attempt makes one request. It always drains and closes the response body.
func (c *Client) attempt(ctx context.Context, guard *bodyGuard, buf **[maxErrorBody]byte, v2 bool) attemptResult {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	defer func() { c.m.attemptDuration.Observe(time.Since(start).Seconds()) }()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, nil)
	if err != nil {
		return attemptResult{outcome: outcomeMisconfigured, err: err}
	}
	// Every attempt, and every resend inside net/http through GetBody, reads
	// the caller's bytes afresh; nothing is copied.
	req.Body, _ = guard.reader()
	req.GetBody = guard.reader
	req.ContentLength = int64(len(guard.body))
	if v2 {
		req.Header = c.headerV2.Clone()
	} else {
		req.Header = c.header.Clone()
	}
	resp, err := c.client.Do(req)
	if err != nil {
		c.m.transportErrors.Inc()
		return attemptResult{outcome: outcomeRetry, err: err}
	}
	defer func() {
		_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
		_ = resp.Body.Close()
	}()
	c.m.requests.WithLabelValues(strconv.Itoa(resp.StatusCode)).Inc()

	res := attemptResult{code: resp.StatusCode, status: resp.Status}
	if res.status == "" {
		res.status = strconv.Itoa(resp.StatusCode)
	}
	switch code := resp.StatusCode; {
	case code/100 == 2:
		res.outcome = outcomeOK
		if v2 {
			h := resp.Header
			res.written = h.Get("X-Prometheus-Remote-Write-Samples-Written") != "" ||
				h.Get("X-Prometheus-Remote-Write-Histograms-Written") != "" ||
				h.Get("X-Prometheus-Remote-Write-Exemplars-Written") != ""
		}
		return res
	case code == http.StatusTooManyRequests || code/100 == 5:
		res.outcome = outcomeRetry
		res.retryAfter, res.hasRetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	case code == http.StatusBadRequest || code == http.StatusConflict || code == http.StatusRequestEntityTooLarge:
		res.outcome = outcomeRejected
	default:
		res.outcome = outcomeMisconfigured
	}
	if *buf == nil {
		*buf = c.msgBufs.Get().(*[maxErrorBody]byte)
	}
	n, _ := io.ReadFull(resp.Body, (*buf)[:])
	res.msg = (*buf)[:n]
	return res
}

func (c *Client) rejected(res *attemptResult) *Error {
	e := &Error{
		Status: http.StatusBadRequest,
		Code:   res.code,
		Reason: classifyRejection(res.code, res.msg),
		Msg:    "downstream rejected the request: " + res.describe(),
	}
	if ok, suppressed := c.logRejected.allow(time.Now()); ok {
		c.logger.Warn("downstream rejected data; the sender will drop it",
			"url", c.urlForLog, "response", res.describe(), "suppressed", suppressed)
	}
	return e
}

func (c *Client) misconfigured(res *attemptResult) *Error {
	e := &Error{
		Status: http.StatusBadGateway,
		Code:   res.code,
		Msg:    "downstream refused the request, check Cardinal's downstream url and credentials: " + res.describe(),
		Err:    res.err,
	}
	if ok, suppressed := c.logMisconfigured.allow(time.Now()); ok {
		c.logger.Error("downstream refused the request, check the downstream url and credentials; the sender keeps the data and retries",
			"url", c.urlForLog, "response", res.describe(), "suppressed", suppressed)
	}
	return e
}

// unavailable reports a retryable failure that Send stops retrying. The
// sender is told to retry after the downstream's Retry-After if it sent one,
// or after the next backoff if it answered 429.
func (c *Client) unavailable(res *attemptResult, wait time.Duration, msg string) *Error {
	e := &Error{
		Status: http.StatusServiceUnavailable,
		Code:   res.code,
		Msg:    msg + ": " + res.describe(),
		Err:    res.err,
	}
	if res.hasRetryAfter || res.code == http.StatusTooManyRequests {
		e.RetryAfter = min(wait, c.maxRetryAfter)
	}
	if ok, suppressed := c.logUnavailable.allow(time.Now()); ok {
		c.logger.Warn("cannot forward to downstream; the sender keeps the data and retries",
			"url", c.urlForLog, "err", e.Msg, "suppressed", suppressed)
	}
	return e
}

// cancelled reports that ctx ended: the sender went away or the deadline
// passed. The sender retries from its WAL, so nothing is logged.
func (c *Client) cancelled(err error, attempts int) *Error {
	return &Error{
		Status: http.StatusServiceUnavailable,
		Msg:    fmt.Sprintf("forward to downstream stopped after %d attempts", attempts),
		Err:    err,
	}
}

// validHeader checks a configured header against RFC 9110's field syntax,
// so a bad name fails at startup rather than on every request.
func validHeader(name, value string) error {
	if name == "" {
		return errors.New("header name is empty")
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return fmt.Errorf("header name %q contains invalid character %q", name, name[i])
		}
	}
	for i := 0; i < len(value); i++ {
		if b := value[i]; (b < ' ' && b != '\t') || b == 0x7f {
			return fmt.Errorf("header %q value contains a control character", name)
		}
	}
	return nil
}

func isTokenChar(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	switch b {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}
