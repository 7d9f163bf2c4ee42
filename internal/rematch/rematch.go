// Package rematch matches strings against a regular expression without the
// regex engine when the expression's syntax tree allows it.
//
// Relabel configs and allowlists are mostly finite sets of names
// ("(__name__|app|namespace)", "(?i)istio_requests_total"), literal
// prefixes and suffixes ("envoy_.*", ".*_bucket") or literals around
// wildcards (".*grpc.*"). Written with or without parentheses, nested
// groups, anchors or case folding, they are the same language; the engine
// spends a hundred nanoseconds on each, a set lookup a few. The decision is
// made on the parsed tree, never on the spelling, and whatever the
// analysis does not cover falls back to the engine, so a Matcher always
// answers exactly what the regexp would.
package rematch

import (
	"fmt"
	"regexp/syntax"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/grafana/regexp"

	"github.com/cardinal-gateway/cardinal/internal/bytesconv"
)

// Matcher reports whether a regexp matches a string, as the regexp's own
// MatchString does. It is immutable and safe for concurrent use.
//
// The regexp is used as written: to match whole strings, anchor it
// ("^(?:expr)$"), as Prometheus' relabel.NewRegexp does.
type Matcher struct {
	re   *regexp.Regexp
	fast bool // the fields below decide every input (see noNL)

	exact    *set    // literals matched exactly
	foldSet  *set    // literals matched under case folding, by fold key
	foldMax  int     // longest fold key in foldSet, in bytes
	prefixes affixes // literal followed by a wildcard of min 0
	suffixes affixes // wildcard of min 0 followed by a literal
	globs    []glob  // literals between wildcards
	fixed    []alt   // literals and single-rune wildcards ("5..")
	// noNL: some wildcard does not match '\n'. Inputs holding one go to
	// the engine; for the others all wildcards behave alike.
	noNL bool

	// wholeCaptures is the number of capture groups, when every one of
	// them spans the whole match ("(a|b)", "((x))"); -1 otherwise.
	wholeCaptures int
	// restCapture describes "lit(.*)" and "lit(.+)": the only group is
	// everything after a literal prefix of length restFrom, at least
	// restMin bytes long. restMin is -1 when the regexp is not of that
	// shape.
	restFrom, restMin int
	desc              string
}

// maxFoldKey bounds the case-insensitive literals the fast path holds: the
// input's key is built in a stack buffer of this size.
const maxFoldKey = 256

// Compile parses expr with regexp.Compile and analyses it.
func Compile(expr string) (*Matcher, error) {
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, err
	}
	return New(re), nil
}

// MustCompile is Compile for expressions known to be valid.
func MustCompile(expr string) *Matcher {
	m, err := Compile(expr)
	if err != nil {
		panic(err)
	}
	return m
}

// New analyses a compiled regexp.
func New(re *regexp.Regexp) *Matcher {
	m := &Matcher{re: re, wholeCaptures: -1, restMin: -1, desc: "regexp"}
	tree, err := syntax.Parse(re.String(), syntax.Perl)
	if err != nil {
		// The regexp compiled from this very string; keep the engine.
		return m
	}
	tree = tree.Simplify()
	m.analyseCaptures(tree)
	var a analyser
	alts, ok := a.lang(tree)
	if !ok {
		return m
	}
	f := *m
	if !f.build(alts) {
		return m
	}
	f.fast = true
	return &f
}

// build fills the fast fields from the alternatives, or reports false if
// one of them has a shape the fields cannot hold.
func (m *Matcher) build(alts []alt) bool {
	var exact, folded, prefixes, suffixes []string
	var a analyser
	for _, x := range alts {
		x, ok := a.wholeString(x)
		if !ok {
			return false
		}
		runes, wild := false, false
		for _, e := range x {
			if (e.kind == kindWild || e.kind == kindRunes) && !e.nl {
				m.noNL = true
			}
			if e.kind == kindLiteral && e.fold && len(x) > 1 {
				return false // case folding next to other elements: the engine
			}
			runes = runes || e.kind == kindRunes
			wild = wild || e.kind == kindWild
		}
		if runes {
			// Single-rune wildcards beside ".*" would need backtracking
			// over rune counts: the engine's job.
			if wild || len(m.fixed) == maxFixed {
				return false
			}
			m.fixed = append(m.fixed, x)
			continue
		}
		switch {
		case len(x) == 0:
			exact = append(exact, "")
		case len(x) == 1 && x[0].kind == kindLiteral:
			if x[0].fold {
				k := foldString(x[0].lit)
				folded = append(folded, k)
				m.foldMax = max(m.foldMax, len(k))
			} else {
				exact = append(exact, x[0].lit)
			}
		case len(x) == 2 && x[0].kind == kindLiteral && x[1].kind == kindWild && x[1].min == 0:
			prefixes = append(prefixes, x[0].lit)
		case len(x) == 2 && x[0].kind == kindWild && x[0].min == 0 && x[1].kind == kindLiteral:
			suffixes = append(suffixes, x[1].lit)
		default:
			g, ok := newGlob(x)
			if !ok {
				return false
			}
			m.globs = append(m.globs, g)
		}
	}
	if len(exact) > 0 {
		m.exact = newSet(exact)
	}
	if len(folded) > 0 {
		if m.foldMax > maxFoldKey {
			return false
		}
		m.foldSet = newSet(folded)
	}
	m.prefixes = newAffixes(prefixes, false)
	m.suffixes = newAffixes(suffixes, true)
	m.desc = describe(len(exact), len(folded), len(prefixes), len(suffixes), len(m.globs), len(m.fixed))
	return true
}

// maxFixed bounds the alternatives with single-rune wildcards, which are
// tried one by one.
const maxFixed = 16

func describe(exact, folded, prefixes, suffixes, globs, fixed int) string {
	var parts []string
	add := func(n int, one, many string) {
		switch {
		case n == 1:
			parts = append(parts, one)
		case n > 1:
			parts = append(parts, fmt.Sprintf("%d %s", n, many))
		}
	}
	add(exact, "a literal", "literals")
	add(folded, "a case-insensitive literal", "case-insensitive literals")
	add(prefixes, "a prefix", "prefixes")
	add(suffixes, "a suffix", "suffixes")
	add(globs, "a wildcard pattern", "wildcard patterns")
	add(fixed, "a fixed-length pattern", "fixed-length patterns")
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

// analyseCaptures recognises the capture shapes whose submatch indexes are
// known from a plain match. Only a regexp anchored at both ends qualifies: a
// search could place them anywhere.
func (m *Matcher) analyseCaptures(tree *syntax.Regexp) {
	if tree.Op != syntax.OpConcat {
		return
	}
	subs := tree.Sub
	begin, end := false, false
	for len(subs) > 0 && subs[0].Op == syntax.OpBeginText {
		subs, begin = subs[1:], true
	}
	for len(subs) > 0 && subs[len(subs)-1].Op == syntax.OpEndText {
		subs, end = subs[:len(subs)-1], true
	}
	if !begin || !end {
		return
	}
	n := tree.MaxCap()
	if n == 0 {
		m.wholeCaptures = 0
		return
	}
	if n != 1 && len(subs) != 1 {
		return
	}
	// lit(.*), lit(.+), (.*) and (.+) under (?s): the only group is what
	// follows the literal.
	var lit []rune
	if len(subs) == 2 && subs[0].Op == syntax.OpLiteral && subs[0].Flags&syntax.FoldCase == 0 && !hasRuneError(subs[0].Rune) {
		lit, subs = subs[0].Rune, subs[1:]
	}
	if len(subs) != 1 {
		return
	}
	body := subs[0]
	if n == 1 && body.Op == syntax.OpCapture && (body.Sub[0].Op == syntax.OpStar || body.Sub[0].Op == syntax.OpPlus) &&
		body.Sub[0].Sub[0].Op == syntax.OpAnyChar {
		m.restFrom, m.restMin = len(string(lit)), 0
		if body.Sub[0].Op == syntax.OpPlus {
			m.restMin = 1
		}
	}
	if lit != nil {
		return
	}
	depth := 0
	for body.Op == syntax.OpCapture {
		depth++
		body = body.Sub[0]
	}
	if depth == n {
		m.wholeCaptures = n
	}
}

func hasRuneError(rs []rune) bool {
	for _, r := range rs {
		if r == 0xFFFD {
			return true
		}
	}
	return false
}

// Regexp returns the regexp the Matcher was made from.
func (m *Matcher) Regexp() *regexp.Regexp { return m.re }

// String returns the regexp's source.
func (m *Matcher) String() string { return m.re.String() }

// Fast reports whether the Matcher decides inputs without the engine (inputs
// holding '\n' may still need it when a wildcard excludes newlines).
func (m *Matcher) Fast() bool { return m.fast }

// Describe says how the Matcher decides, for diagnostics: "31 literals, a
// suffix", or "regexp".
func (m *Matcher) Describe() string { return m.desc }

// WholeCaptures returns the number of capture groups when every one of them
// spans the whole match, so that each submatch is the input itself, or -1.
func (m *Matcher) WholeCaptures() int { return m.wholeCaptures }

// RestCapture reports whether the regexp is a literal prefix followed by a
// single group "(.*)" or "(.+)" under (?s), and returns the prefix length:
// the group is everything after it. A match needs the fast path to agree.
func (m *Matcher) RestCapture() (from int, ok bool) {
	return m.restFrom, m.restMin >= 0
}

// Match reports whether the regexp matches b. It does not allocate.
func (m *Matcher) Match(b []byte) bool { return m.MatchString(bytesconv.String(b)) }

// MatchString reports whether the regexp matches s. It does not allocate.
func (m *Matcher) MatchString(s string) bool {
	if !m.fast || (m.noNL && strings.IndexByte(s, '\n') >= 0) {
		return m.re.MatchString(s)
	}
	if m.exact != nil && m.exact.has(s) {
		return true
	}
	if m.foldSet != nil {
		// Folding can shorten a rune (U+212A, three bytes, folds to 'K'),
		// so the input's length says little; a key that outgrows the
		// longest literal's cannot be in the set.
		var buf [maxFoldKey]byte
		if k, ok := foldKey(buf[:0:m.foldMax], s); ok && m.foldSet.has(bytesconv.String(k)) {
			return true
		}
	}
	if m.prefixes.match(s) || m.suffixes.match(s) {
		return true
	}
	for i := range m.globs {
		if m.globs[i].match(s) {
			return true
		}
	}
	for _, x := range m.fixed {
		if matchFixed(x, s) {
			return true
		}
	}
	return false
}

// matchFixed reports whether s is x, a sequence of literals and runs of
// single-rune wildcards, and nothing more. A wildcard takes one rune as the
// engine decodes them, an invalid UTF-8 byte being one; inputs with '\n'
// never get here when a wildcard excludes it. Literals start with a UTF-8
// lead byte, so a run of runes ends where the engine's decoding does.
func matchFixed(x alt, s string) bool {
	for _, e := range x {
		if e.kind == kindLiteral {
			if !strings.HasPrefix(s, e.lit) {
				return false
			}
			s = s[len(e.lit):]
			continue
		}
		for range e.min {
			if s == "" {
				return false
			}
			_, n := utf8.DecodeRuneInString(s)
			s = s[n:]
		}
	}
	return s == ""
}

// glob is a sequence of literals with wildcards between them:
// prefix W0 middle[0] W1 ... middle[k-1] Wk suffix, where wildcard i matches
// at least mins[i] runes (0 or 1) and prefix or suffix may be empty.
type glob struct {
	prefix, suffix string
	middle         []string
	mins           []int
	minLen         int
}

// newGlob builds a glob from an alternative of literals and wildcards that
// alternate (concat merged neighbours of one kind).
func newGlob(x alt) (glob, bool) {
	var g glob
	if len(x) > 0 && x[0].kind == kindLiteral {
		g.prefix = x[0].lit
		x = x[1:]
	}
	if len(x) > 0 && x[len(x)-1].kind == kindLiteral {
		g.suffix = x[len(x)-1].lit
		x = x[:len(x)-1]
	}
	// x is now W (L W)*.
	for i, e := range x {
		wantWild := i%2 == 0
		if (e.kind == kindWild) != wantWild || (e.kind == kindLiteral && e.fold) {
			return glob{}, false
		}
		if wantWild {
			g.mins = append(g.mins, e.min)
			g.minLen += e.min
		} else {
			g.middle = append(g.middle, e.lit)
			g.minLen += len(e.lit)
		}
	}
	if len(x)%2 == 0 {
		// Either no wildcard at all (a lone literal, handled as exact) or
		// a literal where a wildcard belongs.
		return glob{}, false
	}
	g.minLen += len(g.prefix) + len(g.suffix)
	return g, true
}

// match reports whether s matches the glob. Placing each middle literal at
// its leftmost possible position is optimal: a later placement leaves less
// room for what follows and no wildcard restricts its content (inputs with
// '\n' never get here when a wildcard excludes it). Literals start with a
// UTF-8 lead byte, so every position found is a rune boundary of the
// engine's decoding.
func (g *glob) match(s string) bool {
	if len(s) < g.minLen || !strings.HasPrefix(s, g.prefix) || !strings.HasSuffix(s, g.suffix) {
		return false
	}
	s = s[len(g.prefix) : len(s)-len(g.suffix)]
	pos := 0
	for i, mid := range g.middle {
		from := pos + g.mins[i]
		if from > len(s) {
			return false
		}
		j := strings.Index(s[from:], mid)
		if j < 0 {
			return false
		}
		pos = from + j + len(mid)
	}
	return len(s)-pos >= g.mins[len(g.mins)-1]
}

// affixes is a set of literal prefixes (or suffixes) of any length. Few are
// compared one by one; many are grouped by length and looked up in a set per
// length.
type affixes struct {
	suffix bool
	list   []string
	byLen  []*set
	lens   []int // ascending
}

const affixLinear = 4

func newAffixes(list []string, suffix bool) affixes {
	a := affixes{suffix: suffix}
	if len(list) <= affixLinear {
		a.list = list
		return a
	}
	groups := map[int][]string{}
	for _, s := range list {
		groups[len(s)] = append(groups[len(s)], s)
	}
	for n := range groups {
		a.lens = append(a.lens, n)
	}
	sort.Ints(a.lens)
	for _, n := range a.lens {
		a.byLen = append(a.byLen, newSet(groups[n]))
	}
	return a
}

// match reports whether s starts (or ends) with one of the affixes.
func (a *affixes) match(s string) bool {
	for _, p := range a.list {
		if (!a.suffix && strings.HasPrefix(s, p)) || (a.suffix && strings.HasSuffix(s, p)) {
			return true
		}
	}
	for i, n := range a.lens {
		if n > len(s) {
			return false
		}
		part := s[:n]
		if a.suffix {
			part = s[len(s)-n:]
		}
		if a.byLen[i].has(part) {
			return true
		}
	}
	return false
}
