package relabel

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/grafana/regexp"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"

	"github.com/cardinal-gateway/cardinal/wire"
)

// pairs builds labels from name, value, name, value...
func pairs(kv ...string) []labels.Label {
	out := make([]labels.Label, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, labels.Label{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

// sorted returns ls sorted by name, as a decoded request holds it.
func sorted(ls []labels.Label) []labels.Label {
	var out []labels.Label
	labels.New(ls...).Range(func(l labels.Label) { out = append(out, l) })
	return out
}

// dropped marks an expected drop in TestApply.
var dropped []labels.Label

func TestApply(t *testing.T) {
	f := func(rules string, in, want []labels.Label) {
		t.Helper()
		cfgs := parseRules(t, rules)
		p, err := Compile(cfgs)
		if err != nil {
			t.Fatalf("Compile: %v\n%s", err, rules)
		}
		var s Scratch
		got, keep := p.Apply(&s, toWire(sorted(in)))
		if want == nil {
			if keep {
				t.Fatalf("series kept as %s, want dropped\n%s", formatWire(got), rules)
			}
		} else {
			if !keep {
				t.Fatalf("series dropped, want %s\n%s", formatProm(want), rules)
			}
			if !sameLabels(got, want) {
				t.Fatalf("got  %s\nwant %s\n%s", formatWire(got), formatProm(want), rules)
			}
		}
		// The expectation must also be Prometheus' answer.
		ref, err := refConfigs(cfgs)
		if err != nil {
			t.Fatal(err)
		}
		if d := diff(p, &s, ref, sorted(in)); d != "" {
			t.Fatalf("differs from Prometheus: %s\n%s", d, rules)
		}
	}

	// Missing source labels count as "", joined by the separator.
	f(`
- source_labels: [a, missing, b]
  target_label: t`,
		pairs("a", "1", "b", "2"),
		pairs("a", "1", "b", "2", "t", "1;;2"))
	f(`
- source_labels: [a, b]
  separator: ""
  target_label: t`,
		pairs("a", "1", "b", "2"),
		pairs("a", "1", "b", "2", "t", "12"))

	// Prometheus' shortcut: an empty value with the default regex sets the
	// replacement, here a constant.
	f(`
- source_labels: [missing]
  target_label: t
  replacement: fixed`,
		pairs("a", "1"),
		pairs("a", "1", "t", "fixed"))

	// A regex that does not match changes nothing.
	f(`
- source_labels: [a]
  regex: x(.*)
  target_label: a
  replacement: changed`,
		pairs("a", "1"),
		pairs("a", "1"))

	// An empty replacement deletes the target; so does an empty group.
	f(`
- source_labels: [a]
  target_label: b
  replacement: ""`,
		pairs("a", "1", "b", "2"),
		pairs("a", "1"))
	f(`
- source_labels: [a]
  regex: (x)?(.*)
  target_label: b`,
		pairs("a", "1", "b", "2"),
		pairs("a", "1"))

	// Targets are templates; an expansion that is not a valid label name
	// leaves the series alone.
	f(`
- source_labels: [a]
  regex: (.*)
  target_label: l_${1}
  replacement: yes`,
		pairs("a", "x"),
		pairs("a", "x", "l_x", "yes"))
	f(`
- source_labels: [a]
  regex: (.*)
  target_label: ${1}
  replacement: yes`,
		pairs("a", "bad\xff"),
		pairs("a", "bad\xff"))
	// $1x is the named group "1x", which does not exist: the target
	// expands to "" and is invalid.
	f(`
- source_labels: [a]
  regex: (.*)
  target_label: $1x
  replacement: yes`,
		pairs("a", "v"),
		pairs("a", "v"))
	// Under legacy validation a dash is invalid in an expanded target.
	f(`
- source_labels: [a]
  regex: (.*)
  target_label: ${1}
  replacement: yes`,
		pairs("a", "x-y"),
		pairs("a", "x-y", "x-y", "yes"))

	// $$ is a literal dollar, named groups work, ${1}x is group 1 then x.
	f(`
- source_labels: [a]
  regex: (?P<w>[a-z]+)-(\d+)
  target_label: t
  replacement: $$${w}/${2}x`,
		pairs("a", "abc-42"),
		pairs("a", "abc-42", "t", "$abc/42x"))

	// The replacement may produce more labels than the input had: they
	// move to the Scratch.
	f(`
- {target_label: x, replacement: "1"}
- {target_label: y, replacement: "2"}
- {target_label: "0", replacement: "3"}`,
		pairs("a", "1"),
		pairs("0", "3", "a", "1", "x", "1", "y", "2"))

	// Literal alternations are matched exactly; an escaped dot is a dot.
	f(`
- source_labels: [a]
  regex: foo\.bar|baz
  action: keep`,
		pairs("a", "fooxbar"),
		dropped)
	f(`
- source_labels: [a]
  regex: foo\.bar|baz
  action: keep`,
		pairs("a", "foo.bar"),
		pairs("a", "foo.bar"))
	// An empty alternative matches a missing label.
	f(`
- source_labels: [missing]
  regex: x|
  action: drop`,
		pairs("a", "1"),
		dropped)
	// The regex engine reads invalid UTF-8 as U+FFFD, so a regex literal
	// U+FFFD matches it: no set lookup may be used.
	f(`
- source_labels: [a]
  regex: "\uFFFD"
  action: keep`,
		pairs("a", "\xff"),
		pairs("a", "\xff"))
	// (?s): a dot matches a newline.
	f(`
- source_labels: [a]
  regex: a.b
  action: keep`,
		pairs("a", "a\nb"),
		pairs("a", "a\nb"))

	// labelkeep / labeldrop, literal and regex.
	f(`
- regex: __name__|job|instance
  action: labelkeep`,
		pairs("__name__", "up", "instance", "i", "job", "j", "pod", "p"),
		pairs("__name__", "up", "instance", "i", "job", "j"))
	f(`
- regex: (?i)POD|request_.*
  action: labeldrop`,
		pairs("__name__", "up", "pod", "p", "request_id", "r"),
		pairs("__name__", "up"))

	// keepequal / dropequal compare with the target's value, "" if missing.
	f(`
- source_labels: [missing]
  target_label: other_missing
  action: keepequal`,
		pairs("a", "1"),
		pairs("a", "1"))
	f(`
- source_labels: [a]
  target_label: b
  action: dropequal`,
		pairs("a", "1", "b", "1"),
		dropped)

	// lowercase / uppercase follow strings.ToLower / ToUpper, invalid
	// UTF-8 included; an empty value deletes the target.
	f(`
- source_labels: [a]
  target_label: a
  action: lowercase`,
		pairs("a", "ÄBC\xffx"),
		pairs("a", "äbc\uFFFDx"))
	f(`
- source_labels: [a, b]
  target_label: c
  action: uppercase`,
		pairs("a", "straße", "b", "ǆ"),
		pairs("a", "straße", "b", "ǆ", "c", "STRAßE;Ǆ"))
	f(`
- source_labels: [missing]
  target_label: a
  action: lowercase`,
		pairs("a", "1"),
		[]labels.Label{})

	// hashmod: md5, last 8 bytes big endian.
	sum := md5.Sum([]byte("pod-1;ns"))
	f(`
- source_labels: [pod, ns]
  target_label: shard
  modulus: 1000
  action: hashmod`,
		pairs("ns", "ns", "pod", "pod-1"),
		pairs("ns", "ns", "pod", "pod-1", "shard", strconv.FormatUint(binary.BigEndian.Uint64(sum[8:])%1000, 10)))

	// labelmap ranges over the labels as they were before the rule: it
	// does not visit what it sets, and sees old values.
	f(`
- regex: (.*)
  replacement: p_$1
  action: labelmap`,
		pairs("a", "1", "p_a", "2"),
		pairs("a", "1", "p_a", "1", "p_p_a", "2"))
	// When two labels map to the same name, the one visited last wins:
	// untouched input labels in name order...
	f(`
- regex: (a|b)_(.*)
  replacement: $2
  action: labelmap`,
		pairs("a_x", "1", "b_x", "2"),
		pairs("a_x", "1", "b_x", "2", "x", "2"))
	// ...then labels that earlier rules set, in the order they set them.
	f(`
- {source_labels: [a_x], target_label: a_x, replacement: "1b"}
- regex: (a|b)_(.*)
  replacement: $2
  action: labelmap`,
		pairs("a_x", "1", "b_x", "2"),
		pairs("a_x", "1b", "b_x", "2", "x", "1b"))
	f(`
- {target_label: c_x, replacement: "3"}
- {target_label: b_x, replacement: "2b"}
- regex: (a|b|c)_(.*)
  replacement: $2
  action: labelmap`,
		pairs("a_x", "1", "b_x", "2"),
		pairs("a_x", "1", "b_x", "2b", "c_x", "3", "x", "2b"))
	// A label deleted and set again goes to the end of the order.
	f(`
- {target_label: b_x, replacement: "2b"}
- {target_label: c_x, replacement: "3"}
- {target_label: b_x, replacement: ""}
- {target_label: b_x, replacement: "2c"}
- regex: (a|b|c)_(.*)
  replacement: $2
  action: labelmap`,
		pairs("a_x", "1"),
		pairs("a_x", "1", "b_x", "2c", "c_x", "3", "x", "2c"))
	// A labelmap with a group that did not take part creates the empty
	// name, as Prometheus does.
	f(`
- regex: (x)?(a)
  replacement: $1
  action: labelmap`,
		pairs("a", "1"),
		pairs("", "1", "a", "1"))

	// Rules run in order and a drop stops the program.
	f(`
- {source_labels: [a], target_label: b}
- {source_labels: [b], regex: "1", action: drop}
- {target_label: never, replacement: "x"}`,
		pairs("a", "1"),
		dropped)
}

// Legacy validation is checked on expanded targets.
func TestApplyLegacyTarget(t *testing.T) {
	f := func(value string, wantSet bool) {
		t.Helper()
		cfgs := parseRules(t, `
- source_labels: [a]
  regex: (.*)
  target_label: ${1}
  replacement: yes`)
		cfgs[0].NameValidationScheme = model.LegacyValidation
		p, err := Compile(cfgs)
		if err != nil {
			t.Fatal(err)
		}
		var s Scratch
		out, _ := p.Apply(&s, toWire(pairs("a", value)))
		if got := wire.GetLabel(out, value) != nil; got != wantSet {
			t.Fatalf("value %q: label set = %v, want %v", value, got, wantSet)
		}
		ref, err := refConfigs(cfgs)
		if err != nil {
			t.Fatal(err)
		}
		if d := diff(p, &s, ref, pairs("a", value)); d != "" {
			t.Fatal(d)
		}
	}
	f("x_y", true)
	f("x-y", false)
	f("1x", false)
}

func TestCompileErrors(t *testing.T) {
	f := func(rules string, wantSubstrings ...string) {
		t.Helper()
		_, err := Compile(parseRules(t, rules))
		if err == nil {
			t.Fatalf("Compile succeeded, want an error\n%s", rules)
		}
		for _, w := range wantSubstrings {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("error %q does not contain %q", err, w)
			}
		}
	}
	f(`
- {source_labels: [a], target_label: b}
- {source_labels: [a], target_label: b, action: hashmod}`,
		"rule 1 (hashmod)", "non-zero modulus")
	f(`
- {regex: x, action: labelkeep}
- {regex: y, action: labeldrop}
- {source_labels: [a], action: replace}`,
		"rule 2 (replace)", "target_label")
	f(`- {source_labels: [a], target_label: b, action: lowercase, replacement: x}`,
		"rule 0 (lowercase)", "'replacement' can not be set")
	f(`- {source_labels: [a], regex: x, action: labeldrop}`,
		"rule 0 (labeldrop)", "only 'regex'")
	f(`- {source_labels: [a], target_label: b, regex: x, action: keepequal}`,
		"rule 0 (keepequal)", "only 'source_labels'")

	valid := &relabel.Config{Action: relabel.Keep, Regex: relabel.MustNewRegexp("x"), Separator: ";", Replacement: "$1"}
	h := func(cfg *relabel.Config, wantSubstrings ...string) {
		t.Helper()
		_, err := Compile([]*relabel.Config{valid, cfg})
		if err == nil {
			t.Fatal("Compile succeeded, want an error")
		}
		for _, w := range append(wantSubstrings, "rule 1") {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("error %q does not contain %q", err, w)
			}
		}
	}
	h(nil, "nil")
	h(&relabel.Config{Action: relabel.Replace, Regex: relabel.DefaultRelabelConfig.Regex, Separator: ";", Replacement: "$1",
		SourceLabels: model.LabelNames{"a"}, TargetLabel: "1a", NameValidationScheme: model.LegacyValidation},
		"(replace)", "invalid 'target_label'")
	// Validate accepts unknown and wrongly cased actions; ProcessBuilder
	// would panic on them.
	h(&relabel.Config{Action: "foo", Regex: relabel.MustNewRegexp("x")}, "unknown relabel action")
	h(&relabel.Config{Action: "Keep", Regex: relabel.MustNewRegexp("x")}, "unknown relabel action")
	h(&relabel.Config{Action: relabel.Keep}, "regex is not set")
	h(&relabel.Config{}, "action cannot be empty")
	h(&relabel.Config{Action: relabel.Keep, Regex: relabel.MustNewRegexp("x"), NameValidationScheme: 42}, "validation method")
}

// Compile must not modify the caller's configs.
func TestCompileCopies(t *testing.T) {
	cfgs := parseRules(t, `- {source_labels: [a], target_label: b}`)
	if _, err := Compile(cfgs); err != nil {
		t.Fatal(err)
	}
	if cfgs[0].NameValidationScheme != model.UnsetValidation {
		t.Fatalf("Compile set NameValidationScheme to %v", cfgs[0].NameValidationScheme)
	}
}

// The relabel matcher must take rematch's fast paths for the shapes that
// relabel configs use, and the submatch shortcuts must agree with the
// engine's indexes.
func TestMatcherShapes(t *testing.T) {
	f := func(regex string, fast bool) {
		t.Helper()
		m, err := newMatcher(relabel.MustNewRegexp(regex))
		if err != nil {
			t.Fatal(err)
		}
		if m.m.Fast() != fast {
			t.Fatalf("%q: fast = %v (%s), want %v", regex, m.m.Fast(), m.m.Describe(), fast)
		}
		var s Scratch
		for _, in := range []string{"", "a", "b", "go_x", "up", "__meta_pod_label_app", "a.b", "a\\x", "x\nb", "\xff"} {
			got := m.submatch(&s, []byte(in))
			want := m.re.FindSubmatchIndex([]byte(in))
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%q on %q: submatch %v, engine %v", regex, in, got, want)
			}
		}
	}
	f("a|b", true)
	f("(a|b)", true)
	f("(?:__name__|(job|instance))", true)
	f("go_.*|up", true)
	f("(.*)", true)
	f("(.+)", true)
	f(`__meta_pod_label_(.+)`, true)
	f(`a\.(.*)`, true)
	f(`a|b(.*)`, true)
	f(`a\\(.*)`, true)
	f(`(.*)(.*)`, true)
	f(`x(.*?)`, true)
	f(`([a-z]+)_(\d+)`, false)
	// A Regexp not made by relabel.NewRegexp is analysed as what it is: an
	// unanchored search.
	m, err := newMatcher(relabel.Regexp{Regexp: regexp.MustCompile("a|b")})
	if err != nil || !m.match([]byte("xax")) {
		t.Fatalf("unanchored regex matched as anchored: %+v %v", m, err)
	}
}
