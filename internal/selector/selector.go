// Package selector matches series against PromQL series selectors
// ({__name__=~"istio_.*", job="mesh"}), parsed with Prometheus' own parser
// and evaluated with its matchers (whose regexes are optimised: literal
// sets, prefixes), on the wire package's labels. Matching allocates nothing.
package selector

import (
	"fmt"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/cardinal-gateway/cardinal/internal/bytesconv"
	"github.com/cardinal-gateway/cardinal/wire"
)

// Set is a list of selectors; a series matches the Set when it matches any
// of them. The zero Set matches nothing; use Empty to tell.
type Set struct {
	sources  []string
	matchers [][]*labels.Matcher
}

var promql = parser.NewParser(parser.Options{})

// Parse parses selectors. Each must be a series selector, such as
// `{__name__=~"istio_.*|envoy_.*"}`, `up{job="prometheus"}` or
// `{job=~"linkerd-.*"}`.
func Parse(selectors []string) (*Set, error) {
	s := &Set{sources: selectors}
	for i, src := range selectors {
		ms, err := promql.ParseMetricSelector(src)
		if err != nil {
			return nil, fmt.Errorf("[%d] %q: %w", i, src, err)
		}
		s.matchers = append(s.matchers, ms)
	}
	return s, nil
}

// Empty reports whether s holds no selector.
func (s *Set) Empty() bool { return s == nil || len(s.matchers) == 0 }

// String returns the selectors as written, joined by " or ".
func (s *Set) String() string {
	out := ""
	for i, src := range s.sources {
		if i > 0 {
			out += " or "
		}
		out += src
	}
	return out
}

// Matches reports whether ls (sorted or not) matches any selector. A label
// a matcher names and ls lacks has the empty value, as in PromQL.
func (s *Set) Matches(ls []wire.Label) bool {
	for _, ms := range s.matchers {
		if matchesAll(ms, ls) {
			return true
		}
	}
	return false
}

func matchesAll(ms []*labels.Matcher, ls []wire.Label) bool {
	for _, m := range ms {
		v := wire.GetLabel(ls, m.Name)
		if !m.Matches(bytesconv.String(v)) {
			return false
		}
	}
	return true
}
