package promtest

// Metric families of the remote-write sender, as exposed on /metrics by
// Prometheus 2.42 (server and agent mode alike). All but the *_in_total
// families carry the labels remote_name and url; Prometheus.Metric sums over
// them.
//
// Measured on 2.42.0, the counters mean:
//
//   - MetricSamplesTotal counts samples in every send attempt, including
//     attempts that later fail or are retried. It is NOT "succeeded": against
//     an endpoint answering 500 it grows with every retry, against 400 it
//     equals MetricSamplesFailed. The old name
//     prometheus_remote_storage_succeeded_samples_total no longer exists.
//     Use RemoteWriteStats.Succeeded for the delivered count.
//   - MetricSamplesFailed counts samples rejected with a non-recoverable
//     error (4xx other than 429): they are given up.
//   - MetricSamplesRetried counts samples re-sent after a recoverable error
//     (5xx, connection refused). Such samples stay pending and are retried
//     forever with backoff.
//   - MetricSamplesDropped counts samples dropped before sending, by
//     write_relabel_configs or because their series was unknown.
//   - MetricSamplesPending is a gauge of samples queued but not yet sent.
//   - MetricSamplesIn counts samples read from the WAL into the queues
//     (no labels).
const (
	MetricSamplesTotal   = "prometheus_remote_storage_samples_total"
	MetricSamplesFailed  = "prometheus_remote_storage_samples_failed_total"
	MetricSamplesRetried = "prometheus_remote_storage_samples_retried_total"
	MetricSamplesDropped = "prometheus_remote_storage_samples_dropped_total"
	MetricSamplesPending = "prometheus_remote_storage_samples_pending"
	MetricSamplesIn      = "prometheus_remote_storage_samples_in_total"
)

// Exemplar counterparts of the sample metrics, with the same meaning. They
// move only when remote_write has send_exemplars: true.
const (
	MetricExemplarsTotal   = "prometheus_remote_storage_exemplars_total"
	MetricExemplarsFailed  = "prometheus_remote_storage_exemplars_failed_total"
	MetricExemplarsRetried = "prometheus_remote_storage_exemplars_retried_total"
	MetricExemplarsDropped = "prometheus_remote_storage_exemplars_dropped_total"
	MetricExemplarsPending = "prometheus_remote_storage_exemplars_pending"
	MetricExemplarsIn      = "prometheus_remote_storage_exemplars_in_total"
)

// Other sender metrics useful in assertions.
const (
	// MetricSentBytes counts compressed bytes sent in write requests.
	MetricSentBytes = "prometheus_remote_storage_bytes_total"
	// MetricHighestSentTimestamp is the newest timestamp (seconds) that was
	// successfully sent, per queue.
	MetricHighestSentTimestamp = "prometheus_remote_storage_queue_highest_sent_timestamp_seconds"
	// MetricAgentSamplesAppended counts samples appended to the agent WAL
	// (label type="float"); agent mode only.
	MetricAgentSamplesAppended = "prometheus_agent_samples_appended_total"
	// MetricAgentExemplarsAppended counts exemplars appended to the agent WAL.
	MetricAgentExemplarsAppended = "prometheus_agent_exemplars_appended_total"
)
