// Package bytesconv holds the project's only unsafe byte↔string conversions.
//
// Both directions alias memory instead of copying it. The result is valid only as
// long as the source is neither modified nor reused: a string made from a pooled
// request buffer must never outlive the request (Prometheus once corrupted labels
// exactly this way). Copy with strings.Clone before keeping such a string.
package bytesconv

import "unsafe"

// String returns b as a string without copying. The caller must not modify b
// while the string is in use.
func String(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// Bytes returns s as a byte slice without copying. The result must never be
// written to.
func Bytes(s string) []byte {
	if s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
