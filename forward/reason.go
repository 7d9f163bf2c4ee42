package forward

import "net/http"

// Reasons a downstream gives for refusing data, as Error.Reason. They are
// also the values of the reason label of cardinal_forward_rejected_series_total.
const (
	// ReasonOutOfOrder: a sample is older than the newest one the receiver
	// holds for its series, and out-of-order ingestion is off.
	ReasonOutOfOrder = "out_of_order"
	// ReasonDuplicate: a sample has the timestamp of a stored one with a
	// different value. (An identical sample is accepted.)
	ReasonDuplicate = "duplicate"
	// ReasonOutOfBounds: a sample lies outside the time range the receiver
	// accepts: before its head block, outside the out-of-order window, or
	// too far in the future.
	ReasonOutOfBounds = "out_of_bounds"
	// ReasonTooLarge: the body exceeds the receiver's size limit.
	ReasonTooLarge = "too_large"
	// ReasonInvalid: any other refusal of the data (bad labels, invalid
	// native histogram, tenant limits answered with 400, ...).
	ReasonInvalid = "invalid"
)

// classifyRejection derives the Reason of a 400, 409 or 413 answer from its
// code and the start of its body. It matches the phrases of real receivers'
// messages, tried in this order, first match wins:
//
//   - Prometheus (storage.Err*, answered 400 as "<err>\n"): "out of order
//     sample", "duplicate sample for timestamp 1700000000000; overrides not
//     allowed: ...", "out of bounds", "out of bounds: timestamp is too far in
//     the future", "too old sample".
//   - Thanos receive wraps the same errors and answers 409: "add 3 samples:
//     out of order sample"; it also has "out of order labels", which is
//     about the label set, not time.
//   - Mimir spells the cause in words and in an error id: "... out-of-order
//     samples are not allowed (err-mimir-sample-out-of-order)", "... its
//     timestamp is too old (err-mimir-sample-timestamp-too-old)", "... beyond
//     the out-of-order time window of 2h (err-mimir-sample-timestamp-too-old)"
//     (too old, although it says out-of-order: hence bounds before order),
//     "... too far in the future (err-mimir-too-far-in-future)", "... same
//     timestamp, but a different value ... (err-mimir-sample-duplicate-timestamp)",
//     and 413 "... message size ... (err-mimir-distributor-max-write-message-size)".
//   - VictoriaMetrics answers 400 "too big packed request; mustn't exceed
//     -maxInsertRequestSize=..." (and "too big unpacked request"); a Go
//     server behind http.MaxBytesReader says "http: request body too large".
//
// Matching is ASCII case-insensitive and allocates nothing.
func classifyRejection(code int, msg []byte) string {
	switch {
	case code == http.StatusRequestEntityTooLarge,
		containsFold(msg, "too big packed request"),
		containsFold(msg, "too big unpacked request"),
		containsFold(msg, "request body too large"),
		containsFold(msg, "err-mimir-distributor-max-write"):
		return ReasonTooLarge
	case containsFold(msg, "out of order labels"):
		return ReasonInvalid
	case containsFold(msg, "duplicate sample"),
		containsFold(msg, "sample-duplicate-timestamp"):
		return ReasonDuplicate
	case containsFold(msg, "out of bounds"),
		containsFold(msg, "out-of-bounds"),
		containsFold(msg, "too old"),
		containsFold(msg, "too-old"),
		containsFold(msg, "too far in the future"),
		containsFold(msg, "too-far-in-future"):
		return ReasonOutOfBounds
	case containsFold(msg, "out of order"),
		containsFold(msg, "out-of-order"):
		return ReasonOutOfOrder
	}
	return ReasonInvalid
}

// containsFold reports whether s contains the lower-case ASCII phrase sub,
// ignoring ASCII case in s. The messages are at most maxErrorBody bytes, so
// the quadratic worst case does not matter.
func containsFold(s []byte, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		j := 0
		for j < len(sub) && lowerASCII(s[i+j]) == sub[j] {
			j++
		}
		if j == len(sub) {
			return true
		}
	}
	return false
}

func lowerASCII(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}
