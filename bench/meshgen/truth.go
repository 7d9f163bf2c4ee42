package meshgen

import (
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
)

// generatedLabelNames lists every label name the generator emits besides the
// injected ones. Validate refuses injected names from this list.
var generatedLabelNames = []string{
	"__name__", "le",
	// Added by the scrape (Kubernetes service discovery and relabelling).
	"job", "instance", "namespace", "app", "version", "pod", "deployment",
	// Istio standard metrics.
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
	"source_cluster", "source_canonical_service", "source_canonical_revision",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
	"destination_cluster", "destination_canonical_service", "destination_canonical_revision",
	"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
	// Envoy.
	"cluster_name",
	// Linkerd proxy.
	"direction", "authority", "target_addr", "tls", "server_id", "client_id", "peer",
	"dst_deployment", "dst_namespace", "dst_service", "dst_serviceaccount",
	"status_code", "classification", "grpc_status",
}

// DefaultAllowlist is the regular expression alternation of the label names
// that are safe to keep on service-mesh metrics: __name__, le and quantile,
// job, the workload-level Kubernetes labels and the standard Istio, Envoy and
// Linkerd labels. It is meant for a labelkeep rule (see ExampleRelabelYAML).
//
// It deliberately leaves out the per-pod labels pod, instance (the pod's
// ip:port) and Linkerd's target_addr (the pod's ip:port on inbound traffic),
// so that the series of a workload's pods collapse into one; keep them by
// adding "pod|instance|target_addr" if per-pod resolution matters more than
// cardinality. The injected high-cardinality labels (DefaultInjectedLabels)
// are of course not in it.
const DefaultAllowlist = "__name__|le|quantile|job|namespace|app|version|deployment" +
	"|reporter|source_workload|source_workload_namespace|source_principal|source_app|source_version" +
	"|source_cluster|source_canonical_service|source_canonical_revision" +
	"|destination_workload|destination_workload_namespace|destination_principal|destination_app" +
	"|destination_version|destination_service|destination_service_name|destination_service_namespace" +
	"|destination_cluster|destination_canonical_service|destination_canonical_revision" +
	"|request_protocol|response_code|grpc_response_status|response_flags|connection_security_policy" +
	"|cluster_name" +
	"|direction|authority|tls|server_id|client_id|peer" +
	"|dst_deployment|dst_namespace|dst_service|dst_serviceaccount" +
	"|status_code|classification|grpc_status"

// DroppedByDefault returns the label names the generator can emit that
// DefaultAllowlist drops, given the injected names: pod, instance,
// target_addr and the injected names. Pass it to SumBy to get what a proxy
// applying DefaultAllowlist should deliver.
func DroppedByDefault(injected []string) []string {
	return append([]string{"instance", "pod", "target_addr"}, injected...)
}

// ExampleRelabelYAML returns a relabel_configs snippet that keeps only the
// DefaultAllowlist labels. It can be pasted under write_relabel_configs or
// metric_relabel_configs in Prometheus, or into Cardinal's rules.
func ExampleRelabelYAML() string {
	var sb strings.Builder
	sb.WriteString("# Keep only the standard service-mesh labels; drop pod, instance,\n")
	sb.WriteString("# target_addr and any label injected from request headers.\n")
	sb.WriteString("- action: labelkeep\n")
	sb.WriteString("  regex: ")
	sb.WriteString(DefaultAllowlist)
	sb.WriteString("\n")
	return sb.String()
}

// SumBy removes dropLabels from every series and sums the values of the
// series that become identical: the result a proxy that drops those labels
// and merges colliding series must deliver. The key is the canonical label
// string of the remaining labels, as labels.Labels.String formats it, e.g.
// {__name__="up", job="mesh"}. Each series contributes its latest sample;
// series without samples are skipped. Input labels need not be sorted.
func SumBy(series []prompb.TimeSeries, dropLabels []string) map[string]float64 {
	drop := make(map[string]bool, len(dropLabels))
	for _, n := range dropLabels {
		drop[n] = true
	}
	out := map[string]float64{}
	var b labels.ScratchBuilder
	for _, s := range series {
		if len(s.Samples) == 0 {
			continue
		}
		last := s.Samples[0]
		for _, smp := range s.Samples[1:] {
			if smp.Timestamp >= last.Timestamp {
				last = smp
			}
		}
		b.Reset()
		for _, l := range s.Labels {
			if !drop[l.Name] {
				b.Add(l.Name, l.Value)
			}
		}
		b.Sort()
		out[b.Labels().String()] += last.Value
	}
	return out
}
