package meshgen

import (
	"math"
	"strconv"
)

// ValueFunc appends the value of one injected label to dst and returns the
// extended buffer. key is a well-mixed 64-bit number that is fixed for one
// label of one series variant (and, with Config.Churn, one step); the same key
// must always produce the same value, so the generator stays deterministic.
// A ValueFunc must not return an empty value. Distinct keys should give
// distinct values; where they do not (a small pool such as UserAgentValue),
// the generator redraws, and as a last resort appends "#<variant>" so that
// the variants of a series never collide.
type ValueFunc func(dst []byte, key uint64) []byte

// DefaultValueFuncs returns the value generators used for the default injected
// label names: request_id, trace_id (32 hex digits), user_agent, path, plus
// traceparent and span_id for configurations that inject those. Names without
// a generator get HexValue. The map is a fresh copy the caller may modify.
func DefaultValueFuncs() map[string]ValueFunc {
	return map[string]ValueFunc{
		"request_id":   RequestIDValue,
		"x_request_id": RequestIDValue,
		"trace_id":     TraceIDValue,
		"traceparent":  TraceParentValue,
		"span_id":      SpanIDValue,
		"user_agent":   UserAgentValue,
		"path":         PathValue,
	}
}

const hexDigits = "0123456789abcdef"

func appendHex(dst []byte, h uint64, n int) []byte {
	x := h
	for i := 0; i < n; i++ {
		if i > 0 && i%16 == 0 {
			h = splitmix(h)
			x = h
		}
		dst = append(dst, hexDigits[x>>60])
		x <<= 4
	}
	return dst
}

// HexValue appends 16 hexadecimal digits.
func HexValue(dst []byte, key uint64) []byte {
	return appendHex(dst, splitmix(key), 16)
}

// RequestIDValue appends a random (version 4) UUID, the form Envoy puts in
// x-request-id, e.g. "3f2a9c4e-1b7d-4e8a-9c31-5d0f6a7b8e21".
func RequestIDValue(dst []byte, key uint64) []byte {
	a, b := splitmix(key), splitmix(key^0x9e3779b97f4a7c15)
	dst = appendHex(dst, a, 8)
	dst = append(dst, '-')
	dst = appendHex(dst, a<<32, 4)
	dst = append(dst, '-', '4')
	dst = appendHex(dst, a<<48, 3)
	dst = append(dst, '-', "89ab"[b>>62])
	dst = appendHex(dst, b<<2, 3)
	dst = append(dst, '-')
	return appendHex(dst, splitmix(b), 12)
}

// TraceIDValue appends a W3C/B3 128-bit trace id as 32 lowercase hex digits.
func TraceIDValue(dst []byte, key uint64) []byte {
	return appendHex(dst, splitmix(key), 32)
}

// SpanIDValue appends a 64-bit span id as 16 lowercase hex digits.
func SpanIDValue(dst []byte, key uint64) []byte {
	return appendHex(dst, splitmix(key^0x5a5a5a5a), 16)
}

// TraceParentValue appends a W3C traceparent header value:
// "00-<32 hex trace id>-<16 hex span id>-01".
func TraceParentValue(dst []byte, key uint64) []byte {
	dst = append(dst, "00-"...)
	dst = TraceIDValue(dst, key)
	dst = append(dst, '-')
	dst = SpanIDValue(dst, key)
	return append(dst, "-01"...)
}

var userAgents = []string{
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
	"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
	"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
	"curl/8.5.0",
	"curl/7.81.0",
	"Go-http-client/1.1",
	"Go-http-client/2.0",
	"grpc-go/1.63.2",
	"grpc-java-netty/1.62.2",
	"okhttp/4.12.0",
	"python-requests/2.31.0",
	"kube-probe/1.29",
	"Prometheus/2.51.2",
	"axios/1.6.8",
	"Apache-HttpClient/4.5.14 (Java/17.0.10)",
	"k6/0.50.0 (https://k6.io/)",
}

// UserAgentValue appends a real-world User-Agent string: browsers, curl,
// language HTTP clients and probes. The pool is small, so most of the
// cardinality of a user_agent label comes from its combination with the
// other injected labels.
func UserAgentValue(dst []byte, key uint64) []byte {
	return append(dst, userAgents[splitmix(key)%uint64(len(userAgents))]...)
}

var pathTemplates = []string{
	"/api/v1/orders/",
	"/api/v1/users/",
	"/api/v2/carts/",
	"/api/v1/products/",
	"/reviews/",
	"/ratings/",
	"/v1/payments/",
	"/v1/invoices/",
	"/graphql?op=",
	"/static/js/main.",
	"/hello.World/Greet?id=",
}

// PathValue appends a request path with an embedded identifier, e.g.
// "/api/v1/orders/8f3a61c0d2b94e57" or "/ratings/48213" — the typical reason
// a path label explodes.
func PathValue(dst []byte, key uint64) []byte {
	h := splitmix(key)
	dst = append(dst, pathTemplates[h%uint64(len(pathTemplates))]...)
	h = splitmix(h)
	if h&1 == 0 {
		return appendHex(dst, splitmix(h), 16)
	}
	return strconv.AppendUint(dst, h>>40%100000, 10)
}

// splitmix is the SplitMix64 finaliser: a cheap bijective mixer.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// mix hashes a seed and two coordinates into one key.
func mix(seed, a, b uint64) uint64 {
	return splitmix(splitmix(splitmix(seed)^a) ^ b)
}

// unit01 maps h to [0, 1).
func unit01(h uint64) float64 {
	return float64(h>>11) / (1 << 53)
}

// normCDF is the standard normal cumulative distribution function.
func normCDF(x float64) float64 {
	return 0.5 * math.Erfc(-x/math.Sqrt2)
}
