package wire

import "bytes"

// InvalidReason says why Sanitize dropped a series.
type InvalidReason int

// Reasons for dropping a series, in the order they are checked.
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
		s.Labels = dropEmptyValues(s.Labels)
		SortLabels(s.Labels)
		if reason, ok := checkLabels(s.Labels); !ok {
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
	for i := range ls {
		if len(ls[i].Value) == 0 {
			// Slow path: rare, so filtering starts only at the first hit.
			out := ls[:i]
			for _, l := range ls[i+1:] {
				if len(l.Value) > 0 {
					out = append(out, l)
				}
			}
			return out
		}
	}
	return ls
}

// checkLabels expects ls sorted and free of empty values.
func checkLabels(ls []Label) (InvalidReason, bool) {
	hasName := false
	for i := range ls {
		name := ls[i].Name
		if len(name) == 0 {
			return InvalidEmptyLabelName, false
		}
		if i > 0 && bytes.Equal(name, ls[i-1].Name) {
			return InvalidDuplicateLabel, false
		}
		if string(name) == "__name__" {
			hasName = true
		}
	}
	if !hasName {
		return InvalidNoName, false
	}
	return 0, true
}
