package relabel

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/grafana/regexp"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"

	"github.com/cardinal-gateway/cardinal/internal/rematch"
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

// matcher matches a fully anchored relabel regex against bytes. The
// decision between fast paths and the engine is rematch's, made on the
// regex's syntax tree.
type matcher struct {
	re        *regexp.Regexp
	m         *rematch.Matcher
	numSubexp int
}

func newMatcher(rx relabel.Regexp) (matcher, error) {
	if rx.Regexp == nil {
		return matcher{}, errors.New("regex is not set")
	}
	return matcher{re: rx.Regexp, m: rematch.New(rx.Regexp), numSubexp: rx.NumSubexp()}, nil
}
