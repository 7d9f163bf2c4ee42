package forward

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the forwarder's own metrics. They are registered once per
// Registerer: a second Client on the same Registerer (after a config reload)
// shares the first one's collectors instead of failing.
type metrics struct {
	duration        prometheus.Histogram
	attemptDuration prometheus.Histogram
	retries         prometheus.Counter
	requests        *prometheus.CounterVec
	transportErrors prometheus.Counter // requests{code="error"}, resolved once
	fallbacks       prometheus.Counter
	version         prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:                           "cardinal_forward_duration_seconds",
			Help:                           "Time to forward one request downstream, including retries and backoff.",
			Buckets:                        prometheus.DefBuckets,
			NativeHistogramBucketFactor:    1.1,
			NativeHistogramMaxBucketNumber: 100,
		}),
		attemptDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:                           "cardinal_forward_attempt_duration_seconds",
			Help:                           "Time of one HTTP attempt to the downstream, until its response body was drained.",
			Buckets:                        prometheus.DefBuckets,
			NativeHistogramBucketFactor:    1.1,
			NativeHistogramMaxBucketNumber: 100,
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cardinal_forward_retries_total",
			Help: "Attempts to the downstream that repeated an earlier failed attempt.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cardinal_forward_requests_total",
			Help: `HTTP attempts to the downstream by response status code; "error" when no response arrived (timeout, connection error, cancellation).`,
		}, []string{"code"}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cardinal_forward_remote_write_version",
			Help: "The remote-write version Cardinal sends the downstream now: 1 or 2 (see downstream.protobuf_message).",
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cardinal_forward_protocol_fallbacks_total",
			Help: "Times downstream.protobuf_message auto fell back from remote write 2.0 to 1.0 because the downstream does not speak 2.0 (415, or 2xx without Written headers).",
		}),
	}
	if reg != nil {
		var err error
		if m.duration, err = register(reg, m.duration); err != nil {
			return nil, err
		}
		if m.attemptDuration, err = register(reg, m.attemptDuration); err != nil {
			return nil, err
		}
		if m.retries, err = register(reg, m.retries); err != nil {
			return nil, err
		}
		if m.requests, err = register(reg, m.requests); err != nil {
			return nil, err
		}
		if m.fallbacks, err = register(reg, m.fallbacks); err != nil {
			return nil, err
		}
		if m.version, err = register(reg, m.version); err != nil {
			return nil, err
		}
	}
	m.transportErrors = m.requests.WithLabelValues("error")
	return m, nil
}

// register registers c, or returns the collector already registered under
// the same descriptor.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

// DeliverMetrics count what Deliver had to split and what the downstream
// refused on its own. Like a Client's metrics they are registered once per
// Registerer: a second NewDeliverMetrics on the same Registerer shares the
// first one's collectors.
type DeliverMetrics struct {
	splits           prometheus.Counter
	v2Exemplars      prometheus.Counter
	refusedExemplars prometheus.Counter
	verbatim         prometheus.Counter
	cut              prometheus.Counter
	rejectedSeries   [numReasons]prometheus.Counter // by reasonIndex, resolved once
	rejectedSamples  [numReasons]prometheus.Counter
}

// numReasons is the number of Reason* constants.
const numReasons = 5

// reasonIndex maps a Reason to its place in DeliverMetrics; an empty or
// unknown reason (from a BodySender other than *Client) counts as invalid.
func reasonIndex(reason string) int {
	switch reason {
	case ReasonOutOfOrder:
		return 0
	case ReasonDuplicate:
		return 1
	case ReasonOutOfBounds:
		return 2
	case ReasonTooLarge:
		return 3
	}
	return 4
}

// NewDeliverMetrics builds the cardinal_forward_split_* and
// cardinal_forward_rejected_* metrics and registers them with reg; nil
// registers nothing.
func NewDeliverMetrics(reg prometheus.Registerer) (*DeliverMetrics, error) {
	splits := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cardinal_forward_split_requests_total",
		Help: "Requests the downstream rejected as a whole that were split to isolate the series it refuses.",
	})
	series := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cardinal_forward_rejected_series_total",
		Help: "Series the downstream refused on their own, by reason; they were isolated and not sent again.",
	}, []string{"reason"})
	samples := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cardinal_forward_rejected_samples_total",
		Help: "Samples of the series the downstream refused on their own, by reason.",
	}, []string{"reason"})
	v2Exemplars := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cardinal_forward_unsendable_exemplars_total",
		Help: "Exemplars of series without samples or histograms, which remote write 2.0 cannot carry, left out of 2.0 bodies (1.0 carries them).",
	})
	refusedEx := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cardinal_forward_refused_exemplars_total",
		Help: "Exemplars the downstream refused (e.g. out of order) while it took their series' samples, which were sent again without them.",
	})
	verbatim := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cardinal_forward_verbatim_requests_total",
		Help: "Requests forwarded in the body they came in, without encoding or compressing them again, because no rule, cap, merge or validation changed anything in them.",
	})
	cut := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cardinal_forward_cut_requests_total",
		Help: "Requests forwarded as the body they came in with the series that rules, caps or merging removed cut out, without encoding or compressing the rest again, because nothing changed in the series they kept.",
	})
	if reg != nil {
		var err error
		if verbatim, err = register(reg, verbatim); err != nil {
			return nil, err
		}
		if cut, err = register(reg, cut); err != nil {
			return nil, err
		}
		if splits, err = register(reg, splits); err != nil {
			return nil, err
		}
		if refusedEx, err = register(reg, refusedEx); err != nil {
			return nil, err
		}
		if v2Exemplars, err = register(reg, v2Exemplars); err != nil {
			return nil, err
		}
		if series, err = register(reg, series); err != nil {
			return nil, err
		}
		if samples, err = register(reg, samples); err != nil {
			return nil, err
		}
	}
	m := &DeliverMetrics{splits: splits, v2Exemplars: v2Exemplars, refusedExemplars: refusedEx, verbatim: verbatim, cut: cut}
	for _, r := range [...]string{ReasonOutOfOrder, ReasonDuplicate, ReasonOutOfBounds, ReasonTooLarge, ReasonInvalid} {
		i := reasonIndex(r)
		m.rejectedSeries[i] = series.WithLabelValues(r)
		m.rejectedSamples[i] = samples.WithLabelValues(r)
	}
	return m, nil
}

func (m *DeliverMetrics) countUnsendable(n int) {
	if m != nil && n > 0 {
		m.v2Exemplars.Add(float64(n))
	}
}

func (m *DeliverMetrics) countRefusedExemplars(n int) {
	if m != nil && n > 0 {
		m.refusedExemplars.Add(float64(n))
	}
}

func (m *DeliverMetrics) countVerbatim(cut bool) {
	switch {
	case m == nil:
	case cut:
		m.cut.Inc()
	default:
		m.verbatim.Inc()
	}
}

func (m *DeliverMetrics) countSplit() {
	if m != nil {
		m.splits.Inc()
	}
}

func (m *DeliverMetrics) countRejected(reason string, samples int) {
	if m != nil {
		i := reasonIndex(reason)
		m.rejectedSeries[i].Inc()
		m.rejectedSamples[i].Add(float64(samples))
	}
}
