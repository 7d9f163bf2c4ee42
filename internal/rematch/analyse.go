package rematch

import (
	"regexp/syntax"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The analysis reads a regex's syntax tree as a language: a list of
// alternatives, each a sequence of literals and wildcards. A regex whose
// language fits (a finite set of strings, literals around ".*" and ".+") is
// matched without the engine. Anything else, or anything too large, is left
// to the engine: the analysis may give up, but it must never be wrong.

const (
	// maxAlternatives bounds the expansion of concatenations of
	// alternations ("(a|b)(c|d)" has four alternatives), so that a small
	// regex cannot make a large table.
	maxAlternatives = 4096
	// maxLiteralBytes bounds the bytes held by the expanded literals.
	maxLiteralBytes = 1 << 20
	// maxClassRunes is the largest character class expanded into literals.
	maxClassRunes = 16
)

// elem is one element of an alternative.
type elem struct {
	kind elemKind
	lit  string // kindLiteral
	fold bool   // kindLiteral: compared under simple case folding
	min  int    // kindWild: the fewest runes it matches (0 or 1); kindRunes: how many
	nl   bool   // kindWild, kindRunes: it matches '\n' too
}

type elemKind uint8

const (
	kindLiteral elemKind = iota
	kindWild             // any string of at least min runes
	kindRunes            // any string of exactly min runes ("5..")
	kindBegin            // \A: start of text
	kindEnd              // \z: end of text
)

type alt []elem

type analyser struct {
	bytes int
}

// lang returns the language of re as alternatives, or ok=false when it
// cannot be written so within the bounds.
func (a *analyser) lang(re *syntax.Regexp) ([]alt, bool) {
	switch re.Op {
	case syntax.OpNoMatch:
		return nil, true
	case syntax.OpEmptyMatch:
		return []alt{nil}, true
	case syntax.OpLiteral:
		for _, r := range re.Rune {
			// The engine reads each invalid UTF-8 byte of the input as
			// U+FFFD, so a literal U+FFFD matches bytes that a byte
			// comparison would not.
			if r == utf8.RuneError {
				return nil, false
			}
		}
		s := string(re.Rune)
		if !a.charge(len(s)) {
			return nil, false
		}
		return []alt{{{kind: kindLiteral, lit: s, fold: re.Flags&syntax.FoldCase != 0 && foldable(s)}}}, true
	case syntax.OpCharClass:
		n := 0
		for i := 0; i < len(re.Rune); i += 2 {
			n += int(re.Rune[i+1]-re.Rune[i]) + 1
			if n > maxClassRunes {
				return nil, false
			}
		}
		out := make([]alt, 0, n)
		for i := 0; i < len(re.Rune); i += 2 {
			for r := re.Rune[i]; r <= re.Rune[i+1]; r++ {
				if r == utf8.RuneError || !a.charge(utf8.RuneLen(r)) {
					return nil, false
				}
				out = append(out, alt{{kind: kindLiteral, lit: string(r)}})
			}
		}
		return out, true
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		return []alt{{{kind: kindRunes, min: 1, nl: re.Op == syntax.OpAnyChar}}}, true
	case syntax.OpBeginText:
		return []alt{{{kind: kindBegin}}}, true
	case syntax.OpEndText:
		return []alt{{{kind: kindEnd}}}, true
	case syntax.OpCapture:
		return a.lang(re.Sub[0])
	case syntax.OpStar, syntax.OpPlus:
		sub := re.Sub[0]
		if sub.Op != syntax.OpAnyChar && sub.Op != syntax.OpAnyCharNotNL {
			return nil, false
		}
		w := elem{kind: kindWild, nl: sub.Op == syntax.OpAnyChar}
		if re.Op == syntax.OpPlus {
			w.min = 1
		}
		return []alt{{w}}, true
	case syntax.OpQuest:
		sub, ok := a.lang(re.Sub[0])
		if !ok || len(sub)+1 > maxAlternatives {
			return nil, false
		}
		return append(sub, nil), true
	case syntax.OpAlternate:
		var out []alt
		for _, s := range re.Sub {
			sub, ok := a.lang(s)
			if !ok || len(out)+len(sub) > maxAlternatives {
				return nil, false
			}
			out = append(out, sub...)
		}
		return out, true
	case syntax.OpConcat:
		out := []alt{nil}
		for _, s := range re.Sub {
			sub, ok := a.lang(s)
			if !ok || len(out)*len(sub) > maxAlternatives {
				return nil, false
			}
			next := make([]alt, 0, len(out)*len(sub))
			for _, x := range out {
				for _, y := range sub {
					xy, ok := a.concat(x, y)
					if !ok {
						return nil, false
					}
					next = append(next, xy)
				}
			}
			out = next
		}
		return out, true
	}
	// Other repetitions, line anchors, word boundaries: the engine's job.
	return nil, false
}

// concat returns x followed by y, with adjacent literals joined and adjacent
// wildcards merged.
func (a *analyser) concat(x, y alt) (alt, bool) {
	out := make(alt, len(x), len(x)+len(y))
	copy(out, x)
	for _, e := range y {
		if e.kind == kindLiteral && e.lit == "" {
			continue
		}
		if len(out) == 0 {
			out = append(out, e)
			continue
		}
		last := &out[len(out)-1]
		switch {
		case e.kind == kindLiteral && last.kind == kindLiteral && e.fold == last.fold:
			// Joining copies both: charge the copy, so that a long
			// concatenation of alternations cannot grow unseen.
			if !a.charge(len(last.lit) + len(e.lit)) {
				return nil, false
			}
			last.lit += e.lit
		case e.kind == kindWild && last.kind == kindWild:
			// ".*.*" is ".*", ".*.+" is ".+". Two wildcards that each
			// need a rune would need two, which a byte count cannot tell.
			if last.min+e.min > 1 || (last.nl != e.nl && last.min+e.min > 0) {
				return nil, false
			}
			last.min += e.min
			last.nl = last.nl || e.nl
		case e.kind == kindRunes && last.kind == kindRunes && e.nl == last.nl:
			last.min += e.min
		default:
			out = append(out, e)
		}
	}
	return out, true
}

func (a *analyser) charge(n int) bool {
	a.bytes += n
	return a.bytes <= maxLiteralBytes
}

// wholeString turns an alternative of a search (the regexp matches if it
// matches anywhere in the input) into one of a whole-string match: \A at the
// start and \z at the end always hold there and go; where they are absent,
// the search may skip any text, which is a wildcard. It reports false if an
// anchor is anywhere else.
func (a *analyser) wholeString(x alt) (alt, bool) {
	anchoredStart, anchoredEnd := false, false
	for len(x) > 0 && x[0].kind == kindBegin {
		x, anchoredStart = x[1:], true
	}
	for len(x) > 0 && x[len(x)-1].kind == kindEnd {
		x, anchoredEnd = x[:len(x)-1], true
	}
	for _, e := range x {
		if e.kind == kindBegin || e.kind == kindEnd {
			return nil, false
		}
	}
	any := alt{{kind: kindWild, nl: true}}
	ok := true
	if !anchoredStart {
		if x, ok = a.concat(any, x); !ok {
			return nil, false
		}
	}
	if !anchoredEnd {
		if x, ok = a.concat(x, any); !ok {
			return nil, false
		}
	}
	return x, true
}

// foldable reports whether case folding changes what s matches.
func foldable(s string) bool {
	for _, r := range s {
		if unicode.SimpleFold(r) != r {
			return true
		}
	}
	return false
}

// foldKey appends the canonical case folding of s to dst: each rune is
// replaced by the smallest rune of its simple folding orbit, which is how
// the engine's (?i) compares runes. Invalid UTF-8 bytes are copied as they
// are, so that they never equal a literal (which holds no U+FFFD). It
// returns false if the key does not fit in dst's capacity.
func foldKey(dst []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			if len(dst) == cap(dst) {
				return dst, false
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			if len(dst) == cap(dst) {
				return dst, false
			}
			dst = append(dst, c)
			i++
			continue
		}
		r = foldMin(r)
		if len(dst)+utf8.RuneLen(r) > cap(dst) {
			return dst, false
		}
		dst = utf8.AppendRune(dst, r)
		i += n
	}
	return dst, true
}

// foldMin returns the smallest rune of r's simple folding orbit.
func foldMin(r rune) rune {
	m := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		m = min(m, f)
	}
	return m
}

// foldString returns the canonical folding of a literal.
func foldString(s string) string {
	var b strings.Builder
	for _, r := range s {
		b.WriteRune(foldMin(r))
	}
	return b.String()
}
