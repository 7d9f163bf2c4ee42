package meshgen

import (
	"math"
	"strconv"

	"github.com/prometheus/prometheus/model/labels"
)

// famType is the Prometheus metric type of a family.
type famType uint8

const (
	typeCounter famType = iota
	typeGauge
	typeHistogram
)

func (t famType) String() string {
	switch t {
	case typeCounter:
		return "counter"
	case typeGauge:
		return "gauge"
	default:
		return "histogram"
	}
}

// family is one metric family. A histogram family's name has no suffix; it
// emits <name>_bucket per bound, then <name>_sum and <name>_count.
type family struct {
	name    string
	typ     famType
	help    string
	buckets []float64 // histogram upper bounds, without +Inf
	le      []string  // formatted bounds including "+Inf"
	order   int       // position in the output
	bucketN string    // name + "_bucket"
	sumN    string
	countN  string
}

// Bucket layouts of the real proxies.
var (
	// Istio's stats filter and Envoy's default histogram buckets (milliseconds).
	envoyMsBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
	// Istio's request/response size buckets (bytes).
	istioByteBuckets = []float64{1, 10, 100, 1000, 10000, 100000, 1e6, 1e7, 1e8, 1e9}
	// Linkerd proxy latency buckets (milliseconds).
	linkerdMsBuckets = []float64{1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000}
)

func newFamily(name string, typ famType, help string, buckets []float64) *family {
	f := &family{name: name, typ: typ, help: help, buckets: buckets}
	if typ == typeHistogram {
		for _, b := range buckets {
			// Prometheus 3 normalises le values of scraped classic histograms
			// to this form ("1" → "1.0"), so Series matches what it forwards.
			f.le = append(f.le, labels.FormatOpenMetricsFloat(b))
		}
		f.le = append(f.le, "+Inf")
		f.bucketN, f.sumN, f.countN = name+"_bucket", name+"_sum", name+"_count"
	}
	return f
}

// families is the catalogue in output order.
type families struct {
	all []*family

	istioRequests, istioDuration, istioReqBytes, istioRespBytes            *family
	istioReqMessages, istioRespMessages                                    *family
	istioTCPSent, istioTCPReceived, istioTCPOpened, istioTCPClosed         *family
	envoyRqTotal, envoyCxActive, envoyCxTotal, envoyRqTime                 *family
	envoyMemAllocated, envoyLive, envoyUptime, envoyActiveClusters         *family
	l5dRequests, l5dResponses, l5dLatency                                  *family
	l5dTCPOpenTotal, l5dTCPOpenConns, l5dTCPRead, l5dTCPWrite, l5dTCPClose *family
}

func newFamilies() *families {
	fs := &families{}
	add := func(name string, typ famType, help string, buckets []float64) *family {
		f := newFamily(name, typ, help, buckets)
		f.order = len(fs.all)
		fs.all = append(fs.all, f)
		return f
	}
	fs.istioRequests = add("istio_requests_total", typeCounter, "Total requests handled by an Istio proxy.", nil)
	fs.istioDuration = add("istio_request_duration_milliseconds", typeHistogram, "Request duration in milliseconds.", envoyMsBuckets)
	fs.istioReqBytes = add("istio_request_bytes", typeHistogram, "HTTP request body sizes.", istioByteBuckets)
	fs.istioRespBytes = add("istio_response_bytes", typeHistogram, "HTTP response body sizes.", istioByteBuckets)
	fs.istioReqMessages = add("istio_request_messages_total", typeCounter, "gRPC messages sent by clients.", nil)
	fs.istioRespMessages = add("istio_response_messages_total", typeCounter, "gRPC messages sent by servers.", nil)
	fs.istioTCPSent = add("istio_tcp_sent_bytes_total", typeCounter, "Bytes sent during response on TCP connections.", nil)
	fs.istioTCPReceived = add("istio_tcp_received_bytes_total", typeCounter, "Bytes received during request on TCP connections.", nil)
	fs.istioTCPOpened = add("istio_tcp_connections_opened_total", typeCounter, "TCP connections opened.", nil)
	fs.istioTCPClosed = add("istio_tcp_connections_closed_total", typeCounter, "TCP connections closed.", nil)
	fs.envoyRqTotal = add("envoy_cluster_upstream_rq_total", typeCounter, "Total upstream requests.", nil)
	fs.envoyCxActive = add("envoy_cluster_upstream_cx_active", typeGauge, "Active upstream connections.", nil)
	fs.envoyCxTotal = add("envoy_cluster_upstream_cx_total", typeCounter, "Total upstream connections.", nil)
	fs.envoyRqTime = add("envoy_cluster_upstream_rq_time", typeHistogram, "Upstream request time in milliseconds.", envoyMsBuckets)
	fs.envoyMemAllocated = add("envoy_server_memory_allocated", typeGauge, "Bytes allocated by the Envoy heap.", nil)
	fs.envoyLive = add("envoy_server_live", typeGauge, "1 if the server is not draining.", nil)
	fs.envoyUptime = add("envoy_server_uptime", typeGauge, "Seconds since the server started.", nil)
	fs.envoyActiveClusters = add("envoy_cluster_manager_active_clusters", typeGauge, "Number of active clusters.", nil)
	fs.l5dRequests = add("request_total", typeCounter, "Total count of HTTP requests.", nil)
	fs.l5dResponses = add("response_total", typeCounter, "Total count of HTTP responses.", nil)
	fs.l5dLatency = add("response_latency_ms", typeHistogram, "Elapsed times between a request's headers being received and its response stream completing.", linkerdMsBuckets)
	fs.l5dTCPOpenTotal = add("tcp_open_total", typeCounter, "Total count of opened connections.", nil)
	fs.l5dTCPOpenConns = add("tcp_open_connections", typeGauge, "Number of currently-open connections.", nil)
	fs.l5dTCPRead = add("tcp_read_bytes_total", typeCounter, "Total count of bytes read from peers.", nil)
	fs.l5dTCPWrite = add("tcp_write_bytes_total", typeCounter, "Total count of bytes written to peers.", nil)
	fs.l5dTCPClose = add("tcp_close_total", typeCounter, "Total count of closed connections.", nil)
	return fs
}

// respCode is one response class an edge reports.
type respCode struct {
	http, grpc string // grpc is "" for plain HTTP
	flags      string
	share      float64 // share of the edge's requests
	failure    bool
}

// edgeCodes draws the response codes an edge reports. Every edge reports its
// success code; some also report 404 or 503 (gRPC: NOT_FOUND, UNAVAILABLE).
// The shares make 5xx about 2% of all requests.
func edgeCodes(p proto, h uint64) []respCode {
	var ok, notFound, unavailable respCode
	if p == protoGRPC {
		ok = respCode{http: "200", grpc: "0", flags: "-"}
		notFound = respCode{http: "200", grpc: "5", flags: "-", failure: true}
		unavailable = respCode{http: "503", grpc: "14", flags: "UF,URX", failure: true}
	} else {
		ok = respCode{http: "200", flags: "-"}
		notFound = respCode{http: "404", flags: "-", failure: false}
		unavailable = respCode{http: "503", flags: "UF,URX", failure: true}
		if h>>40&1 == 0 {
			unavailable.flags = "-" // the app itself answered 503
		}
	}
	codes := []respCode{ok}
	if unit01(mix(h, 1, 404)) < 0.2 {
		notFound.share = 0.03
		codes = append(codes, notFound)
	}
	if unit01(mix(h, 1, 503)) < 0.15 {
		unavailable.share = 0.13
		codes = append(codes, unavailable)
	}
	codes[0].share = 1
	for _, c := range codes[1:] {
		codes[0].share -= c.share
	}
	return codes
}

// latencyCDF returns the cumulative share of observations at or below each
// bound (and 1 for +Inf) of a log-normal distribution.
func latencyCDF(bounds []float64, median, sigma float64) []float64 {
	cdf := make([]float64, len(bounds)+1)
	for i, b := range bounds {
		cdf[i] = normCDF((math.Log(b) - math.Log(median)) / sigma)
	}
	cdf[len(bounds)] = 1
	return cdf
}

// lognormalMean is the mean of a log-normal distribution with the given median.
func lognormalMean(median, sigma float64) float64 {
	return median * math.Exp(sigma*sigma/2)
}

func serviceIP(name string) string {
	var h uint64 = 14695981039346656037
	for i := 0; i < len(name); i++ {
		h = (h ^ uint64(name[i])) * 1099511628211
	}
	h = splitmix(h)
	return "10.96." + strconv.Itoa(int(h>>8&0xff)) + "." + strconv.Itoa(int(h&0xfe)+1)
}
