// Package tracesample recognises trace contexts that leaked into metric
// label values and makes consistent probability sampling decisions on their
// trace ids, so that Cardinal can drop a high-cardinality trace label yet keep
// the trace id as an exemplar on a consistent fraction of series.
//
// The package promises: Parse, Sampler.Sample, AppendTraceID and AppendSpanID
// never panic and allocate nothing (Append* only when dst must grow); Parse
// returns ids copied out of its input, so the input buffer may be reused
// straight away. Nothing here keeps state between calls, so everything is
// safe for concurrent use.
//
// # Formats recognised by Parse
//
// Parse looks at the shape of the value only; it does not know which label
// the value came from. Upper-case hex digits are accepted everywhere (the
// specifications say lower-case, but header-to-label mappings and some
// clients upper-case them), and an all-zero trace id is always invalid.
//
//   - Plain hex trace id, as in the B3 multi-header X-B3-TraceId: 32 hex
//     characters (128 bits) or 16 (64 bits, left-padded with zeros to 128).
//     Source: https://github.com/openzipkin/b3-propagation#traceid-1
//
//   - W3C traceparent, version 00:
//     "00-<32 hex trace-id>-<16 hex parent-id>-<2 hex trace-flags>",
//     exactly 55 characters; a trace-id or parent-id of all zeros is invalid.
//     Version "ff" is invalid. A higher version is parsed as version 00 would
//     be, provided it is at least 55 characters long and anything after the
//     flags starts with '-' (the rule the specification sets for versions not
//     yet written). Source: W3C Trace Context, §3.2 "traceparent Header",
//     https://www.w3.org/TR/trace-context/#traceparent-header and
//     https://www.w3.org/TR/trace-context/#versioning-of-traceparent
//
//   - B3 single header "b3":
//     "<trace-id>-<span-id>[-<sampling-state>[-<parent-span-id>]]" with a 16
//     or 32 hex trace id, a 16 hex span id, a sampling state of "0", "1" or
//     "d" and a 16 hex parent span id. The sampling-only forms "0", "1" and
//     "d" carry no trace id and are reported as not ok.
//     Source: https://github.com/openzipkin/b3-propagation#single-header
//
//   - Jaeger "uber-trace-id":
//     "<trace-id>:<span-id>:<parent-span-id>:<flags>" where the trace id is 1
//     to 32 hex characters and the span and parent span ids 1 to 16 (Jaeger
//     clients drop leading zeros; Parse left-pads them), and the flags one
//     byte as 1 or 2 hex characters. The parent span id may be 0 ("root
//     span"). Because HTTP clients often send the value URL-encoded, "%3A" or
//     "%3a" may replace every ':' (all four fields must use the same
//     separator). Source: Jaeger documentation, "Propagation Format",
//     https://www.jaegertracing.io/docs/1.21/client-libraries/#propagation-format
//
// Wherever a span id is present, an all-zero span id makes the value invalid
// (W3C says so for traceparent; Parse applies the same rule to B3 and Jaeger,
// whose clients never generate span id 0).
//
// # Sampling
//
// Sampler implements OpenTelemetry consistent probability sampling, as
// specified in "TraceState: Probability Sampling"
// (https://opentelemetry.io/docs/specs/otel/trace/tracestate-probability-sampling/,
// sections "Definitions" and "Algorithms"):
//
//   - The randomness R is the 56 least-significant bits of the trace id, that
//     is bytes 9..15 read big-endian (the W3C Trace Context Level 2 random
//     part of the trace id).
//   - The rejection threshold T is a 56-bit integer; an item is kept iff
//     R >= T. T = 0 keeps everything, T = 2^56 keeps nothing.
//   - T is computed from the ratio p as T = 2^56 - round(p * 2^56), with
//     round-half-away-from-zero (Go's math.Round). The specification points
//     to the OpenTelemetry Collector-Contrib pkg/sampling package for the
//     exact integer conversion "using math.Round()", and that package
//     (ProbabilityToThreshold) computes exactly this. Because p * 2^56 is
//     exact in float64, this equals round((1 - p) * 2^56) computed in exact
//     arithmetic, except that an exact tie (.5) rounds T down, i.e. towards
//     keeping. Computing 1 - p in float64 first would lose up to ~3 bits for
//     small p, so we do not. Ratios below 2^-57 round to T = 2^56 (keep
//     nothing) instead of being an error as they are in Collector-Contrib.
//
// Every ratio yields the same decision for the same trace id in every
// process, and an id kept at ratio p is kept at every ratio q > p, so traces
// sampled by OpenTelemetry SDKs using the same rule line up with ours.
package tracesample
