package wire

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// InvalidReason says why Sanitize dropped a series.
type InvalidReason int

// Reasons for dropping a series.
const (
	InvalidNoName InvalidReason = iota
	InvalidEmptyLabelName
	InvalidDuplicateLabel
	InvalidHistogram
	InvalidUTF8
	InvalidReference
	InvalidNoSamples
	numInvalidReasons
)

var invalidReasonText = [numInvalidReasons]string{
	InvalidNoName:         "no __name__ label",
	InvalidEmptyLabelName: "empty label name",
	InvalidDuplicateLabel: "duplicate label name",
	InvalidHistogram:      "invalid native histogram",
	InvalidUTF8:           "label name or value not valid UTF-8",
	InvalidReference:      "symbol reference out of range or odd number of label references",
	InvalidNoSamples:      "neither samples nor histograms",
}

func (r InvalidReason) String() string { return invalidReasonText[r] }

// SanitizeStats counts what Sanitize dropped, and remembers the first
// series it dropped, so that the answer to the sender can name one.
type SanitizeStats struct {
	// Series and Samples dropped, by reason. Samples include histogram samples.
	Series  [numInvalidReasons]int
	Samples [numInvalidReasons]int
	// Floats, Histograms and Exemplars count what the dropped series
	// held, for the Written headers.
	Floats, Histograms, Exemplars int

	// The first series dropped; meaningful only when DroppedSeries() > 0.
	// FirstSeries is its labels as Prometheus prints them, cut to about
	// maxFirstSeries bytes. FirstDetail is the histogram's error (without
	// the reason's text) for InvalidHistogram, empty otherwise.
	FirstReason InvalidReason
	FirstSeries string
	FirstDetail string
}

// maxFirstSeries bounds SanitizeStats.FirstSeries: enough to recognise a
// series, not enough to turn an error message into a copy of the request.
const maxFirstSeries = 256

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

// Describe renders the stats for an error message: the count for each
// reason, most frequent first, then the first dropped series, for example
// `2 with invalid native histogram, 1 with no __name__ label; first:
// {__name__="x", job="a"}: positive spans need 5 buckets, have 1`. It
// returns "" when nothing was dropped.
func (s *SanitizeStats) Describe() string {
	if s.DroppedSeries() == 0 {
		return ""
	}
	reasons := make([]InvalidReason, 0, numInvalidReasons)
	for r, n := range s.Series {
		if n > 0 {
			reasons = append(reasons, InvalidReason(r))
		}
	}
	slices.SortStableFunc(reasons, func(a, b InvalidReason) int { return s.Series[b] - s.Series[a] })
	var sb strings.Builder
	for i, r := range reasons {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%d with %s", s.Series[r], r)
	}
	sb.WriteString("; first: ")
	sb.WriteString(s.FirstSeries)
	if s.FirstDetail != "" {
		sb.WriteString(": ")
		sb.WriteString(s.FirstDetail)
	} else {
		fmt.Fprintf(&sb, " (%s)", s.FirstReason)
	}
	return sb.String()
}

// Sanitize brings every series into the form Prometheus requires: labels
// sorted by name, and no label with an empty value (which Prometheus treats as
// absent). It removes, in place, series that no receiver would accept: no
// metric name, an empty label name, a label name given twice, or a native
// histogram that fails ValidateHistogram (the whole series goes: Prometheus
// would reject the request that carried it). stats receives what was
// removed; it is not reset first, and keeps the first series it was told
// about. Sanitize allocates nothing unless it drops a series.
func (r *Request) Sanitize(stats *SanitizeStats) {
	r.SanitizeTrusted(stats, nil)
}

// SanitizeTrusted is Sanitize for a request some of whose series carry
// labels known to be valid: trusted[i] says that the labels of series i
// are, byte for byte, labels that passed Sanitize before (the caller
// knows them by their InputHash, which is of their canonical encoding:
// only sorted, valid labels have one that passed), so they are not
// checked again. Everything else is, the native histograms of trusted
// series included. trusted may be shorter than r.Series. It reports
// whether it changed the labels of a series or dropped one, which moves
// the series after it: then trusted, and anything else the caller keeps by
// index, no longer lines up with r.Series.
func (r *Request) SanitizeTrusted(stats *SanitizeStats, trusted []bool) (changed bool) {
	out := r.Series[:0]
	for i := range r.Series {
		s := r.Series[i]
		if s.invalid != 0 {
			// Slow path: the 2.0 decoder found it unusable.
			r.plain, changed = false, true
			stats.drop(InvalidReason(s.invalid-1), &s, nil)
			continue
		}
		reason, ok := InvalidReason(0), true
		if i >= len(trusted) || !trusted[i] {
			r.DecodeLazy(&s)
			// A 2.0 request whose symbols are all ASCII has ASCII labels.
			ascii := r.asciiSymbols || s.rawLabels != nil && isASCII(s.rawLabels)
			var fine bool
			reason, ok, fine = checkSorted(s.Labels, ascii)
			if !fine {
				// Slow path: unsorted labels or empty values. The decoded
				// bytes are no longer the canonical form of the labels.
				s.rawLabels = nil
				r.plain, changed = false, true
				s.Labels = dropEmptyValues(s.Labels)
				slices.SortFunc(s.Labels, CompareLabelNames)
				reason, ok, _ = checkSorted(s.Labels, false)
			}
		}
		var err error
		for j := 0; ok && j < len(s.Histograms); j++ {
			if err = ValidateHistogram(s.Histograms[j].Data); err != nil {
				reason, ok = InvalidHistogram, false
			}
		}
		if !ok {
			r.plain, changed = false, true
			r.DecodeLazy(&s)
			stats.drop(reason, &s, err)
			continue
		}
		out = append(out, s)
	}
	clear(r.Series[len(out):])
	r.Series = out
	return changed
}

// isASCII reports whether b holds only ASCII bytes. On a series' encoded
// labels it proves every name and value valid UTF-8 in one pass, where
// utf8.Valid would be called twice per label: the tags and lengths in
// between are ASCII too unless a label is 128 bytes or longer, and then the
// per-label check decides.
func isASCII(b []byte) bool {
	var acc uint64
	for len(b) >= 8 {
		acc |= binary.LittleEndian.Uint64(b)
		b = b[8:]
	}
	for _, c := range b {
		acc |= uint64(c)
	}
	return acc&0x8080808080808080 == 0
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
// reason why not. ascii says that every name and value is known to be
// ASCII, and so valid UTF-8.
func checkSorted(ls []Label, ascii bool) (reason InvalidReason, ok, fine bool) {
	hasName := false
	for i := range ls {
		name := ls[i].Name
		if len(ls[i].Value) == 0 {
			return 0, false, false
		}
		if len(name) == 0 {
			return InvalidEmptyLabelName, false, true
		}
		// Prometheus' receiver drops a series whose label names or values
		// are not valid UTF-8.
		if !ascii && (!utf8.Valid(name) || !utf8.Valid(ls[i].Value)) {
			return InvalidUTF8, false, true
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

// drop counts the series s, dropped for reason, and remembers it if it is
// the first. Slow path: only invalid input gets here.
func (s *SanitizeStats) drop(reason InvalidReason, series *Series, err error) {
	if s.DroppedSeries() == 0 {
		s.FirstReason = reason
		s.FirstSeries = formatLabels(series.Labels, maxFirstSeries)
		s.FirstDetail = ""
		if err != nil {
			s.FirstDetail = histogramDetail(err)
		}
	}
	s.Series[reason]++
	s.Samples[reason] += len(series.Samples) + len(series.Histograms)
	s.Floats += len(series.Samples)
	s.Histograms += len(series.Histograms)
	s.Exemplars += len(series.Exemplars)
}

// formatLabels renders ls as Prometheus' labels.String does,
// {__name__="x", job="a"}, with names that are not plain identifiers quoted
// as well, cut to about limit bytes on a rune boundary.
func formatLabels(ls []Label, limit int) string {
	b := make([]byte, 0, 64)
	b = append(b, '{')
	for i := range ls {
		if i > 0 {
			b = append(b, ", "...)
		}
		if isPlainName(ls[i].Name) {
			b = append(b, ls[i].Name...)
		} else {
			b = strconv.AppendQuote(b, string(ls[i].Name))
		}
		b = append(b, '=')
		b = strconv.AppendQuote(b, string(ls[i].Value))
		if len(b) > limit {
			break
		}
	}
	if len(b) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(b[cut]) {
			cut--
		}
		return string(b[:cut]) + "..."
	}
	return string(append(b, '}'))
}

func isPlainName(name []byte) bool {
	if len(name) == 0 {
		return false
	}
	for i, c := range name {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
