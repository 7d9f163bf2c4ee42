package forward

import (
	"strconv"
	"time"
)

// Error is what Send returns when the forward failed. It carries the HTTP
// status Cardinal must answer the sender with (400, 502 or 503), an optional
// Retry-After the sender should honour, and a message for the response body;
// Code and Reason tell Cardinal itself what the downstream answered, so that
// Deliver can isolate the series a rejection is about.
//
// The mapping is chosen so that the sender (Prometheus) keeps the data in its
// WAL and retries whenever the failure is not the data's fault: only a
// permanent rejection of the data by the downstream becomes a 4xx.
type Error struct {
	// Status is the HTTP status code to answer the sender with.
	Status int
	// Code is the HTTP status code the downstream answered the last attempt
	// with; 0 when no response arrived (transport error, timeout,
	// cancellation).
	Code int
	// Reason classifies a rejection (Status 400: the downstream answered
	// 400, 409 or 413) as one of the Reason* constants, from Code and the
	// downstream's message; it is "" for every other failure.
	Reason string
	// RetryAfter, when positive, is how long the sender should wait before
	// retrying. Send it with RetryAfterHeader.
	RetryAfter time.Duration
	// Msg describes the failure; it may quote up to 1 KiB of the downstream's
	// response body.
	Msg string
	// Err is the underlying cause when there is one (a transport error, or
	// the ctx error when the sender went away); nil otherwise.
	Err error
}

// Error returns Msg, followed by the underlying error when there is one.
func (e *Error) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Err.Error()
}

// Unwrap returns the underlying error, so errors.Is(err, context.Canceled)
// works on an Error.
func (e *Error) Unwrap() error { return e.Err }

// RetryAfterHeader formats RetryAfter as the value of a Retry-After response
// header: whole delta-seconds, rounded up so that a wait below one second is
// not turned into "retry now". It returns "" when RetryAfter is not positive,
// in which case the header should not be sent.
func (e *Error) RetryAfterHeader() string {
	if e.RetryAfter <= 0 {
		return ""
	}
	secs := int64(e.RetryAfter / time.Second)
	if e.RetryAfter%time.Second != 0 {
		secs++
	}
	return strconv.FormatInt(secs, 10)
}
