package relabel

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/grafana/regexp"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"
)

// Program is a compiled list of relabel rules. It is immutable and safe for
// concurrent use; each goroutine brings its own Scratch.
type Program struct {
	rules []rule
	// trackUntil is the number of leading rules during which Apply records
	// the order in which labels are set, or 0 when no labelmap rule can
	// observe that order. See Scratch.added.
	trackUntil int
}

type action uint8

const (
	actReplace action = iota
	actKeep
	actDrop
	actKeepEqual
	actDropEqual
	actHashMod
	actLabelMap
	actLabelDrop
	actLabelKeep
	actLowercase
	actUppercase
)

var actions = map[relabel.Action]action{
	relabel.Replace:   actReplace,
	relabel.Keep:      actKeep,
	relabel.Drop:      actDrop,
	relabel.KeepEqual: actKeepEqual,
	relabel.DropEqual: actDropEqual,
	relabel.HashMod:   actHashMod,
	relabel.LabelMap:  actLabelMap,
	relabel.LabelDrop: actLabelDrop,
	relabel.LabelKeep: actLabelKeep,
	relabel.Lowercase: actLowercase,
	relabel.Uppercase: actUppercase,
}

// rule is one compiled relabel config.
type rule struct {
	act     action
	sources [][]byte // source label names
	sep     []byte
	m       matcher
	// target is the target label (replace, hashmod, lowercase, uppercase,
	// keepequal, dropequal) and repl the replacement (replace, labelmap).
	target, repl template
	modulus      uint64
	scheme       model.ValidationScheme
}

// template is a target_label or replacement, parsed once for the cases that
// need no regexp.Expand.
type template struct {
	raw string
	// lit is raw as bytes. It is the expansion when static, and the label
	// name for the actions that never expand their target (hashmod,
	// lowercase, uppercase, keepequal, dropequal).
	lit []byte
	// static is true when raw has no '$' and so expands to itself.
	static bool
	// group is n when raw is exactly "$n" or "${n}" for a group the regex
	// has, so the expansion is a sub-slice of the input; -1 otherwise.
	group int
}

func newTemplate(raw string, numSubexp int) template {
	t := template{raw: raw, lit: []byte(raw), group: -1}
	if !strings.Contains(raw, "$") {
		t.static = true
		return t
	}
	if g, ok := groupRef(raw); ok && g <= numSubexp {
		t.group = g
	}
	return t
}

// groupRef reports whether s is exactly "$n" or "${n}" with n written
// without leading zeros, which regexp.Expand reads as a reference to
// group n.
func groupRef(s string) (int, bool) {
	digits, ok := strings.CutPrefix(s, "$")
	if !ok {
		return 0, false
	}
	if inner, ok := strings.CutPrefix(digits, "{"); ok {
		if digits, ok = strings.CutSuffix(inner, "}"); !ok {
			return 0, false
		}
	}
	if len(digits) == 0 || len(digits) > 6 {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || strconv.Itoa(n) != digits {
		// Not a plain decimal ("+1", "01", "1x"): leave it to Expand.
		return 0, false
	}
	return n, true
}

// Compile validates cfgs and compiles them into a Program.
//
// Each config is validated with cfg.Validate. A config whose
// NameValidationScheme is unset is validated, and later checks expanded
// target labels, with model.UTF8Validation, Prometheus 3's default. Compile
// works on copies: it does not modify cfgs, and later changes to cfgs do not
// affect the Program. Errors name the rule by index and action.
func Compile(cfgs []*relabel.Config) (*Program, error) {
	p := &Program{rules: make([]rule, 0, len(cfgs))}
	lastLabelMap, firstSetter := -1, len(cfgs)
	for i, cfg := range cfgs {
		if cfg == nil {
			return nil, fmt.Errorf("relabel rule %d: config is nil", i)
		}
		r, err := compileRule(*cfg)
		if err != nil {
			return nil, fmt.Errorf("relabel rule %d (%s): %w", i, cfg.Action, err)
		}
		switch r.act {
		case actLabelMap:
			lastLabelMap = i
			firstSetter = min(firstSetter, i)
		case actReplace, actHashMod, actLowercase, actUppercase:
			firstSetter = min(firstSetter, i)
		}
		p.rules = append(p.rules, r)
	}
	// labelmap visits the labels that earlier rules set in the order they
	// were set (see Scratch.added). Pay for recording that order only when
	// a labelmap follows a rule that sets labels.
	if firstSetter < lastLabelMap {
		p.trackUntil = lastLabelMap
	}
	return p, nil
}

// Len returns the number of rules in p.
func (p *Program) Len() int { return len(p.rules) }

func compileRule(cfg relabel.Config) (rule, error) {
	if cfg.NameValidationScheme == model.UnsetValidation {
		cfg.NameValidationScheme = model.UTF8Validation
	}
	if err := cfg.Validate(model.UTF8Validation); err != nil {
		return rule{}, err
	}
	act, ok := actions[cfg.Action]
	if !ok {
		// Validate accepts any non-empty action; ProcessBuilder would panic.
		return rule{}, fmt.Errorf("unknown relabel action %q", cfg.Action)
	}
	r := rule{
		act:     act,
		sep:     []byte(cfg.Separator),
		modulus: cfg.Modulus,
		scheme:  cfg.NameValidationScheme,
	}
	for _, n := range cfg.SourceLabels {
		r.sources = append(r.sources, []byte(n))
	}
	switch act {
	case actReplace, actKeep, actDrop, actLabelMap, actLabelDrop, actLabelKeep:
		if cfg.Regex.Regexp == nil {
			return rule{}, errors.New("regex is not set")
		}
		m, err := newMatcher(cfg.Regex)
		if err != nil {
			return rule{}, err
		}
		r.m = m
	}
	r.target = newTemplate(cfg.TargetLabel, r.m.numSubexp)
	r.repl = newTemplate(cfg.Replacement, r.m.numSubexp)
	return r, nil
}

// captureKind says whether a regex is a literal prefix followed by a single
// capture of everything that follows.
type captureKind uint8

const (
	captureNone captureKind = iota
	captureStar             // prefix(.*)
	capturePlus             // prefix(.+)
)

// matcher matches a fully anchored relabel regex against bytes.
type matcher struct {
	re *regexp.Regexp
	// Fast path: the regex is a literal alternation such as
	// "__name__|job|instance"; one holds the single literal, set the
	// alternatives when there are several.
	literal bool
	one     []byte
	set     *nameSet
	// Fast path: the regex is an alternation of literals and literal
	// prefixes followed by ".*", such as "go_.*|process_.*|up"; set holds
	// the literals.
	prefixes [][]byte
	// Fast path: the regex is prefix(.*) or prefix(.+) with a literal prefix,
	// the shape of "(.*)" (the default) and "__meta_kubernetes_pod_label_(.+)".
	capture   captureKind
	prefix    []byte
	numSubexp int
}

func newMatcher(rx relabel.Regexp) (matcher, error) {
	m := matcher{re: rx.Regexp, numSubexp: rx.NumSubexp()}
	// relabel.Regexp.String strips the "^(?s:" and ")$" that NewRegexp
	// wrapped around the configured expression; check they are there, so that
	// a Regexp built some other way is never mistaken for a literal.
	full := rx.Regexp.String()
	src, ok := strings.CutPrefix(full, "^(?s:")
	if ok {
		src, ok = strings.CutSuffix(src, ")$")
	}
	if !ok {
		return m, nil // Slow path only.
	}
	if exact, prefixes, ok := literalAlternatives(src); ok && m.numSubexp == 0 {
		// Belt and braces: each literal must match its own regex.
		for _, a := range exact {
			if !m.re.MatchString(a) {
				return matcher{}, fmt.Errorf("internal error: literal %q does not match regex %q", a, src)
			}
		}
		for _, a := range prefixes {
			if !m.re.MatchString(a) || !m.re.MatchString(a+"\n\xff") {
				return matcher{}, fmt.Errorf("internal error: prefix %q does not match regex %q", a, src)
			}
		}
		m.literal = len(prefixes) == 0
		if m.literal && len(exact) == 1 {
			m.one = []byte(exact[0])
		} else if len(exact) > 0 {
			m.set = newNameSet(exact)
		}
		for _, a := range prefixes {
			m.prefixes = append(m.prefixes, []byte(a))
		}
		return m, nil
	}
	for _, c := range []struct {
		suffix string
		kind   captureKind
	}{{"(.*)", captureStar}, {"(.+)", capturePlus}} {
		prefix, ok := strings.CutSuffix(src, c.suffix)
		if !ok {
			continue
		}
		alts, ok := literalAlternation(prefix)
		if !ok || len(alts) != 1 || m.numSubexp != 1 {
			continue
		}
		m.capture = c.kind
		m.prefix = []byte(alts[0])
		if !m.re.MatchString(alts[0]+"x") || (c.kind == captureStar) != m.re.MatchString(alts[0]) {
			return matcher{}, fmt.Errorf("internal error: regex %q is not a prefix capture", src)
		}
		break
	}
	return m, nil
}

// literalAlternation splits a regex source into its alternatives if it is a
// '|'-separated list of literals, and reports whether it is.
func literalAlternation(src string) ([]string, bool) {
	exact, prefixes, ok := literalAlternatives(src)
	return exact, ok && len(prefixes) == 0
}

// literalAlternatives splits a regex source into its alternatives if each
// is a literal or a literal followed by ".*", and reports whether they are.
// exact holds the literals and prefixes the literals before ".*".
//
// It accepts plain characters and backslash-escaped ASCII punctuation, which
// Go's regexp/syntax always reads as the character itself. It refuses every
// other metacharacter, so groups, classes, other repetitions, anchors, flags
// and escapes such as \d or \Q fall back to the regex. It also refuses
// U+FFFD: the regexp engine decodes each invalid UTF-8 byte of the input as
// U+FFFD, so "\uFFFD" matches "\xff" while a byte comparison does not.
//
// Inside the "^(?s:...)$" that Prometheus wraps around every relabel regex,
// a literal matches exactly itself and "lit.*" exactly the strings that
// start with lit: (?s) lets '.' match any character, newlines and the
// U+FFFD of invalid UTF-8 included.
func literalAlternatives(src string) (exact, prefixes []string, ok bool) {
	var cur []byte
	for i := 0; ; {
		if i == len(src) || src[i] == '|' {
			exact = append(exact, string(cur))
			cur = cur[:0]
			if i == len(src) {
				return exact, prefixes, true
			}
			i++
			continue
		}
		c := src[i]
		switch {
		case c == '.' && strings.HasPrefix(src[i:], ".*") && (i+2 == len(src) || src[i+2] == '|'):
			prefixes = append(prefixes, string(cur))
			cur = cur[:0]
			i += 2
			if i == len(src) {
				return exact, prefixes, true
			}
			i++ // Skip the '|'.
		case c == '\\':
			if i+1 >= len(src) {
				return nil, nil, false
			}
			e := src[i+1]
			if e >= utf8.RuneSelf || isAlnum(e) {
				return nil, nil, false
			}
			cur = append(cur, e)
			i += 2
		case strings.IndexByte(`.+*?()[]{}^$`, c) >= 0:
			return nil, nil, false
		default:
			r, size := utf8.DecodeRuneInString(src[i:])
			if r == utf8.RuneError {
				return nil, nil, false
			}
			cur = append(cur, src[i:i+size]...)
			i += size
		}
	}
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
