package wire

import (
	"bytes"
	"slices"
)

// InvalidReason says why Sanitize dropped a series.
type InvalidReason int

// Reasons for dropping a series.
const (
	InvalidNoName InvalidReason = iota
	InvalidEmptyLabelName
	InvalidDuplicateLabel
	numInvalidReasons
)

var invalidReasonText = [numInvalidReasons]string{
	InvalidNoName:         "no __name__ label",
	InvalidEmptyLabelName: "empty label name",
	InvalidDuplicateLabel: "duplicate label name",
}

func (r InvalidReason) String() string { return invalidReasonText[r] }

// SanitizeStats counts what Sanitize dropped.
type SanitizeStats struct {
	// Series and Samples dropped, by reason. Samples include histogram samples.
	Series  [numInvalidReasons]int
	Samples [numInvalidReasons]int
}

// DroppedSeries returns the number of series dropped for any reason.
func (s *SanitizeStats) DroppedSeries() int {
	n := 0
	for _, v := range s.Series {
		n += v
	}
	return n
}

// DroppedSamples returns the number of samples dropped for any reason.
func (s *SanitizeStats) DroppedSamples() int {
	n := 0
	for _, v := range s.Samples {
		n += v
	}
	return n
}

// Sanitize brings every series into the form Prometheus requires: labels
// sorted by name, and no label with an empty value (which Prometheus treats as
// absent). It removes, in place, series that no receiver would accept: no
// metric name, an empty label name, or a label name given twice. stats
// receives what was removed; it is not reset first.
func (r *Request) Sanitize(stats *SanitizeStats) {
	out := r.Series[:0]
	for i := range r.Series {
		s := r.Series[i]
		reason, ok, fine := checkSorted(s.Labels)
		if !fine {
			// Slow path: unsorted labels or empty values. The decoded
			// bytes are no longer the canonical form of the labels.
			s.rawLabels = nil
			s.Labels = dropEmptyValues(s.Labels)
			slices.SortFunc(s.Labels, CompareLabelNames)
			reason, ok, _ = checkSorted(s.Labels)
		}
		if !ok {
			stats.Series[reason]++
			stats.Samples[reason] += len(s.Samples) + len(s.Histograms)
			continue
		}
		out = append(out, s)
	}
	clear(r.Series[len(out):])
	r.Series = out
}

func dropEmptyValues(ls []Label) []Label {
	out := ls[:0]
	for _, l := range ls {
		if len(l.Value) > 0 {
			out = append(out, l)
		}
	}
	return out
}

// checkSorted validates ls in one pass. fine is false when ls is unsorted or
// holds an empty value: then ok and reason mean nothing and the caller must
// normalise ls and check again. Otherwise ok says whether ls is valid, and
// reason why not.
func checkSorted(ls []Label) (reason InvalidReason, ok, fine bool) {
	hasName := false
	for i := range ls {
		name := ls[i].Name
		if len(ls[i].Value) == 0 {
			return 0, false, false
		}
		if len(name) == 0 {
			return InvalidEmptyLabelName, false, true
		}
		if i > 0 {
			prev := ls[i-1].Name
			// Most neighbours differ in their first byte.
			c := int(prev[0]) - int(name[0])
			if c == 0 {
				c = bytes.Compare(prev, name)
			}
			if c > 0 {
				return 0, false, false
			}
			if c == 0 {
				return InvalidDuplicateLabel, false, true
			}
		}
		if !hasName && len(name) == 8 && string(name) == "__name__" {
			hasName = true
		}
	}
	if !hasName {
		return InvalidNoName, false, true
	}
	return 0, true, true
}
