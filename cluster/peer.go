package cluster

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Headers of a request one replica forwards to another.
const (
	// FromHeader names the forwarding replica. A request carrying it is
	// processed where it arrives and never forwarded again.
	FromHeader = "X-Cardinal-Forwarded-By"
	// ViewHeader identifies how the request was routed: the view's ID
	// combined with the labels of the ownership key.
	ViewHeader = "X-Cardinal-Cluster-View"
)

// Origin describes a request forwarded by a peer.
type Origin struct {
	From string
	View uint64
}

type originKey struct{}

// WithOrigin marks ctx as serving a request forwarded by a peer.
func WithOrigin(ctx context.Context, o Origin) context.Context {
	return context.WithValue(ctx, originKey{}, o)
}

// OriginOf returns the peer that forwarded the request ctx serves.
func OriginOf(ctx context.Context) (Origin, bool) {
	o, ok := ctx.Value(originKey{}).(Origin)
	return o, ok
}

// OriginFromHeaders reads the forwarding headers of a request.
func OriginFromHeaders(h http.Header) (Origin, bool) {
	from := h.Get(FromHeader)
	if from == "" {
		return Origin{}, false
	}
	id, _ := ParseID(h.Get(ViewHeader))
	return Origin{From: from, View: id}, true
}

// Outcome is a peer's answer to a forwarded request.
type Outcome struct {
	// Status is the peer's HTTP status, 0 when it could not be reached.
	Status     int
	RetryAfter time.Duration
	// Msg is the peer's message for a status other than 2xx, or the
	// transport error.
	Msg string
	// Written is what the peer reports written (samples, histograms,
	// exemplars), when HasWritten.
	Written    [3]int
	HasWritten bool
}

// OK reports a 2xx answer.
func (o *Outcome) OK() bool { return o.Status >= 200 && o.Status < 300 }

// Forwarder sends series to the replicas that own them.
type Forwarder struct {
	cluster *Cluster
	client  *http.Client

	forwarded *prometheus.CounterVec
	errors    *prometheus.CounterVec
	duration  prometheus.Histogram
}

// NewForwarder returns the forwarder of c's replica.
func NewForwarder(c *Cluster, reg prometheus.Registerer) *Forwarder {
	f := promauto.With(reg)
	return &Forwarder{
		cluster: c,
		client: &http.Client{Transport: &http.Transport{
			// A few connections per peer stay open: the hop is on every
			// request whose series another replica owns.
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		}},
		forwarded: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardinal_cluster_forwarded_samples_total",
			Help: "Samples handed to the replica that owns their workload, by peer and result: ok (the owner acknowledged them) or error.",
		}, []string{"peer", "result"}),
		errors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardinal_cluster_peer_errors_total",
			Help: "Forwards to a peer that did not succeed, by peer and reason: unreachable (transport error), down (failing its probes, not tried), view (the peer's view of the members differs), handover (the workload just moved there), rejected (4xx), unavailable (other 5xx).",
		}, []string{"peer", "reason"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:                        "cardinal_cluster_forward_duration_seconds",
			Help:                        "Time of a forward to the owning replica, its delivery downstream included.",
			Buckets:                     []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
			NativeHistogramBucketFactor: 1.1,
		}),
	}
}

// Error reasons of cardinal_cluster_peer_errors_total.
const (
	ErrUnreachable = "unreachable"
	ErrDown        = "down"
	ErrView        = "view"
	ErrHandover    = "handover"
	ErrRejected    = "rejected"
	ErrUnavailable = "unavailable"
)

// ReasonHeader, on a peer's 503, says why (one of the reasons above), so
// that the forwarding replica counts it right.
const ReasonHeader = "X-Cardinal-Cluster-Reason"

// Send forwards body, a snappy-compressed remote-write 1.0 request of
// samples samples, to member, routed as view says (ViewHeader), and
// returns its answer.
func (f *Forwarder) Send(ctx context.Context, member string, view uint64, body []byte, samples int) Outcome {
	start := time.Now()
	out := f.send(ctx, member, view, body)
	f.duration.Observe(time.Since(start).Seconds())
	if out.OK() {
		f.forwarded.WithLabelValues(member, "ok").Add(float64(samples))
		return out
	}
	f.forwarded.WithLabelValues(member, "error").Add(float64(samples))
	return out
}

func (f *Forwarder) send(ctx context.Context, member string, view uint64, body []byte) Outcome {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+member+"/api/v1/write", bytes.NewReader(body))
	if err != nil {
		return Outcome{Msg: err.Error()}
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	req.Header.Set("User-Agent", "cardinal-peer")
	req.Header.Set(FromHeader, f.cluster.Self())
	req.Header.Set(ViewHeader, formatID(view))
	resp, err := f.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			f.cluster.NoteFailure(member)
		}
		f.errors.WithLabelValues(member, ErrUnreachable).Inc()
		return Outcome{Msg: err.Error()}
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	out := Outcome{Status: resp.StatusCode, Msg: string(bytes.TrimSpace(msg))}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		out.RetryAfter = time.Duration(s) * time.Second
	}
	for i, h := range [...]string{"X-Prometheus-Remote-Write-Samples-Written", "X-Prometheus-Remote-Write-Histograms-Written", "X-Prometheus-Remote-Write-Exemplars-Written"} {
		if v, err := strconv.Atoi(resp.Header.Get(h)); err == nil {
			out.Written[i], out.HasWritten = v, true
		}
	}
	switch {
	case out.OK():
	case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests:
		f.errors.WithLabelValues(member, ErrRejected).Inc()
	default:
		reason := resp.Header.Get(ReasonHeader)
		if reason != ErrView && reason != ErrHandover {
			reason = ErrUnavailable
		}
		f.errors.WithLabelValues(member, reason).Inc()
	}
	return out
}

// NoteDown counts a forward not tried because member is down.
func (f *Forwarder) NoteDown(member string, samples int) {
	f.errors.WithLabelValues(member, ErrDown).Inc()
	f.forwarded.WithLabelValues(member, "error").Add(float64(samples))
}
