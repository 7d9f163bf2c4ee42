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
