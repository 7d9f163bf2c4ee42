// Package ingest is Cardinal's remote-write receiver: the HTTP handler for
// POST /api/v1/write. It enforces the protocol (method, content type and
// encoding, size limits), decompresses and decodes into a pooled wire.Request,
// hands the request to the pipeline and turns the outcome into the status
// code the remote-write specification prescribes:
//
//   - 204 once the downstream has acknowledged everything that was forwarded;
//   - 4xx, which senders never retry, for requests that can never succeed;
//   - 5xx, with Retry-After where known, for anything worth retrying, so
//     that the sender keeps the data in its WAL.
//
// All status decisions are made in statusFor and in ServeHTTP, nowhere else.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cardinal-gateway/cardinal/admission"
	"github.com/cardinal-gateway/cardinal/cluster"
	"github.com/cardinal-gateway/cardinal/config"
	"github.com/cardinal-gateway/cardinal/forward"
	"github.com/cardinal-gateway/cardinal/gateway"
	"github.com/cardinal-gateway/cardinal/internal/freelist"
	"github.com/cardinal-gateway/cardinal/wire"
)

// Processor runs the pipeline on a decoded request; gateway.Gateway is the
// production implementation.
type Processor interface {
	Process(ctx context.Context, req *wire.Request) (gateway.Result, error)
	MaxRequestBytes() int
}

// BodyTimeouts bound the reading of a request body: stall is the longest
// wait for the next bytes, total the longest time for the whole body. A
// Processor that implements it sets them; otherwise the defaults apply.
type BodyTimeouts interface {
	BodyTimeouts() (stall, total time.Duration)
}

// LabelDeferrer is a Processor that often needs only the encoded labels
// of a series (see wire.Request.SetDeferLabels): DeferLabels, asked
// before each request is decoded, says whether to leave them encoded.
type LabelDeferrer interface {
	DeferLabels() bool
}

// LabelGuesser is a LabelDeferrer that verifies what it is given (see
// wire.Request.SetGuessLabels): GuessLabels, asked before each request is
// decoded with its labels deferred, says whether to guess where they end.
// A request whose guessed series are malformed fails Process with an error
// wrapping wire.ErrMalformed, and when the guesses held more or fewer than
// their one sample each the Result says so (Recounted).
type LabelGuesser interface {
	GuessLabels() bool
}

// Without BodyTimeouts, config's defaults apply: generous enough for a
// sender on a slow link (32 MiB at 256 KiB/s takes two minutes), short
// enough that a connection that stops sending is cut.

// Options configure a Handler.
type Options struct {
	Processor Processor
	// Admission, when set, bounds the requests processed at once; past it
	// they are answered 503 before their body is read.
	Admission  *admission.Controller
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Handler serves remote-write requests. It is safe for concurrent use.
type Handler struct {
	proc     Processor
	deferrer LabelDeferrer // proc, when it is one
	guesser  LabelGuesser  // the same
	adm      *admission.Controller
	shed     prometheus.Counter
	logger   *slog.Logger
	requests *prometheus.CounterVec
	duration prometheus.Histogram
	pool     *freelist.List[workspace]
	maxBytes int64 // the admission controller's byte bound, 0 for none
}

// workspace holds one request's buffers; pooled.
type workspace struct {
	body []byte
	raw  []byte
	req  wire.Request
	cost int64 // bytes reserved with the admission controller

	// written is what the request wrote (samples, histograms, exemplars)
	// for the Written headers, when hasWritten says the pipeline ran.
	written    [3]int
	hasWritten bool
}

// Buffers larger than this are dropped instead of pooled, so that one
// oversized request does not keep its memory for the life of the process.
const maxPooledBuffer = 16 << 20

// Content types of remote write. Version 1.0 senders may omit the proto
// parameter.
const (
	contentTypeProtobuf = "application/x-protobuf"
	protoV1             = "prometheus.WriteRequest"
	protoV2             = "io.prometheus.write.v2.Request"
)

// New returns a Handler.
func New(opts Options) *Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	f := promauto.With(opts.Registerer)
	h := &Handler{
		proc:   opts.Processor,
		adm:    opts.Admission,
		logger: opts.Logger,
		shed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardinal_rejected_requests_total",
			Help: "Remote-write requests answered 503 before their body was read, by reason: overload (requests or bytes in flight, or memory, at their bounds).",
		}, []string{"reason"}).WithLabelValues("overload"),
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardinal_received_requests_total",
			Help: "Remote-write requests received, by the status code Cardinal answered.",
		}, []string{"code"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:                        "cardinal_request_duration_seconds",
			Help:                        "Time from receiving a remote-write request to answering it, downstream time included.",
			Buckets:                     []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
			NativeHistogramBucketFactor: 1.1,
		}),
	}
	h.pool = freelist.New(2*runtime.GOMAXPROCS(0), func() *workspace { return new(workspace) })
	h.deferrer, _ = opts.Processor.(LabelDeferrer)
	h.guesser, _ = opts.Processor.(LabelGuesser)
	if h.adm != nil {
		h.maxBytes = h.adm.Options().MaxBytes
	}
	return h
}

// httpError is an answer other than 204.
type httpError struct {
	status     int
	retryAfter time.Duration
	msg        string
	// clusterReason, on a 503 of a cluster's replica, tells the
	// forwarding replica why (cluster.ReasonHeader).
	clusterReason string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) *httpError {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ws := h.pool.Get()
	ws.hasWritten = false
	herr := h.serve(ws, w, r)
	written, hasWritten := ws.written, ws.hasWritten
	h.putWorkspace(ws)
	if hasWritten {
		setWritten(w.Header(), written)
	}

	status := http.StatusNoContent
	if herr != nil {
		status = herr.status
		if herr.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", http.MethodPost)
		}
		if herr.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((herr.retryAfter+time.Second-1)/time.Second)))
		}
		if herr.clusterReason != "" {
			w.Header().Set(cluster.ReasonHeader, herr.clusterReason)
		}
		if herr.status == http.StatusRequestTimeout {
			// The rest of a stalled body may still come; the connection
			// cannot be reused.
			w.Header().Set("Connection", "close")
		}
		http.Error(w, herr.msg, status)
	} else {
		w.WriteHeader(status)
	}
	h.requests.WithLabelValues(strconv.Itoa(status)).Inc()
	h.duration.Observe(time.Since(start).Seconds())
}

func (h *Handler) serve(ws *workspace, w http.ResponseWriter, r *http.Request) *httpError {
	if r.Method != http.MethodPost {
		return errorf(http.StatusMethodNotAllowed, "method %s not allowed: remote write uses POST", r.Method)
	}
	msg, herr := checkHeaders(r.Header)
	if herr != nil {
		return herr
	}
	limit := h.proc.MaxRequestBytes()
	// A snappy block that decodes to at most limit bytes is at most this
	// long; anything longer is over the limit whatever it holds.
	maxBody := snappy.MaxEncodedLen(limit)
	if r.ContentLength > int64(maxBody) {
		return errorf(http.StatusRequestEntityTooLarge, "request body of %d bytes exceeds the limit of %d bytes", r.ContentLength, maxBody)
	}
	if h.adm != nil {
		ws.cost = estimateCost(r.ContentLength, limit)
		if reason := h.adm.Acquire(ws.cost); reason != admission.Admitted {
			return h.overloaded(reason)
		}
		defer func() { h.adm.Release(ws.cost) }()
	}
	// The buffer grows with the bytes that actually arrive, never from the
	// announced Content-Length: a client announcing 39 MB and sending 12
	// bytes must not make Cardinal allocate 39 MB.
	stall, total := config.DefaultBodyStallTimeout, config.DefaultBodyTimeout
	if bt, ok := h.proc.(BodyTimeouts); ok {
		stall, total = bt.BodyTimeouts()
	}
	var err error
	ws.body, err = readBody(ws.body[:0], r.Body, maxBody, bodyDeadline{w: w, stall: stall, end: time.Now().Add(total)})
	if err != nil {
		switch {
		case errors.Is(err, errTooLarge):
			return errorf(http.StatusRequestEntityTooLarge, "request body exceeds the limit of %d bytes", maxBody)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return errorf(http.StatusRequestTimeout, "request body not received in time (no bytes for %s, or more than %s in all)", stall, total)
		}
		return errorf(http.StatusBadRequest, "cannot read request body: %s", err)
	}
	n, err := snappy.DecodedLen(ws.body)
	if err != nil {
		return errorf(http.StatusBadRequest, "corrupt snappy body: %s", err)
	}
	// Checked before decoding, so that a forged length cannot make Cardinal
	// allocate it.
	if n > limit {
		return errorf(http.StatusBadRequest, "decompressed size of %d bytes exceeds receive.max_request_bytes (%d)", n, limit)
	}
	if h.adm != nil {
		cost := admission.Cost(len(ws.body), n)
		if !h.adm.Resize(ws.cost, cost) {
			return h.overloaded(admission.TooManyBytes)
		}
		ws.cost = cost
	}
	if cap(ws.raw) < n {
		// A quarter to spare: the next, slightly larger body of the
		// same sender reuses it.
		ws.raw = make([]byte, n, n+n/4)
	}
	ws.raw, err = snappy.Decode(ws.raw[:cap(ws.raw)], ws.body)
	if err != nil {
		return errorf(http.StatusBadRequest, "corrupt snappy body: %s", err)
	}
	if h.maxBytes > 0 {
		// Before decoding allocates: every series takes a header, however
		// few bytes it came in (an empty series is two). A body whose series
		// headers alone exceed the in-flight budget can never be processed
		// within it, alone or not.
		if model := wire.CountSeries(ws.raw, msg == messageV2) * wire.SeriesSize; int64(model) > h.maxBytes {
			return errorf(http.StatusRequestEntityTooLarge, "request of %d bytes holds %d series, whose headers alone take %d bytes, more than receive.max_inflight_bytes (%d)",
				n, model/wire.SeriesSize, model, h.maxBytes)
		}
	}
	deferLabels := h.deferrer != nil && h.deferrer.DeferLabels()
	ws.req.SetDeferLabels(deferLabels)
	ws.req.SetGuessLabels(deferLabels && msg == messageV1 && h.guesser != nil && h.guesser.GuessLabels())
	if herr := decode(&ws.req, msg, ws.raw); herr != nil {
		return herr
	}
	// ws.body stays as it is until the request is answered: a request
	// that the pipeline leaves unchanged goes downstream as it came.
	ws.req.Original = ws.body
	if h.adm != nil {
		// The model's real size: a 2.0 request decodes into several times
		// its own size, which the estimate from the body did not know.
		cost := admission.DecodedCost(len(ws.body), n, ws.req.DecodedBytes())
		if cost > ws.cost && !h.adm.Resize(ws.cost, cost) {
			return h.overloaded(admission.TooManyBytes)
		}
		if cost > ws.cost {
			ws.cost = cost
		}
	}
	floats, histograms, exemplars := ws.req.Counts()
	ctx := r.Context()
	if o, ok := cluster.OriginFromHeaders(r.Header); ok {
		// Forwarded by the replica of the cluster that received it: this
		// one owns its series (or answers 503, see gateway.checkOrigin).
		ctx = cluster.WithOrigin(ctx, o)
	}
	res, err := h.proc.Process(ctx, &ws.req)
	if err != nil {
		return h.statusFor(err)
	}
	if res.Recounted {
		floats, histograms, exemplars = res.Received[0], res.Received[1], res.Received[2]
	}
	// What is not invalid and not refused downstream counts as written,
	// whether it was forwarded, merged, folded or dropped by a rule: the
	// user configured those away, and the sender must not resend them.
	inv, rej := &res.Invalid, &res.Rejected
	ws.written = [3]int{floats - inv.Floats - rej.Floats, histograms - inv.Histograms - rej.Histograms, exemplars - inv.Exemplars - rej.Exemplars}
	ws.hasWritten = true
	// The valid rest has been delivered; 400 tells the sender not to resend
	// what can never be accepted.
	invalid, rejected := res.Invalid.DroppedSeries(), res.Rejected.Series
	switch {
	case invalid > 0 && rejected > 0:
		return errorf(http.StatusBadRequest, "dropped %d invalid series (%d samples): %s; the downstream refused %d series (%d samples), the first as %s: %s; the other series were accepted",
			invalid, res.Invalid.DroppedSamples(), res.Invalid.Describe(), rejected, res.Rejected.Samples, res.Rejected.Reason, res.Rejected.Detail)
	case invalid > 0:
		return errorf(http.StatusBadRequest, "dropped %d invalid series (%d samples): %s; the other series were accepted",
			invalid, res.Invalid.DroppedSamples(), res.Invalid.Describe())
	case rejected > 0:
		return errorf(http.StatusBadRequest, "the downstream refused %d series (%d samples), the first as %s: %s; the other series were accepted",
			rejected, res.Rejected.Samples, res.Rejected.Reason, res.Rejected.Detail)
	}
	return nil
}

// overloadRetryAfter is what a shed sender is told to wait: short, because
// the load that shed it is usually gone in a second, and Prometheus backs
// off on its own as well.
const overloadRetryAfter = time.Second

// overloaded answers a request that the admission controller shed.
func (h *Handler) overloaded(reason admission.Reason) *httpError {
	h.shed.Inc()
	return &httpError{status: http.StatusServiceUnavailable, retryAfter: overloadRetryAfter, msg: overloadMessages[reason]}
}

var overloadMessages = [...]string{
	admission.TooManyRequests: "overloaded: too many requests in flight (receive.max_inflight_requests); retry",
	admission.TooManyBytes:    "overloaded: too many bytes in flight (receive.max_inflight_bytes); retry",
	admission.HeapFull:        "overloaded: memory near its limit (receive.memory_limit); retry",
}

// estimateCost is what a request is reserved before its body is read:
// remote write compresses about 8 to 13 times, and a body without a length
// is taken as a mid-sized one. The announced length counts up to 1 MiB
// only: the reservation is corrected to the real size once the body is in,
// and a client announcing 39 MB and sending nothing must not hold most of
// the byte budget while it stalls.
func estimateCost(contentLength int64, limit int) int64 {
	if contentLength <= 0 {
		contentLength = 1 << 20
	}
	cl := min(contentLength, 1<<20)
	return admission.Cost(int(cl), int(min(cl*8, int64(limit))))
}

// statusFor maps a pipeline error to the answer for the sender. It is the one
// place where downstream outcomes become status codes.
func (h *Handler) statusFor(err error) *httpError {
	var ferr *forward.Error
	if errors.As(err, &ferr) {
		herr := &httpError{status: ferr.Status, retryAfter: ferr.RetryAfter, msg: ferr.Error()}
		if ferr.Status == http.StatusServiceUnavailable && (ferr.Reason == cluster.ErrHandover || ferr.Reason == cluster.ErrView) {
			herr.clusterReason = ferr.Reason
		}
		return herr
	}
	if errors.Is(err, wire.ErrMalformed) {
		// A series decoded on a guess (LabelGuesser, remote write 1.0
		// only) is not what it seemed: the answer decode gives.
		return errorf(http.StatusBadRequest, "cannot decode %s: %s", messageV1, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errorf(http.StatusServiceUnavailable, "request abandoned before the downstream answered: %s", err)
	}
	h.logger.Error("unexpected pipeline error", "err", err)
	return errorf(http.StatusInternalServerError, "internal error: %s", err)
}

// message is the protobuf message a request announces.
type message uint8

const (
	messageV1 message = iota // prometheus.WriteRequest
	messageV2                // io.prometheus.write.v2.Request
)

func (m message) String() string {
	if m == messageV2 {
		return "remote write 2.0 (" + protoV2 + ")"
	}
	return "remote write 1.0 (" + protoV1 + ")"
}

// checkHeaders checks the encoding and returns the message the Content-Type
// announces. The media type is parsed as RFC 9110 says: type and parameter
// names in any case, spaces around parameters, quoted values; the proto
// value is compared without regard to case too.
func checkHeaders(hdr http.Header) (message, *httpError) {
	if enc := hdr.Get("Content-Encoding"); !strings.EqualFold(enc, "snappy") {
		return 0, errorf(http.StatusUnsupportedMediaType, "unsupported Content-Encoding %q: remote write requires snappy", enc)
	}
	ct := hdr.Get("Content-Type")
	// Fast path: what Prometheus and vmagent send, without the allocations
	// of mime.ParseMediaType.
	switch ct {
	case contentTypeProtobuf, contentTypeProtobuf + ";proto=" + protoV1:
		return messageV1, nil
	case contentTypeProtobuf + ";proto=" + protoV2:
		return messageV2, nil
	}
	// Slow path.
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return 0, errorf(http.StatusUnsupportedMediaType, "cannot parse Content-Type %q: %s", ct, err)
	}
	if mt != contentTypeProtobuf {
		return 0, errorf(http.StatusUnsupportedMediaType, "unsupported Content-Type %q: want %s", mt, contentTypeProtobuf)
	}
	switch proto := params["proto"]; {
	case proto == "", strings.EqualFold(proto, protoV1):
		return messageV1, nil
	case strings.EqualFold(proto, protoV2):
		return messageV2, nil
	default:
		return 0, errorf(http.StatusUnsupportedMediaType, "unknown remote-write message proto=%q: Cardinal speaks %s and %s", proto, protoV1, protoV2)
	}
}

// The response headers of remote write 2.0, sent for 1.0 as well.
const (
	headerSamplesWritten    = "X-Prometheus-Remote-Write-Samples-Written"
	headerHistogramsWritten = "X-Prometheus-Remote-Write-Histograms-Written"
	headerExemplarsWritten  = "X-Prometheus-Remote-Write-Exemplars-Written"
)

// setWritten sets the Written headers. The header map is the
// ResponseWriter's own: setting keys in it directly (they are canonical)
// allocates only the values.
func setWritten(h http.Header, n [3]int) {
	v := make([]string, 3)
	for i := range v {
		v[i] = strconv.Itoa(max(n[i], 0))
	}
	h[headerSamplesWritten] = v[0:1:1]
	h[headerHistogramsWritten] = v[1:2:2]
	h[headerExemplarsWritten] = v[2:3:3]
}

// decode decodes raw as msg into req. A body that decodes to nothing under
// the announced message but to series under the other one was mislabelled:
// acknowledging it as empty would lose it, so it gets a 400 that says so
// (decoding it anyway would hide a sender's misconfiguration that its next
// receiver may not forgive).
func decode(req *wire.Request, msg message, raw []byte) *httpError {
	var err error
	if msg == messageV2 {
		err = req.UnmarshalV2(raw)
	} else {
		err = req.Unmarshal(raw)
	}
	if err != nil {
		return errorf(http.StatusBadRequest, "cannot decode %s: %s", msg, err)
	}
	if len(req.Series) > 0 || len(req.Metadata) > 0 || len(raw) == 0 {
		req.FoldExemplars()
		return nil
	}
	// Slow path: an empty request from a non-empty body.
	other := messageV1
	if msg == messageV1 {
		other = messageV2
		err = req.UnmarshalV2(raw)
	} else {
		err = req.Unmarshal(raw)
	}
	found := err == nil && (len(req.Series) > 0 || len(req.Metadata) > 0)
	req.Reset()
	if found {
		return errorf(http.StatusBadRequest, "the body is a %s, but Content-Type announces %s: fix the sender's protobuf_message or Content-Type", other, msg)
	}
	return nil
}

var errTooLarge = errors.New("body too large")

// bodyDeadline moves the connection's read deadline as a body arrives: at
// most stall from now, and never past end. w may be nil, or a writer
// without a connection (tests); then there is no deadline.
type bodyDeadline struct {
	w     http.ResponseWriter
	stall time.Duration
	end   time.Time
}

// extend sets the read deadline for the next read.
func (d *bodyDeadline) extend() {
	if d.w == nil {
		return
	}
	next := time.Now().Add(d.stall)
	if next.After(d.end) {
		next = d.end
	}
	if http.NewResponseController(d.w).SetReadDeadline(next) != nil {
		d.w = nil // not supported: stop trying
	}
}

// clear removes the deadline once the body is read, so that the answer and
// the next request on the connection are not cut by it.
func (d *bodyDeadline) clear() {
	if d.w != nil {
		_ = http.NewResponseController(d.w).SetReadDeadline(time.Time{})
	}
}

// minBodyChunk is the least a body buffer grows by.
const minBodyChunk = 32 << 10

// readBody appends all of r to dst, failing with errTooLarge past max bytes.
// Unlike io.ReadAll it reuses dst's capacity, grows only with the bytes that
// arrive and never beyond max+1.
func readBody(dst []byte, r io.Reader, limit int, dl bodyDeadline) ([]byte, error) {
	defer dl.clear()
	for {
		if len(dst) == cap(dst) {
			// Double, but only as far as the data has come.
			grown := make([]byte, len(dst), min(limit+1, len(dst)+max(len(dst), minBodyChunk)))
			copy(grown, dst)
			dst = grown
		}
		dl.extend()
		n, err := r.Read(dst[len(dst):min(cap(dst), limit+1)])
		dst = dst[:len(dst)+n]
		if len(dst) > limit {
			return dst, errTooLarge
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

func (h *Handler) putWorkspace(ws *workspace) {
	ws.req.Reset()
	if cap(ws.body) > maxPooledBuffer || cap(ws.raw) > maxPooledBuffer {
		return
	}
	h.pool.Put(ws)
}
